"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), standard library only.

Why not a library: the Python etcd clients are unmaintained or cost
100-150 ms to import, and a plugin process pays that on every CNI call
(tests/unit/test_plugin_imports.py holds plugins to it).  This client
speaks HTTP/1.1 through :mod:`cni_ipam.http11` (``_socket``, and ``_ssl``
when TLS is configured), keeps one connection per endpoint, and fails over:
each request has a timeout, and on a connection error, a timeout or an
"unavailable" answer it moves to the next endpoint after a short jittered
pause, until the overall deadline.  Killing the leader of a 3-member
cluster stops writes for about 2 s, so the default deadline covers that.
After a failed attempt a request waits less than the full timeout (see
``FAILOVER_TIMEOUT``): a member that went away may have been the leader,
and until the others have elected a new one they forward writes to it,
where they wait out etcd's own request timeout (7 s) unanswered.

The gateway's JSON is proto3's: keys and values are base64, 64-bit numbers
are strings, and false or zero fields are left out.
"""

from __future__ import annotations

from .. import jsonlite as json  # the json module costs 8 ms per plugin call

DEFAULT_TIMEOUT = 5.0  # per request on one endpoint
DEFAULT_DEADLINE = 15.0  # all attempts of one call
FAILOVER_TIMEOUT = 1.0  # per request after a failed attempt of the same call, doubling each round up to the timeout
RETRY_GRPC_CODES = (14, 4, 13)  # unavailable, deadline exceeded, internal ("leader changed")


class EtcdError(Exception):
    """etcd answered with an error that retrying another endpoint will not fix."""


class EtcdUnavailable(Exception):
    """No endpoint answered in time."""


def b64(text) -> str:
    import binascii

    data = text.encode() if isinstance(text, str) else text
    return binascii.b2a_base64(data, newline=False).decode()


def unb64(text: str) -> bytes:
    import binascii

    return binascii.a2b_base64(text)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's range_end for a prefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


class Endpoint:
    """``http[s]://host:port`` parsed, with its kept-alive connection (:class:`cni_ipam.http11.Connection`)."""

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https"):
            raise ValueError(f"etcd endpoint {url!r}: expected http://host:port or https://host:port")
        hostport = rest.split("/")[0]
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd endpoint {url!r}: expected host:port after {scheme}://")
        self.url = url
        self.tls = scheme == "https"
        self.host = host.strip("[]")
        self.port = int(port)
        self.connection = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


