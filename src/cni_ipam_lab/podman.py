"""A podman (CNI backend) environment of our own, in a tmp dir: for the e2e tests and ``make demo``.

Debian 12's podman 4.3 with ``network_backend = "cni"`` drives our IPAM
plugins through Debian's ``bridge`` plugin.  The sandbox fixes (docs/podman.md
says why each is needed): ``runc`` (crun refuses the
hybrid cgroup layout), ``cgroupfs`` and a file events logger (no systemd),
default ulimits within the caller's hard limits, ``vfs`` storage, and a
busybox image made with ``podman import`` from Debian's ``busybox-static``
(no registry).  Our plugin dir comes FIRST in ``cni_plugin_dirs``: Debian's
``/usr/lib/cni`` has its own ``static`` and ``dhcp``.

Everything lives in the session's tmp dir and a runroot under ``/run``;
:meth:`PodmanEnv.close` removes the containers, the network namespaces they
left, the bridges, the libcni cache of our networks, the image and the
storage; :meth:`PodmanEnv.clean_since` does the same for one test's part.

podman 4.3 removes a container's namespace (``/run/netns/netns-<uuid>``)
even when its CNI DEL fails, but not when the podman client that set the
namespace up was killed before it recorded it (a ``subprocess`` timeout
under load, an interrupted run): ``rm`` then leaves it mounted, with the
container's ``eth0`` and the host's veth peer.  Only namespaces our own
networks put a container in are ever deleted (other podman users on this
host keep theirs in the same directory).
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import shutil
import subprocess
import tarfile
import time
import uuid

IMAGE = "localhost/cni-ipam-bb:latest"
GO_PLUGIN_DIR = "/usr/lib/cni"
CNI_STATE = "/var/lib/cni"
NETNS_DIR = "/run/netns"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ip", "sleep", "cat", "ls", "true", "echo", "ping")


class PodmanError(Exception):
    """A podman command failed; the message has its stderr."""


def unavailable() -> str | None:
    """Why podman cannot run containers here, or None."""
    if os.geteuid() != 0:
        return "podman e2e tests need root (rootful podman with CNI bridges)"
    for tool in ("podman", "runc", "conmon"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc conmon busybox-static)"
    if not os.access(BUSYBOX, os.X_OK):
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    if not os.access(os.path.join(GO_PLUGIN_DIR, "bridge"), os.X_OK):
        return f"Debian's bridge plugin is not in {GO_PLUGIN_DIR} (apt-get install containernetworking-plugins)"
    return None


def _ulimits() -> list:
    """nofile/nproc no higher than our hard limits (no CAP_SYS_RESOURCE here); podman caps NPROC at 32768."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


