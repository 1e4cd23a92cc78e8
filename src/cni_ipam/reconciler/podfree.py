"""Acting on one pod event: read the store, look at the pod again, free, and report each address.

The decision is :func:`~.podgone.decide_pod`'s; this module does the I/O
around it, in the order the cron run keeps (:mod:`.run`): the store is
read first, then the pod is fetched again, then each release is one store
transaction that frees only while the same attachment (container ID and
interface) holds the address.  Each address freed, or that could not be,
gets a JSON log line, a metric and a Kubernetes Event on the pod
(:mod:`.kubeevents`).  A failure never stops the watch: what is left
behind is the next cron run's to judge.
"""

from __future__ import annotations

import time

from . import kubeevents
from .podgone import DELETED, decide_pod, gone, owners
from .run import describe, range_of


class PodFreer:
    """Called with each pod event (``kind``, :class:`~.liveness.PodView`) by the watch: a running pod's
    sandboxes are learnt (:func:`~.podgone.owners`), a pod gone has its addresses freed.

    ``open_store()`` opens the configured store (None: there is none yet,
    so nothing to free); it is opened for the event and closed after it, as
    the cron run does.  ``client`` is a lightkube client, for the fresh GET
    and the Events.
    """

    def __init__(self, open_store, client, node: str, log, metrics=None, dry_run: bool = False,
                 clock_ns=time.time_ns) -> None:
        self.open_store = open_store
        self.client = client
        self.node = node
        self.log = log
        self.metrics = metrics
        self.dry_run = dry_run
        self.clock_ns = clock_ns
        self.learnt = {}  # pod uid -> (its network-status entries, {(interface, address): container ID})

    def __call__(self, kind: str, pod) -> list:
        """The decisions taken (for tests); errors are reported, not raised."""
        if not pod.attachments:
            return []
        if gone(kind, pod) is None:
            self._learn(pod)
            return []
        learnt = (self.learnt.pop(pod.uid, None) if kind == DELETED else self.learnt.get(pod.uid)) or (None, None)
        allocations = []
        try:
            store = self.open_store()
            if store is None:
                return []
            try:
                allocations = self._candidates(store, pod)
                if not allocations:
                    return []
                current = self._current(pod.ref)
                decisions = decide_pod(kind, pod, allocations, self.node, current, learnt[1])
                for decision in decisions:
                    self._apply(store, pod, kind, decision)
                return decisions
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 -- the watch outlives any one event
            self._failed(pod, kind, allocations, exc)
            return []

    def _learn(self, pod) -> None:
        """Remember which sandbox holds each of a running pod's addresses, once per network-status content."""
        key = frozenset(pod.attachments.items())
        if self.learnt.get(pod.uid, (None,))[0] == key:
            return
        try:
            store = self.open_store()
            if store is None:
                return
            try:
                found = owners(pod, self._candidates(store, pod), self.node)
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 -- learnt at the next change, or the cron run judges it
            self.log("pod-learn-error", f"could not read the store for pod {pod.ref}: {exc}", level="warning",
                     pod=pod.ref, error=str(exc), error_type=type(exc).__name__)
            return
        if found:
            self.learnt[pod.uid] = (key, found)
            self.log("pod-learnt", f"pod {pod.ref} holds {', '.join(sorted(a for _, a in found))} through sandbox "
                     f"{', '.join(sorted({c[:12] for c in found.values()}))}", level="debug", pod=pod.ref,
                     pod_uid=pod.uid, sandboxes=sorted(set(found.values())))

    def _candidates(self, store, pod) -> list:
        """The pod's allocations on each interface its network-status names (the stores index pod+interface)."""
        found = {}
        for ifname in sorted({ifname for ifname, _ in pod.attachments}):
            for allocation in store.find(pod=pod.ref, ifname=ifname):
                found[(allocation.pool, allocation.ip, allocation.container_id, allocation.ifname)] = allocation
        return list(found.values())

    def _current(self, ref: str):
        from .liveness import get_pod

        return get_pod(self.client, ref)

    def _apply(self, store, pod, kind, decision) -> None:
        allocation = decision.allocation
        fields = dict(describe(allocation), why=decision.reason, code=decision.code, pod_uid=pod.uid,
                      pod_event=kind, dry_run=self.dry_run)
        if not decision.stale:
            self.log("pod-kept", f"kept {allocation.address} ({allocation.pool}) after pod {pod.ref} went away: "
                     f"{decision.reason}", **fields)
            return
        if self.dry_run:
            self.log("pod-would-free", f"would free {allocation.address} in {range_of(allocation.pool)} of pod "
                     f"{pod.ref}: {decision.reason}", **fields)
            return
        try:
            with store.transaction():
                released = store.release(allocation)
        except Exception as exc:  # noqa: BLE001 -- reported per address; the cron run tries again
            self._address_failed(pod, kind, allocation, exc)
            return
        if not released:
            self.log("pod-skipped", f"not freeing {allocation.address} ({allocation.pool}): it changed in the store "
                     f"since it was read (released, or now held by another attachment)",
                     **dict(fields, why="changed in the store", code="changed"))
            return
        if self.metrics is not None:
            self.metrics.watch_freed.inc()
        self.log("pod-freed", f"freed {allocation.address} in {range_of(allocation.pool)} of pod {pod.ref} "
                 f"within seconds: {decision.reason}", **fields)
        network = pod.attachments.get((allocation.ifname, allocation.address), "").rpartition("/")[2]
        self._event(pod, kubeevents.FREED, kubeevents.freed_message(allocation.address,
                                                                     network or allocation.network))

    def _failed(self, pod, kind, allocations, exc) -> None:
        """The store or the API server failed before any release: every candidate known (or the pod) fails."""
        if not allocations:
            if self.metrics is not None:
                self.metrics.watch_failed.inc()
            self.log("pod-free-failed", f"could not free the addresses of pod {pod.ref}: {exc}; the next cron "
                     f"run will judge them", level="error", pod=pod.ref, pod_uid=pod.uid, pod_event=kind,
                     error=str(exc), error_type=type(exc).__name__)
            self._event(pod, kubeevents.FAILED, kubeevents.failed_message(pod.ref, "", str(exc)))
            return
        for allocation in allocations:
            self._address_failed(pod, kind, allocation, exc)

    def _address_failed(self, pod, kind, allocation, exc) -> None:
        if self.metrics is not None:
            self.metrics.watch_failed.inc()
        self.log("pod-free-failed", f"could not free {allocation.address} ({allocation.pool}) of pod {pod.ref}: "
                 f"{exc}; the next cron run will judge it", level="error", **describe(allocation),
                 pod_uid=pod.uid, pod_event=kind, error=str(exc), error_type=type(exc).__name__)
        self._event(pod, kubeevents.FAILED, kubeevents.failed_message(pod.ref, allocation.address, str(exc)))

    def _event(self, pod, reason: str, message: str) -> None:
        try:
            kubeevents.post(self.client, kubeevents.event_object(pod, reason, message, self.node, self.clock_ns()))
        except Exception as exc:  # noqa: BLE001 -- an Event is a report; losing one frees or keeps nothing
            self.log("event-error", f"could not record the {reason} Event on pod {pod.ref}: {exc}",
                     level="warning", pod=pod.ref, reason=reason, error=str(exc))
