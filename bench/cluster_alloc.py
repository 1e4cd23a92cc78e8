"""Cluster-mode allocation throughput: whereabouts plugin processes on one range, one 3-member etcd cluster.

Starts its own 3-member etcd cluster on loopback (free ports from 27790 up),
twice: first with ``--unsafe-no-fsync`` like the test cluster, then a
cluster that fsyncs its log as a real one does (``--no-fsync-etcd`` skips it);
every figure says which.  It installs our launchers in a
temp bin dir, then for 1, 16 and 64 concurrent plugin processes execs the
same number of ADDs (distinct container IDs) on one IPv4 range and reports
allocations per second (successful ADDs / wall time), ADD latency p50/p99
of the successful ADDs (exec to exit, as a runtime sees it), CPU per ADD
(plugin processes, the node agent when it is used, and the three etcd
members), and etcd requests per ADD (from the members' /metrics:
a lost race shows up as extra txns and ranges).  Every run ends with a
duplicate check: the addresses returned must be distinct, and the store
must hold exactly them.

For scale it also execs the same count of ADDs, at each concurrency, with
Debian's Go ``host-local`` (``/usr/lib/cni/host-local``).  host-local is node-local: it
keeps one file per address on the node's disk and knows nothing of other
nodes, so it answers a different, easier question; it is the floor of what
an exec'd Go IPAM plugin costs here.

Goals (issue 4), printed PASS/MISS: at least 100 allocations/s cluster-wide
at 16-way, p99 under 500 ms at 16-way, zero duplicates in every run.  Any
failed ADD or address given twice fails the benchmark (exit code 1, each
failed ADD printed with its output).

    .venv/bin/python bench/cluster_alloc.py [--adds 640] [--ways 1,16,64] [--json out.json]
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
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from cni_ipam_lab.etcd_cluster import ETCD, EtcdCluster, free_base_port  # noqa: E402
from cni_ipam.install import install  # noqa: E402
from cni_ipam.store.etcd_client import EtcdClient, prefix_end  # noqa: E402
from _measure import (DURABILITY_HOST_LOCAL, children_cpu_s, cni_env, exec_timed, fail_on, load_line,  # noqa: E402
                      percentile, print_table, process_cpu_s, run_concurrently, start_agent, stop_agent)  # (bench/)

HOST_LOCAL = "/usr/lib/cni/host-local"
RANGE = "10.128.0.0/16"  # never fills: 65534 addresses
GOAL_RATE, GOAL_P99_MS = 100.0, 500.0
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


TABLE = [("plugin", -40, lambda r: r["plugin"]), ("ok", 5, lambda r: r["ok"]),
         ("alloc/s", 8, lambda r: r["alloc_per_s"]), ("p50 ms", 7, lambda r: r["p50_ms"]),
         ("p99 ms", 7, lambda r: r["p99_ms"]), ("dups", 4, lambda r: r["duplicates"]),
         ("cpu ms/ADD plugin+agent+etcd", 28, _cpu), ("txn/ADD", 7, lambda r: r.get("txn_per_add", "")),
         ("range/ADD", 9, lambda r: r.get("range_per_add", ""))]


def etcd_counters(cluster: EtcdCluster) -> dict:
    """Range and Txn requests served (summed over members), proposals committed, members' CPU seconds."""
    out = {"range": 0, "txn": 0, "proposals": 0, "etcd_cpu": 0.0}
    for member in cluster.members:
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
                out["proposals"] = max(out["proposals"], float(line.split()[1]))
        out["etcd_cpu"] += process_cpu_s(member.pid)
    return out


