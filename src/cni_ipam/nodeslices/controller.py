"""The node-slice controller's I/O: what it lists, writes and watches, and its leader loop.

Decisions are made elsewhere, in pure code: which slice goes to which node in
:mod:`cni_ipam.kube.slices`, who leads in :mod:`cni_ipam.kube.leases`, which
networks are sliced in :mod:`.networks`.  Objects are built as upstream builds
them (:mod:`cni_ipam.kube.objects`), so upstream's controller and plugin read them.

Talks to the API with lightkube, like the reconciler.  Every pass lists
everything afresh (nodes, NADs, NodeSlicePools, IPPools): watches only wake
the loop early, so a missed or broken watch costs at most one resync period.
Writes happen only while the Lease is held and renewed within the renew
deadline, and each NodeSlicePool update carries the ``resourceVersion`` it
was computed from (a 409 makes the next pass start again).
"""

from __future__ import annotations

import copy
import threading
import time
from datetime import datetime, timezone

from cni_ipam.kube.objects import (API_VERSION, GROUP, IPPOOLS, NODE_SLICE_POOLS, VERSION, ObjectError,
                                   ippool_object, node_slice_pool_object, parse_ippool, parse_node_slice_pool,
                                   pool_name)
from cni_ipam.kube.slices import NodePool, plan

from .networks import collect

NAD_GROUP, NAD_VERSION, NADS = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
MIN_WAKE_INTERVAL = 0.5  # seconds between passes woken by watch events


def resources():
    """The lightkube resource classes the controller uses (created once, shared with anyone else's of the same shape)."""
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.resources.coordination_v1 import Lease
    from lightkube.resources.core_v1 import Node

    return {"nodes": Node, "leases": Lease,
            "nodeslicepools": create_namespaced_resource(GROUP, VERSION, "NodeSlicePool", NODE_SLICE_POOLS),
            "ippools": create_namespaced_resource(GROUP, VERSION, "IPPool", IPPOOLS),
            "nads": create_namespaced_resource(NAD_GROUP, NAD_VERSION, "NetworkAttachmentDefinition", NADS)}


def _plain(obj) -> dict:
    return obj.to_dict()


def node_pools(network, ippools) -> list:
    """The node IPPools of ``network`` among ``ippools`` (decoded objects): those named
    ``[<network_name>-]<node>-<normalized spec.range>`` (upstream's ``IPPoolName``)."""
    found = []
    for obj in ippools:
        try:
            pool = parse_ippool(obj)
            suffix = "-" + pool_name(pool.range)
        except (ObjectError, ValueError, TypeError):
            continue
        head = pool.name[:-len(suffix)] if pool.name.endswith(suffix) else ""
        prefix = network.network_name + "-" if network.network_name else ""
        node = head[len(prefix):] if head.startswith(prefix) else ""
        if node:
            found.append(NodePool(node, pool.range, len(pool.entries)))
    return found


