"""Leaked addresses on the SQLite and the etcd store, freed by ``cni-ipam reconcile --once``.

Allocations are made by the real ``whereabouts`` executable, as a runtime
calls it, with network namespace paths that are either plain files (any
user) or namespaces made with ``ip netns add`` (root only).  Some pods then
"die" without a DEL (their namespace is removed), and the reconciler, run
as its own process, must free exactly those, leave live ones alone, never
touch an allocation younger than the grace period (a pod whose ADD may
still be running), nor one of another node.  A leaked allocation is made
old by moving its ``created`` time back: the test cannot wait ten minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from cni_ipam_lab.namespaces import can_make_netns, cni_env, run_plugin

NODE = "node-a"
NETWORK = "leaknet"
IFNAME = "net1"


class Namespaces:
    """Network namespace paths for pods: plain files, or real namespaces from ``ip netns add``."""

    def __init__(self, kind: str, directory) -> None:
        self.kind = kind
        self.directory = str(directory)
        self.made = []

    def make(self, pod: str) -> str:
        if self.kind == "files":
            path = os.path.join(self.directory, f"cni-{pod}")
            with open(path, "w"):
                pass
            return path
        name = f"cniipam-rc-{pod}-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.made.append(name)
        return f"/run/netns/{name}"

    def remove(self, path: str) -> None:
        if self.kind == "files":
            os.unlink(path)
            return
        name = os.path.basename(path)
        subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True)
        self.made.remove(name)

    def close(self) -> None:
        for name in list(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(params=["files", "ip-netns"])
def namespaces(request, tmp_path):
    if request.param == "ip-netns":
        ok, why = can_make_netns()
        if not ok:
            pytest.skip(f"real network namespaces: {why} (the plain-file variant of this test still runs)")
    directory = tmp_path / "netns"
    directory.mkdir()
    made = Namespaces(request.param, directory)
    yield made
    made.close()


class Cluster:
    """One store (via a flat file), the plugin, and the reconciler command."""

    def __init__(self, bin_dir: str, tmp_path, flat: dict) -> None:
        self.bin_dir = bin_dir
        self.plugin = os.path.join(bin_dir, "whereabouts")
        self.flat = str(tmp_path / "whereabouts.conf")
        with open(self.flat, "w") as handle:
            json.dump(flat, handle)
        self.settings = flat

    def net(self) -> dict:
        return {"cniVersion": "1.0.0", "name": NETWORK, "type": "macvlan",
                "ipam": {"type": "whereabouts", "configuration_path": self.flat,
                         "ipRanges": [{"range": "192.0.2.0/24"}, {"range": "2001:db8::/64"}]}}

    def add(self, pod: str, netns: str, node: str = NODE) -> list:
        env = cni_env("ADD", f"cid-{pod}", netns, IFNAME, f"K8S_POD_NAMESPACE=apps;K8S_POD_NAME={pod}",
                      self.bin_dir, extra={"NODENAME": node})
        call = run_plugin(self.plugin, env, self.net())
        assert call.ok, call
        return [ip["address"].split("/")[0] for ip in call.output["ips"]]

    def delete(self, pod: str) -> None:
        call = run_plugin(self.plugin, cni_env("DEL", f"cid-{pod}", "", IFNAME, cni_path=self.bin_dir), self.net())
        assert call.ok, call

    def store(self):
        from cni_ipam.config.admin import read_config
        from cni_ipam.config.whereabouts import store_settings
        from cni_ipam.store import open_store

        return open_store(store_settings(read_config(self.flat)[0]))

    def held(self) -> dict:
        """address -> pod, as the store holds it now."""
        store = self.store()
        try:
            return {a.address: a.pod for a in store.allocations()}
        finally:
            store.close()

    def backdate(self, pods, seconds: float = 3600.0) -> None:
        """Make these pods' allocations look ``seconds`` older (a leak is found long after the pod died)."""
        wanted = {f"apps/{p}" for p in pods}
        if self.settings["datastore"] == "sqlite":
            import sqlite3

            db = sqlite3.connect(self.settings["sqlite_path"])
            with db:
                for pod in wanted:
                    db.execute("UPDATE allocations SET created = created - ? WHERE pod = ?", (seconds, pod))
            db.close()
            return
        from cni_ipam.store.etcd_client import EtcdClient, put

        store = self.store()
        client = EtcdClient(self.settings["etcd_endpoints"])
        try:
            for a in store.allocations():
                if a.pod in wanted:
                    key = store._pool_key(a)  # the record the reconciler reads (index copies are not read)
                    record = json.loads(client.get(key)["value"])
                    record["created"] -= seconds
                    client.txn([], [put(key, json.dumps(record).encode())])
        finally:
            store.close()
            client.close()

    def reconcile(self, *extra, node: str = NODE):
        argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--once", "--config", self.flat, "--node", node,
                "--source", "netns", *extra]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return done, lines


@pytest.fixture(params=["sqlite", "etcd"])
def cluster(request, bin_dir, tmp_path) -> Cluster:
    if request.param == "sqlite":
        flat = {"datastore": "sqlite", "sqlite_path": str(tmp_path / "store" / "whereabouts.db")}
    else:
        etcd = request.getfixturevalue("etcd_cluster")
        flat = {"datastore": "etcd", "etcd_endpoints": etcd.endpoints,
                "etcd_prefix": request.getfixturevalue("etcd_prefix")}
    return Cluster(bin_dir, tmp_path, flat)


