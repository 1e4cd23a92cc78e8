"""The Store contract: what the allocator relies on, checked against every backend.

The ``store`` fixture (conftest.py) runs each case on every registered
backend.  The last section holds what only the SQLite store promises.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from cni_ipam.net import pool_name
from cni_ipam.store.base import Allocation

SPACE = "blue"  # a whereabouts network_name: one address space
POOL_A = pool_name(SPACE, "192.0.2.0/24")
POOL_B = pool_name(SPACE, "192.0.2.192/27")  # overlaps POOL_A, same space
POOL_6 = pool_name(SPACE, "2001:db8::/64")
POOL_LONE = pool_name(SPACE, "192.0.2.0/25")  # a range with overlapping checks off: no space
POOL_RED = pool_name("red", "192.0.2.0/24")  # another network_name: its own space
V4_ALL = (0, 2**32 - 1)
V6_ALL = (0, 2**128 - 1)


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def alloc(pool, address, cid="c1", ifname="net1", network="netA", space=SPACE, pod="", netns="", node=""):
    """An allocation of ``address`` (text, or an int of the pool's family)."""
    version = 6 if ":" in pool.rsplit("/", 2)[-2] else 4
    value = ip(address) if isinstance(address, str) else address
    return Allocation(pool, value, version, network, cid, ifname, space=space, pod=pod, netns=netns, node=node)


def held(store, pool, space, lo, hi) -> list:
    return list(store.held(pool, space, lo, hi))


def not_applicable(reason: str) -> None:
    """Skip a case whose promise the backend does not make (``reason``: why, from conftest.BACKENDS)."""
    if reason:
        pytest.skip(f"not applicable: {reason}")


# --- claim and held ---

def test_claim_then_held_sees_it(store):
    a = alloc(POOL_A, "192.0.2.10")
    assert store.claim(a) is True
    assert held(store, POOL_A, None, *V4_ALL) == [ip("192.0.2.10")]
    assert held(store, POOL_A, SPACE, *V4_ALL) == [ip("192.0.2.10")]
    assert store.find(network="netA") == [a]
    assert held(store, POOL_RED, None, *V4_ALL) == []


def test_second_claim_of_same_pool_and_ip_fails_for_any_attachment(store):
    assert store.claim(alloc(POOL_A, "192.0.2.10", cid="c1"))
    assert store.claim(alloc(POOL_A, "192.0.2.10", cid="c1")) is False
    assert store.claim(alloc(POOL_A, "192.0.2.10", cid="c2", ifname="net2", network="netB")) is False
    assert [(a.container_id, a.network) for a in store.allocations()] == [("c1", "netA")]


def test_second_claim_fails_without_a_space_too(store):
    assert store.claim(alloc(POOL_LONE, "192.0.2.10", cid="c1", space=None))
    assert store.claim(alloc(POOL_LONE, "192.0.2.10", cid="c2", space=None)) is False
    assert len(store.allocations()) == 1


def test_space_makes_pools_of_one_network_name_share_addresses(store):
    assert store.claim(alloc(POOL_A, "192.0.2.200", cid="c1"))
    # the same address in another pool of the same space is held
    assert store.claim(alloc(POOL_B, "192.0.2.200", cid="c2")) is False
    assert held(store, POOL_B, SPACE, *V4_ALL) == [ip("192.0.2.200")]
    # ... but not by a pool of another network_name
    assert store.claim(alloc(POOL_RED, "192.0.2.200", cid="c3", space="red"))
    assert [a.container_id for a in store.allocations()] == ["c1", "c3"]


def test_pool_without_space_conflicts_with_its_own_pool_only(store, backend):
    not_applicable(backend.no_far_offsets)  # it holds addresses below its pools' ranges
    assert store.claim(alloc(POOL_A, "192.0.2.5", cid="c1"))
    # overlapping checks off: the space's claim does not block it ...
    assert store.claim(alloc(POOL_LONE, "192.0.2.5", cid="c2", space=None))
    # ... its own pool does
    assert store.claim(alloc(POOL_LONE, "192.0.2.5", cid="c3", space=None)) is False
    # and its row does not block the space either
    assert store.claim(alloc(POOL_LONE, "192.0.2.6", cid="c4", space=None))
    assert store.claim(alloc(POOL_B, "192.0.2.6", cid="c5"))
    assert held(store, POOL_LONE, None, *V4_ALL) == [ip("192.0.2.5"), ip("192.0.2.6")]
    assert held(store, pool_name(SPACE, "192.0.2.0/23"), SPACE, *V4_ALL) == [ip("192.0.2.5"), ip("192.0.2.6")]
    assert sorted(a.container_id for a in store.allocations()) == ["c1", "c2", "c4", "c5"]


V4_AND_V6_SAME_INT = ("192.0.2.197", "::c000:2c5")


def test_v4_and_v6_of_one_space_never_collide(store, backend):
    not_applicable(backend.no_far_offsets)
    v4_text, v6_text = V4_AND_V6_SAME_INT
    assert ip(v4_text) == ip(v6_text)
    assert store.claim(alloc(POOL_A, v4_text, cid="c4"))
    assert store.claim(alloc(POOL_6, v6_text, cid="c6"))
    assert held(store, POOL_A, SPACE, *V4_ALL) == [ip(v4_text)]
    assert held(store, POOL_6, SPACE, *V6_ALL) == [ip(v6_text)]
    assert {(a.version, a.container_id) for a in store.allocations()} == {(4, "c4"), (6, "c6")}


def test_held_of_a_v4_pool_never_returns_v6_rows_of_its_space(store, backend):
    not_applicable(backend.no_far_offsets)
    # the v4 pools hold nothing of their own: nothing tells the store their family but the pool name
    assert store.claim(alloc(POOL_6, V4_AND_V6_SAME_INT[1], cid="c6"))
    assert held(store, POOL_A, SPACE, *V4_ALL) == []
    assert held(store, POOL_B, SPACE, ip("192.0.2.192"), ip("192.0.2.223")) == []


def test_held_of_a_v6_pool_never_returns_v4_rows_of_its_space(store):
    assert store.claim(alloc(POOL_A, V4_AND_V6_SAME_INT[0], cid="c4"))
    assert held(store, POOL_6, SPACE, *V6_ALL) == []
    assert held(store, pool_name(SPACE, "::/96"), SPACE, *V4_ALL) == []


def test_held_bounds_are_inclusive(store):
    for last in (9, 10, 11, 12, 20):
        assert store.claim(alloc(POOL_A, f"192.0.2.{last}", cid=f"c{last}"))
    want = [ip(f"192.0.2.{n}") for n in (10, 11, 12, 20)]
    assert held(store, POOL_A, SPACE, ip("192.0.2.10"), ip("192.0.2.20")) == want
    assert held(store, POOL_A, None, ip("192.0.2.11"), ip("192.0.2.11")) == [ip("192.0.2.11")]
    assert held(store, POOL_A, SPACE, ip("192.0.2.13"), ip("192.0.2.19")) == []
    assert held(store, POOL_A, SPACE, ip("192.0.2.21"), ip("192.0.2.254")) == []


def test_held_is_ascending_and_each_address_once(store):
    for n, last in enumerate((201, 195, 210, 193)):  # out of order, on purpose
        assert store.claim(alloc(POOL_B, f"192.0.2.{last}", cid=f"b{n}"))
    for n, last in enumerate((220, 7, 250, 194)):
        assert store.claim(alloc(POOL_A, f"192.0.2.{last}", cid=f"a{n}"))
    want_a = [ip(f"192.0.2.{n}") for n in (7, 193, 194, 195, 201, 210, 220, 250)]
    # POOL_A's own rows come from both its pool and its space: still once each
    assert held(store, POOL_A, SPACE, *V4_ALL) == want_a
    assert held(store, POOL_B, SPACE, ip("192.0.2.193"), ip("192.0.2.222")) == want_a[1:7]
    assert held(store, POOL_B, None, *V4_ALL) == [ip(f"192.0.2.{n}") for n in (193, 195, 201, 210)]


def test_held_pages_lazily_beyond_256_rows(store):
    # 300 per pool: more than one page (256, the SQLite and etcd stores' PAGE) of each pool and of the space,
    # and few enough that the Kubernetes store, whose every claim rewrites one growing object, stays quick.
    n_each = 300
    base = ip("10.0.0.0")
    pool_even = pool_name("big", "10.0.0.0/20")
    pool_odd = pool_name("big", "10.0.0.0/21")
    with store.transaction():
        for n in range(n_each):
            assert store.claim(alloc(pool_even, base + 2 * n, cid=f"e{n}", space="big"))
            assert store.claim(alloc(pool_odd, base + 2 * n + 1, cid=f"o{n}", space="big"))
    lazy = store.held(pool_even, "big", base, base + 4095)
    assert iter(lazy) is lazy  # an iterator, not a list read up front
    assert next(lazy) == base
    assert list(lazy) == list(range(base + 1, base + 2 * n_each))
    assert held(store, pool_even, None, base, base + 4095) == list(range(base, base + 2 * n_each, 2))
    assert held(store, pool_odd, None, base, base + 4095) == list(range(base + 1, base + 2 * n_each, 2))
    # a window of 540 addresses: 270 of each pool, again more than a page of each
    assert held(store, pool_even, "big", base + 50, base + 589) == list(range(base + 50, base + 590))


def test_held_pages_big_ipv6_exactly(store, backend):
    not_applicable(backend.no_far_offsets)
    top = 2**128 - 2
    pool = pool_name("big6", "ffff:ffff:ffff:ffff::/64")
    with store.transaction():
        for n in range(600):
            assert store.claim(alloc(pool, top - 3 * n, cid=f"c{n}", space="big6"))
    assert held(store, pool, "big6", *V6_ALL) == [top - 3 * n for n in reversed(range(600))]
    assert held(store, pool, None, top - 300, top - 1) == [top - 3 * n for n in reversed(range(1, 101))]


# --- release and hints ---

def test_release_needs_the_matching_attachment(store, backend):
    not_applicable(backend.no_far_offsets)  # it holds addresses below its pools' ranges
    a = alloc(POOL_A, "192.0.2.10", network="netA", cid="c1", ifname="net1")
    assert store.claim(a)
    for wrong in (alloc(POOL_A, "192.0.2.10", network="netB"), alloc(POOL_A, "192.0.2.10", cid="c2"),
                  alloc(POOL_A, "192.0.2.10", ifname="net2"), alloc(POOL_LONE, "192.0.2.10", space=None),
                  alloc(POOL_A, "192.0.2.11")):
        assert store.release(wrong) is False
    assert store.allocations() == [a]
    assert store.release(alloc(POOL_A, "192.0.2.10")) is True
    assert store.allocations() == []
    assert held(store, POOL_A, SPACE, *V4_ALL) == []
    assert store.release(a) is False
    assert store.claim(alloc(POOL_B, "192.0.2.10", cid="c9"))  # the space gave it back too


def test_release_of_something_never_claimed_is_false(store):
    assert store.release(alloc(POOL_A, "192.0.2.10")) is False
    assert store.release(alloc(POOL_6, "2001:db8::1")) is False


def test_hints_are_stored_per_key(store, backend):
    not_applicable(backend.no_hints)
    assert store.hint("k1", POOL_A, SPACE) is None
    store.set_hint("k1", POOL_A, SPACE, ip("192.0.2.9"))
    store.set_hint("k2", POOL_6, SPACE, ip("2001:db8::9"))
    store.set_hint("k3", POOL_LONE, None, ip("192.0.2.7"))
    assert store.hint("k1", POOL_A, SPACE) == ip("192.0.2.9")  # read, then set: the new value wins
    store.set_hint("k1", POOL_A, SPACE, ip("192.0.2.3"))
    assert store.hint("k1", POOL_A, SPACE) == ip("192.0.2.3")
    assert store.hint("k2", POOL_6, SPACE) == ip("2001:db8::9")
    assert store.hint("k3", POOL_LONE, None) == ip("192.0.2.7")
    assert store.hint("k4", POOL_A, SPACE) is None


def test_list_hints_returns_every_hint_with_its_pool_and_space(store, backend):
    not_applicable(backend.no_hints)
    odd = pool_name("a/b%2F", "192.0.2.0/24")  # escaped names come back as they went in
    store.set_hint("blue|space|192.0.2.0/24|192.0.2.1-192.0.2.254|", POOL_A, SPACE, ip("192.0.2.9"))
    store.set_hint("k6", POOL_6, SPACE, ip("2001:db8::9"))
    store.set_hint("k/lone", POOL_LONE, None, ip("192.0.2.7"))
    store.set_hint("k%odd", odd, "a/b%2F", ip("192.0.2.3"))
    assert store.list_hints() == sorted([
        ("blue|space|192.0.2.0/24|192.0.2.1-192.0.2.254|", POOL_A, SPACE, ip("192.0.2.9")),
        ("k6", POOL_6, SPACE, ip("2001:db8::9")),
        ("k/lone", POOL_LONE, None, ip("192.0.2.7")),
        ("k%odd", odd, "a/b%2F", ip("192.0.2.3")),
    ])


def test_release_lowers_hints_of_its_pool_and_space_only(store, backend):
    not_applicable(backend.no_hints)
    released = alloc(POOL_A, "192.0.2.50")
    assert store.claim(released)
    hints = {
        # key: (pool, space, value, value after the release)
        "same-pool": (POOL_A, None, ip("192.0.2.100"), ip("192.0.2.50")),
        "same-space": (POOL_B, SPACE, ip("192.0.2.200"), ip("192.0.2.50")),
        "already-lower": (POOL_A, SPACE, ip("192.0.2.40"), ip("192.0.2.40")),
        "other-space": (POOL_RED, "red", ip("192.0.2.100"), ip("192.0.2.100")),
        "same-space-no-rows": (pool_name(SPACE, "192.0.2.0/26"), SPACE, ip("192.0.2.60"), ip("192.0.2.50")),
        "other-pool-no-space": (POOL_LONE, None, ip("192.0.2.100"), ip("192.0.2.100")),
        "v6-same-space": (POOL_6, SPACE, ip("2001:db8::100"), ip("2001:db8::100")),
    }
    for key, (pool, space, value, _) in hints.items():
        store.set_hint(key, pool, space, value)
    assert store.release(alloc(POOL_A, "192.0.2.50", cid="other")) is False
    assert {key: store.hint(key, h[0], h[1]) for key, h in hints.items()} == {key: h[2] for key, h in hints.items()}
    assert store.release(released)
    assert {key: store.hint(key, h[0], h[1]) for key, h in hints.items()} == {key: h[3] for key, h in hints.items()}


def test_release_without_space_lowers_its_pool_hints_only(store, backend):
    not_applicable(backend.no_hints)
    released = alloc(POOL_LONE, "192.0.2.50", space=None)
    assert store.claim(released)
    store.set_hint("lone", POOL_LONE, None, ip("192.0.2.90"))
    store.set_hint("lone-with-space", POOL_LONE, SPACE, ip("192.0.2.90"))  # another range of the same pool
    store.set_hint("space", POOL_A, SPACE, ip("192.0.2.90"))
    assert store.release(released)
    assert store.hint("lone", POOL_LONE, None) == ip("192.0.2.50")
    assert store.hint("lone-with-space", POOL_LONE, SPACE) == ip("192.0.2.50")
    assert store.hint("space", POOL_A, SPACE) == ip("192.0.2.90")


def _pool_hints(store, pool) -> list:
    return [key for key, p, _, _ in store.list_hints() if p == pool]


@pytest.mark.parametrize("through", ["set_hint", "claim"])
def test_hints_of_a_pool_are_pruned_past_the_bound_and_other_pools_kept(store, backend, through):
    """Every distinct exclude list makes a hint key (issue 14): a pool keeps at most MAX_HINTS_PER_POOL."""
    from cni_ipam.store.base import MAX_HINTS_PER_POOL

    not_applicable(backend.no_hints)

    store.hint("red", POOL_RED, "red")
    store.set_hint("red", POOL_RED, "red", ip("192.0.2.5"))
    for n in range(MAX_HINTS_PER_POOL + 1):
        key = f"blue|space|192.0.2.0/24|exclude-{n:02d}"
        assert store.hint(key, POOL_A, SPACE) is None
        if through == "claim":
            assert store.claim(alloc(POOL_A, f"192.0.2.{n + 1}", cid=f"c{n}"), (key, ip(f"192.0.2.{n + 2}")))
        else:
            store.set_hint(key, POOL_A, SPACE, ip(f"192.0.2.{n + 2}"))
        assert len(_pool_hints(store, POOL_A)) == (n + 1 if n < MAX_HINTS_PER_POOL else 1)
    newest = f"blue|space|192.0.2.0/24|exclude-{MAX_HINTS_PER_POOL:02d}"
    assert _pool_hints(store, POOL_A) == [newest]
    assert store.hint(newest, POOL_A, SPACE) == ip(f"192.0.2.{MAX_HINTS_PER_POOL + 2}")
    assert store.hint("blue|space|192.0.2.0/24|exclude-00", POOL_A, SPACE) is None
    assert _pool_hints(store, POOL_RED) == ["red"] and store.hint("red", POOL_RED, "red") == ip("192.0.2.5")
    assert [h[2] for h in store.list_hints() if h[1] == POOL_A] == [SPACE]  # no stale space pointers
    # moving an existing hint again prunes nothing
    store.set_hint(newest, POOL_A, SPACE, ip("192.0.2.100"))
    assert _pool_hints(store, POOL_A) == [newest]


# --- find, update_owner, allocations ---

@pytest.fixture
def four(store) -> dict:
    """Four allocations that differ in one field at a time."""
    made = {
        "a": alloc(POOL_A, "192.0.2.1", network="netA", cid="c1", ifname="net1", pod="ns/p1"),
        "b": alloc(POOL_A, "192.0.2.2", network="netA", cid="c1", ifname="net2", pod="ns/p1"),
        "c": alloc(POOL_RED, "192.0.2.1", network="netB", cid="c1", ifname="net1", pod="ns/p1", space="red"),
        "d": alloc(POOL_6, "2001:db8::1", network="netA", cid="c2", ifname="net1", pod="ns/p2"),
    }
    for a in made.values():
        assert store.claim(a)
    return made


@pytest.mark.parametrize("query, names", [
    ({}, "abcd"),
    ({"network": "netA"}, "abd"),
    ({"network": "netB"}, "c"),
    ({"container_id": "c1"}, "abc"),
    ({"ifname": "net1"}, "acd"),
    ({"pod": "ns/p1"}, "abc"),
    ({"pod": "ns/p2"}, "d"),
    ({"network": "netA", "container_id": "c1"}, "ab"),
    ({"network": "netA", "container_id": "c1", "ifname": "net1"}, "a"),
    ({"pod": "ns/p1", "ifname": "net1"}, "ac"),
    ({"network": "netA", "ifname": "net1", "pod": "ns/p2"}, "d"),
    ({"network": "netB", "container_id": "c2"}, ""),
    ({"pod": "ns/none"}, ""),
])
def test_find_by_each_field_and_combinations(store, four, query, names):
    found = store.find(**query)
    assert sorted(found, key=lambda a: (a.pool, a.ip)) == found  # (pool, address) order
    assert sorted((a.pool, a.ip, a.container_id, a.ifname) for a in found) == sorted(
        (four[n].pool, four[n].ip, four[n].container_id, four[n].ifname) for n in names)


def test_find_returns_every_field(store):
    a = alloc(POOL_6, "2001:db8::7", network="netA", cid="c" * 64, ifname="eth9", pod="ns/pod",
              netns="/var/run/netns/x", node="node-1")
    a.created = 1700000000.5
    assert store.claim(a)
    assert store.find(pod="ns/pod") == [a]
    assert store.find(pod="ns/pod")[0].to_dict() == a.to_dict()


def test_update_owner_moves_the_address_to_the_new_container(store, four):
    stale = alloc(POOL_A, "192.0.2.1", network="netA", cid="c1", ifname="net1", pod="ns/p1")
    assert store.update_owner(stale, "c9", "/var/run/netns/new") is True
    assert (stale.container_id, stale.netns) == ("c9", "/var/run/netns/new")
    [moved] = store.find(container_id="c9")
    assert (moved.pool, moved.ip, moved.network, moved.ifname, moved.pod, moved.netns) == (
        POOL_A, ip("192.0.2.1"), "netA", "net1", "ns/p1", "/var/run/netns/new")
    assert [a.ifname for a in store.find(network="netA", container_id="c1")] == ["net2"]
    assert store.release(alloc(POOL_A, "192.0.2.1", cid="c1")) is False
    assert store.release(alloc(POOL_A, "192.0.2.1", cid="c9")) is True


def test_update_owner_of_a_released_allocation_changes_nothing(store):
    a = alloc(POOL_A, "192.0.2.1")
    assert store.claim(a)
    assert store.release(alloc(POOL_A, "192.0.2.1"))
    stale = alloc(POOL_A, "192.0.2.1")
    assert store.update_owner(stale, "c9", "/var/run/netns/new") is False
    assert stale.container_id != "c9"
    assert store.allocations() == []
    assert store.claim(alloc(POOL_A, "192.0.2.1", cid="c2"))


def test_update_owner_never_takes_an_address_claimed_again_by_another_attachment(store):
    """The address was freed and claimed by another pod between the caller's read and its update."""
    stale = alloc(POOL_A, "192.0.2.1", cid="c1", pod="ns/old")
    assert store.claim(stale)
    assert store.release(alloc(POOL_A, "192.0.2.1", cid="c1"))
    newcomer = alloc(POOL_A, "192.0.2.1", cid="c2", pod="ns/new")
    assert store.claim(newcomer)
    assert store.update_owner(stale, "c9", "/var/run/netns/new") is False
    [held] = store.allocations()
    assert (held.container_id, held.pod) == ("c2", "ns/new")


def test_allocations_are_in_pool_then_address_order(store):
    rows = [(POOL_RED, "192.0.2.9", "red"), (POOL_A, "192.0.2.10", SPACE), (POOL_6, "2001:db8::a", SPACE),
            (POOL_A, "192.0.2.9", SPACE), (POOL_6, "2001:db8::9", SPACE), (POOL_6, "2001:db8:0:0:1::", SPACE),
            (POOL_B, "192.0.2.200", SPACE)]
    for n, (pool, address, space) in enumerate(rows):
        assert store.claim(alloc(pool, address, cid=f"c{n}", space=space))
    got = [(a.pool, a.address) for a in store.allocations()]
    assert got == [
        (POOL_A, "192.0.2.9"), (POOL_A, "192.0.2.10"), (POOL_B, "192.0.2.200"),
        (POOL_6, "2001:db8::9"), (POOL_6, "2001:db8::a"), (POOL_6, "2001:db8:0:0:1::"),
        (POOL_RED, "192.0.2.9")]
    assert got == sorted(got, key=lambda pa: (pa[0], ip(pa[1])))


# --- transactions ---

def test_transaction_commits_on_success(store, backend):
    with store.transaction():
        assert store.claim(alloc(POOL_A, "192.0.2.10"))
        store.set_hint("k", POOL_A, SPACE, ip("192.0.2.11"))
    assert held(store, POOL_A, SPACE, *V4_ALL) == [ip("192.0.2.10")]
    if not backend.no_hints:
        assert store.hint("k", POOL_A, SPACE) == ip("192.0.2.11")


def test_transaction_rolls_back_on_exception(store, backend):
    if backend.no_rollback:
        pytest.skip(f"not applicable: {backend.no_rollback}")
    assert store.claim(alloc(POOL_A, "192.0.2.1", cid="before"))
    store.set_hint("k", POOL_A, SPACE, ip("192.0.2.2"))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.transaction():
            assert store.claim(alloc(POOL_A, "192.0.2.10", cid="inside"))
            assert store.release(alloc(POOL_A, "192.0.2.1", cid="before"))
            store.set_hint("k", POOL_A, SPACE, ip("192.0.2.77"))
            raise Boom
    assert [a.container_id for a in store.allocations()] == ["before"]
    assert held(store, POOL_A, SPACE, *V4_ALL) == [ip("192.0.2.1")]
    assert store.hint("k", POOL_A, SPACE) == ip("192.0.2.2")
    with store.transaction():  # and the store is usable afterwards
        assert store.claim(alloc(POOL_A, "192.0.2.10", cid="after"))
    assert [a.container_id for a in store.allocations()] == ["before", "after"]


# --- values ---

BIG = [2**64, 2**64 + 1, 2**127 + 12345, 2**128 - 2]


def test_big_ipv6_addresses_round_trip_exactly(store, backend):
    not_applicable(backend.no_far_offsets)
    pool = pool_name("big", "::/0")
    for n, value in enumerate(BIG):
        assert store.claim(alloc(pool, value, cid=f"c{n}", space="big"))
    assert store.claim(alloc(pool, 2**127 + 12345, cid="dup", space="big")) is False
    assert held(store, pool, "big", *V6_ALL) == BIG
    assert held(store, pool, None, 2**127 + 12345, 2**127 + 12345) == [2**127 + 12345]
    assert held(store, pool, "big", 2**127 + 12346, 2**128 - 3) == []
    assert [a.ip for a in store.allocations()] == BIG
    assert [a.address for a in store.find(network="netA")] == [str(ipaddress.IPv6Address(v)) for v in BIG]
    store.set_hint("h", pool, "big", 2**128 - 1)
    assert store.hint("h", pool, "big") == 2**128 - 1
    assert store.release(alloc(pool, 2**64 + 1, cid="c1", space="big"))
    assert store.hint("h", pool, "big") == 2**64 + 1
    assert held(store, pool, "big", *V6_ALL) == [2**64, 2**127 + 12345, 2**128 - 2]


@pytest.mark.parametrize("allocation", [
    alloc(POOL_A, "192.0.2.10", pod="ns/p", netns="/run/netns/a", node="n1"),
    alloc(POOL_LONE, "192.0.2.10", space=None),
    alloc(POOL_6, "2001:db8::ffff", cid="x" * 64),
    alloc(pool_name("big", "::/0"), 2**128 - 2),
    alloc(POOL_6, "::5"),  # a v6 address with a small int stays v6
])
def test_allocation_to_dict_from_dict_round_trip(allocation):
    allocation.created = 1712345678.25
    data = allocation.to_dict()
    assert data["ip"] == allocation.address
    again = Allocation.from_dict(json.loads(json.dumps(data)))
    assert again == allocation
    assert (again.ip, again.version) == (allocation.ip, allocation.version)


def test_allocation_equality_looks_at_every_field():
    a = alloc(POOL_A, "192.0.2.10")
    assert a == alloc(POOL_A, "192.0.2.10")
    assert a != alloc(POOL_A, "192.0.2.10", pod="ns/p")
    assert a != alloc(POOL_A, "192.0.2.10", space=None)


# === SQLite only ===

@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "state" / "ipam.db")


