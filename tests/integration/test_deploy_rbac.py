"""The shipped RBAC is enough: the reconciler and the plugins under exactly the verbs ``deploy/`` grants.

The test API server (tests/kubeapi) refuses any ``verb resource`` a user's
rules do not list (403, as kube-apiserver's RBAC authorizer; its rules have
no namespaces, so a Role counts as cluster-wide here).  Two accounts, as in
the plain set with ``deploy/kubernetes-store/`` applied:

* the installer's, whose token the node's kubeconfig holds: every store
  call of the plugins and of the reconciler goes through that kubeconfig,
  under ``deploy/kubernetes-store/rbac.yaml``'s Role;
* the reconciler's own, under ``deploy/reconciler.yaml``'s ClusterRole: its
  ``kubernetes`` liveness source (list, get pods), its pod watch (list,
  watch pods; get before freeing) and the Events it records (create).

Render emits the reconciler's ClusterRole from the same rules
(tests/unit/test_deploy_render.py checks they are equal).  The node-slice
controller's RBAC has its own such test in test_node_slices.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import yaml
from kubeapi.kubeconfig import write_kubeconfig
import waiting

from cni_ipam_lab.namespaces import cni_env, run_plugin

DEPLOY = pathlib.Path(__file__).parents[2] / "deploy"
NAMESPACE = "apps"
STORE_NAMESPACE = "cni-ipam"
NODE = "n1"
INSTALLER = "system:serviceaccount:cni-ipam:cni-ipam-installer"
RECONCILER = "system:serviceaccount:cni-ipam:whereabouts-reconciler"


def granted(path: pathlib.Path) -> list:
    """The ``verb resource`` pairs the Roles and ClusterRoles of a shipped file grant."""
    rules = [rule for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] in ("Role", "ClusterRole")
             for rule in doc["rules"]]
    return sorted({f"{verb} {resource}" for rule in rules for resource in rule["resources"] for verb in rule["verbs"]})


def wait_until(test, what: str, timeout: float = 10.0):
    return waiting.wait_until(test, what, timeout)


class Cluster:
    """The API server with the two accounts, a node's whereabouts.d (flat file, kubeconfig, nodename)."""

    def __init__(self, server, bin_dir, tmp_path) -> None:
        self.server, self.bin_dir = server, bin_dir
        node_dir = tmp_path / "whereabouts.d"
        node_dir.mkdir()
        kubeconfig = write_kubeconfig(server, str(node_dir / "whereabouts.kubeconfig"), token="installer",
                                      namespace=STORE_NAMESPACE)
        self.flat = str(node_dir / "whereabouts.conf")
        with open(self.flat, "w") as out:
            json.dump({"datastore": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig},
                       "configuration_path": str(node_dir)}, out)
        (node_dir / "nodename").write_text(NODE + "\n")
        self.reconciler_kubeconfig = write_kubeconfig(server, str(tmp_path / "reconciler.kubeconfig"),
                                                      token="reconciler")

    def add(self, pod: str) -> str:
        config = {"cniVersion": "1.0.0", "name": "podnet", "type": "macvlan",
                  "ipam": {"type": "whereabouts", "range": "192.0.2.0/24", "configuration_path": self.flat}}
        env = cni_env("ADD", f"sandbox-{pod}", f"/run/netns/{pod}", "net1",
                      f"K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={pod}", self.bin_dir)
        call = run_plugin(os.path.join(self.bin_dir, "whereabouts"), env, config, timeout=120)
        assert call.ok, call
        return call.output["ips"][0]["address"].split("/")[0]

    def pod(self, name: str, address: str) -> None:
        """The pod as Multus leaves it after the ADD: network-status lists its address on net1."""
        status = [{"name": f"{NAMESPACE}/podnet", "interface": "net1", "ips": [address]}]
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "annotations": {"k8s.v1.cni.cncf.io/network-status": json.dumps(status)}},
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
                "status": {"phase": "Running"}}
        code, _, created = self.server.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)
        assert code == 201, created

    def held(self) -> set:
        """The addresses allocated now, read from the IPPools as the admin."""
        code, _, body = self.server.request("GET", f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/"
                                                   f"{STORE_NAMESPACE}/ippools")
        assert code == 200, body
        return {str(int(offset)) for pool in body["items"] for offset in pool["spec"].get("allocations", {})}

    def reconcile_once(self, kubeconfig=None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--once", "--config", self.flat, "--source",
                "kubernetes", "--kubeconfig", kubeconfig or self.reconciler_kubeconfig, "--node", NODE,
                "--grace", "0"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def offset(address: str) -> str:
    return address.rsplit(".", 1)[1]


def test_the_shipped_rbac_is_enough_for_the_reconciler_and_the_plugins(kube_api_factory, bin_dir, tmp_path):
    server = kube_api_factory(tokens={"admin": "admin", "installer": INSTALLER, "reconciler": RECONCILER},
                              rbac={INSTALLER: granted(DEPLOY / "kubernetes-store" / "rbac.yaml"),
                                    RECONCILER: granted(DEPLOY / "reconciler.yaml")})
    server.token = "admin"
    assert granted(DEPLOY / "reconciler.yaml") == ["create events", "get pods", "list pods", "watch pods"]
    cluster = Cluster(server, bin_dir, tmp_path)
    addresses = {name: cluster.add(name) for name in ("gone", "alive", "leaked")}
    for name in ("gone", "alive"):
        cluster.pod(name, addresses[name])

    log = tmp_path / "reconciler.log"
    argv = [sys.executable, "-m", "cni_ipam.cli", "reconciler", "--config", cluster.flat, "--source", "kubernetes",
            "--kubeconfig", cluster.reconciler_kubeconfig, "--node", NODE, "--schedule-file",
            str(tmp_path / "no-schedule"), "--no-metrics"]
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "pod-watch-listed" in log.read_text(), "the pod watch listed the node's pods", 30)
        code, _, body = server.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/gone")
        assert code == 200, body
        wait_until(lambda: offset(addresses["gone"]) not in cluster.held(), "the deleted pod's address freed")
        events = wait_until(lambda: server.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")[2]["items"],
                            "the reconciler's Event")
        assert [(e["involvedObject"]["name"], e["reason"]) for e in events] == [("gone", "IPAddressGarbageCollected")]
    finally:
        process.terminate()
        process.wait(15)
    assert "orbidden" not in log.read_text(), log.read_text()

    # The scheduled run's kubernetes source: list the pods, get each before freeing (the leaked one has none).
    done = cluster.reconcile_once()
    assert done.returncode == 0 and "orbidden" not in done.stdout + done.stderr, done.stdout + done.stderr
    freed = [json.loads(line) for line in done.stdout.splitlines() if '"freed"' in line]
    assert [(r["pod"], r["code"]) for r in freed if r["event"] == "freed"] == [(f"{NAMESPACE}/leaked", "pod-gone")]
    assert cluster.held() == {offset(addresses["alive"])}


def test_the_check_has_teeth_a_missing_verb_is_refused(kube_api_factory, bin_dir, tmp_path):
    """The same run without ``get pods``: the API server refuses it, and the leaked address stays."""
    rules = [rule for rule in granted(DEPLOY / "reconciler.yaml") if rule != "get pods"]
    server = kube_api_factory(tokens={"admin": "admin", "installer": INSTALLER, "reconciler": RECONCILER},
                              rbac={INSTALLER: granted(DEPLOY / "kubernetes-store" / "rbac.yaml"), RECONCILER: rules})
    server.token = "admin"
    cluster = Cluster(server, bin_dir, tmp_path)
    leaked = cluster.add("leaked")
    done = cluster.reconcile_once()
    assert "forbidden" in (done.stdout + done.stderr).lower() and "get" in done.stdout + done.stderr
    assert cluster.held() == {offset(leaked)}
