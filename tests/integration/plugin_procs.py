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


def add_killed_at_random(bin_dir: str, env: dict, config: dict, window: float, rng) -> tuple:
    """Start an ADD and SIGKILL it after ``rng.uniform(0, window)`` seconds: ``finish``'s (code, stdout,
    stderr); code is -SIGKILL when the kill landed, else the ADD had already exited."""
    proc = start_add(bin_dir, env, config)
    time.sleep(rng.uniform(0, window))
    proc.send_signal(signal.SIGKILL)  # harmless if it already exited: it is not reaped yet
    return finish(proc)


def sqlite_rows(db: str) -> list:
    """(pool, space, network, container_id, ifname, ip) rows of the SQLite store, read with plain sqlite3."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT pool, space, network, container_id, ifname, ip FROM allocations").fetchall()
    finally:
        con.close()
    # ip is a family byte, then the big-endian address
    return [(p, s, n, c, i, ipaddress.ip_address(int.from_bytes(ip[1:], "big"))) for p, s, n, c, i, ip in rows]
