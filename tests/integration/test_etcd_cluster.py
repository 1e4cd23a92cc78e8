"""Cluster mode: many whereabouts plugin processes on many nodes, one etcd cluster.

Four simulated nodes, each with its own ``NODENAME`` and its own flat file
(``whereabouts.conf``: datastore etcd, the cluster's endpoints in an order
of its own, the test's prefix), run 16 plugin processes at once each: 64
real plugin executables contend for one range at every moment.

The issue asks for 4 nodes x 16 processes x 25 ADDs on one /24.  A /24 has
254 addresses, so 1600 ADDs cannot all be held at once; we keep the /24 and
make it a churn workload: each of the 64 workers does its 25 ADDs one after
another and, before an ADD, DELs its oldest attachment once it holds
``HOLD`` (3), so at most 64 x 3 = 192 addresses are held at any moment and
every address is handed out, freed and handed out again several times --
the case where a stale view of the store would show up as a duplicate.
Then every worker DELs what it still holds.  Nothing is scaled down in the
IPv4 test (1600 ADDs + 1600 DELs = 3200 plugin execs, 66-90 s here);
the dual-stack test (ipRanges v4 /24 + v6 /64) keeps the 4 x 16 shape with
5 ADDs per worker (320 ADDs + 320 DELs) to stay within the time budget.

Duplicates are looked for two ways:

* in the store: a monitor thread reads everything under the prefix in one
  range request (one revision, so one consistent moment) again and again
  while the load runs, and checks that every address is held by one
  attachment and that records, the attachment index, the pod index and the
  address-space keys agree;
* in the answers: an attachment certainly holds its address from the moment
  its ADD returned until its DEL started; no two such intervals of one
  address may overlap.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections import Counter

from cni_ipam_lab.namespaces import cni_env, run_plugin

NODES = 4
WORKERS = 16  # plugin processes at once per node
PER_WORKER = 25  # ADDs per worker in the IPv4 test
DUAL_PER_WORKER = 5  # ADDs per worker in the dual-stack test
HOLD = 3  # attachments a worker holds at most (64 x 3 = 192 < 254)
NETWORK = "cluster-net"
IFNAME = "net1"
V4_RANGE = "10.40.0.0/24"
DUAL_RANGES = ("10.41.0.0/24", "fd41::/64")
# Top-level key families under the prefix (see the module docstring of cni_ipam.store.etcd).
ALLOCATION_FAMILIES = ("pools", "spaces", "attachments", "pods")
HINT_FAMILIES = ("hints", "hint-spaces")


# -- nodes: flat files, configs, environments -------------------------------------------------------


class Node:
    """A simulated node: its name, its flat file, the network config its runtime would pass."""

    def __init__(self, index: int, directory, endpoints: list, prefix: str, ipam: dict) -> None:
        self.name = f"node-{index}"
        order = endpoints[index % len(endpoints):] + endpoints[:index % len(endpoints)]
        if index % 2:
            order = order[:1] + order[1:][::-1]  # every node its own order
        self.endpoints = order
        directory.mkdir(parents=True, exist_ok=True)
        self.flat_file = str(directory / "whereabouts.conf")
        with open(self.flat_file, "w") as out:  # what an administrator sets once per node
            json.dump({"datastore": "etcd", "etcd_endpoints": order, "etcd_prefix": prefix}, out)
        self.config = {"cniVersion": "1.1.0", "name": NETWORK, "type": "whereabouts",
                       "ipam": dict(ipam, type="whereabouts", configuration_path=self.flat_file)}

    def env(self, command: str, container_id: str, bin_dir: str) -> dict:
        pod = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=load;K8S_POD_NAME=pod-{container_id}"
        return cni_env(command, container_id, f"/var/run/netns/{container_id}", IFNAME, args=pod,
                       cni_path=bin_dir, extra={"NODENAME": self.name})


def make_nodes(tmp_path, cluster, prefix: str, ipam: dict) -> list:
    return [Node(i, tmp_path / f"node-{i}", list(cluster.endpoints), prefix, ipam) for i in range(NODES)]


def plugin(bin_dir: str) -> str:
    return os.path.join(bin_dir, "whereabouts")


def addresses(call) -> list:
    """The addresses an ADD returned, as ip_interface objects."""
    return [ipaddress.ip_interface(ip["address"]) for ip in call.output["ips"]]


# -- reading the store directly ------------------------------------------------------------------------


def unseg(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def ip_of_key(text: str):
    """``4<8 hex>`` or ``6<32 hex>`` -> ip_address."""
    value = int(text[1:], 16)
    return ipaddress.IPv4Address(value) if text[0] == "4" else ipaddress.IPv6Address(value)


def read_prefix(cluster, prefix: str) -> list:
    """Every (key relative to the prefix, value) under the prefix, read in one request (one revision)."""
    from cni_ipam.store.etcd_client import EtcdClient

    client = EtcdClient(cluster.endpoints, timeout=5, deadline=20)
    try:
        kvs = client.prefix(prefix.encode())
    finally:
        client.close()
    return [(kv["key"][len(prefix):].decode(), kv["value"]) for kv in kvs]


def check_snapshot(kvs: list) -> dict:
    """Check one consistent view of the store; return {(pool, ip): record}.

    Every address is held once in its pool and once in its address space;
    each allocation has exactly its attachment-index and pod-index keys and
    nothing points to an allocation that is not there.
    """
    records, index, pods, spaces = {}, set(), set(), []
    for key, value in kvs:
        family, _, rest = key.partition("/")
        parts = rest.split("/")
        assert family in ALLOCATION_FAMILIES + HINT_FAMILIES, f"unexpected key {key!r}"
        if family == "pools":
            record = json.loads(value)
            pool, ip = unseg(parts[0]), ip_of_key(parts[1])
            assert ipaddress.ip_address(record["ip"]) == ip, (key, record)
            assert record["pool"] == pool, (key, record)
            records[(pool, ip)] = record
        elif family == "attachments":
            network, cid, ifname, pool = (unseg(p) for p in parts[:4])
            index.add((network, cid, ifname, pool, ip_of_key(parts[4])))
        elif family == "pods":
            pod, ifname, pool = (unseg(p) for p in parts[:3])
            pods.add((pod, ifname, pool, ip_of_key(parts[3])))
        elif family == "spaces":
            spaces.append((unseg(parts[0]), ip_of_key(parts[1]), value.decode()))
    expected_index = {(r["network"], r["container_id"], r["ifname"], pool, ip) for (pool, ip), r in records.items()}
    assert index == expected_index, (f"attachment index and records disagree: only in index "
                                     f"{list(index - expected_index)[:5]}, only in records "
                                     f"{list(expected_index - index)[:5]}")
    expected_pods = {(r["pod"], r["ifname"], pool, ip) for (pool, ip), r in records.items() if r.get("pod")}
    assert pods == expected_pods, "pod index and records disagree"
    expected_spaces = Counter((r["space"], ip, pool) for (pool, ip), r in records.items() if r.get("space") is not None)
    assert Counter(spaces) == expected_spaces, "address-space keys and records disagree"
    held_in_space = [(space, ip) for space, ip, _ in spaces]
    assert len(held_in_space) == len(set(held_in_space)), "an address is held twice in one address space"
    per_attachment = {}
    for (pool, ip), r in records.items():
        slot = (r["network"], r["container_id"], r["ifname"], pool)
        assert slot not in per_attachment, f"{slot} holds {per_attachment[slot]} and {ip}"
        per_attachment[slot] = ip
    return records


class Monitor:
    """Checks snapshots of the store in a loop while the load runs."""

    def __init__(self, cluster, prefix: str, nodes: list) -> None:
        self.cluster, self.prefix = cluster, prefix
        self.node_names = {n.name for n in nodes}
        self.snapshots, self.max_held, self.error = 0, 0, None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                records = check_snapshot(read_prefix(self.cluster, self.prefix))
                for record in records.values():
                    # the node is the one whose NODENAME the plugin ran with (container IDs start with it)
                    assert record["node"] in self.node_names, record
                    assert record["container_id"].startswith(record["node"] + "-"), record
                self.snapshots += 1
                self.max_held = max(self.max_held, len(records))
                self.stop.wait(0.2)
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# -- the load ----------------------------------------------------------------------------------------------


class Held:
    """One successful ADD: what it returned and when it certainly held it."""

    __slots__ = ("cid", "node", "ips", "added", "released")

    def __init__(self, cid, node, ips, added):
        self.cid, self.node, self.ips, self.added = cid, node, ips, added
        self.released = float("inf")  # when its DEL started


def run_churn(bin_dir: str, nodes: list, per_worker: int) -> tuple:
    """Every node's workers at once: (list of Held, list of failed calls)."""
    workers = [(node, w) for node in nodes for w in range(WORKERS)]
    barrier = threading.Barrier(len(workers))
    held_all, failed, errors = [], [], []
    lock = threading.Lock()

    def delete(node, held):
        held.released = time.monotonic()
        call = run_plugin(plugin(bin_dir), node.env("DEL", held.cid, bin_dir), node.config, timeout=120)
        if not call.ok:
            with lock:
                failed.append(("DEL", held.cid, call))

    def worker(node, w):
        try:
            mine = []
            barrier.wait()
            for j in range(per_worker):
                if len(mine) >= HOLD:
                    delete(node, mine.pop(0))
                cid = f"{node.name}-w{w:02d}-c{j:02d}"
                call = run_plugin(plugin(bin_dir), node.env("ADD", cid, bin_dir), node.config, timeout=120)
                if not call.ok:
                    with lock:
                        failed.append(("ADD", cid, call))
                    continue
                held = Held(cid, node.name, addresses(call), time.monotonic())
                mine.append(held)
                with lock:
                    held_all.append(held)
            while mine:
                delete(node, mine.pop(0))
        except BaseException as exc:  # a driver bug must not look like a plugin bug
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=item) for item in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"driver threads failed: {errors!r}"
    return held_all, failed


