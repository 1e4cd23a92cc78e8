"""A ``cni-ipam agent`` process of a test's own (the ``agent`` fixture in conftest.py, and tests that restart one)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest


def start_agent(socket_path: str, log_path, *args, umask: int = -1) -> subprocess.Popen:
    """``cni-ipam agent`` on ``socket_path``, logging to ``log_path``, once it says it listens (the socket file
    exists a moment before)."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "agent", "--socket", socket_path, *args],
                                   stdout=log, stderr=log, umask=umask)
    for _ in range(200):
        if '"event": "listening"' in log_path.read_text():
            return process
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the agent did not start: {log_path.read_text()}")
