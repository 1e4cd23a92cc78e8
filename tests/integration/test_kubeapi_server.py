"""The test Kubernetes API server (tests/kubeapi) behaves as kube-apiserver does where our store depends on it.

Expected bodies come from kubernetes/apimachinery pkg/api/errors/errors.go
@ eed236ceee2c19c2753a3d93ac0631dc20750454 and kubernetes/apiserver
pkg/endpoints/handlers/patch.go @ 24a394e516bfda066d7e2221d7d92c052de27c54;
object shapes from k8snetworkplumbingwg/whereabouts doc/crds @ v0.9.4.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time

import pytest

from cni_ipam.store.etcd_client import EtcdClient

GROUP = "whereabouts.cni.cncf.io"
POOLS = f"/apis/{GROUP}/v1alpha1/namespaces/kube-system/ippools"
PODS = "/api/v1/namespaces/default/pods"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def pool(name: str = "10.0.0.0-24", allocations=None) -> dict:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"range": name.replace("-", "/"), "allocations": allocations or {}}}


def created(server, path: str, obj: dict) -> dict:
    code, _, body = server.request("POST", path, obj)
    assert code == 201, body
    return body


def allocate(server, name: str, offset: str, base: dict) -> tuple:
    """Upstream whereabouts' update: ``test`` of the resourceVersion and of the empty slot, then ``add``."""
    patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": base["metadata"]["resourceVersion"]},
             {"op": "test", "path": f"/spec/allocations/{offset}", "value": None},
             {"op": "add", "path": f"/spec/allocations/{offset}", "value": {"id": f"c{offset}", "podref": f"ns/p{offset}"}}]
    code, _, body = server.request("PATCH", f"{POOLS}/{name}", patch, content_type=JSON_PATCH)
    return code, body


@pytest.fixture
def etcd(etcd_cluster):
    client = EtcdClient(etcd_cluster.endpoints)
    yield client
    client.close()


class Watch:
    """A watch request read line by line in a thread: ``events`` fills as they arrive."""

    def __init__(self, server, path: str) -> None:
        self.connection = server.connection(timeout=30)
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {server.token}"})
        self.response = self.connection.getresponse()
        self.events = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in iter(self.response.readline, b""):
                self.events.append(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException):
            pass

    def wait(self, count: int, timeout: float = 10.0) -> list:
        give_up = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < give_up:
            time.sleep(0.02)
        return [(e["type"], e["object"]) for e in self.events]

    def close(self) -> None:
        """Shut the socket first: the reader thread holds the response's buffer until its read returns."""
        try:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.connection.close()


def test_crud_keeps_objects_where_kube_apiserver_does(kube_api, etcd, etcd_prefix):
    body = created(kube_api, POOLS, pool())
    meta = body["metadata"]
    assert meta["namespace"] == "kube-system" and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    key = f"{etcd_prefix.rstrip('/')}/registry/{GROUP}/ippools/kube-system/10.0.0.0-24".encode()
    stored = etcd.get(key)
    assert str(stored["mod_revision"]) == meta["resourceVersion"]
    assert "resourceVersion" not in json.loads(stored["value"])["metadata"]  # kube-apiserver stores it blank

    code, _, again = kube_api.request("POST", POOLS, pool())
    assert (code, again["reason"], again["message"]) == (409, "AlreadyExists",
                                                         f'ippools.{GROUP} "10.0.0.0-24" already exists')
    assert again["details"] == {"name": "10.0.0.0-24", "group": GROUP, "kind": "ippools"}

    stale = dict(body, spec={"range": "10.0.0.0/24", "allocations": {"1": {"id": "a", "podref": "ns/a"}}})
    code, _, updated = kube_api.request("PUT", f"{POOLS}/10.0.0.0-24", stale)
    assert code == 200 and updated["metadata"]["generation"] == 2
    code, _, conflict = kube_api.request("PUT", f"{POOLS}/10.0.0.0-24", stale)  # the old resourceVersion again
    assert (code, conflict["reason"]) == (409, "Conflict")
    assert conflict["message"] == (f'Operation cannot be fulfilled on ippools.{GROUP} "10.0.0.0-24": the object has '
                                   f'been modified; please apply your changes to the latest version and try again')

    code, _, refused = kube_api.request("DELETE", f"{POOLS}/10.0.0.0-24",
                                        {"preconditions": {"resourceVersion": meta["resourceVersion"]}})
    assert (code, refused["reason"]) == (409, "Conflict") and "Precondition failed" in refused["message"]
    code, _, deleted = kube_api.request("DELETE", f"{POOLS}/10.0.0.0-24")
    assert (code, deleted["status"]) == (200, "Success")
    assert etcd.get(key) is None
    code, _, missing = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    assert (code, missing["reason"], missing["message"]) == (404, "NotFound", f'ippools.{GROUP} "10.0.0.0-24" not found')
    # refused writes are counted apart (bench/kube_alloc.py's conflicts); a 404 is not a refusal
    assert kube_api.faults()["refused"] == {"create ippools": 1, "update ippools": 1, "delete ippools": 1}


