"""The pod watch's decision (reconciler/podgone.py), its back-off and its Events, as pure functions.

The cases follow whereabouts' ``ip-control-loop`` (k8snetworkplumbingwg/whereabouts
pkg/controlloop/pod.go @ v0.9.4, 3a262bd0cd873e13d9b379342f8251b852a89b8f) and go where it does not:
finished and evicted pods, the interface and address from network-status, and the sandbox.
"""

from __future__ import annotations

import json

from cni_ipam.reconciler import kubeevents
from cni_ipam.reconciler.liveness import PodView, network_status_attachments
from cni_ipam.reconciler.podgone import decide_pod, gone, owners
from cni_ipam.reconciler.podwatch import Backoff, expired
from cni_ipam.store.base import Allocation

NODE = "n1"
NOW = 1_700_000_000.0


def allocation(address="192.0.2.5", container="sandbox-1", ifname="net1", pod="apps/web-0", node=NODE,
               created=NOW - 5):
    return Allocation("podnet/192.0.2.0/24", int.from_bytes(bytes(map(int, address.split("."))), "big"), 4, "podnet",
                      container, ifname, space="podnet", pod=pod, node=node, created=created)


def pod(uid="uid-1", phase="Running", attachments=None, node=NODE, taint=False, ref="apps/web-0"):
    if attachments is None:
        attachments = {("net1", "192.0.2.5"): "apps/podnet", ("eth0", "10.244.1.7"): "k8s-pod-network"}
    return PodView(ref, phase, NOW - 60, has_status=bool(attachments), taint_deleted=taint, uid=uid, node=node,
                   attachments=attachments)


def freed(decisions) -> list:
    return [(d.allocation.address, d.allocation.container_id, d.code) for d in decisions if d.stale]


def test_which_events_mean_gone():
    assert gone("DELETED", pod())[0] == "pod-gone"
    assert gone("MODIFIED", pod(phase="Succeeded"))[0] == "pod-finished"
    assert gone("MODIFIED", pod(phase="Failed"))[0] == "pod-finished"
    assert gone("ADDED", pod(taint=True))[0] == "pod-taint-deleted"
    assert gone("MODIFIED", pod()) is None
    assert gone("ADDED", pod(phase="Pending")) is None


def test_a_deleted_pod_frees_exactly_the_interface_and_address_its_network_status_lists():
    mine = allocation()
    same_name_other_interface = allocation("192.0.2.6", ifname="net2")
    same_name_other_address = allocation("192.0.2.7")
    other_node = allocation(node="n2")
    other_pod = allocation(pod="apps/web-1")
    decisions = decide_pod("DELETED", pod(), [mine, same_name_other_interface, same_name_other_address, other_node,
                                               other_pod], NODE, None)
    assert freed(decisions) == [("192.0.2.5", "sandbox-1", "pod-gone")]
    assert [d.allocation for d in decisions] == [mine]


def test_a_young_allocation_of_a_pod_gone_for_good_is_freed():
    """Its network-status proves its ADD finished, and no pod of that name exists whose ADD could be running."""
    assert freed(decide_pod("DELETED", pod(), [allocation(created=NOW - 1)], NODE, None)) == [
        ("192.0.2.5", "sandbox-1", "pod-gone")]


def test_a_running_pod_frees_nothing_and_one_without_network_status_is_not_matched():
    assert decide_pod("MODIFIED", pod(), [allocation()], NODE, pod()) == []
    assert decide_pod("DELETED", pod(attachments={}), [allocation()], NODE, None) == []


def test_finished_and_evicted_pods_are_looked_at_again_before_freeing():
    finished = pod(phase="Succeeded")
    assert freed(decide_pod("MODIFIED", finished, [allocation()], NODE, finished)) == [
        ("192.0.2.5", "sandbox-1", "pod-finished")]
    evicted = pod(taint=True)
    assert freed(decide_pod("MODIFIED", evicted, [allocation()], NODE, evicted)) == [
        ("192.0.2.5", "sandbox-1", "pod-taint-deleted")]
    [kept] = decide_pod("MODIFIED", finished, [allocation()], NODE, pod())  # the fresh look says running
    assert (kept.stale, kept.code) == (False, "pod-running")


