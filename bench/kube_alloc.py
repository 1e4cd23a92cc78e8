"""Allocation throughput on the Kubernetes datastore: N simulated nodes, M concurrent whereabouts ADDs in all.

Runs the test API server (tests/kubeapi, docs/testing-kube-api.md) as its own
process over its own 3-member etcd cluster (``--unsafe-no-fsync``: the
injected latency stands for the real one), with each ``--latency`` in turn
added to every write (create, update, patch, delete).  Each run makes
``--adds-per-node`` ADDs for each of N nodes (``NODENAME``), the nodes' ADDs
interleaved, ``--ways`` of them at once cluster-wide (16-way over 4 nodes: 4
at a time per node), each exec'ing our installed ``whereabouts`` plugin.

Layouts, for each node count:

* ``pool``: every node allocates from one shared /22, one IPPool (upstream's
  default: every write of every node contends on one object);
* ``slices``: a /16 with ``node_slice_size`` /22 (docs/node-slices.md):
  ``cni-ipam node-slices`` runs as a process until every node has a slice
  and its IPPool, then stops (its CPU and requests are set-up, not
  counted); each node then allocates only in its own IPPool.

How the ADDs are made (``--via``):

* ``plugin``: the plugin process does the work (``CNI_IPAM_AGENT_SOCKET=""``);
* ``agent``: one ``cni-ipam agent`` per node (``NODENAME`` set, as a
  DaemonSet sets it), on its own socket in this run's private temp dir; the
  node's plugin processes forward to it (docs/agent.md); an ADD its agent's
  log does not show answered (the plugin fell back to doing it) fails the run;
* ``forwarder``: the same agents, reached by the native forwarder
  (native/cni-ipam-forward.c, ``cni-ipam install --native``) instead of the
  Python launcher: what ``cni-ipam render`` installs with the agent;
* ``upstream`` (pool layout only): the same load made by
  ``tests/kubeapi/upstream_writer.py``, a Python reimplementation of Go
  whereabouts v0.9.4's algorithm (the Lease around every ADD, GET, a JSON
  Patch led by ``test``), one writer per ADD as one Go plugin process per
  ADD, in threads of this process.  Its round trips, conflicts and latency
  are upstream's algorithm's; its CPU is Python's, not Go's.

Figures, of the successful ADDs only (any failed ADD, duplicate address, or
address outside its node's slice fails the run, exit 1): allocations/s (ADDs
/ wall time of the batch), ADD latency p50/p99 (exec to exit), API round trips
per ADD and conflicts per ADD (from the server's counters: every request,
and the writes it refused with 409 or 422: a patch whose ``test`` failed, a
reservation or pool create that found the object there), and
CPU per ADD of every process (plugins or upstream writers, agents, the test
API server, the etcd members).  One table per latency and concurrency.

Goals (issue 15), PASS/MISS, pool layout at 10 ms and 16-way: >= 50
allocations/s plugin alone, >= 100/s through agents, p99 < 1 s; zero
duplicates everywhere.  Node slices (issue 16): at the most nodes, >= 3x the
single pool.

    .venv/bin/python bench/kube_alloc.py [--nodes 4] [--ways 1,16,64] [--adds-per-node 64]
                                         [--latency 0,0.01] [--layouts pool] [--via plugin,agent,upstream]
                                         [--json out.json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # the test API server (kubeapi), the upstream writer

from cni_ipam.install import install  # noqa: E402
from cni_ipam_lab.etcd_cluster import ETCD, EtcdCluster, free_base_port  # noqa: E402
from kubeapi import KubeAPIServer  # noqa: E402
from kubeapi.kubeconfig import write_kubeconfig  # noqa: E402
from kubeapi.upstream_writer import UpstreamError, UpstreamWriter  # noqa: E402
from _measure import (agent_answered, children_cpu_s, cni_env, exec_timed, fail_on, load_line,  # noqa: E402
                      percentile, print_table, process_cpu_s, processes_cpu_s, run_concurrently, self_cpu_s,
                      start_agent, stop_agent, verdict)  # (bench/)

NS = "kube-system"
WB = f"/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{NS}"
WRITES = ("create", "update", "patch", "delete")
SHARED = 22  # the pool layout: one shared /22, 1022 addresses
SLICE = "/22"  # the slices layout: 1022 addresses per node of a /16, no node fills its slice in a run
GOAL_FACTOR = 3.0  # issue 16: node slices at the most nodes, at least 3x the single pool
GOAL_LATENCY, GOAL_WAYS = 0.01, 16  # issue 15: at 10 ms write latency, 16-way ...
GOAL_RATE = {"plugin": 50.0, "agent": 100.0, "forwarder": 100.0}  # ... allocations/s cluster-wide ...
GOAL_P99_MS = 1000.0  # ... and p99 under 1 s
VIAS = ("plugin", "agent", "forwarder", "upstream")
THROUGH_AGENTS = ("agent", "forwarder")


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
    if layout == "slices":
        cidr = f"10.{128 + run}.0.0/16"
    else:
        cidr = str(list(ipaddress.ip_network("10.0.0.0/9").subnets(new_prefix=SHARED))[run])
    ipam = {"type": "whereabouts", "range": cidr, "network_name": name,
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


def exec_adds(plugin: str, config: dict, items: list, ways: int, sockets: dict) -> tuple:
    """The ADDs ``items`` ((node, container ID)), ``ways`` at once, each exec'ing the plugin with the node's
    ``NODENAME`` and agent socket ("" for none): (wall s, [(node, cid, latency, address)], failures)."""
    stdin = json.dumps(config).encode()
    lock = threading.Lock()
    done, failures = [], []

    def add(item):
        node, cid = item
        env = cni_env("ADD", cid, os.path.dirname(plugin), CNI_ARGS=f"K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}",
                      NODENAME=node, CNI_IPAM_AGENT_SOCKET=sockets.get(node, ""))
        took, answer = exec_timed([plugin], env, stdin)
        with lock:
            if answer.returncode == 0:
                address = ipaddress.ip_interface(json.loads(answer.stdout)["ips"][0]["address"]).ip
                done.append((node, cid, took, address))
            else:
                failures.append(f"ADD {cid}: exit {answer.returncode}: stdout {answer.stdout[:400]!r} "
                                f"stderr {answer.stderr[:300]!r}")

    return run_concurrently(ways, items, add), done, failures


def upstream_adds(server: KubeAPIServer, name: str, cidr: str, items: list, ways: int) -> tuple:
    """The same ADDs by upstream's algorithm (one UpstreamWriter per ADD, as one Go plugin process per ADD):
    (wall s, [(node, cid, latency, address)], failures, Lease acquire attempts that found it held)."""
    lock = threading.Lock()
    done, failures, waits = [], [], []

    def add(item):
        node, cid = item
        writer = UpstreamWriter(server, namespace=NS, network_name=name)
        started = time.perf_counter()
        try:
            address = writer.add(cidr, cid, f"bench/{cid}", "net1")
        except (OSError, UpstreamError) as exc:
            with lock:
                failures.append(f"upstream ADD {cid}: {exc!r}"[:700])
            return
        took = time.perf_counter() - started
        with lock:
            done.append((node, cid, took, ipaddress.ip_address(address)))
            waits.append(writer.lease_waits)

    return run_concurrently(ways, items, add), done, failures, sum(waits)


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


def start_agents(ctx, count: int) -> None:
    """One agent per node of the next run (``node-0`` ...), started afresh: rows of ours made without agents
    run with none (each agent's IPPool watch is work for the API server and etcd on every write)."""
    for i in range(count):
        node = f"node-{i}"
        ctx["agents"][node] = start_agent(os.path.join(ctx["work"], f"agent-{node}.sock"), {"NODENAME": node},
                                          os.path.join(ctx["work"], f"agent-{node}.log"))


def stop_agents(ctx) -> None:
    while ctx["agents"]:
        stop_agent(ctx["agents"].popitem()[1])


def clear(server: KubeAPIServer) -> None:
    """Delete every IPPool and OverlappingRangeIPReservation after a run (checked by then), so that every row
    starts on the same empty namespace: a plugin command LISTs every IPPool, and earlier runs' full pools would
    make later rows' LISTs larger than earlier rows'."""
    for resource in ("ippools", "overlappingrangeipreservations"):
        for obj in ok(server.request("GET", f"{WB}/{resource}"))["items"]:
            code, _, body = server.request("DELETE", f"{WB}/{resource}/{obj['metadata']['name']}")
            if code not in (200, 404):
                raise RuntimeError(f"deleting {resource} {obj['metadata']['name']}: {code} {body}")


def one_run(ctx, run: int, layout: str, count: int, ways: int, latency: float, via: str, per_node: int) -> dict:
    server, cluster, agents = ctx["server"], ctx["cluster"], ctx["agents"]
    nodes = [f"node-{i}" for i in range(count)]
    name, ipam = network(run, layout, server.bench_kubeconfig)
    slices = give_slices(server, name, ipam, nodes, ctx["work"]) if layout == "slices" else {}
    config = {"cniVersion": "1.0.0", "name": name, "type": "whereabouts", "ipam": ipam}
    items = [(node, f"{name}-{node}-{i:04d}") for i in range(per_node) for node in nodes]  # nodes interleaved
    used = [agents[node] for node in nodes] if via in THROUGH_AGENTS else []
    server.faults([{"verbs": list(WRITES), "latency": latency}], reset=True)

    def cpu():
        return (children_cpu_s(), self_cpu_s(), processes_cpu_s(a.pid for a in used), process_cpu_s(server.pid),
                processes_cpu_s(m.pid for m in cluster.members))

    before = cpu()
    lease_waits = None
    if via == "upstream":
        wall, done, failures, lease_waits = upstream_adds(server, name, ipam["range"], items, ways)
    else:
        sockets = {node: agents[node].args[-1] for node in nodes} if via in THROUGH_AGENTS else {}
        bin_dir = ctx["native_bin_dir"] if via == "forwarder" else ctx["bin_dir"]
        wall, done, failures = exec_adds(os.path.join(bin_dir, "whereabouts"), config, items, ways, sockets)
    answered = server.faults()
    counted, refused = answered["requests"], answered.get("refused", {})
    after = cpu()
    stored = held(server)
    n = max(len(done), 1)
    requests = sum(counted.values())
    lost = sum(v for k, v in refused.items() if k.split(" ")[0] in WRITES)
    latencies = [took for _, _, took, _ in done]
    spent = [(b - a) / n * 1000 for a, b in zip(before, after)]
    # Plugin processes are reaped children; upstream writers are threads of this process.
    writers = spent[1] if via == "upstream" else spent[0]
    cpu_ms = {"writers": round(writers, 1), "agents": round(spent[2], 1), "api_server": round(spent[3], 1),
              "etcd": round(spent[4], 1)}
    problems = failures + check(done, stored, slices)
    if via in THROUGH_AGENTS:
        answered = set().union(*(agent_answered(os.path.join(ctx["work"], f"agent-{node}.log")) for node in nodes))
        missed = [cid for _, cid, _, _ in done if cid not in answered]
        if missed:
            problems.append(f"{len(missed)} ADDs were not answered by their node's agent (the plugin did the work "
                            f"itself), e.g. {missed[:3]}")
    return {"via": via, "layout": layout, "nodes": count, "ways": ways, "latency_s": latency,
            "adds": len(items), "ok": len(done), "failed": len(failures), "failures": problems,
            "duplicates": len(done) - len({address for _, _, _, address in done}),
            "wall_s": round(wall, 2), "alloc_per_s": round(len(done) / wall, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "round_trips_per_add": round(requests / n, 2),
            "conflicts_per_add": round(lost / n, 2),
            "lease_waits_per_add": None if lease_waits is None else round(lease_waits / n, 2),
            "cpu_ms_per_add": {**cpu_ms, "total": round(sum(cpu_ms.values()), 1)}, "requests": counted}


def _cpu(row) -> str:
    cpu = row["cpu_ms_per_add"]
    return f"{cpu['total']} = {cpu['writers']}+{cpu['agents']}+{cpu['api_server']}+{cpu['etcd']}"


def _label(row) -> str:
    return {"plugin": "ours, plugin alone", "agent": "ours, Python launcher + agents",
            "forwarder": "ours, native forwarder + agents",
            "upstream": "upstream's algorithm (Python)"}[row["via"]]


TABLE = [("ADDs made by", -31, _label), ("layout", -6, lambda r: r["layout"]), ("nodes", 5, lambda r: r["nodes"]),
         ("ok", 5, lambda r: r["ok"]), ("alloc/s", 8, lambda r: r["alloc_per_s"]),
         ("vs pool", 7, lambda r: r.get("vs_pool", "-")), ("p50 ms", 7, lambda r: r["p50_ms"]),
         ("p99 ms", 7, lambda r: r["p99_ms"]), ("dups", 4, lambda r: r["duplicates"]),
         ("RT/ADD", 6, lambda r: r["round_trips_per_add"]), ("confl/ADD", 9, lambda r: r["conflicts_per_add"]),
         ("CPU ms/ADD = writers+agents+server+etcd", 40, _cpu)]


def goals(rows: list, counts: list) -> list:
    """(text, passed or None when not measured, value) of each goal."""
    out = []
    for via, rate in GOAL_RATE.items():
        row = next((r for r in rows if r["via"] == via and r["layout"] == "pool" and r["ways"] == GOAL_WAYS
                    and r["latency_s"] == GOAL_LATENCY and r["nodes"] == max(counts)), None)
        what = f"{via}: at {GOAL_LATENCY * 1000:g} ms and {GOAL_WAYS}-way on one shared pool"
        out.append((f"{what}, >= {rate:g} allocations/s", row and row["alloc_per_s"] >= rate,
                    f"{row['alloc_per_s']}/s" if row else "not measured"))
        out.append((f"{what}, p99 < {GOAL_P99_MS:g} ms", row and row["p99_ms"] < GOAL_P99_MS,
                    f"{row['p99_ms']} ms" if row else "not measured"))
    out.append(("zero duplicates, every ADD answered, every address held by its container in the IPPools",
                all(not r["failures"] and not r["duplicates"] for r in rows),
                f"{sum(r['duplicates'] for r in rows)} duplicates, {sum(r['failed'] for r in rows)} failed ADDs, "
                f"{sum(len(r['failures']) - r['failed'] for r in rows)} other problems in {len(rows)} runs"))
    most = max(counts)
    for latency in sorted({r["latency_s"] for r in rows}):
        for ways in sorted({r["ways"] for r in rows}):
            same = [r for r in rows if r["via"] == "plugin" and r["nodes"] == most and r["ways"] == ways
                    and r["latency_s"] == latency]
            sliced = next((r for r in same if r["layout"] == "slices"), None)
            pool = next((r for r in same if r["layout"] == "pool"), None)
            if sliced and pool:
                factor = sliced["alloc_per_s"] / pool["alloc_per_s"] if pool["alloc_per_s"] else float("inf")
                out.append((f"node slices at {most} nodes, {latency * 1000:g} ms, {ways}-way: >= {GOAL_FACTOR:g}x "
                            f"the single pool", factor >= GOAL_FACTOR, f"{factor:.1f}x"))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="4", help="node counts, one run each (default 4)")
    parser.add_argument("--ways", default="1,16,64", help="concurrent ADDs cluster-wide, one table each "
                                                         "(default 1,16,64)")
    parser.add_argument("--adds-per-node", type=int, default=64, help="ADDs each node makes per run (default 64)")
    parser.add_argument("--latency", default="0,0.01", help="seconds added to every write, one table each "
                                                           "(default 0,0.01)")
    parser.add_argument("--layouts", default="pool", help="pool, slices or both (default pool)")
    parser.add_argument("--via", default="plugin,agent,upstream", help="who makes the ADDs: plugin, agent, "
                        "forwarder, upstream (default plugin,agent,upstream)")
    parser.add_argument("--base-port", type=int, default=28790, help="first etcd port to try (default 28790)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",")]
    ways_list = [int(w) for w in args.ways.split(",")]
    latencies = [float(x) for x in args.latency.split(",")]
    layouts = args.layouts.split(",")
    vias = args.via.split(",")
    wrong = [v for v in vias if v not in VIAS] + [x for x in layouts if x not in ("pool", "slices")]
    if wrong:
        parser.error(f"unknown --via or --layouts: {', '.join(wrong)}")
    if "pool" in layouts and max(counts) * args.adds_per_node > 1000:
        parser.error(f"{max(counts)} nodes x {args.adds_per_node} ADDs do not fit the shared /{SHARED} "
                     f"(1022 addresses)")
    if not os.access(ETCD, os.X_OK):
        print(f"etcd is not installed ({ETCD}); apt-get install etcd-server")
        return 2
    work = tempfile.mkdtemp(prefix="bench-kube-")  # mode 0700: the agents' sockets are private to us
    bin_dir = os.path.join(work, "bin")
    install(bin_dir, names=["whereabouts"])
    native_bin_dir = os.path.join(work, "native-bin")
    if "forwarder" in vias:
        install(native_bin_dir, names=["whereabouts"], native=True)
    cluster = EtcdCluster(os.path.join(work, "etcd"), base_port=free_base_port(args.base_port), token="kube-bench")
    ctx = {"server": None, "cluster": cluster, "bin_dir": bin_dir, "native_bin_dir": native_bin_dir, "work": work,
           "agents": {}}
    rows, warm_ups = [], []
    load_before = os.getloadavg()
    try:
        cluster.start()
        server = ctx["server"] = KubeAPIServer(cluster.endpoints, "/kube-bench", os.path.join(work, "api")).start()
        server.bench_kubeconfig = write_kubeconfig(server, os.path.join(work, "kubeconfig"), namespace=NS)
        print(f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f}; {args.adds_per_node} ADDs per node per "
              f"run; ways (concurrent ADDs cluster-wide) {ways_list}; ms added to every write "
              f"{[x * 1000 for x in latencies]}")
        run, warm_ups = 0, []
        for via in (v for v in vias if v not in THROUGH_AGENTS + ("upstream",)):  # warm-up: page cache, .pyc
            warm_ups.append(one_run(ctx, run, "pool", max(counts), 4, 0.0, via, 1))
            clear(server)
            run += 1
        for latency in latencies:
            for ways in ways_list:
                for count in counts:
                    for layout in layouts:
                        for via in vias:
                            if via == "upstream" and layout != "pool":
                                continue  # the upstream writer knows no node slices
                            if via in THROUGH_AGENTS:  # agents run only for their own rows (their watches cost)
                                start_agents(ctx, count)
                                warm_ups.append(one_run(ctx, run, "pool", count, 4, 0.0, via, 1))  # their stores
                                clear(server)
                                run += 1
                            try:
                                rows.append(one_run(ctx, run, layout, count, ways, latency, via, args.adds_per_node))
                            finally:
                                stop_agents(ctx)
                            clear(server)
                            run += 1
                            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("failures", "requests")}),
                                  flush=True)
    finally:
        stop_agents(ctx)
        if ctx["server"] is not None:
            ctx["server"].stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    for row in rows:
        pool = next((r for r in rows if r["layout"] == "pool" and r["via"] == row["via"] and r["nodes"] == row["nodes"]
                     and r["ways"] == row["ways"] and r["latency_s"] == row["latency_s"]), None)
        if row["layout"] == "slices" and pool and pool["alloc_per_s"]:
            row["vs_pool"] = f"{row['alloc_per_s'] / pool['alloc_per_s']:.1f}x"
    for latency in latencies:
        for ways in ways_list:
            print()
            print(f"{ways}-way (ADDs at once cluster-wide), {latency * 1000:g} ms added to every write, "
                  f"{args.adds_per_node} ADDs per node:")
            print_table(TABLE, [r for r in rows if r["ways"] == ways and r["latency_s"] == latency])
    print("(successful ADDs only; a failed ADD fails the run.  durability: etcd --unsafe-no-fsync, 3 members on "
          "loopback, the injected latency standing for a real API server's write.  upstream's algorithm runs as "
          "Python threads of the benchmark: its CPU is not Go's)")
    print()
    verdicts = goals(rows, counts)
    for text, passed, value in verdicts:
        print(f"{verdict(bool(passed)) if passed is not None else 'n/a '}  {text}: {value}")
    print(load_line(load_before))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "goals": [{"goal": t, "pass": p, "value": v} for t, p, v in verdicts],
                       "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()},
                      out, indent=1)
    return fail_on([f"{r['via']} {r['layout']} {r['nodes']} nodes {r['ways']}-way {r['latency_s'] * 1000:g} ms"
                    f"{' (warm-up)' if r in warm_ups else ''}: {f}" for r in warm_ups + rows for f in r["failures"]])


if __name__ == "__main__":
    sys.exit(main())
