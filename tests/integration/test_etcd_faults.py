"""Cluster mode under faults: the etcd leader killed mid-load, quorum lost, plugins killed mid-ADD.

These tests kill etcd members, so they run on a cluster of their own (three
members in tmp, on ports found free from 25790 up), never on the shared one
that ``make test`` starts; it is stopped at the end of the module.

What must hold whatever fails:

* no address is ever held twice, and no successful ADD is lost: every ADD
  that answered with a result is in the store with exactly those addresses;
* an ADD that fails does so with code 11 ("try again later") and holds
  nothing afterwards (it gives back what it claimed before failing);
* a plugin killed with SIGKILL after its claim reached etcd leaves an
  allocation that CNI GC (cniVersion 1.1.0, ``cni.dev/valid-attachments``)
  finds and frees, so after GC the store holds exactly the successful ADDs.

Kill points of the random-kill test are seeded; the seed is printed and
``CNI_IPAM_CRASH_SEED=<seed>`` replays a run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter

import pytest

from cni_ipam_lab.namespaces import cni_env, run_plugin
from plugin_procs import add_killed_at_random, finish, kill_window, start_add

NETWORK = "fault-net"
IFNAME = "net1"
RANGES = ("10.60.0.0/24", "fd60::/64")  # dual-stack: a failed ADD may have claimed its first range only
ALLOCATION_FAMILIES = ("pools", "spaces", "attachments", "pods")
HINT_FAMILIES = ("hints", "hint-spaces")


# -- a cluster of our own ---------------------------------------------------------------------------------


def unused_port() -> int:
    """A loopback port with nothing listening on it (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- plugin calls ----------------------------------------------------------------------------------------------


def netconf(endpoints: list, prefix: str, cni_version: str = "1.1.0", **ipam_extra) -> dict:
    ipam = {"type": "whereabouts", "ipRanges": [{"range": cidr} for cidr in RANGES], "datastore": "etcd",
            "etcd_endpoints": list(endpoints), "etcd_prefix": prefix}
    ipam.update(ipam_extra)
    return {"cniVersion": cni_version, "name": NETWORK, "type": "whereabouts", "ipam": ipam}


def env_for(command: str, bin_dir: str, container_id: str = "") -> dict:
    if not container_id:
        return cni_env(command, cni_path=bin_dir, extra={"NODENAME": "fault-node"})
    return cni_env(command, container_id, f"/var/run/netns/{container_id}", IFNAME, cni_path=bin_dir,
                   extra={"NODENAME": "fault-node"})


def call(bin_dir: str, command: str, container_id: str, config: dict, timeout: float = 120):
    return run_plugin(os.path.join(bin_dir, "whereabouts"), env_for(command, bin_dir, container_id), config,
                      timeout=timeout)


def returned(result: dict) -> set:
    return {ipaddress.ip_interface(ip["address"]).ip for ip in result["ips"]}


# -- the store, read directly ---------------------------------------------------------------------------------


def unseg(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def ip_of_key(text: str):
    value = int(text[1:], 16)
    return ipaddress.IPv4Address(value) if text[0] == "4" else ipaddress.IPv6Address(value)


def held_by_attachment(cluster, prefix: str, endpoints=None) -> dict:
    """{container_id: {addresses}} from one consistent read of the prefix, after checking it is whole.

    Whole: one record per address and per address space, and the attachment
    index and space keys match the records exactly (a claim and a release
    are single transactions, so a kill can never leave half of one).
    """
    from cni_ipam.store.etcd_client import EtcdClient

    client = EtcdClient(endpoints or cluster.endpoints, timeout=5, deadline=30)
    try:
        kvs = client.prefix(prefix.encode())
    finally:
        client.close()
    records, index, spaces = {}, set(), []
    for kv in kvs:
        key = kv["key"][len(prefix):].decode()
        family, _, rest = key.partition("/")
        parts = rest.split("/")
        assert family in ALLOCATION_FAMILIES + HINT_FAMILIES, key
        if family == "pools":
            records[(unseg(parts[0]), ip_of_key(parts[1]))] = json.loads(kv["value"])
        elif family == "attachments":
            index.add((unseg(parts[1]), unseg(parts[3]), ip_of_key(parts[4])))
        elif family == "spaces":
            spaces.append((unseg(parts[0]), ip_of_key(parts[1])))
    assert index == {(r["container_id"], pool, ip) for (pool, ip), r in records.items()}, \
        "attachment index and allocation records disagree"
    assert Counter(spaces) == Counter((r["space"], ip) for (_, ip), r in records.items()), \
        "address-space keys and allocation records disagree"
    assert len(set(spaces)) == len(spaces), "an address is held twice in one address space"
    held = {}
    for (pool, ip), record in records.items():
        assert record["network"] == NETWORK and record["ifname"] == IFNAME, record
        mine = held.setdefault(record["container_id"], set())
        assert ip.version not in {a.version for a in mine}, f"{record['container_id']} holds two {pool} addresses"
        mine.add(ip)
    return held


def check_outcomes(succeeded: dict, failed: dict, held: dict) -> None:
    """Successful ADDs are held exactly as answered, failed ones hold nothing, nothing else is held."""
    addresses = [ip for ips in succeeded.values() for ip in ips]
    assert len(addresses) == len(set(addresses)), "two successful ADDs were given one address"
    for cid, ips in succeeded.items():
        assert held.get(cid) == ips, f"{cid}: ADD returned {sorted(map(str, ips))}, store has {held.get(cid)}"
    for cid, result in failed.items():
        assert result.output and result.output.get("code") == 11, f"{cid}: failed other than with code 11: {result}"
        assert cid not in held, f"{cid}: its ADD failed but it holds {held[cid]}"
    assert set(held) == set(succeeded), f"allocations nobody got an answer for: {sorted(set(held) - set(succeeded))}"


# -- tests ----------------------------------------------------------------------------------------------------------


def run_load(bin_dir: str, config: dict, workers: int, per_worker: int, tag: str, progress=None) -> tuple:
    """``workers`` threads exec ``per_worker`` ADDs each.

    Returns ({cid: addresses}, {cid: failed call}, {cid: (start, end)}).
    """
    succeeded, failed, times, errors = {}, {}, {}, []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def worker(w):
        try:
            barrier.wait()
            for j in range(per_worker):
                cid = f"{tag}-w{w:02d}-{j:03d}"
                started = time.monotonic()
                result = call(bin_dir, "ADD", cid, config)
                with lock:
                    times[cid] = (started, time.monotonic())
                    if result.ok:
                        succeeded[cid] = returned(result.output)
                    else:
                        failed[cid] = result
                if progress is not None:
                    progress()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"driver threads failed: {errors!r}"
    return succeeded, failed, times


def test_leader_killed_during_concurrent_adds(plugin_bin_dir, healthy, etcd_prefix):
    cluster = healthy
    config = netconf(cluster.endpoints, etcd_prefix)
    workers, per_worker = 16, 10
    total = workers * per_worker
    done = {"count": 0}
    events = {}
    lock = threading.Lock()
    victim = cluster.leader()

    def progress():
        with lock:
            done["count"] += 1
            count = done["count"]
        if count == total // 3:  # a third in: SIGKILL the leader under load
            events["killed"] = time.monotonic()
            cluster.kill(victim)
        elif count == 2 * total // 3:  # two thirds in: bring it back and let it catch up
            events["restarting"] = time.monotonic()
            cluster.start_member(victim)

    succeeded, failed, times = run_load(plugin_bin_dir, config, workers, per_worker, "lk", progress)
    assert "killed" in events and "restarting" in events
    assert len(succeeded) + len(failed) == total, "every ADD answered"
    print(f"leader {victim.name} killed after {total // 3} ADDs: {len(succeeded)} ADDs succeeded, {len(failed)} failed")
    # ADDs were served while the old leader was dead: the cluster kept allocating without it.
    during = [cid for cid, (start, end) in times.items()
              if start > events["killed"] and end < events["restarting"] and cid in succeeded]
    assert during, "no ADD ran entirely while the leader was down"
    cluster.wait_healthy(30)
    assert cluster.leader() is not None

    check_outcomes(succeeded, failed, held_by_attachment(cluster, etcd_prefix))

    # Keep going on the healed cluster: 16 more ADDs at once, all answered, still no duplicate.
    more, more_failed, _ = run_load(plugin_bin_dir, config, workers, 1, "after")
    assert more_failed == {}, f"ADDs failed on the healed cluster: {list(more_failed.items())[:3]}"
    succeeded.update(more)
    check_outcomes(succeeded, failed, held_by_attachment(cluster, etcd_prefix))
    # The restarted member has caught up: it alone serves the same allocations.
    assert held_by_attachment(cluster, etcd_prefix, [victim.client_url]) == \
        held_by_attachment(cluster, etcd_prefix)

    # And everything DELs cleanly, leaving only hint keys.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        deleted = list(pool.map(lambda cid: call(plugin_bin_dir, "DEL", cid, config), list(succeeded) + list(failed)))
    assert [d for d in deleted if not d.ok] == []
    assert held_by_attachment(cluster, etcd_prefix) == {}


def test_a_write_right_after_the_leader_dies_waits_less_than_a_request_timeout(healthy, etcd_prefix):
    """A client on the leader, the leader killed, a write at once: its connection is refused, and until the members
    left have elected a new leader (1-2 s) they forward the write to the dead one and hold it for etcd's own request
    timeout (7 s).  After a failed attempt the client waits at most FAILOVER_TIMEOUT (doubling each round) before it
    tries the next member, not a whole request timeout: the stall of every ADD in flight when a leader dies."""
    from cni_ipam.store.etcd_client import DEFAULT_TIMEOUT, EtcdClient, put

    cluster = healthy
    leader = cluster.leader()
    key = (etcd_prefix + "written-after-the-kill").encode()
    client = EtcdClient([leader.client_url] + [m.client_url for m in cluster.members if m is not leader],
                        timeout=DEFAULT_TIMEOUT, deadline=30)
    try:
        assert client.get(key) is None  # connected to the leader
        cluster.kill(leader)
        started = time.monotonic()
        client.txn([], [put(key, b"after")])
        took = time.monotonic() - started
    finally:
        client.close()
    print(f"the write was answered {took:.2f} s after the leader was killed")
    assert took < DEFAULT_TIMEOUT, f"the write took {took:.1f} s: one of its attempts waited out a whole timeout"
    cluster.start_member(leader)
    cluster.wait_healthy(30)
    reader = EtcdClient([leader.client_url], deadline=30)
    try:
        assert reader.get(key)["value"] == b"after"  # the restarted member has it too
    finally:
        reader.close()


def test_quorum_lost_adds_fail_with_code_11_and_hold_nothing(plugin_bin_dir, healthy, etcd_prefix):
    """Two of three members down: no write can commit, so ADDs fail with code 11 and leave nothing."""
    cluster = healthy
    config = netconf(cluster.endpoints, etcd_prefix, etcd_timeout=0.5)
    warm = call(plugin_bin_dir, "ADD", "before", config)
    assert warm.ok, warm
    down = [cluster.leader()]
    down.append(next(m for m in cluster.members if m is not down[0]))
    for member in down:
        cluster.kill(member)
    try:
        failed_calls, errors = {}, []

        def attempt(cid):
            try:
                failed_calls[cid] = call(plugin_bin_dir, "ADD", cid, config)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=attempt, args=(f"noquorum-{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
    finally:
        for member in down:
            cluster.start_member(member)
    cluster.wait_healthy(30)

    for cid, result in failed_calls.items():
        assert not result.ok, f"{cid}: ADD succeeded without a quorum: {result}"
        assert result.output["code"] == 11, result
        assert "etcd" in result.output["msg"], result
    check_outcomes({"before": returned(warm.output)}, failed_calls, held_by_attachment(cluster, etcd_prefix))

    # The runtime retries: the same attachments now get addresses.
    for cid in failed_calls:
        again = call(plugin_bin_dir, "ADD", cid, config)
        assert again.ok, again
    held = held_by_attachment(cluster, etcd_prefix)
    assert set(held) == {"before"} | set(failed_calls)


def test_failover_past_a_hung_member(plugin_bin_dir, healthy, etcd_prefix):
    """A member that accepts connections but never answers (SIGSTOP) costs one request timeout, then failover."""
    cluster = healthy
    hung = cluster.members[0]
    config = netconf([hung.client_url, cluster.members[1].client_url], etcd_prefix, etcd_timeout=0.5)
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        result = call(plugin_bin_dir, "ADD", "past-hung", config)
        deleted = call(plugin_bin_dir, "DEL", "past-hung", config)
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    assert result.ok, result
    assert deleted.ok, deleted
    assert returned(result.output) == {ipaddress.ip_address("10.60.0.1"), ipaddress.ip_address("fd60::1")}
    cluster.wait_healthy(30)
    assert held_by_attachment(cluster, etcd_prefix) == {}


def test_unreachable_endpoints_give_code_11(plugin_bin_dir, etcd_prefix):
    """Nothing listens at any endpoint: ADD and DEL fail with code 11 once the deadline has passed."""
    endpoints = [f"http://127.0.0.1:{unused_port()}", f"http://127.0.0.1:{unused_port()}"]
    config = netconf(endpoints, etcd_prefix, etcd_timeout=0.2)
    results = {}

    def attempt(command):
        results[command] = call(plugin_bin_dir, command, "nowhere", config)

    threads = [threading.Thread(target=attempt, args=(command,)) for command in ("ADD", "DEL")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for command, result in results.items():
        assert not result.ok, (command, result)
        assert result.output["code"] == 11, (command, result)
        assert "no etcd endpoint answered" in result.output["msg"], (command, result)
        assert endpoints[0] in result.output["msg"] and endpoints[1] in result.output["msg"], (command, result)


@pytest.mark.parametrize("ipam", [
    {"etcd_endpoints": ["http://127.0.0.1"]},  # no port
    {"etcd_endpoints": ["ftp://127.0.0.1:2379"]},  # not http(s)
    {"etcd_host": "127.0.0.1:2379,127.0.0.1:port"},  # whereabouts' comma-separated form, one bad
    {"etcd_endpoints": ["http://127.0.0.1:2379/v3/kv"]},  # a path
    {"etcd_endpoints": "http://127.0.0.1:2379"},  # not a list
], ids=["no-port", "scheme", "host-list", "path", "not-list"])
def test_bad_endpoint_url_gives_code_7(plugin_bin_dir, etcd_prefix, ipam):
    config = netconf([], etcd_prefix)
    del config["ipam"]["etcd_endpoints"]
    config["ipam"].update(ipam)
    result = call(plugin_bin_dir, "ADD", "bad-url", config)
    assert not result.ok, result
    assert result.output["code"] == 7, result
    assert "etcd_" in result.output["msg"], result


class HoldingProxy:
    """A TCP proxy to one etcd member that withholds etcd's answer to the first writing ``kv/txn``.

    The first txn of an ADD that puts keys is its claim (the ones before it
    only read, in one round trip each): when its answer arrives here the
    claim is committed in etcd, and the plugin is still waiting -- the moment
    to SIGKILL it so that it dies after its commit and before any answer.
    """

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.armed = True
        self.withheld = threading.Event()
        self.sockets = [self.server]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client, upstream]
            hold = threading.Event()
            threading.Thread(target=self._pump, args=(client, upstream, hold, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, hold, False), daemon=True).start()

    def _pump(self, source, sink, hold, from_client) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return
                if from_client:
                    with self.lock:
                        if self.armed and b"POST /v3/kv/txn " in data and b"request_put" in data:
                            self.armed = False
                            hold.set()  # before forwarding, so the answer cannot slip through
                elif hold.is_set():
                    self.withheld.set()
                    continue
                sink.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("CNI_IPAM_CRASH_SEED") or random.SystemRandom().randrange(2 ** 32))
    print(f"etcd crash test seed: {value} (replay with CNI_IPAM_CRASH_SEED={value})")
    return value


def test_sigkill_mid_add_leaves_only_what_gc_finds(plugin_bin_dir, healthy, etcd_prefix, seed):
    cluster = healthy
    rng = random.Random(seed)
    why = f"seed {seed}"
    config = netconf(cluster.endpoints, etcd_prefix)
    succeeded, failed, killed, durations, bad = {}, {}, [], [], []
    lock = threading.Lock()

    # 1. Deterministic: killed after its first claim (the IPv4 range) is committed, before it is answered.
    proxy = HoldingProxy(cluster.members[0].client_port)
    try:
        proc = start_add(plugin_bin_dir, env_for("ADD", plugin_bin_dir, "claimed-then-killed"),
                         netconf([proxy.url], etcd_prefix))
        got_there = proxy.withheld.wait(60)
        proc.send_signal(signal.SIGKILL)
        code, out, err = finish(proc)
    finally:
        proxy.close()
    assert got_there, f"the plugin never sent its claim: {code} {out} {err}"
    assert code == -signal.SIGKILL, (code, out, err)
    killed.append("claimed-then-killed")
    orphan = held_by_attachment(cluster, etcd_prefix).get("claimed-then-killed")
    assert orphan is not None and {ip.version for ip in orphan} == {4}, \
        f"the committed claim of the killed ADD is not in the store as one IPv4 address: {orphan}"

    # 2. Random: ADDs killed a random time into their run while others complete around them.
    stop = threading.Event()

    def background(w):
        j = 0
        while not stop.is_set():
            cid = f"bg{w}-{j:03d}"
            started = time.monotonic()
            result = call(plugin_bin_dir, "ADD", cid, config)
            with lock:
                durations.append(time.monotonic() - started)
                if result.ok:
                    succeeded[cid] = returned(result.output)
                else:
                    failed[cid] = result
            j += 1

    threads = [threading.Thread(target=background, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(16):
            cid = f"killed-{i:02d}"
            code, out, err, _ = add_killed_at_random(plugin_bin_dir, env_for("ADD", plugin_bin_dir, cid), config,
                                                  kill_window(durations, lock, 0.04), rng)
            if code == -signal.SIGKILL:
                killed.append(cid)
            elif code == 0:  # it beat the kill: a successful ADD like any other
                succeeded[cid] = returned(json.loads(out))
            else:
                bad.append((cid, code, out, err))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert bad == [] and failed == {}, f"{why}: ADDs failed without being killed: {bad[:3]} {list(failed.items())[:3]}"

    held = held_by_attachment(cluster, etcd_prefix)
    orphans = set(held) - set(succeeded)
    assert orphans <= set(killed), f"{why}: allocations nobody asked for: {orphans - set(killed)}"
    assert "claimed-then-killed" in orphans
    for cid, ips in succeeded.items():
        assert held.get(cid) == ips, f"{why}: {cid}'s ADD returned {ips}, the store has {held.get(cid)}"
    print(f"{len(succeeded)} ADDs succeeded, {len(killed)} killed, {len(orphans)} left allocations for GC")

    valid = [{"containerID": cid, "ifname": IFNAME} for cid in sorted(succeeded)]
    gc_config = dict(config, **{"cni.dev/valid-attachments": valid})
    gc = run_plugin(os.path.join(plugin_bin_dir, "whereabouts"), env_for("GC", plugin_bin_dir), gc_config)
    assert gc.ok, f"{why}: {gc}"
    check_outcomes(succeeded, {}, held_by_attachment(cluster, etcd_prefix))

    # The range still serves: the next ADD gets an address nobody holds.
    again = call(plugin_bin_dir, "ADD", "after-gc", config)
    assert again.ok, again
    assert not returned(again.output) & {ip for ips in succeeded.values() for ip in ips}
