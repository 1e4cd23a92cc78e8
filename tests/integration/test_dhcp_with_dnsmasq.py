"""Our daemon and plugin against dnsmasq, without Go's main plugins (root: network namespaces).

Pods here are namespaces with a veth on the lab's bridge, left down and
unaddressed, as a main plugin leaves them when it calls IPAM; the plugin
executable is called directly, as a main plugin would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from cni_ipam_lab.dhcp import DaemonProcess, Setups, wait_until
from cni_ipam.dhcp.store import file_name
from cni_ipam_lab.namespaces import Lab, can_make_netns, cni_env, run_plugin

pytestmark = pytest.mark.root


@pytest.fixture
def lab():
    ok, why = can_make_netns()
    if not ok:
        pytest.skip(f"dhcp integration: {why}")
    if not os.access("/usr/sbin/dnsmasq", os.X_OK):
        pytest.skip("dhcp integration: dnsmasq is not installed (apt-get install dnsmasq-base)")
    the_lab = Lab("dhcpi")
    yield the_lab
    the_lab.close()


@pytest.fixture
def dhcp(lab, tmp_path):
    """``dhcp(...)``: see :meth:`cni_ipam_lab.dhcp.Setups.make`; all stopped at teardown."""
    setups = Setups(lab, str(tmp_path))
    yield setups.make
    setups.close()


def plugin(plugin_bin_dir, command, daemon, pod="", container_id="c1", version="1.0.0", args="",
           name="dhcpnet", **config):
    ipam = dict({"type": "dhcp", "daemonSocketPath": daemon.socket_path}, **config.pop("ipam", {}))
    env = cni_env(command, container_id, f"/run/netns/{pod}" if pod else "", "net1", args, plugin_bin_dir)
    stdin = dict({"cniVersion": version, "name": name, "type": "macvlan", "ipam": ipam}, **config)
    return run_plugin(os.path.join(plugin_bin_dir, "dhcp"), env, stdin)


def test_result_has_dns_domain_and_a_default_route_via_the_router(dhcp, plugin_bin_dir):
    net, daemon = dhcp()
    pod = net.veth_pod("pod")
    add = plugin(plugin_bin_dir, "ADD", daemon, pod)
    assert add.ok, add
    [ip] = add.output["ips"]
    assert ip["gateway"] == "192.0.2.1" and ip["address"].endswith("/24")
    assert add.output["routes"] == [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]
    assert add.output["dns"] == {"nameservers": ["192.0.2.53"], "domain": "dhcp.test"}


def test_classless_routes_replace_the_router_and_static_routes(dhcp, plugin_bin_dir):
    net, daemon = dhcp(options=("--dhcp-option=option:classless-static-route,10.9.0.0/16,192.0.2.254,"
                                "0.0.0.0/0,192.0.2.1", "--dhcp-option=option:static-route,10.20.0.0,192.0.2.9"))
    pod = net.veth_pod("pod")
    add = plugin(plugin_bin_dir, "ADD", daemon, pod, version="1.1.0")
    assert add.ok, add
    assert add.output["routes"] == [{"dst": "10.9.0.0/16", "gw": "192.0.2.254"}, {"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]
    # Without option 121 requested, option 33 and the router make the routes.
    other = net.veth_pod("other")
    add = plugin(plugin_bin_dir, "ADD", daemon, other, container_id="c2",
                 ipam={"request": [{"option": "subnet-mask", "skipDefault": True}, {"option": "routers"},
                                   {"option": "static-routes"}]})
    assert add.ok, add
    assert add.output["routes"] == [{"dst": "10.20.0.0/16", "gw": "192.0.2.9"}, {"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]
    assert "dns" not in add.output


def test_add_again_returns_the_same_lease_and_check_never_acquires(dhcp, plugin_bin_dir):
    net, daemon = dhcp()
    pod = net.veth_pod("pod")
    check = plugin(plugin_bin_dir, "CHECK", daemon, pod, prevResult={"cniVersion": "1.0.0"})
    assert check.output["code"] == 3 and "no DHCP lease is held for c1/dhcpnet/net1" in check.output["msg"]
    assert daemon.leases() == [] and "DHCPDISCOVER" not in net.dnsmasq.log()
    first = plugin(plugin_bin_dir, "ADD", daemon, pod)
    second = plugin(plugin_bin_dir, "ADD", daemon, pod)
    assert first.ok and second.output == first.output
    assert net.dnsmasq.log().count("DHCPDISCOVER") == 1
    assert plugin(plugin_bin_dir, "CHECK", daemon, pod, prevResult=first.output).ok
    wrong = dict(first.output, ips=[{"address": "192.0.2.254/24"}])
    assert plugin(plugin_bin_dir, "CHECK", daemon, pod, prevResult=wrong).output["code"] == 7


def test_status_gc_and_del_without_netns(dhcp, plugin_bin_dir):
    net, daemon = dhcp()
    assert plugin(plugin_bin_dir, "STATUS", daemon, version="1.1.0").ok
    pods = {cid: net.veth_pod(cid) for cid in ("keep", "drop", "gone")}
    for cid, pod in pods.items():
        assert plugin(plugin_bin_dir, "ADD", daemon, pod, container_id=cid).ok
    assert len(net.dnsmasq.leases()) == 3
    # DEL may come without CNI_NETNS: the daemon knows where the lease lives.
    assert plugin(plugin_bin_dir, "DEL", daemon, "", container_id="gone").ok
    gc = plugin(plugin_bin_dir, "GC", daemon, version="1.1.0",
                **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "net1"}]})
    assert gc.ok and "GC released the lease of drop/dhcpnet/net1" in gc.stderr
    assert [lease["containerID"] for lease in daemon.leases()] == ["keep"]
    # The pods' interfaces have no address (no main plugin here): the release
    # goes out as a frame to the server's MAC address, and dnsmasq takes it.
    wait_until(lambda: len(net.dnsmasq.leases()) == 1, 5, "released leases still in dnsmasq")
    daemon.stop()
    status = plugin(plugin_bin_dir, "STATUS", daemon, version="1.1.0")
    assert status.output["code"] == 50


def test_saved_lease_of_a_vanished_pod_is_dropped_at_start_and_bad_files_moved_aside(dhcp, plugin_bin_dir):
    net, daemon = dhcp()
    pods = [net.veth_pod(name) for name in ("stays", "goes")]
    for i, pod in enumerate(pods):
        assert plugin(plugin_bin_dir, "ADD", daemon, pod, container_id=f"c{i}").ok
    files = sorted(os.listdir(daemon.lease_dir))
    assert len(files) == 2
    record = json.loads(open(os.path.join(daemon.lease_dir, files[0])).read())
    assert {"spec", "lease", "mac", "netns_identity", "key", "version"} <= set(record)
    daemon.stop(signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", pods[1]], check=True)
    with open(os.path.join(daemon.lease_dir, "junk.json"), "w") as handle:
        handle.write("{")
    daemon.start()
    [dropped] = daemon.wait_for("lease.dropped")
    assert dropped["container_id"] == "c1" and "does not exist" in dropped["msg"]
    assert [e["container_id"] for e in daemon.wait_for("lease.resumed")] == ["c0"]
    assert daemon.wait_for("lease.unreadable")[0]["msg"].startswith("lease file")
    assert [lease["containerID"] for lease in daemon.leases()] == ["c0"]
    assert sorted(os.listdir(daemon.lease_dir)) == sorted(["junk.json.bad", file_name("c0/dhcpnet/net1")])


def test_dhcp_daemon_from_the_plugin_executable_with_pidfile_and_host_prefix(dhcp, plugin_bin_dir, tmp_path):
    """``dhcp daemon -hostprefix H -pidfile P``: socket and netns paths under H; PID file; both removed on SIGTERM."""
    net, _ = dhcp(with_daemon=False)
    short = tempfile.mkdtemp(prefix="hp", dir="/tmp")  # AF_UNIX paths are short, and the prefix doubles them
    host = os.path.join(short, "h")
    os.makedirs(os.path.join(host, "run"))
    os.symlink("/run/netns", os.path.join(host, "run", "netns"))  # the host's /run/netns, seen under the prefix
    pidfile = tmp_path / "dhcp.pid"
    daemon = DaemonProcess(net.node, short, name="hp",
                           command=[os.path.join(plugin_bin_dir, "dhcp"), "daemon", "-hostprefix", host,
                                    "-pidfile", str(pidfile)])
    daemon.socket_path = f"{host}{daemon.socket_path}"  # where -hostprefix puts it
    daemon.start()
    try:
        assert int(pidfile.read_text()) == daemon.process.pid
        add = plugin(plugin_bin_dir, "ADD", daemon, net.veth_pod("pod"))
        assert add.ok, f"{add}\n{daemon.log_text()}"
        # A second daemon on the same socket refuses to start.
        second = subprocess.run(daemon.argv, capture_output=True, text=True, timeout=20)
        assert second.returncode != 0 and "another daemon is listening" in second.stderr
    finally:
        code = daemon.stop()
        shutil.rmtree(short, ignore_errors=True)
    assert code == 0
    assert not pidfile.exists()


def test_the_daemon_answers_bad_requests_and_keeps_serving(dhcp):
    import socket

    _, daemon = dhcp()
    for payload, fragment in ((b"not json\n", "request is not JSON"), (b"[1]\n", "not a JSON object"),
                              (b'{"op": "fly"}\n', "unknown op 'fly'"),
                              (b'{"op": "add", "containerID": ""}\n', "'containerID' must be a non-empty string")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(daemon.socket_path)
            conn.sendall(payload)
            lines = conn.makefile().read().splitlines()
        answer = json.loads(lines[-1])
        assert answer["ok"] is False and fragment in answer["msg"], (payload, answer)
    assert daemon.call("status") == {"ok": True, "leases": 0}


def test_add_for_a_recreated_namespace_gets_a_fresh_lease(dhcp, plugin_bin_dir, lab):
    """Same container ID, network and ifname, but the netns path now names a new namespace."""
    net, daemon = dhcp()
    pod = net.veth_pod("pod")
    first = plugin(plugin_bin_dir, "ADD", daemon, pod)
    assert first.ok
    subprocess.run(["ip", "netns", "del", pod], check=True)
    lab.namespaces.remove(pod)
    # The kernel tears a namespace down in the background: wait for its veth to go.
    wait_until(lambda: lab.exec(net.node, "ip", "link", "show", "vpod").returncode != 0, 5, "old veth still there")
    again = net.veth_pod("pod")
    assert again == pod
    second = plugin(plugin_bin_dir, "ADD", daemon, pod)
    assert second.ok, second
    assert net.dnsmasq.log().count("DHCPDISCOVER") == 2
    [lease] = daemon.leases()
    assert lease["state"] == "bound" and f"{lease['address']}/24" == second.output["ips"][0]["address"]


def test_systemd_socket_activation(tmp_path):
    """LISTEN_FDS=1: the daemon serves the socket it was given and leaves its file to systemd."""
    import socket
    import sys

    path = str(tmp_path / "act.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def as_systemd_does():
        os.dup2(listener.fileno(), 3)
        os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))

    process = subprocess.Popen([sys.executable, "-m", "cni_ipam.dhcp.daemon", "--lease-dir", str(tmp_path / "l"),
                                "-socketpath", str(tmp_path / "unused.sock")], preexec_fn=as_systemd_does,
                               pass_fds=(3, listener.fileno()), stderr=subprocess.PIPE, text=True)
    listener.close()
    try:
        from cni_ipam.dhcp import rpc

        reply = wait_until(lambda: _status(rpc, path), 10, "the socket-activated daemon did not answer")
        assert reply == {"ok": True, "leases": 0}
    finally:
        process.terminate()
        assert process.wait(10) == 0, process.stderr.read()
    assert os.path.exists(path) and not os.path.exists(tmp_path / "unused.sock")


def _status(rpc, path):
    try:
        return rpc.call(path, {"op": "status"}, first_timeout=1)
    except (rpc.Unreachable, rpc.NoAnswer):
        return None


# -- What the daemon refuses (cni_ipam.dhcp.netns; docs/dhcp.md "What the daemon accepts") --

def _link_up(netns: str, ifname: str) -> bool:
    [link] = json.loads(Lab.ip(netns, "-j", "link", "show", "dev", ifname))
    return "UP" in link["flags"]


def _refused(add, daemon, netns: str, fragment: str) -> None:
    """Code 4 naming CNI_NETNS and its value, with the reason; the same refusal in the daemon's log."""
    assert add.output["code"] == 4, add
    assert add.output["msg"].startswith(f"dhcp: CNI_NETNS {netns!r}") and fragment in add.output["msg"], add
    assert any(e["msg"] == add.output["msg"] and e["code"] == 4 for e in daemon.wait_for("rpc.refused")), \
        daemon.log_text()


