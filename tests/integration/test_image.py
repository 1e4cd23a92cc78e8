"""The image from the ``Containerfile``, built here, and its install step run as the DaemonSets run it.

The base image cannot be pulled (no registry), so it is made the way
Debian's official one is: ``mmdebstrap --variant=minbase`` of bookworm,
imported under the exact name the ``Containerfile`` pins, so ``podman
build --pull=never`` builds the file unchanged.  The build downloads Debian
packages and the project's PyPI dependencies; where those registries cannot
be reached the test is skipped, saying so.

Then the install container of the rendered manifests (its command and its
hostPath mounts, taken from :func:`cni_ipam.deploy.manifests.install_container`)
runs from the image against a node root with no Python and no libc, and the
plugins it installed are run there with ``chroot``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from cni_ipam.deploy.manifests import HOST, Options, install_container, install_volumes
from cni_ipam_lab.podman import PodmanEnv, PodmanError, unavailable
from node_root import STATIC_NET, STATIC_RESULT, WHEREABOUTS_NET, make_node_root, need_root, run_in_node

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAG = "localhost/cni-ipam:test"
MIRROR = "http://deb.debian.org/debian"


def base_image() -> str:
    """The FROM line of the Containerfile."""
    with open(os.path.join(ROOT, "Containerfile")) as f:
        return re.search(r"^FROM\s+(\S+)", f.read(), re.M).group(1)


def unreachable() -> str | None:
    for host, port in (("deb.debian.org", 80), ("pypi.org", 443)):
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            return f"{host}:{port} cannot be reached ({exc}): the image build downloads from it"
    return None


def twice(step):
    """Both steps download (Debian packages, PyPI): one retry for a registry's hiccup, then the error stands."""
    try:
        return step()
    except (subprocess.CalledProcessError, PodmanError):
        time.sleep(5)
        return step()


@pytest.fixture(scope="module")
def image(tmp_path_factory, plugin_bin_dir):
    """A podman environment holding the image built from the Containerfile."""
    need_root()
    why = unavailable() or (None if shutil.which("mmdebstrap") else "mmdebstrap is not installed") or unreachable()
    if why:
        pytest.skip(f"image build: {why}")
    work = tmp_path_factory.mktemp("image")
    env = PodmanEnv(str(work / "podman"), plugin_bin_dir)
    try:
        base = str(work / "base.tar")
        twice(lambda: subprocess.run(["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", base, MIRROR],
                                     check=True, capture_output=True, text=True, timeout=600))
        env.ok("import", base, base_image(), timeout=300)
        bundle = "/etc/ssl/certs/ca-certificates.crt"  # the host's CAs: PyPI may sit behind a TLS-inspecting proxy
        twice(lambda: env.ok("build", "--pull=never", "--network", "host", "-v", f"{bundle}:/run/host-ca.crt:ro",
                             "--build-arg", "PIP_CERT=/run/host-ca.crt", "-t", TAG,
                             "-f", os.path.join(ROOT, "Containerfile"), ROOT, timeout=1200))
        yield env
    finally:
        env.close()  # removes the storage, and with it both images


def start_installer(env: PodmanEnv, node_root: str, options: Options) -> str:
    """The rendered installer container, run by podman: each hostPath volume is the node root's own directory.
    It stays (``--keep``); the container's name is returned."""
    spec = install_container(options)
    host_dirs = {v["name"]: v["hostPath"]["path"] for v in install_volumes(options)}
    mounts = []
    for mount in spec["volumeMounts"]:
        on_node = node_root + host_dirs[mount["name"]]
        os.makedirs(on_node, exist_ok=True)  # hostPath type DirectoryOrCreate
        mounts += ["-v", f"{on_node}:{mount['mountPath']}"]
    command = spec["command"]
    name = f"installer-{env.tag}"
    env.ok("run", "-d", "--name", name, "--network", "none", *mounts, "--entrypoint", command[0], TAG, *command[1:])
    return name


def logs(env: PodmanEnv, name: str) -> tuple:
    done = env.podman("logs", name)
    return done.stdout, done.stderr


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_image_installs_plugins_that_run_on_a_node_without_python_and_keeps_them(image, tmp_path):
    node = str(tmp_path / "rootfs")
    make_node_root(node)
    options = Options()
    installer = start_installer(image, node, options)
    expected = [w for name in ("static", "whereabouts", "dhcp")
                for w in ("installed", f"{HOST}{options.cni_bin_dir}/{name}")]
    wait_for(lambda: logs(image, installer)[0].split() == expected, f"the installer's output: {logs(image, installer)}")
    assert not os.path.exists(os.path.join(node, "usr")), "the node got more than the runtime dir and the launchers"
    assert run_in_node(node, "static", "ADD", STATIC_NET, bin_dir=options.cni_bin_dir) == STATIC_RESULT
    first = run_in_node(node, "whereabouts", "ADD", WHEREABOUTS_NET, "pod-a", bin_dir=options.cni_bin_dir)
    assert [ip["address"] for ip in first["ips"]] == ["192.168.2.225/28"]
    run_in_node(node, "whereabouts", "DEL", WHEREABOUTS_NET, "pod-a", bin_dir=options.cni_bin_dir)
    again = run_in_node(node, "whereabouts", "ADD", WHEREABOUTS_NET, "pod-b", bin_dir=options.cni_bin_dir)
    assert [ip["address"] for ip in again["ips"]] == ["192.168.2.225/28"]
    # Another installer copies its own whereabouts over ours (as OpenShift's operator does): ours comes back.
    launcher = node + options.cni_bin_dir + "/whereabouts"
    ours = read(launcher)
    with open(launcher, "wb") as f:
        f.write(b"\x7fELF someone else's whereabouts")
    wait_for(lambda: read(launcher) == ours, "the installer did not put our whereabouts back")
    assert "restored /host/var/lib/cni/bin/whereabouts" in logs(image, installer)[1]
    third = run_in_node(node, "whereabouts", "ADD", WHEREABOUTS_NET, "pod-c", bin_dir=options.cni_bin_dir)
    assert [ip["address"] for ip in third["ips"]] == ["192.168.2.226/28"]
    image.ok("stop", "-t", "10", installer)  # SIGTERM: --keep ends at once
    assert image.ok("inspect", "--format", "{{.State.ExitCode}}", installer).strip() == "0"


def test_the_image_runs_the_daemons_commands(image, tmp_path):
    """The daemons' libraries are in the image: the reconciler does a dry run, render renders."""
    flat = tmp_path / "whereabouts.conf"
    flat.write_text('{"datastore": "sqlite", "sqlite_path": "/data/none.db"}')
    out = image.ok("run", "--rm", "--network", "none", "-v", f"{tmp_path}:/data", TAG,
                   "reconcile", "--once", "--dry-run", "--source", "netns", "--config", "/data/whereabouts.conf")
    events = {line["event"]: line for line in map(json.loads, out.splitlines())}
    assert "nothing to reconcile" in events["no-store"]["msg"]
    assert events["run-end"]["ok"] is True
    help_text = image.ok("run", "--rm", "--network", "none", TAG, "render", "--help")
    assert "Network" in help_text
