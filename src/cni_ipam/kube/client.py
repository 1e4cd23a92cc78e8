"""A small Kubernetes API client for plugin processes: get, list, create, JSON Patch and delete of
namespaced objects (and a watch, for the node agent), standard library only, on one kept-alive HTTP/1.1
connection (:mod:`cni_ipam.http11`).

Why not client-go's Python twin: the ``kubernetes`` package takes seconds
to import, and ``http.client`` plus ``ssl`` cost about 50 ms in every
plugin call (``_socket`` and ``_ssl``, used here, cost 2-3 ms).

Failures, as a caller needs them:

* a ``Status`` answer becomes :class:`KubeError` (``code``, ``reason``,
  ``message``): 404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid are the
  caller's to interpret (k8s.io/apimachinery pkg/api/errors/errors.go);
* 401 and 403 name who we are (the service account in the token, the client
  certificate, else "the kubeconfig's credentials"), the verb and the
  resource; on a 401 a ``tokenFile`` is read again once, since the token may
  have been rotated (as OpenShift's CNO rotates the whereabouts token);
* 429 waits ``Retry-After`` seconds (priority and fairness, apiserver
  pkg/server/filters/priority-and-fairness.go), 5xx answers and connection
  errors retry after a jittered backoff, all within one overall ``deadline``;
  past it, :class:`KubeUnavailable` with the server's last reason.
"""

from __future__ import annotations

from .. import jsonlite as json

DEFAULT_TIMEOUT = 5.0  # one request
DEFAULT_DEADLINE = 15.0  # every attempt of one call
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """The API server refused a request; retrying it unchanged will not help.

    ``retried``: the refusal answered a second or later sending of the request, so an earlier one may have
    committed (a 409 AlreadyExists may then be our own create); on a first sending it cannot be ours."""

    retried = False

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


class KubeUnavailable(Exception):
    """The API server did not answer usefully within the deadline (down, too slow, overloaded)."""


def token_identity(token: str) -> str:
    """The user a service account token names (``system:serviceaccount:<ns>:<name>``, its JWT ``sub``), or ""
    when the token is not a readable JWT.  Only for messages: the server alone checks the token."""
    import binascii

    parts = token.split(".")
    if len(parts) != 3:
        return ""
    try:
        payload = json.loads(binascii.a2b_base64(parts[1].replace("-", "+").replace("_", "/") + "=="))
    except (ValueError, binascii.Error):
        return ""
    sub = payload.get("sub") if isinstance(payload, dict) else None
    return sub if isinstance(sub, str) else ""


def status_error(code: int, body: bytes) -> KubeError:
    """A :class:`KubeError` from an error answer: its ``Status`` when there is one, else the text."""
    try:
        status = json.loads(body) if body else {}
    except ValueError:
        status = {}
    if not isinstance(status, dict) or status.get("kind") != "Status":
        text = body.decode("utf-8", "replace").strip()
        return KubeError(code, "", text or f"HTTP {code}")
    return KubeError(code, str(status.get("reason") or ""), str(status.get("message") or f"HTTP {code}"))


