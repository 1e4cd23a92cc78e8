"""Entering the network namespace a request names: only a pod's, never the daemon's own, never blocking.

The daemon runs as root and takes ``CNI_NETNS`` from whoever may write to
its socket, so the path is opened in steps that cannot be turned against
it (:func:`open_net`):

1. ``O_PATH``: the file's own ``open`` never runs, so a FIFO cannot block
   the thread and a device's driver is never called;
2. ``fstat`` of that fd: a regular file on nsfs, the filesystem of
   ``/proc/self/ns/*`` (all namespace files share its device number);
3. the same file opened for real through ``/proc/self/fd/N`` (no second
   look-up of the path, so nothing can be swapped in between), and
   ``ioctl(NS_GET_NSTYPE)`` must say ``CLONE_NEWNET``;
4. its identity must not be the daemon's own network namespace, nor that of
   PID 1 when the daemon may open it (the host's, for a daemon started in
   another namespace): a request must never bring up or use a host link.

Only then does the calling thread ``setns`` to that fd (:class:`Entered`).
Symlinks are followed (no ``O_NOFOLLOW``): ``/proc/PID/ns/net`` is itself
a link, and under a host mount ``/var/run`` usually links to ``/run``;
whatever a link leads to passes the same checks.  ``..`` components are
refused earlier, with the request (:func:`cni_ipam.dhcp.daemon.requests.check_netns`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h
_NS_TYPES = {0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "UTS", 0x08000000: "IPC",
             0x10000000: "user", 0x20000000: "PID", CLONE_NEWNET: "network", 0x00000080: "time"}
_TRANSIENT = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR, errno.EAGAIN)


class Gone(OSError):
    def __str__(self):
        return self.strerror or super().__str__()


class NetnsGone(Gone):
    """The pod's network namespace no longer exists (or the path now names another one)."""


class Refused(Gone):
    """The path names something the daemon must not enter: not a network namespace, or the daemon's own."""

    def __init__(self, msg: str):
        super().__init__(errno.EPERM, msg)


class Home:
    """The daemon's own namespace, to return to and never to serve; open it in the main thread at start."""

    fd = None
    nsfs_dev = None
    forbidden = {}  # (st_dev, st_ino) -> what that namespace is

    @classmethod
    def open(cls) -> None:
        if cls.fd is not None:
            return
        cls.fd = os.open(f"/proc/{os.getpid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(cls.fd)
        cls.nsfs_dev = st.st_dev
        forbidden = {(st.st_dev, st.st_ino): "the DHCP daemon's own network namespace"}
        try:
            st = os.stat("/proc/1/ns/net")
            forbidden.setdefault((st.st_dev, st.st_ino), "the network namespace of PID 1 (the host's)")
        except OSError:
            pass  # not ours to see (another PID namespace or user): the comparison above still holds
        cls.forbidden = forbidden


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a file"


def open_net(path: str) -> tuple:
    """``(fd, (st_dev, st_ino))`` of the network namespace at ``path``, checked as the module says.

    NetnsGone if there is nothing at ``path``; Refused if it must not be
    entered or cannot be opened; OSError for a passing shortage (EMFILE...).
    """
    Home.open()
    try:
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NetnsGone(errno.ENOENT, f"network namespace {path} does not exist") from None
    except OSError as exc:
        if exc.errno in _TRANSIENT:
            raise
        raise Refused(f"network namespace {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(handle)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != Home.nsfs_dev:
            raise Refused(f"{path} is {_kind(st.st_mode)}, not a network namespace")
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        if kind != CLONE_NEWNET:
            raise Refused(f"{path} is a {_NS_TYPES.get(kind, hex(kind))} namespace, not a network namespace")
        identity = (st.st_dev, st.st_ino)
        if identity in Home.forbidden:
            raise Refused(f"{path} is {Home.forbidden[identity]}: the daemon only enters pods' namespaces")
    except BaseException:
        os.close(fd)
        raise
    return fd, identity


_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    # nstype CLONE_NEWNET: the kernel refuses an fd that is not a network namespace.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


class Entered:
    """``with Entered(path, identity):`` runs the block in that namespace, in this thread only.

    ``identity`` (from an earlier entry) makes sure the path still names the
    same namespace: a recreated pod's is another one.
    """

    def __init__(self, path: str, identity=None):
        self.path = path
        self.identity = identity
        self.fd = None

    def __enter__(self):
        fd, found = open_net(self.path)
        if self.identity is not None and tuple(self.identity) != found:
            os.close(fd)
            raise NetnsGone(errno.ENOENT, f"{self.path} now names another network namespace")
        try:
            _setns(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.identity = found
        return self

    def __exit__(self, *exc):
        try:
            _setns(Home.fd)
        finally:
            os.close(self.fd)
