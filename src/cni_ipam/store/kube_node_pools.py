"""The Kubernetes store's node IPPools of ``node_slice_size``: which IPPool names a NodeSlicePool gives a node.

Kept apart from :mod:`.kubernetes` because only configurations with
``node_slice_size`` (and the whole-store reads of the reconciler and the
admin commands) need it: the store loads it lazily, so no other plugin
command pays for it.  Upstream names a node's IPPool
``<network_name>-<node>-<slice>`` (``IPPoolName`` with a node), which would
otherwise read as network ``<network_name>-<node>``; the names learnt here
go into the store's ``_node_pools`` (IPPool name -> network_name), which
:class:`~.kube_pools.Pool` reads.
"""

from __future__ import annotations

from ..kube import objects as ko
from ..kube.client import KubeError
from .base import StoreError


def node_slices(store, slice_pool: str, network_name: str):
    """``(where, allocations)``: NodeSlicePool ``slice_pool`` as ``namespace/name``, and its
    ``status.allocations`` as ``(nodeName, sliceRange)`` pairs (None when there is no such NodeSlicePool),
    read as upstream's ``GetNodeSlicePoolRange`` reads it (pkg/storage/kubernetes/ipam.go @ v0.9.4).
    Its node IPPools are then read as of ``network_name``'s address space."""
    where = f"{store.client.namespace}/{slice_pool}"
    try:
        obj = store._call(store.client.get, ko.API_VERSION, ko.NODE_SLICE_POOLS, slice_pool)
        found = ko.parse_node_slice_pool(obj)
    except KubeError as exc:
        if exc.code == 404:
            return where, None
        raise StoreError(f"Kubernetes API: {exc.message}") from None
    except ko.ObjectError as exc:
        raise StoreError(f"NodeSlicePool {where}: {exc}") from None
    name_node_pools(store._node_pools, found, network_name)
    return where, list(found.allocations)


def name_node_pools(node_pools: dict, found, network_name: str) -> None:
    """Remember the node IPPools a NodeSlicePool names (``IPPoolName`` with a node) as ``network_name``'s:
    ``<network_name>-<node>-<slice>`` would otherwise read as network ``<network_name>-<node>``."""
    for node, text in found.allocations:
        try:
            node_pools[ko.pool_name(text, network_name, node)] = network_name
        except ko.ObjectError:
            continue  # not a name an IPPool can have: no pool to name


def learn_node_pools(store) -> None:
    """For the whole store (reconciler, admin commands): every NodeSlicePool's node IPPools, with or
    without ``network_name`` (the NodeSlicePool is named after it, else after the configuration).
    Without the CRD or the right to list them, node pools read as before."""
    try:
        listed = store._call(store.client.list, ko.API_VERSION, ko.NODE_SLICE_POOLS).get("items") or []
    except (KubeError, StoreError):
        return
    for obj in listed:
        try:
            found = ko.parse_node_slice_pool(obj)
        except ko.ObjectError:
            continue
        name_node_pools(store._node_pools, found, "")
        name_node_pools(store._node_pools, found, found.name)
