"""The reconciler on the Kubernetes store: its cron run and its pod watch, against the test API server.

The ``whereabouts`` executable allocates into IPPools, the pods live on the
test API server (tests/kubeapi), and ``cni-ipam reconcile``/``reconciler``
run as their own processes with the ``kubernetes`` liveness source
(test_reconciler_pod_watch's Node and Reconciler).  Objects are read back
over HTTP.  The reservation cases are those upstream's reconciler gets
wrong: it reads a reservation's name back by turning every '-' into ':'
(k8snetworkplumbingwg/whereabouts pkg/reconciler/iploop.go
``findClusterWideIPReservations`` @ v0.9.4, 3a262bd0cd873e13d9b379342f8251b852a89b8f),
so ``blue-10.60.0.1`` never matches its live pod's address and is deleted
while the pool still holds the address.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_admin_kube import backdate, go_pool, go_reservation
from test_reconciler_pod_watch import NODE, Node, Reconciler, kubeconfig, wait_until
from test_whereabouts_kube import pools, reservations


@pytest.fixture
def node(bin_dir, tmp_path, kube_api) -> Node:
    flat = {"datastore": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig(kube_api, tmp_path / "kubeconfig")}}
    return Node(bin_dir, tmp_path, flat, kube_api)


def reconcile(node, tmp_path, *extra) -> list:
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "reconcile", "--once", "--config", node.flat,
                           "--kubeconfig", str(tmp_path / "kubeconfig"), "--node", NODE, "--grace", "0", "--source", "kubernetes", *extra],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_cron_run_frees_a_leaked_allocation_and_an_orphan_reservation_only(node, tmp_path, kube_api):
    alive = node.add("alive")
    node.pod("alive", alive)
    leaked = node.add("leaked")  # its pod is gone and no DEL came
    # a Go whereabouts pod of network_name blue, alive, with its pool entry and reservation
    go_pool(kube_api, "blue-10.60.0.0-29", "10.60.0.0/29", {"1": {"id": "go-1", "podref": "apps/go", "ifname": "net1"}})
    node.pod("go", "10.60.0.1")
    orphans = ["192.0.2.200", "blue-10.60.0.5"]  # left by crashes long ago
    for name, podref in (("blue-10.60.0.1", "apps/go"), *((o, "apps/crashed") for o in orphans)):
        go_reservation(kube_api, name, podref, ifname="net1")
        backdate(kube_api, "overlappingrangeipreservations", name, 3600)
    go_reservation(kube_api, "192.0.2.201", "apps/starting", ifname="net1")  # a claim on its way: too young

    dry = reconcile(node, tmp_path, "--dry-run")
    assert [r["address"] for r in dry if r["event"] == "would-free"] == [leaked]
    assert sorted((r["address"], r["network_name"], r["pool"]) for r in dry
                  if r["event"] == "would-free-reservation") == [("10.60.0.5", "blue", "blue/10.60.0.0/29"),
                                                                 ("192.0.2.200", "", "/192.0.2.0/24")]
    assert len(reservations(kube_api)) == 6

    lines = reconcile(node, tmp_path)
    assert [(r["address"], r["pod"], r["code"]) for r in lines if r["event"] == "freed"] == [
        (leaked, "apps/leaked", "pod-gone")]
    assert sorted(r["address"] for r in lines if r["event"] == "freed-reservation") == ["10.60.0.5", "192.0.2.200"]
    assert sorted(pools(kube_api)["192.0.2.0-24"]["spec"]["allocations"]) == ["1"]
    assert pools(kube_api)["blue-10.60.0.0-29"]["spec"]["allocations"] == {
        "1": {"id": "go-1", "podref": "apps/go", "ifname": "net1"}}
    assert sorted(reservations(kube_api)) == [alive, "192.0.2.201", "blue-10.60.0.1"]

    again = reconcile(node, tmp_path)  # nothing left to do
    assert [r for r in again if r["event"] in ("freed", "freed-reservation")] == []
    assert node.add("next") == leaked  # handed out again


def test_the_pod_watch_frees_a_deleted_pods_address_within_seconds(node, tmp_path, kube_api):
    addresses = {name: node.add(name) for name in ("gone", "stays")}
    for name, address in addresses.items():
        node.pod(name, address)
    running = Reconciler(node, tmp_path)
    try:
        node.delete("gone")
        wait_until(lambda: addresses["gone"] not in node.held(), f"{addresses['gone']} freed")
        assert node.held() == {addresses["stays"]: "sandbox-stays"}
        assert sorted(pools(kube_api)["192.0.2.0-24"]["spec"]["allocations"]) == ["2"]
        assert sorted(reservations(kube_api)) == [addresses["stays"]]
        [freed] = running.records("pod-freed")
        assert (freed["pod"], freed["address"], freed["code"]) == ("apps/gone", addresses["gone"], "pod-gone")
    finally:
        running.stop()
