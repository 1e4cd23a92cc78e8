"""``node_slice_size`` in the whereabouts config, and a node's slices as the plugin allocates from them.

Pure (cni_ipam.config.whereabouts, cni_ipam.config.node_slices).  What upstream does, read from
k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f):
pkg/storage/kubernetes/ipam.go ``IPManagementKubernetesUpdate`` (FirstUsableIP..LastUsableIP of the
node's slice, in the IPPool ``IPPoolName`` names with the node) and ``GetNodeSlicePoolRange``.
"""

from __future__ import annotations

import pytest

from cni_ipam.cni.errors import INVALID_CONFIG, CNIError
from cni_ipam.cni.request import Request
from cni_ipam.config import whereabouts as wb
from cni_ipam.config.node_slices import SliceWait, node_specs, slice_range
from cni_ipam.kube.slices import SliceLayout
from cni_ipam.net.ranges import parse_range

KUBE = {"datastore": "kubernetes", "kubernetes": {"kubeconfig": "/etc/kube.conf"}}


def load(ipam: dict, name="net1"):
    config = {"cniVersion": "1.0.0", "name": name, "ipam": dict({"type": "whereabouts"}, **ipam)}
    request = Request("ADD", "c0ffee", "/run/netns/pod", "eth0", "", "/opt/cni/bin", config)
    return wb.load(request, lambda path: None), request


def refused(ipam: dict, name="net1") -> str:
    with pytest.raises(CNIError) as info:
        load(ipam, name)
    assert info.value.code == INVALID_CONFIG, info.value
    return info.value.msg


def test_node_slice_size_is_read_without_warning():
    config, request = load(dict(KUBE, range="10.0.0.0/16", node_slice_size="/27", network_name="blue"))
    assert request.warnings == []
    assert (config.node_slices.pool_name, config.node_slices.prefixlen) == ("blue", 27)
    config, _ = load(dict(KUBE, range="fd00::/64", node_slice_size="120"), name="v6")  # upstream trims the "/"
    assert (config.node_slices.pool_name, config.node_slices.prefixlen) == ("v6", 120)  # no network_name: the name
    assert load(dict(KUBE, range="10.0.0.0/16"))[0].node_slices is None


def test_node_slice_size_needs_the_kubernetes_datastore():
    msg = refused({"range": "10.0.0.0/16", "node_slice_size": "/27"})
    assert msg == 'ipam.node_slice_size needs "datastore": "kubernetes" (the datastore is "sqlite")'
    assert "datastore" in refused({"range": "10.0.0.0/16", "node_slice_size": "/27", "datastore": "etcd",
                                   "etcd_host": "127.0.0.1:2379"})


@pytest.mark.parametrize("rng, size, why", [
    ("10.0.0.0/16", "/33", "between /16"),       # longer than IPv4 allows
    ("10.0.0.0/16", "/8", "between /16"),        # shorter than the range's own prefix
    ("fd00::/64", "/129", "and /128"),
    ("10.0.0.0/16", "big", "is not a prefix length"),
])
def test_a_slice_size_must_fit_the_range_and_its_family(rng, size, why):
    msg = refused(dict(KUBE, range=rng, node_slice_size=size))
    assert msg.startswith("ipam.node_slice_size") and why in msg and rng in msg, msg


def test_a_pool_name_kubernetes_cannot_hold_is_refused():
    assert "not a Kubernetes object name" in refused(dict(KUBE, range="10.0.0.0/16", node_slice_size="/27"),
                                                     name="Net_1")


def sliced(rng="10.0.0.0/24", size="/27", network_name="blue", **keys):
    config, _ = load(dict(KUBE, range=rng, node_slice_size=size, network_name=network_name, **keys))
    return config.ranges[0], config.node_slices


def test_the_node_allocates_from_the_usable_addresses_of_each_of_its_slices_in_order():
    spec, slicing = sliced()
    listed = [("", "10.0.0.0/27"), ("n2", "10.0.0.32/27"), ("n1", "10.0.0.96/27"), ("n1", "10.0.0.64/27")]
    specs, full = node_specs(spec, slicing, "n1", listed, "kube-system/blue")
    assert [(s.range.cidr, s.range.to_text(s.range.start), s.range.to_text(s.range.end)) for s in specs] == [
        ("10.0.0.96/27", "10.0.0.97", "10.0.0.126"), ("10.0.0.64/27", "10.0.0.65", "10.0.0.94")]
    assert [s.pool for s in specs] == ["blue-n1/10.0.0.96/27", "blue-n1/10.0.0.64/27"]  # IPPool blue-n1-10.0.0.96-27
    assert {s.space for s in specs} == {"blue"}  # the network's address space, not the node's
    assert "IPPool blue-n1-10.0.0.96-27, blue-n1-10.0.0.64-27 holds all 60" in str(full)
    assert isinstance(full, SliceWait)


def test_exclude_bounds_and_the_gateway_count_inside_a_slice_as_the_controller_counts_them():
    spec, slicing = sliced(range_start="10.0.0.40", exclude=["10.0.0.48/29"], gateway="10.0.0.33")
    specs, _ = node_specs(spec, slicing, "n1", [("n1", "10.0.0.32/27")], "ns/blue")
    rng = specs[0].range
    assert rng.to_text(rng.first_allocatable()) == "10.0.0.40" and not rng.is_allocatable(0x0A000030)
    assert rng.size() == 62 - 40 - 8 + 1  # .40-.62 without .48-.55
    layout = SliceLayout(spec.range, "/27")  # the controller's count (cni_ipam.kube.slices)
    assert layout.usable(1) == rng.size()
    spec, slicing = sliced(gateway="10.0.0.1")
    specs, _ = node_specs(spec, slicing, "n1", [("n1", "10.0.0.0/27")], "ns/blue")
    assert not specs[0].range.is_allocatable(0x0A000001)
    assert SliceLayout(spec.range, "/27").usable(0) == specs[0].range.size() == 29


def test_ipv6_slices_without_network_name():
    spec, slicing = sliced("fd00:1::/120", "/122", network_name="", exclude=["fd00:1::80/123"])
    specs, _ = node_specs(spec, slicing, "a", [("a", "fd00:1::80/122")], "ns/v6net")
    assert specs[0].pool == "a/fd00:1::80/122"  # IPPool a-fd00-1--80-122
    assert specs[0].range.to_text(specs[0].range.first_allocatable()) == "fd00:1::a0"


def test_no_slice_yet_and_slices_that_are_not_this_configs():
    spec, slicing = sliced()
    with pytest.raises(SliceWait, match="the node-slice controller has not given node n1 a slice of 10.0.0.0/24 yet "
                                        r"\(NodeSlicePool ns/blue"):
        node_specs(spec, slicing, "n1", [("n2", "10.0.0.0/27")], "ns/blue")
    with pytest.raises(SliceWait, match="NodeSlicePool ns/blue does not exist yet"):
        node_specs(spec, slicing, "n1", None, "ns/blue")
    for other in ("10.0.0.0/26", "10.0.1.0/27", "10.0.0.5/27", "fd00::/27", "nonsense"):  # re-slicing not done yet
        assert slice_range(spec.range, other, 27) is None
    with pytest.raises(SliceWait):
        node_specs(spec, slicing, "n1", [("n1", "10.0.0.0/26")], "ns/blue")


def test_a_slice_with_nothing_usable_is_skipped():
    whole = parse_range("ipam", "10.0.0.0/24", "10.0.0.40", "10.0.0.50")
    assert slice_range(whole, "10.0.0.64/27", 27) is None  # past range_end
    assert slice_range(whole, "10.0.0.0/31", 31) is None  # no first/last usable
