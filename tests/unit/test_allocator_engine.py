"""Tests for cni_ipam.allocator.engine: ADD, DEL, GC and STATUS decisions on real store verbs.

Most cases run on the in-memory store and on SQLite (a tmp file is cheap);
the in-memory store has no rollback, so there it is the engine alone that
must keep an ADD all-or-nothing.
"""

from __future__ import annotations

import ipaddress

import pytest

import cni_ipam.allocator as core  # the decisions live in the package itself
from cni_ipam.allocator.engine import (
    MAX_LOST_RACES,
    AddressTaken,
    LostRaces,
    Owner,
    RangeFull,
    assign,
    garbage_collect,
    has_free,
    release_attachment,
)
from cni_ipam.config.whereabouts import RangeSpec
from cni_ipam.net.ranges import parse_range
from cni_ipam.store.base import Allocation

from memory_store import MemoryStore


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def spec(range_text, network_name="", overlapping=True, key="ipam.range", **bounds) -> RangeSpec:
    return RangeSpec(key, parse_range(key, range_text, **bounds), network_name, overlapping)


def mission(**kw) -> RangeSpec:
    """The demo's exclude example: range 192.0.2.192/27 with two exclusions; the first free address is .197."""
    return spec("192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"], **kw)


def owner(n, network="net1", ifname="net1", pod=None, netns="") -> Owner:
    return Owner(network, f"c{n}", ifname, pod=f"ns/pod{n}" if pod is None else pod, netns=netns)


def addresses(allocations) -> list:
    return [a.address for a in allocations]


def one(store, specs, who, requested=None) -> str:
    [allocation] = assign(store, specs, who, requested)
    return allocation.address


def fill(store, spec, first: int) -> None:
    """ADDs by owners ``first``, ``first + 1``, ... until the range is full (RangeFull)."""
    n = first
    while True:
        try:
            one(store, [spec], owner(n))
        except RangeFull:
            return
        n += 1


def hint(store, s: RangeSpec):
    return store.hint(core.hint_key(s.network_name, s.overlapping, s.range), s.pool, s.space)


def set_hint(store, s: RangeSpec, value: int) -> None:
    hint(store, s)  # read first: a store may only overwrite a hint it has seen
    store.set_hint(core.hint_key(s.network_name, s.overlapping, s.range), s.pool, s.space, value)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        made = MemoryStore()
    else:
        from cni_ipam.store.sqlite import SQLiteStore

        made = SQLiteStore(str(tmp_path / "ipam.db"))
    yield made
    made.close()


def held_by(store, who: Owner) -> list:
    return addresses(store.find(network=who.network, container_id=who.container_id, ifname=who.ifname))


# --- order ---

def test_lowest_free_order_of_the_mission_example(store):
    s = mission()
    got = [one(store, [s], owner(n)) for n in range(5)]
    assert got == ["192.0.2.197", "192.0.2.198", "192.0.2.199", "192.0.2.200", "192.0.2.201"]
    assert [held_by(store, owner(n)) for n in range(5)] == [[a] for a in got]


def test_a_full_range_says_which_range_and_how_big(store):
    s = mission()
    got = [one(store, [s], owner(n)) for n in range(26)]
    assert got == [f"192.0.2.{n}" for n in range(197, 223)]
    with pytest.raises(RangeFull) as info:
        assign(store, [s], owner(99))
    message = str(info.value)
    assert message.startswith("ipam.range: ")
    assert "range 192.0.2.192/27" in message
    assert "all 26 allocatable addresses are held" in message
    assert held_by(store, owner(99)) == []


def test_a_freed_address_is_reused_first(store):
    s = mission()
    for n in range(5):
        assign(store, [s], owner(n))
    assert hint(store, s) == ip("192.0.2.202")
    assert [a.address for a in release_attachment(store, "net1", "c1", "net1")] == ["192.0.2.198"]
    assert hint(store, s) == ip("192.0.2.198")  # the release lowered it
    assert one(store, [s], owner(10)) == "192.0.2.198"
    assert one(store, [s], owner(11)) == "192.0.2.202"


# --- identity ---

