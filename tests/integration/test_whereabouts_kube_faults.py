"""The ``whereabouts`` executables on the Kubernetes store under faults: answers lost after a write
committed, the API server killed (SIGKILL) and restarted, an etcd leader killed, 409/422/429 storms.

What must hold whatever fails (as for the etcd store, tests/integration/test_etcd_faults.py):

* no address is ever held twice, and every ADD that answered with a result
  is in the IPPool with exactly that address (zero lost allocations);
* an ADD that fails does so with code 11 and holds nothing afterwards: no
  pool entry and no OverlappingRangeIPReservation of its container;
* the faults hit the run: the server's fault counters, and kill times that
  fall inside the calls' spans.
"""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest
from kube_nodes import Node, failed, ips, ok, pools, reservations

RANGE = "10.80.0.0/24"
POOL = "10.80.0.0-24"
NODES, PER_NODE = 4, 8


def held(server) -> dict:
    """Container ID -> [addresses] the pool holds for it (read over HTTP until the server answers)."""
    give_up = time.monotonic() + 30
    while True:
        try:
            pool = pools(server).get(POOL)
            break
        except (OSError, TypeError):  # the server is down (killed) just now
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)
    found = {}
    for key, value in ((pool or {}).get("spec", {}).get("allocations") or {}).items():
        found.setdefault(value["id"], []).append(str(ipaddress.ip_address(RANGE.split("/")[0]) + int(key)))
    return found


def reserved_by(server) -> dict:
    """Container ID -> [reservation names] (ours record the container)."""
    found = {}
    for name, spec in reservations(server).items():
        found.setdefault(spec.get("containerid", ""), []).append(name)
    return found


# --- an answer lost after the write committed ---

@pytest.mark.parametrize("verb,resource", [("patch", "ippools"), ("create", "ippools"),
                                           ("create", "overlappingrangeipreservations")])
