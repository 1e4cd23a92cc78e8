"""Newline-delimited JSON over a Unix stream socket: the one framing of our local protocols.

The node agent and its plugin-side client, and the DHCP daemon and the dhcp
plugin, all speak it: each message is one JSON object on one line.  This
module only frames; what the messages mean belongs to each protocol.

It works on any socket object with ``recv``, ``sendall`` and ``settimeout``
(``_socket.socket`` in plugin processes, which skips the ``socket`` module's
``enum`` and ``selectors`` imports, or ``socket.socket`` in daemons), and
imports nothing beyond :mod:`cni_ipam.jsonlite`.  Timeouts are the caller's:
a read uses whatever timeout the socket has, and a ``TimeoutError`` leaves
the bytes read so far in the reader, so the caller may wait again.
"""

from .jsonlite import dumps, loads

MAX_LINE = 1 << 20  # the default bound on one message, newline excluded


class Closed(Exception):
    """The peer closed the connection before a whole line came."""


class BadMessage(ValueError):
    """A line that is too long, not JSON, or not a JSON object."""


def encode(message: dict) -> bytes:
    """One message as its line (compact JSON; non-ASCII escaped, so a line is always valid UTF-8)."""
    return dumps(message, ascii=True).encode() + b"\n"


def send(sock, message: dict) -> None:
    """Write one message (OSError if the peer is gone)."""
    sock.sendall(encode(message))


class Reader:
    """Reads messages off one connection, each bounded by ``limit`` bytes."""

    def __init__(self, sock, limit: int = MAX_LINE) -> None:
        self.sock = sock
        self.limit = limit
        self._buffer = b""

    def read(self, deadline: "float | None" = None) -> dict:
        """The next message.  Raises :class:`Closed`, :class:`BadMessage`, ``TimeoutError`` or ``OSError``.

        ``deadline`` (a :func:`time.monotonic` time) bounds the whole message, not each ``recv``: a peer
        sending a byte now and then cannot hold the reader past it.
        """
        while b"\n" not in self._buffer:
            if len(self._buffer) > self.limit:
                raise BadMessage(f"a message longer than {self.limit} bytes")
            if deadline is not None:
                from time import monotonic

                left = deadline - monotonic()
                if left <= 0:
                    raise TimeoutError("no whole message before the deadline")
                self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("the connection closed before a whole message")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        if len(line) > self.limit:
            raise BadMessage(f"a message longer than {self.limit} bytes")
        try:
            message = loads(line)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise BadMessage(f"not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise BadMessage(f"expected a JSON object, got {type(message).__name__}")
        return message
