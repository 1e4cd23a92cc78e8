"""Latency, throughput and memory of our ``static`` ADD against Debian's Go ``static``.

Usage: ``.venv/bin/python bench/plugin_latency.py [-n 200] [-c 16]`` (or ``make bench``).

Both plugins get the same network config and a fresh container ID per call,
exec'd from this process the way a runtime execs them (config on stdin,
CNI_* variables, no other environment).  Two modes: N ADDs one after
another, and N ADDs with C in flight at once (threads).  Per exec we take
the wall time from spawn to reaped and the child's CPU time from
``os.wait4``.  Peak RSS comes from GNU time (``/usr/bin/time -f %M``): the
``ru_maxrss`` that ``wait4`` reports for a child of this process is never
below this process's own RSS (the child inherits the parent's high-water
mark across fork and exec), so without GNU time it is only an upper bound.

Only successful calls count in the figures; any failed call fails the
benchmark (exit code 1, each printed with its output).  Neither plugin
stores anything, so durability plays no part here.

Goals (from the issue), reported PASS/MISS and never turned into a failing
exit code: ADD p50 within 5x of Go's static; peak memory under 15 MiB per
plugin process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

try:
    from cni_ipam.install import install
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from cni_ipam.install import install

import _measure  # noqa: E402  (bench/ is the script's directory)
from _measure import fail_on, spawn_timed, verdict  # noqa: E402

GO_STATIC = "/usr/lib/cni/static"
GNU_TIME = "/usr/bin/time"
P50_GOAL_RATIO = 5.0   # our p50 within 5x of Go's
RSS_GOAL_MIB = 15.0    # peak RSS per plugin process

# The same config for both plugins: dual stack, routes and DNS, in the
# newest version Debian's Go plugins speak.
CONFIG = {
    "cniVersion": "1.0.0",
    "name": "bench-static",
    "type": "bridge",
    "ipam": {
        "type": "static",
        "addresses": [{"address": "10.10.21.10/24", "gateway": "10.10.21.1"},
                      {"address": "fd00:21::10/64", "gateway": "fd00:21::1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.21.1"}, {"dst": "192.168.17.0/24", "gw": "10.10.21.254"}],
        "dns": {"nameservers": ["10.10.21.1"], "domain": "example.com", "search": ["example.com"]},
    },
}
STDIN = json.dumps(CONFIG).encode()


def env_for(call: int, bin_dir: str) -> dict:
    # static never enters the namespace, so it need not exist (Go's cmdAdd only prints its config:
    # containernetworking/plugins plugins/ipam/static/main.go @ 094c9039328e).
    return {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"bench-{os.getpid()}-{call}",
            "CNI_NETNS": "/run/netns/bench-none", "CNI_IFNAME": "net1", "CNI_PATH": bin_dir}


class Exec:
    """One plugin call: wall time (ns), CPU time (ns), wait4's ru_maxrss (KiB), and whether it worked."""

    __slots__ = ("wall_ns", "cpu_ns", "maxrss_kib", "ok", "why")

    def __init__(self, wall_ns, cpu_ns, maxrss_kib, ok, why=""):
        self.wall_ns = wall_ns
        self.cpu_ns = cpu_ns
        self.maxrss_kib = maxrss_kib
        self.ok = ok
        self.why = why


def exec_once(argv: list, env: dict, stdin: bytes, expect_result: bool = True) -> Exec:
    """One timed exec; with ``expect_result`` the answer must list addresses."""
    wall, cpu, code, out, err, usage = spawn_timed(argv, env, stdin)
    call = f"{' '.join(argv)} ADD {env['CNI_CONTAINERID']}"
    ok, why = code == 0, ""
    if not ok:
        why = f"{call}: exit {code}: stdout {out[:300]!r} stderr {err[:300]!r}"
    elif expect_result:
        try:
            ok = bool(json.loads(out)["ips"])
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            why = f"{call}: unexpected stdout {out[:300]!r}"
    return Exec(wall, cpu, usage.ru_maxrss, ok, why)


def run_mode(argv: list, bin_dir: str, count: int, concurrency: int, first_call: int) -> tuple:
    """``count`` ADDs, ``concurrency`` at a time; return (execs, wall seconds of the whole batch)."""
    calls = range(first_call, first_call + count)
    expect_result = argv[-1] != "pass"  # the interpreter floor prints nothing
    start = time.perf_counter()
    if concurrency <= 1:
        execs = [exec_once(argv, env_for(i, bin_dir), STDIN, expect_result) for i in calls]
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            execs = list(pool.map(lambda i: exec_once(argv, env_for(i, bin_dir), STDIN, expect_result), calls))
    return execs, time.perf_counter() - start


def summarize(execs: list, batch_seconds: float) -> dict:
    return dict(_measure.summarize(execs, batch_seconds),
                wait4_maxrss_kib=max((e.maxrss_kib for e in execs), default=0))


