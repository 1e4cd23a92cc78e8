"""What only the etcd store can get wrong: reservations no allocation backs, and a run dying halfway.

On etcd an allocation is several keys written and deleted in one txn (the
record, its address-space claim, its index entries).  A space claim left
without its record (by an older build, or written by hand) blocks its
address forever; the reconciler frees it.  (On SQLite the claim is a
column of the allocation's own row, so it cannot be left behind: there is
nothing to do there, and ``unbacked_reservations()`` is empty by contract.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cni_ipam_lab.namespaces import cni_env, run_plugin
from cni_ipam.net import pool_name
from cni_ipam.store.base import Allocation
from cni_ipam.store.etcd import EtcdStore, ip_key, seg
from cni_ipam.store.etcd_client import EtcdClient, delete, put


@pytest.fixture
def flat(etcd_flat_file) -> str:
    return etcd_flat_file


def add(bin_dir, flat, pod) -> str:
    config = {"cniVersion": "1.0.0", "name": "net-e", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": "192.0.2.0/24", "configuration_path": flat}}
    env = cni_env("ADD", f"cid-{pod}", f"/run/netns/{pod}", "net1", f"K8S_POD_NAMESPACE=apps;K8S_POD_NAME={pod}",
                  bin_dir)
    call = run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)
    assert call.ok, call
    return call.output["ips"][0]["address"]


def reconcile(flat, *extra) -> list:
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "reconcile", "--once", "--config", flat,
                           "--source", "netns", *extra], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_leaked_space_key_is_freed_and_its_address_is_handed_out_again(bin_dir, flat, client, etcd_prefix):
    # an older build left the address-space claim of 192.0.2.1 (unnamed network: space "") without its record
    leaked = f"{etcd_prefix}spaces/{seg('')}/{ip_key(0xC0000201, 4)}".encode()
    client.txn([], [put(leaked, pool_name("", "192.0.2.0/24").encode())])
    assert add(bin_dir, flat, "first") == "192.0.2.2/24"  # the leak blocks 192.0.2.1

    dry = reconcile(flat, "--dry-run")
    assert [(r["address"], r["network_name"]) for r in dry if r["event"] == "would-free-reservation"] == [
        ("192.0.2.1", "")]
    assert client.get(leaked) is not None

    lines = reconcile(flat)
    [freed] = [r for r in lines if r["event"] == "freed-reservation"]
    assert (freed["address"], freed["pool"], freed["why"]) == (
        "192.0.2.1", "/192.0.2.0/24", "no allocation holds this address-space reservation")
    assert [r["freed_reservations"] for r in lines if r["event"] == "run-end"] == [1]
    assert client.get(leaked) is None
    assert add(bin_dir, flat, "second") == "192.0.2.1/24"
    # the backed claims of the two live allocations are not touched
    again = reconcile(flat)
    assert [r for r in again if r["event"] == "freed-reservation"] == []
    spaces = client.prefix(f"{etcd_prefix}spaces/".encode())
    assert len(spaces) == 2


def test_a_reservation_claimed_again_after_it_was_listed_is_left_alone(etcd_cluster, etcd_prefix, client):
    store = EtcdStore(EtcdClient(etcd_cluster.endpoints), etcd_prefix)
    try:
        pool = pool_name("blue", "192.0.2.0/24")
        key = f"{etcd_prefix}spaces/blue/{ip_key(0xC0000205, 4)}".encode()
        client.txn([], [put(key, pool.encode())])
        [reservation] = store.unbacked_reservations()
        assert (reservation.space, reservation.address, reservation.pool) == ("blue", "192.0.2.5", pool)
        # meanwhile someone deletes the leftover by hand and a pod claims the address properly
        client.txn([], [delete(key)])
        assert store.claim(Allocation(pool, 0xC0000205, 4, "net-blue", "c1", "net1", space="blue"))
        assert store.drop_reservation(reservation) is False
        assert client.get(key) is not None and store.unbacked_reservations() == []
    finally:
        store.close()


def test_a_run_that_fails_halfway_leaves_every_allocation_whole(etcd_cluster, etcd_prefix, client):
    from cni_ipam.reconciler.liveness import Source, stale
    from cni_ipam.reconciler.log import JsonLog
    from cni_ipam.reconciler.run import reconcile as run_once

    store = EtcdStore(EtcdClient(etcd_cluster.endpoints), etcd_prefix)
    pool = pool_name("blue", "192.0.2.0/24")
    allocations = [Allocation(pool, 0xC0000200 + n, 4, "net-blue", f"c{n}", "net1", space="blue", pod=f"apps/p{n}",
                              netns=f"/run/netns/p{n}", node="node-a", created=1.0) for n in range(1, 6)]
    for a in allocations:
        assert store.claim(a)

    class AllGone(Source):
        name = "test"

        def judge(self, allocation):
            return stale("netns-gone", "gone")

    release, calls = store.release, []

    def dies_on_the_third(allocation):
        calls.append(allocation.address)
        if len(calls) == 3:
            raise ConnectionError("etcd went away")
        return release(allocation)

    store.release = dies_on_the_third
    log = JsonLog(stream=open(os.devnull, "w"))
    report = run_once(store, [AllGone()], log, 600.0)
    assert not report.ok and [a.address for a in report.freed] == ["192.0.2.1", "192.0.2.2"]

    def keys_of(address_key):
        return sorted(kv["key"].decode()[len(etcd_prefix):].split("/")[0]
                      for kv in client.prefix(etcd_prefix.encode()) if kv["key"].decode().endswith(address_key))

    for a in allocations[:2]:  # freed: every key of it is gone
        assert keys_of(ip_key(a.ip, 4)) == []
    for a in allocations[2:]:  # not freed: record, space claim and both indexes are all there
        assert keys_of(ip_key(a.ip, 4)) == ["attachments", "pods", "pools", "spaces"]
    assert store.unbacked_reservations() == []
    store.release = release
    report = run_once(store, [AllGone()], log, 600.0)
    assert report.ok and [a.address for a in report.freed] == ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
    assert client.prefix(f"{etcd_prefix}pools/".encode()) == []
    assert client.prefix(f"{etcd_prefix}spaces/".encode()) == []
    store.close()
