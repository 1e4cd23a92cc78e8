"""The node agent on the Kubernetes store: concurrent ADDs of one pool are written together, and lose nothing.

One real ``cni-ipam agent`` process per test (the plugin processes reach it
through ``CNI_IPAM_AGENT_SOCKET``), over the test API server (tests/kubeapi)
on the real etcd cluster.  The server's counters say how many pool patches
the ADDs took; objects are read back over HTTP, not through our store.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kube_nodes import POOLS, Node, ips, ok, pools, reservations

ADDS = 16
SLOW_PATCH = {"verbs": ["patch"], "resources": ["ippools"], "latency": 0.25}  # a write takes a while: claims queue


@pytest.fixture
def node(bin_dir, kube_api, tmp_path, agent):
    return Node(bin_dir, kube_api, tmp_path / "whereabouts.d", env={"CNI_IPAM_AGENT_SOCKET": agent[0]})


def agent_adds(log_path, expected: int) -> int:
    """ADD lines in the agent's log, once there are ``expected`` (the agent logs a call after it answers it)."""
    for _ in range(100):
        found = sum(1 for line in log_path.read_text().splitlines() if '"event": "call"' in line and '"ADD"' in line)
        if found >= expected:
            return found
        time.sleep(0.1)
    return found


def concurrent_adds(node, config) -> dict:
    """``ADDS`` ADDs at once, each its own pod; container ID -> its address."""
    def add(n: int):
        cid = f"c{n:02d}"
        return cid, ips(ok(node.run("ADD", config, cid=cid, args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p{n}")))[0]

    with ThreadPoolExecutor(ADDS) as pool:
        return dict(pool.map(add, range(ADDS)))


def held(server, name="10.40.0.0-24") -> dict:
    """Container ID -> address, as the IPPool holds them."""
    return {a["id"]: f"10.40.0.{int(k)}" for k, a in pools(server)[name]["spec"]["allocations"].items()}


def test_concurrent_adds_through_the_agent_get_distinct_addresses_in_fewer_patches_than_adds(node, kube_api, agent):
    config = node.net()
    ok(node.run("ADD", config, cid="first"))  # the pool exists (created by its first claim) and the agent is warm
    kube_api.faults([SLOW_PATCH], reset=True)
    got = concurrent_adds(node, config)
    counted = kube_api.faults()["requests"]
    assert len(set(got.values())) == ADDS and "10.40.0.1" not in got.values()
    assert {cid: ip for cid, ip in held(kube_api).items() if cid != "first"} == got  # each one's, in the pool
    assert sorted(reservations(kube_api)) == sorted(["10.40.0.1", *got.values()])
    assert agent_adds(agent[1], ADDS + 1) == ADDS + 1  # every call went through the agent
    assert counted.get("patch ippools", 0) < ADDS, counted  # claims that came at once went out in one patch
    assert "create ippools" not in counted


def test_a_conflict_and_a_lost_answer_mid_batch_lose_nothing(node, kube_api, agent):
    """Injected: one patch committed whose answer is a 500 (the client sends it again: 422 on the changed pool),
    one 409; and a Go writer adding allocations to the pool while the ADDs run (real conflicts)."""
    config = node.net()
    ok(node.run("ADD", config, cid="first"))
    kube_api.faults([SLOW_PATCH, {"verbs": ["patch"], "resources": ["ippools"], "status": 500, "after": True,
                                  "count": 1},
                     {"verbs": ["patch"], "resources": ["ippools"], "status": 409, "count": 1}], reset=True)
    go_keys = [str(k) for k in range(2, 12)]  # the lowest free addresses: the ones our ADDs want first
    stop = threading.Event()

    def go_writer():
        """Upstream's Update: test resourceVersion, test the key is absent, add; read again on 422."""
        for key in go_keys:
            while not stop.is_set():
                pool = pools(kube_api)["10.40.0.0-24"]
                if key in pool["spec"]["allocations"]:
                    break
                ops = [{"op": "test", "path": "/metadata/resourceVersion",
                        "value": pool["metadata"]["resourceVersion"]},
                       {"op": "test", "path": f"/spec/allocations/{key}", "value": None},
                       {"op": "add", "path": f"/spec/allocations/{key}", "value": {"id": f"go{key}", "podref": "ns/go"}}]
                code, _, _ = kube_api.request("PATCH", f"{POOLS}/10.40.0.0-24", ops,
                                              content_type="application/json-patch+json")
                if code == 200:
                    break
            time.sleep(0.05)

    writer = threading.Thread(target=go_writer)
    writer.start()
    try:
        got = concurrent_adds(node, config)
    finally:
        stop.set()
        writer.join(60)
    counted = kube_api.faults()
    assert counted["faults"].get("1") == 1 and counted["faults"].get("2") == 1, counted  # both faults hit
    assert len(set(got.values())) == ADDS
    pool = held(kube_api)
    assert {cid: ip for cid, ip in pool.items() if cid.startswith("c")} == got  # every ADD's address is its own
    go = {cid for cid in pool if cid.startswith("go")}
    assert go <= {f"go{k}" for k in go_keys} and not set(got.values()) & {pool[cid] for cid in go}
    assert len(pool) == ADDS + 1 + len(go)
    assert sorted(reservations(kube_api)) == sorted(["10.40.0.1", *got.values()])  # none left by a lost claim


def test_adds_whose_patch_fails_hold_nothing_and_the_pool_is_not_left_wedged(node, kube_api, agent):
    """Every pool patch answered 503 until the client's deadline (10 s): each ADD of the batch fails with a
    retryable error and gives its reservation back; once the server answers again, ADDs go through."""
    from kube_nodes import failed

    config = node.net()
    ok(node.run("ADD", config, cid="first"))
    kube_api.faults([SLOW_PATCH, {"verbs": ["patch"], "resources": ["ippools"], "status": 503}], reset=True)

    def add(n: int):
        return node.run("ADD", config, cid=f"f{n}", args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=f{n}")

    with ThreadPoolExecutor(4) as pool:
        calls = list(pool.map(add, range(4)))
    for call in calls:
        assert "did not patch ippools" in failed(call, 11)["msg"]
    assert held(kube_api) == {"first": "10.40.0.1"} and list(reservations(kube_api)) == ["10.40.0.1"]
    kube_api.faults([], reset=True)
    assert ips(ok(add(9))) == ["10.40.0.2"]


def test_agents_of_two_nodes_adding_at_once_spread_out_after_their_first_lost_races(bin_dir, kube_api, tmp_path, agent):
    """Two nodes' agents, 4 ADDs at once each, into one pool.  Taking the lowest free address every time, both
    claim the same addresses, and about every ADD of one node loses a reservation create to the other's; once
    an agent has lost a race it claims from a stretch of its own (cni_ipam.allocator.Contention), so only the
    first races are lost.  Every address is still its own ADD's, once."""
    from agent_process import start_agent

    other_socket = str(tmp_path / "agent-b.sock")
    other = start_agent(other_socket, tmp_path / "agent-b.log")
    try:
        nodes = [Node(bin_dir, kube_api, tmp_path / name, name=name, env={"CNI_IPAM_AGENT_SOCKET": socket_path})
                 for name, socket_path in (("node-a", agent[0]), ("node-b", other_socket))]
        for n, node in enumerate(nodes):
            ok(node.run("ADD", node.net(), cid=f"first{n}"))  # the pool exists, both agents are warm
        kube_api.faults([{"verbs": ["create", "patch"], "latency": 0.02}], reset=True)  # writes overlap
        per_node = 40

        def add(item):
            n, i = item
            cid = f"n{n}c{i:02d}"
            got = ok(nodes[n].run("ADD", nodes[n].net(), cid=cid, args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME={cid}"))
            return cid, ips(got)[0]

        with ThreadPoolExecutor(8) as pool:
            got = dict(pool.map(add, [(n, i) for i in range(per_node) for n in (0, 1)]))
    finally:
        other.terminate()
        other.wait(10)
    refused = kube_api.faults()["refused"].get("create overlappingrangeipreservations", 0)
    assert len(set(got.values())) == len(got) == 2 * per_node
    assert {cid: ip for cid, ip in held(kube_api).items() if not cid.startswith("first")} == got
    assert refused <= per_node // 2, refused  # measured 2-5; lowest free first on both nodes: 49
