"""The admin commands' pure parts: pool fill, hint keys, import planning, liveness, bars and progress."""

from __future__ import annotations

import io

import pytest

from cni_ipam.admin.output import Progress, bar
from cni_ipam.admin.state import (AdminError, liveness, parse_state, plan_import, pool_stats,
                                  range_from_hint_key)
from cni_ipam.allocator import hint_key
from cni_ipam.net.ranges import parse_range
from cni_ipam.store.base import Allocation


def alloc(pool, ip, cid="c1", space="", node="", netns="", ifname="net1", network="net-a"):
    from cni_ipam.net.addr import ip_address

    address = ip_address(ip)
    return Allocation(pool, int(address), address.version, network, cid, ifname, space=space, node=node,
                      netns=netns)


@pytest.mark.parametrize("rng, start, end, exclude", [
    ("192.0.2.0/24", None, None, []),
    ("192.0.2.0/24", "192.0.2.10", "192.0.2.20", ["192.0.2.12/31", "192.0.2.15/32"]),
    ("2001:db8::/64", None, None, ["2001:db8::/120"]),
])
def test_a_hint_key_gives_back_its_range_definition(rng, start, end, exclude):
    definition = parse_range("ipam", rng, start, end, exclude)
    for overlapping in (True, False):
        assert range_from_hint_key(hint_key("net|work", overlapping, definition)) == definition


@pytest.mark.parametrize("key", ["", "k1", "a|b|not-a-cidr|1-2|", "n|space|192.0.2.0/24|192.0.2.9-192.0.2.1|"])
def test_a_key_that_names_no_range_gives_none(key):
    assert range_from_hint_key(key) is None


def test_pool_size_comes_from_the_range_definition_else_the_cidr():
    rng = parse_range("ipam", "192.0.2.0/28", exclude=["192.0.2.1/32"])
    hints = [(hint_key("", True, rng), "/192.0.2.0/28", "", 0)]
    allocations = [alloc("/192.0.2.0/28", "192.0.2.2"), alloc("/192.0.2.0/28", "192.0.2.1", cid="c-excl"),
                   alloc("/198.51.100.0/29", "198.51.100.1", space=None)]
    by_pool = {r["pool"]: r for r in pool_stats(allocations, hints)}
    ranged = by_pool["/192.0.2.0/28"]
    assert (ranged["size"], ranged["size_from"], ranged["held"], ranged["own"], ranged["free"]) == (13, "range", 1, 2, 12)
    bare = by_pool["/198.51.100.0/29"]
    assert (bare["size"], bare["size_from"], bare["held"], bare["free"], bare["percent_used"]) == (6, "cidr", 1, 5, 16.7)


def test_a_shared_address_space_takes_from_every_range_of_it():
    allocations = [alloc("/192.0.2.0/24", "192.0.2.200"), alloc("/192.0.2.192/27", "192.0.2.193", cid="c2")]
    by_pool = {r["pool"]: r for r in pool_stats(allocations, [])}
    assert by_pool["/192.0.2.0/24"]["held"] == 2 and by_pool["/192.0.2.0/24"]["own"] == 1
    assert by_pool["/192.0.2.192/27"]["held"] == 2 and by_pool["/192.0.2.192/27"]["free"] == 28
    alone = [alloc("/192.0.2.0/24", "192.0.2.200", space=None), alloc("/192.0.2.192/27", "192.0.2.193", space=None)]
    assert [r["held"] for r in pool_stats(alone, [])] == [1, 1]  # overlapping checks off: each its own


def test_a_pool_known_only_from_hints_is_listed_empty():
    rng = parse_range("ipam", "192.0.2.0/30")
    [row] = pool_stats([], [(hint_key("blue", True, rng), "blue/192.0.2.0/30", "blue", 0)])
    assert (row["pool"], row["space"], row["size"], row["held"], row["free"], row["percent_used"]) == (
        "blue/192.0.2.0/30", "blue", 2, 0, 2, 0.0)


