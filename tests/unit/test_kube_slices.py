"""Node slices, decided without I/O: a range cut as upstream's ``DivideRangeBySize`` cuts it, and who gets which.

Upstream: k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f)
pkg/iphelpers/iphelpers.go (``DivideRangeBySize``), pkg/node-controller/controller.go
(``assignNodeToSlice``, ``removeUnusedNodes``), pkg/storage/kubernetes/ipam.go
(``FirstUsableIP``..``LastUsableIP`` of a slice).
"""

import json

import pytest

from cni_ipam.kube.slices import LIST_ALL_LIMIT, NodePool, SliceError, SliceLayout, plan
from cni_ipam.net.ranges import parse_range
from cni_ipam.nodeslices.networks import NetworkError, collect, from_nad


def layout(rng="10.0.0.0/24", size="/26", exclude=(), start=None, end=None):
    return SliceLayout(parse_range("ipam", rng, start, end, list(exclude)), size)


def assigned(result) -> dict:
    return {text: node for node, text in result.allocations if node}


# --- cutting ---------------------------------------------------------------------------------------

def test_slices_are_upstreams_subnets_in_order():
    # iphelpers_test.go: 10.0.0.0/8 by /10 is 10.0.0.0/10, 10.64.0.0/10, 10.128.0.0/10, 10.192.0.0/10
    cut = layout("10.0.0.0/8", "/10")
    assert cut.count == 4 and [cut.text(i) for i in range(4)] == ["10.0.0.0/10", "10.64.0.0/10", "10.128.0.0/10",
                                                                 "10.192.0.0/10"]
    assert cut.range_text == "10.0.0.0/8"


def test_size_without_a_slash_is_read_as_upstream_trims_it():
    assert layout(size="26").prefixlen == 26 and layout(size="26").size_text == "26"


@pytest.mark.parametrize("size", ["/23", "/33", "x", "", "/-1"])
def test_sizes_that_cannot_cut_the_range_are_refused(size):
    with pytest.raises(SliceError):
        layout(size=size)


def test_ipv6_is_cut_too():
    cut = layout("fd00:10::/48", "/64")
    assert cut.count == 65536
    assert cut.text(0) == "fd00:10::/64" and cut.text(1) == "fd00:10:0:1::/64" and cut.text(65535) == "fd00:10:0:ffff::/64"
    assert cut.usable(0) == 2**64 - 2
    assert cut.index_of("fd00:10:0:1::/64") == 1


def test_index_of_takes_only_this_layouts_slices():
    cut = layout()
    assert cut.index_of("10.0.0.64/26") == 1
    assert [cut.index_of(t) for t in ("10.0.0.65/26", "10.0.0.64/27", "10.0.1.0/26", "fd00::/26", "junk")] == [None] * 5


def test_usable_leaves_out_each_slices_first_and_last_address_and_what_exclude_removes():
    assert layout().usable(0) == 62  # FirstUsableIP .. LastUsableIP
    cut = layout(exclude=["10.0.0.0/27", "10.0.0.100"])
    assert [cut.usable(i) for i in range(4)] == [31, 61, 62, 62]  # .32-.62 left in the first slice


def test_bounds_count_range_start_and_range_end():
    cut = layout(start="10.0.0.70", end="10.0.0.130")
    assert [cut.usable(i) for i in range(4)] == [0, 57, 2, 0]  # .71-.126, then .129-.130


def test_a_wholly_excluded_slice_is_never_usable_and_next_usable_jumps_past_it():
    cut = layout("10.0.0.0/8", "/27", exclude=["10.0.0.0/9"])
    assert cut.usable(0) == 0
    assert cut.next_usable(0) == 2**18  # 10.128.0.0/27, in one jump
    assert cut.text(cut.next_usable(0)) == "10.128.0.0/27"


def test_slices_without_interior_addresses_are_never_usable():
    assert layout(size="/31").next_usable(0) is None and layout(size="/32").usable(3) == 0


# --- assigning --------------------------------------------------------------------------------------

def test_nodes_get_the_lowest_free_slices_in_name_order_and_every_slice_is_listed_as_upstream_lists_them():
    result = plan(layout(), [], ["node-b", "node-a"], [])
    assert result.allocations == (("node-a", "10.0.0.0/26"), ("node-b", "10.0.0.64/26"),
                                  ("", "10.0.0.128/26"), ("", "10.0.0.192/26"))
    assert result.changed
    assert result.create_pools == (("node-a", "10.0.0.0/26"), ("node-b", "10.0.0.64/26"))
    assert [d[0] for d in result.decisions] == ["assigned", "assigned"]


