"""The reconciler as a process: the daemon on a fast clock, and the Kubernetes source over HTTP.

``cni-ipam reconciler --tick 0.5`` makes a cron minute last half a second,
so a ``* * * * *`` schedule runs twice in about a second and a rewritten
schedule file shows within a few.  Only the order and content of the log
lines are asserted, never how long anything took.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from urllib.request import urlopen

from cni_ipam_lab.namespaces import cni_env, run_plugin

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "k8s")
PATIENCE = 120.0  # seconds to wait for a line before giving up (a failure, not a measurement)


def add(bin_dir, flat, pod, netns, ip="", namespace="apps") -> str:
    config = {"cniVersion": "1.0.0", "name": "net-d", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": "192.0.2.0/24", "configuration_path": flat}}
    args = f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}" + (f";IP={ip}/24" if ip else "")
    env = cni_env("ADD", f"cid-{pod}", netns, "net1", args, bin_dir, extra={"NODENAME": "node-a"})
    call = run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)
    assert call.ok, call
    return call.output["ips"][0]["address"].split("/")[0]


class Lines:
    """Reads a process's JSON lines in a thread; ``wait_for`` returns the next line matching a test."""

    def __init__(self, process) -> None:
        self.process = process
        self.queue = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.queue.put(json.loads(line))
        self.queue.put(None)

    def wait_for(self, test):
        while True:
            try:
                line = self.queue.get(timeout=PATIENCE)
            except queue.Empty:
                raise AssertionError(f"no such line within {PATIENCE}s; seen: {self.seen[-10:]}") from None
            if line is None:
                raise AssertionError(f"the process ended; stderr: {self.process.stderr.read()}; seen: {self.seen}")
            self.seen.append(line)
            if test(line):
                return line


def swap(directory, value: str, generation: int) -> None:
    """Update a ConfigMap volume as the kubelet does: new payload dir, ``..data`` renamed over."""
    payload = os.path.join(directory, f"..2026_11_27_09_00_0{generation}.1")
    os.makedirs(payload)
    with open(os.path.join(payload, "config"), "w") as handle:
        handle.write(value)
    os.symlink(os.path.basename(payload), os.path.join(directory, "..data_tmp"))
    os.rename(os.path.join(directory, "..data_tmp"), os.path.join(directory, "..data"))
    if not os.path.islink(os.path.join(directory, "config")):
        os.symlink("..data/config", os.path.join(directory, "config"))


def metric(port: int, name: str) -> float:
    body = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in {body}")


