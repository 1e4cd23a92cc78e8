"""Cluster-mode allocation throughput: whereabouts plugin processes on one range, one 3-member etcd cluster.

Starts its own 3-member etcd cluster on loopback (free ports from 27790 up),
twice: first with ``--unsafe-no-fsync`` like the test cluster, then a
cluster that fsyncs its log as a real one does (``--no-fsync-etcd`` skips it);
every figure says which.  It installs our launchers in a
temp bin dir, then for 1, 16 and 64 concurrent plugin processes execs the
same number of ADDs (distinct container IDs) on one IPv4 range, each way
``--via`` names:

* ``plugin``: the plugin process does the work (``CNI_IPAM_AGENT_SOCKET=""``);
* ``agent``: the Python launcher forwards to one ``cni-ipam agent``;
* ``forwarder``: the native forwarder (native/cni-ipam-forward.c, what
  ``cni-ipam install --native`` writes) forwards to that same agent.

Through the agent, every ADD must show in the agent's log as answered (a
plugin that cannot reach its agent does the work itself), or the run fails.
It reports allocations per second (successful ADDs / wall time), ADD
latency p50/p99 of the successful ADDs (exec to exit, as a runtime sees
it), CPU per ADD of every process (plugin or forwarder processes, the node
agent, the three etcd members), and etcd requests per ADD (from the
members' /metrics: a lost race shows up as extra txns and ranges).  Every
run ends with a duplicate check: the addresses returned must be distinct,
and the store must hold exactly them.

``--kill-leader``: in every run of ours, the etcd leader gets SIGKILL once a
third of the run's ADDs have completed and is started again (same data
directory) once two thirds have; the run says when both happened, how long
the cluster had no leader, and how many ADDs completed before the kill,
while the member was down and after its restart (each must be some: the
kill landed mid-run).  What the killed member served up to its kill (its
requests from /metrics, its CPU from /proc) is counted before it dies, and
its CPU is taken out of the reaped children's, where reaping it puts it.

For scale it also execs the same count of ADDs, at each concurrency, with
Debian's Go ``host-local`` (``/usr/lib/cni/host-local``).  host-local is node-local: it
keeps one file per address on the node's disk and knows nothing of other
nodes, so it answers a different, easier question; it is the floor of what
an exec'd Go IPAM plugin costs here.  And the same count of bare starts of
the interpreter our launchers run (``-IS -c 'import _socket'``), the
ceiling of any Python plugin exec'd on this machine at that concurrency.

Goals, printed PASS/MISS: (issue 4) at least 100 allocations/s cluster-wide
at 16-way, p99 under 500 ms at 16-way, zero duplicates in every run;
(issue 17) at least 100 allocations/s at 64-way through the native forwarder
with the leader killed mid-run; the plugin alone at 64-way at least 0.6x the
rate of bare interpreter starts (no leader kill, etcd without fsync).  Any failed ADD or address given twice fails
the benchmark (exit code 1, each failed ADD printed with its output).

    .venv/bin/python bench/cluster_alloc.py [--adds 640] [--ways 1,16,64] [--via plugin,agent,forwarder]
                                            [--kill-leader] [--json out.json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from cni_ipam_lab.etcd_cluster import ETCD, EtcdCluster, free_base_port  # noqa: E402
from cni_ipam.install import install  # noqa: E402
from cni_ipam.store.etcd_client import EtcdClient, prefix_end  # noqa: E402
from _measure import (DURABILITY_HOST_LOCAL, agent_answered, children_cpu_s, cni_env, exec_timed,  # noqa: E402
                      fail_on, load_line, percentile, print_table, process_cpu_s, run_concurrently, start_agent,
                      stop_agent, verdict)  # (bench/)

HOST_LOCAL = "/usr/lib/cni/host-local"
RANGE = "10.128.0.0/16"  # never fills: 65534 addresses
GOAL_RATE, GOAL_P99_MS = 100.0, 500.0  # issue 4, at 16-way
GOAL_KILLED_RATE, GOAL_KILLED_WAYS = 100.0, 64  # issue 17: through the forwarder, the leader killed mid-run
GOAL_BARE_SHARE, GOAL_BARE_WAYS = 0.6, 64  # issue 17: the plugin alone against bare interpreter starts
BARE = [sys.executable, "-IS", "-c", "import _socket"]  # the interpreter our launchers run, starting, nothing more
VIAS = {"plugin": "plugin alone", "agent": "Python launcher + agent", "forwarder": "native forwarder + agent"}
NO_FSYNC, FSYNC = "etcd --unsafe-no-fsync", "etcd fsync"
DURABILITY_ETCD = {NO_FSYNC: "etcd --unsafe-no-fsync: a commit is acknowledged before its raft log reaches the disk "
                             "(test clusters only: a power cut can lose it)",
                   FSYNC: "etcd fsync: the leader and a quorum fsync the raft log before a commit is acknowledged "
                          "(etcd's default)"}


def _cpu(row) -> str:
    cpu = f"{row['plugin_cpu_ms_per_add']}"
    if "etcd_cpu_ms_per_add" in row:
        cpu += f"+{row['agent_cpu_ms_per_add']}+{row['etcd_cpu_ms_per_add']}"
    return cpu


TABLE = [("ADDs made by", -64, lambda r: r["plugin"]), ("ok", 5, lambda r: r["ok"]),
         ("alloc/s", 8, lambda r: r["alloc_per_s"]), ("p50 ms", 7, lambda r: r["p50_ms"]),
         ("p99 ms", 7, lambda r: r["p99_ms"]), ("dups", 4, lambda r: r["duplicates"]),
         ("cpu ms/ADD plugin+agent+etcd", 28, _cpu), ("txn/ADD", 7, lambda r: r.get("txn_per_add", "")),
         ("range/ADD", 9, lambda r: r.get("range_per_add", ""))]
COUNTERS = ("range", "txn", "etcd_cpu")  # per member, summed; "proposals" is the cluster's, the highest seen


def member_counters(member) -> dict:
    """Range and Txn requests one member has served, the raft proposals it has seen committed (its /metrics),
    and its CPU seconds (/proc)."""
    out = {"range": 0.0, "txn": 0.0, "proposals": 0.0, "etcd_cpu": process_cpu_s(member.pid)}
    with urllib.request.urlopen(member.client_url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and 'grpc_service="etcdserverpb.KV"' in line:
            value = float(line.rsplit(" ", 1)[1])
            if 'grpc_method="Range"' in line:
                out["range"] += value
            elif 'grpc_method="Txn"' in line:
                out["txn"] += value
        elif line.startswith("etcd_server_proposals_committed_total "):
            out["proposals"] = float(line.split()[1])
    return out


class EtcdMeter:
    """etcd requests, proposals and CPU over one run, the members summed.  A member killed mid-run takes its
    /metrics and /proc with it, so what it served up to then is banked just before the kill
    (:meth:`bank`); started again, it counts from zero."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.start = {m.name: member_counters(m) for m in cluster.members if m.pid}
        self.banked = dict.fromkeys(COUNTERS, 0.0)

    def bank(self, member) -> float:
        """Count what ``member`` served so far; its CPU seconds since it started (what reaping it will add to
        this process's children's)."""
        now = member_counters(member)
        for key in COUNTERS:
            self.banked[key] += now[key] - self.start[member.name][key]
        self.start[member.name] = dict.fromkeys(now, 0.0)
        return now["etcd_cpu"]

    def spent(self) -> dict:
        now = {m.name: member_counters(m) for m in self.cluster.members if m.pid}
        out = {key: self.banked[key] + sum(c[key] - self.start[name][key] for name, c in now.items())
               for key in COUNTERS}
        out["proposals"] = (max(c["proposals"] for c in now.values())
                            - max(c["proposals"] for c in self.start.values()))
        return out


