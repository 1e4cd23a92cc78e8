"""The node agent: plugins hand their whereabouts calls to ``cni-ipam agent``, or do the work themselves.

Every test starts its own agent on a socket in tmp_path and points the
plugin at it with ``CNI_IPAM_AGENT_SOCKET``; the store is a SQLite file of
the test's own, shared by calls through the agent and calls done in the
plugin process, which must never hand out one address twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_ipam_lab.namespaces import cni_env, run_plugin


@pytest.fixture
def agent(tmp_path):
    """A running agent; yields (socket path, log file path)."""
    socket_path = str(tmp_path / "agent.sock")
    log_path = tmp_path / "agent.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "cni_ipam.cli", "agent", "--socket", socket_path],
                                   stdout=log, stderr=log)
    for _ in range(200):  # the agent says so once it listens (the socket file exists a moment before)
        if '"event": "listening"' in log_path.read_text():
            break
        time.sleep(0.05)
    else:
        process.kill()
        pytest.fail(f"the agent did not start: {log_path.read_text()}")
    yield socket_path, log_path
    process.terminate()
    process.wait(10)


def config(tmp_path, **ipam) -> dict:
    return {"cniVersion": "1.0.0", "name": "agent-net", "type": "bridge",
            "ipam": dict({"type": "whereabouts", "range": "10.30.0.0/24", "sqlite_path": str(tmp_path / "wb.db"),
                          "configuration_path": str(tmp_path / "none.conf")}, **ipam)}


def call(bin_dir, command, cid, conf, socket_path):
    env = cni_env(command, cid, "/run/netns/none", "net1", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=" + cid,
                  bin_dir, extra={"CNI_IPAM_AGENT_SOCKET": socket_path})
    return run_plugin(os.path.join(bin_dir, "whereabouts"), env, conf)


def agent_calls(log_path) -> list:
    return [json.loads(line) for line in log_path.read_text().splitlines() if '"event": "call"' in line]


def held(tmp_path) -> list:
    with sqlite3.connect(tmp_path / "wb.db") as db:
        return db.execute("SELECT container_id, hex(ip) FROM allocations ORDER BY ip").fetchall()


def test_calls_go_through_the_agent_and_answer_as_the_plugin_would(plugin_bin_dir, tmp_path, agent):
    socket_path, log_path = agent
    conf = config(tmp_path)
    first = call(plugin_bin_dir, "ADD", "c1", conf, socket_path)
    second = call(plugin_bin_dir, "ADD", "c2", conf, socket_path)
    assert first.ok and second.ok, (first, second)
    assert [ip["address"] for ip in first.output["ips"]] == ["10.30.0.1/24"]
    assert [ip["address"] for ip in second.output["ips"]] == ["10.30.0.2/24"]
    assert [(c["command"], c["container_id"]) for c in agent_calls(log_path)] == [("ADD", "c1"), ("ADD", "c2")]
    # The same ADD done in the plugin process (no agent) gives the same answer.
    alone = call(plugin_bin_dir, "ADD", "c1", conf, "")
    assert alone.output == first.output
    bad = call(plugin_bin_dir, "ADD", "c3", config(tmp_path, range="10.30.0.0/33"), socket_path)
    assert bad.exit_code == 1 and bad.output["code"] == 7 and "10.30.0.0/33" in bad.output["msg"]
    assert call(plugin_bin_dir, "DEL", "c1", conf, socket_path).ok
    assert [c for c, _ in held(tmp_path)] == ["c2"]
    assert len(agent_calls(log_path)) == 4


def test_without_an_agent_the_plugin_does_the_work(plugin_bin_dir, tmp_path):
    stale = tmp_path / "stale.sock"  # a socket file nobody listens on, as after an agent crash
    import socket

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()
    conf = config(tmp_path)
    for target in (str(stale), str(tmp_path / "missing.sock")):
        done = call(plugin_bin_dir, "ADD", f"c-{os.path.basename(target)}", conf, target)
        assert done.ok, done
    assert len(held(tmp_path)) == 2


def test_agent_and_plugin_processes_together_never_share_an_address(plugin_bin_dir, tmp_path, agent):
    socket_path, log_path = agent
    conf = config(tmp_path, range="10.31.0.0/22")

    def worker(w):
        results = []
        for i in range(12):
            via = socket_path if (w + i) % 2 else ""  # half through the agent, half in the plugin process
            done = call(plugin_bin_dir, "ADD", f"w{w}-{i}", conf, via)
            assert done.ok, done
            results.append(done.output["ips"][0]["address"])
        return results

    with ThreadPoolExecutor(max_workers=16) as pool:
        addresses = [a for batch in pool.map(worker, range(16)) for a in batch]
    assert len(addresses) == 192 and len(set(addresses)) == 192
    assert len(held(tmp_path)) == 192
    assert len(agent_calls(log_path)) == 96


def test_the_plugin_process_imports_no_store_when_the_agent_answers(plugin_bin_dir, tmp_path, agent):
    socket_path, _ = agent
    env = cni_env("ADD", "imports", "/run/netns/none", "net1", "", plugin_bin_dir,
                  extra={"CNI_IPAM_AGENT_SOCKET": socket_path})
    launcher = os.path.join(plugin_bin_dir, "whereabouts")
    python = open(launcher).readline()[2:].split()[0]
    done = subprocess.run([python, "-X", "importtime", "-IS", launcher], env=env,
                          input=json.dumps(config(tmp_path)).encode(), capture_output=True)
    assert done.returncode == 0, done
    imported = {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines() if "|" in line}
    assert "cni_ipam.agent_client" in imported
    assert not imported & {"_sqlite3", "sqlite3", "cni_ipam.store.sqlite", "cni_ipam.config.whereabouts"}, imported


def test_a_malformed_request_gets_an_error_and_the_agent_keeps_serving(plugin_bin_dir, tmp_path, agent):
    import socket

    socket_path, _ = agent
    for garbage in (b"not json\n", b"[1, 2]\n"):
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(socket_path)
            client.sendall(garbage)
            answer = json.loads(client.makefile("rb").readline())
        assert answer["exit"] == 1 and "bad request" in answer["stderr"]
    assert call(plugin_bin_dir, "ADD", "after", config(tmp_path), socket_path).ok
