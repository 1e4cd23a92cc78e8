"""Allocation throughput on the Kubernetes datastore: N simulated nodes x M concurrent whereabouts ADDs.

Runs the test API server (tests/kubeapi, docs/testing-kube-api.md) as its own
process over its own 3-member etcd cluster (``--unsafe-no-fsync``: the
injected latency stands for the real one), with ``--latency`` seconds added to
every write (create, update, patch, delete).  Each node is a ``NODENAME`` and
M threads, each exec'ing our installed ``whereabouts`` plugin one ADD at a
time, until the node has made ``--adds-per-node`` ADDs; all nodes at once.

Two layouts, for each node count:

* ``pool``: every node allocates from one range, one IPPool (upstream's
  default: every write of every node contends on one object);
* ``slices``: ``node_slice_size`` (docs/node-slices.md): ``cni-ipam
  node-slices`` runs as a process until every node has a slice and its
  IPPool, then stops (its CPU and requests are set-up, not counted); each
  node then allocates only in its own IPPool.

Figures, of the successful ADDs only (any failed ADD, duplicate address, or
address outside its node's slice fails the run, exit 1): allocations/s (ADDs
/ wall time of the batch), ADD latency p50/p99 (exec to exit), API round trips
per ADD and conflicts per ADD (from the server's request counters: every
request, and the writes beyond the one IPPool patch and one reservation
create an ADD needs, i.e. patches lost to a concurrent writer's, reservations
and pool creates lost to another ADD), and CPU per ADD of every process
(plugins, the test API server, the etcd members).

    .venv/bin/python bench/kube_alloc.py [--nodes 1,2,4,8] [--ways 8] [--adds-per-node 16]
                                         [--latency 0.01] [--layouts pool,slices] [--json out.json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # the test API server (kubeapi)

from cni_ipam.install import install  # noqa: E402
from cni_ipam_lab.etcd_cluster import ETCD, EtcdCluster, free_base_port  # noqa: E402
from kubeapi import KubeAPIServer  # noqa: E402
from kubeapi.kubeconfig import write_kubeconfig  # noqa: E402
from _measure import fail_on, percentile, process_cpu_s  # noqa: E402  (bench/)

NS = "kube-system"
WB = f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{NS}"
WRITES = ("create", "update", "patch", "delete")
SLICE = "/22"  # 1022 addresses per node: no node fills its slice in a run
GOAL_FACTOR = 3.0  # issue 16: node slices at 8 nodes, at least 3x the single pool


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ok(answer) -> dict:
    code, _, body = answer
    if code not in (200, 201):
        raise RuntimeError(f"API answered {code}: {body}")
    return body


def wait_for(check, timeout: float, what: str):
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"not reached in {timeout:g} s: {what}")


def network(run: int, layout: str, kubeconfig: str) -> tuple:
    """(network name, ipam) of one run: its own range and network_name, so runs never share a pool."""
    name = f"{layout}-{run}"
    ipam = {"type": "whereabouts", "range": f"10.{100 + run}.0.0/16", "network_name": name,
            "datastore": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig}}
    if layout == "slices":
        ipam["node_slice_size"] = SLICE
    return name, ipam


def give_slices(server: KubeAPIServer, name: str, ipam: dict, nodes: list, work: str) -> dict:
    """The NAD and Node objects, then ``cni-ipam node-slices`` until every node has a slice and its IPPool:
    {node: slice network}.  The controller is stopped before the batch."""
    nad = {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "ipam": ipam}
    ok(server.request("POST", "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions",
                      {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                       "metadata": {"name": name}, "spec": {"config": json.dumps(nad)}}))
    for node in nodes:
        code, _, body = server.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                                                 "metadata": {"name": node}})
        if code not in (201, 409):
            raise RuntimeError(f"node {node}: {code} {body}")
    log = open(os.path.join(work, f"controller-{name}.log"), "ab")
    controller = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "node-slices", "--kubeconfig",
                                   ipam["kubernetes"]["kubeconfig"], "--namespace", NS, "--identity", name,
                                   "--retry-period", "0.2", "--resync", "1"],
                                  stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        def assigned():
            code, _, body = server.request("GET", f"{WB}/nodeslicepools/{name}")
            got = {a["nodeName"]: a["sliceRange"] for a in (body.get("status") or {}).get("allocations", [])
                   if a["nodeName"] in nodes} if code == 200 else {}
            pools = {p["metadata"]["name"] for p in ok(server.request("GET", f"{WB}/ippools"))["items"]}
            made = all(f"{name}-{n}-{s.replace('/', '-')}" in pools for n, s in got.items())
            return got if len(got) == len(nodes) and made else None
        slices = wait_for(assigned, 60, f"slices of {name} for {len(nodes)} nodes")
    finally:
        controller.send_signal(signal.SIGTERM)  # ours, by its pid
        controller.wait(15)
    return {node: ipaddress.ip_network(text) for node, text in slices.items()}


def exec_adds(plugin: str, config: dict, nodes: list, ways: int, per_node: int) -> tuple:
    """Every node's ``ways`` threads at once, each exec'ing one ADD at a time: (wall s, [(node, cid, latency,
    address)], failures)."""
    stdin = json.dumps(config).encode()
    lock = threading.Lock()
    done, failures = [], []
    todo = {node: iter(range(per_node)) for node in nodes}
    barrier = threading.Barrier(len(nodes) * ways + 1)

    def worker(node):
        barrier.wait()
        while True:
            with lock:
                i = next(todo[node], None)
            if i is None:
                return
            cid = f"{config['name']}-{node}-{i:04d}"  # unique over runs
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid,
                   "CNI_NETNS": f"/var/run/netns/{cid}", "CNI_IFNAME": "net1", "CNI_PATH": os.path.dirname(plugin),
                   "CNI_ARGS": f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}", "NODENAME": node}
            started = time.perf_counter()
            answer = subprocess.run([plugin], input=stdin, env=env, capture_output=True)
            took = time.perf_counter() - started
            with lock:
                if answer.returncode == 0:
                    address = ipaddress.ip_interface(json.loads(answer.stdout)["ips"][0]["address"]).ip
                    done.append((node, cid, took, address))
                else:
                    failures.append(f"ADD {cid}: exit {answer.returncode}: stdout {answer.stdout[:400]!r} "
                                    f"stderr {answer.stderr[:300]!r}")

    threads = [threading.Thread(target=worker, args=(node,)) for node in nodes for _ in range(ways)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, done, failures


def held(server: KubeAPIServer) -> dict:
    """container ID -> (IPPool name, address) over every IPPool."""
    out = {}
    for pool in ok(server.request("GET", f"{WB}/ippools"))["items"]:
        base = ipaddress.ip_network(pool["spec"]["range"]).network_address
        for key, value in (pool["spec"].get("allocations") or {}).items():
            out[value["id"]] = (pool["metadata"]["name"], base + int(key))
    return out


def check(done: list, stored: dict, slices: dict) -> list:
    """Problems: an address given twice, one the store does not hold for its container, one outside its
    node's slice."""
    problems = []
    addresses = [address for _, _, _, address in done]
    if len(addresses) != len(set(addresses)):
        problems.append(f"{len(addresses) - len(set(addresses))} addresses given twice")
    for node, cid, _, address in done:
        if stored.get(cid, (None, None))[1] != address:
            problems.append(f"{cid} was given {address}, the IPPools hold {stored.get(cid)}")
        if slices and address not in slices[node]:
            problems.append(f"{cid} of {node} was given {address}, outside its slice {slices[node]}")
    return problems


