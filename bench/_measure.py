"""What the benchmarks share: exec a plugin and time it, run calls at a concurrency, percentiles, tables,
failures, CPU of every process (children, this one, others by pid), the agent, the machine's load.

Each benchmark script runs from the checkout (``python bench/<name>.py``),
so this sibling module is on its path.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time

RUNTIME_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def spawn_timed(argv: list, env: dict, stdin: bytes) -> tuple:
    """posix_spawn ``argv`` with pipes on 0/1/2, feed stdin, read both outputs, reap with wait4.

    Returns ``(wall ns, CPU ns, exit code, stdout, stderr, rusage)``: wall from
    spawn to reaped, CPU from the child's own rusage (exact, unlike
    RUSAGE_CHILDREN when several children run at once).
    """
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    start = time.perf_counter_ns()
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    try:
        os.write(in_w, stdin)  # a few hundred bytes: fits in the pipe
    except BrokenPipeError:
        pass
    os.close(in_w)
    out = _read_all(out_r)
    err = _read_all(err_r)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter_ns() - start
    cpu = int((usage.ru_utime + usage.ru_stime) * 1e9)
    return wall, cpu, os.waitstatus_to_exitcode(status), out, err, usage


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def cni_env(command: str, cid: str, cni_path: str, **extra: str) -> dict:
    """A runtime's environment for one call on interface ``net1`` (``extra`` added, e.g. NODENAME,
    CNI_IPAM_AGENT_SOCKET)."""
    return {"PATH": RUNTIME_PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/{cid}",
            "CNI_IFNAME": "net1", "CNI_PATH": cni_path, **extra}


def exec_timed(argv: list, env: dict, stdin: bytes) -> tuple:
    """``(seconds, CompletedProcess)`` of one exec, exec to exit as a runtime sees it."""
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True)
    return time.perf_counter() - started, done


def run_concurrently(ways: int, items, work) -> float:
    """``ways`` threads released at once, each calling ``work(item)`` for the next of ``items`` until none is
    left: the wall seconds from their release to the last one's end.  ``work`` records its own results
    (under its own lock)."""
    items = iter(items)
    lock = threading.Lock()
    barrier = threading.Barrier(ways + 1)
    end = object()

    def worker():
        barrier.wait()
        while True:
            with lock:
                item = next(items, end)
            if item is end:
                return
            work(item)

    threads = [threading.Thread(target=worker) for _ in range(ways)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def percentile(values, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(execs: list, batch_seconds: float | None, helper_cpu_s: float = 0.0) -> dict:
    """Wall-time percentiles, CPU and throughput of the successful timed execs (``wall_ns``, ``cpu_ns``, ``ok``).

    Failed calls are left out of every figure (a fast failure would flatter
    them) and counted in ``failures``: a benchmark with any fails (see
    ``fail_on``).  ``cpu_ms`` is the median of the execs' own CPU plus
    ``helper_cpu_s`` (CPU that other processes, e.g. the node agent, spent
    on this batch) spread over the successful calls.
    """
    ok = [e for e in execs if e.ok]
    walls = sorted(e.wall_ns / 1e6 for e in ok)
    cpus = sorted(e.cpu_ns / 1e6 for e in ok)
    helper_ms = helper_cpu_s * 1000 / len(ok) if ok else float("nan")
    return {
        "count": len(ok),
        "failures": len(execs) - len(ok),
        "p50_ms": percentile(walls, 0.50),
        "p99_ms": percentile(walls, 0.99),
        "max_ms": walls[-1] if walls else float("nan"),
        "ops_per_s": len(ok) / batch_seconds if batch_seconds else float("nan"),
        "cpu_ms": percentile(cpus, 0.50) + helper_ms,
        "helper_cpu_ms": helper_ms,
    }


def fail_on(problems: list) -> int:
    """Print every failed call (which one, and its output) to stderr; the exit code: 1 if any, else 0."""
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} failed calls or wrong answers: the benchmark fails (its figures count successes "
              f"only)", file=sys.stderr)
    return 1 if problems else 0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (not its children): fields 14 and 15 of
    /proc/<pid>/stat (proc(5)), for the processes a benchmark does not reap (agent, daemons, servers)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of the reaped children (the plugin processes a benchmark exec'd)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    """User + system CPU seconds of this process, all its threads (work a benchmark does in-process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def processes_cpu_s(pids) -> float:
    """:func:`process_cpu_s` summed over ``pids``."""
    return sum(process_cpu_s(pid) for pid in pids)


def start_agent(socket_path: str, env: dict | None = None, log_path: str | None = None) -> subprocess.Popen:
    """``cni-ipam agent`` on a socket of the benchmark's own (``env`` added to ours), its log (one JSON line a
    call) to ``log_path`` or nowhere; returns once it listens."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "agent", "--socket", socket_path],
                                   stdout=log, stderr=log, env={**os.environ, **(env or {})})
    finally:
        if log_path:
            log.close()
    for _ in range(100):
        if os.path.exists(socket_path):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the node agent did not start")


def agent_answered(log_path: str) -> set:
    """Container IDs of the calls an agent answered with exit 0, from its log (docs/agent.md, Logs): a plugin
    that could not reach its agent does the work itself, so only the log tells that the agent did it."""
    import json

    answered = set()
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "call" and entry.get("exit") == 0:
                answered.add(entry.get("container_id"))
    return answered


def stop_agent(process: subprocess.Popen) -> None:
    """SIGTERM to an agent :func:`start_agent` started (by its pid), and reap it."""
    process.terminate()
    process.wait(10)


def print_table(columns: list, rows: list, indent: str = "  ") -> None:
    """A header line, then a line a row; ``columns`` are ``(header, width, value of a row)``, a negative width
    left-aligns (the naming column)."""
    def cell(text, width):
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"
    print(indent + " ".join(cell(header, width) for header, width, _ in columns).rstrip())
    for row in rows:
        print(indent + " ".join(cell(value(row), width) for _, width, value in columns).rstrip())


def load_line(before: tuple) -> str:
    """The machine's load average before a run and now: other jobs share these CPUs."""
    return (f"load average before {before[0]:.1f}, after {os.getloadavg()[0]:.1f} (other jobs share these "
            f"CPUs)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# What each side does to make an allocation survive a power cut, printed under every ours/Go table.
DURABILITY_SQLITE = {
    "FULL": "SQLite WAL, FULL (fsync at every commit: the WAL and its directory, after the lock, before answering)",
    "NORMAL": "SQLite WAL, synchronous=NORMAL (no fsync at commit; CNI_IPAM_SQLITE_SYNCHRONOUS=NORMAL)",
}
DURABILITY_HOST_LOCAL = ("host-local: one file per address, written and closed without fsync "
                         "(containernetworking/plugins plugins/ipam/host-local/backend/disk/backend.go, Reserve, "
                         "@ 0924b71fc872)")
