"""whereabouts plugin processes killed with SIGKILL in the middle of ADD.

A process can die anywhere: while Python starts, while it opens (or
creates) the store, inside the transaction, after the commit but before it
printed its result.  SQLite's WAL plus the flock must keep the store whole
and never hand an address out twice; an allocation whose ADD died after the
commit is an orphan that the runtime's CNI GC (cniVersion 1.1.0,
``cni.dev/valid-attachments``) frees.

The kill points are random but seeded: the seed is printed, and
``CNI_IPAM_CRASH_SEED=<seed>`` replays a run.  Each killed process is
stopped first and /proc/locks read, so the test knows which kills landed
while the process held the store's flock, i.e. inside its transaction
(the lock is taken before ``BEGIN IMMEDIATE`` and dropped after
``COMMIT``); a few more ADDs are killed the moment they are seen holding
it, and the test requires that such kills happened.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import sqlite3
import threading
import time

import pytest

from cni_ipam_lab.namespaces import cni_env, run_plugin
from plugin_procs import add_killed_at_random, add_killed_holding_lock, finish, kill_window, sqlite_rows, start_add

SUBNET = "10.3.0.0/16"
NETWORK = "crash-net"
IFNAME = "net1"
KILLS = 40
# A kill comes a random time after the exec: in the first 40 ms, or within the time a whole ADD is taking
# at the moment (measured on the background ADDs) if that is longer, so that on a loaded machine kills
# still land inside the store transaction and after the commit, not only during interpreter start-up.
KILL_WINDOW = 0.040
BACKGROUND_WORKERS = 3  # ADDs that run to completion alongside the killed ones
KILLS_HOLDING_LOCK = 5  # ADDs killed the moment they hold the store's flock


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("CNI_IPAM_CRASH_SEED") or random.SystemRandom().randrange(2 ** 32))
    print(f"crash test seed: {value} (replay with CNI_IPAM_CRASH_SEED={value})")
    return value


def netconf(db: str, **extra) -> dict:
    conf = {"cniVersion": "1.1.0", "name": NETWORK, "type": "whereabouts",
            "ipam": {"type": "whereabouts", "range": SUBNET, "sqlite_path": db}}
    conf.update(extra)
    return conf


def env_for(command: str, bin_dir: str, container_id: str = "") -> dict:
    netns = f"/var/run/netns/{container_id}" if container_id else ""
    return cni_env(command, container_id, netns, IFNAME if container_id else "", cni_path=bin_dir)


def add(bin_dir: str, db: str, container_id: str):
    return run_plugin(os.path.join(bin_dir, "whereabouts"), env_for("ADD", bin_dir, container_id), netconf(db))


def address_of(call) -> ipaddress.IPv4Address:
    return address_in(call.output)


def address_in(result: dict) -> ipaddress.IPv4Address:
    (ip,) = result["ips"]
    return ipaddress.ip_interface(ip["address"]).ip


def check_store_whole(db: str, why: str) -> None:
    """integrity_check passes and no address is held twice, in its pool or in its address space."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], why
        assert con.execute("SELECT pool, ip, COUNT(*) FROM allocations GROUP BY pool, ip "
                           "HAVING COUNT(*) > 1").fetchall() == [], why
        assert con.execute("SELECT space, ip, COUNT(*) FROM allocations WHERE space IS NOT NULL "
                           "GROUP BY space, ip HAVING COUNT(*) > 1").fetchall() == [], why
        assert con.execute("SELECT network, container_id, ifname, pool, COUNT(*) FROM allocations "
                           "GROUP BY network, container_id, ifname, pool HAVING COUNT(*) > 1").fetchall() == [], why
    finally:
        con.close()


def lowest_free(held) -> ipaddress.IPv4Address:
    held = set(held)
    return next(ip for ip in ipaddress.ip_network(SUBNET).hosts() if ip not in held)