def overlapping_holders(held_all: list) -> list:
    """Pairs of attachments that certainly held one address at the same time."""
    by_address = {}
    for held in held_all:
        for interface in held.ips:
            by_address.setdefault(interface.ip, []).append(held)
    clashes = []
    for ip, holders in by_address.items():
        holders.sort(key=lambda h: h.added)
        for i, a in enumerate(holders):
            for b in holders[i + 1:]:
                if b.added < a.released and a.added < b.released:
                    clashes.append((str(ip), a.cid, b.cid))
    return clashes


def assert_only_hints_left(cluster, prefix: str) -> list:
    left = read_prefix(cluster, prefix)
    allocation_keys = [key for key, _ in left if key.split("/")[0] in ALLOCATION_FAMILIES]
    assert allocation_keys == [], f"{len(allocation_keys)} allocation keys left, e.g. {allocation_keys[:5]}"
    return left


# -- tests ---------------------------------------------------------------------------------------------------


def test_4_nodes_x_16_processes_churn_on_one_slash24(plugin_bin_dir, etcd_cluster, etcd_prefix, tmp_path):
    nodes = make_nodes(tmp_path, etcd_cluster, etcd_prefix, {"range": V4_RANGE})
    with Monitor(etcd_cluster, etcd_prefix, nodes) as monitor:
        held_all, failed = run_churn(plugin_bin_dir, nodes, PER_WORKER)
    assert monitor.error is None, f"store snapshot check failed: {monitor.error!r}"
    assert monitor.snapshots >= 3, "the monitor must have looked at the store while the load ran"
    assert failed == [], f"{len(failed)} calls failed, first: {failed[:3]}"
    assert len(held_all) == NODES * WORKERS * PER_WORKER, "every ADD answered successfully"

    network = ipaddress.ip_network(V4_RANGE)
    for held in held_all:
        assert len(held.ips) == 1 and held.ips[0].network == network, (held.cid, held.ips)
    assert overlapping_holders(held_all) == [], "an address was held by two attachments at once"
    used = {held.ips[0].ip for held in held_all}
    assert len(used) < len(held_all), "churn: addresses were handed out again after their DEL"
    assert monitor.max_held <= NODES * WORKERS * HOLD
    print(f"{len(held_all)} ADDs on {len(used)} distinct addresses; {monitor.snapshots} store snapshots checked, "
          f"at most {monitor.max_held} held at once")

    # Everything was DELeted: no allocation, index, pod or space key is left.  Hint keys
    # (hints/, hint-spaces/: where the next search starts) may remain; they hold no address.
    left = assert_only_hints_left(etcd_cluster, etcd_prefix)
    assert {key.split("/")[0] for key, _ in left} <= set(HINT_FAMILIES)


