"""bench/kube_alloc.py still runs: every ``--via`` and layout, a tiny load, its JSON rows whole.

The benchmark starts its own etcd cluster, test API server and agents; this
runs it at 2 nodes, 2-way, 3 ADDs per node, no latency, and checks what it
reports, never how fast (its numbers are the benchmark's business).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_mode_answers_every_add(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "kube_alloc.py"), "--nodes", "2", "--ways",
                           "2", "--adds-per-node", "3", "--latency", "0", "--layouts", "pool,slices", "--via",
                           "plugin,agent,forwarder,upstream", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CNI_IPAM_AGENT_SOCKET": ""})
    if done.returncode == 2 and "etcd is not installed" in done.stdout:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    made = sorted((r["via"], r["layout"]) for r in rows)
    assert made == [("agent", "pool"), ("agent", "slices"), ("forwarder", "pool"), ("forwarder", "slices"),
                    ("plugin", "pool"), ("plugin", "slices"), ("upstream", "pool")]  # the upstream writer knows no node slices
    for row in rows:
        assert (row["ok"], row["failed"], row["duplicates"], row["failures"]) == (6, 0, 0, []), row
        assert row["round_trips_per_add"] >= 2  # at least the pool write and the reservation create
    assert "upstream's algorithm (Python)" in done.stdout
    assert "2-way (ADDs at once cluster-wide), 0 ms added to every write" in done.stdout
