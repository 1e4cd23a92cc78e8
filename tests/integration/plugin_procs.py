"""Helpers the crash and fault tests share: a whereabouts ADD as a process to kill, and the SQLite rows."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sqlite3
import subprocess
import time


def start_add(bin_dir: str, env: dict, config: dict) -> subprocess.Popen:
    """Exec a whereabouts ADD with its config already on stdin (the pipe holds it even if the process dies early)."""
    proc = subprocess.Popen([os.path.join(bin_dir, "whereabouts")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdin.write(json.dumps(config).encode())
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen) -> tuple:
    """(exit code, stdout, stderr) of a process that ended or was killed."""
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return proc.wait(), out.decode(errors="replace"), err.decode(errors="replace")


def kill_window(durations: list, lock, floor: float) -> float:
    """How long to wait at most before the kill: the median of the last ADDs' durations (at least
    ``floor``), so that on a loaded machine kills still land inside the store transaction and after the
    commit, not only during interpreter start-up."""
    with lock:
        recent = sorted(durations[-9:])
    return max(floor, recent[len(recent) // 2] if recent else 0)


def add_killed_at_random(bin_dir: str, env: dict, config: dict, window: float, rng, lock_file: str = "") -> tuple:
    """Start an ADD and SIGKILL it after ``rng.uniform(0, window)`` seconds: ``finish``'s (code, stdout,
    stderr) and whether it held the flock on ``lock_file`` when killed (see ``stop_and_kill``); code is
    -SIGKILL when the kill landed, else the ADD had already exited."""
    proc = start_add(bin_dir, env, config)
    time.sleep(rng.uniform(0, window))
    return stop_and_kill(proc, lock_file)


def add_killed_holding_lock(bin_dir: str, env: dict, config: dict, lock_file: str) -> tuple:
    """Start an ADD and SIGKILL it as soon as /proc/locks shows it holding the flock on ``lock_file``
    (inside its store transaction): like ``add_killed_at_random``; the flag is False if it exited first."""
    proc = start_add(bin_dir, env, config)
    while proc.poll() is None and proc.pid not in flock_pids(lock_file)[0]:
        pass  # the lock is held for a few ms: poll without sleeping
    return stop_and_kill(proc, lock_file)


def stop_and_kill(proc: subprocess.Popen, lock_file: str = "") -> tuple:
    """SIGKILL ``proc``: ``finish``'s (code, stdout, stderr) and whether it held the flock on ``lock_file``
    when it died (it is stopped first, so what it held when looked at is what it held when killed)."""
    held = False
    if lock_file:
        proc.send_signal(signal.SIGSTOP)
        held = wait_stopped(proc.pid) and proc.pid in flock_pids(lock_file)[0]
    proc.send_signal(signal.SIGKILL)  # harmless if it already exited: it is not reaped yet
    return (*finish(proc), held)


def wait_stopped(pid: int, timeout: float = 10.0) -> bool:
    """Wait until ``pid`` is stopped by a signal (state T); False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("T", "t"):
            return True
        if state in ("Z", "X"):
            return False
        time.sleep(0.0005)
    raise TimeoutError(f"process {pid} did not stop within {timeout} s")


def flock_pids(path: str) -> tuple:
    """(holders, waiters): the pids holding and the pids blocked waiting for an flock on ``path``.

    Read from /proc/locks (proc(5)): a holder line is ``N: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode>
    0 EOF``, each waiter for the same lock follows it as ``N: -> FLOCK ...``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return set(), set()
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders, waiters = set(), set()
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()[1:]
            waiting = fields[0] == "->"
            if waiting:
                fields = fields[1:]
            if fields[0] == "FLOCK" and fields[4] == where:
                (waiters if waiting else holders).add(int(fields[3]))
    return holders, waiters


def sqlite_rows(db: str) -> list:
    """(pool, space, network, container_id, ifname, ip) rows of the SQLite store, read with plain sqlite3."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT pool, space, network, container_id, ifname, ip FROM allocations").fetchall()
    finally:
        con.close()
    # ip is a family byte, then the big-endian address
    return [(p, s, n, c, i, ipaddress.ip_address(int.from_bytes(ip[1:], "big"))) for p, s, n, c, i, ip in rows]
