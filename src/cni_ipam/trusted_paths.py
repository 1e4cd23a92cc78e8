"""Files a network config names (``log_file``, ``sqlite_path``), reached without following anyone else's links.

NetworkAttachmentDefinitions may be written by tenants, and the plugins run
as root: a path through a symbolic link another user planted (``/tmp/x ->
/etc/shadow``, or ``/tmp/dir -> /etc``) would create or append to any file.
The rule, like the kernel's ``fs.protected_symlinks`` but not relying on it:

* a symbolic link among the directories is followed only when root (or the
  plugin's own user) owns it, so ``/var/run -> /run`` keeps working;
* every directory on the way is owned by root (or the plugin's user) and
  not writable by others unless sticky (``/tmp``): nobody else can swap an
  entry after it was checked.  Group-writable is accepted (``/var/log`` is
  ``root:syslog 0775`` on Debian);
* the file itself is never a symbolic link (``O_NOFOLLOW``).

Directories are opened one at a time with ``openat``, so what is checked is
what is used.  :func:`open_log` and :func:`check_store_path` add what each
kind of file needs.
"""

from __future__ import annotations

import posix  # not os: 1.5 ms per plugin call (cni_ipam.oslite)

from .oslite import S_ISLNK, S_ISREG, S_ISVTX, S_IWOTH, dirname

MAX_LINKS = 40  # as the kernel's limit on links in one path lookup
_DIR_FLAGS = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC
_ENOTDIR, _ELOOP = 20, 40  # errno on Linux: what opening a symbolic link with O_NOFOLLOW fails with


class UntrustedPath(Exception):
    """A path the rule above refuses; the message says which part and why."""


def _trusted(uid: int) -> bool:
    return uid == 0 or uid == posix.geteuid()


def _check_dir(fd: int, where: str, sticky_ok: bool = True):
    """The directory open at ``fd`` by the rule (its ``fstat``, returned), or UntrustedPath."""
    st = posix.fstat(fd)
    _check_dir_stat(st, where, sticky_ok)
    return st


def _check_dir_stat(st, where: str, sticky_ok: bool = True) -> None:
    if not _trusted(st.st_uid):
        raise UntrustedPath(f"directory {where} is owned by uid {st.st_uid}, not root")
    if st.st_mode & S_IWOTH and not (sticky_ok and st.st_mode & S_ISVTX):
        raise UntrustedPath(f"directory {where} is writable by every user")


def _split(path: str) -> tuple:
    if not isinstance(path, str) or "\0" in path:
        raise UntrustedPath("the path contains a NUL byte")
    head, _, name = path.rpartition("/")
    if name in ("", ".", ".."):
        raise UntrustedPath("the path does not name a file")
    return head, name


def open_parent(path: str, missing_ok: bool = False) -> tuple:
    """``(fd, name)``: the directory holding ``path``'s last component, reached by the rule, and that name.

    With ``missing_ok``, a directory that does not exist yet ends the walk
    and ``fd`` is None (the caller creates the rest under trusted ground).
    The caller closes ``fd``.
    """
    fd, name, _ = _walk(path, missing_ok)
    return fd, name


def _walk(path: str, missing_ok: bool) -> tuple:
    """:func:`open_parent`, with the ``fstat`` of the directory reached (None with ``fd``).

    Each directory is opened with ``O_NOFOLLOW`` straight away; only when
    that fails as it does on a symbolic link (``ENOTDIR``, with
    ``O_DIRECTORY``) is the entry ``lstat``-ed: a plain directory costs an
    ``openat`` and an ``fstat`` (a plugin call walks 4-6 of them).
    """
    head, name = _split(path)
    fd = posix.open("/" if path.startswith("/") else ".", _DIR_FLAGS)
    try:
        st = _check_dir(fd, "/" if path.startswith("/") else "(the working directory)")
        parts = [p for p in head.split("/") if p not in ("", ".")]
        links, where = 0, ""
        while parts:
            part = parts.pop(0)
            where = f"{where}/{part}"
            try:
                following = posix.open(part, _DIR_FLAGS | posix.O_NOFOLLOW, dir_fd=fd)  # fails on a link
            except FileNotFoundError:
                if missing_ok:
                    posix.close(fd)
                    return None, name, None
                raise
            except OSError as exc:
                link = _link_info(part, fd) if exc.errno in (_ENOTDIR, _ELOOP) else None
                if link is None:
                    raise  # not a directory, nor a link to one
                links += 1
                if not _trusted(link.st_uid):
                    raise UntrustedPath(f"{where} is a symbolic link owned by uid {link.st_uid}, not root") from None
                if links > MAX_LINKS:
                    raise UntrustedPath(f"more than {MAX_LINKS} symbolic links") from None
                target = posix.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    root = posix.open("/", _DIR_FLAGS)
                    posix.close(fd)
                    fd, st = root, None
                parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            posix.close(fd)
            fd = following
            st = _check_dir(fd, where)
        return fd, name, st if st is not None else posix.fstat(fd)
    except BaseException:
        posix.close(fd)
        raise


def _link_info(part: str, fd: int):
    """The ``lstat`` of ``part`` in the directory at ``fd`` when it is a symbolic link, else None."""
    try:
        st = posix.stat(part, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    return st if S_ISLNK(st.st_mode) else None


def open_log(path: str) -> int:
    """A descriptor to append to the log file ``path`` (created 0644 if absent).

    Besides the rule: it must be a regular file (not a FIFO or a device,
    opened without blocking), of the plugin's user, with one link (not a
    hard link to a file elsewhere).
    """
    fd, name = open_parent(path)
    try:
        log = posix.open(name, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_NONBLOCK
                         | posix.O_NOCTTY | posix.O_CLOEXEC, 0o644, dir_fd=fd)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the file itself is a symbolic link
            raise UntrustedPath(f"{path} is a symbolic link") from None
        raise
    finally:
        posix.close(fd)
    st = posix.fstat(log)
    why = ("not a regular file" if not S_ISREG(st.st_mode) else
           f"owned by uid {st.st_uid}" if st.st_uid != posix.geteuid() else
           f"a file with {st.st_nlink} hard links" if st.st_nlink != 1 else "")
    if why:
        posix.close(log)
        raise UntrustedPath(f"{path} is {why}")
    return log


def check_store_path(path: str) -> None:
    """Refuse a SQLite store path against the rule; its own directory, if it exists, must not be writable by
    others even when sticky, since SQLite creates ``-wal``, ``-shm`` (and we ``.lock``) there by name."""
    fd, name, st = _walk(path, missing_ok=True)
    if fd is None:
        return  # the store creates the missing directories, 0700, under checked ones
    try:
        _check_dir_stat(st, dirname(path) or ".", sticky_ok=False)  # the walk's fstat of that directory
        try:
            st = posix.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if S_ISLNK(st.st_mode):
            raise UntrustedPath(f"{path} is a symbolic link")
    finally:
        posix.close(fd)
