"""Concurrent writers of one IPPool, each guarding only the keys it touches, against the test API server.

The store's patches carry no ``test`` of ``resourceVersion`` (docs/kubernetes-objects.md): the API server
applies a patch to the object as it is when it commits, and applies it again after a concurrent commit
(kubernetes/apiserver pkg/storage/etcd3/store.go ``GuaranteedUpdate``; the test API server's
tests/kubeapi/storage.py ``guaranteed_update`` and server.py ``verb_patch`` do the same), so writers of
different keys all succeed at once, and a write made from a stale read is refused where it would change
what another writer holds.  Each writer here is its own :class:`KubernetesStore` with its own connection,
as plugin processes are; the server's request counters count the patches (each 422 costs one more).
"""

from __future__ import annotations

import json
import threading

import pytest
from test_whereabouts_kube import POOLS, pools

from cni_ipam.kube import objects as ko
from cni_ipam.store.base import Allocation
from cni_ipam.store.kube_pools import ANNOTATION
from cni_ipam.store.kubernetes import KubernetesStore

POOL = "/10.50.0.0/24"
NAME = "10.50.0.0-24"
BASE = 0x0A320000  # 10.50.0.0
WRITES = ["create", "update", "patch", "delete"]


def store(kube_api, tmp_path, n: int) -> KubernetesStore:
    from kubeapi.kubeconfig import write_kubeconfig

    from cni_ipam.kube.client import KubeClient
    from cni_ipam.kube.kubeconfig import load

    return KubernetesStore(KubeClient(load(write_kubeconfig(kube_api, str(tmp_path / f"kubeconfig{n}")))))


def held(offset: int, cid: str, pod: str = "", space="") -> Allocation:
    return Allocation(POOL, BASE + offset, 4, "net", cid, "eth0", space=space, pod=pod or f"ns/{cid}",
                      node="node-a", netns=f"/var/run/netns/{cid}")


def claim(s: KubernetesStore, a: Allocation) -> bool:
    with s.transaction():
        return s.claim(a)


def release(s: KubernetesStore, a: Allocation) -> bool:
    with s.transaction():
        return s.release(a)


def counted(kube_api, request: str) -> int:
    return kube_api.faults()["requests"].get(request, 0)


def at_once(kube_api, tmp_path, work, writers: int = 16) -> list:
    """``work(n, store)`` by ``writers`` stores at once, each having read the pools first (as a plugin's LIST at
    its start) and every write slowed by 10 ms so that they overlap, as on a real server; their results."""
    stores = [store(kube_api, tmp_path, n) for n in range(writers)]
    for s in stores:
        s.transaction().__enter__()
        s.prefetch(None, None, None, None, None)
    kube_api.faults([{"verbs": WRITES, "latency": 0.01}], reset=True)
    start = threading.Barrier(writers)
    results = [None] * writers

    def one(n: int) -> None:
        start.wait()
        results[n] = work(n, stores[n])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_sixteen_concurrent_claims_of_one_pool_all_commit_without_a_conflict(kube_api, tmp_path):
    first = store(kube_api, tmp_path, 99)
    assert claim(first, held(1, "c0"))  # the pool exists (its create is not what is measured)
    # 16 different addresses, 16 writers at once
    assert at_once(kube_api, tmp_path, lambda n, s: s.claim(held(2 + n, f"c{n + 1}"))) == [True] * 16
    requests = kube_api.faults()["requests"]
    assert requests.get("patch ippools") == 16, requests  # one patch each: no 422, no retry
    assert requests.get("create overlappingrangeipreservations") == 16
    pool = pools(kube_api)[NAME]
    assert {k: v["id"] for k, v in pool["spec"]["allocations"].items()} == {str(n): f"c{n - 1}" for n in range(1, 18)}
    notes = pool["metadata"]["annotations"]
    assert sorted(notes) == sorted(f"cni-ipam.io/a.{n}" for n in range(1, 18))  # nobody overwrote another's
    assert all(json.loads(notes[f"cni-ipam.io/a.{n}"])[:3] == [f"c{n - 1}", "eth0", "net"] for n in range(1, 18))
    found = store(kube_api, tmp_path, 98)
    with found.transaction():
        assert sorted((a.ip - BASE, a.container_id, a.network, a.node) for a in found.find()) == sorted(
            (n, f"c{n - 1}", "net", "node-a") for n in range(1, 18))


def test_concurrent_releases_and_claims_of_one_pool_do_not_conflict(kube_api, tmp_path):
    setup = store(kube_api, tmp_path, 99)
    for n in range(8):
        assert claim(setup, held(1 + n, f"old{n}"))

    def one(n: int, s: KubernetesStore) -> bool:
        return s.release(held(1 + n, f"old{n}")) if n < 8 else s.claim(held(1 + n, f"new{n}"))

    assert at_once(kube_api, tmp_path, one) == [True] * 16
    assert counted(kube_api, "patch ippools") == 16
    pool = pools(kube_api)[NAME]
    assert sorted(pool["spec"]["allocations"], key=int) == [str(n) for n in range(9, 17)]
    assert sorted(pool["metadata"]["annotations"]) == sorted(f"cni-ipam.io/a.{n}" for n in range(9, 17))