def test_the_same_input_gives_the_same_plan_and_a_settled_one_changes_nothing():
    cut = layout()
    first = plan(cut, [], ["c", "a", "b"], [])
    again = plan(cut, first.allocations, ["b", "c", "a"], [NodePool(n, s, 0) for n, s in first.allocations if n])
    assert again.allocations == first.allocations and not again.changed and again.create_pools == ()


def test_a_node_keeps_its_slice_when_others_come_and_go():
    cut = layout()
    listed = [("", "10.0.0.0/26"), ("zed", "10.0.0.64/26"), ("", "10.0.0.128/26"), ("", "10.0.0.192/26")]
    result = plan(cut, listed, ["zed", "alpha"], [])
    assert assigned(result) == {"10.0.0.0/26": "alpha", "10.0.0.64/26": "zed"}


def test_a_departed_nodes_slice_is_freed_only_when_its_pool_is_empty():
    cut = layout()
    listed = [("gone", "10.0.0.0/26"), ("here", "10.0.0.64/26")]
    kept = plan(cut, listed, ["here", "new"], [NodePool("gone", "10.0.0.0/26", 3)])
    assert assigned(kept) == {"10.0.0.0/26": "gone", "10.0.0.64/26": "here", "10.0.0.128/26": "new"}
    assert ("kept", "gone", "10.0.0.0/26") in [d[:3] for d in kept.decisions]
    freed = plan(cut, kept.allocations, ["here", "new"], [NodePool("gone", "10.0.0.0/26", 0)])
    assert assigned(freed) == {"10.0.0.64/26": "here", "10.0.0.128/26": "new"}
    assert ("freed", "gone", "10.0.0.0/26") in [d[:3] for d in freed.decisions]
    assert plan(cut, listed, ["here"], []).decisions[0][0] == "freed"  # no pool at all: nothing held


def test_a_slice_overlapping_another_nodes_nonempty_pool_is_not_handed_out():
    # upstream's controller freed 10.0.0.0/26 at once (removeUnusedNodes); the departed node's pool still holds
    cut = layout()
    listed = [("", "10.0.0.0/26"), ("", "10.0.0.64/26"), ("", "10.0.0.128/26"), ("", "10.0.0.192/26")]
    result = plan(cut, listed, ["new"], [NodePool("gone", "10.0.0.0/26", 2), NodePool("old", "10.0.0.64/27", 1)])
    assert assigned(result) == {"10.0.0.128/26": "new"}


def test_excluded_slices_are_skipped():
    result = plan(layout(exclude=["10.0.0.0/25"]), [], ["a", "b", "c"], [])
    assert assigned(result) == {"10.0.0.128/26": "a", "10.0.0.192/26": "b"}
    assert result.decisions[-1][:2] == ("no-free-slice", "c")


def test_a_node_whose_slices_are_full_gets_one_more_up_to_the_limit():
    cut = layout(exclude=["10.0.0.0/27"])  # slice 0: 31 usable (.32-.62)
    listed = [("busy", "10.0.0.0/26"), ("calm", "10.0.0.64/26")]
    pools = [NodePool("busy", "10.0.0.0/26", 31), NodePool("calm", "10.0.0.64/26", 5)]
    result = plan(cut, listed, ["busy", "calm"], pools)
    assert assigned(result) == {"10.0.0.0/26": "busy", "10.0.0.64/26": "calm", "10.0.0.128/26": "busy"}
    assert ("assigned", "busy", "10.0.0.128/26", "its 1 slice(s) are full") in result.decisions
    full = pools + [NodePool("busy", "10.0.0.128/26", 62)]
    again = plan(cut, result.allocations, ["busy", "calm"], full)
    assert assigned(again) == assigned(result)  # max_slices=2 reached
    assert assigned(plan(cut, result.allocations, ["busy", "calm"], full, max_slices=3))["10.0.0.192/26"] == "busy"
    assert assigned(plan(cut, listed, ["busy", "calm"], pools, max_slices=1)) == dict(
        (t, n) for n, t in listed)


def test_a_live_nodes_slices_are_never_taken_back():
    cut = layout()
    listed = [("a", "10.0.0.0/26"), ("a", "10.0.0.64/26")]
    assert assigned(plan(cut, listed, ["a", "b"], [])) == {"10.0.0.0/26": "a", "10.0.0.64/26": "a",
                                                           "10.0.0.128/26": "b"}