def test_a_write_whose_answer_is_lost_is_recognised_as_ours(bin_dir, kube_api, tmp_path, verb, resource):
    """The client retries a request whose connection dropped; if the first one committed, the retry meets our
    own write (422 on the pool's ``test``, 409 AlreadyExists): that is ours, not a lost race."""
    node = Node(bin_dir, kube_api, tmp_path / "node")
    config = node.net(range=RANGE)
    if verb == "patch":
        ok(node.run("ADD", config, cid="first", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=first"))
    kube_api.faults([{"verbs": [verb], "resources": [resource], "status": "drop", "after": True, "count": 1}])
    got = ips(ok(node.run("ADD", config, cid="c1")))
    assert kube_api.faults()["faults"] == {"0": 1}
    assert held(kube_api)["c1"] == got  # one address, the one answered
    assert reserved_by(kube_api)["c1"] == got
    assert ok(node.run("DEL", config, cid="c1")) is None
    assert "c1" not in held(kube_api) and "c1" not in reserved_by(kube_api)


def test_a_release_whose_answer_is_lost_frees_the_reservation(bin_dir, kube_api, tmp_path):
    node = Node(bin_dir, kube_api, tmp_path / "node")
    config = node.net(range=RANGE)
    ok(node.run("ADD", config, cid="c1"))
    kube_api.faults([{"verbs": ["patch"], "resources": ["ippools"], "status": "drop", "after": True, "count": 1}])
    assert ok(node.run("DEL", config, cid="c1")) is None
    assert kube_api.faults()["faults"] == {"0": 1}
    assert held(kube_api) == {} and reserved_by(kube_api) == {}


# --- 4 nodes x 8 processes under load while things fail ---

def run_load(bin_dir, server, tmp_path, rounds: int, progress=None) -> tuple:
    """NODES x PER_NODE processes, ``rounds`` ADDs each one after another; ``progress(done)`` after each.

    Returns ({cid: (start, end, CNICall)}, [violations]): right after each failed ADD the pool and the
    reservations are read, and a failure that holds anything is a violation."""
    nodes = [Node(bin_dir, server, tmp_path / f"node{n}", name=f"node-{n}", env={"NODENAME": f"node-{n}"})
             for n in range(NODES)]
    lock, calls, violations = threading.Lock(), {}, []

    def slot(node, p):
        for r in range(rounds):
            cid = f"{node.env['NODENAME']}-p{p}-r{r}"
            start = time.monotonic()
            call = node.run("ADD", node.net(range=RANGE), cid=cid, args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME={cid}")
            end = time.monotonic()
            if not call.ok:
                if call.output.get("code") != 11:
                    violations.append((cid, "failed with a code other than 11", call.output))
                elif cid in held(server) or cid in reserved_by(server):
                    violations.append((cid, "failed but holds", held(server).get(cid), reserved_by(server).get(cid)))
            with lock:
                calls[cid] = (start, end, call)
                done = len(calls)
            if progress:
                progress(done)

    threads = [threading.Thread(target=slot, args=(node, p)) for node in nodes for p in range(PER_NODE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return calls, violations


def assert_outcomes(server, calls: dict, violations: list) -> dict:
    """No address twice; every success in the pool with exactly its address and reservation; failures (code
    11, checked as they failed) hold nothing at the end either.  The successes: cid -> address."""
    assert violations == []
    won = {cid: ips(call.output) for cid, (_, _, call) in calls.items() if call.ok}
    addresses = [a for got in won.values() for a in got]
    assert len(set(addresses)) == len(addresses), "an address was handed out twice"
    assert held(server) == won, "a success is missing from the pool, or a failure holds an address"
    assert {cid: sorted(names) for cid, names in reserved_by(server).items()} == won
    return won


def test_api_server_killed_and_restarted_mid_run(bin_dir, kube_api, tmp_path):
    rounds, events = 3, {}
    total = NODES * PER_NODE * rounds

    def progress(done):
        if done == total // 3:  # a third in: SIGKILL the API server under load, back a second later
            events["killed"] = time.monotonic()
            kube_api.kill()
            time.sleep(1)
            kube_api.start()
            events["restarted"] = time.monotonic()

    calls, violations = run_load(bin_dir, kube_api, tmp_path, rounds, progress)
    assert len(calls) == total and "restarted" in events
    caught = [cid for cid, (start, end, _) in calls.items() if start < events["killed"] and end > events["restarted"]]
    assert caught, "no ADD was under way across the kill"
    won = assert_outcomes(kube_api, calls, violations)
    # The server is back within the client's deadline, and the processes that waited for it all retry at once
    # on a pool they read before: none may give up on races lost to addresses it could not see were taken.
    assert len(won) == total, [call.output for _, _, call in calls.values() if not call.ok][:3]
    print(f"{len(caught)} ADDs across the kill; {len(won)} of {total} succeeded")


def test_etcd_leader_killed_mid_run(bin_dir, healthy, etcd_prefix, tmp_path):
    """On a cluster of the module's own (``fault_cluster``): killing the shared one's leader would disturb
    every other test.  The member is started again and the cluster waited healthy before the checks."""
    from kubeapi import KubeAPIServer

    cluster, rounds, events = healthy, 3, {}
    total = NODES * PER_NODE * rounds
    server = KubeAPIServer(cluster.endpoints, etcd_prefix, str(tmp_path / "kubeapi")).start()
    victim = cluster.leader()

    def progress(done):
        if done == total // 3:
            events["killed"] = time.monotonic()
            cluster.kill(victim)
        elif done == 2 * total // 3:
            events["restarting"] = time.monotonic()
            cluster.start_member(victim)

    try:
        calls, violations = run_load(bin_dir, server, tmp_path, rounds, progress)
        cluster.wait_healthy(30)
        assert len(calls) == total and "restarting" in events
        during = [cid for cid, (start, end, call) in calls.items()
                  if events["killed"] < start and end < events["restarting"] and call.ok]
        assert during, "no ADD ran entirely while the leader was down"
        won = assert_outcomes(server, calls, violations)
        print(f"leader {victim.name} killed: {len(during)} ADDs ran without it; {len(won)} of {total} succeeded")
    finally:
        server.stop()


def test_conflict_throttling_and_lost_answer_storms(bin_dir, kube_api, tmp_path):
    rules = [
        {"verbs": ["patch"], "resources": ["ippools"], "status": 422, "probability": 0.3},
        {"verbs": ["patch"], "resources": ["ippools"], "status": 409, "probability": 0.1},
        {"verbs": ["patch"], "resources": ["ippools"], "status": 429, "retry_after": 0, "probability": 0.1},
        {"verbs": ["create"], "resources": ["overlappingrangeipreservations"], "status": 409, "probability": 0.1},
        {"verbs": ["create"], "resources": ["overlappingrangeipreservations"], "status": 429, "retry_after": 0,
         "probability": 0.1, "text": True},
        {"verbs": ["list"], "resources": ["ippools"], "status": 429, "retry_after": 1, "probability": 0.1},
        {"verbs": ["patch"], "resources": ["ippools"], "status": 504, "after": True, "probability": 0.05},
    ]
    kube_api.faults(rules)
    calls, violations = run_load(bin_dir, kube_api, tmp_path, 2)
    counters = kube_api.faults()
    kube_api.faults([])
    assert all(counters["faults"].get(str(i), 0) > 0 for i in range(len(rules))), counters
    won = assert_outcomes(kube_api, calls, violations)
    assert len(won) >= len(calls) // 2
    print(f"{len(won)} of {len(calls)} succeeded; faults {counters['faults']}")
