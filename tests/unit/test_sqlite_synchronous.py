"""The benchmark-only knob of the SQLite store: ``CNI_IPAM_SQLITE_SYNCHRONOUS`` (FULL by default).

FULL's promise (a commit is on disk before the command answers) is kept by an fsync of the WAL after the flock
is dropped, not by SQLite at COMMIT under it (cni_ipam.store.sqlite, "Syncing after the lock"): the connection
runs ``synchronous=NORMAL`` either way, and only FULL syncs after the transaction.
"""

import os

import pytest

from cni_ipam.store import sqlite
from cni_ipam.store.base import Allocation, StoreError
from cni_ipam.store.sqlite import SYNCHRONOUS_ENV, SQLiteStore

LEVELS = {1: "NORMAL", 2: "FULL"}  # PRAGMA synchronous answers a number (sqlite.org/pragma.html#pragma_synchronous)


def _synced_during_transaction(store, monkeypatch) -> list:
    """(what, whether the flock was held) for each fsync while a claim commits; fsync itself still runs."""
    seen, real_fsync = [], os.fsync

    def fsync(fd):
        held = store._lock_fd is not None
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), held))
        real_fsync(fd)

    monkeypatch.setattr(sqlite.posix, "fsync", fsync)
    with store.transaction():
        assert store.claim(Allocation("net1/10.0.0.0/16", 0x0A000001, 4, "net1", "c1", "eth0"))
    return seen


@pytest.mark.parametrize("value,expected", [(None, "FULL"), ("", "FULL"), ("FULL", "FULL"), ("NORMAL", "NORMAL")])
def test_level_follows_the_environment(tmp_path, monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(SYNCHRONOUS_ENV, raising=False)
    else:
        monkeypatch.setenv(SYNCHRONOUS_ENV, value)
    store = SQLiteStore(str(tmp_path / "wa.db"))
    try:
        assert LEVELS[store.db.execute("PRAGMA synchronous").fetchone()[0]] == "NORMAL"  # no fsync under the lock
        synced = _synced_during_transaction(store, monkeypatch)
    finally:
        store.close()
    if expected == "FULL":  # the WAL, then its directory, both once the lock is dropped
        assert synced == [(str(tmp_path / "wa.db-wal"), False), (str(tmp_path), False)]
    else:
        assert synced == []


@pytest.mark.parametrize("value", ["OFF", "normal", "0"])
def test_other_values_are_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv(SYNCHRONOUS_ENV, value)
    with pytest.raises(StoreError, match="expected FULL"):
        SQLiteStore(str(tmp_path / "wa.db"))
