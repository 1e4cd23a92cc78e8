"""``make demo`` shows what it claims: the example networks' addresses, pings, and an empty store after."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cni_ipam_lab import demo
from cni_ipam_lab.podman import unavailable

pytestmark = pytest.mark.root

EXPECTED = (
    "wb-x1 (wb-exclude): ip addr {if} -> 192.0.2.197/27",
    "wb-x2 (wb-exclude): ip addr {if} -> 192.0.2.198/27",
    "wb-c1 (wb-nad1): ip addr {if} -> 192.0.2.193/29",
    "wb-c2 (wb-nad2): ip addr {if} -> 192.0.2.1/24",
    "wb-d1 (whereabouts-dual-stack): ip addr {if} -> 192.168.10.1/24, fd00::1/64",
)


def test_demo_runs_the_examples_as_podman_containers(netns_ready):
    why = unavailable()
    if why:
        pytest.skip(f"podman demo: {why}")
    done = subprocess.run([sys.executable, "-m", "cni_ipam.cli", "demo"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "(CNI backend) runs busybox containers" in out, out
    assert "pod-a: ip addr eth0 -> 10.10.21.10/24, fd00:21::10/64" in out, out
    for line in EXPECTED:
        assert line.format(**{"if": "eth0"}) in out, out
    assert "FAILED" not in out and out.count("held in the store now: 0") == 3, out
    assert "wb-d1 pings wb-d2 at fd00::2: ok" in out, out
    assert out.rstrip().endswith("demo finished: all steps ok")


def test_demo_in_plain_namespaces(netns_ready, plugin_bin_dir, tmp_path, capsys):
    """The fallback when podman cannot run: the same examples as pods in namespaces."""
    failures = demo.demo_static_in_namespaces(plugin_bin_dir)
    failures += demo.demo_whereabouts_in_namespaces(plugin_bin_dir, str(tmp_path / "wb.db"))
    out = capsys.readouterr().out
    assert failures == 0, out
    for line in EXPECTED:
        assert line.format(**{"if": "net1"}) in out, out
    assert "FAILED" not in out and out.count("held in the store now: 0") == 3, out
    assert "wb-d1 pings wb-d2 at fd00::2: ok" in out, out