def test_a_repeated_add_returns_the_same_addresses(store):
    specs = [mission(), spec("2001:db8::/120", key="ipam.ipRanges[1]")]
    first = addresses(assign(store, specs, owner(1)))
    assert first == ["192.0.2.197", "2001:db8::1"]
    assert addresses(assign(store, specs, owner(1))) == first
    assert len(store.allocations()) == 2
    assert one(store, [mission()], owner(2)) == "192.0.2.198"


def test_a_restarted_sandbox_keeps_its_pods_address(store):
    s = mission()
    assert one(store, [s], Owner("net1", "old", "net1", pod="ns/web", netns="/run/netns/old")) == "192.0.2.197"
    assert one(store, [s], owner(2)) == "192.0.2.198"
    again = Owner("net1", "new", "net1", pod="ns/web", netns="/run/netns/new")
    [allocation] = assign(store, [s], again)
    assert (allocation.address, allocation.container_id, allocation.netns) == ("192.0.2.197", "new", "/run/netns/new")
    [stored] = store.find(pod="ns/web")
    assert (stored.container_id, stored.netns, stored.address) == ("new", "/run/netns/new", "192.0.2.197")
    # the old sandbox's late DEL frees nothing; the new one's frees the address
    assert release_attachment(store, "net1", "old", "net1") == []
    assert addresses(release_attachment(store, "net1", "new", "net1")) == ["192.0.2.197"]


def test_a_restarted_sandbox_whose_old_address_is_freed_meanwhile_gets_a_recorded_one():
    """The old sandbox's DEL (or the reconciler) frees the address between the ADD's find and its update:
    the ADD must not return an address that nothing records."""
    class FreedDuringTheMove(MemoryStore):
        def update_owner(self, allocation, container_id, netns):
            self.release(Allocation(allocation.pool, allocation.ip, allocation.version, *allocation.attachment))
            return super().update_owner(allocation, container_id, netns)

    store, s = FreedDuringTheMove(), mission()
    assert one(store, [s], Owner("net1", "old", "net1", pod="ns/web")) == "192.0.2.197"
    [allocation] = assign(store, [s], Owner("net1", "new", "net1", pod="ns/web"))
    assert [(a.address, a.container_id) for a in store.allocations()] == [(allocation.address, "new")]


def test_the_same_pod_on_another_interface_gets_another_address(store):
    s = mission()
    assert one(store, [s], Owner("net1", "c1", "net1", pod="ns/web")) == "192.0.2.197"
    assert one(store, [s], Owner("net1", "c1", "net2", pod="ns/web")) == "192.0.2.198"


def test_a_pods_address_in_another_network_is_not_taken_over(store):
    # two CNI networks drawing from one pool (both unnamed): DEL finds addresses by network, so a new
    # sandbox in netB must not inherit netA's address, or netB's DEL would leave it held for ever
    s = mission()
    assert one(store, [s], Owner("netA", "c1", "net1", pod="ns/web")) == "192.0.2.197"
    assert one(store, [s], Owner("netB", "c2", "net1", pod="ns/web")) == "192.0.2.198"
    assert addresses(release_attachment(store, "netB", "c2", "net1")) == ["192.0.2.198"]
    assert [(a.network, a.container_id) for a in store.allocations()] == [("netA", "c1")]


# --- spaces and pools ---

def test_ranges_of_one_network_name_never_share_an_address(store):
    small = spec("192.0.2.192/29", network_name="blue", key="ipam.ipRanges[0]")
    big = spec("192.0.2.0/24", network_name="blue", key="ipam.ipRanges[1]", range_start="192.0.2.190")
    got = [one(store, [small if n % 2 == 0 else big], owner(n)) for n in range(10)]
    assert got == ["192.0.2.193", "192.0.2.190", "192.0.2.194", "192.0.2.191", "192.0.2.195", "192.0.2.192",
                   "192.0.2.196", "192.0.2.197", "192.0.2.198", "192.0.2.199"]
    with pytest.raises(RangeFull, match="all 6 allocatable"):  # .193-.198 all held, by one range or the other
        assign(store, [small], owner(50))
    assert one(store, [big], owner(51)) == "192.0.2.200"


