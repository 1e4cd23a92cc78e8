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
import subprocess
import tempfile

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
