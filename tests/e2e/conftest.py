"""Fixtures for the end-to-end tests: our launchers, Debian's main plugins, a lab of namespaces.

Every test that makes namespaces gets its own :class:`~cni_ipam_lab.namespaces.Lab`;
the ``lab`` fixture deletes all of them at teardown, also when the test
failed, and then checks with ``ip netns list`` that none is left.  A test
on ``podman`` has its containers, bridges and libcni cache removed after it
(``podman_test_cleanup``), and fails when a namespace of its containers
outlived them or a bridge of its would not go.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from cni_ipam_lab.namespaces import GO_PLUGIN_DIR, Lab, can_make_netns

# The Go main plugins the e2e tests drive.  Only these are linked into the
# CNI path, so an IPAM "static" can only be found in our bin dir: a test can
# never pass by accident on Debian's own static plugin.
GO_MAIN_PLUGINS = ("bridge", "macvlan")


@pytest.fixture(scope="session")
def netns_ready():
    """Skip (with the reason) unless namespaces can be made and Debian's plugins are installed."""
    ok, why = can_make_netns()
    if not ok:
        pytest.skip(f"e2e: {why}")
    missing = [p for p in GO_MAIN_PLUGINS if not os.access(os.path.join(GO_PLUGIN_DIR, p), os.X_OK)]
    if missing:
        pytest.skip(f"e2e: Debian's CNI plugins {missing} are not in {GO_PLUGIN_DIR} "
                    "(apt-get install containernetworking-plugins)")
    return True


@pytest.fixture(scope="session")
def cni_path(plugin_bin_dir, tmp_path_factory):
    """``CNI_PATH``: our launchers (``plugin_bin_dir`` from tests/conftest.py), then a dir
    holding only Debian's main plugins (no Go IPAM plugin)."""
    go_dir = tmp_path_factory.mktemp("go-main-plugins")
    for name in GO_MAIN_PLUGINS:
        source = os.path.join(GO_PLUGIN_DIR, name)
        if os.path.exists(source):
            os.symlink(source, go_dir / name)
    return f"{plugin_bin_dir}:{go_dir}"


def _namespaces() -> list:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def lab(netns_ready):
    """A fresh lab; every namespace it made is deleted at teardown, pass or fail."""
    the_lab = Lab("e2e")
    try:
        yield the_lab
    finally:
        the_lab.close()
        left = [name for name in _namespaces() if name.startswith(the_lab.prefix)]
        for name in left:  # one more try, so a failed check leaves nothing behind either
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        assert not left, f"namespaces left after the test: {left}"


@pytest.fixture(scope="module")
def podman(plugin_bin_dir, tmp_path_factory):
    """A :class:`~cni_ipam_lab.podman.PodmanEnv` per test module (the busybox image imported once); skips
    with the reason when podman cannot run containers here."""
    from cni_ipam_lab.podman import PodmanEnv, unavailable

    why = unavailable()
    if why:
        pytest.skip(f"podman e2e: {why}")
    env = PodmanEnv(str(tmp_path_factory.mktemp("podman")), plugin_bin_dir)
    try:
        env.import_image()
        why = env.usable()
        if why:
            pytest.skip(f"podman e2e: {why}")
        yield env
    finally:
        env.close()


@pytest.fixture(autouse=True)
def podman_test_cleanup(request):
    """After a test on ``podman``: remove what it made (containers, bridges, libcni cache) and fail it when
    podman left a network namespace of its containers (deleted here) or a bridge of its stayed.

    Set up before the test's other function fixtures, so this runs after their teardown (the DHCP fixtures
    remove their containers before their master link goes)."""
    if "podman" not in request.fixturenames:
        yield
        return
    env = request.getfixturevalue("podman")
    mark = env.mark()
    yield
    leaked, stuck = env.clean_since(mark)
    assert not leaked, f"network namespaces of this test's containers outlived them (deleted now): {leaked}"
    assert not stuck, f"bridges of this test's networks could not be deleted: {stuck}"
