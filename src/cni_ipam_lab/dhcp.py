"""A DHCP lab for tests, the benchmark and demos: dnsmasq and a daemon in throw-away namespaces.

Topology (all inside namespaces made by a :class:`cni_ipam_lab.namespaces.Lab`)::

    server ns: srv0 192.0.2.1/24, dnsmasq          node ns: bridge dhcpbr0
                   |  veth                              |-- srvport (the server's veth)
                   +------------------------------------+-- mvport <-> mvparent (a macvlan parent)
                                                        +-- pods' veths (Debian's bridge plugin)

Pods on Debian's ``bridge`` (bridge ``dhcpbr0``) or ``macvlan`` (master
``mvparent``) reach dnsmasq; nothing touches the machine's own network.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from cni_ipam import linejson
from cni_ipam.dhcp import rpc
from cni_ipam.install import package_parent

DNSMASQ = "/usr/sbin/dnsmasq"
GO_DHCP = "/usr/lib/cni/dhcp"
BRIDGE = "dhcpbr0"
MACVLAN_PARENT = "mvparent"
SERVER_IP = "192.0.2.1"
PREFIX = "192.0.2"


class Dnsmasq:
    """dnsmasq as a DHCP server only (``--port=0``) on ``interface`` in ``netns``."""

    def __init__(self, netns: str, interface: str, workdir: str, first: str = f"{PREFIX}.100",
                 last: str = f"{PREFIX}.199", lease_time: str = "2m", t1: int | None = None,
                 t2: int | None = None, options=()):
        self.netns = netns
        self.interface = interface
        self.lease_file = os.path.join(workdir, "dnsmasq.leases")
        self.log_file = os.path.join(workdir, "dnsmasq.log")
        self.pid_file = os.path.join(workdir, "dnsmasq.pid")
        self.argv = ["ip", "netns", "exec", netns, DNSMASQ, "--conf-file=/dev/null", "--port=0",
                     "--bind-interfaces", f"--interface={interface}", f"--dhcp-range={first},{last},{lease_time}",
                     "--no-ping", f"--dhcp-leasefile={self.lease_file}", "--keep-in-foreground", "--user=root",
                     f"--pid-file={self.pid_file}", "--log-dhcp", f"--log-facility={self.log_file}",
                     "--dhcp-option=option:dns-server,192.0.2.53", "--dhcp-option=option:domain-name,dhcp.test"]
        if t1 is not None:
            self.argv.append(f"--dhcp-option=option:T1,{t1}")
        if t2 is not None:
            self.argv.append(f"--dhcp-option=option:T2,{t2}")
        self.argv += list(options)
        self.process = None
        open(self.lease_file, "a").close()

    def start(self) -> "Dnsmasq":
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # listening once the DHCP socket is bound
            if self.process.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.process.stderr.read().decode(errors='replace')}")
            done = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Hlun", "sport", "=", ":67"],
                                  capture_output=True, text=True)
            if done.stdout.strip():
                return self
            time.sleep(0.02)
        raise RuntimeError("dnsmasq did not bind port 67 within 5 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def leases(self) -> list:
        """``[{"expiry", "mac", "ip", "hostname", "client_id"}]`` from dnsmasq's lease file."""
        found = []
        with open(self.lease_file) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 5 and not line.startswith("duid"):
                    found.append({"expiry": int(parts[0]), "mac": parts[1], "ip": parts[2], "hostname": parts[3],
                                  "client_id": parts[4]})
        return found

    def log(self) -> str:
        try:
            with open(self.log_file, errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""


def client_id_text(container_id: str, network: str, ifname: str) -> str:
    """Option 61 as dnsmasq writes it in its lease file: ``00:63:31:...``."""
    return ":".join(f"{b:02x}" for b in b"\x00" + f"{container_id}/{network}/{ifname}".encode()[:254])


class Network:
    """The server and node namespaces of the picture above, and dnsmasq."""

    def __init__(self, lab, workdir: str, **dnsmasq_options):
        self.lab = lab
        self.workdir = workdir
        self.node = lab.netns("node")
        self.server = lab.netns("srv")
        lab.ip(self.node, "link", "add", BRIDGE, "type", "bridge")
        # A fixed MAC: else Linux gives the bridge the lowest MAC of its ports,
        # which changes as pods come and go (and Go bridge's CHECK then fails).
        lab.ip(self.node, "link", "set", BRIDGE, "address", "02:00:00:d4:c9:01")
        lab.ip(self.node, "link", "set", BRIDGE, "up")
        lab.ip(self.node, "link", "add", "srvport", "type", "veth", "peer", "name", "srv0", "netns", self.server)
        lab.ip(self.node, "link", "set", "srvport", "master", BRIDGE, "up")
        lab.ip(self.server, "addr", "add", f"{SERVER_IP}/24", "dev", "srv0")
        lab.ip(self.server, "link", "set", "srv0", "up")
        lab.ip(self.node, "link", "add", "mvport", "type", "veth", "peer", "name", MACVLAN_PARENT)
        lab.ip(self.node, "link", "set", "mvport", "master", BRIDGE, "up")
        lab.ip(self.node, "link", "set", MACVLAN_PARENT, "up")
        self.dnsmasq = Dnsmasq(self.server, "srv0", workdir, **dnsmasq_options)

    def veth_pod(self, name: str, ifname: str = "net1") -> str:
        """A pod namespace whose ``ifname`` (left down, no address) is a veth on the bridge."""
        pod = self.lab.netns(name)
        host = f"v{name}"[:15]
        self.lab.ip(self.node, "link", "add", host, "type", "veth", "peer", "name", ifname, "netns", pod)
        self.lab.ip(self.node, "link", "set", host, "master", BRIDGE, "up")
        return pod

    def start(self) -> "Network":
        self.dnsmasq.start()
        return self

    def close(self) -> None:
        self.dnsmasq.stop()


class DaemonProcess:
    """A DHCP daemon process (ours by default, or Go's with ``go=True``) run inside ``netns``."""

    def __init__(self, netns: str | None, workdir: str, timeout: str = "10s", extra=(), go: bool = False,
                 name: str = "daemon", command=None):
        self.netns = netns
        self.socket_path = os.path.join(workdir, f"{name}.sock")
        if len(self.socket_path) > 90:  # AF_UNIX paths end at 108 bytes (and -hostprefix adds more)
            self.socket_path = f"/tmp/cnidhcp-{os.urandom(4).hex()}-{name}.sock"
        self.lease_dir = os.path.join(workdir, f"{name}-leases")
        self.log_path = os.path.join(workdir, f"{name}.log")
        if command is not None:  # e.g. [launcher, "daemon"]: the flags below are added
            command = [*command, "-socketpath", self.socket_path, "-timeout", timeout, "--lease-dir", self.lease_dir]
        elif go:
            command = [GO_DHCP, "daemon", "-socketpath", self.socket_path, "-timeout", timeout]
        else:
            command = [sys.executable, "-m", "cni_ipam.dhcp.daemon", "-socketpath", self.socket_path,
                       "-timeout", timeout, "--lease-dir", self.lease_dir]
        wrap = ["ip", "netns", "exec", netns] if netns else []  # None: the namespace we are in
        self.argv = [*wrap, *command, *extra]
        self.process = None
        self.go = go

    def start(self, wait: float = 10.0) -> "DaemonProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = package_parent() + os.pathsep + env.get("PYTHONPATH", "")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the DHCP daemon exited with {self.process.returncode}: {self.log_text()}")
            if self._connectable():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"the DHCP daemon did not listen on {self.socket_path} within {wait:g}s")

    def _connectable(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self, sig=signal.SIGTERM) -> int | None:
        """Stop the process with ``sig``; the exit code (None if it was not running)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def call(self, op: str, **fields) -> dict:
        return rpc.call(self.socket_path, dict(fields, op=op))

    def leases(self) -> list:
        return self.call("list")["leases"]

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def events(self, kind: str | None = None) -> list:
        """The daemon's JSON log lines (ours), optionally only those whose event is ``kind``."""
        found = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (kind is None or entry.get("event") == kind):
                found.append(entry)
        return found

    def wait_for(self, kind: str, count: int = 1, timeout: float = 20.0, **match) -> list:
        """Wait until ``count`` log events of ``kind`` (with these field values) are there; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(kind) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"{count} x {kind} {match} not logged within {timeout:g}s; "
                                     f"log:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)


class Setups:
    """Makes server+node networks with a daemon for tests, and stops them all at :meth:`close`."""

    def __init__(self, lab, workdir: str) -> None:
        self.lab = lab
        self.workdir = workdir
        self.made: list = []

    def make(self, start_server: bool = True, timeout: str = "10s", daemon_args=(), command=None,
             with_daemon: bool = True, **dnsmasq) -> tuple:
        """``(network, daemon)``: dnsmasq started unless ``start_server`` is false, our daemon (or
        ``command``) in the node namespace unless ``with_daemon`` is false (then daemon is None)."""
        net = Network(self.lab, self.workdir, **dnsmasq)
        self.made.append(net)
        if start_server:
            net.start()
        if not with_daemon:
            return net, None
        daemon = DaemonProcess(net.node, self.workdir, timeout=timeout, extra=daemon_args, command=command)
        self.made.append(daemon)
        daemon.start()
        return net, daemon

    def close(self) -> None:
        """Daemons and dnsmasq stopped, newest first."""
        for thing in reversed(self.made):
            if isinstance(thing, DaemonProcess):
                thing.stop()
            else:
                thing.close()
        self.made.clear()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


class FakeDaemon:
    """A scripted stand-in for the daemon (unit tests): each request gets ``script(request)``,
    a list of ``(delay seconds, bytes to send)``; requests are kept in ``requests``."""

    def __init__(self, path: str, script):
        self.path = path
        self.script = script
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = linejson.Reader(conn).read()
                self.requests.append(request)
                for delay, payload in self.script(request):
                    time.sleep(delay)
                    try:
                        conn.sendall(payload)
                    except OSError:
                        break

    def close(self):
        self.sock.close()
