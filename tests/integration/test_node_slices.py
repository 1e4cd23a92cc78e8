"""``cni-ipam node-slices`` against the test API server (tests/kubeapi): nodes join and leave, slices follow.

The controller runs as its own process, as in a cluster; the test plays the
nodes (Node objects, and allocations written into their IPPools as a plugin
would) and reads what the controller writes.  Objects and names follow
k8snetworkplumbingwg/whereabouts v0.9.4 (3a262bd0cd873e13d9b379342f8251b852a89b8f)
pkg/node-controller/controller.go and pkg/storage/kubernetes/ipam.go.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import waiting

NS = "kube-system"
WB = f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{NS}"
NADS = "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions"
FAST = ["--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.2", "--resync", "1"]


@pytest.fixture
def api(kube_api, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: t\n  cluster:\n    server: {kube_api.url}\n"
        f"users:\n- name: u\n  user:\n    token: {kube_api.token}\n"
        f"contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\n    namespace: {NS}\n"
        "current-context: t\n")
    kube_api.kubeconfig = str(path)
    return kube_api


@pytest.fixture
def controllers(api, tmp_path):
    """Start controller processes (``start(identity)``); each is killed (by its pid) after the test."""
    started = []

    def start(identity="one", *extra):
        log = open(tmp_path / f"{identity}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "node-slices", "--kubeconfig",
                                    api.kubeconfig, "--namespace", NS, "--identity", identity, *FAST, *extra],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        process.log_path = tmp_path / f"{identity}.log"
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def events(process) -> list:
    return [json.loads(line) for line in process.log_path.read_text().splitlines() if line.startswith("{")]


def ok(answer, *codes):
    code, _, body = answer
    assert code in (codes or (200, 201)), body
    return body


def add_nad(api, name, ipam, conf_name="net"):
    config = {"cniVersion": "0.3.1", "name": conf_name, "type": "macvlan", "master": "eth0", "ipam": ipam}
    return ok(api.request("POST", NADS, {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                                         "metadata": {"name": name}, "spec": {"config": json.dumps(config)}}))


def add_node(api, name):
    ok(api.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))


def remove_node(api, name):
    ok(api.request("DELETE", f"/api/v1/nodes/{name}"))


def node_slice_pool(api, name):
    code, _, body = api.request("GET", f"{WB}/nodeslicepools/{name}")
    return body if code == 200 else None


def assigned(api, name) -> dict:
    pool = node_slice_pool(api, name) or {}
    return {a["sliceRange"]: a["nodeName"] for a in (pool.get("status") or {}).get("allocations", []) if a["nodeName"]}


def wait_for(check, timeout=20.0):
    return waiting.wait_until(check, check.__doc__ or repr(check), timeout)


def hold(api, pool, count, first_offset=1):
    """Write ``count`` allocations into a node IPPool, as that node's plugin would."""
    wait_for(lambda: api.request("GET", f"{WB}/ippools/{pool}")[0] == 200)  # the controller creates it
    allocations = {str(first_offset + i): {"id": f"c{i}", "podref": f"default/p{i}"} for i in range(count)}
    ok(api.request("PATCH", f"{WB}/ippools/{pool}", [{"op": "replace", "path": "/spec/allocations",
                                                      "value": allocations}],
                   content_type="application/json-patch+json"))


def test_six_nodes_join_and_leave(api, controllers):
    add_nad(api, "six", {"type": "whereabouts", "range": "10.10.0.0/24", "node_slice_size": "/27",
                         "network_name": "six"})
    for i in range(1, 7):
        add_node(api, f"n{i}")
    controllers("one")
    want = {f"10.10.0.{32 * (i - 1)}/27": f"n{i}" for i in range(1, 7)}
    wait_for(lambda: assigned(api, "six") == want)
    pool = node_slice_pool(api, "six")
    assert pool["spec"] == {"range": "10.10.0.0/24", "sliceSize": "/27"}
    assert len(pool["status"]["allocations"]) == 8  # every slice listed, as upstream lists them
    assert pool["metadata"]["ownerReferences"][0]["name"] == "six"
    for text, node in want.items():  # each node's IPPool, named as upstream's IPPoolName names it
        path = f"{WB}/ippools/six-{node}-{text.replace('/', '-')}"
        body = wait_for(lambda: api.request("GET", path)[2] if api.request("GET", path)[0] == 200 else None)
        assert body["spec"] == {"range": text, "allocations": {}}

    hold(api, "six-n2-10.10.0.32-27", 3)
    remove_node(api, "n2")
    remove_node(api, "n3")
    wait_for(lambda: "10.10.0.64/27" not in assigned(api, "six"))
    assert assigned(api, "six")["10.10.0.32/27"] == "n2"  # gone, but its pool still holds 3
    add_node(api, "n7")
    wait_for(lambda: assigned(api, "six").get("10.10.0.64/27") == "n7")  # the lowest free slice
    hold(api, "six-n2-10.10.0.32-27", 0)
    wait_for(lambda: "10.10.0.32/27" not in assigned(api, "six"))
    values = list(assigned(api, "six").values())
    assert len(values) == len(set(values)) == 5