def test_one_attachment_in_two_overlapping_ranges_gets_two_addresses(store):
    small = spec("192.0.2.192/29", network_name="blue", key="ipam.ipRanges[0]")
    big = spec("192.0.2.0/24", network_name="blue", key="ipam.ipRanges[1]", range_start="192.0.2.193")
    assert addresses(assign(store, [small, big], owner(1))) == ["192.0.2.193", "192.0.2.194"]
    assert addresses(assign(store, [big, small], owner(2))) == ["192.0.2.195", "192.0.2.196"]


def test_different_network_names_may_share_an_address(store):
    blue = spec("192.0.2.192/29", network_name="blue")
    red = spec("192.0.2.0/24", network_name="red", range_start="192.0.2.193")
    assert one(store, [blue], owner(1)) == "192.0.2.193"
    assert one(store, [red], owner(2)) == "192.0.2.193"
    assert one(store, [red], owner(3)) == "192.0.2.194"


def test_a_range_without_overlapping_checks_looks_at_its_own_pool_only(store):
    checked = spec("192.0.2.192/29", network_name="blue")
    lone = spec("192.0.2.192/28", network_name="blue", overlapping=False)
    assert one(store, [checked], owner(1)) == "192.0.2.193"
    assert one(store, [lone], owner(2)) == "192.0.2.193"  # it does not check the space ...
    assert one(store, [lone], owner(3)) == "192.0.2.194"  # ... only its own pool
    assert one(store, [checked], owner(4)) == "192.0.2.194"  # and the space does not see its rows


def test_dual_stack_gives_one_v4_and_one_v6(store):
    specs = [mission(), spec("2001:db8::/64", key="ipam.ipRanges[0]")]
    got = assign(store, specs, owner(1))
    assert [(a.version, a.address) for a in got] == [(4, "192.0.2.197"), (6, "2001:db8::1")]
    got = assign(store, specs, owner(2))
    assert [(a.version, a.address) for a in got] == [(4, "192.0.2.198"), (6, "2001:db8::2")]


def test_v4_and_v6_of_one_network_name_do_not_block_each_other(store):
    v4 = spec("192.0.2.192/28", network_name="blue")
    v6 = spec("::c000:2c0/124", network_name="blue")  # the same integers as the v4 range
    first = assign(store, [v4, v6], owner(1))
    assert addresses(first) == ["192.0.2.193", "::c000:2c1"]
    assert first[0].ip == first[1].ip
    assert addresses(assign(store, [v6, v4], owner(2))) == ["::c000:2c2", "192.0.2.194"]


def test_big_ipv6_ranges_allocate_exactly(store):
    s = spec("ffff:ffff:ffff:ffff::/64", range_start="ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc")
    got = [one(store, [s], owner(n)) for n in range(3)]
    assert got == ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd",
                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"]
    with pytest.raises(RangeFull, match="all 3 allocatable addresses"):
        assign(store, [s], owner(9))


# --- requested addresses ---

def test_a_requested_address_is_honoured(store):
    s = mission()
    assert one(store, [s], owner(1), {0: ip("192.0.2.200")}) == "192.0.2.200"
    assert one(store, [s], owner(2)) == "192.0.2.197"
    assert one(store, [s], owner(1), {0: ip("192.0.2.200")}) == "192.0.2.200"  # a repeated ADD
    assert len(store.allocations()) == 2


def test_a_requested_address_held_by_another_attachment_names_the_holder(store):
    s = mission()
    assign(store, [s], Owner("net1", "0123456789abcdef0123", "net1", pod="ns/holder"))
    with pytest.raises(AddressTaken) as info:
        assign(store, [s], owner(2), {0: ip("192.0.2.197")})
    message = str(info.value)
    assert "requested address 192.0.2.197 in ipam.range" in message
    assert "net1/0123456789ab/net1 (pod ns/holder)" in message
    assert held_by(store, owner(2)) == []


def test_a_requested_address_held_in_another_pool_of_the_space_is_taken(store):
    small = spec("192.0.2.192/29", network_name="blue", key="ipam.ipRanges[0]")
    big = spec("192.0.2.0/24", network_name="blue", key="ipam.ipRanges[1]")
    assign(store, [small], owner(1))
    with pytest.raises(AddressTaken, match=r"192\.0\.2\.193 in ipam.ipRanges\[1\] is held by net1/c1/net1"):
        assign(store, [big], owner(2), {0: ip("192.0.2.193")})


