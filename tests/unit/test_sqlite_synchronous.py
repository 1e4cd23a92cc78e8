"""The benchmark-only knob of the SQLite store: ``CNI_IPAM_SQLITE_SYNCHRONOUS`` (FULL by default)."""

import pytest

from cni_ipam.store.base import StoreError
from cni_ipam.store.sqlite import SYNCHRONOUS_ENV, SQLiteStore

LEVELS = {1: "NORMAL", 2: "FULL"}  # PRAGMA synchronous answers a number (sqlite.org/pragma.html#pragma_synchronous)


@pytest.mark.parametrize("value,expected", [(None, "FULL"), ("", "FULL"), ("FULL", "FULL"), ("NORMAL", "NORMAL")])
def test_level_follows_the_environment(tmp_path, monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(SYNCHRONOUS_ENV, raising=False)
    else:
        monkeypatch.setenv(SYNCHRONOUS_ENV, value)
    store = SQLiteStore(str(tmp_path / "wa.db"))
    try:
        assert LEVELS[store.db.execute("PRAGMA synchronous").fetchone()[0]] == expected
    finally:
        store.close()


@pytest.mark.parametrize("value", ["OFF", "normal", "0"])
def test_other_values_are_refused(tmp_path, monkeypatch, value):
    monkeypatch.setenv(SYNCHRONOUS_ENV, value)
    with pytest.raises(StoreError, match="expected FULL"):
        SQLiteStore(str(tmp_path / "wa.db"))
