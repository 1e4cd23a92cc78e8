"""A small lab of network namespaces for driving real CNI plugins.

The demo, the end-to-end tests and the benchmarks all need the same things:
a "node" namespace standing in for a cluster node, "pod" namespaces, and a
way to call a CNI plugin (Debian's ``bridge`` or ``macvlan``, which then call
our IPAM plugin) with a clean environment.  Nothing here touches the
machine's own network: every link lives in a namespace the lab made, and
:meth:`Lab.close` deletes them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

GO_PLUGIN_DIR = "/usr/lib/cni"


def is_root() -> bool:
    return os.geteuid() == 0


def can_make_netns() -> tuple:
    """(True, "") when namespaces can be made here, else (False, why not)."""
    if not is_root():
        return False, "needs root to create network namespaces"
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip") and not os.path.exists("/bin/ip"):
        return False, "iproute2 ('ip') is not installed"
    name = f"cniipam-probe-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if done.returncode != 0:
        return False, f"'ip netns add' failed: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True, ""


class CNICall:
    """What a plugin answered: exit code, parsed stdout (or None), stderr."""

    __slots__ = ("exit_code", "output", "stdout", "stderr")

    def __init__(self, exit_code, stdout, stderr):
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        try:
            self.output = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            self.output = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def __repr__(self):
        return f"CNICall(exit={self.exit_code}, output={self.output}, stderr={self.stderr!r})"


def cni_env(command, container_id="", netns="", ifname="", args="", cni_path="", extra=None) -> dict:
    """A clean CNI environment, as a runtime builds it (no inherited variables).

    ``CNI_IPAM_AGENT_SOCKET`` is empty, so a plugin never hands its call to a
    node agent that happens to listen on the default socket: a test or the
    demo talks only to what it started.  Name a socket in ``extra`` to use one.
    """
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_IPAM_AGENT_SOCKET": ""}
    for key, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                       ("CNI_ARGS", args), ("CNI_PATH", cni_path)):
        if value:
            env[key] = value
    env.update(extra or {})
    return env


def run_plugin(plugin: str, env: dict, config, netns_exec: str | None = None, timeout: float = 60) -> CNICall:
    """Exec ``plugin`` with ``env`` and ``config`` (dict or bytes) on stdin, optionally inside a namespace."""
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    argv = [plugin] if netns_exec is None else ["ip", "netns", "exec", netns_exec, plugin]
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=timeout)
    return CNICall(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


class Lab:
    """Network namespaces made for one test or demo, all removed by :meth:`close`."""

    def __init__(self, tag: str = "lab") -> None:
        self.prefix = f"ci-{tag}-{uuid.uuid4().hex[:6]}"
        self.namespaces = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def netns(self, name: str) -> str:
        """Create namespace ``<prefix>-<name>`` with loopback up; return its name."""
        full = f"{self.prefix}-{name}"
        subprocess.run(["ip", "netns", "add", full], check=True, capture_output=True)
        self.namespaces.append(full)
        self.ip(full, "link", "set", "lo", "up")
        return full

    @staticmethod
    def path(netns: str) -> str:
        return f"/run/netns/{netns}"

    @staticmethod
    def ip(netns: str, *args) -> str:
        """Run ``ip <args>`` inside ``netns`` and return its output."""
        done = subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ip -n {netns} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    @staticmethod
    def exec(netns: str, *argv, check=False, timeout=60) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def addresses(self, netns: str, ifname: str) -> list:
        """Global addresses on ``ifname`` as ``ip/prefix`` strings."""
        data = json.loads(self.ip(netns, "-j", "addr", "show", "dev", ifname))
        return [f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])
                if a.get("scope") == "global"]

    def routes(self, netns: str, family: str = "-4") -> list:
        return json.loads(self.ip(netns, "-j", family, "route", "show"))

    def veth(self, netns: str, name: str, peer: str) -> None:
        """A veth pair inside ``netns`` (a macvlan parent: the kernel here has no dummy links)."""
        self.ip(netns, "link", "add", name, "type", "veth", "peer", "name", peer)
        self.ip(netns, "link", "set", name, "up")
        self.ip(netns, "link", "set", peer, "up")

    def close(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()


class Attachment:
    """Calls a main CNI plugin (e.g. bridge) for one pod interface from the node namespace."""

    def __init__(self, lab: Lab, node: str, pod: str, config: dict, cni_path: str,
                 ifname: str = "net1", container_id: str | None = None, args: str = "") -> None:
        self.lab = lab
        self.node = node
        self.pod = pod
        self.config = config
        self.cni_path = cni_path
        self.ifname = ifname
        self.container_id = container_id or uuid.uuid4().hex
        self.args = args
        self.result = None

    def call(self, command: str, config: dict | None = None) -> CNICall:
        config = dict(config or self.config)
        plugin = self._find(config["type"])
        env = cni_env(command, self.container_id, Lab.path(self.pod), self.ifname, self.args, self.cni_path)
        return run_plugin(plugin, env, config, netns_exec=self.node)

    def add(self) -> CNICall:
        done = self.call("ADD")
        if done.ok:
            self.result = done.output
        return done

    def check(self) -> CNICall:
        return self.call("CHECK", dict(self.config, prevResult=self.result))

    def delete(self) -> CNICall:
        config = dict(self.config)
        if self.result is not None:
            config["prevResult"] = self.result
        return self.call("DEL", config)

    def _find(self, plugin_type: str) -> str:
        for directory in self.cni_path.split(":"):
            path = os.path.join(directory, plugin_type)
            if os.access(path, os.X_OK):
                return path
        raise FileNotFoundError(f"CNI plugin {plugin_type!r} not found in {self.cni_path}")
