"""Time to first address with DHCP: our ``dhcp`` plugin and daemon against Debian's Go pair.

Usage (root: it makes network namespaces)::

    .venv/bin/python bench/dhcp.py [--rounds-1 10] [--rounds-20 3] [--json FILE]

The topology of :mod:`cni_ipam_lab.dhcp`: dnsmasq in a server namespace
behind a bridge in a node namespace; pods are namespaces attached by
Debian's Go ``bridge`` plugin, which calls the IPAM plugin named ``dhcp``
from its ``CNI_PATH``.  Both daemons run in the node namespace at once,
each with its own socket (Go's: ``/usr/lib/cni/dhcp daemon -socketpath``);
the two CNI paths differ only in which ``dhcp`` they hold.

"Time to first address" is the wall time of one pod's bridge ADD, from
exec to exit: when it returns, the address the DHCP server granted is on
the pod's interface.  For 1 pod the rounds run one ADD each; for 20, all
20 ADDs start together and each pod's time counts (p50 and max), as well
as the batch (first exec to last exit).  Rounds alternate ours/Go so drift
on a shared machine hits both.  CPU per pod counts every process involved:
the plugin processes (bridge and dhcp, reaped: rusage), the side's daemon
and dnsmasq (/proc/<pid>/stat).  Only successful ADDs count in the figures;
any failed ADD fails the benchmark (exit code 1, printed with its output).
Goal (issue 6): at or below Go's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

try:
    from cni_ipam.install import install
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from cni_ipam.install import install

from cni_ipam_lab.dhcp import BRIDGE, GO_DHCP, DaemonProcess, Network
from cni_ipam_lab.namespaces import GO_PLUGIN_DIR, Lab, can_make_netns, cni_env
from _measure import children_cpu_s, fail_on, percentile, process_cpu_s  # noqa: E402  (bench/ is the script's directory)

IFNAME = "net1"
DURABILITY = {"ours": "ours: the daemon saves each lease to its lease directory with fsync before it answers",
              "Go": "Go: the daemon keeps its leases in memory only (containernetworking/plugins "
                    "plugins/ipam/dhcp/daemon.go, DHCP.leases)"}


class Side:
    """One implementation: its daemon and a CNI_PATH whose ``dhcp`` is that implementation's."""

    def __init__(self, name: str, daemon: DaemonProcess, cni_path: str):
        self.name = name
        self.daemon = daemon
        self.cni_path = cni_path
        self.pod_times = {1: [], 20: []}
        self.batch_times = {1: [], 20: []}
        self.failures = []
        self.cpu_s = {count: dict.fromkeys(("plugins", "daemon", "dnsmasq"), 0.0) for count in (1, 20)}

    def config(self) -> bytes:
        return json.dumps({"cniVersion": "1.0.0", "name": "bench-dhcp", "type": "bridge", "bridge": BRIDGE,
                           "ipam": {"type": "dhcp", "daemonSocketPath": self.daemon.socket_path}}).encode()


def add(side: Side, node: str, pod: str, container_id: str) -> tuple:
    """(seconds, address or None, error text) of one bridge ADD run in the node namespace."""
    env = cni_env("ADD", container_id, Lab.path(pod), IFNAME, "", side.cni_path)
    argv = ["ip", "netns", "exec", node, os.path.join(GO_PLUGIN_DIR, "bridge")]
    started = time.perf_counter()
    done = subprocess.run(argv, input=side.config(), env=env, capture_output=True, timeout=300)
    took = time.perf_counter() - started
    try:
        output = json.loads(done.stdout)
        address = output["ips"][0]["address"] if done.returncode == 0 else None
    except (ValueError, KeyError, IndexError):
        address, output = None, done.stdout
    why = "" if address else (f"{side.name} bridge ADD {container_id} (pod {pod}): exit {done.returncode}: "
                              f"stdout {done.stdout[:300]!r} stderr {done.stderr[:300]!r}")
    return took, address, why


def delete(side: Side, node: str, pod: str, container_id: str) -> None:
    env = cni_env("DEL", container_id, Lab.path(pod), IFNAME, "", side.cni_path)
    subprocess.run(["ip", "netns", "exec", node, os.path.join(GO_PLUGIN_DIR, "bridge")], input=side.config(),
                   env=env, capture_output=True, timeout=120)


def round_of(side: Side, lab: Lab, net, count: int, tag: str) -> None:
    node = net.node
    pods = [(lab.netns(f"{tag}{i}"), uuid.uuid4().hex) for i in range(count)]
    processes = {"plugins": None, "daemon": side.daemon.process.pid, "dnsmasq": net.dnsmasq.process.pid}
    before = {what: children_cpu_s() if pid is None else process_cpu_s(pid) for what, pid in processes.items()}
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda p: add(side, node, *p), pods))
    batch = time.perf_counter() - started
    for what, pid in processes.items():
        side.cpu_s[count][what] += (children_cpu_s() if pid is None else process_cpu_s(pid)) - before[what]
    for took, address, why in results:
        if address:
            side.pod_times[count].append(took)
        else:
            side.failures.append(why)
    side.batch_times[count].append(batch)
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda p: delete(side, node, *p), pods))
    for pod, _ in pods:
        subprocess.run(["ip", "netns", "del", pod], capture_output=True)
        lab.namespaces.remove(pod)


