"""store/__init__.py: a store from config settings, imported lazily, and who keeps it open."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from cni_ipam.config.whereabouts import store_settings as parse  # the datastore's settings
from cni_ipam.store.base import StoreError
from cni_ipam.store import KeptOpen, OpenPerCall, never_created, open_store
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
    code = "import sys, cni_ipam.store; print(sorted(m for m in sys.modules if m.startswith('cni_ipam.store')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['cni_ipam.store']"


def test_per_call_closes_after_the_call(tmp_path):
    settings = sqlite_settings(tmp_path)
    once = OpenPerCall().open(settings)
    OpenPerCall().done(once)
    with pytest.raises(StoreError, match="closed"):
        once.allocations()


def test_kept_open_lends_one_store_per_call_and_reuses_it_across_threads(tmp_path):
    opened = []
    kept = KeptOpen(opened=opened.append)
    settings = sqlite_settings(tmp_path)
    first = kept.open(settings)
    second = kept.open(sqlite_settings(tmp_path))  # equal settings while the first is lent out: another store
    assert second is not first and len(opened) == 2
    kept.done(second)
    kept.done(first)
    other = []

    def call():  # another thread (the agent serves each connection on a new one) gets a waiting store
        store = kept.open(settings)
        with store.transaction():
            store.allocations()
        other.append(store)
        kept.done(store)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert other[0] in (first, second) and len(opened) == 2
    kept.close()
    with pytest.raises(StoreError, match="closed"):
        first.allocations()


def test_kept_open_keeps_at_most_idle_stores_closing_the_least_recently_used(tmp_path):
    kept = KeptOpen(idle=2)
    settings = [parse({"datastore": "sqlite", "sqlite_path": str(tmp_path / name / "wb.db")}) for name in "abc"]
    stores = [kept.open(s) for s in settings]
    for store in stores:
        kept.done(store)
    with pytest.raises(StoreError, match="closed"):
        stores[0].allocations()  # a, the least recently used, was closed
    assert kept.open(settings[2]) is stores[2] and kept.open(settings[1]) is stores[1]
    kept.close()


def test_kept_open_opens_anew_when_the_file_was_replaced(tmp_path):
    """A store removed by hand is created again by the next plugin call: the agent must not keep writing to the
    removed file."""
    kept = KeptOpen()
    settings = sqlite_settings(tmp_path)
    first = kept.open(settings)
    kept.done(first)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(settings.sqlite_path + suffix):
            os.unlink(settings.sqlite_path + suffix)
    again = kept.open(settings)
    assert again is not first and os.path.exists(settings.sqlite_path)
    kept.done(again)
    kept.close()


def test_kept_open_opens_anew_when_a_failed_call_left_a_transaction_open(tmp_path):
    """A COMMIT that fails (say "database is locked") leaves SQLite inside the transaction; the next call must
    not inherit it."""
    kept = KeptOpen()
    settings = sqlite_settings(tmp_path)
    first = kept.open(settings)
    first.db.execute("BEGIN IMMEDIATE")  # what a failed COMMIT leaves
    kept.done(first)
    again = kept.open(settings)
    assert again is not first
    with again.transaction():  # and the store is not locked by the abandoned one: it was closed
        again.allocations()
    kept.done(again)
    kept.close()


# --- the WAL between plugin processes (cni_ipam.store.sqlite, "The WAL between processes") ---

def test_calls_that_leave_the_store_open_keep_the_wal_short_and_every_commit(tmp_path):
    """A call done with the store past WAL_CHECKPOINT_BYTES of WAL empties it into the database; none is lost."""
    from cni_ipam.store import sqlite
    from cni_ipam.store.base import Allocation

    sizes = []
    try:
        for n in range(1, 81):
            store = open_store(sqlite_settings(tmp_path))
            with store.transaction():
                assert store.claim(Allocation("net1/10.0.0.0/16", 0x0A000000 + n, 4, "net1", f"c{n}", "eth0"))
            store.leave_open()
            sizes.append(os.path.getsize(store.path + "-wal"))
    finally:
        while sqlite._LEFT_OPEN:  # what the end of each plugin process does
            sqlite._LEFT_OPEN.pop().close()
    assert 0 in sizes and max(sizes) <= sqlite.WAL_CHECKPOINT_BYTES + (64 << 10), sizes  # one call: a few pages
    again = open_store(sqlite_settings(tmp_path))
    try:
        assert [a.container_id for a in again.allocations()] == [f"c{n}" for n in range(1, 81)]
    finally:
        again.close()


def test_a_process_that_ends_with_exit_leaves_the_wal_for_the_next(tmp_path):
    """OpenPerCall(exits=True), as in an installed plugin: no checkpoint, no deleted -wal at the end; the next
    process reads the commit from the WAL."""
    settings = sqlite_settings(tmp_path)
    code = ("import posix, sys\n"
            "from cni_ipam.config.whereabouts import store_settings\n"
            "from cni_ipam.store import OpenPerCall\n"
            "from cni_ipam.store.base import Allocation\n"
            "stores = OpenPerCall(exits=True)\n"
            "store = stores.open(store_settings({'datastore': 'sqlite', 'sqlite_path': sys.argv[1]}))\n"
            "with store.transaction():\n"
            "    store.claim(Allocation('net1/10.0.0.0/24', 0x0A000001, 4, 'net1', 'c1', 'eth0'))\n"
            "stores.done(store)\n"
            "del store, stores\n"
            "posix._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, settings.sqlite_path], check=True)
    for suffix in ("-wal", "-shm"):
        assert os.stat(settings.sqlite_path + suffix).st_mode & 0o777 == 0o600
    assert os.path.getsize(settings.sqlite_path + "-wal") > 0
    store = open_store(settings)
    try:
        assert [a.address for a in store.allocations()] == ["10.0.0.1"]
    finally:
        store.close()
    assert not os.path.exists(settings.sqlite_path + "-wal")  # a process that goes on closes, as before
