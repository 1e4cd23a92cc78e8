"""trusted_paths: files a tenant-written config names are never reached through another user's links.

Run as root (the plugins' user on a node), links and directories are given
to another uid with ``lchown``; as another user only the cases that need no
second user run.
"""

from __future__ import annotations

import os
import uuid

import pytest

from cni_ipam.trusted_paths import UntrustedPath, check_store_path, open_log

OTHER_UID = 4242
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def append(path, text="line\n") -> None:
    fd = open_log(str(path))
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_a_plain_log_path_is_created_0644_and_appended(tmp_path):
    log = tmp_path / "logs" / "whereabouts.log"
    log.parent.mkdir()
    append(log, "a\n")
    append(log, "b\n")
    assert log.read_text() == "a\nb\n"
    assert os.stat(log).st_mode & 0o777 == 0o644


def test_a_log_directly_in_sticky_tmp_works():
    log = f"/tmp/whereabouts-{uuid.uuid4().hex}.log"  # /tmp is 1777: writable by all, but sticky
    try:
        append(log)
        assert open(log).read() == "line\n"
    finally:
        os.unlink(log)


def test_a_symlink_at_the_log_path_is_not_followed(tmp_path):
    target = tmp_path / "somefile"
    target.write_text("precious\n")
    (tmp_path / "w.log").symlink_to(target)
    with pytest.raises(UntrustedPath, match="is a symbolic link"):
        append(tmp_path / "w.log")
    assert target.read_text() == "precious\n"


@as_root
def test_a_directory_symlink_of_another_user_is_not_followed_but_roots_is(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (tmp_path / "evil").symlink_to(etc)
    os.lchown(tmp_path / "evil", OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedPath, match=r"/evil is a symbolic link owned by uid 4242"):
        append(tmp_path / "evil" / "shadow")
    assert not (etc / "shadow").exists()
    (tmp_path / "run").symlink_to(etc)  # root's own link, as /var/run -> /run
    append(tmp_path / "run" / "w.log")
    assert (etc / "w.log").read_text() == "line\n"


@as_root
def test_a_directory_of_another_user_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedPath, match="owned by uid 4242"):
        append(home / "w.log")


def test_a_world_writable_directory_without_the_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UntrustedPath, match="writable by every user"):
        append(shared / "w.log")


def test_a_fifo_at_the_log_path_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "w.log")
    with pytest.raises((UntrustedPath, OSError)):
        append(tmp_path / "w.log")


def test_a_hard_link_at_the_log_path_is_refused(tmp_path):
    (tmp_path / "somefile").write_text("precious\n")
    os.link(tmp_path / "somefile", tmp_path / "w.log")
    with pytest.raises(UntrustedPath, match="2 hard links"):
        append(tmp_path / "w.log")
    assert (tmp_path / "somefile").read_text() == "precious\n"


@as_root
def test_a_log_file_of_another_user_is_refused(tmp_path):
    (tmp_path / "w.log").write_text("")
    os.chown(tmp_path / "w.log", OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedPath, match="owned by uid 4242"):
        append(tmp_path / "w.log")


@pytest.mark.parametrize("path", ["/tmp/a\0b", "/tmp/", "/tmp/.."])
def test_paths_that_name_no_file_are_refused(path):
    with pytest.raises(UntrustedPath):
        open_log(path)


def test_store_path_may_be_missing_or_under_missing_directories(tmp_path):
    check_store_path(str(tmp_path / "a" / "b" / "wa.db"))
    check_store_path(str(tmp_path / "wa.db"))


def test_store_path_refuses_a_symlink_and_a_sticky_shared_directory(tmp_path):
    (tmp_path / "wa.db").symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(UntrustedPath, match="is a symbolic link"):
        check_store_path(str(tmp_path / "wa.db"))
    with pytest.raises(UntrustedPath, match="writable by every user"):
        check_store_path("/tmp/wa.db")  # SQLite creates -wal and -shm there by name
