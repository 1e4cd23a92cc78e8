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

Imported by the plugin executable: ``_socket`` (not ``socket``, which
imports ``enum`` and ``selectors``), ``time`` and our ``jsonlite`` only.
"""

import _socket
import time

from ..jsonlite import dumps, loads

VERSION = 1
DEFAULT_SOCKET = "/run/cni/dhcp.sock"
FIRST_TIMEOUT = 5.0  # the daemon answers or promises within this
MAX_LINE = 1 << 20


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
            sock.sendall(dumps(dict(request, v=VERSION)).encode() + b"\n")
        except OSError as exc:
            raise Unreachable(f"the DHCP daemon at {path} hung up: {exc.strerror or exc}") from None
        return _read_reply(sock, path, first_timeout)
    finally:
        sock.close()


def _read_reply(sock, path: str, first_timeout: float) -> dict:
    buffer = b""
    waited = first_timeout
    deadline = time.monotonic() + first_timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer(f"the DHCP daemon at {path} did not answer within {waited:g}s")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError as exc:
            raise Unreachable(f"the DHCP daemon at {path} hung up: {exc.strerror or exc}") from None
        if not data:
            raise Unreachable(f"the DHCP daemon at {path} closed the connection without an answer")
        buffer += data
        if len(buffer) > MAX_LINE:
            raise Unreachable(f"the DHCP daemon at {path} sent more than {MAX_LINE} bytes without a newline")
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = loads(line)
            except ValueError as exc:
                raise Unreachable(f"the DHCP daemon at {path} answered something that is not JSON: {exc}") from None
            if not isinstance(message, dict):
                raise Unreachable(f"the DHCP daemon at {path} answered {message!r}, not an object")
            if "ok" in message:
                return message
            wait = message.get("wait")
            if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0:
                waited = float(wait)
                deadline = time.monotonic() + waited