def test_asking_for_another_address_moves_the_attachment(store):
    s = mission()
    assert one(store, [s], owner(1)) == "192.0.2.197"
    assert one(store, [s], owner(1), {0: ip("192.0.2.205")}) == "192.0.2.205"
    assert held_by(store, owner(1)) == ["192.0.2.205"]
    assert one(store, [s], owner(2)) == "192.0.2.197"


def test_a_failed_move_keeps_the_address_held_before(store):
    s = mission()
    assert one(store, [s], owner(1)) == "192.0.2.197"
    assert one(store, [s], owner(2)) == "192.0.2.198"
    with pytest.raises(AddressTaken):
        assign(store, [s], owner(1), {0: ip("192.0.2.198")})
    assert held_by(store, owner(1)) == ["192.0.2.197"]
    assert one(store, [s], owner(3)) == "192.0.2.199"


# --- all or nothing ---

def test_a_failure_in_a_later_range_gives_back_what_this_call_claimed(store):
    first = mission(key="ipam.ipRanges[0]")
    tiny = spec("198.51.100.0/30", key="ipam.ipRanges[1]")
    assign(store, [tiny], owner(90))
    assign(store, [tiny], owner(91))
    with pytest.raises(RangeFull, match=r"ipam.ipRanges\[1\]: .*198\.51\.100\.0/30.*all 2 allocatable"):
        assign(store, [first, tiny], owner(1))
    assert held_by(store, owner(1)) == []
    assert hint(store, first) in (None, ip("192.0.2.197"))
    assert one(store, [first], owner(2)) == "192.0.2.197"


def test_a_failure_in_a_later_range_undoes_a_move_in_an_earlier_one(store):
    first = mission(key="ipam.ipRanges[0]")
    tiny = spec("198.51.100.0/30", key="ipam.ipRanges[1]")
    assert one(store, [first], owner(1)) == "192.0.2.197"
    assign(store, [tiny], owner(90))
    assign(store, [tiny], owner(91))
    with pytest.raises(RangeFull):
        assign(store, [first, tiny], owner(1), {0: ip("192.0.2.205")})
    assert held_by(store, owner(1)) == ["192.0.2.197"]
    assert one(store, [first], owner(2), {0: ip("192.0.2.205")}) == "192.0.2.205"


def test_a_failure_in_a_later_range_keeps_what_was_held_before(store):
    first = mission(key="ipam.ipRanges[0]")
    v6 = spec("2001:db8::/120", key="ipam.ipRanges[1]")
    tiny = spec("198.51.100.0/30", key="ipam.ipRanges[2]")
    assert one(store, [first], owner(1)) == "192.0.2.197"
    assign(store, [tiny], owner(90))
    assign(store, [tiny], owner(91))
    with pytest.raises(RangeFull):
        assign(store, [first, v6, tiny], owner(1))
    assert held_by(store, owner(1)) == ["192.0.2.197"]
    assert addresses(assign(store, [v6], owner(2))) == ["2001:db8::1"]


def test_a_taken_request_in_a_later_range_gives_back_the_earlier_ones(store):
    first = mission(key="ipam.ipRanges[0]")
    second = spec("198.51.100.0/24", key="ipam.ipRanges[1]")
    assign(store, [second], owner(90), {0: ip("198.51.100.7")})
    with pytest.raises(AddressTaken):
        assign(store, [first, second], owner(1), {1: ip("198.51.100.7")})
    assert held_by(store, owner(1)) == []
    assert [a.container_id for a in store.allocations()] == ["c90"]


# --- DEL and GC ---

def test_release_attachment_frees_every_range_and_is_idempotent(store):
    specs = [mission(), spec("2001:db8::/120", key="ipam.ipRanges[1]")]
    assign(store, specs, owner(1))
    assign(store, specs, owner(2))
    freed = release_attachment(store, "net1", "c1", "net1")
    assert sorted(addresses(freed)) == ["192.0.2.197", "2001:db8::1"]
    assert held_by(store, owner(1)) == []
    assert held_by(store, owner(2)) == ["192.0.2.198", "2001:db8::2"]
    assert release_attachment(store, "net1", "c1", "net1") == []
    assert release_attachment(store, "net1", "never", "net1") == []
    assert addresses(assign(store, specs, owner(3))) == ["192.0.2.197", "2001:db8::1"]


