"""``cni-ipam reconciler`` frees a pod's addresses within seconds of the pod going away, through its pod watch.

Everything is real but the cluster: the ``whereabouts`` executable makes
the allocations (on SQLite and on etcd), the test API server
(tests/kubeapi, docs/testing-kube-api.md) holds the pods and serves the
watch, and the reconciler runs as its own process with the ``kubernetes``
source.  Pods are deleted, finished, marked by the taint manager,
re-created on another node under the same name; the API server is killed
and restarted, and its history compacted away while the reconciler is
cut off.  Each time exactly the right addresses go within 5 seconds
(polled, no fixed sleeps), and the Events the reconciler records are read
back from the server.  What upstream's ``ip-control-loop`` does is the
model (k8snetworkplumbingwg/whereabouts pkg/controlloop/pod.go @ v0.9.4,
3a262bd0cd873e13d9b379342f8251b852a89b8f).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from urllib.request import urlopen

import pytest
import waiting

from cni_ipam_lab.namespaces import cni_env, run_plugin

NODE = "n1"
NAMESPACE = "apps"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
WITHIN = 5.0  # seconds: "freed within seconds"


def wait_until(test, what: str, timeout: float = WITHIN):
    return waiting.wait_until(test, what, timeout)


def kubeconfig(server, path) -> str:
    """A kubeconfig for the test API server: its url, its token and, with TLS, its CA."""
    ca = f"    certificate-authority: {server.ca_file}\n" if server.ca_file else ""
    text = ("apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {server.url}\n{ca}"
            f"users:\n- name: reconciler\n  user:\n    token: {server.token}\n"
            "contexts:\n- name: test\n  context:\n    cluster: test\n    user: reconciler\n"
            "current-context: test\n")
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


def delete_behind_its_back(server, name: str) -> None:
    """With the API server down: delete the pod straight from etcd, then compact etcd past that deletion
    (one more write first: a compaction at the deletion's own revision would leave watching from it legal),
    so a watch resuming from before it is answered 410 Expired."""
    from cni_ipam.store.etcd_client import EtcdClient, delete, put

    prefix = server.config["prefix"]
    etcd = EtcdClient(server.config["etcd"])
    try:
        etcd.txn([], [delete(f"{prefix}registry/pods/{NAMESPACE}/{name}".encode())])
        done = etcd.txn([], [put(f"{prefix}compaction-marker".encode(), b"past the deletion")])
        etcd.call("kv/compaction", {"revision": done["header"]["revision"], "physical": True})
    finally:
        etcd.close()


class Node:
    """One store (through a flat file), the plugin making allocations, and the pods on the API server."""

    def __init__(self, bin_dir, tmp_path, flat: dict, server) -> None:
        self.bin_dir = bin_dir
        self.server = server
        self.flat = str(tmp_path / "whereabouts.conf")
        with open(self.flat, "w") as handle:
            json.dump(flat, handle)

    def add(self, pod: str, node: str = NODE, attempt: str = "") -> str:
        """The plugin's ADD for ``pod`` on ``node`` (interface net1); its address."""
        config = {"cniVersion": "1.0.0", "name": "podnet", "type": "macvlan",
                  "ipam": {"type": "whereabouts", "range": "192.0.2.0/24", "configuration_path": self.flat}}
        env = cni_env("ADD", f"sandbox-{pod}{attempt}", f"/run/netns/{pod}{attempt}", "net1",
                      f"K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={pod}", self.bin_dir, extra={"NODENAME": node})
        call = run_plugin(os.path.join(self.bin_dir, "whereabouts"), env, config)
        assert call.ok, call
        return call.output["ips"][0]["address"].split("/")[0]

    def pod(self, name: str, address: str | None, node: str = NODE) -> dict:
        """Create the pod as Multus leaves it after the ADD: network-status lists eth0 and net1."""
        annotations = {}
        if address is not None:
            annotations["k8s.v1.cni.cncf.io/network-status"] = json.dumps([
                {"name": "k8s-pod-network", "interface": "eth0", "ips": ["10.244.1.7"], "default": True},
                {"name": f"{NAMESPACE}/podnet", "interface": "net1", "ips": [address], "mac": "0a:58:c0:00:02:01"}])
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
                "status": {"phase": "Running"}}
        code, _, created = self.server.request("POST", PODS, body)
        assert code == 201, created
        return created

    def set_status(self, name: str, status: dict) -> None:
        code, _, body = self.server.request("PATCH", f"{PODS}/{name}/status", {"status": status},
                                            content_type="application/merge-patch+json")
        assert code == 200, body

    def delete(self, name: str) -> None:
        code, _, body = self.server.request("DELETE", f"{PODS}/{name}")
        assert code == 200, body

    def held(self) -> dict:
        """address -> the container ID (sandbox) holding it, as the store holds it now."""
        from cni_ipam.config.admin import read_config
        from cni_ipam.config.whereabouts import store_settings
        from cni_ipam.store import open_store

        store = open_store(store_settings(read_config(self.flat)[0]))
        try:
            return {a.address: a.container_id for a in store.allocations()}
        finally:
            store.close()

    def events(self) -> list:
        code, _, body = self.server.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")
        assert code == 200, body
        return body["items"]


