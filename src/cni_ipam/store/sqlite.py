"""The embedded default store: one SQLite file on one node.

Settings that measurements on this project chose (tests/contract and
tests/integration/test_whereabouts_concurrency.py hold them): WAL journal,
FULL durability (a lost commit after a power cut could hand an address out
twice; kept by an fsync after the lock, see "Syncing after the lock"),
``BEGIN IMMEDIATE`` (a deferred transaction that upgrades to a write fails
under contention instead of waiting), and an ``flock`` on a
side lock file taken first, because SQLite's own busy handler lets some
waiters starve for seconds while the kernel queues flock waiters.

``CNI_IPAM_SQLITE_SYNCHRONOUS=NORMAL`` in the environment of the process
that opens the store (the plugin, or the node agent) turns the fsync after
each transaction off (see "Syncing after the lock" below), for benchmarks
that compare with stores that never fsync (Go's host-local); any other value than ``FULL`` (the default) or
``NORMAL`` is refused.  Never set it on a node: see above.

The WAL outlives the process (issue 17): a plugin process does not close
its connection, so its ``-wal`` and ``-shm`` stay (see "The WAL between
processes" below).

WAL needs shared memory on a local filesystem, so this store refuses a
network filesystem: for a cluster use the etcd store.  The directory and
the files are private to the user the plugins run as (the section
"Private to root" below says why and how).

What no plugin call needs on a node where the store exists is kept out of
this module, which every plugin call loads: a new store's directory in
:mod:`.sqlite_setup`, ``cni-ipam verify``'s check in :mod:`.sqlite_verify`.
"""

from __future__ import annotations

import posix

from ..net import pool_version
from ..oslite import S_IMODE, S_ISLNK, S_ISREG, abspath, basename, dirname, exists, getenv, join
from .base import MAX_HINTS_PER_POOL, Allocation, Store, StoreError, merge_unique


def _import_sqlite():
    """The ``_sqlite3`` C module alone: the ``sqlite3`` package adds ``datetime`` and its adapters (2 ms per
    plugin call).

    ``_sqlite3`` itself imports ``functools`` when it loads, only to take
    ``lru_cache`` for its statement cache (CPython Modules/_sqlite/module.c,
    ``load_functools_lru_cache``, 3.11-3.13); ``functools`` brings
    ``collections``, ``operator``, ``types``... about 3 ms per plugin call.
    When nothing has loaded ``functools`` yet (a plugin process), it gets,
    for that one import, a stand-in module whose ``lru_cache(maxsize)``
    builds the same C cache that ``functools.lru_cache`` builds
    (Lib/functools.py: ``_lru_cache_wrapper(user_function, maxsize, typed,
    _CacheInfo)``), so statements are cached exactly as before.
    """
    import sys

    if "functools" in sys.modules:
        import _sqlite3
        return _sqlite3
    from _functools import _lru_cache_wrapper

    stand_in = type(sys)("functools")
    stand_in.lru_cache = lambda maxsize=128, typed=False: (
        lambda function: _lru_cache_wrapper(function, maxsize, typed, tuple))
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3
    finally:
        del sys.modules["functools"]
    return _sqlite3


try:
    sqlite3 = _import_sqlite()
except ImportError:  # pragma: no cover - an interpreter without the private module
    import sqlite3

SCHEMA_VERSION = "1"
PAGE = 256

