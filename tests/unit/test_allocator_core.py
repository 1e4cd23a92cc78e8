"""Tests for cni_ipam.allocator (the package itself): the pure allocation decisions, against brute-force models."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cni_ipam.allocator as core  # the decisions live in the package itself
from cni_ipam.net.ranges import parse_range

V4_BASES = ["198.51.100.0", "10.255.255.0", "0.0.0.0"]
V6_BASES = ["2001:db8::", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00", "8000::"]  # small and > 2**64


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


@st.composite
def configs(draw):
    """A whereabouts range entry as config text, and its raw pieces for the model."""
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    base = ip(draw(st.sampled_from(V4_BASES if version == 4 else V6_BASES)))
    prefix = draw(st.integers(bits - 7, bits - 2))  # 2 .. 126 usable addresses
    host = draw(st.integers(0, 255))
    net = ipaddress.ip_network((base + host, prefix), strict=False)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    first, last = lo + 1, hi - 1
    range_start = range_end = None
    if draw(st.booleans()):
        range_start = draw(st.integers(first, last))
    if draw(st.booleans()):
        range_end = draw(st.integers(range_start or first, last))
    excludes = []
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(max(0, lo - 8), min(2**bits - 1, hi + 8)))
        plen = draw(st.integers(prefix - 1, bits))
        excludes.append(f"{cls(at)}/{plen}" if plen != bits or draw(st.booleans()) else str(cls(at)))
    rng = parse_range("ipam", f"{cls(base + host)}/{prefix}",
                      None if range_start is None else str(cls(range_start)),
                      None if range_end is None else str(cls(range_end)), excludes)
    start, end = range_start or first, range_end or last
    nets = [ipaddress.ip_network(e, strict=False) for e in excludes]
    blocks = [(int(n.network_address), int(n.broadcast_address)) for n in nets]

    def allocatable(x: int) -> bool:
        return start <= x <= end and not any(b_lo <= x <= b_hi for b_lo, b_hi in blocks)

    return rng, allocatable, lo, hi


@st.composite
def cases(draw):
    rng, allocatable, lo, hi = draw(configs())
    around = st.integers(max(0, lo - 4), hi + 4)
    held = sorted(draw(st.sets(around, max_size=40)))
    if draw(st.booleans()):  # sometimes a range that is nearly full, with runs that end at an exclusion
        held = sorted(set(held) | {x for x in range(lo, hi + 1) if allocatable(x) and draw(st.integers(0, 9)) > 0})
    return rng, allocatable, lo, hi, held, draw(around)


@settings(max_examples=400, deadline=None)
@given(cases())
def test_first_free_is_the_lowest_allocatable_unheld_address_from_start(case):
    rng, allocatable, lo, hi, held, start = case
    want = next((x for x in range(start, hi + 1) if allocatable(x) and x not in set(held)), None)
    assert core.first_free(rng, start, iter(held)) == want


@settings(max_examples=300, deadline=None)
@given(cases(), st.integers(1, 20))
def test_free_candidates_are_the_next_free_addresses_in_order(case, count):
    rng, allocatable, lo, hi, held, start = case
    want = [x for x in range(start, hi + 1) if allocatable(x) and x not in set(held)][:count]
    assert core.free_candidates(rng, start, iter(held), count) == want


def test_first_free_of_the_mission_example():
    rng = parse_range("ipam", "192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"])
    assert core.first_free(rng, rng.start, iter([])) == ip("192.0.2.197")
    assert core.first_free(rng, rng.start, iter([ip("192.0.2.197"), ip("192.0.2.198")])) == ip("192.0.2.199")
    held = range(ip("192.0.2.197"), ip("192.0.2.223"))
    assert core.first_free(rng, rng.start, iter(held)) is None


def test_first_free_reads_held_lazily_and_only_as_far_as_needed():
    rng = parse_range("ipam", "2001:db8::/64")
    consumed = []

    def held():
        for x in range(rng.start, rng.start + 1000):
            consumed.append(x)
            yield x
        yield rng.start + 1001
        raise AssertionError("read past the first gap")

    assert core.first_free(rng, rng.start, held()) == rng.start + 1000
    assert len(consumed) == 1000


def test_first_free_jumps_a_huge_exclusion():
    rng = parse_range("ipam", "2001:db8::/64", exclude=["2001:db8::/65"])
    assert core.first_free(rng, rng.start, iter([])) == ip("2001:db8::8000:0:0:0")
    assert core.first_free(rng, ip("2001:db8::8000:0:0:0"), iter([ip("2001:db8::8000:0:0:0")])) == ip(
        "2001:db8::8000:0:0:1")


def test_hint_key_changes_with_what_defines_the_range():
    rng = parse_range("ipam", "192.0.2.0/24", exclude=["192.0.2.0/28"])
    key = core.hint_key("blue", True, rng)
    assert key == core.hint_key("blue", True, parse_range("ipam", "192.0.2.0/24", exclude=["192.0.2.0/28"]))
    others = {
        core.hint_key("red", True, rng),
        core.hint_key("blue", False, rng),
        core.hint_key("blue", True, parse_range("ipam", "192.0.2.0/24", exclude=["192.0.2.0/29"])),
        core.hint_key("blue", True, parse_range("ipam", "192.0.2.0/24", "192.0.2.20", exclude=["192.0.2.0/28"])),
        core.hint_key("blue", True, parse_range("ipam", "192.0.2.0/25", exclude=["192.0.2.0/28"])),
    }
    assert key not in others and len(others) == 5


@pytest.mark.parametrize("range_text, exclude, size, span", [
    ("192.0.2.192/27", ["192.0.2.192/30", "192.0.2.196/32"], 26, "allocatable 192.0.2.197-192.0.2.222"),
    ("192.0.2.0/30", ["192.0.2.0/30"], 0, "allocatable none (all excluded)"),
    ("2001:db8::/64", [], 2**64 - 2, "allocatable 2001:db8::1-2001:db8::ffff:ffff:ffff:fffe"),
])
def test_exhausted_message_names_the_range_and_its_size(range_text, exclude, size, span):
    rng = parse_range("ipam.ipRanges[1]", range_text, exclude=exclude)
    message = core.exhausted_message(rng, "ipam.ipRanges[1]")
    assert message.startswith("ipam.ipRanges[1]: ")
    assert f"range {range_text}" in message
    assert f"all {size} allocatable addresses are held" in message
    assert span in message


# --- contention: a kept-open allocator's cursor (Contention) ---

@settings(max_examples=300, deadline=None)
@given(cases())
def test_next_free_from_is_the_first_free_at_or_above_the_cursor_else_from_the_start(case):
    rng, allocatable, lo, hi, held, cursor = case
    free = [x for x in range(lo, hi + 1) if allocatable(x) and x not in set(held)]
    want = next((x for x in free if x >= cursor), free[0] if free else None)
    assert core.next_free_from(rng, cursor, held) == want


@settings(max_examples=300, deadline=None)
@given(cases(), st.integers(0, 2**32))
def test_random_free_is_a_free_allocatable_address_and_none_only_when_full(case, seed):
    import random

    rng, allocatable, lo, hi, held, _ = case
    got = core.random_free(rng, held, random.Random(seed))
    if any(allocatable(x) and x not in set(held) for x in range(lo, hi + 1)):
        assert allocatable(got) and got not in set(held)
    else:
        assert got is None


def test_random_free_draws_over_the_whole_range_not_near_its_start():
    import random

    rng = parse_range("ipam", "10.0.0.0/22")
    held = list(range(rng.start, rng.start + 300))  # the lowest 300 held
    rand = random.Random(7)
    got = [core.random_free(rng, held, rand) for _ in range(200)]
    assert all(x >= rng.start + 300 for x in got)
    assert max(got) - min(got) > 600 and len(set(got)) > 150  # not the next few free ones (SPREAD)


def test_contention_starts_quiet_and_lasts_quiet_seconds_after_the_last_lost_race():
    import random

    rng = parse_range("ipam", "10.0.0.0/24")
    memory = core.Contention()
    assert not memory.contended(100.0)  # never lost: lowest free, as whereabouts
    moved_to = memory.lost(rng, [], 100.0, random.Random(1))
    assert rng.is_allocatable(moved_to)
    assert memory.contended(100.0) and memory.contended(100.0 + core.QUIET - 0.01)
    assert not memory.contended(100.0 + core.QUIET)
    memory.lost(rng, [], 105.0, random.Random(2))  # each lost race starts the quiet time again
    assert memory.contended(100.0 + core.QUIET)


def test_contention_picks_from_its_cursor_on_past_held_and_wraps_round():
    rng = parse_range("ipam", "192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"])  # .197-.222

    class At:  # a random source that draws what it is told
        def __init__(self, value):
            self.value = value

        def randint(self, lo, hi):
            return self.value

    memory = core.Contention()
    held = [ip("192.0.2.198"), ip("192.0.2.200")]
    assert memory.lost(rng, held, 0.0, At(ip("192.0.2.220"))) == ip("192.0.2.220")
    assert memory.pick(rng, held) == ip("192.0.2.221")
    assert memory.pick(rng, held) == ip("192.0.2.222")
    assert memory.pick(rng, held) == ip("192.0.2.197")  # past the range's end: from its start
    assert memory.pick(rng, held) == ip("192.0.2.199")
    assert memory.pick(rng, held) == ip("192.0.2.201")
    full = [x for x in range(rng.start, rng.end + 1) if rng.is_allocatable(x)]
    assert memory.pick(rng, full) is None
    assert memory.lost(rng, full, 1.0, At(ip("192.0.2.210"))) is None and not memory.contended(1.0)


def simulated_losses(contended: bool, nodes=4, at_once=4, rounds=16, seed=3) -> list:
    """Races lost per round by ``nodes`` allocators sharing one /22, each claiming ``at_once`` addresses per
    round from its view (the pool at the round's start and its own picks); the first claim of an address wins.
    ``contended``: each node keeps a Contention; else every pick is the lowest free (whereabouts' order)."""
    import bisect
    import random

    rand = random.Random(seed)
    rng = parse_range("ipam", "10.0.0.0/22")
    held, memories, per_round = [], [core.Contention() for _ in range(nodes)], []
    for n in range(rounds):
        now = n * 0.1
        claims = []
        for node, memory in enumerate(memories):
            view = list(held)
            for _ in range(at_once):
                if contended and memory.contended(now):
                    pick = memory.pick(rng, view)
                else:
                    pick = core.first_free(rng, rng.start, iter(view))
                bisect.insort(view, pick)
                claims.append((node, pick, view))
        rand.shuffle(claims)
        lost = 0
        for node, pick, view in claims:
            if pick in held:
                lost += 1
                memories[node].lost(rng, view, now, rand)
            else:
                bisect.insort(held, pick)
        per_round.append(lost)
    return per_round


def test_contended_nodes_drift_apart_where_lowest_free_nodes_keep_colliding():
    lowest = simulated_losses(contended=False)
    spread = simulated_losses(contended=True)
    assert lowest[0] == spread[0] == 12  # the first round: all four nodes claim the same four addresses
    assert sum(lowest[1:]) == 15 * 12  # lowest free: every round again
    assert sum(spread[1:]) <= 6, spread  # with a cursor each: a stretch of its own, once they have drifted apart


def test_pick_from_reads_lazily_and_picks_as_pick_does():
    """A store that pages (etcd) reads from the cursor on, and below it only when nothing above is free."""
    rng = parse_range("ipam", "192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"])  # .197-.222
    every = [x for x in range(rng.start, rng.end + 1) if rng.is_allocatable(x)]
    for held in ([], [ip("192.0.2.198"), ip("192.0.2.200")], every[5:], every[:-1], every):
        for cursor in [None] + list(range(rng.start, rng.end + 1)):
            whole, lazy, reads = core.Contention(), core.Contention(), []
            whole.cursor = lazy.cursor = cursor

            def held_in(lo, hi):
                reads.append((lo, hi))
                return iter([x for x in held if lo <= x <= hi])

            for _ in range(3):
                assert lazy.pick_from(rng, held_in) == whole.pick(rng, held)
                assert lazy.cursor == whole.cursor
            assert reads[0][0] == (rng.start if cursor is None else cursor)


def test_jump_moves_the_cursor_to_a_drawn_allocatable_address_and_starts_the_quiet_time():
    rng = parse_range("ipam", "192.0.2.192/27", exclude=["192.0.2.192/30", "192.0.2.196/32"])

    class At:
        def __init__(self, value):
            self.value = value

        def randint(self, lo, hi):
            assert (lo, hi) == (rng.first_allocatable(), rng.last_allocatable())
            return self.value

    memory = core.Contention()
    memory.jump(rng, 50.0, At(ip("192.0.2.210")))
    assert memory.cursor == ip("192.0.2.210") and memory.contended(50.0)
    assert memory.pick_from(rng, lambda lo, hi: iter([ip("192.0.2.210")])) == ip("192.0.2.211")
    assert not memory.contended(50.0 + core.QUIET)