def test_a_release_from_a_stale_read_leaves_the_new_holders_key_alone(kube_api, tmp_path):
    a, b, c = (store(kube_api, tmp_path, n) for n in range(3))
    assert claim(a, held(5, "c1", space=None))
    b.transaction().__enter__()
    b.prefetch(None, None, None, None, None)  # b reads the pool while c1 holds .5
    stale = pools(kube_api)[NAME]
    assert release(a, held(5, "c1", space=None))
    assert claim(c, held(5, "c2", pod="ns/other", space=None))  # .5 re-held by another attachment

    # the patch built from the stale read: refused, nothing applied
    ops = ko.pool_patch(ko.parse_ippool(stale), remove=["5"])
    code, _, body = kube_api.request("PATCH", f"{POOLS}/{NAME}", ops, content_type="application/json-patch+json")
    assert code == 422, body
    # the store's release from that read: its patch is refused, it reads again and finds c1 gone
    kube_api.faults(reset=True)
    assert b.release(held(5, "c1", space=None)) is True  # c1 holds nothing there any more
    assert counted(kube_api, "patch ippools") == 1  # the refused one; none after the read
    pool = pools(kube_api)[NAME]
    assert pool["spec"]["allocations"] == {"5": {"id": "c2", "podref": "ns/other", "ifname": "eth0"}}
    assert json.loads(pool["metadata"]["annotations"]["cni-ipam.io/a.5"])[0] == "c2"


def test_a_claim_from_a_stale_read_of_a_taken_key_loses_the_race(kube_api, tmp_path):
    a, b = store(kube_api, tmp_path, 0), store(kube_api, tmp_path, 1)
    assert claim(a, held(1, "c0", space=None))
    b.transaction().__enter__()
    b.prefetch(None, None, None, None, None)
    assert claim(a, held(7, "c1", space=None))
    assert b.claim(held(7, "c2", space=None)) is False  # the key's test failed; read again: c1 holds it
    assert b.claim(held(8, "c2", space=None)) is True  # the allocator's next candidate
    assert {k: v["id"] for k, v in pools(kube_api)[NAME]["spec"]["allocations"].items()} == {
        "1": "c0", "7": "c1", "8": "c2"}


def test_a_reservation_refused_on_its_first_sending_is_another_s_without_reading_it(kube_api, tmp_path):
    """A 409 AlreadyExists on the first sending of a reservation create cannot be our own create (nothing was
    sent before), so the claim is lost at once: no GET of the reservation (kube.client.KubeError.retried).  A
    create whose answer was lost is still recognised as ours (test_whereabouts_kube_faults.py)."""
    a, b = store(kube_api, tmp_path, 0), store(kube_api, tmp_path, 1)
    assert claim(a, held(1, "c0", space="net"))
    b.transaction().__enter__()
    b.prefetch(None, None, None, None, None)  # b's list predates c1's claim of offset 7
    assert claim(a, held(7, "c1", space="net"))
    kube_api.faults([], reset=True)
    assert b.claim(held(7, "c2", space="net")) is False  # its reservation is c1's
    requests, refused = kube_api.faults()["requests"], kube_api.faults()["refused"]
    assert refused == {"create overlappingrangeipreservations": 1}
    assert requests.get("get overlappingrangeipreservations", 0) == 0
    assert b.claim(held(8, "c2", space="net")) is True
    assert {k: v["id"] for k, v in pools(kube_api)[NAME]["spec"]["allocations"].items()} == {
        "1": "c0", "7": "c1", "8": "c2"}


def test_a_plugin_s_first_lost_reservation_races_pick_on_from_its_list_and_later_ones_read_the_pool(kube_api,
                                                                                                    tmp_path):
    """A lost reservation race costs no GET of the pool for a plugin command's first REREAD_AFTER - 1 losses:
    the next candidate comes from the list it has (the lost address reads as held); from then on its list is
    evidently stale, and each loss reads the pool again."""
    from cni_ipam.store.kubernetes import REREAD_AFTER

    a, b = store(kube_api, tmp_path, 0), store(kube_api, tmp_path, 1)
    assert claim(a, held(1, "c0", space="net"))
    b.transaction().__enter__()
    b.prefetch(None, None, None, None, None)  # b's list predates the claims below
    for offset in range(2, 2 + REREAD_AFTER):
        assert claim(a, held(offset, f"c{offset}", space="net"))
    kube_api.faults([], reset=True)
    for n, offset in enumerate(range(2, 2 + REREAD_AFTER), start=1):
        assert b.claim(held(offset, "late", space="net")) is False
        assert counted(kube_api, "get ippools") == (1 if n >= REREAD_AFTER else 0), n
        assert BASE + offset in set(b.held(POOL, "net", BASE, BASE + 255))  # passed by from now on
    assert kube_api.faults()["refused"] == {"create overlappingrangeipreservations": REREAD_AFTER}


