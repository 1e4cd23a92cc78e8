"""The SQLite store's directory and files are private to the user the plugins run as (root on a node).

Why: whoever can read ``<sqlite_path>`` reads every allocation, and whoever
can open ``<sqlite_path>-shm`` can hold a read lock on it that makes every
ADD wait for the busy timeout and then fail.  So the directory is mode 0700
and the files (the database, ``-wal``, ``-shm``, ``-journal`` and our
``.lock``) are mode 0600, all owned by us.

The policy, for a directory that is not private yet:

* one we create is made 0700;
* one we own that holds nothing but this store's files is made 0700: that is
  what a Kubernetes ``hostPath`` of type ``DirectoryOrCreate`` leaves (an
  empty directory, mode 0755), and what earlier versions left;
* anything else (another owner, or other files beside the store, as in a
  shared directory such as ``/tmp`` or ``/var/lib/cni``) is refused: changing
  its mode could break whoever shares it, and leaving it open lets local users
  read or lock the store.  The error names the directory and what to do.

Existing files of ours are then narrowed to 0600.  SQLite gives ``-wal``,
``-journal`` and ``-shm`` the database file's mode when it creates them
(``findCreateFileMode`` and ``unixOpenSharedMemory`` in sqlite's
src/os_unix.c), so a 0600 database keeps them 0600 whatever the umask.  Modes
are changed by path, never by opening the files: closing any descriptor of a
database file drops the POSIX locks SQLite's connections in this process hold
on it.  Paths are safe to use once the directory is private, because nobody
else can then swap what they name.
"""

from __future__ import annotations

import posix  # not os: 1.5 ms per plugin call (cni_ipam.oslite)

from ..oslite import S_IMODE, S_ISREG, abspath, basename, dirname, join
from .base import StoreError

SUFFIXES = ("", "-wal", "-shm", "-journal", ".lock")  # the store's files, after the database's own name


def own_names(path: str) -> set:
    """The names the store at ``path`` keeps in its directory."""
    base = basename(path)
    return {base + suffix for suffix in SUFFIXES}


def make_private(path: str) -> None:
    """Make the directory of the store at ``path`` and its existing files private, or raise StoreError saying
    why not and what to do."""
    directory = dirname(abspath(path)) or "."
    names = own_names(path)
    _private_directory(path, directory, names)
    for name in sorted(names):
        narrow(join(directory, name))


def strangers(directory: str, names: set) -> list:
    """What in ``directory`` keeps us from making it private: entries that are not the store's files, and store
    files someone else owns (they could hold them open)."""
    me = posix.geteuid()
    found = []
    with posix.scandir(directory) as entries:
        for entry in entries:
            try:
                owner = entry.stat(follow_symlinks=False).st_uid
            except FileNotFoundError:  # SQLite removes -wal and -shm when its last connection closes
                continue
            if entry.name not in names:
                found.append(entry.name)
            elif owner != me:
                found.append(f"{entry.name} (owned by uid {owner})")
    return sorted(found)


def _private_directory(path: str, directory: str, names: set) -> None:
    info = posix.stat(directory)
    mode, owner = S_IMODE(info.st_mode), info.st_uid
    if owner == posix.geteuid() and not mode & 0o077:
        return
    others = strangers(directory, names)
    if owner == posix.geteuid() and not others:
        posix.chmod(directory, 0o700)
        return
    why = f"owned by uid {owner}" if owner != posix.geteuid() else f"mode {mode:04o}"
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        why += f", and it holds {shown}"
    raise StoreError(
        f"sqlite_path {path!r}: its directory {directory} is {why}, so other local users could read every "
        f"allocation or lock the store. Give the store a directory of its own (cni-ipam makes a new or empty one "
        f"private), or make this one private to uid {posix.geteuid()}: chown {posix.geteuid()} {directory} && "
        f"chmod 0700 {directory}")


def narrow(file: str) -> None:
    """Mode 0600 (at most) for a regular file of ours at ``file``; nothing for a missing file or a symlink."""
    try:
        info = posix.lstat(file)
        mode = S_IMODE(info.st_mode)
        if S_ISREG(info.st_mode) and info.st_uid == posix.geteuid() and mode & 0o077:
            posix.chmod(file, mode & 0o700)
    except FileNotFoundError:  # not there, or removed by SQLite's last close meanwhile
        return
