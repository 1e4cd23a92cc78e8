"""Where one plugin call's time goes, per command and per store: interpreter, imports, our code, store waits.

For whereabouts on SQLite, on a 3-member etcd cluster and on the
Kubernetes store (the test API server of tests/kubeapi, over that etcd),
and for dhcp (our daemon and dnsmasq in throw-away namespaces; root
only), it execs our installed launcher the way a runtime does, N
attachments per command: N ADDs, then a CHECK of each (with its ADD's
result as prevResult), then a DEL of each.  Per command it prints:

* wall p50 and CPU p50 (the child's own rusage, from ``wait4``);
* ``after start``: CPU p50 minus the bare interpreter's (``-IS -c pass``,
  measured in the same run): what we add on top of Python;
* ``imports``: the self times ``-X importtime`` reports for the modules
  the launcher loaded, summed (each module's least of 5 calls: importtime
  counts wall time, which a busy machine inflates); ``ours``: after start
  minus imports, the time in our code;
* ``off-CPU``: p50 of wall minus CPU, the time the call waits (fsync,
  network round trips, locks; on a busy machine also the run queue);
* the modules loaded beyond the interpreter's start-up, ours (``cni_ipam``)
  and the standard library's;
* from one call under ``strace -f -c``: fsyncs (fsync + fdatasync),
  connects and sends (sendto + sendmsg: about one per request, the stores
  here speak plain HTTP and TCP without TLS).

With the node agent (``--agent``, on by default) each store is run a
second time through ``cni-ipam agent`` with the same Python launcher; its
CPU then adds the agent's (``/proc/<pid>/stat``) spread over the calls.

Only successful calls are counted, and any failed call (non-zero exit, or
anything on stderr) fails the run (exit code 1, the call printed).  What
each store does for durability is printed under the table.

    .venv/bin/python bench/hot_path.py [-n 30] [--stores sqlite,etcd,kubernetes,dhcp] [--no-agent] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # kubeapi: the test API server

from _measure import (DURABILITY_SQLITE, fail_on, load_line, percentile, process_cpu_s, spawn_timed,  # noqa: E402
                      start_agent, stop_agent)
from cni_ipam import code_bundle  # noqa: E402
from cni_ipam.install import install, package_parent  # noqa: E402

COMMANDS = ("ADD", "CHECK", "DEL")
# One pod per attachment: an ADD for a pod that already holds an address moves it to the new container.
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME="
IMPORTTIME_RUNS = 5  # importtime reports wall time: the least of 5 runs per module is the least disturbed
DURABILITY = {
    "sqlite": DURABILITY_SQLITE["FULL"],
    "etcd": "etcd --unsafe-no-fsync, 3 members on loopback (as in the tests: a commit is acknowledged before its "
            "raft log reaches the disk)",
    "kubernetes": "test API server (tests/kubeapi, plain HTTP) over that etcd",
    "dhcp": "our DHCP daemon keeps the lease with fsync; dnsmasq serves it",
}


class World:
    """One backend: its ``ipam`` config, a new pod namespace per attachment, and how to stop what it started."""

    def __init__(self, name: str, ipam: dict, new_netns=None, stop=None) -> None:
        self.name = name
        self.ipam = ipam
        self.new_netns = new_netns or (lambda cid: f"/var/run/netns/{cid}")
        self.stop = stop or (lambda: None)


def flat_file(directory: str, content: dict) -> str:
    os.makedirs(directory, mode=0o700, exist_ok=True)  # the plugin refuses a store other users could read
    path = os.path.join(directory, "whereabouts.conf")
    with open(path, "w") as out:
        json.dump(content, out)
    return path


def sqlite_world(work: str) -> World:
    # The store gets a directory of its own (the plugin makes it 0700); the flat file lives elsewhere, since a
    # store directory that holds other files is refused (cni_ipam.store.sqlite, "Private to root").
    db = os.path.join(work, "sqlite", "whereabouts.db")
    flat = flat_file(os.path.join(work, "sqlite-flat"), {"datastore": "sqlite", "sqlite_path": db})
    return World("sqlite", {"type": "whereabouts", "range": "10.60.0.0/16", "configuration_path": flat,
                            "datastore": "sqlite", "sqlite_path": db})


def etcd_world(cluster) -> World:
    flat = flat_file(os.path.join(cluster.directory, "flat"), {"datastore": "etcd"})
    return World("etcd", {"type": "whereabouts", "range": "10.61.0.0/16", "configuration_path": flat,
                          "datastore": "etcd", "etcd_endpoints": cluster.endpoints, "etcd_prefix": "/hot-path/"})


def kubernetes_world(cluster, work: str) -> World:
    from kubeapi import KubeAPIServer
    from kubeapi.kubeconfig import write_kubeconfig

    server = KubeAPIServer(cluster.endpoints, "/hot-path-kube/", os.path.join(work, "kubeapi")).start()
    directory = os.path.join(work, "kube", "whereabouts.d")
    os.makedirs(directory)
    kubeconfig = write_kubeconfig(server, os.path.join(directory, "whereabouts.kubeconfig"), token_file=True)
    flat_file(directory, {"datastore": "kubernetes", "kubernetes": {"kubeconfig": kubeconfig}})
    with open(os.path.join(directory, "nodename"), "w") as out:
        out.write("hot-path-node\n")
    return World("kubernetes", {"type": "whereabouts", "range": "10.62.0.0/16", "configuration_path": directory},
                 stop=server.stop)


def dhcp_world(work: str):
    """Our daemon and dnsmasq (cni_ipam_lab.dhcp), or None and why not."""
    from cni_ipam_lab.dhcp import Setups
    from cni_ipam_lab.namespaces import Lab, can_make_netns

    ok, why = can_make_netns()
    if not ok or not os.access("/usr/sbin/dnsmasq", os.X_OK):
        return None, why or "dnsmasq is not installed"
    lab = Lab("hotpath")
    setups = Setups(lab, os.path.join(work, "dhcp"))
    os.makedirs(setups.workdir, exist_ok=True)
    net, daemon = setups.make()

    def stop():
        setups.close()
        lab.close()
    return World("dhcp", {"type": "dhcp", "daemonSocketPath": daemon.socket_path},
                 lambda cid: Lab.path(net.veth_pod(cid[-10:])), stop), ""


# --- one call -------------------------------------------------------------------------------------

def request(world: World, command: str, cid: str, netns: str, socket: str, prev=None) -> tuple:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": netns, "CNI_IFNAME": "net1", "CNI_PATH": "/nonexistent", "CNI_ARGS": POD_ARGS + cid,
           "CNI_IPAM_AGENT_SOCKET": socket}
    conf = {"cniVersion": "1.0.0", "name": f"hot-path-{world.name}", "type": "bridge", "ipam": world.ipam}
    if prev is not None:
        conf["prevResult"] = prev
    return env, json.dumps(conf).encode()


class Call:
    __slots__ = ("wall_ns", "cpu_ns", "ok", "stdout", "stderr")

    def __init__(self, wall_ns, cpu_ns, ok, stdout, stderr) -> None:
        self.wall_ns, self.cpu_ns, self.ok, self.stdout, self.stderr = wall_ns, cpu_ns, ok, stdout, stderr


def run(argv: list, env: dict, stdin: bytes, stderr_filter=None) -> Call:
    wall, cpu, code, out, err, _ = spawn_timed(argv, env, stdin)
    err = err.decode(errors="replace")
    rest = "\n".join(line for line in err.splitlines() if not (stderr_filter and stderr_filter(line)))
    return Call(wall, cpu, code == 0 and not rest.strip(), out.decode(errors="replace"), err)


# --- -X importtime and strace ---------------------------------------------------------------------

def importtime(stderr: str) -> list:
    """``(module, self µs)`` from ``-X importtime`` lines, in import order."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            head, _, name = line.rpartition("|")
            name = name.strip()
            self_us = head.split(":", 1)[1].split("|")[0].strip()
            if name and name != "imported package":
                rows.append((name, int(self_us)))
    return rows