def test_sqlite_survives_reopen(db_path):
    from cni_ipam.store.sqlite import SQLiteStore

    first = SQLiteStore(db_path)
    rows = [alloc(pool_name("big", "::/0"), 2**127 + 1, space=None), alloc(POOL_A, "192.0.2.10", pod="ns/p")]
    with first.transaction():
        for a in rows:
            assert first.claim(a)
        first.set_hint("k", POOL_A, SPACE, ip("192.0.2.11"))
    first.close()
    again = SQLiteStore(db_path)
    try:
        assert again.allocations() == rows
        assert again.hint("k", POOL_A, SPACE) == ip("192.0.2.11")
        assert again.claim(alloc(POOL_B, "192.0.2.10", cid="other")) is False  # the space index is still there
    finally:
        again.close()


def test_sqlite_uses_wal_and_synchronous_full(db_path):
    """FULL's promise: SQLite commits with NORMAL (no fsync under the lock) and the store fsyncs the WAL after
    the lock (tests/unit/test_sqlite_synchronous.py shows when)."""
    import sqlite3

    from cni_ipam.store.sqlite import SQLiteStore

    for _ in range(2):  # when creating, and when opening an existing file
        store = SQLiteStore(db_path)
        try:
            assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: the store syncs after
            assert store._sync_after
        finally:
            store.close()
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file
    finally:
        other.close()


