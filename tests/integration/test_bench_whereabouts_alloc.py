"""bench/whereabouts_alloc.py still runs and states issue 17's plugin-alone goals: a tiny load, its report whole.

16 ADDs per plugin and mode at 16-way, a 0.1%-full store for the fill part;
checks what it reports (the goal lines, each with its durability), never how
fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST_LOCAL = "/usr/lib/cni/host-local"


def test_plugin_alone_goals_against_host_local(tmp_path):
    if not os.access(HOST_LOCAL, os.X_OK):
        pytest.skip(f"{HOST_LOCAL} not installed (containernetworking-plugins)")
    out = tmp_path / "numbers.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "whereabouts_alloc.py"), "-n", "16", "-c", "16",
                           "--fill", "0.001", "--fill-n", "3", "--warmup", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CNI_IPAM_AGENT_SOCKET": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    for name in ("ours", "ours-normal", "agent", "go"):
        for mode in ("sequential", "16-way"):
            assert report["results"][f"{mode}/{name}"]["count"] == 16, (mode, name)
    issue17 = [g for g in report["goals"] if "(issue 17)" in g]
    assert len(issue17) == 4, report["goals"]
    for name, durability in (("ours", "fsync at every commit; host-local never fsyncs"),
                             ("ours-normal", "no fsync at commit, as host-local")):
        mine = [g for g in issue17 if g.startswith(f"{name} ({durability}): ")]
        assert len(mine) == 2, issue17
        assert any("16-way ADD/s at least 0.6x host-local's" in g for g in mine), mine
        assert any("ADD p50 at most 2.5x host-local's, sequential" in g for g in mine), mine
        assert all(g.endswith(("PASS", "MISS")) for g in mine), mine