def strace_counts(path: str) -> dict:
    """Calls per syscall from an ``strace -c`` summary."""
    counts = {}
    with open(path) as summary:
        for line in summary:
            fields = line.split()
            if len(fields) >= 5 and fields[-1].isidentifier() and fields[3].isdigit():
                counts[fields[-1]] = int(fields[3])
    return counts


# --- a world's run --------------------------------------------------------------------------------

def run_world(world: World, launcher: str, python: str, baseline: set, n: int, socket: str = "",
              agent=None) -> tuple:
    """Rows per command and the failures: N timed calls each, then importtime and strace calls."""
    problems = []
    timed = {c: [] for c in COMMANDS}
    agent_cpu = {c: 0.0 for c in COMMANDS}
    importtimes = {c: [] for c in COMMANDS}
    straces = {c: {} for c in COMMANDS}
    trace_file = os.path.join(tempfile.gettempdir(), f"hot-path-strace-{uuid.uuid4().hex[:8]}")
    # Phases of attachments: N timed, then IMPORTTIME_RUNS under -X importtime, then 1 under strace.
    phases = [("timed", n, [launcher], None),
              ("importtime", IMPORTTIME_RUNS, [python, "-X", "importtime", "-IS", launcher],
               lambda line: line.startswith("import time:")),
              ("strace", 1 if shutil.which("strace") else 0,
               ["/usr/bin/strace", "-f", "-c", "-o", trace_file, launcher], None)]
    for phase, count, argv, stderr_filter in phases:
        attachments = [f"hp-{world.name[:4]}-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        netns = {cid: world.new_netns(cid) for cid in attachments}
        results = {}
        for command in COMMANDS:
            before = process_cpu_s(agent.pid) if agent is not None else 0.0
            for cid in attachments:
                prev = results.get(cid) if command == "CHECK" else None
                env, stdin = request(world, command, cid, netns[cid], socket, prev)
                call = run(argv, env, stdin, stderr_filter)
                if not call.ok:
                    problems.append(f"{world.name} {command} {cid} ({phase}): {call.stdout[:300]!r} "
                                    f"{call.stderr[-600:]!r}")
                    continue
                if command == "ADD":
                    results[cid] = json.loads(call.stdout)
                if phase == "timed":
                    timed[command].append(call)
                elif phase == "importtime":
                    importtimes[command].append([(m, us) for m, us in importtime(call.stderr) if m not in baseline])
                else:
                    straces[command] = strace_counts(trace_file)
            if phase == "timed" and agent is not None:
                agent_cpu[command] = process_cpu_s(agent.pid) - before
    if os.path.exists(trace_file):
        os.unlink(trace_file)
    rows = []
    for command in COMMANDS:
        calls = timed[command]
        loads = importtimes[command]
        modules = loads[0] if loads else []
        least = {}
        for load in loads:
            for module, us in load:
                least[module] = min(us, least.get(module, us))
        import_ms = sum(least.values()) / 1000
        counts = straces[command]
        agent_ms = agent_cpu[command] * 1000 / len(calls) if calls and agent is not None else 0.0
        rows.append({
            "store": world.name, "via": "agent" if agent is not None else "plugin", "command": command,
            "ok": len(calls),
            "wall_p50_ms": percentile([c.wall_ns / 1e6 for c in calls], 0.5),
            "cpu_p50_ms": percentile([c.cpu_ns / 1e6 for c in calls], 0.5) + agent_ms,
            "agent_cpu_ms": agent_ms,
            "off_cpu_p50_ms": percentile([(c.wall_ns - c.cpu_ns) / 1e6 for c in calls], 0.5),
            "import_ms": import_ms,
            "ours_modules": sum(1 for m, _ in modules if m.split(".")[0] == "cni_ipam"),
            "stdlib_modules": sum(1 for m, _ in modules if m.split(".")[0] != "cni_ipam"),
            "modules": [m for m, _ in modules],
            "fsyncs": counts.get("fsync", 0) + counts.get("fdatasync", 0),
            "connects": counts.get("connect", 0),
            "sends": counts.get("sendto", 0) + counts.get("sendmsg", 0),
        })
    return rows, problems


def floor(python: str, n: int) -> dict:
    """The bare interpreter: ``-IS -c pass``, wall and CPU p50, and the modules it loads at start-up."""
    calls = [run([python, "-IS", "-c", "pass"], {}, b"") for _ in range(n)]
    started = run([python, "-X", "importtime", "-IS", "-c", "pass"], {}, b"", lambda line: True)
    return {"wall_p50_ms": percentile([c.wall_ns / 1e6 for c in calls], 0.5),
            "cpu_p50_ms": percentile([c.cpu_ns / 1e6 for c in calls], 0.5),
            "baseline": {m for m, _ in importtime(started.stderr)}}


def print_table(rows: list, bare: dict) -> None:
    print(f"bare interpreter (-IS -c pass): wall p50 {bare['wall_p50_ms']:.2f} ms, CPU p50 {bare['cpu_p50_ms']:.2f} ms")
    print(f"{'store':11} {'via':6} {'cmd':5} {'ok':>4} {'wall p50':>8} {'CPU p50':>8} {'after start':>11} "
          f"{'imports':>8} {'ours':>6} {'off-CPU':>8} {'mods ours+std':>13} {'fsyncs':>6} {'connects':>8} "
          f"{'sends':>5}")
    for r in rows:
        after = r["cpu_p50_ms"] - bare["cpu_p50_ms"]
        print(f"{r['store']:11} {r['via']:6} {r['command']:5} {r['ok']:>4} {r['wall_p50_ms']:>8.2f} "
              f"{r['cpu_p50_ms']:>8.2f} {after:>11.2f} {r['import_ms']:>8.2f} {after - r['import_ms']:>6.2f} "
              f"{r['off_cpu_p50_ms']:>8.2f} {r['ours_modules']:>6}+{r['stdlib_modules']:<6} {r['fsyncs']:>6} "
              f"{r['connects']:>8} {r['sends']:>5}")
    print("(ms; successful calls only; via agent: CPU is the launcher's plus the agent's, importtime and strace the "
          "launcher's)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=30, help="timed calls per command and store (default 30)")
    parser.add_argument("--stores", default="sqlite,etcd,kubernetes,dhcp", help="which worlds (default all four)")
    parser.add_argument("--no-agent", action="store_true", help="skip the runs through the node agent")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--without-code-bundle", action="store_true",
                        help="delete the code bundle install wrote (cni_ipam.code_bundle): our modules import from "
                             "their .pyc files, as before it (the next install writes it again)")
    args = parser.parse_args(argv)
    stores = args.stores.split(",")

    work = tempfile.mkdtemp(prefix="bench-hot-path-")
    bin_dir = os.path.join(work, "bin")
    install(bin_dir, names=["whereabouts", "dhcp"])
    bundle = code_bundle.bundle_path(os.path.join(package_parent(), "cni_ipam"))
    if args.without_code_bundle:
        os.unlink(bundle)
    with open(os.path.join(bin_dir, "whereabouts")) as launcher:
        python = launcher.readline()[2:].split()[0]
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f}; {args.count} calls per command; {python}; "
          f"code bundle {'deleted' if args.without_code_bundle else bundle}")
    bare = floor(python, args.count)
    rows, problems, cluster, worlds, skipped = [], [], None, [], []
    try:
        if "sqlite" in stores:
            worlds.append(sqlite_world(work))
        if "etcd" in stores or "kubernetes" in stores:
            from cni_ipam_lab.etcd_cluster import EtcdCluster, free_base_port

            cluster = EtcdCluster(os.path.join(work, "etcd"), base_port=free_base_port(28790), token="hot-path")
            cluster.start()
            if "etcd" in stores:
                worlds.append(etcd_world(cluster))
            if "kubernetes" in stores:
                worlds.append(kubernetes_world(cluster, work))
        if "dhcp" in stores:
            world, why = dhcp_world(work)
            if world is None:
                skipped.append(f"dhcp: {why}")
            else:
                worlds.append(world)
        for world in worlds:
            launcher = os.path.join(bin_dir, "dhcp" if world.name == "dhcp" else "whereabouts")
            run_world(world, launcher, python, bare["baseline"], 2)  # warm-up: page cache, .pyc, the store created
            got, failed = run_world(world, launcher, python, bare["baseline"], args.count)
            rows += got
            problems += failed
            if args.no_agent or world.name == "dhcp":
                continue
            socket = os.path.join(work, f"agent-{world.name}.sock")
            agent = start_agent(socket)
            try:
                run_world(world, launcher, python, bare["baseline"], 2, socket)
                got, failed = run_world(world, launcher, python, bare["baseline"], args.count, socket, agent)
                rows += got
                problems += failed
            finally:
                stop_agent(agent)
    finally:
        for world in worlds:
            world.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print_table(rows, bare)
    for name in skipped:
        print(f"skipped {name}")
    print("durability:")
    for world in worlds:
        print(f"  {world.name}: {DURABILITY[world.name]}")
    print("modules per command, plugin alone (ours, then the standard library's, beyond the interpreter's start-up):")
    for r in rows:
        if r["via"] == "plugin":
            ours = [m for m in r["modules"] if m.split(".")[0] == "cni_ipam"]
            print(f"  {r['store']} {r['command']}: {' '.join(m[9:] for m in ours)} | "
                  f"{' '.join(m for m in r['modules'] if m not in ours)}")
    print(load_line(load_before))
    load_after = os.getloadavg()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "floor": {k: v for k, v in bare.items() if k != "baseline"},
                       "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after}, out, indent=1)
    return fail_on(problems)


if __name__ == "__main__":
    sys.exit(main())