def _old_style_pool(kube_api, stale_key: bool = False) -> None:
    """A pool as this store wrote it before per-key annotations: one annotation with every key's row."""
    rows = {"1": ["c1", "eth0", "net", 1, "node-a", "/var/run/netns/c1", 1700000000.5],
            "2": ["c2", "eth0", "other", 0, "node-a", "/var/run/netns/c2", 1700000001.0]}
    if stale_key:
        rows["3"] = ["gone", "eth0", "net", 1, "node-a", "", 0]  # a Go writer removed key 3
    obj = ko.ippool_object(NAME, "kube-system", "10.50.0.0/24", {
        "1": ko.Allocation("c1", "ns/c1", "eth0"), "2": ko.Allocation("c2", "ns/c2", "eth0")})
    obj["metadata"]["annotations"] = {ANNOTATION: json.dumps(rows), "example.com/other": "kept"}
    code, _, body = kube_api.request("POST", POOLS, obj)
    assert code == 201, body


@pytest.mark.parametrize("stale_key", [False, True])
def test_the_old_single_annotation_is_read_and_replaced_by_per_key_ones_on_the_next_write(kube_api, tmp_path,
                                                                                          stale_key):
    _old_style_pool(kube_api, stale_key)
    s = store(kube_api, tmp_path, 0)
    with s.transaction():
        before = {a.container_id: (a.network, a.space, a.node, a.created) for a in s.find()}
    assert before == {"c1": ("net", "", "node-a", 1700000000.5), "c2": ("other", None, "node-a", 1700000001.0)}
    assert claim(s, held(9, "c9"))
    annotations = pools(kube_api)[NAME]["metadata"]["annotations"]
    assert sorted(annotations) == ["cni-ipam.io/a.1", "cni-ipam.io/a.2", "cni-ipam.io/a.9", "example.com/other"]
    assert json.loads(annotations["cni-ipam.io/a.2"]) == ["c2", "eth0", "other", 0, "node-a", "/var/run/netns/c2",
                                                          1700000001.0]
    with s.transaction():
        after = {a.container_id: (a.network, a.space, a.node, a.created) for a in s.find()}
    assert after == dict(before, c9=("net", "", "node-a", after["c9"][3]))


def test_the_old_single_annotation_rewritten_meanwhile_by_an_old_writer_makes_us_read_again(kube_api, tmp_path):
    """An old writer (one annotation, resourceVersion test) and a new one at once: ours tests the text it removes."""
    _old_style_pool(kube_api)
    s = store(kube_api, tmp_path, 0)
    s.transaction().__enter__()
    s.prefetch(None, None, None, None, None)
    pool = pools(kube_api)[NAME]
    rows = json.loads(pool["metadata"]["annotations"][ANNOTATION])
    rows["4"] = ["c4", "eth0", "net", 1, "node-b", "", 0]
    code, _, body = kube_api.request("PATCH", f"{POOLS}/{NAME}", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": pool["metadata"]["resourceVersion"]},
        {"op": "test", "path": "/spec/allocations/4", "value": None},
        {"op": "add", "path": "/spec/allocations/4", "value": {"id": "c4", "podref": "ns/c4", "ifname": "eth0"}},
        {"op": "add", "path": "/metadata/annotations/cni-ipam.io~1attachments", "value": json.dumps(rows)}],
        content_type="application/json-patch+json")
    assert code == 200, body
    kube_api.faults(reset=True)
    assert s.claim(held(9, "c9")) is True
    assert counted(kube_api, "patch ippools") == 2  # refused once (the annotation changed), then written
    annotations = pools(kube_api)[NAME]["metadata"]["annotations"]
    assert ANNOTATION not in annotations
    assert json.loads(annotations["cni-ipam.io/a.4"])[:5] == ["c4", "eth0", "net", 1, "node-b"]  # not lost


def test_a_go_created_pool_without_annotations_gets_its_map_once(kube_api, tmp_path):
    obj = ko.ippool_object(NAME, "kube-system", "10.50.0.0/24", {"1": ko.Allocation("go-1", "apps/go")})
    code, _, body = kube_api.request("POST", POOLS, obj)
    assert code == 201, body
    a, b = store(kube_api, tmp_path, 0), store(kube_api, tmp_path, 1)
    for s in (a, b):
        s.transaction().__enter__()
        s.prefetch(None, None, None, None, None)
    kube_api.faults(reset=True)
    assert a.claim(held(2, "c2", space=None)) and b.claim(held(3, "c3", space=None))
    assert counted(kube_api, "patch ippools") == 3  # b's first patch also added the map: refused, read, again
    annotations = pools(kube_api)[NAME]["metadata"]["annotations"]
    assert sorted(annotations) == ["cni-ipam.io/a.2", "cni-ipam.io/a.3"]