class EtcdClient:
    def __init__(self, endpoints, timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE,
                 username: str = "", password: str = "", ca_file: str = "", cert_file: str = "", key_file: str = "",
                 sleep=None, clock=None) -> None:
        import time

        self.endpoints = [Endpoint(url) for url in endpoints]
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        self.timeout = timeout
        self.deadline = deadline
        self.username = username
        self.password = password
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self._ssl = None
        self.token = ""
        self.current = 0
        self.sleep = sleep or time.sleep
        self.clock = clock or time.monotonic

    # -- transport ----------------------------------------------------------

    def _ssl_context(self):
        """Unreadable or bad TLS files are a config error: EtcdError now, not retries until the deadline."""
        if self._ssl is None:
            from ..http11 import tls_context

            try:
                self._ssl = tls_context(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)
            except (OSError, ValueError) as exc:  # _ssl.SSLError is an OSError
                raise EtcdError(f"etcd TLS files (ca {self.ca_file or '-'}, cert {self.cert_file or '-'}, "
                                f"key {self.key_file or '-'}) cannot be used: {exc}") from None
        return self._ssl

    def _exchange(self, endpoint: Endpoint, path: str, body: bytes, timeout: float) -> tuple:
        """One HTTP/1.1 POST on the endpoint's connection: (status, parsed JSON body)."""
        if endpoint.connection is None:
            from ..http11 import Connection

            endpoint.connection = Connection(endpoint.host, endpoint.port,
                                             self._ssl_context() if endpoint.tls else None, name="etcd")
        headers = ["Content-Type: application/json"]
        if self.token:
            headers.append(f"Authorization: {self.token}")
        answer = endpoint.connection.request("POST", path, headers, body, timeout)
        try:
            return answer.status, json.loads(answer.body) if answer.body else {}
        except ValueError:
            return answer.status, {"error": answer.body.decode(errors="replace")}

    # -- calls with failover ------------------------------------------------

    def call(self, path: str, request: dict) -> dict:
        """POST ``request`` to ``/v3/<path>``, failing over between endpoints until the deadline."""
        body = json.dumps(request).encode()
        give_up = self.clock() + self.deadline
        attempt, last_error, refused_by = 0, "no attempt", set()
        while True:
            endpoint = self.endpoints[self.current]
            remaining = give_up - self.clock()
            if remaining <= 0:
                break
            try:
                wait = self.timeout if attempt == 0 else \
                    min(self.timeout, FAILOVER_TIMEOUT * 2 ** (attempt // len(self.endpoints)))
                status, answer = self._exchange(endpoint, f"/v3/{path}", body, min(wait, remaining))
            except (OSError, ConnectionError, ValueError) as exc:
                endpoint.close()
                last_error = f"{endpoint.url}: {exc or type(exc).__name__}"
                from ..http11 import tls_refused

                if tls_refused(exc):
                    refused_by.add(endpoint.url)
                    if len(refused_by) == len(self.endpoints):  # certificates, not the network: retrying won't help
                        raise EtcdError(f"TLS handshake with etcd failed ({last_error}); check etcd_ca_cert_file, "
                                        f"etcd_cert_file and etcd_key_file") from None
            else:
                if status == 200:
                    return answer
                code = answer.get("code")
                message = answer.get("message") or answer.get("error") or f"HTTP {status}"
                if self._auth_expired(status, message) and self.username:
                    self.token = ""
                    self.authenticate()
                    continue
                if code not in RETRY_GRPC_CODES and status < 500:
                    raise EtcdError(f"etcd {endpoint.url} refused {path}: {message}")
                endpoint.close()
                last_error = f"{endpoint.url}: {message}"
            attempt += 1
            self.current = (self.current + 1) % len(self.endpoints)
            if attempt % len(self.endpoints) == 0:  # every endpoint tried once: pause before the next round
                import random

                pause = min(0.05 * 2 ** (attempt // len(self.endpoints)), 1.0) * (0.5 + random.random())
                self.sleep(max(0.0, min(pause, give_up - self.clock())))
        raise EtcdUnavailable(f"no etcd endpoint answered within {self.deadline:g}s "
                              f"({', '.join(e.url for e in self.endpoints)}); last error: {last_error}")

    @staticmethod
    def _auth_expired(status: int, message: str) -> bool:
        return status in (400, 401) and "token" in message.lower()

    def authenticate(self) -> None:
        """Trade the user name and password for a token sent with every later request."""
        if not self.username:
            return
        answer = self.call("auth/authenticate", {"name": self.username, "password": self.password})
        self.token = answer.get("token", "")
        if not self.token:
            raise EtcdError("etcd authentication returned no token")

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    # -- KV helpers -----------------------------------------------------------

    def get(self, key: bytes) -> dict | None:
        kvs = self.call("kv/range", {"key": b64(key)}).get("kvs") or []
        return decode_kv(kvs[0]) if kvs else None

    def range(self, start: bytes, end: bytes, limit: int = 0, keys_only: bool = False) -> list:
        request = {"key": b64(start), "range_end": b64(end), "sort_order": "ASCEND", "sort_target": "KEY"}
        if limit:
            request["limit"] = str(limit)
        if keys_only:
            request["keys_only"] = True
        return [decode_kv(kv) for kv in self.call("kv/range", request).get("kvs") or []]

    def prefix(self, prefix: bytes) -> list:
        return self.range(prefix, prefix_end(prefix))

    def read(self, ranges: list) -> list:
        """Several ranges in one round trip (a transaction with no compare): their key-value lists.

        ``ranges`` holds ``(start, end or None for one key, limit, keys_only)``.
        """
        return read_results(self.call("kv/txn", {"compare": [], "success": [read_op(*r) for r in ranges]}))

    def txn(self, compare: list, success: list, failure: list = ()) -> dict:
        request = {"compare": compare, "success": success}
        if failure:
            request["failure"] = list(failure)
        answer = self.call("kv/txn", request)
        answer["succeeded"] = bool(answer.get("succeeded"))
        return answer


def decode_kv(kv: dict) -> dict:
    """A gateway key-value with bytes and ints filled in (absent fields are zero)."""
    return {
        "key": unb64(kv.get("key", "")),
        "value": unb64(kv.get("value", "")),
        "create_revision": int(kv.get("create_revision", 0)),
        "mod_revision": int(kv.get("mod_revision", 0)),
        "version": int(kv.get("version", 0)),
    }


def read_op(start: bytes, end, limit: int = 0, keys_only: bool = False) -> dict:
    """A transaction operation reading one range (``end`` None: the key ``start`` alone), ascending by key."""
    request = {"key": b64(start)}
    if end is not None:
        request.update(range_end=b64(end), sort_order="ASCEND", sort_target="KEY")
    if limit:
        request["limit"] = str(limit)
    if keys_only:
        request["keys_only"] = True
    return {"request_range": request}


def read_results(answer: dict) -> list:
    """The key-value lists of a transaction's answer, one per operation (empty for one that is not a read)."""
    return [[decode_kv(kv) for kv in (r.get("response_range") or {}).get("kvs") or []]
            for r in answer.get("responses") or []]


def put(key: bytes, value: bytes) -> dict:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def delete(key: bytes) -> dict:
    return {"request_delete_range": {"key": b64(key)}}


def absent(key: bytes) -> dict:
    """Compare: the key does not exist (its create revision is 0)."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def nested(compare: list, success: list) -> dict:
    """A transaction inside a transaction's operations: its compare failing does not fail the outer one."""
    return {"request_txn": {"compare": compare, "success": success}}


def unchanged(key: bytes, mod_revision: int) -> dict:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
