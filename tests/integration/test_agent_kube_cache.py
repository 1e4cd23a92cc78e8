"""The node agent reads the IPPools from a copy its LIST+WATCH keeps current (store/kube_cache.py), not one LIST
per ADD, and stays right when the copy lags.

One real ``cni-ipam agent`` per test over the test API server (tests/kubeapi) on the real etcd cluster; the
server's counters say which requests the ADDs took.  Other writers are a plugin run without the agent
(``CNI_IPAM_AGENT_SOCKET=""``, the fallback when the agent is down) and Go-style patches sent over HTTP.  A
lagging watch is made with the server's ``delay_events`` rule (docs/testing-kube-api.md).
"""

from __future__ import annotations

import json
import time

import pytest
from kube_nodes import POOLS, Node, ips, ok, pools, reservations
import waiting

POOL = "10.40.0.0-24"
WATCH_LAGS = {"verbs": ["watch"], "resources": ["ippools"], "delay_events": 3.0}  # events reach the agent 3 s late


@pytest.fixture
def node(bin_dir, kube_api, tmp_path, agent):
    return Node(bin_dir, kube_api, tmp_path / "whereabouts.d", env={"CNI_IPAM_AGENT_SOCKET": agent[0]})


def wait_until(test, what: str):
    return waiting.wait_until(test, what, timeout=20.0)


def watched(kube_api, at_least: int = 1) -> None:
    """Until the agent's IPPool watch request has reached the server (then a moment for its first events)."""
    wait_until(lambda: kube_api.faults()["requests"].get("watch ippools", 0) >= at_least, "the agent watches")
    time.sleep(0.3)


def agent_events(log_path, event: str) -> list:
    return [json.loads(line) for line in log_path.read_text().splitlines() if f'"event": "{event}"' in line]


def warm(node, kube_api, config) -> str:
    """The agent's first ADD (it LISTs, and starts the watch), once the watch is open."""
    first = ips(ok(node.run("ADD", config, cid="first")))[0]
    watched(kube_api)
    return first