def test_sqlite_transaction_takes_the_flock_and_the_write_lock_up_front(db_path):
    import fcntl
    import os
    import sqlite3

    from cni_ipam.store.sqlite import SQLiteStore

    store = SQLiteStore(db_path)
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        with store.transaction():
            fd = os.open(db_path + ".lock", os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # nothing written yet, but IMMEDIATE holds the write lock
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
        store.close()


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:40 / {root}/nfs rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2
31 30 0:41 / {root}/nfs/local rw,relatime - tmpfs tmpfs rw
32 22 0:42 / {root}/with\\040space rw,relatime - cifs //srv/share rw
33 22 0:43 / {root}/sshfs rw,nosuid shared:9 master:2 - fuse.sshfs user@host:/ rw
34 22 0:44 / {root}/nfsdata rw - xfs /dev/sdb1 rw
35 22 0:45 / {root}/nfs rw - ext4 /dev/sdc1 rw
36 22 0:46 / {root}/shadowed rw - ext4 /dev/sdd1 rw
"""


@pytest.fixture
def mountinfo(tmp_path):
    import os

    root = os.path.realpath(tmp_path)
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO.format(root=root))
    return root, str(path)


@pytest.mark.parametrize("where, fstype", [
    ("ipam.db", "ext4"),
    ("with space/ipam.db", "cifs"),
    ("sshfs/deep/ipam.db", "fuse.sshfs"),
    ("nfsdata/ipam.db", "xfs"),  # a mount point that merely starts like another is not inside it
    ("nfs/ipam.db", "ext4"),  # the later mount on the same point hides the earlier
    ("nfs/local/ipam.db", "tmpfs"),  # the longest mount point wins
    ("nfs", "ext4"),
])
def test_filesystem_type_reads_mountinfo(mountinfo, where, fstype):
    import os

    from cni_ipam.store.sqlite_setup import filesystem_type

    root, path = mountinfo
    assert filesystem_type(os.path.join(root, where), mountinfo=path) == fstype


def test_filesystem_type_without_mountinfo_is_unknown(tmp_path):
    from cni_ipam.store.sqlite_setup import filesystem_type

    assert filesystem_type(str(tmp_path), mountinfo=str(tmp_path / "missing")) == ""


def test_filesystem_type_reads_this_machine(tmp_path):
    from cni_ipam.store.sqlite_setup import filesystem_type

    assert filesystem_type("/proc") == "proc"


@pytest.mark.parametrize("sub, fstype", [("with space", "cifs"), ("sshfs", "fuse.sshfs")])
def test_sqlite_refuses_a_network_filesystem(monkeypatch, mountinfo, sub, fstype):
    import functools
    import os

    from cni_ipam.store import sqlite, sqlite_setup
    from cni_ipam.store.base import StoreError

    root, path = mountinfo
    monkeypatch.setattr(sqlite_setup, "filesystem_type",
                        functools.partial(sqlite_setup.filesystem_type, mountinfo=path))
    db = os.path.join(root, sub, "ipam.db")
    with pytest.raises(StoreError) as info:
        sqlite.SQLiteStore(db)
    message = str(info.value)
    assert f"{db!r} is on a {fstype} filesystem" in message
    assert "one node's local disk only" in message
    assert '"datastore": "etcd"' in message
    assert info.value.retry is False
    assert not os.path.exists(db)


def test_sqlite_refuses_nfs_but_opens_on_a_local_filesystem(monkeypatch, tmp_path):
    import functools
    import os

    from cni_ipam.store import sqlite, sqlite_setup
    from cni_ipam.store.base import StoreError

    root = os.path.realpath(tmp_path)
    info_path = tmp_path / "mountinfo"
    info_path.write_text(f"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:40 / {root}/shared rw - nfs4 srv:/x rw\n")
    monkeypatch.setattr(sqlite_setup, "filesystem_type",
                        functools.partial(sqlite_setup.filesystem_type, mountinfo=str(info_path)))
    with pytest.raises(StoreError, match="on a nfs4 filesystem"):
        sqlite.SQLiteStore(os.path.join(root, "shared", "ipam.db"))
    local = sqlite.SQLiteStore(os.path.join(root, "local", "ipam.db"))
    local.close()


def test_claim_with_a_hint_moves_it_only_when_the_claim_wins(store, backend):
    not_applicable(backend.no_hints)
    first = alloc(POOL_A, "192.0.2.10", space=SPACE)
    assert store.hint("h", POOL_A, SPACE) is None
    assert store.claim(first, hint=("h", ip("192.0.2.11")))
    assert store.hint("h", POOL_A, SPACE) == ip("192.0.2.11")
    rival = alloc(POOL_A, "192.0.2.10", space=SPACE, cid="rival")
    assert not store.claim(rival, hint=("h", ip("192.0.2.99")))
    assert store.hint("h", POOL_A, SPACE) == ip("192.0.2.11")


def test_prefetch_changes_nothing_that_reads_return(store, backend):
    held = alloc(POOL_A, "192.0.2.10", space=SPACE)
    assert store.claim(held)
    store.set_hint("h", POOL_A, SPACE, ip("192.0.2.11"))
    store.prefetch(held.network, held.container_id, held.ifname, held.pod, [("h", POOL_A, SPACE)])
    assert store.find(network=held.network, container_id=held.container_id, ifname=held.ifname) == [held]
    if not backend.no_hints:
        assert store.hint("h", POOL_A, SPACE) == ip("192.0.2.11")
    assert store.release(held)  # a write after prefetch: later reads see it
    assert store.find(network=held.network, container_id=held.container_id, ifname=held.ifname) == []


def test_claims_and_releases_leave_no_unbacked_reservation(store, backend):
    """The reconciler frees space claims no allocation backs; every store's own claims are always backed."""
    kept = alloc(POOL_A, "192.0.2.10")
    freed = alloc(POOL_B, "192.0.2.200", cid="c2")
    lone = alloc(POOL_LONE, "192.0.2.11", cid="c3", space=None)
    v6 = alloc(POOL_6, "2001:db8::5", cid="c4")
    odd = alloc(pool_name("a/b%2F", "192.0.2.0/24"), "192.0.2.10", cid="c5", space="a/b%2F")  # escaped names
    made = (kept, freed, lone, v6) if backend.kube_names else (kept, freed, lone, v6, odd)
    for a in made:
        assert store.claim(a)
    assert store.release(freed)
    assert store.unbacked_reservations() == []
    assert held(store, POOL_B, SPACE, *V4_ALL) == [ip("192.0.2.10")]  # nothing dropped with them
    assert len(store.allocations()) == len(made) - 1


# --- verify: each backend checks itself behind one method (cni-ipam verify) ---

def test_a_store_written_through_its_verbs_verifies_clean(store):
    for n, (pool, address, space) in enumerate([(POOL_A, "192.0.2.10", SPACE), (POOL_B, "192.0.2.200", SPACE),
                                                (POOL_LONE, "192.0.2.10", None), (POOL_6, "2001:db8::5", SPACE)]):
        assert store.claim(alloc(pool, address, cid=f"c{n}", pod=f"ns/p{n}", space=space))
    store.set_hint("k", POOL_A, SPACE, ip("192.0.2.11"))
    assert store.release(alloc(POOL_B, "192.0.2.200", cid="c1", pod="ns/p1"))
    seen = []
    report = store.verify(progress=lambda done, total: seen.append((done, total)))
    assert [p.to_dict() for p in report.problems] == [] and report.repaired == []
    assert seen == [(1, 3), (2, 3), (3, 3)]  # one tick per allocation record read


def test_verify_finds_an_address_outside_its_pool_and_repair_frees_only_it(store):
    """``claim`` takes the pool's word for it; verify is what notices, and frees what no range can hold."""
    kept = alloc(POOL_A, "192.0.2.10")
    assert store.claim(kept) and store.claim(alloc(POOL_A, "198.51.100.7", cid="c2"))
    report = store.verify()
    assert [(p.kind, p.repair is not None) for p in report.problems] == [("outside-cidr", True)]
    assert "198.51.100.7 is outside the CIDR of its pool blue/192.0.2.0/24" in report.problems[0].detail
    assert [a.address for a in store.allocations()] == ["192.0.2.10", "198.51.100.7"]  # checking changes nothing
    report = store.verify(repair=True)
    assert report.problems == [] and len(report.repaired) == 1 and "198.51.100.7" in report.repaired[0]
    assert store.allocations() == [kept]

