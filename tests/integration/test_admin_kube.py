"""The admin commands (``cni-ipam pools``, ``allocations``, ``release``, ``verify``, ``export``/``import``) on
the Kubernetes store, run as the real ``cni-ipam`` command against the test API server (tests/kubeapi).

Allocations are made by the real ``whereabouts`` executable through a CNO-style
whereabouts.d directory (test_whereabouts_kube.Node); pools "written by Go
whereabouts" are built by hand from upstream's shapes
(k8snetworkplumbingwg/whereabouts v0.9.4, 3a262bd0cd873e13d9b379342f8251b852a89b8f:
doc/crds/*.yaml, pkg/storage/kubernetes/ipam.go).  Objects are read back over
HTTP, not through our store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_whereabouts_kube import POOLS, RESERVATIONS, Node, ips, ok, pools, reservations

from cni_ipam.store.etcd_client import EtcdClient, put

NODE = "node-a"


def cli(*argv, node=NODE):
    """``cni-ipam ARGV`` as its own process, on node ``node``."""
    env = dict(os.environ, NODENAME=node)
    return subprocess.run([sys.executable, "-m", "cni_ipam.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env)


def json_of(*argv):
    done = cli(*argv, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def create(server, path, obj):
    code, _, body = server.request("POST", path, dict(obj, apiVersion="whereabouts.cni.cncf.io/v1alpha1"))
    assert code == 201, body
    return body


def go_pool(server, name, cidr, allocations):
    """An IPPool as Go whereabouts writes it: no annotation."""
    return create(server, POOLS, {"kind": "IPPool", "metadata": {"name": name},
                                  "spec": {"range": cidr, "allocations": allocations}})


def go_reservation(server, name, podref, ifname="eth0"):
    return create(server, RESERVATIONS, {"kind": "OverlappingRangeIPReservation", "metadata": {"name": name},
                                         "spec": {"podref": podref, "ifname": ifname}})


def backdate(server, resource, name, seconds):
    """Make an object ``seconds`` older, straight in etcd, as kube-apiserver stores it (tests/kubeapi/storage.py):
    what a crash left behind long ago."""
    key = f"{server.config['prefix'].rstrip('/')}/registry/whereabouts.cni.cncf.io/{resource}/kube-system/{name}"
    code, _, obj = server.request("GET", f"{POOLS.rsplit('/', 1)[0]}/{resource}/{name}")
    assert code == 200, obj
    obj["metadata"].pop("resourceVersion")
    obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))
    etcd = EtcdClient(server.config["etcd"])
    try:
        etcd.txn([], [put(key.encode(), json.dumps(obj).encode())])
    finally:
        etcd.close()


@pytest.fixture
def node(bin_dir, kube_api, tmp_path):
    return Node(bin_dir, kube_api, tmp_path / "whereabouts.d", name=NODE)


@pytest.fixture
def flat(node):
    return os.path.join(node.directory, "whereabouts.conf")


def add(node, pod, **ipam):
    return ips(ok(node.run("ADD", node.net(**ipam), cid=f"cid-{pod}", ifname="net1",
                           args=f"K8S_POD_NAMESPACE=apps;K8S_POD_NAME={pod}")))[0]


def test_pools_and_allocations_learn_the_ranges_from_the_allocations(node, flat, kube_api):
    for pod in ("a", "b", "c"):
        add(node, pod)
    add(node, "v6", range="fd00:40::/120", network_name="blue")
    go_pool(kube_api, "blue-10.60.0.0-29", "10.60.0.0/29", {"1": {"id": "go-1", "podref": "apps/go"}})

    rows = {r["pool"]: r for r in json_of("pools", "--config", flat)}
    assert {p: (r["space"], r["size"], r["size_from"], r["held"], r["free"]) for p, r in rows.items()} == {
        "/10.40.0.0/24": ("", 254, "cidr", 3, 251),
        "blue/10.60.0.0/29": ("blue", 6, "cidr", 1, 5),
        "blue/fd00:40::/120": ("blue", 254, "cidr", 1, 253)}
    table = cli("pools", "--config", flat)
    assert table.returncode == 0 and "/10.40.0.0/24" in table.stdout and "cidr" in table.stdout

    held = json_of("allocations", "--config", flat)
    assert [(a["ip"], a["network"], a["pod"], a["node"], a["ifname"]) for a in held] == [
        ("10.40.0.1", "kube-net", "apps/a", NODE, "net1"), ("10.40.0.2", "kube-net", "apps/b", NODE, "net1"),
        ("10.40.0.3", "kube-net", "apps/c", NODE, "net1"), ("10.60.0.1", "", "apps/go", "", ""),
        ("fd00:40::1", "kube-net", "apps/v6", NODE, "net1")]
    assert all(a["since"] for a in held if a["network"]) and held[3]["since"] == ""  # Go records no time
    assert [a["ip"] for a in json_of("allocations", "--config", flat, "--network", "blue")] == [
        "10.60.0.1", "fd00:40::1"]
    assert [a["ip"] for a in json_of("allocations", "--config", flat, "--pod", "apps/b")] == ["10.40.0.2"]


def test_release_frees_the_pool_entry_and_its_reservation(node, flat, kube_api):
    for pod in ("a", "b"):
        add(node, pod)
    go_pool(kube_api, "blue-10.60.0.0-29", "10.60.0.0/29", {"1": {"id": "go-1", "podref": "apps/go", "ifname": "eth0"}})
    go_reservation(kube_api, "blue-10.60.0.1", "apps/go")

    elsewhere = cli("release", "10.40.0.1", "--config", flat, node="node-b")  # its netns cannot be seen from there
    assert elsewhere.returncode == 1 and "node-b" in elsewhere.stderr and "--force" in elsewhere.stderr
    dry = cli("release", "10.40.0.1", "--config", flat, "--dry-run")
    assert dry.returncode == 0 and "would free 10.40.0.1" in dry.stdout
    done = cli("release", "10.40.0.1", "--config", flat)  # its netns /var/run/netns/cid-a is gone here
    assert done.returncode == 0, done.stderr
    assert "freed 10.40.0.1 in /10.40.0.0/24 held by kube-net/cid-a/net1 pod apps/a" in done.stdout
    assert sorted(pools(kube_api)["10.40.0.0-24"]["spec"]["allocations"]) == ["2"]
    assert sorted(reservations(kube_api)) == ["10.40.0.2", "blue-10.60.0.1"]

    refused = cli("release", "10.60.0.1", "--config", flat)  # Go records no netns: cannot be checked
    assert refused.returncode == 1 and "--force" in refused.stderr
    done = cli("release", "--container-id", "go-1", "--config", flat, "--force")
    assert done.returncode == 0, done.stderr
    assert pools(kube_api)["blue-10.60.0.0-29"]["spec"]["allocations"] == {}
    assert sorted(reservations(kube_api)) == ["10.40.0.2"]
    assert add(node, "c") == "10.40.0.1"  # handed out again


def test_verify_reports_and_repairs_what_can_go_wrong_in_the_objects(node, flat, kube_api):
    for pod in ("a", "b", "c"):
        add(node, pod)
    assert cli("verify", "--config", flat).stdout == "the kubernetes store is consistent\n"

    # a Go writer released c (key 3) and gave key 2 to one of its pods: our annotation entries went stale
    pool = pools(kube_api)["10.40.0.0-24"]
    allocations = dict(pool["spec"]["allocations"], **{"2": {"id": "go-2", "podref": "apps/go"}})
    del allocations["3"]
    code, _, body = kube_api.request("PATCH", f"{POOLS}/10.40.0.0-24", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": pool["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/allocations", "value": allocations}],
        content_type="application/json-patch+json")
    assert code == 200, body
    # c's reservation, left behind by that Go writer; an orphan left by a crash long ago; one just made (a
    # claim on its way)
    backdate(kube_api, "overlappingrangeipreservations", "10.40.0.3", 3600)
    go_reservation(kube_api, "10.40.0.200", "apps/crashed")
    backdate(kube_api, "overlappingrangeipreservations", "10.40.0.200", 3600)
    go_reservation(kube_api, "10.40.0.201", "apps/starting")
    code, _, body = kube_api.request("DELETE", f"{RESERVATIONS}/10.40.0.2")  # b's, now the Go pod's address
    assert code == 200, body

    found = json.loads(cli("verify", "--config", flat, "-o", "json").stdout)
    assert sorted((p["kind"], p["detail"].split(" ")[0 if p["kind"] == "missing-reservation" else 1])
                  for p in found["problems"]) == [
        ("missing-reservation", "10.40.0.2"), ("stale-annotation", "10.40.0.0-24:"),
        ("unbacked-reservation", "10.40.0.200"), ("unbacked-reservation", "10.40.0.3")]
    assert all(p["repairable"] for p in found["problems"])
    assert "keys 2, 3" in " ".join(p["detail"] for p in found["problems"])  # 10.40.0.201: left to its claim

    repaired = cli("verify", "--config", flat, "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert len([line for line in repaired.stdout.splitlines() if line.startswith("repaired: ")]) == 4
    assert repaired.stdout.endswith("the kubernetes store is consistent\n")
    assert sorted(pools(kube_api)["10.40.0.0-24"]["metadata"]["annotations"]) == ["cni-ipam.io/a.1"]
    assert reservations(kube_api) == {"10.40.0.1": {"podref": "apps/a", "ifname": "net1", "containerid": "cid-a"},
                                      "10.40.0.2": {"podref": "apps/go", "containerid": "go-2"},
                                      "10.40.0.201": {"podref": "apps/starting", "ifname": "eth0"}}
    assert cli("verify", "--config", flat).returncode == 0


def test_a_missing_reservation_is_restored(node, flat, kube_api):
    add(node, "a")
    code, _, body = kube_api.request("DELETE", f"{RESERVATIONS}/10.40.0.1")
    assert code == 200, body
    found = cli("verify", "--config", flat)
    assert found.returncode == 1 and "missing-reservation: 10.40.0.1 of /10.40.0.0/24" in found.stdout
    assert cli("verify", "--config", flat, "--repair").returncode == 0
    assert reservations(kube_api) == {"10.40.0.1": {"podref": "apps/a", "ifname": "net1", "containerid": "cid-a"}}


def test_network_name_reservations_backed_by_a_pool_are_kept(node, flat, kube_api):
    """Upstream's reconciler reads a reservation's name back by turning every '-' into ':'
    (pkg/reconciler/iploop.go findClusterWideIPReservations @ v0.9.4), so ``blue-10.60.0.1`` never matches its
    live pod's address and is deleted.  Here a reservation counts as backed when an allocation holds its address
    in its network_name's space."""
    go_pool(kube_api, "blue-10.60.0.0-29", "10.60.0.0/29", {"1": {"id": "go-1", "podref": "apps/go", "ifname": "eth0"}})
    go_pool(kube_api, "beef-fd00---120", "fd00::/120", {"1": {"id": "go-6", "podref": "apps/go6", "ifname": "eth0"}})
    for name, podref in (("blue-10.60.0.1", "apps/go"), ("beef-fd00--1", "apps/go6"), ("blue-10.60.0.3", "apps/x")):
        go_reservation(kube_api, name, podref)
        backdate(kube_api, "overlappingrangeipreservations", name, 3600)
    found = cli("verify", "--config", flat)
    assert found.returncode == 1
    assert found.stdout.splitlines()[0].startswith("unbacked-reservation: OverlappingRangeIPReservation "
                                                   "blue-10.60.0.3 holds 10.60.0.3 in address space 'blue'")
    assert "blue-10.60.0.1" not in found.stdout and "beef-fd00--1" not in found.stdout
    assert cli("verify", "--config", flat, "--repair").returncode == 0
    assert sorted(reservations(kube_api)) == ["beef-fd00--1", "blue-10.60.0.1"]
    assert add(node, "b", range="10.60.0.0/29", network_name="blue") == "10.60.0.2"


