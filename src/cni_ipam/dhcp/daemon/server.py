"""The daemon's Unix socket: one connection per request, answered by the lease manager.

The protocol (requests, ``wait`` promises, replies) is described in
:mod:`cni_ipam.dhcp.rpc`; its framing is :mod:`cni_ipam.linejson`.  The
socket is the one systemd passed (socket activation) or one the daemon
makes, after making sure no other daemon listens on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from ... import linejson
from ...cni.errors import INTERNAL, INVALID_CONFIG, IO_FAILURE
from ..store import LeaseStore
from .flags import Settings
from .logs import LOG, emit
from .manager import ADD_MARGIN, RELEASE_WAIT, Manager
from .metrics import Metrics
from .requests import RequestError

MAX_REQUEST = 1 << 20


class Daemon:
    """The parts every lease shares (settings, metrics, lease files, the manager) and the socket they are served on."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.store = LeaseStore(settings.lease_dir)
        self.manager = Manager(self)
        self.listener = None
        self.activated = False
        self.stopping = threading.Event()

    def handle(self, conn: socket.socket) -> None:
        """Answer one connection's request: a ``wait`` promise first when the answer is slow, then the reply.

        Every refusal is answered with its CNI code and logged; an error from
        the connection itself (the plugin went away) only ends it.
        """
        request = {}
        try:
            conn.settimeout(10)
            request = self._read(conn)
            reply = self._answer(conn, request)
        except _PeerGone:
            conn.close()
            return
        except RequestError as exc:
            reply = {"ok": False, "code": exc.code, "msg": exc.msg}
            if exc.details:
                reply["details"] = exc.details
            emit(logging.WARNING, "rpc.refused", exc.msg, op=request.get("op"), code=exc.code,
                 **{key: request[key] for key in ("containerID", "network", "ifname", "netns") if key in request})
        except OSError as exc:  # the daemon's own I/O (lease files): not the request's fault
            emit(logging.ERROR, "rpc.io_failed", f"{request.get('op')}: {exc}", op=request.get("op"))
            reply = {"ok": False, "code": IO_FAILURE, "msg": f"dhcp daemon: {exc}"}
        except Exception as exc:  # a bug: answer, log, keep serving
            LOG.exception("request failed", extra={"event": "rpc.crashed", "fields": {}})
            reply = {"ok": False, "code": INTERNAL, "msg": f"internal error in the DHCP daemon: {exc}"}
        try:
            linejson.send(conn, reply)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _read(conn: socket.socket) -> dict:
        try:
            return linejson.Reader(conn, MAX_REQUEST).read()
        except linejson.BadMessage as exc:
            raise RequestError(INVALID_CONFIG, f"request is not JSON, not a JSON object or too long: {exc}") \
                from None
        except linejson.Closed as exc:
            raise RequestError(INVALID_CONFIG, f"request is not a whole line: {exc}") from None
        except OSError:
            raise _PeerGone() from None

    def _answer(self, conn: socket.socket, request: dict) -> dict:
        op = request.get("op")
        if op == "add":
            _promise(conn, self.settings.timeout + ADD_MARGIN + 2)
            conn.settimeout(None)
            return self.manager.add(request)
        if op == "del":
            _promise(conn, RELEASE_WAIT + 2)
            return self.manager.release(request)
        if op == "check":
            return self.manager.check(request)
        if op == "gc":
            _promise(conn, 60)
            return self.manager.gc(request)
        if op == "status":
            return {"ok": True, "leases": len(self.manager.workers)}
        if op == "list":
            return self.manager.listing()
        raise RequestError(INVALID_CONFIG, f"unknown op {op!r}")

    def listen(self) -> socket.socket:
        activated = _systemd_socket()
        if activated is not None:
            self.activated = True  # systemd owns the socket file
            return activated
        path = self.settings.socket_path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                raise SystemExit(f"dhcp daemon: another daemon is listening on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # a stale socket of a daemon that is gone
            except OSError:
                os.unlink(path)
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Owner-only from the moment the file exists (bind makes it with the
        # umask's mode), then opened to root's group: no other user ever
        # gets a moment to connect.  The main thread runs this before any
        # other thread starts, so the umask is nobody else's.
        umask = os.umask(0o077)
        try:
            listener.bind(path)
        finally:
            os.umask(umask)
        os.chmod(path, 0o660)
        listener.listen(128)
        return listener

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            threading.Thread(target=self.handle, args=(conn,), name="rpc", daemon=True).start()



class _PeerGone(Exception):
    """The plugin closed the connection: nobody to answer."""


def _promise(conn: socket.socket, seconds: float) -> None:
    """Tell the plugin how long the answer may take (:mod:`cni_ipam.dhcp.rpc`)."""
    try:
        linejson.send(conn, {"wait": seconds})
    except OSError:
        raise _PeerGone() from None


def _systemd_socket():
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count == 0:
        return None
    if count != 1:
        raise SystemExit(f"dhcp daemon: Too many ({count}) FDs passed through socket activation")
    return socket.socket(fileno=3)