SPACE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS allocations_space ON allocations (space, ip) WHERE space IS NOT NULL"
SCHEMA = """
CREATE TABLE IF NOT EXISTS allocations (
    pool TEXT NOT NULL,          -- '<network_name>/<range CIDR>'
    ip BLOB NOT NULL,            -- family byte (4 or 6) + big-endian address: sorts numerically
    space TEXT,                  -- network_name when overlapping-range checks are on, else NULL
    network TEXT NOT NULL,       -- the CNI network name
    container_id TEXT NOT NULL,
    ifname TEXT NOT NULL,
    pod TEXT NOT NULL DEFAULT '',
    netns TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    PRIMARY KEY (pool, ip)
) WITHOUT ROWID;
""" + SPACE_INDEX + """;
CREATE INDEX IF NOT EXISTS allocations_attachment ON allocations (network, container_id, ifname);
CREATE INDEX IF NOT EXISTS allocations_pod ON allocations (pod, ifname) WHERE pod != '';
CREATE TABLE IF NOT EXISTS hints (
    key TEXT PRIMARY KEY,        -- the range's fingerprint, within its pool
    pool TEXT NOT NULL,
    space TEXT,
    value BLOB NOT NULL          -- every allocatable address below it is held
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

COLUMNS = "pool, ip, space, network, container_id, ifname, pod, netns, node, created"
SYNCHRONOUS_ENV = "CNI_IPAM_SQLITE_SYNCHRONOUS"

# -- The WAL between processes (issue 17) -----------------------------------------------------------------------------
#
# Closing the last connection to a WAL database checkpoints the WAL into the
# database and deletes ``-wal`` and ``-shm`` (sqlite's src/wal.c,
# sqlite3WalClose).  A plugin process is the only connection most of the
# time, so each call paid for a new WAL: creating ``-wal`` and ``-shm``, an
# fsync of the new WAL's header, then at close a checkpoint (two more
# fsyncs) and two unlinks: five fsyncs per ADD (with the commit's and the
# directory's) and about 0.3 ms of CPU.
#
# So a plugin process leaves its connection open when it exits
# (:meth:`SQLiteStore.leave_open`; the process ends with ``_exit``, see
# cni_ipam.cni.skel.in_launcher): to SQLite that is a process that died
# after its last commit, which WAL is made for.  Nothing is less durable: a
# commit is in the WAL and fsynced (``synchronous=FULL``) before COMMIT
# returns, and the WAL is part of the database until it is checkpointed.
#
# The next process to open the store, finding no other connection, reads the
# whole WAL to rebuild its index in ``-shm`` (about 2 us of CPU a page), and
# that rebuilt index counts no page as checkpointed yet, so SQLite's own
# automatic checkpoint would copy the whole WAL again at every commit and
# never start it anew.  Instead a plugin process that finds the WAL longer
# than WAL_CHECKPOINT_BYTES when it is done checkpoints it and truncates it
# to nothing (``wal_checkpoint(TRUNCATE)``), under our flock: with an ADD
# writing about five pages, that is one call in twelve or so, with three more
# fsyncs (the WAL, the database, the next WAL's header).  Processes that go
# on after a command (the node agent, the reconciler, tests) close their
# stores as before; while one holds the store open, SQLite's own automatic
# checkpoint keeps the WAL short, as the index in ``-shm`` stays valid.
#
# The checkpoint is run by the process that commits and finds the WAL past
# WAL_CHECKPOINT_BYTES, still holding the flock of its transaction: no second
# flock per call, and when many calls end together only one of them empties
# the WAL (each taking the lock again after the first would hold it for
# nothing).
#
# -- Syncing after the lock (issue 17) --------------------------------------------------------------------------------
#
# At 16 calls in flight, with SQLite's ``synchronous=FULL`` each COMMIT
# fsynced the WAL (and, once per connection, its directory) inside the flock,
# so every other call waited for the disk too: the lock was held about 7 ms
# for 0.8 ms of CPU.  Now the connection commits with ``synchronous=NORMAL``
# (the frames reach the WAL, no fsync) and the store fsyncs the WAL and then
# its directory right after the flock is dropped, before the command answers
# (:meth:`SQLiteStore._sync_wal`).  FULL's promise is kept: a command that
# answered has its commit on disk.  WAL frames are appended in commit order
# and recovery keeps the longest valid prefix (checksums chain frame to
# frame), so one fsync makes durable this commit and every earlier one,
# among them any this transaction read; a commit not yet synced when the
# power goes is one no caller was told about, and SQLite's NORMAL keeps the
# database consistent (it still syncs around each checkpoint).  A read-only
# transaction syncs too: what it read may be another call's commit not yet
# synced.  Concurrent fsyncs of one file are merged by the filesystem's
# journal.  The store is created with the environment's level (FULL by
# default), so the switch to WAL is synced; ``CNI_IPAM_SQLITE_SYNCHRONOUS=
# NORMAL`` skips the sync after the lock as well (benchmarks only).
WAL_CHECKPOINT_BYTES = 256 << 10  # about 64 pages of 4 KiB: at most 0.15 ms to read back at an open
_LEFT_OPEN = []  # the stores a plugin process leaves open: referenced, so no garbage collection closes them


def synchronous_mode() -> str:
    """The ``PRAGMA synchronous`` level: FULL unless the environment asks for NORMAL (benchmarks only)."""
    mode = getenv(SYNCHRONOUS_ENV) or "FULL"
    if mode not in ("FULL", "NORMAL"):
        raise StoreError(f"{SYNCHRONOUS_ENV}={mode!r}: expected FULL (the default) or NORMAL")
    return mode


# -- Private to root (issue 14) --------------------------------------------------------------------------------------
#
# The SQLite store's directory and files are private to the user the plugins run as (root on a node).
#
# Why: whoever can read ``<sqlite_path>`` reads every allocation, and whoever
# can open ``<sqlite_path>-shm`` can hold a read lock on it that makes every
# ADD wait for the busy timeout and then fail.  So the directory is mode 0700
# and the files (the database, ``-wal``, ``-shm``, ``-journal`` and our
# ``.lock``) are mode 0600, all owned by us.
#
# The policy, for a directory that is not private yet:
#
# * one we create is made 0700;
# * one we own that holds nothing but this store's files is made 0700: that is
#   what a Kubernetes ``hostPath`` of type ``DirectoryOrCreate`` leaves (an
#   empty directory, mode 0755), and what earlier versions left;
# * anything else (another owner, or other files beside the store, as in a
#   shared directory such as ``/tmp`` or ``/var/lib/cni``) is refused: changing
#   its mode could break whoever shares it, and leaving it open lets local users
#   read or lock the store.  The error names the directory and what to do.
#
# Existing files of ours are then narrowed to 0600.  SQLite gives ``-wal``,
# ``-journal`` and ``-shm`` the database file's mode when it creates them
# (``findCreateFileMode`` and ``unixOpenSharedMemory`` in sqlite's
# src/os_unix.c), so a 0600 database keeps them 0600 whatever the umask.  Modes
# are changed by path, never by opening the files: closing any descriptor of a
# database file drops the POSIX locks SQLite's connections in this process hold
# on it.  Paths are safe to use once the directory is private, because nobody
# else can then swap what they name.
#
# Every open checks (one stat of the directory, one lstat per file); what runs
# only while the directory is not private yet, or the store is new, is in
# cni_ipam.store.sqlite_setup, imported then alone.

SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")  # the store's files, after the database's own name


def own_names(path: str) -> set:
    """The names the store at ``path`` keeps in its directory."""
    base = basename(path)
    return {base + suffix for suffix in SUFFIXES}


def make_private(path: str, found=None) -> None:
    """Make the directory of the store at ``path`` and its existing files private, or raise StoreError saying
    why not and what to do.  ``found``: the database file's ``lstat`` when the caller just took it (None: not
    there then; its creator narrows it), so it is not taken twice."""
    directory = dirname(abspath(path)) or "."
    names = own_names(path)
    _private_directory(path, directory, names)
    database = basename(path)
    for name in sorted(names):
        if name != database:
            narrow(join(directory, name))
        elif found is not None:
            _narrow_found(join(directory, name), found)


def _private_directory(path: str, directory: str, names: set) -> None:
    info = posix.stat(directory)
    mode, owner = S_IMODE(info.st_mode), info.st_uid
    if owner == posix.geteuid() and not mode & 0o077:
        return
    from .sqlite_setup import private_directory  # not private yet: once, on a node's first calls

    private_directory(path, directory, names, mode, owner)


def narrow(file: str) -> None:
    """Mode 0600 (at most) for a regular file of ours at ``file``; nothing for a missing file or a symlink."""
    try:
        _narrow_found(file, posix.lstat(file))
    except FileNotFoundError:  # not there, or removed by SQLite's last close meanwhile
        return


def _narrow_found(file: str, info) -> None:
    """:func:`narrow`, ``info`` being the file's ``lstat``."""
    mode = S_IMODE(info.st_mode)
    if mode & 0o077 and S_ISREG(info.st_mode) and info.st_uid == posix.geteuid():  # private already: no syscall
        try:
            posix.chmod(file, mode & 0o700)
        except FileNotFoundError:  # removed by SQLite's last close meanwhile
            return


