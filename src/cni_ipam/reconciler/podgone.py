"""Which allocations a pod event frees: a pure function of the event, the store's records and the pod now.

The pod watch (:mod:`.podwatch`) sees a pod of this node deleted, finished
(``Succeeded``/``Failed``) or marked for deletion by the taint manager
(``DisruptionTarget``: ``DeletionByTaintManager``, its node unreachable),
as whereabouts' ``ip-control-loop`` does on deletions
(k8snetworkplumbingwg/whereabouts pkg/controlloop/pod.go @ v0.9.4,
3a262bd0cd873e13d9b379342f8251b852a89b8f, ``garbageCollectPodIPs``).
Which allocations belong to that pod is decided here, never by name alone:

* the allocation records the pod (``namespace/name``) and this node (or no
  node at all), so a StatefulSet pod re-created on another node under the
  same name keeps its new address;
* its interface and address are an entry of the pod's own
  ``k8s.v1.cni.cncf.io/network-status``, which Multus writes only after
  the ADD: a pod without one frees nothing here (the cron run, which can
  look at network namespaces, still judges it);
* its container ID is the sandbox the pod had.  The Pod API does not
  carry the sandbox ID that CNI records, so the watch learns it while the
  pod runs (:func:`owners`: the store's record of each network-status
  entry), and the store's release frees only while that same container ID
  and interface still hold the address;
* a fresh look at the pod by name (``current``) decides last.  Gone:
  freed (only an ADD for a pod that exists can be in flight, and the
  pod's own network-status proves its ADD finished, so even an allocation
  younger than the grace period of :func:`~.run.decide` is freed: that is
  the point of freeing within seconds).  The same pod (same UID), finished
  or being deleted: freed.  Another pod under that name (a successor, as a
  StatefulSet makes at once, on this node or another): the allocator
  gives a pod's new sandbox the address its old one holds (same name,
  network and interface: :mod:`cni_ipam.allocator.engine`), so the
  allocation may be the successor's already.  It is freed only when its
  container ID is still the sandbox learnt for the old pod; anything else
  (taken over, or never learnt) is kept, for the cron run to judge.
"""

from __future__ import annotations

from .liveness import TERMINAL_PHASES
from .run import Decision

DELETED = "DELETED"


def gone(kind: str, pod) -> tuple | None:
    """(code, reason) when the event says ``pod`` (a :class:`~.liveness.PodView`) will not run again, else None."""
    if kind == DELETED:
        return "pod-gone", f"pod {pod.ref} was deleted"
    if pod.taint_deleted:
        return "pod-taint-deleted", (f"pod {pod.ref} is being deleted by the taint manager (DisruptionTarget: "
                                     f"DeletionByTaintManager; its node is unreachable)")
    if pod.phase in TERMINAL_PHASES:
        return "pod-finished", f"pod {pod.ref} has finished (phase {pod.phase}) and will not run again"
    return None


def belongs(allocation, pod, node: str) -> bool:
    """The allocation is one of ``pod``'s attachments on ``node``: name, node, interface and address."""
    return (allocation.pod == pod.ref and allocation.node in ("", node)
            and (allocation.ifname, allocation.address) in pod.attachments)


def owners(pod, allocations, node: str) -> dict:
    """{(interface, address): container ID} of ``pod``'s attachments among ``allocations``: learnt while the
    pod runs, so that after it is gone an allocation a successor took over is told apart."""
    return {(a.ifname, a.address): a.container_id for a in allocations if belongs(a, pod, node)}


def decide_pod(kind: str, pod, allocations, node: str, current, learnt: dict | None = None) -> list:
    """A :class:`~.run.Decision` for each of ``allocations`` that belongs to ``pod``: ``stale`` ones are freed.

    ``kind`` is the watch event's type (``ADDED``, ``MODIFIED``, ``DELETED``;
    a relist that no longer finds a pod reports it ``DELETED``), ``current``
    the pod of that name as a fresh GET returned it (None: none exists),
    ``learnt`` what :func:`owners` said while the pod ran (None: nothing).
    """
    why = gone(kind, pod)
    if why is None:
        return []
    return [_one(allocation, pod, why, current, learnt or {}) for allocation in allocations
            if belongs(allocation, pod, node)]


def _one(allocation, pod, why, current, learnt) -> Decision:
    code, reason = why
    if current is None:
        return Decision(allocation, True, code, reason)
    if current.uid == pod.uid:  # still there, finished or being deleted: the fresh look has the last word
        verdict = gone("MODIFIED", current)
        if verdict is None:
            return Decision(allocation, False, "pod-running", f"pod {pod.ref} is running again")
        return Decision(allocation, True, *verdict)
    successor = f"pod {pod.ref} exists again (uid {current.uid}, node {current.node or 'not yet scheduled'})"
    sandbox = learnt.get((allocation.ifname, allocation.address))
    if sandbox == allocation.container_id:
        return Decision(allocation, True, code, f"{reason}; {successor}, but {allocation.address} is still held "
                                                f"by the old pod's sandbox {sandbox[:12]}")
    held_by = "whose sandbox was never seen" if sandbox is None else f"not by its sandbox {sandbox[:12]}"
    return Decision(allocation, False, "successor-may-hold",
                    f"{successor}; {allocation.address} is held by {allocation.container_id[:12]}, {held_by}: it "
                    f"may be the successor's now")


__all__ = ["belongs", "decide_pod", "gone", "owners"]
