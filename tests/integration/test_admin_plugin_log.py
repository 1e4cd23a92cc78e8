"""The whereabouts plugin writes one JSON line per call to ``log_file``, filtered by ``log_level``."""

from __future__ import annotations

import json
import os

from cni_ipam_lab.namespaces import cni_env, run_plugin


def call(bin_dir, command, cid, ipam, tmp_path, rng="192.0.2.0/30"):
    config = {"cniVersion": "1.0.0", "name": "net-log", "type": "macvlan",
              "ipam": dict({"type": "whereabouts", "range": rng, "sqlite_path": str(tmp_path / "w.db"),
                            "configuration_path": str(tmp_path / "none.conf")}, **ipam)}
    env = cni_env(command, cid, f"/run/netns/{cid}", "net1", "", bin_dir)
    return run_plugin(os.path.join(bin_dir, "whereabouts"), env, config)


def lines(path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_debug_logs_every_call_with_its_addresses_and_errors(bin_dir, tmp_path):
    log = tmp_path / "whereabouts.log"
    ipam = {"log_file": str(log)}  # log_level defaults to debug, as in whereabouts
    assert call(bin_dir, "ADD", "c1", ipam, tmp_path).ok
    assert call(bin_dir, "ADD", "c2", ipam, tmp_path).ok
    full = call(bin_dir, "ADD", "c3", ipam, tmp_path)  # a /30 has two addresses
    assert not full.ok
    assert call(bin_dir, "DEL", "c1", ipam, tmp_path).ok
    got = lines(log)
    assert [(g["command"], g["containerID"], g["ifname"], g["level"]) for g in got] == [
        ("ADD", "c1", "net1", "verbose"), ("ADD", "c2", "net1", "verbose"), ("ADD", "c3", "net1", "error"),
        ("DEL", "c1", "net1", "verbose")]
    assert got[0]["ips"] == ["192.0.2.1/30"] and got[1]["ips"] == ["192.0.2.2/30"]
    assert got[2]["code"] == 102 and "no free address" in got[2]["msg"]
    assert all(g["time"].endswith("Z") and g["network"] == "net-log" for g in got)


def test_error_level_logs_only_failures_and_panic_nothing(bin_dir, tmp_path):
    log = tmp_path / "errors.log"
    assert call(bin_dir, "ADD", "c1", {"log_file": str(log), "log_level": "error"}, tmp_path).ok
    bad = call(bin_dir, "ADD", "c2", {"log_file": str(log), "log_level": "error"}, tmp_path, rng="192.0.2.0/33")
    assert not bad.ok
    got = lines(log)
    assert [(g["command"], g["containerID"], g["code"]) for g in got] == [("ADD", "c2", bad.output["code"])]
    quiet = tmp_path / "panic.log"
    call(bin_dir, "ADD", "c3", {"log_file": str(quiet), "log_level": "panic"}, tmp_path, rng="192.0.2.0/33")
    assert not quiet.exists()


def test_no_log_file_writes_nothing_and_an_unwritable_one_only_warns(bin_dir, tmp_path):
    assert call(bin_dir, "ADD", "c1", {}, tmp_path).ok
    assert not any(p.suffix == ".log" for p in tmp_path.iterdir())
    done = call(bin_dir, "ADD", "c2", {"log_file": str(tmp_path / "no-such-dir" / "w.log")}, tmp_path)
    assert done.ok  # the address is still handed out
    assert "ipam.log_file" in done.stderr and "cannot write" in done.stderr


def test_a_symlink_planted_at_the_log_path_is_not_followed_and_the_add_succeeds(bin_dir, tmp_path):
    target = tmp_path / "etc-somefile"
    target.write_text("precious\n")
    (tmp_path / "w.log").symlink_to(target)
    done = call(bin_dir, "ADD", "c1", {"log_file": str(tmp_path / "w.log")}, tmp_path)
    assert done.ok, done
    assert "ipam.log_file" in done.stderr and "refused, not written" in done.stderr and "symbolic link" in done.stderr
    assert target.read_text() == "precious\n"


def test_a_nul_byte_in_log_file_is_code_7_before_anything_is_committed(bin_dir, tmp_path):
    import sqlite3

    done = call(bin_dir, "ADD", "c1", {"log_file": str(tmp_path / "w\0.log")}, tmp_path)
    assert not done.ok and done.output["code"] == 7 and "NUL" in done.output["msg"], done
    assert "Traceback" not in done.stderr
    db = tmp_path / "w.db"
    assert not db.exists() or sqlite3.connect(db).execute("SELECT count(*) FROM allocations").fetchone() == (0,)


def test_a_symlink_at_sqlite_path_is_refused(bin_dir, tmp_path):
    (tmp_path / "w.db").symlink_to(tmp_path / "elsewhere.db")
    done = call(bin_dir, "ADD", "c1", {}, tmp_path)
    assert not done.ok and "symbolic link" in done.output["msg"], done
    assert not (tmp_path / "elsewhere.db").exists()



def test_a_call_reads_its_flat_file_once_though_its_log_line_needs_it_too(tmp_path, monkeypatch):
    """The log line's settings come from the flat file, which the command read first: it is not read again
    (it was, costing every call 0.03-0.05 ms).  The plugin runs in this process through the real dispatcher,
    its reads counted on their way to the real reader."""
    from cni_ipam.cni.skel import dispatch
    from cni_ipam.plugins import whereabouts

    flat, log = tmp_path / "flat.conf", tmp_path / "w.log"
    flat.write_text(json.dumps({"log_file": str(log)}))
    reads = []
    real = whereabouts._read_json
    monkeypatch.setattr(whereabouts, "_read_json", lambda path: reads.append(path) or real(path))
    config = {"cniVersion": "1.0.0", "name": "net-log", "type": "macvlan",
              "ipam": {"type": "whereabouts", "range": "192.0.2.0/30", "sqlite_path": str(tmp_path / "s" / "w.db"),
                       "configuration_path": str(flat)}}
    stdin = json.dumps(config).encode()
    for command in ("ADD", "CHECK", "DEL"):
        env = cni_env(command, "c1", "/run/netns/c1", "net1", "", "/nonexistent")
        outcome = dispatch(whereabouts.plugin(), env, lambda: stdin)
        assert outcome.exit_code == (1 if command == "CHECK" else 0), outcome  # CHECK: no prevResult
        assert reads == [str(flat)], (command, reads)
        reads.clear()
    assert [g["command"] for g in lines(log)] == ["ADD", "CHECK", "DEL"]