def encode_ip(ip: int, version: int) -> bytes:
    return bytes((version,)) + ip.to_bytes(4 if version == 4 else 16, "big")


def decode_ip(blob: bytes) -> tuple:
    return int.from_bytes(blob[1:], "big"), blob[0]


def _open_lock(path: str) -> int:
    """The side lock file's descriptor; one that cannot be opened is a StoreError naming it (retry: an
    operator can fix its owner or mode while the runtime retries)."""
    try:
        return posix.open(path + ".lock", posix.O_RDWR | posix.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"SQLite store {path!r}: cannot open its lock file {path + '.lock'!r}: "
                         f"{exc.strerror or exc}", retry=True) from None


class _Transaction:
    """flock the side lock file, then ``BEGIN IMMEDIATE``; commit (and empty a long WAL) or roll back, drop the
    flock, then, at FULL, fsync the WAL and its directory."""

    def __init__(self, store: "SQLiteStore") -> None:
        self.store = store

    def __enter__(self):
        import fcntl

        self.store._lock_fd = _open_lock(self.store.path)
        fcntl.flock(self.store._lock_fd, fcntl.LOCK_EX)
        try:
            self.store._run("BEGIN IMMEDIATE")
        except StoreError:
            posix.close(self.store._lock_fd)
            self.store._lock_fd = None
            raise
        return self.store

    def __exit__(self, exc_type, exc, tb):
        try:
            self.store._run("COMMIT" if exc_type is None else "ROLLBACK")
            if exc_type is None:
                self.store._checkpoint_long_wal()
        finally:
            posix.close(self.store._lock_fd)  # closing drops the flock
            self.store._lock_fd = None
        if exc_type is None and self.store._sync_after:
            self.store._sync_wal()
        return False