def test_from_sqlite_into_kubernetes_and_back(node, flat, kube_api, bin_dir, tmp_path):
    sqlite_flat = str(tmp_path / "sqlite.conf")
    with open(sqlite_flat, "w") as stream:
        json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "w.db")}, stream)
    on_sqlite = Node(bin_dir, kube_api, tmp_path / "sqlite.d", name=NODE)
    with open(os.path.join(on_sqlite.directory, "whereabouts.conf"), "w") as stream:
        json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "w.db")}, stream)
    for pod in ("a", "b", "c"):
        add(on_sqlite, pod)
    add(on_sqlite, "v6", range="fd00:40::/120", network_name="blue")
    ok(on_sqlite.run("DEL", on_sqlite.net(), cid="cid-b", ifname="net1"))  # a hole at 10.40.0.2

    state = str(tmp_path / "state.json")
    assert cli("export", "--config", sqlite_flat, "--file", state).returncode == 0
    dry = cli("import", state, "--config", flat, "--dry-run")
    assert dry.returncode == 0 and "would import 3 allocation(s)" in dry.stdout
    done = cli("import", state, "--config", flat)
    assert done.returncode == 0, done.stderr
    assert "imported 3 allocation(s) and 0 hint(s)" in done.stdout  # the store keeps no hints
    before = json_of("allocations", "--config", sqlite_flat)
    assert json_of("allocations", "--config", flat) == before  # every field, the creation time included
    assert sorted(reservations(kube_api)) == ["10.40.0.1", "10.40.0.3", "blue-fd00-40--1"]
    assert "imported 0 allocation(s)" in cli("import", state, "--config", flat).stdout  # twice: nothing changes
    assert cli("verify", "--config", flat).returncode == 0

    # the plugin on kubernetes never hands out an imported address, and DELs an imported attachment
    assert add(node, "d") == "10.40.0.2" and add(node, "e") == "10.40.0.4"
    ok(node.run("DEL", node.net(), cid="cid-a", ifname="net1"))
    assert "1" not in pools(kube_api)["10.40.0.0-24"]["spec"]["allocations"]
    assert "10.40.0.1" not in reservations(kube_api)
    assert add(node, "f") == "10.40.0.1"

    # and back: kubernetes -> a new SQLite store
    back_flat = str(tmp_path / "back.conf")
    with open(back_flat, "w") as stream:
        json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "back.db")}, stream)
    kube_state = str(tmp_path / "kube.json")
    assert cli("export", "--config", flat, "--file", kube_state).returncode == 0
    done = cli("import", kube_state, "--config", back_flat)
    assert done.returncode == 0 and "imported 5 allocation(s)" in done.stdout, done.stderr
    assert json_of("allocations", "--config", back_flat) == json_of("allocations", "--config", flat)
    back = Node(bin_dir, kube_api, tmp_path / "back.d", name=NODE)
    with open(os.path.join(back.directory, "whereabouts.conf"), "w") as stream:
        json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "back.db")}, stream)
    assert add(back, "g") == "10.40.0.5"


