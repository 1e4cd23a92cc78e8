"""Cluster-mode allocation throughput: whereabouts plugin processes on one range, one 3-member etcd cluster.

Starts its own 3-member etcd cluster on loopback (free ports from 27790 up,
``--unsafe-no-fsync`` like the test cluster), installs our launchers in a
temp bin dir, then for 1, 16 and 64 concurrent plugin processes execs the
same number of ADDs (distinct container IDs) on one IPv4 range and reports
allocations per second (ADDs / wall time), ADD latency p50/p99 (exec to
exit, as a runtime sees it), CPU per ADD (plugin processes and the three
etcd members), and etcd requests per ADD (from the members' /metrics:
a lost race shows up as extra txns and ranges).  Every run ends with a
duplicate check: the addresses returned must be distinct, and the store
must hold exactly them.

For scale it also execs the same count of sequential ADDs with Debian's Go
``host-local`` (``/usr/lib/cni/host-local``).  host-local is node-local: it
keeps one file per address on the node's disk and knows nothing of other
nodes, so it answers a different, easier question; it is the floor of what
an exec'd Go IPAM plugin costs here.

Goals (issue 4), printed PASS/MISS: at least 100 allocations/s cluster-wide
at 16-way, p99 under 500 ms at 16-way, zero duplicates in every run.  The
exit code is 1 only if an ADD failed or an address was given twice.

    .venv/bin/python bench/cluster_alloc.py [--adds 640] [--ways 1,16,64] [--json out.json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import shutil
import subprocess
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
from _measure import percentile, start_agent  # noqa: E402  (bench/ is the script's directory)

HOST_LOCAL = "/usr/lib/cni/host-local"
RANGE = "10.128.0.0/16"  # never fills: 65534 addresses
GOAL_RATE, GOAL_P99_MS = 100.0, 500.0


def etcd_counters(cluster: EtcdCluster) -> dict:
    """Range and Txn requests served (summed over members), proposals committed, members' CPU seconds."""
    out = {"range": 0, "txn": 0, "proposals": 0, "etcd_cpu": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
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
        with open(f"/proc/{member.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        out["etcd_cpu"] += (int(fields[11]) + int(fields[12])) / tick
    return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def exec_adds(plugin: str, ways: int, adds: int, config: dict, env_extra: dict) -> tuple:
    """``adds`` ADDs by ``ways`` threads each exec'ing one plugin at a time: (wall s, latencies, results, failures)."""
    stdin = json.dumps(config).encode()
    ids = iter(range(adds))
    lock = threading.Lock()
    latencies, results, failures = [], {}, []
    barrier = threading.Barrier(ways + 1)

    def worker():
        barrier.wait()
        while True:
            with lock:
                i = next(ids, None)
            if i is None:
                return
            cid = f"bench-{i:05d}"
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid,
                   "CNI_NETNS": f"/var/run/netns/{cid}", "CNI_IFNAME": "net1", "CNI_PATH": os.path.dirname(plugin),
                   **env_extra}
            started = time.perf_counter()
            done = subprocess.run([plugin], input=stdin, env=env, capture_output=True)
            took = time.perf_counter() - started
            with lock:
                latencies.append(took)
                if done.returncode == 0:
                    results[cid] = [ipaddress.ip_interface(ip["address"]).ip for ip in json.loads(done.stdout)["ips"]]
                else:
                    failures.append((cid, done.stdout.decode(errors="replace")[:300]))

    threads = [threading.Thread(target=worker) for _ in range(ways)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, results, failures


def stored_addresses(cluster: EtcdCluster, prefix: str) -> list:
    client = EtcdClient(cluster.endpoints, timeout=10, deadline=30)
    try:
        base = (prefix + "pools/").encode()
        kvs = client.range(base, prefix_end(base), 0, True)
    finally:
        client.close()
    return [ipaddress.ip_address(int(kv["key"].decode().rsplit("/", 1)[1][1:], 16)) for kv in kvs]


def run_ours(cluster: EtcdCluster, bin_dir: str, ways: int, adds: int, agent_socket: str = "") -> dict:
    prefix = f"/bench-{ways}-{uuid.uuid4().hex[:8]}/"
    config = {"cniVersion": "1.0.0", "name": "bench-net", "type": "whereabouts",
              "ipam": {"type": "whereabouts", "range": RANGE, "datastore": "etcd",
                       "etcd_endpoints": cluster.endpoints, "etcd_prefix": prefix}}
    before, cpu_before = etcd_counters(cluster), children_cpu()
    wall, latencies, results, failures = exec_adds(os.path.join(bin_dir, "whereabouts"), ways, adds, config,
                                                   {"NODENAME": "bench-node", "CNI_IPAM_AGENT_SOCKET": agent_socket})
    after, cpu_after = etcd_counters(cluster), children_cpu()
    returned = [ip for ips in results.values() for ip in ips]
    stored = stored_addresses(cluster, prefix)
    duplicates = (len(returned) - len(set(returned))) + (len(stored) - len(set(stored)))
    mismatch = set(stored) ^ set(returned)
    name = "cni-ipam whereabouts (etcd)" + (" + agent" if agent_socket else "")
    return {"plugin": name, "ways": ways, "adds": adds, "ok": len(results),
            "failed": len(failures), "first_failure": failures[:1], "wall_s": round(wall, 2),
            "alloc_per_s": round(len(results) / wall, 1), "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1), "max_ms": round(max(latencies) * 1000, 1),
            "duplicates": duplicates, "store_mismatch": len(mismatch),
            "plugin_cpu_ms_per_add": round((cpu_after - cpu_before) / adds * 1000, 1),
            "etcd_cpu_ms_per_add": round((after["etcd_cpu"] - before["etcd_cpu"]) / adds * 1000, 1),
            "txn_per_add": round((after["txn"] - before["txn"]) / adds, 2),
            "range_per_add": round((after["range"] - before["range"]) / adds, 2),
            "proposals_per_add": round((after["proposals"] - before["proposals"]) / adds, 2)}


def run_host_local(adds: int, ways: int = 1) -> dict:
    data_dir = tempfile.mkdtemp(prefix="bench-host-local-")
    try:
        config = {"cniVersion": "1.0.0", "name": "bench-net", "type": "host-local",
                  "ipam": {"type": "host-local", "ranges": [[{"subnet": RANGE}]], "dataDir": data_dir}}
        cpu_before = children_cpu()
        wall, latencies, results, failures = exec_adds(HOST_LOCAL, ways, adds, config, {})
        cpu = children_cpu() - cpu_before
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    returned = [ip for ips in results.values() for ip in ips]
    return {"plugin": "Go host-local (node-local files)", "ways": ways, "adds": adds, "ok": len(results),
            "failed": len(failures), "first_failure": failures[:1], "wall_s": round(wall, 2),
            "alloc_per_s": round(len(results) / wall, 1), "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1), "max_ms": round(max(latencies) * 1000, 1),
            "duplicates": len(returned) - len(set(returned)), "plugin_cpu_ms_per_add": round(cpu / adds * 1000, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adds", type=int, default=640, help="ADDs per run (default 640)")
    parser.add_argument("--ways", default="1,16,64", help="concurrent plugin processes per run (default 1,16,64)")
    parser.add_argument("--base-port", type=int, default=27790, help="first etcd port to try (default 27790)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-agent", action="store_true", help="skip the runs through the node agent")
    args = parser.parse_args(argv)
    if not os.access(ETCD, os.X_OK):
        print(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
        return 2

    work = tempfile.mkdtemp(prefix="bench-cluster-")
    bin_dir = os.path.join(work, "bin")
    install(bin_dir, names=["whereabouts"])
    cluster = EtcdCluster(os.path.join(work, "etcd"), base_port=free_base_port(args.base_port),
                          token="cni-ipam-bench")
    rows = []
    load_before = os.getloadavg()
    agent = None
    try:
        cluster.start()
        print(f"3-member etcd cluster: {', '.join(cluster.endpoints)}; {os.cpu_count()} CPUs, "
              f"load average {load_before[0]:.1f}; {args.adds} ADDs per run on {RANGE}")
        run_ours(cluster, bin_dir, 4, 32)  # warm-up: page cache, .pyc, etcd connections
        sockets = [""] if args.no_agent else ["", os.path.join(work, "agent.sock")]
        agent = None if args.no_agent else start_agent(sockets[1])
        for ways in (int(w) for w in args.ways.split(",")):
            for socket_path in sockets:
                rows.append(run_ours(cluster, bin_dir, ways, args.adds, socket_path))
                print(json.dumps(rows[-1]))
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        cluster.stop()
    if os.access(HOST_LOCAL, os.X_OK):
        rows.append(run_host_local(args.adds))
        print(json.dumps(rows[-1]))
    else:
        print(f"{HOST_LOCAL} not found (apt-get install containernetworking-plugins): no host-local comparison")
    shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'plugin':34} {'ways':>4} {'ok':>5} {'alloc/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'dups':>4} "
          f"{'cpu ms/ADD plugin+etcd':>23} {'txn/ADD':>7} {'range/ADD':>9}")
    for row in rows:
        cpu = f"{row['plugin_cpu_ms_per_add']}"
        if "etcd_cpu_ms_per_add" in row:
            cpu += f"+{row['etcd_cpu_ms_per_add']}"
        print(f"{row['plugin']:34} {row['ways']:>4} {row['ok']:>5} {row['alloc_per_s']:>8} {row['p50_ms']:>7} "
              f"{row['p99_ms']:>7} {row['duplicates']:>4} {cpu:>23} {row.get('txn_per_add', ''):>7} "
              f"{row.get('range_per_add', ''):>9}")
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
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (other jobs share these CPUs)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "goals": [{"goal": t, "pass": ok, "value": v} for t, ok, v in goals],
                       "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after}, out, indent=1)
    return 0 if clean else 1  # goals are reported, not enforced; a failed ADD or a duplicate is an error


if __name__ == "__main__":
    sys.exit(main())