def summary(side: Side, count: int) -> dict:
    times = side.pod_times[count]
    per_pod = {f"cpu_ms_{what}": seconds * 1000 / max(len(times), 1) for what, seconds in side.cpu_s[count].items()}
    return {"adds": len(times), "p50_ms": percentile(times, 0.5) * 1000, "max_ms": max(times) * 1000 if times else 0,
            "batch_p50_ms": percentile(side.batch_times[count], 0.5) * 1000, **per_pod}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds-1", type=int, default=10, help="rounds of one pod (default 10)")
    parser.add_argument("--rounds-20", type=int, default=3, help="rounds of 20 concurrent pods (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
    args = parser.parse_args(argv)
    ok, why = can_make_netns()
    if not ok:
        print(f"bench/dhcp.py: {why}", file=sys.stderr)
        return 2
    for needed in (GO_DHCP, os.path.join(GO_PLUGIN_DIR, "bridge"), "/usr/sbin/dnsmasq"):
        if not os.access(needed, os.X_OK):
            print(f"bench/dhcp.py: {needed} is missing (containernetworking-plugins, dnsmasq-base)", file=sys.stderr)
            return 2

    load_before = os.getloadavg()[0]
    work = tempfile.mkdtemp(prefix="bench-dhcp-")
    ours_dir, go_dir = os.path.join(work, "ours"), os.path.join(work, "go")
    install(ours_dir, names=["dhcp"])
    os.makedirs(go_dir)
    os.symlink(GO_DHCP, os.path.join(go_dir, "dhcp"))
    bridge_dir = os.path.join(work, "main")
    os.makedirs(bridge_dir)
    os.symlink(os.path.join(GO_PLUGIN_DIR, "bridge"), os.path.join(bridge_dir, "bridge"))

    lab = Lab("bdhcp")
    sides = []
    net = None
    try:
        net = Network(lab, work, first="192.0.2.10", last="192.0.2.250", lease_time="1h").start()
        ours = DaemonProcess(net.node, work, name="ours").start()
        go = DaemonProcess(net.node, work, name="go", go=True).start()
        sides = [Side("ours", ours, f"{ours_dir}:{bridge_dir}"), Side("Go", go, f"{go_dir}:{bridge_dir}")]
        for side in sides:  # warm-up: page cache, .pyc, the bridge itself
            round_of(side, lab, net, 1, f"w{side.name[0]}")
            side.pod_times[1].clear()
            side.batch_times[1].clear()
            side.cpu_s[1] = dict.fromkeys(side.cpu_s[1], 0.0)
        for count, rounds in ((1, args.rounds_1), (20, args.rounds_20)):
            for r in range(rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                for side in order:
                    round_of(side, lab, net, count, f"{side.name[0].lower()}{r}x")
    finally:
        bound_ms = []
        for side in sides:
            side.daemon.stop()
            if side.name == "ours":  # the daemon's own time from DISCOVER to ACK, from its log
                bound_ms = [float(e["msg"].rsplit(" in ", 1)[1].split()[0]) for e in side.daemon.events("lease.bound")]
        if net is not None:
            net.close()
        lab.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"DHCP time to first address (bridge ADD, exec to exit), {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end, {load_before:.1f} at the start")
    report = {"cpus": os.cpu_count(), "rows": [], "ratios": {}}
    for count in (1, 20):  # one table per concurrency
        rows = {side.name: summary(side, count) for side in sides}
        print(f"{count} pod(s) at once:")
        print(f"  {'impl':>5} {'ADDs':>5} {'p50 ms':>9} {'max ms':>9} {'batch p50 ms':>13} "
              f"{'CPU ms/pod plugins+daemon+dnsmasq':>34}")
        for side in sides:
            row = rows[side.name]
            cpu = f"{row['cpu_ms_plugins']:.1f}+{row['cpu_ms_daemon']:.1f}+{row['cpu_ms_dnsmasq']:.1f}"
            print(f"  {side.name:>5} {row['adds']:>5} {row['p50_ms']:>9.1f} {row['max_ms']:>9.1f} "
                  f"{row['batch_p50_ms']:>13.1f} {cpu:>34}")
            report["rows"].append(dict(row, pods=count, impl=side.name))
        ours_row, go_row = rows["ours"], rows["Go"]
        ratio = ours_row["p50_ms"] / go_row["p50_ms"] if go_row["p50_ms"] else float("nan")
        batch = ours_row["batch_p50_ms"] / go_row["batch_p50_ms"] if go_row["batch_p50_ms"] else float("nan")
        report["ratios"][str(count)] = {"p50": ratio, "batch": batch}
        verdict = "PASS" if ratio <= 1.0 else "MISS"
        print(f"      ours/Go at {count} pod(s): p50 {ratio:.2f}x, batch {batch:.2f}x  "
              f"(goal: at or below Go's time) {verdict}")
    if bound_ms:
        print(f"      our daemon alone (link set-up to DHCPACK, from its log): p50 {percentile(bound_ms, 0.5):.1f} ms, "
              f"max {max(bound_ms):.1f} ms over {len(bound_ms)} leases")
        report["daemon_bound_ms"] = {"p50": percentile(bound_ms, 0.5), "max": max(bound_ms)}
    print("(figures count successful ADDs only)")
    print("durability:")
    for side in sides:
        print(f"  {DURABILITY[side.name]}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(report, failures={s.name: s.failures for s in sides}), handle, indent=1)
    return fail_on([why for side in sides for why in side.failures])


if __name__ == "__main__":
    sys.exit(main())