def test_the_daemon_never_enters_its_own_namespace(dhcp, plugin_bin_dir, lab):
    """/proc/self/ns/net (or any path to the daemon's namespace) would bring a host link up and DISCOVER from it."""
    net, daemon = dhcp()
    lab.ip(net.node, "link", "add", "bait", "type", "veth", "peer", "name", "baitport")
    lab.ip(net.node, "link", "set", "baitport", "master", "dhcpbr0", "up")
    assert not _link_up(net.node, "bait")
    for path in ("/proc/self/ns/net", f"/proc/{daemon.process.pid}/ns/net", Lab.path(net.node)):
        env = cni_env("ADD", "c1", path, "bait", "", plugin_bin_dir)
        add = run_plugin(os.path.join(plugin_bin_dir, "dhcp"), env,
                         {"cniVersion": "1.0.0", "name": "dhcpnet", "type": "macvlan",
                          "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket_path}})
        _refused(add, daemon, path, "own network namespace")
    assert not _link_up(net.node, "bait")
    assert "DHCPDISCOVER" not in net.dnsmasq.log() and daemon.leases() == []


def test_a_fifo_as_netns_is_answered_at_once_and_the_daemon_keeps_serving(dhcp, plugin_bin_dir, tmp_path):
    net, daemon = dhcp(timeout="2s")
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    env = cni_env("ADD", "c1", fifo, "net1", "", plugin_bin_dir)
    config = {"cniVersion": "1.0.0", "name": "dhcpnet", "type": "macvlan",
              "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket_path}}
    started = time.monotonic()
    add = run_plugin(os.path.join(plugin_bin_dir, "dhcp"), env, config)
    assert time.monotonic() - started < 3, add
    _refused(add, daemon, fifo, "is a FIFO, not a network namespace")
    assert plugin(plugin_bin_dir, "ADD", daemon, net.veth_pod("pod"), container_id="c2").ok


def test_dotdot_cannot_climb_out_of_the_host_prefix(dhcp, plugin_bin_dir):
    """-hostprefix H: CNI_NETNS /../../run/netns/pod would be the daemon's /run/netns/pod, outside H."""
    net, _ = dhcp(with_daemon=False)
    pod = net.veth_pod("pod")
    short = tempfile.mkdtemp(prefix="hp", dir="/tmp")
    host = os.path.join(short, "h")
    os.makedirs(host)
    climb = "/.." * host.count("/") + Lab.path(pod)
    assert os.path.exists(host + climb)
    daemon = DaemonProcess(net.node, short, name="hp", extra=("-hostprefix", host))
    daemon.socket_path = f"{host}{daemon.socket_path}"
    daemon.start()
    try:
        env = cni_env("ADD", "c1", climb, "net1", "", plugin_bin_dir)
        add = run_plugin(os.path.join(plugin_bin_dir, "dhcp"), env,
                         {"cniVersion": "1.0.0", "name": "dhcpnet", "type": "macvlan",
                          "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket_path}})
        _refused(add, daemon, climb, "has a '..' component: refused")
        assert "DHCPDISCOVER" not in net.dnsmasq.log()
    finally:
        daemon.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_an_unreadable_netns_gets_an_answer_and_a_log_line(dhcp, plugin_bin_dir, tmp_path):
    """A daemon without CAP_DAC_OVERRIDE meets a namespace it may not open: code 4, not silence."""
    net, _ = dhcp(with_daemon=False)
    pod = net.veth_pod("pod")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    os.chown(locked, 65534, 65534)
    (locked / "ns").touch()
    subprocess.run(["mount", "--bind", Lab.path(pod), str(locked / "ns")], check=True)
    daemon = DaemonProcess(net.node, str(tmp_path), name="nodac", command=[
        "setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "cni_ipam.dhcp.daemon"])
    try:
        daemon.start()
        path = str(locked / "ns")
        env = cni_env("ADD", "c1", path, "net1", "", plugin_bin_dir)
        add = run_plugin(os.path.join(plugin_bin_dir, "dhcp"), env,
                         {"cniVersion": "1.0.0", "name": "dhcpnet", "type": "macvlan",
                          "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket_path}})
        _refused(add, daemon, path, f"network namespace {path} cannot be opened: Permission denied")
    finally:
        daemon.stop()
        subprocess.run(["umount", str(locked / "ns")], check=True)


_PROBER = """
import json, os, socket, stat, sys
path, stop = sys.argv[1:]
connected = seen_open = tries = 0
while not os.path.exists(stop):
    tries += 1
    try:
        if os.stat(path).st_mode & 0o007:
            seen_open += 1
    except OSError:
        pass
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        connected += 1
    except OSError:
        pass
    finally:
        probe.close()
print(json.dumps({"connected": connected, "seen_open": seen_open, "tries": tries}))
"""


def test_no_other_user_can_reach_the_socket_at_any_moment():
    """Under umask 0 a bound socket file is mode 0777 until chmod: nobody (uid 65534) races many restarts."""
    workdir = tempfile.mkdtemp(prefix="sockrace", dir="/tmp")
    os.chmod(workdir, 0o755)  # nobody may look inside; only the socket's own mode keeps it out
    daemon = DaemonProcess(None, workdir, command=["sh", "-c", 'umask 0 && exec "$@"', "sh", sys.executable, "-m",
                                                   "cni_ipam.dhcp.daemon"])
    stop = os.path.join(workdir, "stop")
    prober = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                               _PROBER, daemon.socket_path, stop], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(30):
            daemon.start()
            assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o660
            daemon.stop()
    finally:
        daemon.stop()
        open(stop, "w").close()
        seen = json.loads(prober.communicate(timeout=10)[0])
        shutil.rmtree(workdir, ignore_errors=True)
    assert seen["tries"] > 100 and seen["connected"] == 0 and seen["seen_open"] == 0, seen


def test_variables_that_are_not_utf8(dhcp, plugin_bin_dir):
    """Bytes b"\\xff" in CNI_IFNAME, CNI_NETNS or CNI_ARGS: ADD code 4, DEL succeeds, the daemon never fails."""
    net, daemon = dhcp()
    pod = net.veth_pod("pod")
    bad = {"CNI_IFNAME": "net1\udcff", "CNI_NETNS": f"{Lab.path(pod)}\udcff", "CNI_ARGS": "K8S_POD_NAME=\udcff"}
    config = {"cniVersion": "1.0.0", "name": "dhcpnet", "type": "macvlan",
              "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket_path}}
    for variable, value in bad.items():
        for command in ("ADD", "DEL"):
            env = dict(cni_env(command, "c1", Lab.path(pod), "net1", "", plugin_bin_dir), **{variable: value})
            done = run_plugin(os.path.join(plugin_bin_dir, "dhcp"), env, config)  # subprocess encodes \udcff as \xff
            if command == "ADD":
                assert done.output["code"] == 4 and done.output["msg"].startswith(f"{variable}: b'"), done
                assert done.output["msg"].endswith("is not valid UTF-8"), done
            else:
                assert done.ok and done.stdout == "", done
    assert "DHCPDISCOVER" not in net.dnsmasq.log()
    assert daemon.events("rpc.crashed") == [] and daemon.leases() == []
