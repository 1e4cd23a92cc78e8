"""Many whereabouts plugin processes at once on one SQLite store.

The real launchers are exec'd, as a runtime does it: 16 driver threads start
together (behind a barrier) and each execs its share of ADDs one after
another with distinct container IDs, so up to 16 plugin processes contend
for the store at any moment -- including for creating it, since the store
file does not exist before the first ADD.  Afterwards the store is read
with the ``sqlite3`` module directly, not through our store class.

Cost: a plugin exec is about 1/90 s of the machine's CPU on 2 cores, so the
single-network test (800 ADDs + 800 DELs) takes about 20 s.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import sqlite3
import subprocess
import threading
import time

from cni_ipam_lab.namespaces import cni_env, run_plugin
from plugin_procs import flock_pids, sqlite_rows

WORKERS = 16
PER_WORKER = 50  # 16 x 50 = 800 ADDs on one range
SUBNET = "10.2.0.0/16"


def netconf(db: str, network_name: str = "", net: str = "wb-net") -> dict:
    ipam = {"type": "whereabouts", "range": SUBNET, "sqlite_path": db}
    if network_name:
        ipam["network_name"] = network_name
    return {"cniVersion": "1.0.0", "name": net, "type": "whereabouts", "ipam": ipam}


def run_all(bin_dir: str, jobs_per_worker: list) -> dict:
    """Run every worker's jobs (command, container_id, config) at once; {(command, container_id): CNICall}."""
    plugin = os.path.join(bin_dir, "whereabouts")
    barrier = threading.Barrier(len(jobs_per_worker))
    results, errors = {}, []
    lock = threading.Lock()

    def worker(jobs):
        try:
            barrier.wait()
            for command, container_id, config in jobs:
                env = cni_env(command, container_id, f"/var/run/netns/{container_id}", "net1", cni_path=bin_dir)
                call = run_plugin(plugin, env, config, timeout=120)
                with lock:
                    results[(command, container_id)] = call
        except BaseException as exc:  # a driver bug must not look like a plugin bug
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(jobs,)) for jobs in jobs_per_worker]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"driver threads failed: {errors!r}"
    return results


def failures(results: dict) -> list:
    return [(key, call) for key, call in results.items() if not call.ok]


def returned_ip(call) -> ipaddress.IPv4Address:
    ips = call.output["ips"]
    assert len(ips) == 1, call
    interface = ipaddress.ip_interface(ips[0]["address"])
    assert interface.network == ipaddress.ip_network(SUBNET), call
    return interface.ip


def first_addresses(count: int) -> set:
    """The ``count`` lowest usable addresses of SUBNET: what lowest-free gives with no DELs in between."""
    hosts = ipaddress.ip_network(SUBNET).hosts()
    return {next(hosts) for _ in range(count)}


def test_16_processes_one_range_no_duplicates_then_all_released(bin_dir, tmp_path):
    db = str(tmp_path / "store" / "whereabouts.db")  # does not exist yet: the first ADDs race to create it
    conf = netconf(db)
    ids = [[f"w{w:02d}-c{j:03d}" for j in range(PER_WORKER)] for w in range(WORKERS)]

    added = run_all(bin_dir, [[("ADD", cid, conf) for cid in mine] for mine in ids])
    assert len(added) == WORKERS * PER_WORKER
    assert failures(added) == [], f"{len(failures(added))} ADDs failed, first: {failures(added)[:3]}"

    by_container = {cid: returned_ip(call) for (_, cid), call in added.items()}
    addresses = list(by_container.values())
    assert len(set(addresses)) == len(addresses), "an address was handed out twice"
    # Every ADD was serialized and took the lowest free address, so together they are the lowest 800.
    assert set(addresses) == first_addresses(WORKERS * PER_WORKER)

    rows = sqlite_rows(db)
    assert len(rows) == WORKERS * PER_WORKER
    assert len({row[5] for row in rows}) == len(rows)
    assert {(row[3], row[4]): row[5] for row in rows} == {(cid, "net1"): ip for cid, ip in by_container.items()}
    assert {row[2] for row in rows} == {"wb-net"}

    deleted = run_all(bin_dir, [[("DEL", cid, conf) for cid in reversed(mine)] for mine in ids])
    assert len(deleted) == WORKERS * PER_WORKER
    assert failures(deleted) == [], f"{len(failures(deleted))} DELs failed, first: {failures(deleted)[:3]}"
    assert sqlite_rows(db) == []

    # The store is still healthy: a fresh ADD gets the lowest address again (hint lowered by the DELs).
    again = run_plugin(os.path.join(bin_dir, "whereabouts"),
                       cni_env("ADD", "after", "/var/run/netns/after", "net1", cni_path=bin_dir), conf)
    assert again.ok, again
    assert returned_ip(again) == ipaddress.ip_address("10.2.0.1")


