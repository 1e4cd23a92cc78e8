"""Leases on disk: one small JSON file per lease, written atomically.

A daemon restart reads them back and carries on renewing (and can still
release them on DEL), which Go's daemon cannot: it keeps leases in memory
only.  One file per lease means concurrent leases never rewrite each
other's state, and a torn write can only ever lose the newest renewal time
of one lease (the rename is atomic; the directory is fsynced).
"""

from __future__ import annotations

import hashlib
import json
import os

SUFFIX = ".json"


def file_name(key: str) -> str:
    """A lease key (``containerID/network/ifname``) has slashes: name the file by its hash."""
    return hashlib.sha256(key.encode()).hexdigest()[:40] + SUFFIX


class LeaseStore:
    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.directory, file_name(key))

    def save(self, key: str, record: dict) -> None:
        path = self.path(key)
        tmp = f"{path}.tmp.{os.getpid()}.{id(record)}"
        data = json.dumps(dict(record, key=key), sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_directory()

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return False
        self._sync_directory()
        return True

    def load_all(self) -> list:
        """``[(file path, record or None, error text)]`` for every lease file."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if not name.endswith(SUFFIX):
                if ".tmp." in name:  # a write that never finished
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                continue
            try:
                with open(path, "rb") as handle:
                    record = json.loads(handle.read())
                if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                    raise ValueError("not a lease record")
                found.append((path, record, ""))
            except (OSError, ValueError) as exc:
                found.append((path, None, f"{type(exc).__name__}: {exc}"))
        return found

    def quarantine(self, path: str) -> None:
        """Move an unreadable file aside, so it is looked at once, not at every start."""
        try:
            os.replace(path, path + ".bad")
        except OSError:
            pass

    def _sync_directory(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
