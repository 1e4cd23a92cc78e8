"""Mutated CNI calls for the fuzz tests (issue 14): env and stdin as bytes, and how an answer is judged.

Shared by tests/unit/test_plugin_fuzz.py (in process) and
tests/integration/test_plugin_fuzz_exec.py (the real executables).
"""

from __future__ import annotations

import json
import sqlite3
import time

from hypothesis import strategies as st

from cni_ipam.cni.request import COMMANDS
from cni_ipam.cni.skel import dispatch

# The codes docs/whereabouts.md and docs/static.md document (CNI's well-known ones and ours).
DOCUMENTED = {1, 2, 3, 4, 5, 6, 7, 11, 50, 101, 102}
LIMIT = 5.0  # seconds for one call, on a loaded machine

ENV_VARS = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
GOOD_ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/p", "CNI_IFNAME": "eth0",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", "CNI_PATH": "/opt/cni/bin"}
# Env values as cni.environment() makes them: bytes decoded with surrogateescape, never a NUL (execve cannot pass one).
ENV_VALUE = st.binary(max_size=24).filter(lambda b: b"\0" not in b).map(lambda b: b.decode("utf-8", "surrogateescape"))


def config(db: str, **ipam) -> dict:
    return {"cniVersion": "1.1.0", "name": "net1", "type": "bridge",
            "ipam": dict({"sqlite_path": db, "type": "whereabouts", "range": "10.0.0.0/29",
                          "configuration_path": "/nonexistent/whereabouts.conf"}, **ipam),
            "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/29"}]},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=8)
# Not log_file: a random one would write files wherever it points.
IPAM_KEYS = ("range", "range_start", "range_end", "exclude", "ipRanges", "gateway", "routes", "dns", "addresses",
             "network_name", "log_level", "datastore", "enable_overlapping_ranges", "type")


@st.composite
def stdin(draw, db: str) -> bytes:
    base = json.dumps(config(db)).encode()
    how = draw(st.sampled_from(["bytes", "flip", "cut", "value", "top"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    if how == "flip":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "cut":
        return base[:draw(st.integers(0, len(base)))] + draw(st.binary(max_size=8))
    doc = config(db)
    if how == "value":
        doc["ipam"][draw(st.sampled_from(IPAM_KEYS))] = draw(JSON_VALUES)
    else:
        doc[draw(st.sampled_from(["cniVersion", "name", "ipam", "prevResult", "cni.dev/valid-attachments",
                                  "runtimeConfig"]))] = draw(JSON_VALUES)
    return json.dumps(doc).encode()


@st.composite
def environment(draw) -> dict:
    env = {"CNI_COMMAND": draw(st.sampled_from(COMMANDS + ("", "BOGUS")))}
    for name in ENV_VARS:
        choice = draw(st.sampled_from(["good", "good", "absent", "mutated"]))
        if choice == "good":
            env[name] = GOOD_ENV[name]
        elif choice == "mutated":
            env[name] = draw(ENV_VALUE)
    return env


def rows(db: str) -> list:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return []
    try:
        return con.execute("SELECT pool, ip, network, container_id, ifname FROM allocations ORDER BY 1, 2").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def judge(outcome, seconds: float) -> None:
    assert seconds < LIMIT, outcome
    assert "Traceback" not in outcome.stderr, outcome
    if outcome.exit_code == 0:
        return
    assert outcome.exit_code == 1, outcome
    error = json.loads(outcome.stdout)
    assert error["code"] in DOCUMENTED, outcome
    assert isinstance(error["msg"], str) and error["msg"], outcome


def call(plugin, env, data):
    started = time.monotonic()
    outcome = dispatch(plugin, env, lambda: data)
    return outcome, time.monotonic() - started


def keeps_the_store(doc: bytes, db: str) -> bool:
    """False when a mutation lost the store's path: the call would use this machine's default store."""
    return b'"sqlite_path": ' + json.dumps(db).encode() in doc or b"sqlite_path" not in doc and b"ipam" not in doc
