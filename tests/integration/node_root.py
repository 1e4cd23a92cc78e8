"""A node without Python for the install tests: static busybox in a directory, plugins run by chroot.

Shared by ``test_runtime_bundle.py`` (the installer run from the venv) and
``test_image.py`` (the installer run from the image built from the Containerfile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

NODE_RUNTIME = "/opt/cni-ipam"  # --runtime-dir as the node sees it
NODE_BIN = "/opt/cni/bin"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static
APPLETS = ("sh", "env", "cat", "ls")
CHROOT = shutil.which("chroot")

STATIC_NET = {
    "cniVersion": "1.0.0", "name": "bundle", "type": "bridge",
    "ipam": {"type": "static",
             "addresses": [{"address": "10.1.1.2/24", "gateway": "10.1.1.1"},
                           {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}],
             "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}, {"dst": "192.168.17.0/24"}],
             "dns": {"nameservers": ["10.1.1.1"], "domain": "example.com", "search": ["example.com"]}},
}
STATIC_RESULT = {
    "cniVersion": "1.0.0",
    "ips": [{"address": "10.1.1.2/24", "gateway": "10.1.1.1"}, {"address": "fd00:1::2/64", "gateway": "fd00:1::1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}, {"dst": "192.168.17.0/24"}],
    "dns": {"nameservers": ["10.1.1.1"], "domain": "example.com", "search": ["example.com"]},
}
# sqlite_path inside the chroot: the plugin's _sqlite3 and libsqlite3 can only come from the bundle.
WHEREABOUTS_NET = {
    "cniVersion": "1.0.0", "name": "bundle-wb", "type": "bridge",
    "ipam": {"type": "whereabouts", "range": "192.168.2.224/28", "datastore": "sqlite", "sqlite_path": "/tmp/wb.db"},
}
SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def need_patchelf():
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf is not installed (apt-get install patchelf)")


def need_root():
    if os.geteuid() != 0:
        pytest.skip("chroot into the node's root needs root")
    if CHROOT is None:
        pytest.skip("chroot is not installed (coreutils)")


def is_static(path: str) -> bool:
    """No PT_INTERP: the binary needs no loader and no libc (patchelf refuses to print one)."""
    return subprocess.run(["patchelf", "--print-interpreter", path], capture_output=True).returncode != 0


def make_node_root(root: str) -> None:
    """A node with nothing but static busybox: no Python, no libc."""
    if not os.path.exists(BUSYBOX) or not is_static(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is missing or not static (apt-get install busybox-static)")
    for directory in ("bin", "tmp", "proc", "dev"):
        os.makedirs(os.path.join(root, directory))
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", applet))


def run_in_node(root: str, plugin: str, command: str, net: dict | None = None, container: str = "c1",
                bin_dir: str = NODE_BIN):
    """Call a plugin as a runtime on the node would: exec'd by path, CNI_* in the environment."""
    env = {"CNI_COMMAND": command, "CNI_PATH": bin_dir, "CNI_IPAM_AGENT_SOCKET": ""}
    if command != "VERSION":
        env.update(CNI_CONTAINERID=container, CNI_NETNS="/proc/1/ns/net", CNI_IFNAME="eth0",
                   CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}")
    stdin = json.dumps(net).encode() if net else b""
    done = subprocess.run([CHROOT, root, f"{bin_dir}/{plugin}"], input=stdin, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, f"{plugin} {command}: {done.stdout!r} {done.stderr!r}"
    return json.loads(done.stdout) if done.stdout.strip() else None