def test_a_new_range_or_size_drops_the_old_slices_but_keeps_their_addresses_out_of_reach():
    listed = [("a", "10.0.0.0/26"), ("b", "10.0.0.64/26")]
    result = plan(layout(size="/25"), listed, ["a", "b"], [NodePool("b", "10.0.0.64/26", 4)])
    assert [d[0] for d in result.decisions[:2]] == ["dropped", "dropped"]
    # 10.0.0.0/25 overlaps b's old pool, which holds addresses: a cannot get it, b cannot either
    assert assigned(result) == {"10.0.0.128/25": "a"}


def test_a_slice_listed_twice_goes_to_the_first():
    result = plan(layout(), [("a", "10.0.0.0/26"), ("b", "10.0.0.0/26")], ["a", "b"], [])
    assert assigned(result) == {"10.0.0.0/26": "a", "10.0.0.64/26": "b"}
    assert result.decisions[0][:3] == ("dropped", "b", "10.0.0.0/26")


def test_a_slash8_in_slash27_slices_lists_only_assigned_slices():
    # upstream's issue 497: 524288 slices in one object is over etcd's 1.5 MiB limit
    cut = layout("10.0.0.0/8", "/27")
    assert cut.count == 2**19 > LIST_ALL_LIMIT
    nodes = [f"node-{i:03}" for i in range(500)]
    result = plan(cut, [], nodes, [])
    assert len(result.allocations) == 500
    assert result.allocations[0] == ("node-000", "10.0.0.0/27") and result.allocations[-1] == ("node-499",
                                                                                               "10.0.62.96/27")
    size = len(json.dumps({"status": {"allocations": [{"nodeName": n, "sliceRange": s}
                                                      for n, s in result.allocations]}}))
    assert size < 64 * 1024
    settled = plan(cut, result.allocations, nodes, [])
    assert not settled.changed


def test_ipv6_nodes_get_slices():
    result = plan(layout("fd00::/120", "/122", exclude=["fd00::/122"]), [], ["a", "b"], [])
    assert assigned(result) == {"fd00::40/122": "a", "fd00::80/122": "b"}


# --- which networks are sliced -------------------------------------------------------------------------

def nad(name, ipam, namespace="default", conf_name="net", uid="u1", plugins=False):
    config = {"cniVersion": "0.3.1", "name": conf_name, "type": "macvlan", "ipam": ipam}
    if plugins:
        config = {"cniVersion": "0.3.1", "name": conf_name, "plugins": [{"type": "macvlan", "ipam": ipam}]}
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": {"config": json.dumps(config)}}


def test_a_nad_with_node_slice_size_is_sliced_and_named_as_upstream_names_it():
    network = from_nad(nad("a", {"type": "whereabouts", "range": "10.0.0.7/24", "node_slice_size": "/26",
                                 "network_name": "blue"}))
    assert (network.pool_name, network.network_name, network.layout.range_text) == ("blue", "blue", "10.0.0.0/24")
    unnamed = from_nad(nad("a", {"type": "whereabouts", "ipRanges": [{"range": "fd00::/120", "exclude": ["fd00::/122"]}],
                                 "node_slice_size": "122"}, plugins=True))
    assert (unnamed.pool_name, unnamed.network_name) == ("net", "")  # upstream's issue 518: no network_name is fine
    assert unnamed.layout.usable(0) == 0


@pytest.mark.parametrize("ipam", [{"type": "host-local", "node_slice_size": "/26"},
                                  {"type": "whereabouts", "range": "10.0.0.0/24"}])
def test_other_nads_are_not_sliced(ipam):
    assert from_nad(nad("a", ipam)) is None
    assert from_nad({"metadata": {}, "spec": {"config": "not json"}}) is None


def test_nads_that_disagree_on_one_network_are_reported_and_the_first_wins():
    same = {"type": "whereabouts", "range": "10.0.0.0/24", "node_slice_size": "/26", "network_name": "n"}
    other = {**same, "node_slice_size": "/27"}
    bad = {"type": "whereabouts", "node_slice_size": "/26"}
    networks, problems = collect([nad("c", other, uid="3"), nad("a", same, uid="1"), nad("b", same, uid="2"),
                                  nad("d", bad)])
    assert [s["name"] for s in networks["n"].sources] == ["a", "b"]
    assert len(problems) == 2 and "default/c" in problems[0] and "no range" in problems[1]
    with pytest.raises(NetworkError, match="not a valid Kubernetes object name"):
        from_nad(nad("a", {**same, "network_name": "Blue"}))