class SQLiteStore(Store):
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self._lock_fd = None
        self._sync_after = False
        try:
            found = _lstat(path)  # the database file, if there: one lstat for what follows
            if found is None or (S_ISLNK(found.st_mode) and not exists(path)):
                from .sqlite_setup import new_directory  # once per node: the store is created

                new_directory(path)
            make_private(path, found)  # before SQLite creates a file in the directory
            # check_same_thread=False: the node agent hands an open store to one thread after another
            # (cni_ipam.store.KeptOpen), never to two at once.
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            if found is not None and S_ISREG(found.st_mode):  # narrowed above, not created now
                self._identity = found.st_dev, found.st_ino  # replaced since: stale() then reopens it, no harm
            else:
                narrow(path)  # a database just created has the umask's mode; its -wal and -shm copy this one
                self._identity = _identity(path)
            mode = synchronous_mode()
            # Commits run at NORMAL whatever the level: FULL's promise is kept with the fsync after the lock
            # (see "Syncing after the lock" above).  One PRAGMA per open: only creating the store runs at FULL.
            self.db.execute("PRAGMA synchronous=NORMAL")
            # user_version is set in the same transaction as the schema: a process killed while creating
            # the store (or a concurrent creator) leaves 0, and the next open finishes the job.
            if self.db.execute("PRAGMA user_version").fetchone()[0] != 1:
                self._create(mode)
            self._sync_after = mode == "FULL"
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {path!r}: {exc}", retry=_is_busy(exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store {path!r}: {exc.strerror or exc}") from None

    def _create(self, mode: str) -> None:
        """WAL and the schema, one process at a time: switching the journal mode fails at once with
        "database is locked" (no busy wait) while another process is switching it.  Both run at the
        environment's level ``mode`` (FULL by default), so the switch to WAL and the schema are synced: no
        fsync after the lock follows them."""
        import fcntl

        lock_fd = _open_lock(self.path)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if self.db.execute("PRAGMA user_version").fetchone()[0] != 1:
                self.db.execute(f"PRAGMA synchronous={mode}")
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta VALUES "
                                      f"('schema', '{SCHEMA_VERSION}'); PRAGMA user_version=1; COMMIT;")
                self.db.execute("PRAGMA synchronous=NORMAL")  # a failure above fails the open: no connection kept
        finally:
            posix.close(lock_fd)  # closing drops the flock

    def _sync_wal(self) -> None:
        """fsync the WAL, then its directory (as SQLite's FULL does once per connection): every commit this
        transaction made or read is on disk before the command answers.  A failed fsync fails the command."""
        directory = dirname(abspath(self.path)) or "."
        try:
            for name, flags in ((self.path + "-wal", posix.O_RDONLY), (directory, posix.O_RDONLY | posix.O_DIRECTORY)):
                try:
                    fd = posix.open(name, flags)
                except FileNotFoundError:  # no WAL: the last connection closed, its checkpoint synced the database
                    continue
                try:
                    posix.fsync(fd)
                finally:
                    posix.close(fd)  # a -wal descriptor: SQLite holds no POSIX lock on that file
        except OSError as exc:
            raise StoreError(f"SQLite store {self.path!r}: cannot sync {name!r}: {exc.strerror or exc}",
                             retry=True) from None

    def _run(self, sql: str, params=()):
        try:
            return self.db.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}", retry=_is_busy(exc)) from None

    def transaction(self):
        return _Transaction(self)

    def _scan(self, column: str, value: str, lo: bytes, hi: bytes):
        """Addresses of one pool or space in [lo, hi], a page of rows at a time."""
        sql = f"SELECT ip FROM allocations WHERE {column} = ? AND ip >= ? AND ip <= ? ORDER BY ip LIMIT {PAGE}"
        while True:
            rows = self._run(sql, (value, lo, hi)).fetchall()
            for (ip,) in rows:
                yield decode_ip(ip)[0]
            if len(rows) < PAGE:
                return
            lo = rows[-1][0] + b"\x00"  # just above the last one: blobs compare bytewise

    def held(self, pool, space, lo, hi):
        version = pool_version(pool)
        lo_b, hi_b = encode_ip(lo, version), encode_ip(hi, version)
        scans = [self._scan("pool", pool, lo_b, hi_b)]
        if space is not None:
            scans.append(self._scan("space", space, lo_b, hi_b))
        return merge_unique(scans)

    def claim(self, allocation: Allocation, hint=None) -> bool:
        import time

        created = allocation.created or time.time()
        try:
            self._run(f"INSERT INTO allocations ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (allocation.pool, encode_ip(allocation.ip, allocation.version), allocation.space,
                       allocation.network, allocation.container_id, allocation.ifname, allocation.pod,
                       allocation.netns, allocation.node, created))
        except sqlite3.IntegrityError:
            return False
        allocation.created = created
        if hint is not None:
            self.set_hint(hint[0], allocation.pool, allocation.space, hint[1])
        return True

    def claim_else_held(self, allocation: Allocation, hint, lo: int, hi: int):
        """The INSERT first, the read only if the address was held: the allocator's first candidate is the
        hint, nearly always free, so an ADD no longer reads its range before claiming (2 SELECTs fewer).  A
        failed INSERT aborts that statement only; the transaction (and its write lock) goes on, so the read
        that follows sees what made it fail."""
        if self.claim(allocation, hint):
            return True, None
        return False, self.held(allocation.pool, allocation.space, lo, hi)

    def release(self, allocation: Allocation) -> bool:
        ip = encode_ip(allocation.ip, allocation.version)
        gone = self._run("DELETE FROM allocations WHERE pool = ? AND ip = ? AND network = ? AND container_id = ? "
                         "AND ifname = ?", (allocation.pool, ip, allocation.network, allocation.container_id,
                                            allocation.ifname)).rowcount
        if gone:
            self._run("UPDATE hints SET value = ? WHERE (pool = ? OR space = ?) AND value > ? AND length(value) = ?",
                      (ip, allocation.pool, allocation.space, ip, len(ip)))
        return bool(gone)

    def update_owner(self, allocation, container_id, netns):
        moved = self._run("UPDATE allocations SET container_id = ?, netns = ? WHERE pool = ? AND ip = ? "
                          "AND network = ? AND container_id = ? AND ifname = ?",
                          (container_id, netns, allocation.pool, encode_ip(allocation.ip, allocation.version),
                           *allocation.attachment)).rowcount == 1
        if moved:
            allocation.container_id = container_id
            allocation.netns = netns
        return moved

    def find(self, network=None, container_id=None, ifname=None, pod=None):
        where, params = [], []
        for column, value in (("network", network), ("container_id", container_id), ("ifname", ifname),
                              ("pod", pod)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if pod:  # implies the pod index's own WHERE, so SQLite may use it: else it reads the network's every row
            where.append("pod != ''")
        sql = f"SELECT {COLUMNS} FROM allocations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_row(r) for r in self._run(sql + " ORDER BY pool, ip", params).fetchall()]

    def allocations(self):
        return self.find()

    def hint(self, key, pool, space):
        row = self._run("SELECT value FROM hints WHERE key = ?", (key,)).fetchone()
        return decode_ip(row[0])[0] if row else None

    def set_hint(self, key, pool, space, value):
        value = encode_ip(value, pool_version(pool))
        if self._run("UPDATE hints SET pool = ?, space = ?, value = ? WHERE key = ?", (pool, space, value, key)).rowcount:
            return
        self._run("INSERT INTO hints VALUES (?, ?, ?, ?)", (key, pool, space, value))
        if self._run("SELECT count(*) FROM hints WHERE pool = ?", (pool,)).fetchone()[0] > MAX_HINTS_PER_POOL:
            self._run("DELETE FROM hints WHERE pool = ? AND key != ?", (pool, key))

    def list_hints(self):
        rows = self._run("SELECT key, pool, space, value FROM hints ORDER BY key").fetchall()
        return [(key, pool, space, decode_ip(value)[0]) for key, pool, space, value in rows]

    def check(self, progress=None) -> list:
        """An allocation and its address-space claim are one row, so what can go wrong is a row outside its
        pool's CIDR, one that breaks the schema, and, once the unique index is gone, duplicates in a space
        (:mod:`.sqlite_verify`, loaded here only: no plugin command checks)."""
        from . import sqlite_verify

        return sqlite_verify.check(self, progress)

    def stale(self) -> bool:
        """True when ``path`` no longer names the file this store has open (deleted, or replaced by another), or
        when a failed COMMIT or ROLLBACK left the connection inside a transaction."""
        try:
            return self.db.in_transaction or _identity(self.path) != self._identity
        except OSError:
            return True

    def close(self) -> None:
        self.db.close()

    def leave_open(self) -> None:
        """The process ends now (``_exit``): keep the connection, so that its WAL is neither checkpointed nor
        deleted (see "The WAL between processes" above)."""
        _LEFT_OPEN.append(self)

    def _checkpoint_long_wal(self) -> None:
        """After a commit, with the flock still held: a WAL longer than WAL_CHECKPOINT_BYTES is checkpointed and
        emptied (see "The WAL between processes" above).  The commit is done: a checkpoint that fails or finds
        readers in the way is left to a later one."""
        try:
            if posix.stat(self.path + "-wal").st_size > WAL_CHECKPOINT_BYTES:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except (OSError, sqlite3.Error):
            return


def _lstat(path: str):
    """``path``'s lstat, or None where :func:`~cni_ipam.oslite.exists` finds nothing."""
    try:
        return posix.lstat(path)
    except (OSError, ValueError):
        return None


def _identity(path: str) -> tuple:
    info = posix.stat(path)
    return info.st_dev, info.st_ino


def _row(row) -> Allocation:
    pool, ip, space, network, container_id, ifname, pod, netns, node, created = row
    address, version = decode_ip(ip)
    return Allocation(pool, address, version, network, container_id, ifname, space=space, pod=pod,
                      netns=netns, node=node, created=created)


def _is_busy(exc) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)
