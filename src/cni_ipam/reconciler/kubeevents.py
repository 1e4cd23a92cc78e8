"""Kubernetes Events on a pod for each address the pod watch freed, or failed to free.

Reasons and messages are whereabouts' ``ip-control-loop``'s
(k8snetworkplumbingwg/whereabouts pkg/controlloop/pod.go @ v0.9.4,
3a262bd0cd873e13d9b379342f8251b852a89b8f: ``addressGarbageCollected``,
``addressGarbageCollectionFailed``), so alerts written for it keep
working.  Upstream reports one failure per pod after its retries; here
each address gets its own, with the address and the error after
upstream's text.  The object is shaped as client-go's recorder makes it
(kubernetes/client-go tools/record/event.go, ``makeEvent``: name
``<pod>.<unix nanoseconds in hex>``, count 1, first and last timestamp).
"""

from __future__ import annotations

COMPONENT = "cni-ipam-reconciler"
FREED = "IPAddressGarbageCollected"
FAILED = "IPAddressGarbageCollectionFailed"


def freed_message(address: str, network: str) -> str:
    return f"successful cleanup of IP address [{address}] from network {network}"


def failed_message(pod_ref: str, address: str, error: str) -> str:
    """Upstream's text, then the address (when known) and the error."""
    return f"failed to garbage collect addresses for pod {pod_ref}: {f'[{address}]: ' if address else ''}{error}"


def event_object(pod, reason: str, message: str, node: str, now_ns: int) -> dict:
    """The core/v1 Event about ``pod`` (a :class:`~.liveness.PodView`), as a JSON object."""
    import time

    namespace, _, name = pod.ref.partition("/")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns // 1_000_000_000))  # meta/v1 Time: seconds
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{name}.{now_ns:x}", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name,
                           "uid": pod.uid},
        "reason": reason, "message": message, "type": "Normal" if reason == FREED else "Warning",
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT, "reportingInstance": node,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


def post(client, body: dict) -> None:
    """Create the Event (a lightkube client)."""
    from lightkube.resources.core_v1 import Event

    client.create(Event.from_dict(body), namespace=body["metadata"]["namespace"])