def test_a_full_slice_brings_a_second(api, controllers):
    add_nad(api, "small", {"type": "whereabouts", "range": "10.20.0.0/24", "node_slice_size": "/29",
                           "network_name": "small"})
    add_node(api, "busy")
    controllers("one")
    wait_for(lambda: assigned(api, "small") == {"10.20.0.0/29": "busy"})
    hold(api, "small-busy-10.20.0.0-29", 6)  # .1 to .6: every usable address of the /29
    wait_for(lambda: assigned(api, "small") == {"10.20.0.0/29": "busy", "10.20.0.8/29": "busy"})


def test_ipv6_with_exclude_and_without_network_name(api, controllers):
    add_nad(api, "v6", {"type": "whereabouts", "range": "fd00:1::/120", "node_slice_size": "/122",
                        "exclude": ["fd00:1::/122", "fd00:1::80/123"]}, conf_name="v6net")
    for node in ("a", "b", "c"):
        add_node(api, node)
    process = controllers("one")
    # slice 0 is wholly excluded; slice 2 keeps fd00:1::a0-be
    wait_for(lambda: assigned(api, "v6net") == {"fd00:1::40/122": "a", "fd00:1::80/122": "b",
                                                "fd00:1::c0/122": "c"})
    wait_for(lambda: api.request("GET", f"{WB}/ippools/a-fd00-1--40-122")[0] == 200)
    add_node(api, "d")
    wait_for(lambda: any(e["event"] == "no-free-slice" and e["node"] == "d" for e in events(process)))


def test_a_slash8_in_slash27_slices_fits_one_object(api, controllers):
    add_nad(api, "big", {"type": "whereabouts", "range": "10.0.0.0/8", "node_slice_size": "/27",
                         "network_name": "big"})
    nodes = [f"node-{i:02}" for i in range(40)]
    for node in nodes:
        add_node(api, node)
    controllers("one")
    wait_for(lambda: len(assigned(api, "big")) == 40, timeout=60)
    pool = node_slice_pool(api, "big")
    assert len(pool["status"]["allocations"]) == 40  # only assigned slices: 524288 would not fit etcd
    assert pool["status"]["allocations"][0] == {"nodeName": "node-00", "sliceRange": "10.0.0.0/27"}
    assert pool["status"]["allocations"][-1] == {"nodeName": "node-39", "sliceRange": "10.0.4.224/27"}


