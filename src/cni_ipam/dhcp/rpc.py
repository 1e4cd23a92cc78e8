"""The plugin's side of the daemon protocol: one JSON request line, JSON reply lines.

The plugin connects to the daemon's Unix socket, writes one request object
and a newline, and reads lines until one has an ``"ok"`` key.  Before a
slow answer the daemon sends ``{"wait": seconds}``: the promise that the
answer comes within that time.  So the plugin waits ``first_timeout`` for
the daemon to speak at all, then as long as the daemon promised, and never
longer: a hung daemon costs a pod a few seconds, not a hang.

Requests (all carry ``"op"``; attachment ops also ``containerID``,
``network``, ``ifname``)::

    {"op": "add", "netns": "/run/netns/x", "params": [1, 3], "provide": {"12": "<hex>"}}
    {"op": "check"} {"op": "del"} {"op": "status"} {"op": "list"}
    {"op": "gc", "network": "n", "valid": [["containerID", "ifname"], ...]}

Replies: ``{"ok": true, ...}`` or ``{"ok": false, "code": N, "msg": "...", "details": "..."}``.

Each message is one line of JSON (:mod:`cni_ipam.linejson`).  Imported by
the plugin executable: ``_socket`` (not ``socket``, which imports ``enum``
and ``selectors``), ``time``, our ``jsonlite`` and ``linejson`` only.
"""

import _socket
import time

from .. import linejson

VERSION = 1
DEFAULT_SOCKET = "/run/cni/dhcp.sock"
FIRST_TIMEOUT = 5.0  # the daemon answers or promises within this


class Unreachable(Exception):
    """No daemon to talk to: no socket file, nobody listening, or it hung up."""


class NoAnswer(Exception):
    """The daemon took the request but did not answer in time."""


def call(path: str, request: dict, first_timeout: float = FIRST_TIMEOUT) -> dict:
    """Send ``request`` to the daemon at ``path`` and return its final reply object."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(first_timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise Unreachable(f"no DHCP daemon socket at {path}") from None
        except ConnectionRefusedError:
            raise Unreachable(f"nothing is listening on {path} (a stale socket of a stopped daemon?)") from None
        except OSError as exc:
            raise Unreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            linejson.send(sock, dict(request, v=VERSION))
        except OSError as exc:
            raise Unreachable(f"the DHCP daemon at {path} hung up: {exc.strerror or exc}") from None
        return _read_reply(sock, path, first_timeout)
    finally:
        sock.close()


class _Deadline:
    """The socket as the reader sees it: every ``recv`` waits only until ``at``, however many it takes."""

    def __init__(self, sock, at: float) -> None:
        self.sock = sock
        self.at = at

    def recv(self, size: int) -> bytes:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        return self.sock.recv(size)


def _read_reply(sock, path: str, first_timeout: float) -> dict:
    waited = first_timeout
    deadline = _Deadline(sock, time.monotonic() + first_timeout)
    reader = linejson.Reader(deadline)
    while True:
        try:
            message = reader.read()
        except TimeoutError:
            raise NoAnswer(f"the DHCP daemon at {path} did not answer within {waited:g}s") from None
        except OSError as exc:
            raise Unreachable(f"the DHCP daemon at {path} hung up: {exc.strerror or exc}") from None
        except linejson.Closed:
            raise Unreachable(f"the DHCP daemon at {path} closed the connection without an answer") from None
        except linejson.BadMessage as exc:
            raise Unreachable(f"the DHCP daemon at {path} answered something that is not JSON, not an object "
                              f"or too long: {exc}") from None
        if "ok" in message:
            return message
        wait = message.get("wait")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0:
            waited = float(wait)
            deadline.at = time.monotonic() + waited
