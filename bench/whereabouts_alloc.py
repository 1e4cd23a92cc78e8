"""ADD latency and throughput of our whereabouts (SQLite store) against Debian's Go host-local.

Usage: ``.venv/bin/python bench/whereabouts_alloc.py [-n 400] [-c 16] [--fill-n 150] [--fill 0.9]``

Part 1, ours against host-local: both allocate from the same /16
(``--cidr``), each run on a fresh store (a new SQLite file, a new
host-local dataDir), N ADDs one after another and N ADDs with C in flight
(threads), every call exec'd the way a runtime execs it (config on stdin,
CNI_* variables, a fresh container ID, no other environment).  Per exec we
take the wall time from spawn to reaped and the child's CPU time from
``os.wait4``; throughput is N over the wall time of the whole batch.

Part 2, flat cost as the range fills: ADD p50 on an empty /16 against the
same /16 90% full.  The full store is pre-filled in this process by the
allocator engine's own ``assign`` (so the per-range hint is what the plugin
would have left), all inside one store transaction; then the ADDs to the
empty and to the full store alternate, so both see the same machine load.

Part 1 runs our plugin three times: alone ("ours": every call starts
Python and opens the store), alone with the store's fsync off
("ours-normal": ``CNI_IPAM_SQLITE_SYNCHRONOUS=NORMAL``, as durable as
host-local, which never fsyncs), and with the node agent ("agent": ``cni-ipam
agent`` on a socket of the bench's own; the plugin process only forwards the
call, and the agent's CPU, read from /proc, is added to CPU/ADD).

Only successful calls count in the figures; any failed call or wrong answer
fails the benchmark (exit code 1, each one printed with its output).

Goals, reported PASS/MISS and never turned into a failing exit code: ADD
p50 within 3x of host-local's (sequential); 16-way throughput at least
host-local's; ADD p50 at 90% full within 1.3x of empty.  Issue 17, for the
plugin alone ("ours" and "ours-normal"), each line saying what it makes
durable against host-local: 16-way throughput at least 0.6x host-local's,
ADD p50 (sequential) at most 2.5x host-local's.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import cni_ipam  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from cni_ipam.install import install
from _measure import (DURABILITY_HOST_LOCAL, DURABILITY_SQLITE, fail_on, process_cpu_s,  # noqa: E402  (bench/)
                      spawn_timed, start_agent, stop_agent, summarize, verdict)

HOST_LOCAL = "/usr/lib/cni/host-local"
P50_GOAL_RATIO = 3.0  # our ADD p50 within 3x of host-local's
THROUGHPUT_GOAL_RATIO = 1.0  # our 16-way ADD/s at least host-local's
FULL_GOAL_RATIO = 1.3  # ADD p50 at 90% full within 1.3x of empty
ALONE_THROUGHPUT_GOAL_RATIO, ALONE_P50_GOAL_RATIO = 0.6, 2.5  # issue 17, the plugin alone: 16-way ADD/s, p50
ALONE_DURABILITY = {"ours": "fsync at every commit; host-local never fsyncs",
                    "ours-normal": "no fsync at commit, as host-local"}
NETWORK = "bench-wb"


def whereabouts_conf(cidr: str, db: str) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
                       "ipam": {"type": "whereabouts", "range": cidr, "sqlite_path": db}}).encode()


def host_local_conf(cidr: str, data_dir: str) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]], "dataDir": data_dir}}).encode()


def env_for(container_id: str, extra: dict | None = None) -> dict:
    # Neither plugin enters the namespace, so it need not exist (host-local's cmdAdd never opens it:
    # containernetworking/plugins plugins/ipam/host-local/main.go).
    # CNI_IPAM_AGENT_SOCKET="" keeps our plugin off any agent unless ``extra`` names one.
    return {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id, "CNI_NETNS": "/run/netns/bench-none",
            "CNI_IFNAME": "net1", "CNI_PATH": os.path.dirname(HOST_LOCAL), "CNI_IPAM_AGENT_SOCKET": "",
            **(extra or {})}


class Exec:
    """One plugin call: wall and CPU time (ns), the address it returned, or why it failed."""

    __slots__ = ("wall_ns", "cpu_ns", "address", "why")

    def __init__(self, wall_ns, cpu_ns, address=None, why=""):
        self.wall_ns = wall_ns
        self.cpu_ns = cpu_ns
        self.address = address
        self.why = why

    @property
    def ok(self) -> bool:
        return self.address is not None


def exec_once(plugin: str, env: dict, stdin: bytes) -> Exec:
    """One timed ADD; it must answer with exactly one address."""
    wall, cpu, code, out, err, _usage = spawn_timed([plugin], env, stdin)
    call = f"ADD {env['CNI_CONTAINERID']}"
    if code != 0:
        return Exec(wall, cpu, why=f"{call}: exit {code}: stdout {out[:300]!r} stderr {err[:300]!r}")
    try:
        (ip,) = json.loads(out)["ips"]
        return Exec(wall, cpu, ipaddress.ip_interface(ip["address"]).ip)
    except (ValueError, KeyError, TypeError):
        return Exec(wall, cpu, why=f"{call}: unexpected stdout {out[:300]!r}")


def run_batch(plugin: str, stdin: bytes, count: int, concurrency: int, tag: str, extra_env=None) -> tuple:
    """``count`` ADDs with distinct container IDs, ``concurrency`` at a time: (execs, batch seconds)."""
    def one(i):
        return exec_once(plugin, env_for(f"{tag}-{i:06d}", extra_env), stdin)

    start = time.perf_counter()
    if concurrency <= 1:
        execs = [one(i) for i in range(count)]
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            execs = list(pool.map(one, range(count)))
    return execs, time.perf_counter() - start


def problems(execs: list, what: str) -> list:
    """Failed calls and duplicate addresses, as messages."""
    found = [f"{what}: {e.why}" for e in execs if not e.ok]
    addresses = [e.address for e in execs if e.ok]
    if len(set(addresses)) != len(addresses):
        found.append(f"{what}: {len(addresses) - len(set(addresses))} addresses handed out twice")
    return found


def prefill(db: str, cidr: str, count: int) -> float:
    """Allocate the ``count`` lowest addresses of ``cidr`` in-process, as ``count`` ADDs would; seconds taken.

    The engine's ``assign`` is called once per attachment, exactly as the
    plugin calls it (so it sets the per-range hint the same way), but all
    calls share one transaction: one commit instead of ``count`` fsyncs.
    """
    from cni_ipam.allocator.engine import Owner, assign
    from cni_ipam.config.whereabouts import RangeSpec
    from cni_ipam.net.ranges import parse_range
    from cni_ipam.store.sqlite import SQLiteStore

    # The same range spec the plugin builds from {"range": cidr} (no network_name, overlapping on).
    spec = RangeSpec("ipam.range", parse_range("ipam", cidr, None, None, ()), "", True)
    store = SQLiteStore(db)
    start = time.perf_counter()
    try:
        with store.transaction():
            store.transaction = contextlib.nullcontext  # assign's own transaction joins the one above
            for i in range(count):
                assign(store, [spec], Owner(NETWORK, f"prefill-{i:06d}", "net1", netns="/run/netns/bench-none"))
    finally:
        store.close()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=400, help="ADDs per plugin and mode (default 400)")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="ADDs in flight in the parallel mode (default 16)")
    parser.add_argument("--cidr", default="10.1.0.0/16", help="the range both plugins allocate from (default 10.1.0.0/16)")
    parser.add_argument("--fill", type=float, default=0.9, help="how full the 'full' store is (default 0.9)")
    parser.add_argument("--fill-n", type=int, default=150, help="ADDs each to the empty and the full store (default 150)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed ADDs per plugin first (default 10)")
    parser.add_argument("--go", default=HOST_LOCAL, help=f"Go host-local (default {HOST_LOCAL})")
    parser.add_argument("--skip-go", action="store_true", help="only part 2 (empty against full)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
    args = parser.parse_args(argv)

    if not args.skip_go and not os.access(args.go, os.X_OK):
        print(f"host-local not found at {args.go} (apt-get install containernetworking-plugins, or --go)",
              file=sys.stderr)
        return 2
    network = ipaddress.ip_network(args.cidr)
    fill_count = int(network.num_addresses * args.fill)
    trouble = []
    results = {}
    with tempfile.TemporaryDirectory(prefix="cni-ipam-bench-wb-") as tmp:
        bin_dir = os.path.join(tmp, "bin")
        install(bin_dir, names=["whereabouts"])
        ours = os.path.join(bin_dir, "whereabouts")
        with open(ours) as f:
            shebang = f.readline().strip()
        fresh = iter(range(1_000_000))

        def our_store():
            return whereabouts_conf(args.cidr, os.path.join(tmp, f"wb-{next(fresh)}", "whereabouts.db"))

        def go_store():
            return host_local_conf(args.cidr, os.path.join(tmp, f"hl-{next(fresh)}"))

        agent_socket = os.path.join(tmp, "agent.sock")
        agent = start_agent(agent_socket)
        plugins = {"ours": (ours, our_store, {}),
                   "ours-normal": (ours, our_store, {"CNI_IPAM_SQLITE_SYNCHRONOUS": "NORMAL"}),
                   "agent": (ours, our_store, {"CNI_IPAM_AGENT_SOCKET": agent_socket}),
                   "go": (args.go, go_store, {})}
        if args.skip_go:
            del plugins["go"]
        print(f"whereabouts ADD on {args.cidr}: {args.count} per plugin and mode, a fresh store for each run")
        print(f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
              f"Python {platform.python_version()}")
        print(f"ours: {ours} ({shebang}), SQLite store (WAL, flock)")
        if not args.skip_go:
            print(f"go:   {args.go} (dataDir store)")
        print(f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine skews wall times; "
              f"CPU/ADD is the robust column)")

        for name, (plugin, store, extra) in plugins.items():  # page cache, .pyc files
            execs, _ = run_batch(plugin, store(), args.warmup, 1, f"warm-{name}", extra)
            trouble += problems(execs, f"{name} warm-up")
        if trouble:
            return fail_on(trouble)

        modes = (("sequential", 1), (f"{args.concurrency}-way", args.concurrency))
        if not args.skip_go:
            for mode, concurrency in modes:
                for name, (plugin, store, extra) in plugins.items():
                    agent_before = process_cpu_s(agent.pid) if name == "agent" else 0.0
                    execs, seconds = run_batch(plugin, store(), args.count, concurrency, f"{name}-{mode}", extra)
                    agent_cpu = process_cpu_s(agent.pid) - agent_before if name == "agent" else 0.0
                    results[(mode, name)] = summarize(execs, seconds, agent_cpu)
                    trouble += problems(execs, f"{name} {mode}")

        # Part 2: empty against 90% full, ADDs alternating between the two stores.
        empty_conf, full_db = our_store(), os.path.join(tmp, "full", "whereabouts.db")
        print(f"pre-filling {full_db} with {fill_count} allocations ({args.fill:.0%} of {args.cidr}) in-process ...",
              flush=True)
        fill_seconds = prefill(full_db, args.cidr, fill_count)
        print(f"  {fill_count / fill_seconds:.0f} assign()/s, {fill_seconds:.1f} s, "
              f"store {os.path.getsize(full_db) / 2 ** 20:.1f} MiB")
        full_conf = whereabouts_conf(args.cidr, full_db)
        empty, full = [], []
        for i in range(args.fill_n):
            empty.append(exec_once(ours, env_for(f"empty-{i:06d}"), empty_conf))
            full.append(exec_once(ours, env_for(f"full-{i:06d}"), full_conf))
        trouble += problems(empty, "ours empty") + problems(full, "ours full")
        hosts = network.hosts()
        expected = [next(hosts) for _ in range(fill_count + args.fill_n)]
        if [e.address for e in full] != expected[fill_count:]:
            trouble.append(f"ours full: not the lowest free addresses after the pre-fill: "
                           f"{[str(e.address) for e in full[:3]]} ...")
        results[("empty", "ours")] = summarize(empty, None)
        results[("full", "ours")] = summarize(full, None)
        stop_agent(agent)

    for mode in dict.fromkeys(m for m, _ in results):  # one table per concurrency
        print()
        print(f"{mode}:")
        print(f"  {'plugin':<12} {'ADD/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU/ADD ms':>11} "
              f"{'of it agent':>11} {'ok':>5} {'failed':>7}")
        for (m, name), r in results.items():
            if m == mode:
                print(f"  {name:<12} {r['ops_per_s']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
                      f"{r['cpu_ms']:>11.2f} {format(r['helper_cpu_ms'], '.2f') if name == 'agent' else '':>11} {r['count']:>5} "
                      f"{r['failures']:>7}")
    print(f"(empty/full: {args.fill_n} sequential ADDs each, alternating; full = {fill_count} held before; "
          f"figures count successful ADDs only; agent CPU/ADD = the plugin process + the agent's CPU)")
    print("durability:")
    for line in ("ours, agent: " + DURABILITY_SQLITE["FULL"], "ours-normal: " + DURABILITY_SQLITE["NORMAL"],
                 DURABILITY_HOST_LOCAL):
        print(f"  {line}")

    print()
    goals = []
    if not args.skip_go:
        for ours_name in ("ours", "ours-normal", "agent"):
            print(f"ratios {ours_name}/go:")
            for mode, _ in modes:
                o, g = results[(mode, ours_name)], results[(mode, "go")]
                print(f"  {mode:<12} p50 {o['p50_ms'] / g['p50_ms']:.1f}x  p99 {o['p99_ms'] / g['p99_ms']:.1f}x  "
                      f"CPU/ADD {o['cpu_ms'] / g['cpu_ms']:.1f}x  ADD/s {o['ops_per_s'] / g['ops_per_s']:.2f}x")
            seq = results[("sequential", ours_name)]["p50_ms"] / results[("sequential", "go")]["p50_ms"]
            goals.append(f"{ours_name}: ADD p50 within {P50_GOAL_RATIO:g}x of host-local (sequential): {seq:.1f}x  "
                         f"{verdict(seq <= P50_GOAL_RATIO)}")
            par_mode = modes[1][0]
            par = results[(par_mode, ours_name)]["ops_per_s"] / results[(par_mode, "go")]["ops_per_s"]
            goals.append(f"{ours_name}: {par_mode} ADD/s at least host-local's: {par:.2f}x  "
                         f"{verdict(par >= THROUGHPUT_GOAL_RATIO)}")
            if ours_name in ALONE_DURABILITY:  # issue 17: the plugin alone
                goals.append(f"{ours_name} ({ALONE_DURABILITY[ours_name]}): {par_mode} ADD/s at least "
                             f"{ALONE_THROUGHPUT_GOAL_RATIO:g}x host-local's (issue 17): {par:.2f}x  "
                             f"{verdict(par >= ALONE_THROUGHPUT_GOAL_RATIO)}")
                goals.append(f"{ours_name} ({ALONE_DURABILITY[ours_name]}): ADD p50 at most "
                             f"{ALONE_P50_GOAL_RATIO:g}x host-local's, sequential (issue 17): {seq:.2f}x  "
                             f"{verdict(seq <= ALONE_P50_GOAL_RATIO)}")
    e, f = results[("empty", "ours")], results[("full", "ours")]
    fill_ratio = f["p50_ms"] / e["p50_ms"]
    print(f"full/empty: p50 {fill_ratio:.2f}x  p99 {f['p99_ms'] / e['p99_ms']:.2f}x  "
          f"CPU/ADD {f['cpu_ms'] / e['cpu_ms']:.2f}x")
    goals.append(f"ADD p50 at {args.fill:.0%} full within {FULL_GOAL_RATIO:g}x of empty: {fill_ratio:.2f}x  "
                 f"{verdict(fill_ratio <= FULL_GOAL_RATIO)}")
    print()
    print("goals:")
    for line in goals:
        print(f"  {line}")
    print(f"(goals are reported, never enforced: wall time depends on the machine and its load; "
          f"load average now {os.getloadavg()[0]:.2f})")

    if args.json:
        with open(args.json, "w") as out:
            json.dump({"count": args.count, "concurrency": args.concurrency, "cidr": args.cidr, "cpus": os.cpu_count(),
                       "fill_count": fill_count, "fill_seconds": fill_seconds,
                       "results": {f"{m}/{n}": r for (m, n), r in results.items()}, "goals": goals}, out, indent=2)
    return fail_on(trouble)


if __name__ == "__main__":
    sys.exit(main())