class Reconciler:
    """``cni-ipam reconciler`` as a process; its JSON lines are collected as they come."""

    def __init__(self, node: Node, tmp_path) -> None:
        argv = [sys.executable, "-m", "cni_ipam.cli", "reconciler", "--config", node.flat,
                "--kubeconfig", kubeconfig(node.server, tmp_path / "kubeconfig"), "--node", NODE,
                "--schedule-file", str(tmp_path / "no-schedule"), "--metrics-port", "0",
                "--metrics-address", "127.0.0.1"]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self.wait_for(lambda r: r["event"] == "metrics", timeout=30)["port"]
        self.wait_for(lambda r: r["event"] == "pod-watch-listed", timeout=30)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, test, timeout: float = WITHIN, after: int = 0) -> dict:
        def found():
            return next((r for r in self.lines[after:] if test(r)), None)
        return wait_until(found, f"a log line like that; last lines: {self.lines[-5:]}", timeout)

    def records(self, event: str) -> list:
        return [r for r in self.lines if r["event"] == event]

    def metric(self, name: str) -> float:
        text = urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(params=["sqlite", "etcd"])
def flat(request, tmp_path, etcd_cluster, etcd_prefix) -> dict:
    if request.param == "sqlite":
        return {"datastore": "sqlite", "sqlite_path": str(tmp_path / "store" / "whereabouts.db")}
    return {"datastore": "etcd", "etcd_endpoints": etcd_cluster.endpoints, "etcd_prefix": etcd_prefix + "ipam/"}


@pytest.fixture
def node(bin_dir, tmp_path, flat, kube_api) -> Node:
    return Node(bin_dir, tmp_path, flat, kube_api)


@pytest.fixture
def reconciler(node, tmp_path):
    started = []

    def start() -> Reconciler:
        started.append(Reconciler(node, tmp_path))
        return started[-1]
    yield start
    for process in started:
        process.stop()


def test_deleted_finished_and_evicted_pods_lose_their_addresses_within_seconds(node, reconciler):
    addresses = {name: node.add(name) for name in ("gone", "done", "crashed", "evicted", "alive", "plain")}
    uids = {name: node.pod(name, None if name == "plain" else address)["metadata"]["uid"]
            for name, address in addresses.items()}
    running = reconciler()

    node.delete("gone")
    node.set_status("done", {"phase": "Succeeded"})
    node.set_status("crashed", {"phase": "Failed"})
    node.set_status("evicted", {"conditions": [{"type": "DisruptionTarget", "status": "True",
                                                "reason": "DeletionByTaintManager",
                                                "message": "Taint manager: deleting due to NoExecute taint"}]})
    node.delete("plain")  # no network-status: nothing says which address was its own, so the watch keeps out

    freed = {addresses[name] for name in ("gone", "done", "crashed", "evicted")}
    wait_until(lambda: not freed & set(node.held()), f"{sorted(freed)} freed")
    assert set(node.held()) == {addresses["alive"], addresses["plain"]}

    lines = {r["pod"]: r for r in running.records("pod-freed")}
    assert {pod: (r["address"], r["code"], r["ifname"]) for pod, r in lines.items()} == {
        "apps/gone": (addresses["gone"], "pod-gone", "net1"),
        "apps/done": (addresses["done"], "pod-finished", "net1"),
        "apps/crashed": (addresses["crashed"], "pod-finished", "net1"),
        "apps/evicted": (addresses["evicted"], "pod-taint-deleted", "net1")}
    assert all(r["container_id"] == f"sandbox-{r['pod'][5:]}" for r in lines.values())

    events = wait_until(lambda: len(node.events()) == 4 and node.events(), "four Events")
    assert sorted((e["involvedObject"]["name"], e["involvedObject"]["uid"], e["reason"], e["type"], e["message"])
                  for e in events) == sorted(
        (name, uids[name], "IPAddressGarbageCollected", "Normal",
         f"successful cleanup of IP address [{addresses[name]}] from network podnet")
        for name in ("gone", "done", "crashed", "evicted"))
    assert running.metric("cni_ipam_reconciler_pod_watch_freed_addresses_total") == 4
    assert running.metric("cni_ipam_reconciler_pod_watch_free_failures_total") == 0


