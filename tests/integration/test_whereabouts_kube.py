"""The ``whereabouts`` executables on the Kubernetes store, against the test API server (tests/kubeapi).

Objects are read back over HTTP, not through our store, and pools "written
by Go whereabouts" are built by hand from upstream's documented shapes
(k8snetworkplumbingwg/whereabouts v0.9.4, 3a262bd0cd873e13d9b379342f8251b852a89b8f:
doc/crds/*.yaml, pkg/storage/kubernetes/ipam.go, pkg/iphelpers/iphelpers.go).
The flat file is OpenShift's, exactly as the cluster-network-operator writes
it (bindata/network/multus/multus.yaml @ 2a6a57fef3ac1c8fde00e85b603e9f73ef29b75c).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time

import pytest
from kube_nodes import POOLS, RESERVATIONS, Node, failed, ips, ok, pools, reservations

@pytest.fixture
def tls_api(kube_api_factory):
    return kube_api_factory(tls=True)


@pytest.fixture
def node(bin_dir, tls_api, tmp_path):
    return Node(bin_dir, tls_api, tmp_path / "whereabouts.d")


# --- the CNI commands ---

def test_add_check_del_through_the_cno_flat_file_over_tls(node, tls_api):
    config = node.net()
    first = ok(node.run("ADD", config))
    assert ips(first) == ["10.40.0.1"]
    assert ok(node.run("ADD", config)) == first  # a repeated ADD: the same address
    pool = pools(tls_api)["10.40.0.0-24"]
    assert pool["spec"] == {"range": "10.40.0.0/24", "allocations": {"1": {"id": "c1", "podref": "ns/pod",
                                                                            "ifname": "eth0"}}}
    assert list(pool["metadata"]["annotations"]) == ["cni-ipam.io/a.1"]  # one annotation per allocation key
    extra = json.loads(pool["metadata"]["annotations"]["cni-ipam.io/a.1"])
    assert extra[:5] == ["c1", "eth0", "kube-net", 1, "node-a"]  # the node from the nodename file
    assert reservations(tls_api) == {"10.40.0.1": {"podref": "ns/pod", "ifname": "eth0", "containerid": "c1"}}
    assert ok(node.run("CHECK", dict(config, prevResult=first))) is None
    assert ok(node.run("DEL", config)) is None
    assert ok(node.run("DEL", config)) is None  # nothing held is fine
    assert pools(tls_api)["10.40.0.0-24"]["spec"]["allocations"] == {} and reservations(tls_api) == {}
    assert pools(tls_api)["10.40.0.0-24"]["metadata"]["annotations"] == {}  # removed with its key
    failed(node.run("CHECK", dict(config, prevResult=first)), 7)


def test_requested_addresses_gc_and_status(node, tls_api):
    config = node.net(version="1.1.0")
    assert ips(ok(node.run("ADD", config, cid="a", args="IP=10.40.0.77"))) == ["10.40.0.77"]
    with_ips = dict(config, runtimeConfig={"ips": ["10.40.0.78"]})
    assert ips(ok(node.run("ADD", with_ips, cid="b", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=b"))) == ["10.40.0.78"]
    failed(node.run("ADD", config, cid="c", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c;IP=10.40.0.77"), 101)
    assert sorted(pools(tls_api)["10.40.0.0-24"]["spec"]["allocations"]) == ["77", "78"]  # the failure holds nothing
    assert ok(node.run("STATUS", config)) is None
    gc = dict(config, **{"cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]})
    assert ok(node.run("GC", gc)) is None
    assert sorted(pools(tls_api)["10.40.0.0-24"]["spec"]["allocations"]) == ["78"]
    assert list(reservations(tls_api)) == ["10.40.0.78"]


def test_a_second_range_that_fails_gives_back_the_first(node, tls_api):
    config = node.net(ipRanges=[{"range": "10.41.0.0/30"}, {"range": "fd00:41::/120"}])
    config["ipam"].pop("range")
    ok(node.run("ADD", config, cid="a"))
    failed(node.run("ADD", config, cid="b", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=b;IP=10.41.0.2,fd00:41::1"), 101)  # the v6 address is a's
    held = {n: sorted(p["spec"]["allocations"]) for n, p in pools(tls_api).items()}
    assert held == {"10.41.0.0-30": ["1"], "fd00-41---120": ["1"]}
    assert sorted(reservations(tls_api)) == ["10.41.0.1", "fd00-41--1"]


def test_an_offset_go_cannot_read_is_a_config_error(node, tls_api):
    config = node.net(range="fd00:42::/64", range_start="fd00:42:0:0:8000::")
    error = failed(node.run("ADD", config), 7)
    assert "2^63" in error["msg"] and "range_end" in error["msg"]
    assert pools(tls_api) == {} and reservations(tls_api) == {}


# --- written by Go whereabouts ---

GO_POOLS = [  # (name, range, allocations) as Go whereabouts writes them
    ("10.50.0.0-28", "10.50.0.0/28", {"1": {"id": "go1", "podref": "ns/go1", "ifname": "eth0"},
                                      "2": {"id": "go2", "podref": "ns/go2"}, "05": {"id": "go5", "podref": "ns/go5"}}),
    ("fd00-50---124", "fd00:50::/124", {"1": {"id": "go6", "podref": "ns/go6", "ifname": "net1"}}),
    ("blue-10.60.0.0-29", "10.60.0.0/29", {"1": {"id": "gob", "podref": "ns/gob"},
                                           "garbage": {"id": "gox", "podref": "ns/gox"}}),
]


def plant_go_pools(server):
    for name, cidr, allocations in GO_POOLS:
        code, _, body = server.request("POST", POOLS, {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
                                                       "kind": "IPPool", "metadata": {"name": name},
                                                       "spec": {"range": cidr, "allocations": allocations}})
        assert code == 201, body
    for name, podref in (("10.50.0.1", "ns/go1"), ("blue-10.60.0.1", "ns/gob")):
        code, _, body = server.request("POST", RESERVATIONS, {
            "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
            "metadata": {"name": name}, "spec": {"podref": podref, "ifname": "eth0"}})
        assert code == 201, body


def test_pools_written_by_go_whereabouts_are_read_and_never_handed_out(node, tls_api):
    plant_go_pools(tls_api)
    v4 = node.net(range="10.50.0.0/28")
    got = [ips(ok(node.run("ADD", v4, cid=f"v4-{n}", args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=v4-{n}")))[0]
           for n in range(3)]
    assert got == ["10.50.0.3", "10.50.0.4", "10.50.0.6"]  # 1, 2 and 5 ("05") are Go's
    v6 = node.net(range="fd00:50::/124")
    assert ips(ok(node.run("ADD", v6, cid="v6"))) == ["fd00:50::2"]
    blue = node.net(range="10.60.0.0/29", network_name="blue")
    got = [ips(ok(node.run("ADD", blue, cid=f"b{n}", args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=b{n}")))[0]
           for n in range(5)]
    assert "10.60.0.1" not in got and len(set(got)) == 5  # .1 is Go's; the "garbage" key holds nothing we can name
    failed(node.run("ADD", blue, cid="b-full", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=b-full"), 102)
    allocations = pools(tls_api)["10.50.0.0-28"]["spec"]["allocations"]
    assert {k: v["id"] for k, v in allocations.items()} == {"1": "go1", "2": "go2", "05": "go5", "3": "v4-0",
                                                            "4": "v4-1", "6": "v4-2"}
    # a DEL for a container Go allocated (upstream matches by container ID and ifname alone)
    assert ok(node.run("DEL", v4, cid="go1")) is None
    assert "1" not in pools(tls_api)["10.50.0.0-28"]["spec"]["allocations"]
    assert "10.50.0.1" not in reservations(tls_api) and "blue-10.60.0.1" in reservations(tls_api)


# --- refusals and outages ---

def test_401_and_403_name_the_service_account_and_the_verb(bin_dir, kube_api_factory, tmp_path):
    user = "system:serviceaccount:kube-system:whereabouts-readonly"
    server = kube_api_factory(tokens={"good": user}, rbac={user: ["get ippools", "list ippools"]})
    wrong = Node(bin_dir, server, tmp_path / "wrong", token="not-a-token")
    error = failed(wrong.run("ADD", wrong.net()), 5)
    assert "Unauthorized" in error["msg"] and "kubeconfig" in error["msg"] and "list ippools" in error["msg"]
    jwt_payload = json.dumps({"sub": user}).encode()
    import base64

    token = "e30." + base64.urlsafe_b64encode(jwt_payload).decode().rstrip("=") + ".sig"
    server.config["tokens"][token] = user
    server.restart()
    limited = Node(bin_dir, server, tmp_path / "limited", token=token)
    error = failed(limited.run("ADD", limited.net()), 5)
    assert user in error["msg"] and "create" in error["msg"] and "forbidden" in error["msg"]


def test_api_down_is_code_11_within_the_deadline(node, tls_api):
    config = node.net()
    config["ipam"]["kubernetes"] = {"timeout": 1}
    tls_api.kill()
    start = time.monotonic()
    error = failed(node.run("ADD", config), 11)
    assert time.monotonic() - start < 20
    assert "did not" in error["msg"] and tls_api.url in error["msg"]
    tls_api.start()
    assert ips(ok(node.run("ADD", config))) == ["10.40.0.1"]


# --- many nodes at once ---

NODES, PER_NODE = 4, 8


def add_everywhere(bin_dir, server, tmp_path, config_of) -> list:
    """NODES x PER_NODE plugin processes at once, one ADD each: (node, cid, CNICall)."""
    nodes = [Node(bin_dir, server, tmp_path / f"node{n}", name=f"node-{n}") for n in range(NODES)]
    results, barrier = [], threading.Barrier(NODES * PER_NODE)

    def one(node, cid):
        barrier.wait()
        results.append((node, cid, node.run("ADD", config_of(node), cid=cid,
                                            args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME={cid}")))

    threads = [threading.Thread(target=one, args=(node, f"n{n}-p{p}"))
               for n, node in enumerate(nodes) for p in range(PER_NODE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_consistent(server, results) -> list:
    """Every successful ADD holds its own address in the pool; failures hold nothing; no duplicates."""
    won = {cid: ips(call.output)[0] for _, cid, call in results if call.ok}
    for _, cid, call in results:
        if not call.ok:
            assert call.output["code"] == 11, call
    assert len(set(won.values())) == len(won)
    allocations = pools(server)["10.70.0.0-24"]["spec"]["allocations"]
    held = {v["id"]: str(ipaddress.ip_address("10.70.0.0") + int(k)) for k, v in allocations.items()}
    assert held == won
    assert sorted(reservations(server)) == sorted(won.values())
    return list(won)


def test_four_nodes_of_eight_processes_on_one_pool(bin_dir, kube_api, tmp_path):
    results = add_everywhere(bin_dir, kube_api, tmp_path, lambda node: node.net(range="10.70.0.0/24"))
    assert len(assert_consistent(kube_api, results)) == NODES * PER_NODE


def test_conflict_and_throttling_storms_hand_out_no_duplicates(bin_dir, kube_api, tmp_path):
    kube_api.faults([
        {"verbs": ["patch"], "resources": ["ippools"], "status": 422, "probability": 0.3},
        # 32 ADDs make about 32 reservation creates: at 0.1, one run in twenty would see none (0.9**32)
        {"verbs": ["create"], "resources": ["overlappingrangeipreservations"], "status": 409, "probability": 0.3},
        {"verbs": ["list"], "resources": ["ippools"], "status": 429, "retry_after": 1, "count": 3},  # the first
        # lists: a pool is listed once per command, so a 10% chance could miss every one of them
    ])
    results = add_everywhere(bin_dir, kube_api, tmp_path, lambda node: node.net(range="10.70.0.0/24"))
    counters = kube_api.faults()
    assert all(counters["faults"].get(str(i), 0) > 0 for i in range(3)), counters
    assert_consistent(kube_api, results)
    assert sum(call.ok for _, _, call in results) >= NODES * PER_NODE // 2
