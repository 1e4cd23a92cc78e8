"""``cni-ipam install --keep``: our launchers stay in the bin dir when something else overwrites them.

On OpenShift the operator's ``multus-additional-cni-plugins`` pods copy
Go's static, dhcp and whereabouts into the CNI bin dir whenever they start;
here Debian's Go plugins play that part.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from cni_ipam.install import PLUGINS, install_launchers, keep_installed, restore_launchers

GO_PLUGINS = "/usr/lib/cni"
# What lands on ours: Go's own static and dhcp; Debian has no Go whereabouts, so host-local stands in for it.
GO_OVER_OURS = {"static": "static", "dhcp": "dhcp", "whereabouts": "host-local"}


def contents(paths) -> dict:
    found = {}
    for path in paths:
        with open(path, "rb") as f:
            found[path] = f.read()
    return found


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def test_install_returns_exactly_what_it_wrote(tmp_path):
    written = install_launchers(str(tmp_path))
    assert list(written) == [str(tmp_path / name) for name in PLUGINS]
    assert contents(written) == written


def test_restore_puts_back_exactly_what_was_replaced_or_removed(tmp_path):
    expected = install_launchers(str(tmp_path))
    static, whereabouts, dhcp = (str(tmp_path / name) for name in PLUGINS)
    with open(whereabouts, "wb") as f:
        f.write(b"\x7fELF a Go binary")
    os.unlink(dhcp)
    assert sorted(restore_launchers(expected)) == sorted([whereabouts, dhcp])
    assert contents(expected) == expected
    assert os.access(dhcp, os.X_OK)
    assert restore_launchers(expected) == []  # nothing to do: nothing written


def test_keep_installed_reports_each_restore_and_stops_when_told(tmp_path):
    expected = install_launchers(str(tmp_path))
    stop, reports = threading.Event(), []
    keeper = threading.Thread(target=keep_installed, args=(expected, 0.05, stop, lambda *a: reports.append(a)))
    keeper.start()
    target = str(tmp_path / "whereabouts")
    with open(target, "wb") as f:
        f.write(b"replaced")
    wait_for(lambda: reports)
    stop.set()
    keeper.join(5)
    assert not keeper.is_alive()
    assert reports == [(target,)]
    assert contents([target]) == {target: expected[target]}


def test_the_cli_keeps_ours_when_go_plugins_are_copied_over_them(tmp_path):
    if not all(os.access(os.path.join(GO_PLUGINS, go), os.X_OK) for go in GO_OVER_OURS.values()):
        pytest.skip(f"Debian's Go plugins are not in {GO_PLUGINS} (apt-get install containernetworking-plugins)")
    bin_dir = tmp_path / "bin"
    proc = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "install", "--cni-bin-dir", str(bin_dir),
                             "--keep", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all((bin_dir / name).exists() for name in PLUGINS))
        originals = contents([str(bin_dir / name) for name in PLUGINS])  # whole files: written by rename
        # At once, as the operator's cnibincopy.sh would: cp Go's over ours, maybe before the keeper looks.
        for name, go in GO_OVER_OURS.items():
            shutil.copy(os.path.join(GO_PLUGINS, go), bin_dir / name)
        wait_for(lambda: contents(originals) == originals)
        env = dict(os.environ, CNI_COMMAND="VERSION")
        done = subprocess.run([str(bin_dir / "static")], env=env, input=b"{}", capture_output=True, timeout=30)
        assert done.returncode == 0 and b"1.1.0" in done.stdout  # ours: Debian's Go static stops at 1.0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.split() == [w for name in PLUGINS for w in ("installed", str(bin_dir / name))]
    assert sorted(line.split()[3] for line in err.splitlines() if "restored" in line) == \
        sorted(f"{bin_dir / name}:" for name in PLUGINS)