def one_run(server, cluster, bin_dir, work, run: int, layout: str, count: int, args) -> dict:
    nodes = [f"node-{i}" for i in range(count)]
    name, ipam = network(run, layout, server.bench_kubeconfig)
    slices = give_slices(server, name, ipam, nodes, work) if layout == "slices" else {}
    config = {"cniVersion": "1.0.0", "name": name, "type": "whereabouts", "ipam": ipam}
    server.faults([{"verbs": list(WRITES), "latency": args.latency}], reset=True)
    cpu = (children_cpu(), process_cpu_s(server.pid), sum(process_cpu_s(m.pid) for m in cluster.members))
    wall, done, failures = exec_adds(os.path.join(bin_dir, "whereabouts"), config, nodes, args.ways,
                                     args.adds_per_node)
    counted = server.faults()["requests"]
    cpu_after = (children_cpu(), process_cpu_s(server.pid), sum(process_cpu_s(m.pid) for m in cluster.members))
    stored = held(server)
    n = max(len(done), 1)
    requests = sum(counted.values())
    needed = sum(counted.get(k, 0) for k in ("patch ippools", "create ippools", "create overlappingrangeipreservations"))
    latencies = [took for _, _, took, _ in done]
    cpu_ms = [round((b - a) / n * 1000, 1) for a, b in zip(cpu, cpu_after)]
    return {"layout": layout, "nodes": count, "ways": args.ways, "adds": count * args.adds_per_node,
            "ok": len(done), "failed": len(failures), "failures": failures + check(done, stored, slices),
            "wall_s": round(wall, 2), "alloc_per_s": round(len(done) / wall, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 1), "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "round_trips_per_add": round(requests / n, 2), "conflicts_per_add": round((needed - 2 * len(done)) / n, 2),
            "cpu_ms_per_add": {"plugins": cpu_ms[0], "api_server": cpu_ms[1], "etcd": cpu_ms[2]},
            "requests": counted}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,4,8", help="node counts, one run each (default 1,2,4,8)")
    parser.add_argument("--ways", type=int, default=8, help="concurrent plugin processes per node (default 8)")
    parser.add_argument("--adds-per-node", type=int, default=16, help="ADDs each node makes (default 16)")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds added to every write (default 0.01)")
    parser.add_argument("--layouts", default="pool,slices", help="pool, slices or both (default pool,slices)")
    parser.add_argument("--base-port", type=int, default=28790, help="first etcd port to try (default 28790)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",")]
    layouts = args.layouts.split(",")
    if not os.access(ETCD, os.X_OK):
        print(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
        return 2
    work = tempfile.mkdtemp(prefix="bench-kube-")
    bin_dir = os.path.join(work, "bin")
    install(bin_dir, names=["whereabouts"])
    cluster = EtcdCluster(os.path.join(work, "etcd"), base_port=free_base_port(args.base_port), token="kube-bench")
    server = None
    rows = []
    load_before = os.getloadavg()
    try:
        cluster.start()
        server = KubeAPIServer(cluster.endpoints, "/kube-bench", os.path.join(work, "api")).start()
        server.bench_kubeconfig = write_kubeconfig(server, os.path.join(work, "kubeconfig"), namespace=NS)
        print(f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f}; {args.ways} ADDs at once per node, "
              f"{args.adds_per_node} per node, {args.latency * 1000:g} ms added to every write")
        one_run(server, cluster, bin_dir, work, 0, "pool", 1, argparse.Namespace(**{**vars(args), "ways": 2,
                                                                                    "adds_per_node": 4}))  # warm-up
        run = 1
        for count in counts:
            for layout in layouts:
                rows.append(one_run(server, cluster, bin_dir, work, run, layout, count, args))
                run += 1
                print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("failures", "requests")}))
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"  {'layout':7} {'nodes':>5} {'ok':>5} {'alloc/s':>8} {'vs pool':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'RT/ADD':>6} {'confl/ADD':>9} {'CPU ms/ADD plugins+server+etcd':>31}")
    for row in rows:
        pool = next((r for r in rows if r["layout"] == "pool" and r["nodes"] == row["nodes"]), None)
        factor = f"{row['alloc_per_s'] / pool['alloc_per_s']:.1f}x" if pool and pool["alloc_per_s"] else "-"
        cpu = row["cpu_ms_per_add"]
        print(f"  {row['layout']:7} {row['nodes']:>5} {row['ok']:>5} {row['alloc_per_s']:>8} {factor:>7} "
              f"{row['p50_ms']:>7} {row['p99_ms']:>7} {row['round_trips_per_add']:>6} {row['conflicts_per_add']:>9} "
              f"{cpu['plugins']:>13}+{cpu['api_server']}+{cpu['etcd']}")
    print("(successful ADDs only; a failed ADD fails the run)")
    most = max(counts)
    sliced = next((r for r in rows if r["layout"] == "slices" and r["nodes"] == most), None)
    pool = next((r for r in rows if r["layout"] == "pool" and r["nodes"] == most), None)
    if sliced and pool:
        factor = sliced["alloc_per_s"] / pool["alloc_per_s"] if pool["alloc_per_s"] else float("inf")
        print(f"{'PASS' if factor >= GOAL_FACTOR else 'MISS'}  node slices at {most} nodes >= {GOAL_FACTOR:g}x the "
              f"single pool: {factor:.1f}x")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (other jobs share these CPUs)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after},
                      out, indent=1)
    return fail_on([f"{r['layout']} {r['nodes']} nodes: {f}" for r in rows for f in r["failures"]])


if __name__ == "__main__":
    sys.exit(main())
