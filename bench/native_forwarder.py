"""whereabouts ADD through the node agent: the native forwarder against the Python launcher and Go host-local.

Usage: ``.venv/bin/python bench/native_forwarder.py [-n 300] [-c 16]``

Three plugins allocate from the same /16, each on a fresh store, N ADDs one
after another, then N ADDs with C in flight, exec'd as a runtime execs them
(the calls of bench/whereabouts_alloc.py): the native forwarder
(native/cni-ipam-forward.c) and the Python launcher, both through one
``cni-ipam agent`` on a socket of the bench's own, and Debian's Go
host-local.  Only successful ADDs are timed; any failure is reported and
makes the exit code 1.  CPU per ADD is the plugin process's own (wait4)
plus the agent's CPU over the batch divided by the ADDs in it.

Durability differs: our SQLite store commits with ``synchronous=FULL`` (an
fsync per ADD); host-local writes its files without fsync.

Goals (issue 17), reported PASS/MISS: the forwarder's ADD p50 at most 0.8x
host-local's, its 16-way ADD/s at least 1.5x host-local's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

try:
    import cni_ipam  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from cni_ipam.install import package_parent, python_launcher_name, read_native_forwarder, write_launchers
from _measure import process_cpu_s, start_agent, stop_agent, summarize, verdict  # noqa: E402  (bench/ is the script's directory)
from whereabouts_alloc import HOST_LOCAL, host_local_conf, problems, run_batch, whereabouts_conf  # noqa: E402

P50_GOAL_RATIO = 0.8
THROUGHPUT_GOAL_RATIO = 1.5


def measure(plugin: str, stdin_for, count: int, concurrency: int, tag: str, extra_env, agent_pid) -> tuple:
    """One batch on a fresh store: (summary of the successful ADDs, CPU ms per ADD with the agent's, problems)."""
    before = process_cpu_s(agent_pid) if agent_pid else 0.0
    execs, seconds = run_batch(plugin, stdin_for(tag), count, concurrency, tag, extra_env)
    agent_cpu = (process_cpu_s(agent_pid) - before) if agent_pid else 0.0
    ok = [e for e in execs if e.ok]
    summary = summarize(ok, seconds)
    summary["ops_per_s"] = len(ok) / seconds
    cpu_ms = (sum(e.cpu_ns for e in ok) / 1e6 + agent_cpu * 1000) / max(len(ok), 1)
    return summary, cpu_ms, problems(execs, f"{tag}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=300, help="ADDs per batch (default 300)")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="ADDs in flight (default 16)")
    parser.add_argument("--cidr", default="10.1.0.0/16")
    args = parser.parse_args(argv)
    if not os.path.exists(HOST_LOCAL):
        print(f"host-local not found at {HOST_LOCAL} (apt-get install containernetworking-plugins)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        bin_dir = os.path.join(tmp, "bin")
        write_launchers(bin_dir, sys.executable, package_parent(), ["whereabouts"], native=read_native_forwarder())
        forwarder = os.path.join(bin_dir, "whereabouts")
        launcher = os.path.join(bin_dir, python_launcher_name("whereabouts"))
        socket_path = os.path.join(tmp, "agent.sock")
        agent = start_agent(socket_path)
        via_agent = {"CNI_IPAM_AGENT_SOCKET": socket_path}
        plugins = {  # name: (executable, stdin for a fresh store named by the batch's tag, env, agent pid)
            "native forwarder + agent": (forwarder, lambda tag: whereabouts_conf(
                args.cidr, os.path.join(tmp, f"{tag}.db")), via_agent, agent.pid),
            "Python launcher + agent": (launcher, lambda tag: whereabouts_conf(
                args.cidr, os.path.join(tmp, f"{tag}.db")), via_agent, agent.pid),
            "Go host-local": (HOST_LOCAL, lambda tag: host_local_conf(args.cidr, os.path.join(tmp, tag)), None, None),
        }
        results, failures = {}, []
        try:
            for i, (name, (plugin, stdin_for, env, pid)) in enumerate(plugins.items()):
                seq = measure(plugin, stdin_for, args.count, 1, f"s{i}", env, pid)
                par = measure(plugin, stdin_for, args.count, args.concurrency, f"p{i}", env, pid)
                results[name] = (seq, par)
                failures += seq[2] + par[2]
        finally:
            stop_agent(agent)
    print(f"whereabouts ADD, {args.count} per batch; SQLite synchronous=FULL (fsync per ADD) on our side, "
          f"host-local does not fsync; CPU per ADD counts the agent's")
    print(f"{'':26} {'p50 ms':>8} {'p99 ms':>8} {'CPU/ADD ms':>11} {f'{args.concurrency}-way ADD/s':>13} "
          f"{'CPU/ADD ms':>11}")
    for name, (seq, par) in results.items():
        print(f"{name:26} {seq[0]['p50_ms']:8.2f} {seq[0]['p99_ms']:8.2f} {seq[1]:11.2f} "
              f"{par[0]['ops_per_s']:13.0f} {par[1]:11.2f}")
    ours, go = results["native forwarder + agent"], results["Go host-local"]
    p50 = ours[0][0]["p50_ms"] / go[0][0]["p50_ms"]
    rate = ours[1][0]["ops_per_s"] / go[1][0]["ops_per_s"]
    print(f"{verdict(p50 <= P50_GOAL_RATIO)} forwarder ADD p50 at most {P50_GOAL_RATIO}x host-local's: {p50:.2f}x")
    print(f"{verdict(rate >= THROUGHPUT_GOAL_RATIO)} forwarder {args.concurrency}-way ADD/s at least "
          f"{THROUGHPUT_GOAL_RATIO}x host-local's: {rate:.2f}x")
    for problem in failures[:20]:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