def test_import_refuses_an_address_held_in_kubernetes(node, flat, kube_api, tmp_path):
    add(node, "a")
    state = {"kind": "cni-ipam-state", "version": 1, "allocations": [
        {"pool": "/10.40.0.0/24", "ip": "10.40.0.1", "network": "other", "container_id": "x", "ifname": "net1",
         "space": ""}], "hints": []}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    done = cli("import", str(path), "--config", flat)
    assert done.returncode == 1 and "conflict: 10.40.0.1" in done.stderr
    assert sorted(pools(kube_api)["10.40.0.0-24"]["spec"]["allocations"]) == ["1"]


def test_our_next_write_drops_annotation_entries_a_go_writer_left_stale(node, flat, kube_api):
    for pod in ("a", "b", "c"):
        add(node, pod)
    pool = pools(kube_api)["10.40.0.0-24"]
    code, _, body = kube_api.request("PATCH", f"{POOLS}/10.40.0.0-24", [  # Go's DEL of b: the key goes, not ours
        {"op": "test", "path": "/metadata/resourceVersion", "value": pool["metadata"]["resourceVersion"]},
        {"op": "remove", "path": "/spec/allocations/2"}], content_type="application/json-patch+json")
    assert code == 200, body
    code, _, body = kube_api.request("DELETE", f"{RESERVATIONS}/10.40.0.2")
    assert code == 200, body
    assert cli("verify", "--config", flat).stdout.startswith("stale-annotation: IPPool 10.40.0.0-24: ")
    ok(node.run("DEL", node.net(), cid="cid-a", ifname="net1"))
    annotations = pools(kube_api)["10.40.0.0-24"]["metadata"]["annotations"]
    assert {k: json.loads(v)[0] for k, v in annotations.items()} == {"cni-ipam.io/a.3": "cid-c"}
    assert cli("verify", "--config", flat).returncode == 0
