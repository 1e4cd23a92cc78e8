"""The SQLite store's directory and files are private (cni_ipam.store.sqlite): other local users can neither read
the allocations nor lock the store.

The directory left by a Kubernetes ``hostPath`` of type ``DirectoryOrCreate``
(deploy/agent, the reconciler) is an empty directory, mode 0755, made by
root: kubelet's ``MkdirAll(path, 0755)`` (kubernetes pkg/volume/hostpath
``hostPathTypeChecker.MakeDir``).  Each test builds that, or the leftovers of
an earlier version, in a directory ``nobody`` may traverse, and probes it as
``nobody``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat

import pytest
from unprivileged import as_nobody, open_directory, outcome

from cni_ipam.store.base import StoreError
from cni_ipam.store.sqlite import SQLiteStore

STORE_FILES = ("wb.db", "wb.db-wal", "wb.db-shm", "wb.db.lock")


@pytest.fixture
def shared():
    """A directory every user may traverse, like /var/lib/cni on a node."""
    path = open_directory()
    yield path
    shutil.rmtree(path)


def host_path_directory(parent: str) -> str:
    """What ``hostPath: {type: DirectoryOrCreate}`` leaves: an empty directory, mode 0755, owned by root."""
    path = os.path.join(parent, "whereabouts")
    os.mkdir(path)
    os.chmod(path, 0o755)
    return path


def opened(path: str) -> SQLiteStore:
    """A store as a plugin leaves it between two calls of another plugin: open, with its -wal and -shm."""
    store = SQLiteStore(path)
    with store.transaction():
        store.allocations()
    return store


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def read_and_lock(directory: str) -> dict:
    """What ``nobody`` can do to the store: read the database, and read-lock -shm as a WAL reader would
    (sqlite's src/os_unix.c takes its WAL read locks on bytes 120..127 of the -shm file)."""
    def lock_shm(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 8, 120)
        finally:
            os.close(fd)

    return {"read the database": outcome(lambda p: open(p, "rb").read(1), os.path.join(directory, "wb.db")),
            "lock -shm": outcome(lock_shm, os.path.join(directory, "wb.db-shm")),
            "read a file beside the directory": outcome(lambda p: open(p, "rb").read(1),
                                                        os.path.join(os.path.dirname(directory), "readable"))}


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_host_path_directory_is_made_private_and_nobody_can_read_or_lock_the_store(shared, umask):
    directory = host_path_directory(shared)
    with open(os.path.join(shared, "readable"), "w") as control:  # nobody reaches the parent: the probe works
        control.write("x")
    os.chmod(os.path.join(shared, "readable"), 0o644)
    previous = os.umask(umask)
    try:
        store = opened(os.path.join(directory, "wb.db"))
    finally:
        os.umask(previous)
    try:
        assert mode(directory) == 0o700
        assert {name: mode(os.path.join(directory, name)) for name in STORE_FILES} == dict.fromkeys(STORE_FILES, 0o600)
        assert as_nobody(read_and_lock, directory) == {
            "read the database": "EACCES", "lock -shm": "EACCES", "read a file beside the directory": "ok"}
    finally:
        store.close()


def test_files_an_earlier_version_left_readable_are_narrowed_to_0600(shared):
    directory = host_path_directory(shared)
    path = os.path.join(directory, "wb.db")
    first = opened(path)
    for name in STORE_FILES:  # what 0.x left: files 0644 in a 0755 directory
        os.chmod(os.path.join(directory, name), 0o644)
    os.chmod(directory, 0o755)
    second = opened(path)
    try:
        assert mode(directory) == 0o700
        assert {name: mode(os.path.join(directory, name)) for name in STORE_FILES} == dict.fromkeys(STORE_FILES, 0o600)
    finally:
        second.close()
        first.close()


def test_a_shared_directory_is_refused_naming_it_and_what_to_do(shared):
    """A directory holding other files may be shared on purpose: its mode is not ours to change."""
    with open(os.path.join(shared, "notes.txt"), "w"):
        pass
    path = os.path.join(shared, "wb.db")
    with pytest.raises(StoreError) as refused:
        SQLiteStore(path)
    message = str(refused.value)
    assert f"sqlite_path {path!r}" in message and f"its directory {shared} is mode 0755" in message
    assert "notes.txt" in message and f"chmod 0700 {shared}" in message
    assert sorted(os.listdir(shared)) == ["notes.txt"] and mode(shared) == 0o755  # nothing created, nothing changed


def test_a_directory_of_another_user_is_refused(shared):
    directory = os.path.join(shared, "theirs")
    os.mkdir(directory, 0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(StoreError, match=f"its directory {directory} is owned by uid 65534"):
        SQLiteStore(os.path.join(directory, "wb.db"))


def test_a_store_file_planted_by_another_user_is_refused(shared):
    """Whoever owns -shm can hold it open and locked whatever its mode later becomes."""
    directory = host_path_directory(shared)
    shm = os.path.join(directory, "wb.db-shm")
    with open(shm, "w"):
        pass
    os.chown(shm, 65534, 65534)
    with pytest.raises(StoreError, match=r"wb\.db-shm \(owned by uid 65534\)"):
        SQLiteStore(os.path.join(directory, "wb.db"))


def test_a_private_directory_may_hold_other_files(tmp_path):
    """A 0700 directory of ours is private already, whatever else it holds (pytest's tmp_path is one)."""
    (tmp_path / "other.txt").write_text("x")
    store = opened(str(tmp_path / "wb.db"))
    store.close()
    assert mode(tmp_path / "wb.db") == 0o600