def gnu_time_rss_kib(argv: list, bin_dir: str, samples: int) -> int | None:
    """Max of GNU time's %M over ``samples`` ADDs, or None without a GNU time."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    peak = 0
    with tempfile.NamedTemporaryFile(prefix="bench-rss-") as out:
        for i in range(samples):
            done = subprocess.run([GNU_TIME, "-f", "%M", "-o", out.name, *argv], input=STDIN,
                                  env=env_for(10_000_000 + i, bin_dir), capture_output=True)
            if done.returncode != 0:
                return None
            with open(out.name) as f:
                lines = f.read().split()
            if not lines or not lines[-1].isdigit():
                return None  # not GNU time
            peak = max(peak, int(lines[-1]))
    return peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=200, help="ADDs per plugin and mode (default 200)")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="ADDs in flight in the parallel mode (default 16)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed ADDs per plugin first (default 10)")
    parser.add_argument("--rss-samples", type=int, default=20, help="ADDs per plugin under GNU time for peak RSS (default 20)")
    parser.add_argument("--go", default=GO_STATIC, help=f"the Go static plugin (default {GO_STATIC})")
    parser.add_argument("--bin-dir", help="use our launchers already installed here instead of installing into a temp dir")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
    args = parser.parse_args(argv)

    if not os.access(args.go, os.X_OK):
        print(f"Go static plugin not found at {args.go} (apt-get install containernetworking-plugins, or --go)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cni-ipam-bench-") as tmp:
        bin_dir = args.bin_dir or os.path.join(tmp, "bin")
        if not args.bin_dir:
            install(bin_dir, names=["static"])
        ours = os.path.join(bin_dir, "static")
        with open(ours) as f:
            shebang = f.readline().strip()
        python = shebang[2:].split()[0]
        # "floor": the launcher's interpreter doing nothing, what any Python plugin pays per exec.
        plugins = (("ours", [ours]), ("go", [args.go]), ("floor", [python, "-IS", "-c", "pass"]))
        modes = (("sequential", 1), (f"{args.concurrency}-way", args.concurrency))

        print(f"static ADD: {args.count} per plugin and mode, config cniVersion {CONFIG['cniVersion']}")
        print(f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
              f"Python {platform.python_version()}")
        print(f"ours: {ours} ({shebang})")
        print(f"go:   {args.go}")
        print(f"floor: {python} -IS -c pass (interpreter start-up, for reference)")
        print(f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine skews wall times; "
              f"CPU/ADD is the robust column)")

        call = 0
        for _, plugin in plugins:  # warm the page cache and the .pyc files
            execs, _ = run_mode(plugin, bin_dir, args.warmup, 1, call)
            call += args.warmup
            if fail_on([e.why for e in execs if not e.ok]):
                return 1

        results, trouble = {}, []
        for mode, concurrency in modes:
            for name, plugin in plugins:
                execs, seconds = run_mode(plugin, bin_dir, args.count, concurrency, call)
                call += args.count
                results[(mode, name)] = summarize(execs, seconds)
                trouble += [e.why for e in execs if not e.ok]
        floor_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = {name: gnu_time_rss_kib(plugin, bin_dir, args.rss_samples) for name, plugin in plugins}

    for mode, _ in modes:  # one table per concurrency
        print()
        print(f"{mode}:")
        print(f"  {'plugin':<6} {'ADD/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU/ADD ms':>11} {'ok':>5} "
              f"{'failed':>7}")
        for name, _ in plugins:
            r = results[(mode, name)]
            print(f"  {name:<6} {r['ops_per_s']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
                  f"{r['cpu_ms']:>11.2f} {r['count']:>5} {r['failures']:>7}")
    print("(figures count successful ADDs only; durability: neither static stores anything)")

    print()
    if all(v is not None for v in rss.values()):
        peak_mib = {name: kib / 1024 for name, kib in rss.items()}
        rss_exact = True
        print(f"peak RSS per plugin process (GNU time %M, max of {args.rss_samples} ADDs): "
              f"ours {peak_mib['ours']:.1f} MiB, go {peak_mib['go']:.1f} MiB, floor {peak_mib['floor']:.1f} MiB")
    else:
        peak_mib = {name: max(results[(m, name)]["wait4_maxrss_kib"] for m, _ in modes) / 1024 for name, _ in plugins}
        rss_exact = False
        print(f"peak RSS per plugin process: at most ours {peak_mib['ours']:.1f} MiB, go {peak_mib['go']:.1f} MiB "
              f"(wait4 ru_maxrss; never below this process's own {floor_kib / 1024:.1f} MiB; "
              f"install GNU time for exact numbers)")

    print()
    print("ratios ours/go:")
    for mode, _ in modes:
        o, g = results[(mode, "ours")], results[(mode, "go")]
        print(f"  {mode:<12} p50 {o['p50_ms'] / g['p50_ms']:.1f}x  p99 {o['p99_ms'] / g['p99_ms']:.1f}x  "
              f"CPU/ADD {o['cpu_ms'] / g['cpu_ms']:.1f}x  ADD/s {o['ops_per_s'] / g['ops_per_s']:.2f}x")
    if rss_exact:
        print(f"  peak RSS     {peak_mib['ours'] / peak_mib['go']:.1f}x")

    print()
    print("goals:")
    for mode, _ in modes:
        ratio = results[(mode, "ours")]["p50_ms"] / results[(mode, "go")]["p50_ms"]
        print(f"  ADD p50 within {P50_GOAL_RATIO:g}x of Go's static ({mode}): {ratio:.1f}x  "
              f"{verdict(ratio <= P50_GOAL_RATIO)}")
    ours_rss = peak_mib["ours"]
    if rss_exact or ours_rss < RSS_GOAL_MIB:  # an upper bound under the goal still proves it
        rss_verdict = verdict(ours_rss < RSS_GOAL_MIB)
    else:
        rss_verdict = "UNKNOWN (upper bound only)"
    print(f"  peak RSS under {RSS_GOAL_MIB:g} MiB per plugin process: {'' if rss_exact else '<= '}{ours_rss:.1f} MiB  "
          f"{rss_verdict}")
    print(f"(goals are reported, never enforced: wall time depends on the machine and its load; "
          f"load average now {os.getloadavg()[0]:.2f})")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"count": args.count, "concurrency": args.concurrency, "cpus": os.cpu_count(),
                       "results": {f"{m}/{n}": r for (m, n), r in results.items()},
                       "peak_rss_mib": peak_mib, "peak_rss_exact": rss_exact}, f, indent=2)
    return fail_on(trouble)


if __name__ == "__main__":
    sys.exit(main())