def add(node, config, cid: str) -> str:
    return ips(ok(node.run("ADD", config, cid=cid, args=f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME={cid}")))[0]


class _Alone:
    """The same node's plugin without the agent (as when the agent is down)."""

    def __init__(self, node) -> None:
        self.node = node

    def run(self, command, config, **kwargs):
        saved = self.node.env
        self.node.env = dict(saved, CNI_IPAM_AGENT_SOCKET="")
        try:
            return self.node.run(command, config, **kwargs)
        finally:
            self.node.env = saved


def held(kube_api) -> dict:
    """Container ID -> [addresses] the IPPool holds for it."""
    out = {}
    for key, a in pools(kube_api)[POOL]["spec"]["allocations"].items():
        out.setdefault(a["id"], []).append(f"10.40.0.{int(key)}")
    return out


def go_patch(kube_api, keys) -> None:
    """Another writer (upstream's way: test resourceVersion, test the key absent, add) takes ``keys``."""
    for key in keys:
        while True:
            pool = pools(kube_api)[POOL]
            ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": pool["metadata"]["resourceVersion"]},
                   {"op": "test", "path": f"/spec/allocations/{key}", "value": None},
                   {"op": "add", "path": f"/spec/allocations/{key}", "value": {"id": f"go{key}", "podref": "ns/go"}}]
            code, _, _ = kube_api.request("PATCH", f"{POOLS}/{POOL}", ops, content_type="application/json-patch+json")
            if code == 200:
                break


def test_adds_through_a_warm_agent_list_no_ippools_and_take_two_requests_each(node, kube_api, agent):
    config = node.net()
    warm(node, kube_api, config)
    kube_api.faults([], reset=True)
    got = [add(node, config, f"c{n}") for n in range(8)]
    counted = kube_api.faults()["requests"]
    assert got == [f"10.40.0.{n}" for n in range(2, 10)]
    assert "list ippools" not in counted and "get ippools" not in counted, counted
    assert counted == {"create overlappingrangeipreservations": 8, "patch ippools": 8}, counted  # was 3 per ADD
    assert held(kube_api) == {"first": ["10.40.0.1"], **{f"c{n}": [ip] for n, ip in enumerate(got)}}


def test_a_pool_changed_behind_the_agents_back_reaches_it_through_the_watch(node, kube_api, agent):
    config = node.net()
    warm(node, kube_api, config)
    go_patch(kube_api, [str(k) for k in range(2, 7)])
    time.sleep(1.0)  # the watch delivers the changes
    kube_api.faults([], reset=True)
    assert add(node, config, "c1") == "10.40.0.7"
    answered = kube_api.faults()
    assert answered["refused"] == {}, answered  # no claim of an address the copy wrongly showed free
    assert "list ippools" not in answered["requests"] and "get ippools" not in answered["requests"], answered


def behind_its_back(kube_api, key: str) -> None:
    """With the API server down: add allocation ``key`` to the IPPool straight in etcd, then compact etcd past it
    (one more write first), so a watch resuming from before it is answered 410 Expired."""
    from cni_ipam.store.etcd_client import EtcdClient, put

    prefix = kube_api.config["prefix"]
    where = f"{prefix}registry/whereabouts.cni.cncf.io/ippools/kube-system/{POOL}".encode()
    etcd = EtcdClient(kube_api.config["etcd"])
    try:
        obj = json.loads(etcd.get(where)["value"])
        obj["spec"]["allocations"][key] = {"id": f"etcd{key}", "podref": "ns/etcd"}
        etcd.txn([], [put(where, json.dumps(obj).encode())])
        done = etcd.txn([], [put(f"{prefix}compaction-marker".encode(), b"past the change")])
        etcd.call("kv/compaction", {"revision": done["header"]["revision"], "physical": True})
    finally:
        etcd.close()


def test_a_broken_watch_resumes_and_one_answered_410_lists_again(node, kube_api, agent):
    config = node.net()
    warm(node, kube_api, config)
    assert len(agent_events(agent[1], "pool-watch-listed")) == 1

    kube_api.kill()  # the watch breaks; the API server comes back with every object (they are in etcd)
    kube_api.start()
    go_patch(kube_api, ["2"])  # before or after the agent watches again: it resumes from its last version
    watched(kube_api)
    assert add(node, config, "c1") == "10.40.0.3"
    assert kube_api.faults()["refused"] == {}
    assert agent_events(agent[1], "pool-watch-error") and len(agent_events(agent[1], "pool-watch-listed")) == 1

    kube_api.kill()
    behind_its_back(kube_api, "4")  # compacted: no watch can resume from before it
    kube_api.start()
    wait_until(lambda: len(agent_events(agent[1], "pool-watch-listed")) == 2, "the agent lists the pools again")
    assert agent_events(agent[1], "pool-watch-expired")
    watched(kube_api)
    kube_api.faults([], reset=True)
    assert add(node, config, "c2") == "10.40.0.5"  # 4 was seen through the new LIST
    answered = kube_api.faults()
    assert answered["refused"] == {} and "list ippools" not in answered["requests"], answered


def test_an_add_repeated_through_the_agent_returns_what_the_plugin_alone_gave_while_the_watch_lags(
        node, kube_api, agent):
    """The plugin ran without the agent (fallback) and gave c1 an address; the runtime repeats the ADD through
    the agent before its watch delivered that write.  The agent's claim answer shows c1 holds an address: its
    claim is given back and the ADD decided again on a fresh LIST."""
    config = node.net()
    warm(node, kube_api, config)
    kube_api.faults([WATCH_LAGS])
    first = add(_Alone(node), config, "c1")
    assert add(node, config, "c1") == first == "10.40.0.2"
    assert held(kube_api) == {"first": ["10.40.0.1"], "c1": [first]}
    assert sorted(reservations(kube_api)) == ["10.40.0.1", first]  # the claim given back left none
    assert agent_events(agent[1], "call")[-1]["command"] == "ADD"


def test_a_go_writers_allocation_of_the_attachment_is_returned_too(node, kube_api, agent):
    config = node.net()
    warm(node, kube_api, config)
    kube_api.faults([WATCH_LAGS])
    ops = [{"op": "test", "path": "/spec/allocations/7", "value": None},
           {"op": "add", "path": "/spec/allocations/7", "value": {"id": "c1", "podref": "ns/c1", "ifname": "eth0"}}]
    code, _, _ = kube_api.request("PATCH", f"{POOLS}/{POOL}", ops, content_type="application/json-patch+json")
    assert code == 200
    assert add(node, config, "c1") == "10.40.0.7"
    assert held(kube_api) == {"first": ["10.40.0.1"], "c1": ["10.40.0.7"]}


def test_an_add_never_returns_an_address_freed_behind_the_agents_back(node, kube_api, agent):
    """The agent gave c1 an address; a DEL without the agent freed it; the ADD repeated through the agent while
    its copy still shows c1 holding it reads the pool afresh, and allocates anew."""
    config = node.net()
    warm(node, kube_api, config)
    given = add(node, config, "c1")
    kube_api.faults([WATCH_LAGS])
    ok(_Alone(node).run("DEL", config, cid="c1", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c1"))
    assert held(kube_api) == {"first": ["10.40.0.1"]}
    again = add(node, config, "c1")
    assert held(kube_api) == {"first": ["10.40.0.1"], "c1": [again]}, given


def test_a_del_through_the_agent_frees_what_the_plugin_alone_just_gave(node, kube_api, agent):
    config = node.net()
    warm(node, kube_api, config)
    kube_api.faults([WATCH_LAGS])
    add(_Alone(node), config, "c1")
    ok(node.run("DEL", config, cid="c1", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c1"))
    assert held(kube_api) == {"first": ["10.40.0.1"]}
    assert sorted(reservations(kube_api)) == ["10.40.0.1"]


def test_a_check_through_the_agent_reads_the_pools_afresh_not_what_its_store_read_for_an_earlier_call(
        node, kube_api, agent):
    """The agent lends the store of the last ADD to the CHECK; a DEL without the agent freed the address
    meanwhile.  Before, the CHECK read the ADD's pools and passed."""
    config = node.net()
    warm(node, kube_api, config)
    result = ok(node.run("ADD", config, cid="c1", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c1"))
    checked = dict(config, prevResult=result)
    ok(node.run("CHECK", checked, cid="c1", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c1"))
    ok(_Alone(node).run("DEL", config, cid="c1", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c1"))
    refused = node.run("CHECK", checked, cid="c1", args="K8S_POD_NAMESPACE=ns;K8S_POD_NAME=c1")
    assert not refused.ok and "holds no address" in refused.output["msg"], refused


def test_a_race_lost_on_the_reservation_takes_another_address_without_reading_the_pool(node, kube_api, agent):
    """Another node holds 10.40.0.2's reservation and has not patched the pool yet: the agent's claim of it
    is refused (409), and its next candidate comes from the watched copy, not a GET of the pool."""
    from kube_nodes import RESERVATIONS

    from cni_ipam.kube import objects as ko

    config = node.net()
    warm(node, kube_api, config)
    name = ko.reservation_name(0x0A280002, 4, "")
    code, _, body = kube_api.request("POST", RESERVATIONS, ko.reservation_object(name, "kube-system", "ns/other",
                                                                                 "eth0", "other"))
    assert code == 201, body
    kube_api.faults([], reset=True)
    got = add(node, config, "c1")
    answered = kube_api.faults()
    assert got != "10.40.0.2" and held(kube_api)["c1"] == [got]
    assert answered["refused"] == {"create overlappingrangeipreservations": 1}, answered
    assert set(answered["requests"]) == {"create overlappingrangeipreservations", "patch ippools"}, answered