class PodmanEnv:
    def __init__(self, workdir: str, plugin_bin_dir: str):
        self.workdir = workdir
        self.tag = uuid.uuid4().hex[:6]
        self.runroot = f"/run/cni-ipam-podman-{self.tag}"
        self.conf_dir = os.path.join(workdir, "cni.d")
        self.networks: list = []
        self.bridges: list = []
        self.bridge_of: dict = {}  # network name -> its Linux bridge (in the host namespace)
        os.makedirs(self.conf_dir)  # and workdir with it
        os.makedirs(self.runroot)
        with open(os.path.join(workdir, "containers.conf"), "w") as f:
            f.write(
                "[containers]\n"
                f"default_ulimits = {json.dumps(_ulimits())}\n\n"
                "[network]\n"
                'network_backend = "cni"\n'
                f"cni_plugin_dirs = {json.dumps([plugin_bin_dir, GO_PLUGIN_DIR])}\n"
                f'network_config_dir = "{self.conf_dir}"\n\n'
                "[engine]\n"
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'events_logfile_path = "{workdir}/events.log"\n'
                'runtime = "runc"\n'
                f'tmp_dir = "{self.runroot}/libpod"\n')
        with open(os.path.join(workdir, "storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{workdir}/storage"\nrunroot = "{self.runroot}/storage"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=os.path.join(workdir, "containers.conf"),
                        CONTAINERS_STORAGE_CONF=os.path.join(workdir, "storage.conf"))

    # -- podman ---------------------------------------------------------------
    def podman(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args, timeout: float = 60) -> str:
        """podman's stdout; :class:`PodmanError` (tests see it as a failure) when it fails."""
        done = self.podman(*args, timeout=timeout)
        if done.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def import_image(self) -> None:
        tar = os.path.join(self.workdir, "bb-rootfs.tar")
        with tarfile.open(tar, "w") as t:
            for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "run"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            t.add(BUSYBOX, "bin/busybox")
            for applet in APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(info)
            for name, text in (("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(text), 0o644
                t.addfile(info, io.BytesIO(text))
        self.ok("import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV PATH=/bin", tar, IMAGE)

    # -- networks -------------------------------------------------------------
    def network(self, name: str, ipam: dict, cni_version: str = "1.0.0", extra_plugins: tuple = (),
                macvlan_master: str | None = None) -> str:
        """Write a conflist ``bridge`` (no host address, no NAT) + ``ipam``, or ``macvlan`` on
        ``macvlan_master`` (mode bridge); returns the network's name."""
        name = f"{name}-{self.tag}"
        if macvlan_master is None:
            bridge = f"cni-pm{self.tag}{len(self.bridges)}"[:15]
            main = {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False}
            self.bridges.append(bridge)
            self.bridge_of[name] = bridge
        else:
            main = {"type": "macvlan", "master": macvlan_master, "mode": "bridge"}
        conflist = {"cniVersion": cni_version, "name": name, "plugins": [dict(main, ipam=ipam), *extra_plugins]}
        with open(os.path.join(self.conf_dir, f"{name}.conflist"), "w") as f:
            json.dump(conflist, f)
        self.networks.append(name)
        return name

    # -- containers -----------------------------------------------------------
    def run_addresses(self, network: str, *options) -> list:
        """``podman run --rm --network <network> ... ip -o addr show eth0``: the global addresses."""
        return parse_addresses(self.ok("run", "--rm", "--network", network, *options, IMAGE, "ip", "-o", "addr", "show", "eth0"))

    def start(self, name: str, network: str, *options, timeout: float = 60) -> str:
        full = f"{name}-{self.tag}"
        self.ok("run", "-d", "--name", full, "--network", network, *options, IMAGE, "sleep", "300", timeout=timeout)
        return full

    def addresses(self, container: str, ifname: str = "eth0") -> list:
        return parse_addresses(self.ok("exec", container, "ip", "-o", "addr", "show", ifname))

    def usable(self) -> str | None:
        """Why podman cannot run a container here after all (with our config), or None."""
        done = self.podman("run", "--rm", "--network", "none", IMAGE, "true")
        return None if done.returncode == 0 else f"podman cannot run a container here: {done.stderr.strip()}"

    # -- what our containers left ---------------------------------------------
    def sandboxes(self, networks=None, bridges=None) -> set:
        """Names (in /run/netns) of the namespaces our ``networks`` (default all) put a container in: the
        ``sandbox`` of libcni's cached ADD results, and the namespaces of the ports of our ``bridges``
        (default all; a client killed before libcni wrote its cache still left a veth there)."""
        networks = self.networks if networks is None else networks
        found = set()
        for path in self._cache_files(networks):
            try:
                with open(path) as f:
                    interfaces = (json.load(f).get("result") or {}).get("interfaces") or ()
            except (OSError, ValueError, AttributeError):
                continue
            for iface in interfaces:
                sandbox = iface.get("sandbox") if isinstance(iface, dict) else None
                if isinstance(sandbox, str) and os.path.dirname(sandbox) == NETNS_DIR:
                    found.add(os.path.basename(sandbox))
        ids = {ns.get("id"): ns.get("name") for ns in _ip_json("netns", "list")}
        for bridge in self.bridges if bridges is None else bridges:
            for port in _ip_json("link", "show", "master", bridge):
                if ids.get(port.get("link_netnsid")):
                    found.add(ids[port["link_netnsid"]])
        return found

    def containers(self) -> set:
        """IDs of this environment's containers, running or not."""
        return set(self.podman("ps", "-a", "-q", "--no-trunc").stdout.split())

    def remove_leaked_netns(self, networks=None, bridges=None) -> list:
        """Delete the namespaces of our ``networks``/``bridges`` (:meth:`sandboxes`) that no container of
        ours is in any more; the names deleted, sorted."""
        there = {n for n in self.sandboxes(networks, bridges) if os.path.exists(os.path.join(NETNS_DIR, n))}
        ids = sorted(self.containers()) if there else []
        if ids:
            keys = self.podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", *ids).stdout.split()
            there -= {os.path.basename(k) for k in keys}
        leaked = sorted(there)
        for name in leaked:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        return leaked

    def mark(self) -> tuple:
        """Where this environment is now, for :meth:`clean_since`."""
        return self.containers(), len(self.networks), len(self.bridges)

    def clean_since(self, mark: tuple) -> tuple:
        """Remove what was made since ``mark``: containers, the namespaces they left, bridges, libcni cache.
        Returns (namespaces that were left after podman removed the containers, bridges that would not go)."""
        before, networks, bridges = mark
        made = sorted(self.containers() - before)
        if made:
            self.podman("rm", "-f", "-t", "0", *made, timeout=120)
        new_networks, new_bridges = self.networks[networks:], self.bridges[bridges:]
        leaked = self.remove_leaked_netns(new_networks, new_bridges)
        stuck = self._remove_networks(new_networks, new_bridges)
        return leaked, stuck

    def _remove_networks(self, networks, bridges) -> list:
        """Delete ``bridges`` and the libcni state of ``networks``; the bridges still there after."""
        for bridge in bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for name in networks:
            shutil.rmtree(os.path.join(CNI_STATE, "networks", name), ignore_errors=True)
        for path in self._cache_files(networks):
            os.unlink(path)
        return [b for b in bridges if os.path.exists(f"/sys/class/net/{b}")]

    @staticmethod
    def _cache_files(networks) -> list:
        results = os.path.join(CNI_STATE, "results")
        entries = os.listdir(results) if os.path.isdir(results) else ()
        return [os.path.join(results, e) for e in entries if any(e.startswith(f"{n}-") for n in networks)]

    # -- cleanup --------------------------------------------------------------
    def close(self) -> None:
        self.podman("rm", "-a", "-f", "-t", "0", timeout=120)
        self.remove_leaked_netns()
        self._remove_networks(self.networks, self.bridges)
        self._wait_conmon_gone()
        for base in os.listdir("/sys/fs/cgroup") if os.path.isdir("/sys/fs/cgroup") else ():
            parent = os.path.join("/sys/fs/cgroup", base, "libpod_parent")
            if os.path.isdir(parent):  # empty cgroups left by cgroupfs; rmdir fails on busy ones
                for root, dirs, _ in os.walk(parent, topdown=False):
                    try:
                        os.rmdir(root)
                    except OSError:
                        pass
        self.podman("rmi", "-f", IMAGE)
        shutil.rmtree(os.path.join(self.workdir, "storage"), ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)

    def _wait_conmon_gone(self, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._conmons():
            time.sleep(0.1)

    def _conmons(self) -> list:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != "conmon":
                        continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.runroot.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                continue
        return found


def _ip_json(*args) -> list:
    """``ip -j <args>`` parsed; [] when it fails or prints nothing (no namespaces, no such bridge)."""
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True)
    try:
        return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []
    except ValueError:
        return []


_ADDR = re.compile(r"\binet6?\s+(\S+)\s.*?scope\s+(\S+)")


def parse_addresses(text: str) -> list:
    """Global addresses (``ip/prefix``) from ``ip -o addr`` output, link-local ones left out."""
    found = []
    for line in text.splitlines():
        m = _ADDR.search(line)
        if m and m.group(2) != "link":
            found.append(m.group(1))
    return found