def test_a_statefulset_pod_recreated_on_another_node_keeps_its_new_address(node, reconciler):
    """web-0 is deleted and freed; the StatefulSet controller makes it again on node n2, where it may well get
    the same address.  Later events of this node (another pod going) must leave the successor's alone.
    (The successor's ADD coming before the watch freed the old address is
    test_a_successor_that_took_the_address_over_unseen_keeps_it.)"""
    old = node.add("web-0")
    node.pod("web-0", old)
    node.pod("other", node.add("other"))
    running = reconciler()

    node.delete("web-0")
    running.wait_for(lambda r: r["event"] == "pod-freed" and r["pod"] == "apps/web-0")
    assert old not in node.held()
    new = node.add("web-0", node="n2", attempt="-2")
    node.pod("web-0", new, node="n2")
    node.set_status("other", {"phase": "Failed"})

    running.wait_for(lambda r: r["event"] == "pod-freed" and r["pod"] == "apps/other")
    assert node.held() == {new: "sandbox-web-0-2"}
    assert [r["container_id"] for r in running.records("pod-freed")] == ["sandbox-web-0", "sandbox-other"]


def test_a_successor_that_took_the_address_over_unseen_keeps_it(node, reconciler):
    """Adversarial order: the old web-0 is deleted while the reconciler is cut off, its successor's ADD (on
    n2) takes the address over, and the watch, once back, learns of the deletion only by listing again
    (410 after a compaction).  The record still says node n1 and the old pod's network-status lists the
    address on net1, but the sandbox holding it is not the one the old pod had: it stays."""
    address = node.add("web-0")
    node.pod("web-0", address)
    running = reconciler()

    node.server.kill()
    delete_behind_its_back(node.server, "web-0")
    assert node.add("web-0", node="n2", attempt="-2") == address  # taken over: same address, new sandbox
    node.server.start()
    node.pod("web-0", None, node="n2")  # Multus has not written its network-status yet

    kept = running.wait_for(lambda r: r["event"] == "pod-kept", timeout=35)
    assert (kept["address"], kept["code"], kept["container_id"]) == (address, "successor-may-hold",
                                                                     "sandbox-web-0-2")
    assert running.records("pod-freed") == []
    assert node.held() == {address: "sandbox-web-0-2"}


@pytest.mark.parametrize("flat", ["etcd"], indirect=True)
def test_a_broken_watch_misses_nothing(bin_dir, tmp_path, flat, kube_api_factory):
    """Over TLS: the API server killed with SIGKILL and restarted (the watch resumes from its
    resourceVersion), then killed, a pod deleted behind its back and etcd compacted past the reconciler's
    version (its watch is answered 410 Expired, it lists again and finds the pod gone)."""
    server = kube_api_factory(tls=True)
    node = Node(bin_dir, tmp_path, flat, server)
    addresses = {name: node.add(name) for name in ("a", "b", "c")}
    for name, address in addresses.items():
        node.pod(name, address)
    running = Reconciler(node, tmp_path)
    try:
        server.kill()
        running.wait_for(lambda r: r["event"] == "pod-watch-error")
        server.start()
        node.delete("a")
        wait_until(lambda: addresses["a"] not in node.held(), "a freed after the restart")

        server.kill()
        delete_behind_its_back(server, "b")
        server.start()
        running.wait_for(lambda r: r["event"] == "pod-watch-expired", timeout=35)
        listed = running.wait_for(lambda r: r["event"] == "pod-watch-listed" and r["missed"])
        assert listed["missed"] == ["apps/b"]
        wait_until(lambda: addresses["b"] not in node.held(), "b, deleted unseen, freed after the relist")
        assert set(node.held()) == {addresses["c"]}
        assert running.metric("cni_ipam_reconciler_pod_watch_relists_total") == 1
        assert running.metric("cni_ipam_reconciler_pod_watch_errors_total") >= 1
    finally:
        running.stop()