def test_import_plan_splits_new_present_and_conflicting():
    existing = [alloc("/192.0.2.0/24", "192.0.2.1"), alloc("/192.0.2.0/24", "192.0.2.2", cid="c2")]
    incoming = [alloc("/192.0.2.0/24", "192.0.2.1"),  # same attachment: already there
                alloc("/192.0.2.0/24", "192.0.2.2", cid="other"),  # held by c2: conflict
                alloc("/192.0.2.0/25", "192.0.2.1", cid="c9"),  # same space, other pool: conflict
                alloc("/192.0.2.0/24", "192.0.2.3", cid="c3"),  # new
                alloc("/192.0.2.0/24", "192.0.2.3", cid="c4"),  # twice in the file: conflict
                alloc("/192.0.2.0/25", "192.0.2.1", cid="c9", space=None)]  # no space: its own pool only -> new
    write, present, conflicts = plan_import(existing, incoming)
    assert [a.container_id for a in write] == ["c3", "c9"]
    assert [a.container_id for a in present] == ["c1"]
    assert [(a.container_id, held.container_id) for a, held in conflicts] == [("other", "c2"), ("c9", "c1"),
                                                                              ("c4", "c3")]


@pytest.mark.parametrize("document, message", [
    ([], "not a cni-ipam export"),
    ({"kind": "cni-ipam-state", "version": 9}, "version 9 is not supported"),
    ({"kind": "cni-ipam-state", "version": 1, "allocations": [{"pool": "/192.0.2.0/24"}]}, "allocations[0]"),
    ({"kind": "cni-ipam-state", "version": 1, "allocations": [
        {"pool": "/192.0.2.0/24", "ip": "10.0.0.1", "network": "n", "container_id": "c", "ifname": "i"}]},
     "10.0.0.1 is not inside pool /192.0.2.0/24"),
    ({"kind": "cni-ipam-state", "version": 1, "hints": [{"key": "k"}]}, "hints[0]"),
])
def test_a_bad_export_is_refused_naming_the_entry(document, message):
    with pytest.raises(AdminError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_state(document)


def test_liveness_is_known_only_on_this_node_with_a_netns(tmp_path):
    present = tmp_path / "ns"
    present.write_text("")
    assert liveness(alloc("/192.0.2.0/24", "192.0.2.1", node="n1", netns=str(present)), "n1")[0] == "alive"
    assert liveness(alloc("/192.0.2.0/24", "192.0.2.1", node="n1", netns=str(tmp_path / "x")), "n1")[0] == "gone"
    state, why = liveness(alloc("/192.0.2.0/24", "192.0.2.1", node="n2", netns=str(tmp_path / "x")), "n1")
    assert state == "unknown" and "'n2'" in why and "'n1'" in why
    assert liveness(alloc("/192.0.2.0/24", "192.0.2.1", node="n1"), "n1")[0] == "unknown"


def test_liveness_reads_this_node_from_nodename(monkeypatch, tmp_path):
    monkeypatch.setenv("NODENAME", "worker-7")
    a = alloc("/192.0.2.0/24", "192.0.2.1", node="worker-7", netns=str(tmp_path / "x"))
    assert liveness(a)[0] == "gone"


@pytest.mark.parametrize("percent, shown", [(0, "[" + "." * 20 + "]"), (0.1, "[#" + "." * 19 + "]"),
                                            (50, "[" + "#" * 10 + "." * 10 + "]"), (100, "[" + "#" * 20 + "]")])
def test_bar(percent, shown):
    assert bar(percent) == shown


def test_progress_is_quiet_off_a_terminal_unless_forced():
    stream = io.StringIO()
    Progress("import", stream=stream)(5, 5)
    assert stream.getvalue() == ""
    Progress("import", forced=True, stream=stream)(5, 5)
    assert stream.getvalue() == "import: 5/5\n"