class Controller:
    """One pass over every sliced network: list, plan, write (only while ``leading()``)."""

    def __init__(self, client, namespace: str, log, max_slices: int = 2) -> None:
        from lightkube import ALL_NS

        self.client = client
        self.namespace = namespace
        self.log = log
        self.max_slices = max_slices
        self.res = resources()
        self._all = ALL_NS

    def sync(self, leading) -> None:
        networks, problems = collect([_plain(n) for n in self.client.list(self.res["nads"], namespace=self._all)])
        for problem in problems:
            self.log("network-problem", problem, level="warning")
        nodes = [n.metadata.name for n in self.client.list(self.res["nodes"])]
        pools = {p.metadata.name: _plain(p) for p in
                 self.client.list(self.res["nodeslicepools"], namespace=self.namespace)}
        ippools = [_plain(p) for p in self.client.list(self.res["ippools"], namespace=self.namespace)]
        for name in sorted(networks):
            self._sync_network(networks[name], nodes, pools.get(name), ippools, leading)

    def _sync_network(self, network, nodes, current, ippools, leading) -> None:
        from lightkube import ApiError

        layout = network.layout
        read = parse_node_slice_pool(current) if current else None
        result = plan(layout, read.allocations if read else (), nodes, node_pools(network, ippools), self.max_slices)
        for what, node, slice_range, why in result.decisions:
            self.log(what, f"{network.pool_name}: {what} {slice_range or '-'} for node {node}: {why}",
                     level="warning" if what == "no-free-slice" else "info",
                     pool=network.pool_name, node=node, slice=slice_range)
        same_spec = read is not None and (read.range, read.slice_size) == (layout.range_text, layout.size_text)
        if read is not None and same_spec and not result.changed:
            return self._create_pools(network, result.create_pools, leading)
        if not leading():
            return None
        try:
            if current is None:
                self.client.create(self.res["nodeslicepools"](self._new_pool(network, result.allocations)))
            else:
                self.client.replace(self.res["nodeslicepools"](self._updated(current, network, result.allocations)))
        except ApiError as exc:
            self.log("write-failed", f"{network.pool_name}: the NodeSlicePool was not written: {exc.status.message}",
                     level="warning", pool=network.pool_name, code=exc.status.code)
            return None
        self.log("written", f"{network.pool_name}: NodeSlicePool written, {sum(1 for n, _ in result.allocations if n)} "
                            f"slice(s) assigned", pool=network.pool_name)
        return self._create_pools(network, result.create_pools, leading)

    def _new_pool(self, network, allocations) -> dict:
        """As upstream creates it, the first NAD as its controller owner (so deleting the NADs deletes it)."""
        layout = network.layout
        obj = node_slice_pool_object(network.pool_name, self.namespace, layout.range_text, layout.size_text,
                                     allocations)
        owner = network.sources[0]
        if owner["uid"]:
            obj["metadata"]["ownerReferences"] = [{
                "apiVersion": f"{NAD_GROUP}/{NAD_VERSION}", "kind": "NetworkAttachmentDefinition",
                "name": owner["name"], "uid": owner["uid"], "controller": True, "blockOwnerDeletion": True}]
        return obj

    def _updated(self, current, network, allocations) -> dict:
        """The object as read (metadata and its resourceVersion kept), with the new spec and allocations."""
        layout = network.layout
        obj = copy.deepcopy(current)
        obj["apiVersion"], obj["kind"] = API_VERSION, "NodeSlicePool"
        obj["spec"] = {"range": layout.range_text, "sliceSize": layout.size_text}
        obj["status"] = {"allocations": [{"nodeName": node, "sliceRange": text} for node, text in allocations]}
        return obj

    def _create_pools(self, network, wanted, leading) -> None:
        """Each assigned node's IPPool, named and shaped as upstream's plugin creates it (``getPool``)."""
        from lightkube import ApiError

        for node, slice_range in wanted:
            if not leading():
                return
            name = pool_name(slice_range, network.network_name, node)
            try:
                self.client.create(self.res["ippools"](ippool_object(name, self.namespace, slice_range)))
            except ApiError as exc:
                if exc.status.code != 409:  # 409: someone (the node's plugin) created it first
                    self.log("write-failed", f"IPPool {name} was not created: {exc.status.message}",
                             level="warning", pool=name, code=exc.status.code)
                    continue
            self.log("pool-created", f"IPPool {name} for node {node}'s slice {slice_range}", pool=name, node=node)