def exec_adds(plugin: str, ways: int, adds: int, config: dict, env_extra: dict) -> tuple:
    """``adds`` ADDs by ``ways`` threads each exec'ing one plugin at a time: (wall s, latencies of the successful
    ADDs, results, failures as "ADD <container ID>: exit, stdout, stderr")."""
    stdin = json.dumps(config).encode()
    lock = threading.Lock()
    latencies, results, failures = [], {}, []

    def add(i):
        cid = f"bench-{i:05d}"
        took, done = exec_timed([plugin], cni_env("ADD", cid, os.path.dirname(plugin), **env_extra), stdin)
        with lock:
            if done.returncode == 0:
                latencies.append(took)
                results[cid] = [ipaddress.ip_interface(ip["address"]).ip for ip in json.loads(done.stdout)["ips"]]
            else:
                failures.append(f"{os.path.basename(plugin)} ADD {cid}: exit {done.returncode}: "
                                f"stdout {done.stdout[:300]!r} stderr {done.stderr[:300]!r}")

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


def run_ours(cluster: EtcdCluster, etcd: str, bin_dir: str, ways: int, adds: int, agent=None) -> dict:
    prefix = f"/bench-{ways}-{uuid.uuid4().hex[:8]}/"
    config = {"cniVersion": "1.0.0", "name": "bench-net", "type": "whereabouts",
              "ipam": {"type": "whereabouts", "range": RANGE, "datastore": "etcd",
                       "etcd_endpoints": cluster.endpoints, "etcd_prefix": prefix}}
    agent_socket = agent.args[-1] if agent else ""
    before, cpu_before = etcd_counters(cluster), children_cpu_s()
    agent_before = process_cpu_s(agent.pid) if agent else 0.0
    wall, latencies, results, failures = exec_adds(os.path.join(bin_dir, "whereabouts"), ways, adds, config,
                                                   {"NODENAME": "bench-node", "CNI_IPAM_AGENT_SOCKET": agent_socket})
    after, cpu_after = etcd_counters(cluster), children_cpu_s()
    agent_cpu = process_cpu_s(agent.pid) - agent_before if agent else 0.0
    done = max(len(results), 1)
    returned = [ip for ips in results.values() for ip in ips]
    stored = stored_addresses(cluster, prefix)
    duplicates = (len(returned) - len(set(returned))) + (len(stored) - len(set(stored)))
    mismatch = set(stored) ^ set(returned)
    name = "ours" + (" + agent" if agent else "") + f", {etcd}"
    return {"plugin": name, "etcd": etcd, "ways": ways, "adds": adds, "ok": len(results),
            "failed": len(failures), "failures": failures, **timing(wall, latencies, results),
            "duplicates": duplicates, "store_mismatch": len(mismatch),
            "plugin_cpu_ms_per_add": round((cpu_after - cpu_before) / done * 1000, 1),
            "agent_cpu_ms_per_add": round(agent_cpu / done * 1000, 1),
            "etcd_cpu_ms_per_add": round((after["etcd_cpu"] - before["etcd_cpu"]) / done * 1000, 1),
            "txn_per_add": round((after["txn"] - before["txn"]) / adds, 2),
            "range_per_add": round((after["range"] - before["range"]) / adds, 2),
            "proposals_per_add": round((after["proposals"] - before["proposals"]) / adds, 2)}


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
    return {"plugin": "Go host-local (node-local files)", "ways": ways, "adds": adds, "ok": len(results),
            "failed": len(failures), "failures": failures, **timing(wall, latencies, results),
            "duplicates": len(returned) - len(set(returned)),
            "plugin_cpu_ms_per_add": round(cpu / max(len(results), 1) * 1000, 1)}


