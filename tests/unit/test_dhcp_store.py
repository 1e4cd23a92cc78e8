"""Lease files: atomic writes, reading back, bad files moved aside."""

from __future__ import annotations

import os

from cni_ipam.dhcp.store import LeaseStore, file_name


def test_save_load_delete(tmp_path):
    store = LeaseStore(str(tmp_path / "leases"))
    assert oct(os.stat(store.directory).st_mode & 0o777) == "0o700"
    store.save("c1/net/eth0", {"a": 1})
    store.save("c2/net/eth0", {"a": 2})
    store.save("c1/net/eth0", {"a": 3})
    loaded = {record["key"]: record["a"] for _, record, _ in store.load_all()}
    assert loaded == {"c1/net/eth0": 3, "c2/net/eth0": 2}
    assert oct(os.stat(store.path("c1/net/eth0")).st_mode & 0o777) == "0o600"
    assert store.delete("c1/net/eth0") and not store.delete("c1/net/eth0")
    assert [r["key"] for _, r, _ in store.load_all()] == ["c2/net/eth0"]


def test_file_names_are_safe_and_distinct():
    assert "/" not in file_name("a/b/c") and file_name("a/b/c") != file_name("a/b/d")


def test_bad_files_are_reported_and_quarantined_and_tmp_files_removed(tmp_path):
    store = LeaseStore(str(tmp_path))
    store.save("good/n/e", {"x": 1})
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "nokey.json").write_text("{}")
    (tmp_path / "x.json.tmp.1.2").write_text("half")
    found = store.load_all()
    bad = {os.path.basename(path): error for path, record, error in found if record is None}
    assert set(bad) == {"broken.json", "nokey.json"}
    assert not (tmp_path / "x.json.tmp.1.2").exists()
    for path, record, _ in found:
        if record is None:
            store.quarantine(path)
    assert (tmp_path / "broken.json.bad").exists()
    assert [r["key"] for _, r, _ in store.load_all()] == ["good/n/e"]
