"""What the code bundle saves a whereabouts call: CPU with it and without it, interleaved call by call.

Two copies of the package are installed as ``cni-ipam install`` does
(``.pyc`` files and the code bundle, cni_ipam.code_bundle); the bundle of
the second is deleted, so its launcher imports from the ``.pyc`` files.
Then N ADDs alternate between the two launchers (each on a store of its
own), then N DELs.  Per command it prints the CPU p50 of each (the child's
own rusage), minus the bare interpreter's (``-IS -c pass``, measured
between the pairs), and the p50 of the paired differences.  Alternating
call by call keeps a busy machine's drift out of the difference, which
separate ``hot_path.py`` runs cannot (their bare interpreter's CPU moves by
1-2 ms from run to run on a shared VM).

    .venv/bin/python bench/code_bundle_ab.py [-n 150] [--store sqlite|etcd]
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

from _measure import cni_env, fail_on, percentile, spawn_timed  # noqa: E402
from cni_ipam import code_bundle  # noqa: E402
from cni_ipam.install import compile_package, package_parent, write_launchers  # noqa: E402

MODES = ("with", "without")


def install_copy(work: str, mode: str) -> str:
    """A compiled copy of the package and a whereabouts launcher over it; the launcher's path."""
    parent = os.path.join(work, mode, "lib")
    shutil.copytree(os.path.join(package_parent(), "cni_ipam"), os.path.join(parent, "cni_ipam"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    compile_package(parent)
    if mode == "without":
        os.unlink(code_bundle.bundle_path(os.path.join(parent, "cni_ipam")))
    bin_dir = os.path.join(work, mode, "bin")
    write_launchers(bin_dir, sys.executable, parent, ["whereabouts"])
    return os.path.join(bin_dir, "whereabouts")


def ipam(work: str, mode: str, store: str, cluster) -> dict:
    """The ``ipam`` config of ``mode``'s calls: its own flat file and store."""
    directory = os.path.join(work, mode, "store")
    os.makedirs(directory, mode=0o700)  # the plugin refuses a store other users could read
    flat = os.path.join(directory, "whereabouts.conf")
    with open(flat, "w") as out:
        if store == "sqlite":
            json.dump({"datastore": "sqlite", "sqlite_path": os.path.join(directory, "db", "whereabouts.db")}, out)
            return {"type": "whereabouts", "range": "10.60.0.0/16", "configuration_path": flat}
        json.dump({"datastore": "etcd"}, out)
    return {"type": "whereabouts", "range": "10.60.0.0/16", "configuration_path": flat, "datastore": "etcd",
            "etcd_endpoints": cluster.endpoints, "etcd_prefix": f"/bundle-ab-{mode}"}


def call(launcher: str, conf: dict, command: str, cid: str, problems: list) -> float:
    """One call's CPU in ms; a failure is noted in ``problems``."""
    env = cni_env(command, cid, "/nonexistent", CNI_IPAM_AGENT_SOCKET="",
                  CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}")
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "bundle-ab", "type": "bridge", "ipam": conf}).encode()
    _, cpu_ns, code, out, err, _ = spawn_timed([launcher], env, stdin)
    if code != 0 or err:
        problems.append(f"{launcher} {command}: exit {code}: {out!r} {err!r}")
    return cpu_ns / 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=150, help="calls per command and mode (default 150)")
    parser.add_argument("--store", choices=("sqlite", "etcd"), default="sqlite")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-code-bundle-")
    cluster, problems = None, []
    try:
        if args.store == "etcd":
            from cni_ipam_lab.etcd_cluster import EtcdCluster, free_base_port

            cluster = EtcdCluster(os.path.join(work, "etcd"), base_port=free_base_port(28890), token="bundle-ab")
            cluster.start()
        launchers = {mode: install_copy(work, mode) for mode in MODES}
        confs = {mode: ipam(work, mode, args.store, cluster) for mode in MODES}
        for mode in MODES:  # warm-up: page cache, the store made
            call(launchers[mode], confs[mode], "ADD", f"warm-{mode}", problems)
        cpu = {(mode, command): [] for mode in MODES for command in ("ADD", "DEL")}
        bare, cids = [], [uuid.uuid4().hex[:12] for _ in range(args.count)]
        for command in ("ADD", "DEL"):
            for i, cid in enumerate(cids):
                for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                    cpu[mode, command].append(call(launchers[mode], confs[mode], command, cid, problems))
                bare.append(spawn_timed([sys.executable, "-IS", "-c", "pass"], {}, b"")[1] / 1e6)
        floor = percentile(bare, 0.5)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; whereabouts on {args.store}, "
              f"{args.count} calls per command and mode; bare interpreter CPU p50 {floor:.2f} ms")
        for command in ("ADD", "DEL"):
            with_, without = (percentile(cpu[mode, command], 0.5) for mode in MODES)
            paired = percentile([a - b for a, b in zip(cpu["with", command], cpu["without", command])], 0.5)
            print(f"  {command}: CPU p50 with the bundle {with_:.2f} ms (after start {with_ - floor:.2f}), without "
                  f"{without:.2f} (after start {without - floor:.2f}); paired difference p50 {paired:+.2f} ms")
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return fail_on(problems)


if __name__ == "__main__":
    sys.exit(main())
