"""The whereabouts plugin with ``node_slice_size``, on the test API server, beside ``cni-ipam node-slices``.

Each simulated node is a whereabouts.d directory with its own ``nodename``
(tests/integration/test_whereabouts_kube.py ``Node``); the controller runs as
its own process (tests/integration/test_node_slices.py); the plugins are our
installed executables.  Objects are read back over HTTP.  Upstream's side,
read from k8snetworkplumbingwg/whereabouts v0.9.4
(3a262bd0cd873e13d9b379342f8251b852a89b8f): pkg/storage/kubernetes/ipam.go
(``IPPoolName``, ``GetNodeSlicePoolRange``, ``IPManagementKubernetesUpdate``)
and pkg/node-controller/controller.go (``syncHandler``: every slice listed,
``nodeName`` "" when free; it creates no IPPool, the plugin's ``getPool`` does).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import threading

from test_node_slices import NS, WB, add_nad, add_node, api, assigned, controllers, ok, wait_for  # noqa: F401
from test_whereabouts_kube import Node, failed, ips
from test_whereabouts_kube import ok as added


def nodes_on(bin_dir, api, tmp_path, names) -> dict:
    return {name: Node(bin_dir, api, tmp_path / name, name=name) for name in names}


def pool(api, name) -> dict:
    code, _, body = api.request("GET", f"{WB}/ippools/{name}")
    assert code == 200, body
    return body


def reservations(api) -> list:
    listed = ok(api.request("GET", f"{WB}/overlappingrangeipreservations"))["items"]
    return sorted(r["metadata"]["name"] for r in listed)


def held_by(api, name) -> dict:
    """container ID -> address, of a node IPPool (keys are offsets from its spec.range)."""
    body = pool(api, name)
    base = ipaddress.ip_network(body["spec"]["range"]).network_address
    return {v["id"]: str(base + int(k)) for k, v in (body["spec"].get("allocations") or {}).items()}


def pod(cid: str) -> str:
    return f"K8S_POD_NAMESPACE=ns;K8S_POD_NAME={cid}"


def do(node, command, config, cid):
    """One plugin call on ``node`` for container ``cid`` of pod ns/``cid``."""
    return node.run(command, config, cid=cid, args=pod(cid))


def run_all(calls, ways=6) -> list:
    """``calls``: (node, config, cid); at most ``ways`` plugin processes at once; [(node, cid, CNICall)]."""
    results, pending, lock = [], list(calls), threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                node, config, cid = pending.pop()
            call = do(node, "ADD", config, cid)
            with lock:
                results.append((node, cid, call))

    threads = [threading.Thread(target=worker) for _ in range(ways)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_six_nodes_three_busy_each_allocates_only_from_its_own_slice(bin_dir, api, controllers, tmp_path):
    ipam = {"range": "10.60.0.0/24", "node_slice_size": "/27", "network_name": "six", "gateway": "10.60.0.1"}
    add_nad(api, "six", dict(ipam, type="whereabouts"))
    names = [f"n{i}" for i in range(1, 7)]
    for name in names:
        add_node(api, name)
    nodes = nodes_on(bin_dir, api, tmp_path, names)
    controllers("one")
    slices = wait_for(lambda: (lambda a: {n: s for s, n in a.items()} if len(a) == 6 else None)(assigned(api, "six")))
    busy = names[:3]
    calls = [(nodes[n], nodes[n].net(net="six-net", **ipam), f"{n}-p{p}")
             for n in names for p in range(12 if n in busy else 2)]
    results = run_all(calls)
    assert [c for _, _, c in results if not c.ok] == []
    everyone = [ips(call.output)[0] for _, _, call in results]
    assert len(everyone) == len(set(everyone)) == 3 * 12 + 3 * 2  # no duplicates
    for name in names:
        mine = {cid: ips(call.output)[0] for node, cid, call in results if node is nodes[name]}
        network = ipaddress.ip_network(slices[name])
        assert all(ipaddress.ip_address(a) in network for a in mine.values()), (name, slices[name], mine)
        assert held_by(api, f"six-{name}-{slices[name].replace('/', '-')}") == mine  # upstream's IPPoolName
        for call in (c for node, _, c in results if node is nodes[name]):
            assert call.output["ips"][0]["address"].endswith("/24")  # the whole range's prefix, as upstream
    assert "10.60.0.1" not in everyone  # the gateway: never handed out
    assert reservations(api) == sorted(f"six-{a}" for a in everyone)  # the network's address space
    assert not any(name.startswith("10-60") or "six-10-60" in name for name in
                   (p["metadata"]["name"] for p in ok(api.request("GET", f"{WB}/ippools"))["items"]))

    node, config = nodes["n4"], nodes["n4"].net(net="six-net", **ipam)
    assert added(do(node, "DEL", config, "n4-p0")) is None  # DEL frees the address and its reservation
    assert len(reservations(api)) == len(everyone) - 1 and "n4-p0" not in held_by(
        api, f"six-n4-{slices['n4'].replace('/', '-')}")


def test_a_full_slice_is_code_11_naming_the_pool_until_the_controller_gives_a_second(
        bin_dir, api, controllers, tmp_path):
    ipam = {"range": "10.61.0.0/26", "node_slice_size": "/29", "network_name": "small", "gateway": "10.61.0.1"}
    busy = nodes_on(bin_dir, api, tmp_path, ["busy"])["busy"]
    config = busy.net(net="small-net", **ipam)
    msg = failed(do(busy, "ADD", config, "early"), 11)["msg"]  # no controller yet: no NodeSlicePool
    assert "NodeSlicePool kube-system/small does not exist yet" in msg
    add_nad(api, "small", dict(ipam, type="whereabouts"))
    add_node(api, "busy")
    controller = controllers("one")
    wait_for(lambda: assigned(api, "small") == {"10.61.0.0/29": "busy"})
    os.kill(controller.pid, signal.SIGSTOP)  # paused: a full slice stays full until it goes on
    ghost = nodes_on(bin_dir, api, tmp_path, ["ghost"])["ghost"]  # no Node object: no slice
    assert "the node-slice controller has not given node ghost a slice of 10.61.0.0/26 yet" in failed(
        do(ghost, "ADD", ghost.net(net="small-net", **ipam), "g"), 11)["msg"]

    got = [ips(added(do(busy, "ADD", config, f"c{i}")))[0] for i in range(5)]
    assert got == [f"10.61.0.{i}" for i in range(2, 7)]  # .1 is the gateway, .0 and .7 are not usable
    full = failed(do(busy, "ADD", config, "c5"), 11)["msg"]
    assert "node busy's slice(s) of 10.61.0.0/26 are full: IPPool small-busy-10.61.0.0-29 holds all 5" in full
    assert sorted(held_by(api, "small-busy-10.61.0.0-29")) == [f"c{i}" for i in range(5)]  # the failure holds nothing
    os.kill(controller.pid, signal.SIGCONT)
    wait_for(lambda: assigned(api, "small") == {"10.61.0.0/29": "busy", "10.61.0.8/29": "busy"})
    assert ips(added(do(busy, "ADD", config, "c5"))) == ["10.61.0.9"]
    assert ips(added(do(busy, "ADD", config, "c0"))) == ["10.61.0.2"]  # a repeated ADD: the same address
    for i in range(6, 11):
        added(do(busy, "ADD", config, f"c{i}"))
    assert "IPPool small-busy-10.61.0.0-29, small-busy-10.61.0.8-29 holds all 11" in failed(
        do(busy, "ADD", config, "c11"), 11)["msg"]  # --max-slices-per-node 2: no third
    assert added(do(busy, "DEL", config, "c3")) is None
    assert ips(added(do(busy, "ADD", config, "c11"))) == ["10.61.0.5"]  # freed: reused in the first slice


def test_ipv6_with_exclude_and_no_network_name(bin_dir, api, controllers, tmp_path):
    ipam = {"range": "fd00:1::/120", "node_slice_size": "/122", "exclude": ["fd00:1::/122", "fd00:1::80/123"]}
    add_nad(api, "v6", dict(ipam, type="whereabouts"), conf_name="v6net")
    for name in ("a", "b"):
        add_node(api, name)
    nodes = nodes_on(bin_dir, api, tmp_path, ["a", "b"])
    controllers("one")
    wait_for(lambda: assigned(api, "v6net") == {"fd00:1::40/122": "a", "fd00:1::80/122": "b"})
    got = {n: [ips(added(do(nodes[n], "ADD", nodes[n].net(net="v6net", **ipam), f"{n}{i}")))[0]
               for i in range(3)] for n in ("a", "b")}
    assert got == {"a": ["fd00:1::41", "fd00:1::42", "fd00:1::43"],
                   "b": ["fd00:1::a0", "fd00:1::a1", "fd00:1::a2"]}  # b's slice: .80-.9f excluded
    assert sorted(held_by(api, "b-fd00-1--80-122").values()) == got["b"]  # no network_name: <node>-<slice>
    assert reservations(api) == sorted(a.replace(":", "-") for a in got["a"] + got["b"])
    for i in range(3):
        added(do(nodes["b"], "DEL", nodes["b"].net(net="v6net", **ipam), f"b{i}"))
    assert reservations(api) == sorted(a.replace(":", "-") for a in got["a"])


def test_objects_as_upstreams_controller_and_plugin_write_them(bin_dir, api, tmp_path):
    """No controller of ours: the NodeSlicePool as upstream's syncHandler writes it, a node IPPool with an
    allocation of upstream's plugin (no annotation) and its reservation; a node whose IPPool is not there
    yet (upstream's controller creates none)."""
    from cni_ipam.kube.client import KubeClient
    from cni_ipam.kube.kubeconfig import load
    from cni_ipam.store.kubernetes import KubernetesStore

    ok(api.request("POST", f"{WB}/nodeslicepools", {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
        "metadata": {"name": "up", "namespace": NS}, "spec": {"range": "10.62.0.0/24", "sliceSize": "/26"},
        "status": {"allocations": [{"nodeName": "", "sliceRange": "10.62.0.0/26"},
                                   {"nodeName": "kept", "sliceRange": "10.62.0.64/26"},
                                   {"nodeName": "fresh", "sliceRange": "10.62.0.128/26"},
                                   {"nodeName": "", "sliceRange": "10.62.0.192/26"}]}}))
    ok(api.request("POST", f"{WB}/ippools", {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
        "metadata": {"name": "up-kept-10.62.0.64-26", "namespace": NS},
        "spec": {"range": "10.62.0.64/26", "allocations": {"1": {"id": "go1", "podref": "default/go",
                                                                 "ifname": "eth0"}}}}))
    ok(api.request("POST", f"{WB}/overlappingrangeipreservations", {
        "apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": "up-10.62.0.65", "namespace": NS}, "spec": {"podref": "default/go", "ifname": "eth0"}}))
    ipam = {"range": "10.62.0.0/24", "node_slice_size": "/26", "network_name": "up"}
    nodes = nodes_on(bin_dir, api, tmp_path, ["kept", "fresh"])
    assert ips(added(do(nodes["kept"], "ADD", nodes["kept"].net(net="up-net", **ipam), "ours"))) == ["10.62.0.66"]
    assert ips(added(do(nodes["fresh"], "ADD", nodes["fresh"].net(net="up-net", **ipam), "new"))) == [
        "10.62.0.129"]
    assert pool(api, "up-fresh-10.62.0.128-26")["spec"]["range"] == "10.62.0.128/26"  # created as getPool does
    assert held_by(api, "up-kept-10.62.0.64-26") == {"go1": "10.62.0.65", "ours": "10.62.0.66"}

    store = KubernetesStore(KubeClient(load(nodes["kept"].kubeconfig)))  # what the reconciler and verify read
    try:
        spaces = {(a.container_id, a.space) for a in store.allocations()}
        assert spaces == {("go1", "up"), ("ours", "up"), ("new", "up")}  # the network's space, not "up-kept"
        assert store.unbacked_reservations() == []  # upstream's reservation is backed: never deleted
    finally:
        store.close()
    added(do(nodes["kept"], "DEL", nodes["kept"].net(net="up-net", **ipam), "ours"))
    assert reservations(api) == ["up-10.62.0.129", "up-10.62.0.65"]