def test_garbage_collect_frees_exactly_the_invalid_attachments_of_its_network(store):
    s = mission()
    other = spec("198.51.100.0/24", network_name="other")
    assign(store, [s], Owner("netA", "c1", "net1"))
    assign(store, [s], Owner("netA", "c2", "net1"))
    assign(store, [s], Owner("netA", "c1", "net2"))
    assign(store, [s], Owner("netA", "c3", "net2"))
    assign(store, [other], Owner("netB", "c2", "net1"))
    freed = garbage_collect(store, "netA", {("c1", "net1"), ("c3", "net2"), ("c9", "net1")})
    assert sorted((a.container_id, a.ifname) for a in freed) == [("c1", "net2"), ("c2", "net1")]
    assert sorted((a.network, a.container_id, a.ifname) for a in store.allocations()) == [
        ("netA", "c1", "net1"), ("netA", "c3", "net2"), ("netB", "c2", "net1")]
    assert garbage_collect(store, "netA", {("c1", "net1"), ("c3", "net2")}) == []
    assert addresses(garbage_collect(store, "netB", set())) == ["198.51.100.1"]


# --- STATUS ---

def test_has_free(store):
    tiny = spec("198.51.100.0/30")
    assert has_free(store, tiny)
    assign(store, [tiny], owner(1))
    assert has_free(store, tiny)
    assign(store, [tiny], owner(2))
    assert not has_free(store, tiny)
    release_attachment(store, "net1", "c1", "net1")
    assert has_free(store, tiny)


def test_has_free_sees_room_below_a_stale_high_hint(store):
    tiny = spec("198.51.100.0/29")
    assign(store, [tiny], owner(1))
    set_hint(store, tiny, ip("198.51.100.7"))  # past the end
    assert has_free(store, tiny)


# --- hints that lie ---

@pytest.mark.parametrize("bogus", ["192.0.2.0", "192.0.2.193", "192.0.2.196", "192.0.2.205", "192.0.2.222",
                                   "192.0.2.223", "255.255.255.255"])
def test_a_stale_hint_never_hands_out_a_held_address_nor_hides_a_free_one(store, bogus):
    s = mission()
    early = [one(store, [s], owner(n)) for n in range(3)]
    assign(store, [s], owner(90), {0: ip("192.0.2.210")})
    set_hint(store, s, ip(bogus))
    got = early + ["192.0.2.210"]
    while True:
        try:
            got.append(one(store, [s], owner(len(got))))
        except RangeFull:
            break
    assert len(got) == len(set(got)) == s.range.size() == 26
    assert all(s.range.is_allocatable(ip(a)) for a in got)
    assert sorted(a.address for a in store.allocations()) == sorted(got)


def test_a_stale_high_hint_still_gives_the_lowest_free_address_once_the_top_is_full(store):
    s = mission()
    set_hint(store, s, ip("192.0.2.221"))
    assert one(store, [s], owner(1)) == "192.0.2.221"  # a hint may change the order ...
    assert one(store, [s], owner(2)) == "192.0.2.222"
    assert one(store, [s], owner(3)) == "192.0.2.197"  # ... but never makes the range look full
    assert one(store, [s], owner(4)) == "192.0.2.198"


# --- lost races (another node claims between our read and our claim) ---

