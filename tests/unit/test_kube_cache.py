"""The node agent's watched copy of the IPPools (store/kube_cache.py): the merge of LISTs, watch events and our
own writes' answers never puts an older object over a newer one, and a claim's answer that shows the
attachment already held an address is found (``held_elsewhere``)."""

from __future__ import annotations

import pytest

from cni_ipam.store.base import Allocation
from cni_ipam.store.kube_cache import PoolCache, held_elsewhere
from cni_ipam.store.kube_pools import Pool


def obj(name: str, rv, keys=None) -> dict:
    """An IPPool ``name`` at resourceVersion ``rv``: ``keys``: key -> (container ID, pod, ifname)."""
    meta = {"name": name, "namespace": "kube-system"}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    allocations = {k: {"id": c, "podref": p, "ifname": i} for k, (c, p, i) in (keys or {}).items()}
    return {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool", "metadata": meta,
            "spec": {"range": "10.0.0.0/24", "allocations": allocations}}


def versions(cache: PoolCache) -> dict:
    cache.mark_synced()
    return {name: o["metadata"].get("resourceVersion") for name, o in cache.pools().items()}


def test_nothing_is_read_from_the_copy_until_a_watch_is_open():
    cache = PoolCache()
    cache.listed([obj("a", 5)], "5")
    assert cache.pools() is None
    cache.mark_synced()
    assert list(cache.pools()) == ["a"]
    cache.unsynced()
    assert cache.pools() is None and cache.version == "5"  # a broken watch resumes from where it was
    cache.unsynced(relist=True)
    assert cache.version is None  # 410: list again


def test_watch_events_apply_in_order_and_move_the_version():
    cache = PoolCache()
    cache.listed([obj("a", 5)], "5")
    cache.event("MODIFIED", obj("a", 7))
    cache.event("ADDED", obj("b", 8))
    cache.event("DELETED", obj("a", 9))
    assert versions(cache) == {"b": "8"} and cache.version == "9"


def test_our_answer_newer_than_the_watch_is_kept_until_the_watch_catches_up():
    cache = PoolCache()
    cache.listed([obj("a", 5)], "5")
    cache.seen("a", obj("a", 9))  # our patch's answer, before the watch delivered 7 and 9
    cache.event("MODIFIED", obj("a", 7))
    assert versions(cache) == {"a": "9"}
    cache.event("MODIFIED", obj("a", 9))
    cache.event("MODIFIED", obj("a", 11))
    assert versions(cache) == {"a": "11"}


def test_an_older_answer_never_replaces_a_newer_object():
    cache = PoolCache()
    cache.listed([obj("a", 12)], "12")
    cache.seen("a", obj("a", 10))  # a GET answered before another writer's change arrived through the watch
    assert versions(cache) == {"a": "12"}
    cache.seen("a", obj("a", None))  # an answer that cannot be ordered: left to the watch
    assert versions(cache) == {"a": "12"}


def test_a_deletion_is_not_undone_by_an_older_object():
    cache = PoolCache()
    cache.listed([obj("a", 5)], "5")
    cache.event("DELETED", obj("a", 9))
    cache.seen("a", obj("a", 7))  # an answer from before the deletion, arriving late
    cache.listed([obj("a", 7)], "8")  # a LIST older than the deletion
    assert versions(cache) == {}
    cache.event("ADDED", obj("a", 10))  # created again
    assert versions(cache) == {"a": "10"}


def test_a_relist_drops_what_it_lacks_unless_it_is_newer_than_the_list():
    cache = PoolCache()
    cache.listed([obj("a", 5), obj("b", 6)], "6")
    cache.seen("c", obj("c", 20))  # our create, committed after the LIST below was read
    cache.listed([obj("a", 15)], "15")  # b was deleted while the watch was down
    assert versions(cache) == {"a": "15", "c": "20"} and cache.version == "15"


def test_a_not_found_read_forgets_the_pool_and_an_older_event_may_bring_it_back_only_until_its_deletion():
    cache = PoolCache()
    cache.listed([obj("a", 5)], "5")
    cache.seen("a", None)  # 404: deleted, at a version we do not know
    assert versions(cache) == {}
    cache.event("MODIFIED", obj("a", 5))  # what we already had: not again
    assert versions(cache) == {}


ALLOCATIONS = {"1": ("c1", "ns/p1", "eth0"), "2": ("c2", "ns/p2", "eth0"), "3": ("old", "ns/p3", "net1")}


def claimed(offset: int, cid: str, ifname: str = "eth0", pod: str = "", network: str = "net") -> Allocation:
    return Allocation("/10.0.0.0/24", 0x0A000000 + offset, 4, network, cid, ifname, space="", pod=pod)


@pytest.mark.parametrize("claim, found", [
    (claimed(9, "c1"), ["10.0.0.1"]),  # the same attachment (Go-written: no network, matches any)
    (claimed(9, "c1", ifname="net1"), []),  # another interface of that container
    (claimed(9, "new", ifname="net1", pod="ns/p3"), ["10.0.0.3"]),  # the pod's interface under an older sandbox
    (claimed(9, "new", pod="ns/p3"), []),  # the pod's other interface
    (claimed(9, "c9"), []),  # nobody's
    (claimed(1, "c1"), []),  # the claim itself
])
def test_what_a_fresh_pool_holds_for_the_claims_attachment(claim, found):
    pool = Pool(obj("10.0.0.0-24", 30, ALLOCATIONS))
    assert [a.address for a in held_elsewhere(pool, claim)] == found


def test_an_address_the_agent_is_claiming_right_now_is_not_held_elsewhere():
    """Two calls of one attachment at once: each looks while its own address is still marked, so at most one
    sees the other as done and gives its claim back."""
    pool = Pool(obj("10.0.0.0-24", 30, ALLOCATIONS))
    assert held_elsewhere(pool, claimed(9, "c1"), busy={0x0A000001}) == []