def test_4_nodes_x_16_processes_dual_stack(plugin_bin_dir, etcd_cluster, etcd_prefix, tmp_path):
    """ipRanges v4 /24 + v6 /64: every ADD gets one address of each family, none twice at once."""
    ipam = {"ipRanges": [{"range": cidr} for cidr in DUAL_RANGES]}
    nodes = make_nodes(tmp_path, etcd_cluster, etcd_prefix, ipam)
    with Monitor(etcd_cluster, etcd_prefix, nodes) as monitor:
        held_all, failed = run_churn(plugin_bin_dir, nodes, DUAL_PER_WORKER)
    assert monitor.error is None, f"store snapshot check failed: {monitor.error!r}"
    assert monitor.snapshots >= 1
    assert failed == [], f"{len(failed)} calls failed, first: {failed[:3]}"
    assert len(held_all) == NODES * WORKERS * DUAL_PER_WORKER

    networks = [ipaddress.ip_network(cidr) for cidr in DUAL_RANGES]
    for held in held_all:
        assert [i.network for i in held.ips] == networks, (held.cid, held.ips)
    assert overlapping_holders(held_all) == [], "an address was held by two attachments at once"
    # Lowest-free order is kept where it can be: the v6 addresses stay at the bottom of the /64
    # (each worker holds at most HOLD, so no more than 64 x 3 are ever needed at once).
    limit = int(networks[1].network_address) + 4 * NODES * WORKERS * HOLD
    assert all(int(held.ips[1].ip) < limit for held in held_all)
    assert_only_hints_left(etcd_cluster, etcd_prefix)


