"""HTTP/1.1 over a kept-alive connection, on the C modules ``_socket`` and ``_ssl``.

The etcd client and the Kubernetes client share it.  Plugin processes use
it, and every ADD and DEL pays what they import: measured on the 2-core test
machine with ``python -X importtime``, ``_socket`` costs 0.2 ms and ``_ssl``
2.2-2.5 ms, against 5 ms for ``socket`` and 11-12 ms for ``ssl`` (which
imports ``socket``, ``enum`` and ``base64``), and about 40 ms for
``http.client``.  ``_ssl._SSLContext`` is what ``ssl.SSLContext`` wraps; for
``PROTOCOL_TLS_CLIENT`` it already verifies the server's certificate and
host name (an IP address is matched against the certificate's IP SANs), with
CPython's secure defaults (TLS 1.2 or later, no compression).

A response body has a ``Content-Length``, is chunked (read whole by
:meth:`Connection.request`, chunk by chunk by :meth:`Connection.stream`, the
hook for Kubernetes watches), or runs until the server closes.
"""

from __future__ import annotations

NO_BODY = (204, 304)


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body


def tls_context(ca_file: str = "", ca_data: bytes | None = None, cert_file: str = "", key_file: str = "",
                cert_data: bytes | None = None, key_data: bytes | None = None, insecure: bool = False):
    """A client ``_ssl._SSLContext``: trust ``ca_file``/``ca_data`` (else the system's CAs), present a client
    certificate when given, skip verification only when ``insecure``.

    Certificate and key *data* are loaded through an anonymous memory file
    (``memfd_create``, read back through ``/proc/self/fd``): OpenSSL's
    ``load_cert_chain`` reads only files, and the key never touches a disk.
    Raises OSError or ValueError (``_ssl.SSLError`` is an OSError) when a file
    or datum cannot be used.
    """
    import _ssl

    context = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
    elif ca_file or ca_data:
        context.load_verify_locations(ca_file or None, None, ca_data.decode("ascii") if ca_data else None)
    else:
        context.set_default_verify_paths()
    if cert_file or cert_data:
        with _MemoryFile(cert_data) as cert, _MemoryFile(key_data) as key:
            context.load_cert_chain(cert or cert_file, key or key_file or None)
    return context


class _MemoryFile:
    """A path to ``data`` held in an anonymous memory file while the block runs; "" when ``data`` is None."""

    def __init__(self, data) -> None:
        self.data = data
        self.fd = -1

    def __enter__(self) -> str:
        import os

        if self.data is None:
            return ""
        self.fd = os.memfd_create("cni-ipam-tls", os.MFD_CLOEXEC)
        os.write(self.fd, self.data)
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc) -> bool:
        import os

        if self.fd >= 0:
            os.close(self.fd)
        return False


def tls_refused(exc) -> bool:
    """A TLS handshake failed over certificates (ours or the server's), not a dropped connection:
    retrying will not help."""
    import _ssl

    return isinstance(exc, _ssl.SSLError) and not isinstance(
        exc, (_ssl.SSLEOFError, _ssl.SSLZeroReturnError, _ssl.SSLSyscallError))


def _socket_class():
    """``_socket.socket`` with a ``__weakref__`` slot: ``_ssl`` keeps a weak reference to the socket it wraps,
    and the C type has none (``socket.socket`` is such a subclass too)."""
    import _socket

    class Socket(_socket.socket):
        __slots__ = ("__weakref__",)

    return Socket


def plain_connection(host: str, port: int, timeout: float):
    """A TCP connection made with ``_socket``.

    Why not ``socket.create_connection``: importing ``socket`` (its enums,
    ``selectors``) and resolving a ``str`` host (which loads the ``idna``
    codec and ``re``) cost 8-25 ms per plugin process on the 2-core test
    machine (more when it is busy), against about 1 ms here.
    """
    import _socket

    last = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host.encode(), port, 0, _socket.SOCK_STREAM):
        sock = _socket_class()(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"{host}:{port}: no address to connect to")


class Connection:
    """One kept-alive HTTP/1.1 connection to ``host:port``; TLS when ``tls`` (a :func:`tls_context`) is given.

    Reconnects on the next request after a close; any error closes it, so a
    half-read response never leaks into the next request.
    """

    def __init__(self, host: str, port: int, tls=None, server_hostname: str = "", name: str = "the server") -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname or host
        self.name = name  # for messages: "etcd", "the Kubernetes API server"
        self.raw = None  # the TCP socket (the TLS object only holds a weak reference to it)
        self.sock = None  # what we read and write: the TCP socket, or the TLS object over it
        self.buffer = b""

    def close(self) -> None:
        if self.raw is not None:
            try:
                self.raw.close()
            finally:
                self.raw = self.sock = None
                self.buffer = b""

    def _open(self, timeout: float) -> None:
        self.raw = plain_connection(self.host, self.port, timeout)
        self.buffer = b""
        if self.tls is None:
            self.sock = self.raw
            return
        try:
            self.sock = self.tls._wrap_socket(self.raw, False, self.server_hostname)
            self.sock.do_handshake()
        except BaseException:
            self.close()
            raise

    def _send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            view = view[self.sock.write(view):]

    def _fill(self) -> None:
        if self.tls is None:
            chunk = self.sock.recv(65536)
        else:
            import _ssl

            try:
                chunk = self.sock.read(65536)
            except (_ssl.SSLZeroReturnError, _ssl.SSLEOFError):
                chunk = b""
        if not chunk:
            raise ConnectionError(f"{self.name} closed the connection")
        self.buffer += chunk

    def _read_head(self) -> tuple:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _chunks(self):
        while True:
            while b"\r\n" not in self.buffer:
                self._fill()
            size_line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            chunk = self._read_exact(size + 2)
            if size == 0:
                return
            yield chunk[:-2]

    def _until_close(self) -> bytes:
        try:
            while True:
                self._fill()
        except ConnectionError:
            data, self.buffer = self.buffer, b""
            return data

    def _begin(self, method: str, target: str, headers: list, body: bytes, timeout: float) -> tuple:
        if self.sock is None:
            self._open(timeout)
        self.raw.settimeout(timeout)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"] + list(headers)
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return self._read_head()

    def request(self, method: str, target: str, headers: list = (), body: bytes = b"",
                timeout: float = 10.0) -> Response:
        """Send one request (``headers``: ``"Name: value"`` lines) and read its whole response."""
        try:
            status, head = self._begin(method, target, headers, body, timeout)
            if method == "HEAD" or status in NO_BODY or 100 <= status < 200:
                data = b""
            elif head.get("transfer-encoding", "").lower() == "chunked":
                data = b"".join(self._chunks())
            elif "content-length" in head:
                data = self._read_exact(int(head["content-length"]))
            else:
                data = self._until_close()
        except BaseException:
            self.close()
            raise
        if head.get("connection", "").lower() == "close" or "content-length" not in head and \
                head.get("transfer-encoding", "").lower() != "chunked":
            self.close()
        return Response(status, head, data)

    def stream(self, method: str, target: str, headers: list = (), timeout: float = 10.0):
        """Send a request and yield ``(status, headers)`` and then each body chunk as it arrives (for a
        chunked answer such as a Kubernetes watch; any other body comes whole); the connection is closed at
        the end."""
        try:
            status, head = self._begin(method, target, headers, b"", timeout)
            yield status, head
            if head.get("transfer-encoding", "").lower() == "chunked":
                yield from self._chunks()
            elif "content-length" in head:  # an error answer, whole
                yield self._read_exact(int(head["content-length"]))
            else:
                yield self._until_close()
        finally:
            self.close()