def test_daemon_runs_each_tick_and_takes_a_rewritten_schedule_without_restart(bin_dir, tmp_path):
    flat = str(tmp_path / "whereabouts.conf")
    with open(flat, "w") as handle:
        json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "store" / "wb.db")}, handle)
    netns = tmp_path / "netns"
    netns.mkdir()
    leaked = add(bin_dir, flat, "leaked", str(netns / "gone"))  # its namespace never existed here: a leak
    (netns / "alive").write_text("")  # a plain file standing in for a live pod's namespace
    add(bin_dir, flat, "alive", str(netns / "alive"))
    schedule_dir = tmp_path / "cron-schedule"
    schedule_dir.mkdir()
    swap(str(schedule_dir), "* * * * *", 1)
    argv = [sys.executable, "-m", "cni_ipam.cli", "reconciler", "--config", flat, "--schedule-file",
            str(schedule_dir / "config"), "--tick", "0.5", "--poll", "5", "--grace", "0", "--source", "netns",
            "--node", "node-a", "--metrics-port", "0", "--metrics-address", "127.0.0.1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(process)
        port = lines.wait_for(lambda r: r["event"] == "metrics")["port"]
        first = lines.wait_for(lambda r: r["event"] == "run-end")
        lines.wait_for(lambda r: r["event"] == "next-run")
        second = lines.wait_for(lambda r: r["event"] == "run-end")
        lines.wait_for(lambda r: r["event"] == "next-run")  # logged after the run's metrics are recorded
        assert (first["ok"], first["freed"], second["ok"], second["freed"]) == (True, 1, True, 0)
        freed = [r for r in lines.seen if r["event"] == "freed"]
        assert [(r["address"], r["pod"]) for r in freed] == [(leaked, "apps/leaked")]
        plans = [r["at"] for r in lines.seen if r["event"] == "next-run"]
        assert len(plans) >= 2 and plans[1] > plans[0] and all(p.endswith(":00Z") for p in plans)
        assert metric(port, 'cni_ipam_reconciler_runs_total{outcome="success"}') >= 2
        assert metric(port, "cni_ipam_reconciler_freed_addresses_total") == 1
        assert metric(port, "cni_ipam_reconciler_last_success_timestamp_seconds") > 0
        pool = 'network_name="",pool="/192.0.2.0/24"'
        assert metric(port, f"cni_ipam_reconciler_pool_size{{{pool}}}") == 254
        assert metric(port, f"cni_ipam_reconciler_pool_held{{{pool}}}") == 1  # the leaked one is gone
        assert metric(port, f"cni_ipam_reconciler_pool_free{{{pool}}}") == 253

        swap(str(schedule_dir), "*/5 * * * *", 2)  # the ConfigMap changes while the daemon runs
        changed = lines.wait_for(lambda r: r["event"] == "schedule-changed")
        assert (changed["previous"], changed["expression"]) == ("* * * * *", "*/5 * * * *")
        plan = lines.wait_for(lambda r: r["event"] == "next-run")
        assert plan["why"] == "schedule changed" and int(plan["at"][14:16]) % 5 == 0
        lines.wait_for(lambda r: r["event"] == "run-end")
        after = lines.wait_for(lambda r: r["event"] == "next-run")
        assert (after["why"], int(after["at"][14:16]) % 5, after["expression"]) == ("after run", 0, "*/5 * * * *")

        swap(str(schedule_dir), "0 */5 * * * *", 3)  # six fields: refused, the running schedule stays
        refused = lines.wait_for(lambda r: r["event"] == "schedule-refused")
        assert refused["in_force"] == "*/5 * * * *" and "has 6 fields" in refused["msg"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=PATIENCE)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0
    assert lines.wait_for(lambda r: r["event"] == "stopped")["runs"] >= 3  # SIGTERM: a clean stop


def fakeapi():
    spec = importlib.util.spec_from_file_location("k8s_fakeapi", os.path.join(FIXTURES, "fakeapi.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reconcile_once_with_the_kubernetes_source(bin_dir, tmp_path):
    api = fakeapi().FakeAPI().start()
    try:
        kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
        flat = str(tmp_path / "whereabouts.conf")
        with open(flat, "w") as handle:
            json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "store" / "wb.db")}, handle)
        pods = {"web-0": "192.0.2.10", "web-1": "192.0.2.11", "db-0": "192.0.2.13", "job-x": "192.0.2.14",
                "legacy-0": "192.0.2.15", "plain-0": "192.0.2.16", "gone-0": "192.0.2.18"}
        for pod, ip in pods.items():
            assert add(bin_dir, flat, pod, "/run/netns/x", ip, "default" if pod == "plain-0" else "apps") == ip
        argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--once", "--config", flat, "--source",
                "kubernetes", "--kubeconfig", kubeconfig, "--grace", "0"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        freed = {r["pod"]: (r["address"], r["code"]) for r in lines if r["event"] == "freed"}
        assert freed == {"apps/web-1": ("192.0.2.11", "pod-lacks-address"),
                         "apps/db-0": ("192.0.2.13", "pod-taint-deleted"),
                         "apps/job-x": ("192.0.2.14", "pod-finished"),
                         "apps/gone-0": ("192.0.2.18", "pod-gone")}
        end = [r for r in lines if r["event"] == "run-end"][0]
        assert end["kept"] == {"pod-has-address": 2, "unknown": 1}
        # one paged LIST, then a fresh GET of each pod before freeing its address
        gets = sorted(r for r in api.requests if "/namespaces/" in r)
        assert gets == ["/api/v1/namespaces/apps/pods/db-0", "/api/v1/namespaces/apps/pods/gone-0",
                        "/api/v1/namespaces/apps/pods/job-x", "/api/v1/namespaces/apps/pods/web-1"]
        assert [r.split("?")[0] for r in api.requests if "/namespaces/" not in r] == ["/api/v1/pods"] * 2
    finally:
        api.stop()


def test_kubernetes_unreachable_frees_nothing_and_fails_the_run(bin_dir, tmp_path):
    api = fakeapi().FakeAPI().start()
    try:
        kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
        api.fail_lists = 100
        flat = str(tmp_path / "whereabouts.conf")
        with open(flat, "w") as handle:
            json.dump({"datastore": "sqlite", "sqlite_path": str(tmp_path / "store" / "wb.db")}, handle)
        add(bin_dir, flat, "gone-0", "/run/netns/x")
        argv = [sys.executable, "-m", "cni_ipam.cli", "reconcile", "--config", flat, "--source", "kubernetes",
                "--kubeconfig", kubeconfig, "--grace", "0"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert [r["event"] for r in lines] == ["run-start", "run-error", "run-end"]
        assert "etcdserver: request timed out" in lines[1]["msg"]
    finally:
        api.stop()
