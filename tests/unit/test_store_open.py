"""store/open.py: a store from config settings, imported lazily, and who keeps it open."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from cni_ipam.config.datastore import parse
from cni_ipam.store.base import StoreError
from cni_ipam.store.open import KeptPerThread, OpenPerCall, never_created, open_store
from cni_ipam.store.sqlite import SQLiteStore


def sqlite_settings(tmp_path):
    return parse({"datastore": "sqlite", "sqlite_path": str(tmp_path / "db" / "wb.db")})


def test_sqlite_settings_open_that_file_and_a_missing_file_is_never_created(tmp_path):
    settings = sqlite_settings(tmp_path)
    assert never_created(settings)
    store = open_store(settings)
    try:
        assert isinstance(store, SQLiteStore) and store.path == settings.sqlite_path
    finally:
        store.close()
    assert not never_created(settings)
    assert not never_created(parse({"etcd_endpoints": ["http://127.0.0.1:2379"]}))  # a cluster always exists


def test_opening_imports_no_backend_until_one_is_opened():
    """A plugin process pays only for the backend it uses (SQLite alone is 4-5 ms)."""
    code = "import sys, cni_ipam.store.open; print(sorted(m for m in sys.modules if m.startswith('cni_ipam.store')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['cni_ipam.store', 'cni_ipam.store.open']"


def test_per_call_closes_and_kept_per_thread_reuses_within_a_thread_only(tmp_path):
    settings = sqlite_settings(tmp_path)
    once = OpenPerCall().open(settings)
    OpenPerCall().done(once)
    with pytest.raises(StoreError, match="closed"):
        once.allocations()

    kept = KeptPerThread()
    first = kept.open(settings)
    kept.done(first)
    assert kept.open(sqlite_settings(tmp_path)) is first  # equal settings, same store, still open
    first.allocations()
    other = []
    thread = threading.Thread(target=lambda: other.append(kept.open(settings)))
    thread.start()
    thread.join()
    assert other[0] is not first  # a SQLite connection belongs to the thread that opened it
    first.close()