def test_sigkill_during_add_keeps_store_whole_and_gc_frees_orphans(bin_dir, tmp_path, seed):
    rng = random.Random(seed)
    why = f"seed {seed}"
    db = str(tmp_path / "whereabouts.db")  # created by whichever ADD gets there first, maybe a killed one
    succeeded = {}  # container_id -> address its ADD returned
    bad = []  # ADDs that neither succeeded nor were killed
    lock = threading.Lock()
    stop = threading.Event()

    durations = []  # of the background ADDs, for the kill window

    def background(worker):
        j = 0
        while not stop.is_set():
            cid = f"bg{worker}-{j:04d}"
            started = time.monotonic()
            call = add(bin_dir, db, cid)
            with lock:
                durations.append(time.monotonic() - started)
                if call.ok:
                    succeeded[cid] = address_of(call)
                else:
                    bad.append((cid, call))
            j += 1

    threads = [threading.Thread(target=background, args=(w,)) for w in range(BACKGROUND_WORKERS)]
    for thread in threads:
        thread.start()
    killed, finished_first = [], []
    in_transaction = []  # killed while holding the store's flock
    lock_file = db + ".lock"
    try:
        for i in range(KILLS + KILLS_HOLDING_LOCK):
            cid = f"killed-{i:03d}"
            env = env_for("ADD", bin_dir, cid)
            if i < KILLS:
                code, out, err, held = add_killed_at_random(bin_dir, env, netconf(db),
                                                            kill_window(durations, lock, KILL_WINDOW), rng, lock_file)
            else:
                code, out, err, held = add_killed_holding_lock(bin_dir, env, netconf(db), lock_file)
            if code == -signal.SIGKILL:
                killed.append(cid)
                if held:
                    in_transaction.append(cid)
            elif code == 0:  # it beat the kill: a successful ADD like any other
                finished_first.append(cid)
                with lock:
                    succeeded[cid] = address_in(json.loads(out))
            else:
                bad.append((cid, (code, out, err)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert bad == [], f"{why}: ADDs failed without being killed: {bad[:3]}"
    assert killed, f"{why}: every ADD finished before its kill; the test killed nothing"
    assert in_transaction, f"{why}: no kill landed while the process held the store's lock (inside its transaction)"
    assert len(set(succeeded.values())) == len(succeeded), f"{why}: two successful ADDs got one address"

    check_store_whole(db, why)
    rows = sqlite_rows(db)
    held = {(cid, ifname): ip for _, _, network, cid, ifname, ip in rows if network == NETWORK}
    assert len(held) == len(rows), why
    for cid, ip in succeeded.items():
        assert held.get((cid, IFNAME)) == ip, f"{why}: {cid}'s ADD returned {ip}, the store has {held.get((cid, IFNAME))}"
    orphans = {cid for cid, _ in held if cid not in succeeded}
    assert orphans <= set(killed), f"{why}: allocations nobody asked for: {orphans - set(killed)}"
    print(f"{len(succeeded)} ADDs succeeded ({len(finished_first)} of them beat their kill), {len(killed)} killed "
          f"({len(in_transaction)} holding the store's lock), {len(orphans)} killed after their commit (orphans for GC)")

    valid = [{"containerID": cid, "ifname": IFNAME} for cid in sorted(succeeded)]
    gc = run_plugin(os.path.join(bin_dir, "whereabouts"), env_for("GC", bin_dir),
                    netconf(db, **{"cni.dev/valid-attachments": valid}))
    assert gc.ok, f"{why}: {gc}"

    check_store_whole(db, why)
    after_gc = {(cid, ifname): ip for _, _, _, cid, ifname, ip in sqlite_rows(db)}
    assert after_gc == {(cid, IFNAME): ip for cid, ip in succeeded.items()}, why

    # The hint survived the kills and the GC: the next ADD gets the lowest free address.
    again = add(bin_dir, db, "after-gc")
    assert again.ok, f"{why}: {again}"
    assert address_of(again) == lowest_free(after_gc.values()), why
    check_store_whole(db, why)


def test_sigkill_while_the_store_is_being_created(bin_dir, tmp_path, seed):
    """A process killed while it creates the store file must not leave a store that fails every later ADD.

    Each round kills the first ADD on a fresh path just after the database
    file appears (a random 0-4 ms later: the creation itself takes a few ms).
    """
    rng = random.Random(seed)
    for round_ in range(30):
        why = f"seed {seed}, round {round_}"
        db = str(tmp_path / f"round{round_}" / "whereabouts.db")
        proc = start_add(bin_dir, env_for("ADD", bin_dir, "first"), netconf(db))
        deadline = time.monotonic() + 30
        while not os.path.exists(db) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0002)
        time.sleep(rng.uniform(0, 0.004))
        proc.send_signal(signal.SIGKILL)
        code, out, err = finish(proc)
        assert code in (0, -signal.SIGKILL), f"{why}: {code} {out} {err}"

        call = add(bin_dir, db, "second")
        assert call.ok, f"{why}: the store is unusable after a kill during its creation: {call}"
        check_store_whole(db, why)
        held = {cid: ip for _, _, _, cid, _, ip in sqlite_rows(db)}
        assert held["second"] == address_of(call), why
        assert set(held) <= {"first", "second"}, why


def test_store_left_half_created_is_completed_on_next_open(bin_dir, tmp_path):
    """What a kill between the WAL switch and the end of the schema leaves: WAL on, one table only."""
    db = str(tmp_path / "whereabouts.db")
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE allocations (pool TEXT NOT NULL, ip BLOB NOT NULL, space TEXT, network TEXT NOT NULL, "
                "container_id TEXT NOT NULL, ifname TEXT NOT NULL, pod TEXT NOT NULL DEFAULT '', "
                "netns TEXT NOT NULL DEFAULT '', node TEXT NOT NULL DEFAULT '', created REAL NOT NULL, "
                "PRIMARY KEY (pool, ip)) WITHOUT ROWID")
    con.close()

    first = add(bin_dir, db, "one")
    assert first.ok, first
    second = add(bin_dir, db, "two")
    assert second.ok, second
    assert [address_of(first), address_of(second)] == [ipaddress.ip_address("10.3.0.1"),
                                                        ipaddress.ip_address("10.3.0.2")]
    check_store_whole(db, "half-created store")