def test_no_contention_gives_lowest_free_order_across_nodes(plugin_bin_dir, etcd_cluster, etcd_prefix, tmp_path):
    """Sequential ADDs from the nodes in turn: .1, .2, .3 ... cluster-wide; a freed address is next."""
    nodes = make_nodes(tmp_path, etcd_cluster, etcd_prefix, {"range": "10.42.0.0/24"})

    def add(i: int, cid: str):
        node = nodes[i % NODES]
        call = run_plugin(plugin(plugin_bin_dir), node.env("ADD", cid, plugin_bin_dir), node.config)
        assert call.ok, call
        return str(addresses(call)[0])

    got = [add(i, f"{nodes[i % NODES].name}-seq{i}") for i in range(8)]
    assert got == [f"10.42.0.{i}/24" for i in range(1, 9)]

    node = nodes[1]
    done = run_plugin(plugin(plugin_bin_dir), node.env("DEL", "node-2-seq2", plugin_bin_dir), node.config)
    assert done.ok, done  # any node may free any attachment: the store is the cluster's
    assert add(3, "node-3-again") == "10.42.0.3/24"
    assert add(0, "node-0-next") == "10.42.0.9/24"

    records = check_snapshot(read_prefix(etcd_cluster, etcd_prefix))
    by_cid = {r["container_id"]: r for r in records.values()}
    assert "node-2-seq2" not in by_cid
    assert by_cid["node-3-again"]["ip"] == "10.42.0.3" and by_cid["node-3-again"]["node"] == "node-3"
    assert by_cid["node-0-next"]["pod"] == "load/pod-node-0-next"
