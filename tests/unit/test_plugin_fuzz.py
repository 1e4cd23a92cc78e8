"""Hostile input to every command of static and whereabouts, in process (issue 14).

Env and stdin are mutated as bytes, not only as JSON values.  Every answer
must be a success or a CNI error JSON with a documented code (never 999, a
traceback, or a hang), and a failed whereabouts call must leave the SQLite
store's allocations as they were.  ``tests/integration/test_plugin_fuzz_exec.py``
sends fewer of these through the real executables.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, assume, given, settings, strategies as st

from cni_ipam.cni.skel import dispatch
from cni_ipam.plugins import static, whereabouts
from plugin_fuzz import GOOD_ENV, call, config, environment, judge, keeps_the_store, rows, stdin

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_static_answers_every_mutated_call_with_a_documented_code(data, tmp_path):
    db = str(tmp_path / "unused.db")
    doc = data.draw(stdin(db)).replace(b'"whereabouts"', b'"static"')
    outcome, seconds = call(static.PLUGIN, data.draw(environment()), doc)
    judge(outcome, seconds)


@FUZZ
@given(data=st.data())
def test_whereabouts_answers_every_mutated_call_with_a_documented_code_and_a_failure_changes_nothing(data, tmp_path):
    db = str(tmp_path / "store" / "wa.db")
    seed_env = dict(GOOD_ENV, CNI_COMMAND="ADD", CNI_CONTAINERID="seed")
    if not rows(db):
        assert dispatch(whereabouts.PLUGIN, seed_env, lambda: json.dumps(config(db)).encode()).exit_code == 0
    before = rows(db)
    doc = data.draw(stdin(db))
    assume(keeps_the_store(doc, db))
    outcome, seconds = call(whereabouts.PLUGIN, data.draw(environment()), doc)
    judge(outcome, seconds)
    if outcome.exit_code != 0:
        assert rows(db) == before, outcome