class KubeClient:
    """Requests to the API server a :class:`~cni_ipam.kube.kubeconfig.KubeSettings` names, in its namespace."""

    def __init__(self, settings, timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE,
                 sleep=None, clock=None) -> None:
        import time

        self.settings = settings
        self.namespace = settings.namespace
        self.timeout = timeout
        self.deadline = deadline
        self.sleep = sleep or time.sleep
        self.clock = clock or time.monotonic
        self.connection = None
        self._token = None
        self.round_trips = 0  # requests sent, for the benchmark and tests

    # -- transport -------------------------------------------------------------

    def _connect(self):
        from ..http11 import Connection, tls_context

        s = self.settings
        context = None
        if s.tls:
            try:
                context = tls_context(ca_file=s.ca_file, ca_data=s.ca_data, cert_file=s.cert_file,
                                      key_file=s.key_file, cert_data=s.cert_data, key_data=s.key_data,
                                      insecure=s.insecure)
            except (OSError, ValueError) as exc:
                raise KubeError(0, "BadConfig", f"kubeconfig {s.path}: the TLS settings (certificate authority, "
                                                f"client certificate and key) cannot be used: {exc}") from None
        self.connection = Connection(s.host, s.port, context, server_hostname=s.tls_server_name,
                                     name=f"the Kubernetes API server {s.server}")
        return self.connection

    def _headers(self, content_type: str) -> list:
        s = self.settings
        headers = ["Accept: application/json", "User-Agent: cni-ipam"]
        if content_type:
            headers.append(f"Content-Type: {content_type}")
        if self._token is None:
            from .kubeconfig import KubeconfigError

            try:
                self._token = s.bearer_token()
            except KubeconfigError as exc:
                raise KubeError(0, "BadConfig", str(exc)) from None
        if self._token:
            headers.append(f"Authorization: Bearer {self._token}")
        elif s.username or s.password:
            import binascii

            basic = binascii.b2a_base64(f"{s.username}:{s.password}".encode(), newline=False).decode()
            headers.append(f"Authorization: Basic {basic}")
        return headers

    def who(self) -> str:
        """Who the server sees, for messages about refusals."""
        s = self.settings
        identity = token_identity(self._token or "")
        if identity:
            return f"{identity} (the token of kubeconfig {s.path})"
        if s.cert_file or s.cert_data:
            return f"the client certificate of kubeconfig {s.path}"
        return f"the kubeconfig's credentials ({s.path})"

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                what: str = "") -> dict:
        """Send ``body`` (JSON-encoded) to ``path`` and return the decoded answer, retrying what may pass
        until the deadline.  ``what`` names the request in messages (``"patch ippools/x"``)."""
        from ..http11 import tls_refused

        data = json.dumps(body).encode() if body is not None else b""
        give_up = self.clock() + self.deadline
        attempt, last, reread_token = 0, "no answer", True
        what = what or f"{method} {path}"
        while True:
            remaining = give_up - self.clock()
            if remaining <= 0:
                break
            pause = None
            headers = self._headers(content_type if body is not None else "")
            try:
                connection = self.connection or self._connect()
                self.round_trips += 1
                answer = connection.request(method, path, headers, data, min(self.timeout, remaining))
            except (OSError, ValueError) as exc:  # refused, reset, timed out, a garbled answer
                if self.connection is not None:
                    self.connection.close()
                if tls_refused(exc):
                    raise KubeError(0, "TLSRefused", f"TLS handshake with {self.settings.server} failed: {exc}; "
                                                     f"check the certificate authority in kubeconfig "
                                                     f"{self.settings.path}") from None
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= answer.status < 300:
                    return json.loads(answer.body) if answer.body else {}
                error = status_error(answer.status, answer.body)
                if answer.status == 401 and reread_token and self.settings.token_file:
                    reread_token, self._token = False, None  # a rotated token file: read it once more
                    continue
                if answer.status in (401, 403):
                    raise KubeError(answer.status, error.reason or ("Unauthorized" if answer.status == 401
                                                                    else "Forbidden"),
                                    f"the Kubernetes API server refused to {what} in namespace {self.namespace} "
                                    f"for {self.who()}: {error.message}")
                if answer.status == 429:
                    pause = _retry_after(answer.headers.get("retry-after"))
                elif answer.status < 500:
                    error.retried = attempt > 0
                    raise error
                last = f"{answer.status} {error.reason or ''} {error.message}".replace("  ", " ")
            attempt += 1
            if pause is None:
                import random

                pause = min(0.05 * 2 ** attempt, 1.0) * (0.5 + random.random())
            self.sleep(max(0.0, min(pause, give_up - self.clock())))
        raise KubeUnavailable(f"the Kubernetes API server {self.settings.server} did not {what} within "
                              f"{self.deadline:g}s; last answer: {last}")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()

    # -- verbs on namespaced custom objects -----------------------------------

    def path(self, group_version: str, resource: str, name: str = "", query: str = "") -> str:
        api = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        out = f"{self.settings.base_path}{api}/namespaces/{self.namespace}/{resource}"
        return out + (f"/{name}" if name else "") + (f"?{query}" if query else "")

    def get(self, group_version: str, resource: str, name: str) -> dict:
        return self.request("GET", self.path(group_version, resource, name), what=f"get {resource}/{name}")

    def list(self, group_version: str, resource: str) -> dict:
        """Every object of ``resource`` in the namespace (pages of 500 joined, read at the first page's
        revision as the server's ``continue`` token keeps them)."""
        items, token, answer = [], "", {}
        while True:
            query = "limit=500" + (f"&continue={_quote(token)}" if token else "")
            answer = self.request("GET", self.path(group_version, resource, query=query), what=f"list {resource}")
            items += answer.get("items") or []
            token = (answer.get("metadata") or {}).get("continue") or ""
            if not token:
                answer["items"] = items
                return answer

    def create(self, group_version: str, resource: str, obj: dict) -> dict:
        name = obj.get("metadata", {}).get("name", "")
        return self.request("POST", self.path(group_version, resource), obj, what=f"create {resource}/{name}")

    def json_patch(self, group_version: str, resource: str, name: str, operations: list) -> dict:
        return self.request("PATCH", self.path(group_version, resource, name), operations, JSON_PATCH,
                            what=f"patch {resource}/{name}")

    def delete(self, group_version: str, resource: str, name: str, resource_version: str = "") -> dict:
        """Delete, only if unchanged since ``resource_version`` when given (409 Conflict otherwise)."""
        body = None
        if resource_version:
            body = {"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"resourceVersion": resource_version}}
        return self.request("DELETE", self.path(group_version, resource, name), body,
                            what=f"delete {resource}/{name}")

    def watch_path(self, group_version: str, resource: str, resource_version: str, seconds: int = 0) -> str:
        """Where a watch from ``resource_version`` reads its events (``timeoutSeconds``: when the server ends it)."""
        query = f"watch=1&resourceVersion={resource_version}" + (f"&timeoutSeconds={seconds}" if seconds else "")
        return self.path(group_version, resource, query=query)

    def watch(self, group_version: str, resource: str, resource_version: str, seconds: int = 300):
        """The events after ``resource_version``, as ``(type, object)``, until the server ends the watch after
        about ``seconds``; first ``(None, None)`` once the server has taken the watch.  Raises KubeError for a
        refusal, and for an ``ERROR`` event (its Status: 410 Expired, the version was compacted away: list
        again), OSError or ValueError for a broken stream.  One request, on this client's connection (a
        client of its own: the watch holds it), not retried: the caller resumes from the last version."""
        from ..http11 import tls_refused

        path = self.watch_path(group_version, resource, resource_version, seconds)
        connection = self.connection or self._connect()
        self.round_trips += 1
        chunks = connection.stream("GET", path, self._headers(""), timeout=seconds + 30.0)
        try:
            try:
                code, _ = next(chunks)
            except OSError as exc:
                if tls_refused(exc):
                    raise KubeError(0, "TLSRefused", f"TLS handshake with {self.settings.server} failed: {exc}")
                raise
            if code != 200:
                error = status_error(code, b"".join(chunks))
                if code == 401:
                    self._token = None  # a rotated token file: read it again for the next watch
                raise error
            yield None, None
            pending = b""
            for chunk in chunks:
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object")
                    if not isinstance(obj, dict) or not isinstance(kind, str):
                        raise ValueError(f"watch {resource}: an event without type or object: {line[:200]!r}")
                    if kind == "ERROR":
                        raise KubeError(int(obj.get("code") or 0), str(obj.get("reason") or ""),
                                        str(obj.get("message") or "watch error"))
                    yield kind, obj
        finally:
            chunks.close()


def _retry_after(value) -> float:
    """Seconds a 429 asks us to wait (``Retry-After`` in seconds; 1 when absent or unreadable)."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0


def _quote(text: str) -> str:
    """Percent-encode a query value (continue tokens are base64: ``+``, ``/`` and ``=``)."""
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in text)