def test_a_statefulset_successor_keeps_what_may_be_its_own():
    old = pod(uid="uid-old")
    learnt = {("net1", "192.0.2.5"): "sandbox-old"}
    still_old = allocation(container="sandbox-old")
    taken_over = allocation(container="sandbox-new")  # the allocator gave the successor's sandbox the address

    elsewhere = pod(uid="uid-new", node="n2", attachments={})
    assert freed(decide_pod("DELETED", old, [still_old], NODE, elsewhere, learnt)) == [
        ("192.0.2.5", "sandbox-old", "pod-gone")]
    [kept] = decide_pod("DELETED", old, [taken_over], NODE, elsewhere, learnt)
    assert (kept.stale, kept.code) == (False, "successor-may-hold")
    [kept] = decide_pod("DELETED", old, [still_old], NODE, elsewhere, None)  # its sandbox never learnt
    assert (kept.stale, kept.code) == (False, "successor-may-hold")
    listing_it = pod(uid="uid-new", node=NODE)  # on this node, with the address in its network-status
    [kept] = decide_pod("DELETED", old, [taken_over], NODE, listing_it, learnt)
    assert (kept.stale, kept.code) == (False, "successor-may-hold")


def test_owners_are_the_sandboxes_of_the_pods_own_entries():
    assert owners(pod(), [allocation(container="s1"), allocation("192.0.2.9", container="s2"),
                          allocation(container="s3", node="n2")], NODE) == {("net1", "192.0.2.5"): "s1"}


def test_network_status_entries_keep_interface_address_and_network():
    raw = json.dumps([{"name": "k8s-pod-network", "interface": "eth0", "ips": ["10.244.1.7"], "default": True},
                      {"name": "apps/podnet", "interface": "net1", "ips": ["192.0.2.5/24", "2001:db8::5"]},
                      {"name": "old-multus", "ips": ["198.51.100.1"]}, "junk"])
    assert network_status_attachments(raw) == ({
        ("eth0", "10.244.1.7"): "k8s-pod-network", ("net1", "192.0.2.5"): "apps/podnet",
        ("net1", "2001:db8::5"): "apps/podnet", ("", "198.51.100.1"): "old-multus"}, "")


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets():
    backoff = Backoff(base=0.5, cap=4.0, random_fraction=lambda: 1.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert Backoff(base=0.5, cap=4.0, random_fraction=lambda: 0.0).next() == 0.25
    assert backoff.next() == 0.5


def test_only_a_410_is_expired():
    class Status:
        def __init__(self, code):
            self.code = code

    class ApiError(Exception):
        def __init__(self, code):
            self.status = Status(code)

    assert expired(ApiError(410)) and not expired(ApiError(500)) and not expired(OSError("refused"))


def test_events_have_upstreams_reasons_and_messages():
    view = pod(uid="uid-9")
    event = kubeevents.event_object(view, kubeevents.FREED, kubeevents.freed_message("192.0.2.5", "podnet"), NODE,
                                    1_700_000_000_123_456_789)
    assert event["metadata"] == {"name": f"web-0.{1_700_000_000_123_456_789:x}", "namespace": "apps"}
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "apps", "name": "web-0",
                                       "uid": "uid-9"}
    assert (event["reason"], event["type"], event["message"]) == (
        "IPAddressGarbageCollected", "Normal", "successful cleanup of IP address [192.0.2.5] from network podnet")
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"
    failed = kubeevents.event_object(view, kubeevents.FAILED,
                                     kubeevents.failed_message("apps/web-0", "192.0.2.5", "etcd down"), NODE, 0)
    assert (failed["reason"], failed["type"], failed["message"]) == (
        "IPAddressGarbageCollectionFailed", "Warning",
        "failed to garbage collect addresses for pod apps/web-0: [192.0.2.5]: etcd down")