class LeaderKill:
    """SIGKILL to the etcd leader once a third of a run's ADDs have completed, and the member started again
    (its data directory kept) once two thirds have and one more than at the kill, from a thread of its own;
    when each happened and when a new leader answered, in seconds from the run's start, and when each ADD
    completed."""

    def __init__(self, cluster: EtcdCluster, meter: EtcdMeter, adds: int) -> None:
        self.cluster, self.meter = cluster, meter
        self.adds, self.kill_after, self.restart_after = adds, max(adds // 3, 1), max(2 * adds // 3, 2)
        self.cond = threading.Condition()
        self.finished = []  # seconds from the start at which each ADD completed
        self.at = {}  # "killed", "leader" (a new one answered), "restarted": seconds from the start
        # ADDs completed when the member was dead ("killed") and when it was about to start again ("restarted"),
        # counted under the lock: timestamps rounded to the millisecond could not tell apart two ADDs that
        # complete in the very millisecond of the restart (a new leader answering two waiting ADDs at once)
        self.counts = {}
        self.victim, self.victim_cpu = None, 0.0
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _now(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def done(self) -> None:
        """One ADD answered (successfully or not)."""
        with self.cond:
            self.finished.append(self._now())
            self.cond.notify_all()

    def _wait(self, count: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.finished) >= count)

    def _run(self) -> None:
        self._wait(self.kill_after)
        self.victim = self.cluster.leader()
        self.victim_cpu = self.meter.bank(self.victim)
        self.cluster.kill(self.victim)
        self._mark("killed")
        threading.Thread(target=self._watch, daemon=True).start()
        self._wait(min(max(self.restart_after, self.counts["killed"] + 1), self.adds))  # one answered while down
        self._mark("restarted")
        self.cluster.start_member(self.victim)

    def _mark(self, event: str) -> None:
        with self.cond:
            self.at[event], self.counts[event] = self._now(), len(self.finished)

    def _watch(self) -> None:
        """When one of the members left is leader (they answer at once; the election itself takes 1-2 s)."""
        while "restarted" not in self.at:
            try:
                self.cluster.leader()
            except RuntimeError:
                time.sleep(0.02)
                continue
            self.at["leader"] = self._now()
            return

    def finish(self, wall: float) -> tuple:
        """After the run: the member running again and caught up; (what to report, problems)."""
        self.thread.join(60)
        if self.victim is not None and not self.victim.pid:
            self.cluster.start_member(self.victim)
        self.cluster.wait_healthy(30)
        killed = self.counts.get("killed", len(self.finished))
        restarted = self.counts.get("restarted", len(self.finished))
        report = {"member": self.victim.name if self.victim else None, "wall_s": round(wall, 2), **self.at,
                  "no_leader_s": round(self.at["leader"] - self.at["killed"], 3) if "leader" in self.at else None,
                  "completed_before": killed, "completed_while_down": restarted - killed,
                  "completed_after_restart": len(self.finished) - restarted}
        mid_run = report["completed_before"] and report["completed_while_down"] and report["completed_after_restart"]
        return report, [] if mid_run else [f"the leader kill did not land mid-run: {report}"]


def exec_adds(plugin: str, ways: int, adds: int, config: dict, env_extra: dict, tag: str = "bench",
              done=None) -> tuple:
    """``adds`` ADDs (container IDs ``<tag>-<n>``) by ``ways`` threads each exec'ing one plugin at a time,
    ``done()`` after each: (wall s, latencies of the successful ADDs, results, failures as "ADD <container ID>:
    exit, stdout, stderr")."""
    stdin = json.dumps(config).encode()
    lock = threading.Lock()
    latencies, results, failures = [], {}, []

    def add(i):
        cid = f"{tag}-{i:05d}"
        took, answer = exec_timed([plugin], cni_env("ADD", cid, os.path.dirname(plugin), **env_extra), stdin)
        with lock:
            if answer.returncode == 0:
                latencies.append(took)
                results[cid] = [ipaddress.ip_interface(ip["address"]).ip for ip in json.loads(answer.stdout)["ips"]]
            else:
                failures.append(f"{os.path.basename(plugin)} ADD {cid}: exit {answer.returncode}: "
                                f"stdout {answer.stdout[:300]!r} stderr {answer.stderr[:300]!r}")
        if done is not None:
            done()

    wall = run_concurrently(ways, range(adds), add)
    return wall, latencies, results, failures


def stored_addresses(cluster: EtcdCluster, prefix: str) -> list:
    client = EtcdClient(cluster.endpoints, timeout=10, deadline=30)
    try:
        base = (prefix + "pools/").encode()
        kvs = client.range(base, prefix_end(base), 0, True)
    finally:
        client.close()
    return [ipaddress.ip_address(int(kv["key"].decode().rsplit("/", 1)[1][1:], 16)) for kv in kvs]


def timing(wall: float, latencies: list, results: dict) -> dict:
    """Throughput and latency of the successful ADDs."""
    def ms(value):
        return round(value * 1000, 1)
    return {"wall_s": round(wall, 2), "alloc_per_s": round(len(results) / wall, 1),
            "p50_ms": ms(percentile(latencies, 0.5)), "p99_ms": ms(percentile(latencies, 0.99)),
            "max_ms": ms(max(latencies, default=float("nan")))}


def run_ours(cluster: EtcdCluster, etcd: str, bin_dirs: dict, ways: int, adds: int, via: str = "plugin",
             agent=None, kill: bool = False) -> dict:
    """One run: ``adds`` ADDs ``ways`` at once made ``via`` (through ``agent``, a dict of its process, socket
    and log, unless "plugin"), the leader killed mid-run if ``kill``."""
    tag = uuid.uuid4().hex[:8]
    prefix = f"/bench-{ways}-{tag}/"
    config = {"cniVersion": "1.0.0", "name": "bench-net", "type": "whereabouts",
              "ipam": {"type": "whereabouts", "range": RANGE, "datastore": "etcd",
                       "etcd_endpoints": cluster.endpoints, "etcd_prefix": prefix}}
    through = via != "plugin"
    meter = EtcdMeter(cluster)
    cpu_before = children_cpu_s()
    agent_before = process_cpu_s(agent["process"].pid) if through else 0.0
    fault = LeaderKill(cluster, meter, adds) if kill else None
    wall, latencies, results, failures = exec_adds(
        os.path.join(bin_dirs[via], "whereabouts"), ways, adds, config,
        {"NODENAME": "bench-node", "CNI_IPAM_AGENT_SOCKET": agent["socket"] if through else ""}, f"{via}-{tag}",
        fault.done if fault else None)
    kill_report, problems = fault.finish(wall) if fault else (None, [])
    spent = meter.spent()
    # A member killed in this run was reaped by this process: its CPU is in the children's, and counted as etcd's.
    plugins_cpu = children_cpu_s() - cpu_before - (fault.victim_cpu if fault else 0.0)
    agent_cpu = process_cpu_s(agent["process"].pid) - agent_before if through else 0.0
    done = max(len(results), 1)
    returned = [ip for ips in results.values() for ip in ips]
    stored = stored_addresses(cluster, prefix)
    duplicates = (len(returned) - len(set(returned))) + (len(stored) - len(set(stored)))
    mismatch = set(stored) ^ set(returned)
    if through:
        answered = agent_answered(agent["log"])
        missed = [cid for cid in results if cid not in answered]
        if missed:
            problems.append(f"{len(missed)} ADDs were not answered by the agent (the plugin did the work itself), "
                            f"e.g. {missed[:3]}")
    name = f"{VIAS[via]}, {etcd}" + (", leader killed" if kill else "")
    return {"plugin": name, "via": via, "etcd": etcd, "ways": ways, "adds": adds, "ok": len(results),
            "failed": len(failures), "failures": failures + problems, **timing(wall, latencies, results),
            "duplicates": duplicates, "store_mismatch": len(mismatch), "leader_kill": kill_report,
            "plugin_cpu_ms_per_add": round(plugins_cpu / done * 1000, 1),
            "agent_cpu_ms_per_add": round(agent_cpu / done * 1000, 1),
            "etcd_cpu_ms_per_add": round(spent["etcd_cpu"] / done * 1000, 1),
            "txn_per_add": round(spent["txn"] / adds, 2),
            "range_per_add": round(spent["range"] / adds, 2),
            "proposals_per_add": round(spent["proposals"] / adds, 2)}


def run_host_local(adds: int, ways: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-host-local-")
    try:
        config = {"cniVersion": "1.0.0", "name": "bench-net", "type": "host-local",
                  "ipam": {"type": "host-local", "ranges": [[{"subnet": RANGE}]], "dataDir": data_dir}}
        cpu_before = children_cpu_s()
        wall, latencies, results, failures = exec_adds(HOST_LOCAL, ways, adds, config, {})
        cpu = children_cpu_s() - cpu_before
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    returned = [ip for ips in results.values() for ip in ips]
    return {"plugin": "Go host-local (node-local files)", "via": "host-local", "ways": ways, "adds": adds,
            "ok": len(results), "failed": len(failures), "failures": failures, **timing(wall, latencies, results),
            "duplicates": len(returned) - len(set(returned)),
            "plugin_cpu_ms_per_add": round(cpu / max(len(results), 1) * 1000, 1)}


def run_bare(adds: int, ways: int) -> dict:
    """``adds`` starts of the bare interpreter (:data:`BARE`) at ``ways`` at once: what a Python plugin could
    reach here if it did nothing after start-up (issue 17 compares the plugin alone with it)."""
    lock = threading.Lock()
    latencies, failures = [], []

    def start(i):
        took, answer = exec_timed(BARE, {}, b"")
        with lock:
            (latencies.append(took) if answer.returncode == 0 else failures.append(f"bare start {i}: {answer}"))

    cpu_before = children_cpu_s()
    wall = run_concurrently(ways, range(adds), start)
    cpu = children_cpu_s() - cpu_before
    return {"plugin": f"bare {os.path.basename(sys.executable)} -IS -c 'import _socket' (starts, for reference)",
            "via": "bare", "ways": ways, "adds": adds, "ok": len(latencies), "failed": len(failures),
            "failures": failures, "wall_s": round(wall, 2), "alloc_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 1), "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "duplicates": 0, "plugin_cpu_ms_per_add": round(cpu / max(len(latencies), 1) * 1000, 1)}


def kill_line(row: dict) -> str:
    k = row["leader_kill"]
    leader = (f"a new leader answered {k['no_leader_s']} s later" if k["no_leader_s"] is not None
              else "no new leader seen before the restart")
    return (f"{row['plugin']}, {row['ways']}-way: {k['member']} (the leader) killed at {k.get('killed')} s of the "
            f"{k['wall_s']} s run, {leader}, restarted at {k.get('restarted')} s; ADDs completed "
            f"{k['completed_before']} before the kill, {k['completed_while_down']} while it was down, "
            f"{k['completed_after_restart']} after its restart")


def etcd_phase(cluster: EtcdCluster, etcd: str, bin_dirs: dict, work: str, args) -> tuple:
    """Start ``cluster``, a warm-up per ``--via``, then each ``--via`` at each concurrency; stopped after.
    (rows, warm-up rows)."""
    rows, warm_ups, agent = [], [], None
    try:
        cluster.start()
        print(f"{etcd}: 3 members at {', '.join(cluster.endpoints)}")
        if any(via != "plugin" for via in args.via):
            socket_path, log = (os.path.join(work, f"agent-{len(etcd)}.{ext}") for ext in ("sock", "log"))
            agent = {"process": start_agent(socket_path, log_path=log), "socket": socket_path, "log": log}
        for via in args.via:  # warm-up: page cache, .pyc, etcd connections
            warm_ups.append(run_ours(cluster, etcd, bin_dirs, 4, min(32, args.adds), via, agent))
        for ways in args.ways:
            for via in args.via:
                rows.append(run_ours(cluster, etcd, bin_dirs, ways, args.adds, via, agent, args.kill_leader))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "failures"}), flush=True)
    finally:
        if agent is not None:
            stop_agent(agent["process"])
        cluster.stop()
    return rows, warm_ups


