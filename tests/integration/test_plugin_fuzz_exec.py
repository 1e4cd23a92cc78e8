"""A few of tests/unit/test_plugin_fuzz.py's mutated calls through the real executables (issue 14).

In process the dispatcher is judged; here also what only a process has:
env bytes that are not UTF-8, stdin through a pipe, the exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from cni_ipam.cni.skel import Outcome
from plugin_fuzz import GOOD_ENV, LIMIT, config, environment, judge, keeps_the_store, rows, stdin


def run(path: str, env: dict, data: bytes) -> tuple:
    process_env = {"PATH": "/usr/bin:/bin", "CNI_IPAM_AGENT_SOCKET": ""}
    process_env.update({k: v.encode("utf-8", "surrogateescape") for k, v in env.items()})
    started = time.monotonic()
    done = subprocess.run([path], input=data, env=process_env, capture_output=True, timeout=LIMIT * 4)
    outcome = Outcome(done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"), done.returncode)
    return outcome, time.monotonic() - started


EXEC = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXEC
@given(data=st.data())
def test_static_executable(data, bin_dir, tmp_path):
    doc = data.draw(stdin(str(tmp_path / "unused.db"))).replace(b'"whereabouts"', b'"static"')
    judge(*run(os.path.join(bin_dir, "static"), data.draw(environment()), doc))


@EXEC
@given(data=st.data())
def test_whereabouts_executable(data, bin_dir, tmp_path):
    db = str(tmp_path / "store" / "wa.db")
    path = os.path.join(bin_dir, "whereabouts")
    if not rows(db):
        seeded, _ = run(path, dict(GOOD_ENV, CNI_COMMAND="ADD", CNI_CONTAINERID="seed"), json.dumps(config(db)).encode())
        assert seeded.exit_code == 0, seeded
    before = rows(db)
    doc = data.draw(stdin(db))
    assume(keeps_the_store(doc, db))
    outcome, seconds = run(path, data.draw(environment()), doc)
    judge(outcome, seconds)
    if outcome.exit_code != 0:
        assert rows(db) == before, outcome
