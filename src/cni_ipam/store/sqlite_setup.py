"""The SQLite store's first open on a node: a new store's directory, and one that is not private yet.

:class:`~cni_ipam.store.sqlite.SQLiteStore` opens the store on every plugin
call, and finds it there, in a directory already private; what it does only
the first time (create the directory, refuse a network filesystem, make the
directory private or say why it cannot: policy in :mod:`.sqlite`, "Private
to root") is here, imported lazily then, so that the other calls do not
load it: a plugin process pays for every module it imports, on every call.
"""

from __future__ import annotations

import posix

from .base import StoreError

NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "afs")


def new_directory(path: str) -> None:
    """Make the directory of a store not created yet (mode 0700 when new), or raise StoreError when it is on a
    network filesystem: WAL needs shared memory on a local one."""
    import os

    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fstype = filesystem_type(directory)
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse."):
        raise StoreError(
            f"sqlite_path {path!r} is on a {fstype} filesystem; the SQLite store works on one node's "
            f"local disk only. For a cluster use \"datastore\": \"etcd\"")


def private_directory(path: str, directory: str, names: set, mode: int, owner: int) -> None:
    """Make the store's directory private (it is not yet: ``mode`` and ``owner`` as found) when it is ours and
    holds nothing but the store's files, else raise StoreError saying why not and what to do."""
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


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The type of the filesystem holding ``path``, or "" (``mountinfo`` is a parameter so tests can fake it)."""
    import os

    path = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open(mountinfo) as info:
            for line in info:
                fields = line.split()
                mount_point = fields[4].replace("\\040", " ")
                fs = fields[fields.index("-") + 1]
                inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, fstype = mount_point, fs
    except OSError:
        return ""
    return fstype
