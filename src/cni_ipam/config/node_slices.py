"""A node's slices of a range (``node_slice_size``): the ranges its plugin allocates from.

Pure: the slices a NodeSlicePool lists for the node in, the range specs to allocate from out (the plugin
tries them in order: :class:`cni_ipam.allocator.engine.Choices`).

Upstream's plugin (k8snetworkplumbingwg/whereabouts pkg/storage/kubernetes/ipam.go @ v0.9.4,
3a262bd0cd873e13d9b379342f8251b852a89b8f, ``IPManagementKubernetesUpdate`` and
``GetNodeSlicePoolRange``) takes the first ``status.allocations`` entry whose
``nodeName`` is the node, allocates from ``FirstUsableIP``..``LastUsableIP`` of
that slice in the IPPool ``IPPoolName`` names after the network, the node and
the slice, and answers with the whole range's prefix length.  Here the same,
except:

* every slice listed for the node, in order: the controller adds one when
  all of them are full (:func:`cni_ipam.kube.slices.plan`), so a node whose
  first slice is full goes on in its second;
* ``range_start``, ``range_end``, ``exclude`` and the gateway still count
  inside a slice (upstream drops them, its issue 666), as the controller
  counts them, so "full" means the same to both;
* a listed slice that is not one of this config's (another size or range: the
  controller has not re-sliced yet) is skipped.
"""

from __future__ import annotations

from ..cni.errors import TRY_AGAIN_LATER, CNIError
from .whereabouts import RangeSpec


class SliceWait(CNIError):
    """No slice of this node has room yet; the node-slice controller may give one (code 11, try again).

    A CNIError of its own, so the plugin's error mapping need not import this module on every command."""

    def __init__(self, msg: str) -> None:
        super().__init__(TRY_AGAIN_LATER, msg, "the node-slice controller (cni-ipam node-slices) assigns slices; "
                                               "see docs/node-slices.md")


def slice_range(whole, text: str, prefixlen: int):
    """The addresses of slice ``text`` a node may hand out (an AddressRange of the slice), or None when
    ``text`` is not a ``/prefixlen`` slice of ``whole`` or leaves nothing usable."""
    from ..net.addr import Network
    from ..net.ip import cidr
    from ..net.ranges import AddressRange

    try:
        ip, length = cidr(text)
    except ValueError:
        return None
    width = 1 << (ip.max_prefixlen - prefixlen)
    lo = int(ip)
    if ip.version != whole.version or length != prefixlen or lo % width or not int(
            whole.network.network_address) <= lo <= int(whole.network.broadcast_address):
        return None
    start, end = max(lo + 1, whole.start), min(lo + width - 2, whole.end)  # FirstUsableIP..LastUsableIP
    if start > end:
        return None
    return AddressRange(Network(lo, prefixlen, ip.version), start, end, whole.excluded)


def node_specs(spec, slicing, node: str, allocations, where: str) -> tuple:
    """``(specs, full)``: the node's slices of ``spec`` (the sliced range) to allocate from, in the order of
    ``allocations`` (the NodeSlicePool's ``(nodeName, sliceRange)`` pairs; None when there is no
    NodeSlicePool), and the SliceWait to raise when all are full; ``where``: the NodeSlicePool, for
    messages.  SliceWait when the node has no slice."""
    from ..kube.objects import pool_name, range_text

    if allocations is None:
        raise SliceWait(f"whereabouts: NodeSlicePool {where} does not exist yet: the node-slice controller "
                        f"(cni-ipam node-slices) creates it from the NetworkAttachmentDefinition that sets "
                        f"node_slice_size")
    specs = []
    for text in (text for name, text in allocations if name == node):
        rng = slice_range(spec.range, text, slicing.prefixlen)
        if rng is not None and all(s.range.cidr != rng.cidr for s in specs):
            specs.append(RangeSpec(f"{spec.key} (node {node}'s slice {rng.cidr})", rng, spec.network_name,
                                   spec.overlapping, node))
    if not specs:
        raise SliceWait(f"whereabouts: the node-slice controller has not given node {node} a slice of "
                        f"{spec.range.cidr} yet (NodeSlicePool {where}, slices of /{slicing.prefixlen})")
    names = ", ".join(pool_name(range_text(s.range.network), spec.network_name, node) for s in specs)
    size = sum(s.range.size() for s in specs)
    full = SliceWait(f"whereabouts: node {node}'s slice(s) of {spec.range.cidr} are full: IPPool {names} "
                     f"holds all {size} allocatable addresses; the node-slice controller gives the node another "
                     f"slice when one is free (NodeSlicePool {where})")
    return specs, full