class RacingStore(MemoryStore):
    """A rival claims the very address we are about to claim, ``races`` times."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races
        self.stolen = []

    def claim(self, allocation, hint=None):
        if self.races and not allocation.container_id.startswith("rival"):
            self.races -= 1
            rival = Allocation(allocation.pool, allocation.ip, allocation.version, allocation.network,
                               f"rival{len(self.stolen)}", allocation.ifname, space=allocation.space)
            assert super().claim(rival)
            self.stolen.append(allocation.address)
        return super().claim(allocation, hint)


def test_a_lost_race_moves_to_another_free_address(monkeypatch):
    monkeypatch.setattr("random.choice", lambda seq: seq[-1])  # the engine spreads out at random: pin it
    store = RacingStore(races=3)
    s = mission()
    got = one(store, [s], owner(1))
    # lowest free first; after a lost race, one of the next 16 free addresses
    assert store.stolen == ["192.0.2.197", "192.0.2.213", "192.0.2.214"]
    assert got == "192.0.2.215"
    assert held_by(store, owner(1)) == [got]
    # the hint did not move past the free addresses below the one it won
    assert one(store, [s], owner(2)) == "192.0.2.198"
    # nothing is skipped for ever: the range still fills to exactly its size
    fill(store, s, 2)
    held = [a.address for a in store.allocations()]
    assert len(held) == len(set(held)) == s.range.size()


def test_a_race_lost_at_the_top_of_a_stale_high_hint_looks_below_it():
    """Found by the 64-process etcd churn test: the hint pointed at the last free address, a rival took it,
    and the retry looked only above the hint, answering "no free address" with 25 addresses free below."""
    store = RacingStore(races=1)
    s = mission()
    set_hint(store, s, ip("192.0.2.222"))  # the range's last allocatable address
    got = one(store, [s], owner(1))
    assert store.stolen == ["192.0.2.222"]
    assert s.range.is_allocatable(ip(got)) and got != "192.0.2.222"
    assert held_by(store, owner(1)) == [got]


def test_too_many_lost_races_ask_for_a_retry_and_hold_nothing():
    store = RacingStore(races=MAX_LOST_RACES)
    s = spec("10.0.0.0/24")
    with pytest.raises(LostRaces, match=r"ipam.range: lost \d+ races for addresses in 10\.0\.0\.0/24"):
        assign(store, [s], owner(1))
    assert held_by(store, owner(1)) == []
    assert len(store.stolen) == MAX_LOST_RACES


# --- contention: a store kept open remembers lost races (cni_ipam.allocator.Contention) ---

class KeptRacingStore(RacingStore):
    """A store kept open between calls (the node agent's): the allocator's memory outlives each ADD."""

    def __init__(self, races: int) -> None:
        super().__init__(races)
        self.memory = {}

    def kept(self):
        return self.memory


@pytest.fixture
def clock(monkeypatch):
    """The engine's clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr("cni_ipam.allocator.engine._clock", lambda: now[0])
    return now


def test_a_kept_open_store_without_lost_races_keeps_the_lowest_free_order(clock):
    store = KeptRacingStore(races=0)
    s = mission()
    assert [one(store, [s], owner(n)) for n in range(3)] == ["192.0.2.197", "192.0.2.198", "192.0.2.199"]


def test_after_a_lost_race_a_kept_open_store_claims_on_from_a_random_address_until_quiet(monkeypatch, clock):
    draws = iter([ip("10.0.0.100"), ip("10.0.0.30")])
    monkeypatch.setattr("random.randint", lambda lo, hi: next(draws))
    store = KeptRacingStore(races=1)
    s = spec("10.0.0.0/24")
    assert one(store, [s], owner(1)) == "10.0.0.100"  # lost .1 to a rival: moved away, not to .2
    assert store.stolen == ["10.0.0.1"]
    clock[0] += 1
    assert one(store, [s], owner(2)) == "10.0.0.101"  # the next ADD goes on from there, not back to .2
    assert one(store, [s], owner(3)) == "10.0.0.102"
    store.races = 1  # another lost race: another random address
    assert one(store, [s], owner(4)) == "10.0.0.30"
    assert store.stolen == ["10.0.0.1", "10.0.0.103"]
    clock[0] += core.QUIET  # no lost race for QUIET seconds: the lowest free address again
    assert one(store, [s], owner(5)) == "10.0.0.2"


def test_a_contended_range_still_fills_to_exactly_its_size(clock):
    store = KeptRacingStore(races=5)
    s = mission()
    fill(store, s, 0)
    held = [a.address for a in store.allocations()]
    assert len(held) == len(set(held)) == s.range.size()
    assert [k for k, memory in store.memory.items() if memory.lost_at is not None]  # it did spread out


def test_a_contended_allocator_that_keeps_losing_asks_for_a_retry_and_holds_nothing(clock):
    store = KeptRacingStore(races=MAX_LOST_RACES)
    s = spec("10.0.0.0/24")
    with pytest.raises(LostRaces, match=r"ipam.range: lost \d+ races for addresses in 10\.0\.0\.0/24"):
        assign(store, [s], owner(1))
    assert held_by(store, owner(1)) == [] and len(store.stolen) == MAX_LOST_RACES


# --- Choices: one address from the first of several ranges with room (a node's slices) ---

def slices_of(node="n1"):
    """Two /29 slices of 10.9.0.0/24 for ``node``, as cni_ipam.config.node_slices builds them."""
    return [RangeSpec(f"ipam.range (slice {r})", parse_range("ipam.range", r), "blue", True, node)
            for r in ("10.9.0.8/29", "10.9.0.16/29")]


def test_choices_fill_the_first_slice_then_the_second_then_raise_their_own_error(store):
    from cni_ipam.allocator.engine import Choices

    full = RuntimeError("node n1's slices are full")
    group = Choices(slices_of(), full)
    got = [one(store, [group], owner(n)) for n in range(12)]
    assert got == [f"10.9.0.{i}" for i in range(9, 15)] + [f"10.9.0.{i}" for i in range(17, 23)]
    assert {a.pool for a in store.find()} == {"blue-n1/10.9.0.8/29", "blue-n1/10.9.0.16/29"}
    with pytest.raises(RuntimeError) as info:
        one(store, [group], owner(99))
    assert info.value is full
    assert one(store, [group], owner(10)) == "10.9.0.21"  # a repeated ADD finds it in the second slice
    with pytest.raises(RangeFull):  # without its own error: the last range's
        one(store, [Choices(slices_of())], owner(98))


def test_choices_serve_a_requested_address_from_the_slice_holding_it(store):
    from cni_ipam.allocator.engine import Choices

    [allocation] = assign(store, [Choices(slices_of())], owner(1), {0: ip("10.9.0.20")})
    assert (allocation.pool, allocation.address) == ("blue-n1/10.9.0.16/29", "10.9.0.20")


class AgentStore(KeptRacingStore):
    """A store of the node agent on etcd, as the engine sees it: addresses its other calls are claiming read as
    ``pending`` (and as held), ``claim_else_held`` claims without reading, and ``held`` pages (read lazily)."""

    reads_whole = False

    def __init__(self, races: int = 0, pending=()) -> None:
        super().__init__(races)
        self.others = list(pending)
        self.reads = []  # (lo, hi) of every held() read
        self.first_claims = []

    def pending(self, pool, space, lo, hi):
        return [x for x in self.others if lo <= x <= hi]

    def held(self, pool, space, lo, hi):
        self.reads.append((lo, hi))
        return iter(sorted(set(super().held(pool, space, lo, hi)) | set(self.pending(pool, space, lo, hi))))

    def claim_else_held(self, allocation, hint, lo, hi):
        self.first_claims.append((allocation.address, hint[1]))
        if self.claim(allocation, hint):
            return True, None
        return False, self.held(allocation.pool, allocation.space, lo, hi)


def test_the_first_guess_passes_by_what_the_agents_other_calls_are_claiming_without_reading(clock):
    s = mission()
    store = AgentStore(pending=[ip("192.0.2.197"), ip("192.0.2.198"), ip("192.0.2.200")])
    assert one(store, [s], owner(1)) == "192.0.2.199"
    assert store.first_claims == [("192.0.2.199", ip("192.0.2.200"))] and store.reads == []  # one claim, no read
    assert one(store, [s], owner(2)) == "192.0.2.201"  # the hint (.200) is pending too: passed by


def test_a_contended_store_that_pages_is_read_from_the_cursor_on(monkeypatch, clock):
    monkeypatch.setattr("random.randint", lambda lo, hi: ip("10.0.0.100"))
    store = AgentStore(races=2)
    s = spec("10.0.0.0/24")
    assert one(store, [s], owner(1)) == "10.0.0.100"  # lost .1 (claimed without reading), then .2: jumped
    store.reads.clear()
    assert one(store, [s], owner(2)) == "10.0.0.101"
    assert store.reads == [(ip("10.0.0.101"), s.range.end)]  # not the whole range