def etcd_phase(cluster: EtcdCluster, etcd: str, bin_dir: str, work: str, args) -> list:
    """Start ``cluster``, the warm-up, then ours (and ours through a node agent) at each concurrency; stopped after."""
    rows, agent = [], None
    try:
        cluster.start()
        print(f"{etcd}: 3 members at {', '.join(cluster.endpoints)}")
        run_ours(cluster, etcd, bin_dir, 4, 32)  # warm-up: page cache, .pyc, etcd connections
        if not args.no_agent:
            agent = start_agent(os.path.join(work, f"agent-{len(etcd)}.sock"))
        for ways in args.ways:
            for through in ([None] if agent is None else [None, agent]):
                rows.append(run_ours(cluster, etcd, bin_dir, ways, args.adds, through))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "failures"}))
    finally:
        if agent is not None:
            stop_agent(agent)
        cluster.stop()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adds", type=int, default=640, help="ADDs per run (default 640)")
    parser.add_argument("--ways", default="1,16,64", help="concurrent plugin processes per run (default 1,16,64)")
    parser.add_argument("--base-port", type=int, default=27790, help="first etcd port to try (default 27790)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-agent", action="store_true", help="skip the runs through the node agent")
    parser.add_argument("--no-fsync-etcd", action="store_true",
                        help="skip the runs on an fsyncing etcd (only the --unsafe-no-fsync cluster)")
    args = parser.parse_args(argv)
    args.ways = [int(w) for w in args.ways.split(",")]
    if not os.access(ETCD, os.X_OK):
        print(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
        return 2

    work = tempfile.mkdtemp(prefix="bench-cluster-")
    bin_dir = os.path.join(work, "bin")
    install(bin_dir, names=["whereabouts"])
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f}; {args.adds} ADDs per run on {RANGE}")
    phases = [(False, NO_FSYNC)] + ([] if args.no_fsync_etcd else [(True, FSYNC)])
    rows = []
    for fsync, etcd in phases:
        cluster = EtcdCluster(os.path.join(work, f"etcd-{len(rows)}"), base_port=free_base_port(args.base_port),
                              token="cni-ipam-bench", fsync=fsync)
        rows += etcd_phase(cluster, etcd, bin_dir, work, args)
    if os.access(HOST_LOCAL, os.X_OK):
        for ways in args.ways:
            rows.append(run_host_local(args.adds, ways))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "failures"}))
    else:
        print(f"{HOST_LOCAL} not found (apt-get install containernetworking-plugins): no host-local comparison")
    shutil.rmtree(work, ignore_errors=True)

    for ways in args.ways:  # one table per concurrency
        print()
        print(f"{ways}-way:")
        print_table(TABLE, [r for r in rows if r["ways"] == ways])
    print("(figures count successful ADDs only)")
    print("durability:")
    for etcd in (e for _, e in phases):
        print(f"  {DURABILITY_ETCD[etcd]}")
    print(f"  {DURABILITY_HOST_LOCAL}; and it is node-local: it knows nothing of other nodes")
    print()
    ours = [r for r in rows if "txn_per_add" in r]
    goals = []
    for at16 in (r for r in ours if r["ways"] == 16):
        goals.append((f"{at16['plugin']}: >= {GOAL_RATE:g} allocations/s cluster-wide at 16-way",
                      at16["alloc_per_s"] >= GOAL_RATE, f"{at16['alloc_per_s']}/s"))
        goals.append((f"{at16['plugin']}: p99 < {GOAL_P99_MS:g} ms at 16-way", at16["p99_ms"] < GOAL_P99_MS,
                      f"{at16['p99_ms']} ms"))
    clean = all(r["duplicates"] == 0 and r.get("store_mismatch", 0) == 0 and r["failed"] == 0 for r in rows)
    goals.append(("zero duplicates, every ADD answered, store == answers", clean,
                  ", ".join(f"{r['ways']}-way: {r['duplicates']} dups, {r['failed']} failed" for r in ours)))
    for text, ok, value in goals:
        print(f"{'PASS' if ok else 'MISS'}  {text}: {value}")
    print(load_line(load_before))
    load_after = os.getloadavg()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "goals": [{"goal": t, "pass": ok, "value": v} for t, ok, v in goals],
                       "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after}, out, indent=1)
    trouble = [failure for row in rows for failure in row["failures"]]
    trouble += [f"{r['plugin']} {r['ways']}-way: {r['duplicates']} addresses given twice, "
                f"{r.get('store_mismatch', 0)} differences between the store and the answers"
                for r in rows if r["duplicates"] or r.get("store_mismatch")]
    return fail_on(trouble)  # goals are reported, not enforced; a failed ADD or a duplicate is an error


if __name__ == "__main__":
    sys.exit(main())