def comparable(line: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v)) for k, v in line.items() if k not in ("ts", "event", "msg", "dry_run")))


def test_exactly_the_leaked_allocations_are_freed(cluster, namespaces):
    paths = {pod: namespaces.make(pod) for pod in ("live-1", "live-2", "leak-1", "leak-2", "young")}
    got = {pod: cluster.add(pod, path) for pod, path in paths.items()}
    other_node = cluster.add("elsewhere", "/run/netns/cni-on-node-b-gone", node="node-b")
    cluster.backdate(["live-1", "live-2", "leak-1", "leak-2", "elsewhere"])
    for pod in ("leak-1", "leak-2", "young"):  # they die without a DEL; "young" is a pod whose ADD just ran
        namespaces.remove(paths[pod])
    before = cluster.held()
    assert len(before) == 12  # 6 pods, one IPv4 and one IPv6 address each

    # a dry run decides the same, and frees nothing
    dry, dry_lines = cluster.reconcile("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert cluster.held() == before
    would = [line for line in dry_lines if line["event"] == "would-free"]
    assert sorted((line["address"], line["pod"]) for line in would) == sorted(
        (address, f"apps/{pod}") for pod in ("leak-1", "leak-2") for address in got[pod])

    done, lines = cluster.reconcile()
    assert done.returncode == 0, done.stderr
    freed = [line for line in lines if line["event"] == "freed"]
    assert sorted(map(comparable, freed)) == sorted(map(comparable, would))
    for line in freed:
        assert line["code"] == "netns-gone" and line["netns"] == paths[line["pod"].split("/")[1]]
        assert line["range"] in ("192.0.2.0/24", "2001:db8::/64") and line["node"] == NODE
        assert "no longer exists" in line["why"]
    after = cluster.held()
    assert after == {a: p for a, p in before.items() if p not in ("apps/leak-1", "apps/leak-2")}
    assert set(got["young"]) <= set(after) and set(other_node) <= set(after)  # mid-ADD and node-b untouched
    end = [line for line in lines if line["event"] == "run-end"][0]
    assert (end["ok"], end["examined"], end["freed"]) == (True, 12, 4)
    assert end["kept"] == {"netns-present": 4, "young": 2, "unknown": 2}

    # the store is whole: a freed address is handed out again, a live pod's DEL still works
    assert cluster.add("newcomer", namespaces.make("newcomer"))[0] == min(got["leak-1"][0], got["leak-2"][0],
                                                                          key=lambda t: tuple(map(int, t.split("."))))
    cluster.delete("live-1")
    assert not set(got["live-1"]) & set(cluster.held())

    # run again: nothing more to free
    again, lines = cluster.reconcile()
    assert again.returncode == 0 and [line for line in lines if line["event"] == "freed"] == []


def test_a_pod_mid_add_is_never_freed_even_with_its_namespace_gone(cluster, namespaces):
    path = namespaces.make("starting")
    addresses = cluster.add("starting", path)
    namespaces.remove(path)
    done, lines = cluster.reconcile("--grace", "3600")
    assert done.returncode == 0, done.stderr
    assert set(addresses) <= set(cluster.held())
    kept = [line for line in lines if line["event"] == "run-end"][0]["kept"]
    assert kept == {"young": 2}
    # and with no grace at all it is an ordinary leak
    done, lines = cluster.reconcile("--grace", "0")
    assert sorted(line["address"] for line in lines if line["event"] == "freed") == sorted(addresses)


def test_valid_attachments_source_from_the_command_line(cluster, tmp_path):
    for pod in ("a", "b"):
        cluster.add(pod, "/run/netns/whatever")
    cluster.backdate(["a", "b"])
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps({"cniVersion": "1.1.0", "name": NETWORK,
                                 "cni.dev/valid-attachments": [{"containerID": "cid-a", "ifname": IFNAME}]}))
    argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--config", cluster.flat, "--node", NODE,
            "--source", "attachments", "--valid-attachments", str(valid)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    freed = [json.loads(line) for line in done.stdout.splitlines() if '"event":"freed"' in line]
    assert {line["pod"] for line in freed} == {"apps/b"} and len(freed) == 2
    assert set(cluster.held().values()) == {"apps/a"}


def test_bad_command_lines_exit_2_with_the_reason(cluster, tmp_path):
    argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--config", str(tmp_path / "missing.conf")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "missing.conf: no such file" in done.stderr
    argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--config", cluster.flat, "--source", "attachments"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "needs --valid-attachments FILE" in done.stderr


def test_a_store_never_created_is_not_created_by_the_reconciler(tmp_path):
    flat = tmp_path / "whereabouts.conf"
    db = tmp_path / "store" / "whereabouts.db"
    flat.write_text(json.dumps({"datastore": "sqlite", "sqlite_path": str(db)}))
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "reconcile", "--config", str(flat)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stdout.splitlines()]
    assert events == ["run-start", "no-store", "examined", "run-end"]
    assert not db.exists() and not db.parent.exists()


def test_a_config_naming_no_usable_store_exits_2(tmp_path):
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "etcd"}))
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "reconcile", "--config", str(flat)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f'{flat}: ipam.datastore "etcd" needs ipam.etcd_host or ipam.etcd_endpoints' in done.stderr