class LeaseLock:
    """The Lease the controllers elect a leader on, read and written with the resourceVersion it was read at."""

    def __init__(self, client, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.res = resources()["leases"]
        self.resource_version = None

    def get(self):
        """The Lease's spec as a dict, None when there is none."""
        from lightkube import ApiError

        try:
            lease = self.client.get(self.res, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                self.resource_version = None
                return None
            raise
        self.resource_version = lease.metadata.resourceVersion
        return {k: v for k, v in (lease.to_dict().get("spec") or {}).items() if v is not None}

    def write(self, action: str, spec: dict) -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        if action == "create":
            self.client.create(self.res.from_dict(body))
        else:
            body["metadata"]["resourceVersion"] = self.resource_version
            self.client.replace(self.res.from_dict(body))


def watch_to_wake(client, res, namespace, wake: threading.Event, stop: threading.Event, log) -> threading.Thread:
    """A daemon thread setting ``wake`` on every event of ``res``; it rewatches after errors, backing off."""
    def loop():
        backoff = 1.0
        while not stop.is_set():
            try:
                kwargs = {"namespace": namespace} if namespace else {}
                for _ in client.watch(res, **kwargs):
                    backoff = 1.0
                    wake.set()
                    if stop.is_set():
                        return
            except Exception as exc:  # the next pass lists everything anyway: log, wait, watch again
                log("watch-failed", f"watching {res.__name__} failed: {exc}", level="debug", error=str(exc))
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
    thread = threading.Thread(target=loop, name=f"watch-{res.__name__}", daemon=True)
    thread.start()
    return thread


def run(controller: Controller, lock: LeaseLock, elector, stop: threading.Event, wake: threading.Event, log,
        retry: float, resync: float) -> None:
    """Until ``stop``: try to acquire or renew the Lease every ``retry`` seconds; while leading, a pass
    every ``resync`` seconds and soon after any watch event.  On stop, give the Lease up."""
    last_pass, last_tick, was_leading = None, None, False
    while not stop.is_set():
        now = time.monotonic()
        if last_tick is None or now - last_tick >= retry:
            _tick(lock, elector, log)
            last_tick = now
        leading = elector.leading(time.monotonic())
        if leading != was_leading:
            log("leading" if leading else "not-leading", f"{elector.identity} {'leads' if leading else 'stopped leading'}",
                identity=elector.identity)
            was_leading, last_pass = leading, None
        now = time.monotonic()
        woken = wake.is_set() and (last_pass is None or now - last_pass >= MIN_WAKE_INTERVAL)
        if leading and (last_pass is None or woken or now - last_pass >= resync):
            wake.clear()
            try:
                controller.sync(lambda: elector.leading(time.monotonic()))
            except Exception as exc:  # an API error: try again at the next pass
                log("sync-failed", f"the pass failed: {exc}", level="warning", error=str(exc))
            last_pass = time.monotonic()
        _sleep(stop, wake, leading, last_tick + retry, last_pass)
    spec = elector.release()
    if spec is not None:
        try:
            lock.get()
            lock.write("update", spec)
            log("released", f"{elector.identity} gave the Lease up", identity=elector.identity)
        except Exception as exc:
            log("release-failed", f"could not give the Lease up: {exc}", level="warning", error=str(exc))


def _sleep(stop, wake, leading: bool, next_tick: float, last_pass) -> None:
    """Until the next Lease tick; a leader also wakes for a watch event, but never sooner than
    MIN_WAKE_INTERVAL after its last pass.  A standby ignores events (they only matter to the leader)."""
    now = time.monotonic()
    if not leading:
        stop.wait(max(0.0, next_tick - now))
        wake.clear()
    elif wake.is_set():
        stop.wait(max(0.0, min(next_tick, (last_pass or now) + MIN_WAKE_INTERVAL) - now))
    else:
        wake.wait(max(0.0, next_tick - now))


def _tick(lock: LeaseLock, elector, log) -> None:
    """One ``tryAcquireOrRenew``: read the Lease, write what the elector decides."""
    try:
        current = lock.get()
        action, spec = elector.step(current, datetime.now(timezone.utc), time.monotonic())
        if action != "wait":
            lock.write(action, spec)
            elector.written(spec, time.monotonic())
    except Exception as exc:  # a conflict (someone else wrote first) or the API is away: not renewed
        log("lease-failed", f"the Lease was not acquired or renewed: {exc}", level="debug", error=str(exc))