def micro_time(text: str) -> float:
    """A Lease's MicroTime (RFC 3339 with microseconds) in seconds."""
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_two_controllers_one_leader_and_a_takeover_after_the_lease_expires(api, controllers):
    add_nad(api, "ha", {"type": "whereabouts", "range": "10.30.0.0/24", "node_slice_size": "/26",
                        "network_name": "ha"})
    add_node(api, "first")
    one = controllers("one")
    wait_for(lambda: assigned(api, "ha") == {"10.30.0.0/26": "first"})
    two = controllers("two")
    time.sleep(2)
    lease = ok(api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/cni-ipam-node-slices"))
    assert lease["spec"]["holderIdentity"] == "one" and lease["spec"]["leaseDurationSeconds"] == 2
    assert lease["spec"]["leaseTransitions"] == 0 and lease["spec"]["acquireTime"].endswith("Z")
    add_node(api, "second")
    wait_for(lambda: assigned(api, "ha").get("10.30.0.64/26") == "second")
    written = lambda p: [e for e in events(p) if e["event"] in ("written", "pool-created")]  # noqa: E731
    assert written(one) and not written(two)  # the standby never writes

    last_seen = ok(api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/cni-ipam-node-slices"))
    os.kill(one.pid, signal.SIGKILL)
    one.wait()
    add_node(api, "third")
    wait_for(lambda: assigned(api, "ha").get("10.30.0.128/26") == "third")
    lease = ok(api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/cni-ipam-node-slices"))
    assert lease["spec"]["holderIdentity"] == "two" and lease["spec"]["leaseTransitions"] == 1
    # Not before the lease expired: two acquired it at least leaseDurationSeconds after a renewal of one's
    # that it had seen (the Lease's own times, as client-go's leaderelection judges expiry).
    assert micro_time(lease["spec"]["acquireTime"]) - micro_time(last_seen["spec"]["renewTime"]) >= 2
    assert [e["event"] for e in events(two) if e["event"] in ("leading", "not-leading")] == ["leading"]

    os.kill(two.pid, signal.SIGTERM)  # a clean stop gives the Lease up at once
    two.wait(10)
    lease = ok(api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/cni-ipam-node-slices"))
    assert not lease["spec"].get("holderIdentity")


def test_takes_over_objects_as_upstreams_controller_wrote_them(api, controllers):
    """Hand-built from upstream's syncHandler (every slice listed, "" for free, the NAD as controller owner)
    and getPool (a node's IPPool: spec.range the slice, allocations by offset)."""
    nad = add_nad(api, "up", {"type": "whereabouts", "range": "10.40.0.0/24", "node_slice_size": "/26",
                              "network_name": "up"})
    for node in ("kept", "newcomer"):
        add_node(api, node)
    ok(api.request("POST", f"{WB}/nodeslicepools", {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
        "metadata": {"name": "up", "namespace": NS, "ownerReferences": [{
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "name": "up",
            "uid": nad["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"range": "10.40.0.0/24", "sliceSize": "/26"},
        "status": {"allocations": [{"nodeName": "", "sliceRange": "10.40.0.0/26"},
                                   {"nodeName": "kept", "sliceRange": "10.40.0.64/26"},
                                   {"nodeName": "", "sliceRange": "10.40.0.128/26"},
                                   {"nodeName": "", "sliceRange": "10.40.0.192/26"}]}}))
    # the slice upstream freed at once (removeUnusedNodes) while the departed node's pool still holds addresses
    ok(api.request("POST", f"{WB}/ippools", {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
        "metadata": {"name": "up-departed-10.40.0.0-26", "namespace": NS},
        "spec": {"range": "10.40.0.0/26", "allocations": {"5": {"id": "abc", "podref": "default/p"}}}}))
    controllers("one")
    wait_for(lambda: assigned(api, "up") == {"10.40.0.64/26": "kept", "10.40.0.128/26": "newcomer"})
    pool = node_slice_pool(api, "up")
    assert [a["sliceRange"] for a in pool["status"]["allocations"]] == [
        "10.40.0.0/26", "10.40.0.64/26", "10.40.0.128/26", "10.40.0.192/26"]  # still upstream's shape
    assert pool["metadata"]["ownerReferences"][0]["uid"] == nad["metadata"]["uid"]


def test_the_shipped_rbac_is_enough(kube_api_factory, tmp_path):
    """The controller under exactly deploy/node-slices/rbac.yaml's verbs (the test server's RBAC has no
    namespaces: the union of the Role's and the ClusterRole's)."""
    import pathlib

    import yaml

    shipped = pathlib.Path(__file__).parents[2] / "deploy" / "node-slices" / "rbac.yaml"
    rules = [rule for doc in yaml.safe_load_all(shipped.read_text()) if doc and doc["kind"] in ("Role", "ClusterRole")
             for rule in doc["rules"]]
    allowed = sorted({f"{verb} {resource}" for rule in rules for resource in rule["resources"] for verb in rule["verbs"]})
    user = "system:serviceaccount:cni-ipam:cni-ipam-node-slices"
    server = kube_api_factory(tokens={"admin": "admin", "controller": user}, rbac={user: allowed})
    server.token = "controller"
    path = tmp_path / "kubeconfig"
    path.write_text(f"apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server.url}\n"
                    "users:\n- name: u\n  user:\n    token: controller\ncontexts:\n- name: t\n  context:\n"
                    "    cluster: t\n    user: u\ncurrent-context: t\n")
    server.token = "admin"
    add_nad(server, "r", {"type": "whereabouts", "range": "10.50.0.0/24", "node_slice_size": "/26",
                          "network_name": "r"})
    add_node(server, "n1")
    log = tmp_path / "controller.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "node-slices", "--kubeconfig", str(path),
                                    "--namespace", NS, "--identity", "r", *FAST], stdout=out, stderr=out)
    try:
        wait_for(lambda: assigned(server, "r") == {"10.50.0.0/26": "n1"})
        wait_for(lambda: server.request("GET", f"{WB}/ippools/r-n1-10.50.0.0-26")[0] == 200)
        add_node(server, "n2")
        wait_for(lambda: assigned(server, "r").get("10.50.0.64/26") == "n2")
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)
    assert "Forbidden" not in log.read_text() and "forbidden" not in log.read_text()