def test_two_network_names_share_one_cidr_concurrently(bin_dir, tmp_path):
    """Two network_names over one CIDR are separate address spaces; both are fully served at once.

    Each worker alternates between the names, so both are contended at every
    moment (16 x 16 = 256 ADDs, 128 per name).
    """
    per_worker = 16
    db = str(tmp_path / "whereabouts.db")
    confs = {"blue": netconf(db, "blue"), "green": netconf(db, "green")}
    jobs, owner = [], {}
    for w in range(WORKERS):
        mine = []
        for j in range(per_worker):
            name = ("blue", "green")[(w + j) % 2]
            cid = f"{name}-w{w:02d}-c{j:03d}"
            owner[cid] = name
            mine.append(("ADD", cid, confs[name]))
        jobs.append(mine)

    added = run_all(bin_dir, jobs)
    assert len(added) == WORKERS * per_worker
    assert failures(added) == [], f"{len(failures(added))} ADDs failed, first: {failures(added)[:3]}"

    per_name = {"blue": {}, "green": {}}
    for (_, cid), call in added.items():
        per_name[owner[cid]][cid] = returned_ip(call)
    half = WORKERS * per_worker // 2
    for name, got in per_name.items():
        assert len(got) == half, name
        assert len(set(got.values())) == half, f"{name}: an address was handed out twice within the name"
        assert set(got.values()) == first_addresses(half), f"{name} was not served from its own lowest addresses"

    rows = sqlite_rows(db)
    assert len(rows) == WORKERS * per_worker
    for name, got in per_name.items():
        mine = [row for row in rows if row[1] == name]
        assert {row[0] for row in mine} == {f"{name}/{SUBNET}"}
        assert {(row[3], row[4]): row[5] for row in mine} == {(cid, "net1"): ip for cid, ip in got.items()}

    deleted = run_all(bin_dir, [[("DEL", cid, conf) for _, cid, conf in mine] for mine in jobs])
    assert failures(deleted) == [], f"{len(failures(deleted))} DELs failed, first: {failures(deleted)[:3]}"
    assert sqlite_rows(db) == []


def test_second_process_creating_the_store_waits_for_the_first(bin_dir, tmp_path):
    """The first two ADDs on a node both create the store; the second must wait, not fail.

    This test stands in for the first one caught half-way: it holds the
    store's side lock file (the flock every store user takes first) and the
    write lock of a fresh database file, as a process switching it to WAL
    does.  SQLite fails a second journal-mode switch at once with "database
    is locked", without waiting, so an ADD that switched without the flock
    answered code 11 here.
    """
    db = str(tmp_path / "whereabouts.db")
    lock_fd = os.open(db + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    first = sqlite3.connect(db, isolation_level=None)
    first.execute("BEGIN IMMEDIATE")
    try:
        second = subprocess.Popen([os.path.join(bin_dir, "whereabouts")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=cni_env("ADD", "second", "/var/run/netns/second", "net1", cni_path=bin_dir))
        second.stdin.write(json.dumps(netconf(db)).encode())
        second.stdin.close()
        # The ADD has reached the store when the kernel shows it queued for the side lock file's flock.
        deadline = time.monotonic() + 60
        while second.pid not in flock_pids(db + ".lock")[1]:
            assert second.poll() is None and time.monotonic() < deadline, \
                f"the second ADD never waited for the store's lock: {second.poll()}"
            time.sleep(0.001)
    finally:
        first.execute("ROLLBACK")
        first.close()
        os.close(lock_fd)
    with second:
        out, err = second.stdout.read(), second.stderr.read()
    assert second.returncode == 0, (out, err)
    assert json.loads(out)["ips"] == [{"address": "10.2.0.1/16"}]
    assert [row[3] for row in sqlite_rows(db)] == ["second"]