def test_built_in_resources_use_kube_apiservers_storage_paths(kube_api, etcd, etcd_prefix):
    created(kube_api, PODS, {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    created(kube_api, "/api/v1/nodes", {"metadata": {"name": "n1"}})
    created(kube_api, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", {"metadata": {"name": "l"}})
    root = etcd_prefix.rstrip("/") + "/registry/"
    for path in ("pods/default/p", "minions/n1", "leases/kube-system/l"):
        assert etcd.get((root + path).encode()) is not None, path


def test_list_with_selectors_and_pages(kube_api):
    for index in range(5):
        created(kube_api, PODS, {"metadata": {"name": f"p{index}", "labels": {"app": "a" if index % 2 else "b"}},
                                 "spec": {"nodeName": f"n{index % 2}"}, "status": {"phase": "Running"}})
    code, _, on_n1 = kube_api.request("GET", f"{PODS}?fieldSelector=spec.nodeName%3Dn1")
    assert code == 200 and [p["metadata"]["name"] for p in on_n1["items"]] == ["p1", "p3"]
    assert int(on_n1["metadata"]["resourceVersion"]) >= max(int(p["metadata"]["resourceVersion"])
                                                            for p in on_n1["items"])
    _, _, labelled = kube_api.request("GET", f"{PODS}?labelSelector=app%20in%20(b)")
    assert [p["metadata"]["name"] for p in labelled["items"]] == ["p0", "p2", "p4"]
    code, _, bad = kube_api.request("GET", f"{PODS}?fieldSelector=spec.nope%3Dx")
    assert (code, bad["reason"]) == (400, "BadRequest")
    names, token = [], ""
    while True:
        _, _, page = kube_api.request("GET", f"{PODS}?limit=2" + (f"&continue={token}" if token else ""))
        assert len(page["items"]) <= 2
        names += [p["metadata"]["name"] for p in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"p{i}" for i in range(5)]


def test_failed_json_patch_test_is_422_invalid(kube_api):
    base = created(kube_api, POOLS, pool())
    assert allocate(kube_api, "10.0.0.0-24", "1", base)[0] == 200  # test of null on an absent member passes
    code, body = allocate(kube_api, "10.0.0.0-24", "2", base)  # stale resourceVersion
    assert code == 422
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server rejected our request due to an error in our request",
                    "reason": "Invalid", "details": {}, "code": 422}
    _, _, current = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    assert allocate(kube_api, "10.0.0.0-24", "1", current)[0] == 422  # test of null on a taken slot fails
    code, _, merged = kube_api.request("PATCH", f"{POOLS}/10.0.0.0-24",
                                       {"spec": {"allocations": {"1": None, "3": {"id": "x", "podref": "ns/x"}}}},
                                       content_type=MERGE_PATCH)
    assert code == 200 and set(merged["spec"]["allocations"]) == {"3"}
    code, _, stale = kube_api.request("PATCH", f"{POOLS}/10.0.0.0-24",
                                      {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}},
                                      content_type=MERGE_PATCH)
    assert (code, stale["reason"]) == (409, "Conflict")


def test_concurrent_patches_exactly_one_wins_per_resource_version(kube_api):
    created(kube_api, POOLS, pool())
    wins, losses, lock = [], [], threading.Lock()

    def writer(number: int) -> None:
        for attempt in range(6):
            _, _, current = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
            code, body = allocate(kube_api, "10.0.0.0-24", str(number * 100 + attempt), current)
            with lock:
                (wins if code == 200 else losses).append((current["metadata"]["resourceVersion"], code))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    base_versions = [rv for rv, _ in wins]
    assert len(base_versions) == len(set(base_versions)), "two patches won from the same resourceVersion"
    assert all(code == 422 for _, code in losses)
    _, _, final = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    assert len(final["spec"]["allocations"]) == len(wins) > 0


def test_watch_from_a_resource_version_survives_a_restart(kube_api):
    first = created(kube_api, POOLS, pool())
    since = first["metadata"]["resourceVersion"]
    watch = Watch(kube_api, f"{POOLS}?watch=1&resourceVersion={since}")
    created(kube_api, POOLS, pool("10.0.1.0-24"))
    allocate(kube_api, "10.0.0.0-24", "1", first)
    events = watch.wait(2)
    assert [(kind, obj["metadata"]["name"]) for kind, obj in events] == [("ADDED", "10.0.1.0-24"),
                                                                         ("MODIFIED", "10.0.0.0-24")]
    last = events[-1][1]["metadata"]["resourceVersion"]

    kube_api.kill()
    watch.wait(3, timeout=1)
    watch.close()
    kube_api.start()
    assert allocate(kube_api, "10.0.0.0-24", "2", events[-1][1])[0] == 200  # the watched version is current
    kube_api.request("DELETE", f"{POOLS}/10.0.1.0-24")
    again = Watch(kube_api, f"{POOLS}?watch=true&resourceVersion={last}")
    events = again.wait(2)
    again.close()
    assert [kind for kind, _ in events] == ["MODIFIED", "DELETED"]
    assert set(events[0][1]["spec"]["allocations"]) == {"1", "2"}
    assert int(events[1][1]["metadata"]["resourceVersion"]) > int(events[0][1]["metadata"]["resourceVersion"])


def test_watch_without_resource_version_lists_first_and_follows_selectors(kube_api):
    created(kube_api, PODS, {"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}})
    watch = Watch(kube_api, f"{PODS}?watch=1&fieldSelector=spec.nodeName%3Dn1")
    created(kube_api, PODS, {"metadata": {"name": "b"}, "spec": {"nodeName": "n2"}})  # not on n1: unseen
    kube_api.request("DELETE", f"{PODS}/a")
    events = watch.wait(2)
    watch.close()
    assert [(kind, obj["metadata"]["name"]) for kind, obj in events] == [("ADDED", "a"), ("DELETED", "a")]


def test_watch_older_than_the_compaction_is_expired(kube_api, etcd):
    first = created(kube_api, POOLS, pool())
    created(kube_api, POOLS, pool("10.0.1.0-24"))
    _, _, page = kube_api.request("GET", f"{POOLS}?limit=1")
    _, current = allocate(kube_api, "10.0.0.0-24", "1", first)
    etcd.call("kv/compaction", {"revision": current["metadata"]["resourceVersion"], "physical": True})
    watch = Watch(kube_api, f"{POOLS}?watch=1&resourceVersion={first['metadata']['resourceVersion']}")
    events = watch.wait(1)
    watch.close()
    assert len(events) == 1 and events[0][0] == "ERROR"
    assert {k: events[0][1][k] for k in ("code", "reason")} == {"code": 410, "reason": "Expired"}
    code, _, expired = kube_api.request("GET", f"{POOLS}?limit=1&continue={page['metadata']['continue']}")
    assert (code, expired["reason"]) == (410, "Expired")


def test_bearer_tokens_and_rbac(kube_api_factory):
    server = kube_api_factory(tokens={"node-token": "system:node:n1", "admin": "admin"},
                              rbac={"system:node:n1": ["get ippools", "list ippools"]})
    code, _, body = server.request("GET", POOLS, token="")
    assert (code, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    assert server.request("GET", POOLS, token="wrong")[0] == 401
    assert server.request("POST", POOLS, pool(), token="admin")[0] == 201
    assert server.request("GET", f"{POOLS}/10.0.0.0-24", token="node-token")[0] == 200
    code, _, body = server.request("PATCH", f"{POOLS}/10.0.0.0-24", [], token="node-token", content_type=JSON_PATCH)
    assert (code, body["reason"]) == (403, "Forbidden")
    assert body["message"] == (f'ippools.{GROUP} "10.0.0.0-24" is forbidden: User "system:node:n1" cannot patch '
                               f'resource "ippools" in API group "{GROUP}" in the namespace "kube-system"')
    assert server.request("GET", "/_control/faults", token="admin")[0] == 401  # the admin token only
    kept_alive = server.connection()
    assert server.request("POST", POOLS, pool("10.0.1.0-24"), token="wrong", connection=kept_alive)[0] == 401
    assert server.request("GET", POOLS, token="admin", connection=kept_alive)[0] == 200  # the refused body was read
    kept_alive.close()


def test_tls_with_ca_verification_and_client_certificates(kube_api_factory):
    server = kube_api_factory(tls=True, rbac={"cert-user": ["get ippools"]})
    assert server.url.startswith("https://")
    assert server.request("POST", POOLS, pool())[0] == 201
    untrusting = http.client.HTTPSConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=5,
                                             context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.request("GET", POOLS)
    code, _, body = server.request("GET", f"{POOLS}/10.0.0.0-24", token="",
                                   connection=server.connection(client_cert=True))
    assert code == 200 and body["metadata"]["name"] == "10.0.0.0-24"
    code, _, body = server.request("DELETE", f"{POOLS}/10.0.0.0-24", token="",
                                   connection=server.connection(client_cert=True))
    assert code == 403 and 'User "cert-user" cannot delete resource "ippools"' in body["message"]


def test_custom_objects_are_pruned_and_validated_against_the_crd_schema(kube_api):
    code, _, body = kube_api.request("POST", POOLS, {"metadata": {"name": "p"}, "spec": {"allocations": {}}})
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"] == [{"reason": "FieldValueRequired", "message": "Required value",
                                          "field": "spec.range"}]
    assert body["message"] == f'IPPool.{GROUP} "p" is invalid: spec.range: Required value'
    code, _, body = kube_api.request("POST", POOLS, pool("fd00--64") | {"metadata": {"name": "fd00::-64"}})
    assert code == 422 and body["details"]["causes"][0]["field"] == "metadata.name"  # ':' is not in a name
    extra = pool()
    extra["spec"]["unknown"] = 1
    assert "unknown" not in created(kube_api, POOLS, extra)["spec"]
    wrong = [{"op": "add", "path": "/spec/allocations/5", "value": {"id": 7, "podref": "ns/p"}}]
    code, _, body = kube_api.request("PATCH", f"{POOLS}/10.0.0.0-24", wrong, content_type=JSON_PATCH)
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.allocations.5.id"
    reservation = {"metadata": {"name": "10.0.0.5"}, "spec": {"containerid": "c"}}
    code, _, body = kube_api.request("POST", POOLS.replace("ippools", "overlappingrangeipreservations"), reservation)
    assert code == 422 and body["details"]["causes"][0]["field"] == "spec.podref"


def test_injected_faults_and_latency_are_served_and_counted(kube_api):
    base = created(kube_api, POOLS, pool())
    kube_api.faults([{"verbs": ["patch"], "resources": ["ippools"], "status": 429, "retry_after": 3, "count": 2},
                     {"verbs": ["get"], "latency": 0.2}], reset=True)
    for _ in range(2):
        code, headers, body = kube_api.request("PATCH", f"{POOLS}/10.0.0.0-24", [], content_type=JSON_PATCH)
        assert (code, headers["Retry-After"], body["reason"], body["details"]) == \
            (429, "3", "TooManyRequests", {"retryAfterSeconds": 3})
    assert allocate(kube_api, "10.0.0.0-24", "1", base)[0] == 200  # the count is spent
    began = time.monotonic()
    assert kube_api.request("GET", f"{POOLS}/10.0.0.0-24")[0] == 200
    assert time.monotonic() - began >= 0.2
    counters = kube_api.faults()
    assert counters["faults"] == {"0": 2}
    assert counters["requests"]["patch ippools"] == 3 and counters["requests"]["get ippools"] == 1

    kube_api.faults([{"verbs": ["create"], "status": 409}, {"verbs": ["update"], "status": 503},
                     {"verbs": ["patch"], "status": 504, "after": True}, {"verbs": ["delete"], "status": "drop"}])
    code, _, body = kube_api.request("POST", POOLS, pool("10.0.9.0-24"))
    assert (code, body["reason"]) == (409, "AlreadyExists")
    _, _, current = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    assert kube_api.request("PUT", f"{POOLS}/10.0.0.0-24", current)[0] == 503
    code, body = allocate(kube_api, "10.0.0.0-24", "2", current)
    assert (code, body["reason"]) == (504, "Timeout")
    _, _, after = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    assert "2" in after["spec"]["allocations"]  # "after": the write happened, its answer was lost
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        kube_api.request("DELETE", f"{POOLS}/10.0.0.0-24")
    assert kube_api.faults()["faults"] == {"0": 1, "1": 1, "2": 1, "3": 1}


def test_kill_9_and_restart_keep_every_object_and_version(kube_api):
    before = created(kube_api, POOLS, pool())
    _, patched = allocate(kube_api, "10.0.0.0-24", "1", before)
    old_pid = kube_api.pid
    kube_api.kill()
    with pytest.raises(OSError):
        kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    kube_api.start()
    assert kube_api.pid != old_pid
    code, _, after = kube_api.request("GET", f"{POOLS}/10.0.0.0-24")
    assert code == 200 and after == patched