def goals(rows: list, phases: list) -> list:
    """(text, passed, value) of each goal; passed None when it was not measured."""
    ours = [r for r in rows if "txn_per_add" in r]
    out = []
    for at16 in (r for r in ours if r["ways"] == 16):
        out.append((f"{at16['plugin']}: >= {GOAL_RATE:g} allocations/s cluster-wide at 16-way",
                    at16["alloc_per_s"] >= GOAL_RATE, f"{at16['alloc_per_s']}/s"))
        out.append((f"{at16['plugin']}: p99 < {GOAL_P99_MS:g} ms at 16-way", at16["p99_ms"] < GOAL_P99_MS,
                    f"{at16['p99_ms']} ms"))
    for etcd in phases:
        row = next((r for r in ours if r["via"] == "forwarder" and r["ways"] == GOAL_KILLED_WAYS
                    and r["leader_kill"] and r["etcd"] == etcd), None)
        out.append((f"native forwarder + agent, {etcd}: >= {GOAL_KILLED_RATE:g} allocations/s at "
                    f"{GOAL_KILLED_WAYS}-way with the leader killed mid-run",
                    row and row["alloc_per_s"] >= GOAL_KILLED_RATE,
                    f"{row['alloc_per_s']}/s" if row else f"not measured (needs --kill-leader, forwarder in --via, "
                                                          f"{GOAL_KILLED_WAYS} in --ways)"))
    bare = next((r for r in rows if r["via"] == "bare" and r["ways"] == GOAL_BARE_WAYS), None)
    alone = next((r for r in ours if r["via"] == "plugin" and r["ways"] == GOAL_BARE_WAYS and r["etcd"] == NO_FSYNC
                  and not r["leader_kill"]), None)
    share = alone["alloc_per_s"] / bare["alloc_per_s"] if alone and bare and bare["alloc_per_s"] else None
    out.append((f"plugin alone, {NO_FSYNC}: {GOAL_BARE_WAYS}-way ADDs/s >= {GOAL_BARE_SHARE:g}x the same-run rate "
                f"of bare interpreter starts", None if share is None else share >= GOAL_BARE_SHARE,
                f"{alone['alloc_per_s']}/s against {bare['alloc_per_s']}/s = {share:.2f}x" if share is not None
                else f"not measured (needs plugin in --via, {GOAL_BARE_WAYS} in --ways, no --kill-leader)"))
    clean = all(r["duplicates"] == 0 and r.get("store_mismatch", 0) == 0 and not r["failures"] for r in rows)
    out.append(("zero duplicates, every ADD answered, store == answers", clean,
                ", ".join(f"{r['via']} {r['ways']}-way: {r['duplicates']} dups, {r['failed']} failed" for r in ours)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adds", type=int, default=640, help="ADDs per run (default 640)")
    parser.add_argument("--ways", default="1,16,64", help="concurrent plugin processes per run (default 1,16,64)")
    parser.add_argument("--via", default="plugin,agent,forwarder",
                        help="who makes the ADDs: plugin, agent, forwarder (default all three)")
    parser.add_argument("--kill-leader", action="store_true",
                        help="in every run of ours, SIGKILL the etcd leader a third of the way in, restart it at "
                             "two thirds")
    parser.add_argument("--base-port", type=int, default=27790, help="first etcd port to try (default 27790)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-fsync-etcd", action="store_true",
                        help="skip the runs on an fsyncing etcd (only the --unsafe-no-fsync cluster)")
    parser.add_argument("--no-host-local", action="store_true", help="skip the Go host-local runs")
    args = parser.parse_args(argv)
    args.ways = [int(w) for w in args.ways.split(",")]
    args.via = args.via.split(",")
    wrong = [v for v in args.via if v not in VIAS]
    if wrong:
        parser.error(f"unknown --via: {', '.join(wrong)} (plugin, agent, forwarder)")
    if args.kill_leader and args.adds < 3:
        parser.error("--kill-leader needs at least 3 ADDs per run (a third before the kill, a third after)")
    if not os.access(ETCD, os.X_OK):
        print(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
        return 2

    work = tempfile.mkdtemp(prefix="bench-cluster-")  # mode 0700: the agent's socket is private to us
    bin_dirs = {"plugin": os.path.join(work, "bin"), "forwarder": os.path.join(work, "native-bin")}
    bin_dirs["agent"] = bin_dirs["plugin"]
    install(bin_dirs["plugin"], names=["whereabouts"])
    if "forwarder" in args.via:
        install(bin_dirs["forwarder"], names=["whereabouts"], native=True)
    load_before = os.getloadavg()
    killing = "; the etcd leader killed a third of the way into every run of ours, restarted at two thirds"
    print(f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f}; {args.adds} ADDs per run on {RANGE}"
          f"{killing if args.kill_leader else ''}")
    phases = [(False, NO_FSYNC)] + ([] if args.no_fsync_etcd else [(True, FSYNC)])
    rows, warm_ups = [], []
    for fsync, etcd in phases:
        cluster = EtcdCluster(os.path.join(work, f"etcd-{len(rows)}"), base_port=free_base_port(args.base_port),
                              token="cni-ipam-bench", fsync=fsync)
        made, warmed = etcd_phase(cluster, etcd, bin_dirs, work, args)
        rows += made
        warm_ups += warmed
    if args.no_host_local:
        pass
    elif os.access(HOST_LOCAL, os.X_OK):
        for ways in args.ways:
            rows.append(run_host_local(args.adds, ways))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "failures"}))
    else:
        print(f"{HOST_LOCAL} not found (apt-get install containernetworking-plugins): no host-local comparison")
    for ways in args.ways:
        rows.append(run_bare(args.adds, ways))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "failures"}))
    shutil.rmtree(work, ignore_errors=True)

    for ways in args.ways:  # one table per concurrency
        print()
        print(f"{ways}-way:")
        print_table(TABLE, [r for r in rows if r["ways"] == ways])
    print("(figures count successful ADDs only; CPU: plugin = every plugin or forwarder process, reaped; agent "
          "and etcd members from /proc, a killed member's up to its kill and its successor's since its restart)")
    killed = [r for r in rows if r.get("leader_kill")]
    if killed:
        print("leader kills:")
        for row in killed:
            print(f"  {kill_line(row)}")
    print("durability:")
    for etcd in (e for _, e in phases):
        print(f"  {DURABILITY_ETCD[etcd]}")
    print(f"  {DURABILITY_HOST_LOCAL}; and it is node-local: it knows nothing of other nodes")
    print()
    verdicts = goals(rows, [e for _, e in phases])
    for text, passed, value in verdicts:
        print(f"{verdict(bool(passed)) if passed is not None else 'n/a '}  {text}: {value}")
    print(load_line(load_before))
    load_after = os.getloadavg()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "warm_ups": warm_ups,
                       "goals": [{"goal": t, "pass": p, "value": v} for t, p, v in verdicts],
                       "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after}, out, indent=1)
    trouble = [f"{r['plugin']} {r['ways']}-way{' (warm-up)' if r in warm_ups else ''}: {failure}"
               for r in warm_ups + rows for failure in r["failures"]]
    trouble += [f"{r['plugin']} {r['ways']}-way: {r['duplicates']} addresses given twice, "
                f"{r.get('store_mismatch', 0)} differences between the store and the answers"
                for r in warm_ups + rows if r["duplicates"] or r.get("store_mismatch")]
    return fail_on(trouble)  # goals are reported, not enforced; a failed ADD or a duplicate is an error


if __name__ == "__main__":
    sys.exit(main())
