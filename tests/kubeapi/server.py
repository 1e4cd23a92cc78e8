"""The HTTP side of the test API server: routing, authentication, verbs, faults, watch streams.

Request handling follows kube-apiserver's handler chain in outline
(kubernetes/apiserver pkg/endpoints/filters and pkg/endpoints/handlers):
authenticate (bearer token or client certificate) → authorize (per-user
``verb resource`` list) → injected latency and faults → the verb's handler
(create.go, update.go, patch.go, delete.go, get.go, watch.go).
"""

from __future__ import annotations

import json
import random
import select
import socket
import string
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import status
from .faults import Faults
from .patching import BadPatch, PatchFailed, apply_json_patch, apply_merge_patch
from .resources import Resource, all_resources, prune, validate
from .selectors import field_selector, label_selector
from .status import StatusError
from .storage import TOO_OLD_WATCH, Registry

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
DEFAULT_WATCH_TIMEOUT = 1800  # kube-apiserver's --min-request-timeout


class Config:
    """What one server process serves: from the JSON file the controller writes."""

    def __init__(self, data: dict) -> None:
        self.etcd = data["etcd"]
        self.prefix = data["prefix"]
        self.host = data.get("host", "127.0.0.1")
        self.port = int(data.get("port", 0))
        self.tls = data.get("tls") or {}
        self.tokens = data.get("tokens") or {}  # token -> user
        self.rbac = data.get("rbac") or {}  # user -> ["verb resource", "* resource", "verb *", "*"]
        self.admin_token = data.get("admin_token", "")


class APIServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry(config.etcd, config.prefix)
        self.faults = Faults()
        self.resources = {(r.group, r.version, r.name): r for r in all_resources()}
        super().__init__((config.host, config.port), Handler)
        if config.tls:
            self.socket = _tls_context(config.tls).wrap_socket(self.socket, server_side=True,
                                                               do_handshake_on_connect=False)


def _tls_context(tls: dict):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls["cert"], tls["key"])
    if tls.get("client_ca"):
        context.load_verify_locations(tls["client_ca"])
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class Request:
    """A resource request as the handler chain sees it (kube's RequestInfo)."""

    def __init__(self, verb: str, resource: Resource, namespace: str, name: str, subresource: str, query: dict):
        self.verb, self.resource, self.namespace = verb, resource, namespace
        self.name, self.subresource, self.query = name, subresource, query

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as Go's net package does: headers and body go out without a 40 ms wait
    server: APIServer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        """Quiet: a log line per request would be most of the server's CPU in benchmarks."""

    # -- plumbing --------------------------------------------------------------

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def body(self):
        if not self.raw_body:
            return None
        try:
            return json.loads(self.raw_body)
        except ValueError as exc:
            raise status.bad_request(f"the request body is not JSON: {exc}") from None

    def send_json(self, code: int, body, headers=None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_error_status(self, error: StatusError) -> None:
        self.send_json(error.code, error.body, error.headers)

    def dispatch(self, method: str) -> None:
        # read the body whatever the answer, so that the next request on a kept-alive connection starts clean
        length = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(length) if length else b""
        request = None
        try:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            query = parse_qs(url.query)
            if parts[:1] == ["_control"]:
                return self.control(method, parts[1:])
            user = self.authenticate()
            if parts in ([], ["healthz"], ["readyz"], ["livez"]):
                return self.send_plain(200, "ok")
            if parts == ["version"]:
                return self.send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-cni-ipam-test"})
            discovery = self.discovery(parts)
            if discovery is not None:
                return self.send_json(200, discovery)
            request = self.route(method, parts, query)
            self.authorize(user, request)
            self.serve(request)
        except StatusError as error:
            if error.code in (409, 422) and request is not None:
                self.server.faults.note_refused(request.verb, request.resource.name)
            self.send_error_status(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug here must still answer, as kube-apiserver's panic filter does
            import traceback

            traceback.print_exc()
            self.send_error_status(status.internal_error(f"{type(exc).__name__}: {exc}"))

    def send_plain(self, code: int, text: str, headers=None) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # -- authentication and authorization -------------------------------------

    def authenticate(self) -> str:
        """The user name, from the bearer token or else the client certificate's CommonName."""
        config = self.server.config
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = config.tokens.get(header[7:].strip())
            if user is None:
                raise status.unauthorized()
            return user
        certificate = getattr(self.connection, "getpeercert", lambda: None)()
        if certificate:
            for rdn in certificate.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return value
        if config.tokens:
            raise status.unauthorized()
        return "system:anonymous"

    def authorize(self, user: str, request: Request) -> None:
        rules = self.server.config.rbac.get(user)
        if rules is None:
            return
        resource = request.resource.name + (f"/{request.subresource}" if request.subresource else "")
        for rule in rules:
            verb, _, name = rule.partition(" ")
            if verb in ("*", request.verb) and name in ("*", "", resource):
                return
        raise status.forbidden(user, request.verb, request.resource.group, resource, request.namespace, request.name)

    # -- routing -----------------------------------------------------------------

    def discovery(self, parts: list):
        """``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``: enough for clients to find resources."""
        resources = self.server.resources.values()
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            groups = sorted({(r.group, r.version) for r in resources if r.group})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            listed = [r for r in resources if (r.group, r.version) == (group, version)]
            if not listed:
                return None
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            entries = [{"name": r.name, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": verbs} for r in listed]
            entries += [{"name": f"{r.name}/{s}", "singularName": "", "namespaced": r.namespaced, "kind": r.kind,
                         "verbs": ["get", "patch", "update"]} for r in listed for s in r.subresources]
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version, "resources": entries}
        return None

    def route(self, method: str, parts: list, query: dict) -> Request:
        not_found = status.StatusError(status.status(404, "NotFound", "the server could not find the requested resource",
                                                     {}))
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise not_found
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = self.server.resources.get((group, version, rest[0]))
        if resource is None or len(rest) > 3 or (namespace and not resource.namespaced):
            raise not_found
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource and subresource not in resource.subresources:
            raise not_found
        watching = query.get("watch", [""])[0] in ("1", "true")
        verbs = {("GET", True): "get", ("GET", False): "watch" if watching else "list", ("POST", False): "create",
                 ("PUT", True): "update", ("PATCH", True): "patch", ("DELETE", True): "delete"}
        verb = verbs.get((method, bool(name)))
        if verb is None or (resource.namespaced and verb == "create" and not namespace):
            raise status.method_not_allowed(group, resource.name, method)
        return Request(verb, resource, namespace, name, subresource, query)

    # -- faults and verbs ----------------------------------------------------------

    def serve(self, request: Request) -> None:
        latency, fault = self.server.faults.decide(request.verb, request.resource.name)
        if latency:
            time.sleep(latency)
        if fault and not fault.get("after"):
            return self.inject(fault, request)
        code, body = getattr(self, f"verb_{request.verb}")(request)
        if fault:  # after: the work is done (a write is committed), the answer is lost
            return self.inject(fault, request)
        if code:
            self.send_json(code, body)

    def inject(self, fault: dict, request: Request) -> None:
        answer = fault["status"]
        resource = request.resource
        if answer == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        retry_after = int(fault.get("retry_after", 1))
        if answer == 429 and fault.get("text"):
            return self.send_plain(429, "Too many requests, please try again later.\n", {"Retry-After": str(retry_after)})
        errors = {
            409: lambda: (status.already_exists if request.verb == "create" else status.conflict)(
                resource.group, resource.name, request.name or "injected"),
            422: status.patch_rejected,
            429: lambda: status.too_many_requests(retry_after),
            500: lambda: status.internal_error("injected fault"),
            503: lambda: status.service_unavailable("injected fault"),
            504: lambda: status.timeout("request did not complete within requested timeout - context deadline exceeded"),
        }
        return self.send_error_status(errors[answer]())

    def verb_get(self, request: Request) -> tuple:
        return 200, self.server.registry.get(request.resource, request.namespace, request.name)

    def selector(self, request: Request):
        by_label = label_selector(request.param("labelSelector"))
        by_field = field_selector(request.param("fieldSelector"), request.resource.fields)
        return lambda obj: by_label(obj) and by_field(obj)

    def verb_list(self, request: Request) -> tuple:
        resource = request.resource
        try:
            limit = int(request.param("limit", "0") or 0)
        except ValueError:
            raise status.bad_request(f"invalid limit: {request.param('limit')}") from None
        items, revision, token = self.server.registry.list(resource, request.namespace, self.selector(request),
                                                           limit, request.param("continue"))
        if not resource.custom:  # typed lists leave their items' kind and apiVersion out
            items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]
        metadata = {"resourceVersion": str(revision)}
        if token:
            metadata["continue"] = token
        return 200, {"kind": f"{resource.kind}List", "apiVersion": resource.api_version, "metadata": metadata,
                     "items": items}

    def object_from_body(self, request: Request) -> dict:
        obj = self.body()
        resource = request.resource
        if not isinstance(obj, dict):
            raise status.bad_request("the body of the request is not an object")
        if obj.get("kind", resource.kind) != resource.kind or obj.get("apiVersion", resource.api_version) != \
                resource.api_version:
            raise status.bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                                     f"expected API version ({resource.api_version})")
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise status.bad_request("metadata is not an object")
        if resource.namespaced:
            if meta.get("namespace", request.namespace) != request.namespace:
                raise status.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            meta["namespace"] = request.namespace
        return obj

    def admit(self, resource: Resource, obj: dict) -> dict:
        """Prune and validate a custom object; check a name for everyone."""
        if resource.custom:
            obj = {**prune(obj, resource.schema), "metadata": obj.get("metadata", {})}
        validate(resource, obj)
        return obj

    def verb_create(self, request: Request) -> tuple:
        obj = self.object_from_body(request)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        obj = self.admit(request.resource, obj)
        return 201, self.server.registry.create(request.resource, request.namespace, obj)

    def verb_update(self, request: Request) -> tuple:
        obj = self.object_from_body(request)
        resource, name = request.resource, request.name
        if obj["metadata"].get("name", name) != name:
            raise status.bad_request(f"the name of the object ({obj['metadata']['name']}) does not match the name "
                                     f"on the URL ({name})")
        obj["metadata"]["name"] = name
        wanted = obj["metadata"].get("resourceVersion")
        if not wanted and resource.custom:  # custom resources refuse unconditional updates
            raise status.invalid(resource.group, resource.kind, name, [
                ("FieldValueInvalid", "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])

        def change(current: dict) -> dict:
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise status.conflict(resource.group, resource.name, name)
            return self.admit(resource, self.split_status(request, current, obj))

        return 200, self.server.registry.guaranteed_update(resource, request.namespace, name, change)

    @staticmethod
    def split_status(request: Request, current: dict, updated: dict) -> dict:
        """With a status subresource, the main resource keeps its status and ``/status`` changes only status."""
        if "status" not in request.resource.subresources:
            return updated
        if request.subresource == "status":
            return {**current, "status": updated.get("status")}
        result = {k: v for k, v in updated.items() if k != "status"}
        if "status" in current:
            result["status"] = current["status"]
        return result

    def verb_patch(self, request: Request) -> tuple:
        resource, name = request.resource, request.name
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if kind not in (JSON_PATCH, MERGE_PATCH) and not (kind == STRATEGIC_PATCH and not resource.custom):
            raise status.unsupported_media_type(kind)
        patch = self.body()
        if kind == JSON_PATCH and not isinstance(patch, list):
            raise status.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")

        def change(current: dict) -> dict:
            try:
                patched = apply_json_patch(current, patch) if kind == JSON_PATCH else apply_merge_patch(current, patch)
            except PatchFailed:
                raise status.patch_rejected() from None
            except BadPatch as exc:
                raise status.bad_request(str(exc)) from None
            if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
                raise status.patch_rejected()
            if patched["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise status.conflict(resource.group, resource.name, name)
            patched["kind"], patched["apiVersion"] = resource.kind, resource.api_version
            return self.admit(resource, self.split_status(request, current, patched))

        return 200, self.server.registry.guaranteed_update(resource, request.namespace, name, change)

    def verb_delete(self, request: Request) -> tuple:
        options = self.body() or {}
        resource = request.resource
        deleted = self.server.registry.delete(resource, request.namespace, request.name,
                                              options.get("preconditions") or {})
        if not resource.custom:
            return 200, deleted
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": request.name, "group": resource.group, "kind": resource.name,
                                 "uid": deleted["metadata"].get("uid", "")}}

    # -- watch ---------------------------------------------------------------------

    def verb_watch(self, request: Request) -> tuple:
        """A chunked stream of ``{"type", "object"}`` lines until the timeout or either side closes."""
        registry, resource = self.server.registry, request.resource
        keep = self.selector(request)
        since = request.param("resourceVersion")
        try:
            timeout = float(request.param("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
            revision = int(since or 0)
        except ValueError:
            raise status.bad_request(f"invalid resource version: {since}") from None
        initial = []
        if revision == 0:  # "" or "0": the current objects as ADDED first (kube's "Get State and Start at Most Recent")
            initial, revision, _ = registry.list(resource, request.namespace, keep)
        stream = registry.watch(resource, request.namespace, revision + 1)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for obj in initial:
                self.send_event("ADDED", obj)
            self.pump(stream, keep, time.monotonic() + timeout, resource.name)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            stream.close()
        return 0, None

    def send_event(self, kind: str, obj: dict) -> None:
        data = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def pump(self, stream, keep, deadline: float, resource: str = "") -> None:
        """Forward etcd's events until the deadline, the client leaving, or etcd ending the watch; each read of
        events waits the ``delay_events`` of the watch rules first (rules set after the watch began count)."""
        registry = self.server.registry
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([stream, self.connection], [], [], min(left, 1.0))
            if self.connection in readable:  # a watch client sends nothing more: readable means it left
                return
            if stream not in readable:
                continue
            try:
                events = stream.read()
            except ConnectionError:
                return
            delay = self.server.faults.event_delay(resource)
            if delay:
                time.sleep(delay)
            for kind, kv, prev in events:
                new = registry.decode(kv) if kind != "DELETE" else None
                old = registry.decode(prev, kv["mod_revision"]) if prev else None  # a deleted object's last state
                was, now = bool(old and keep(old)), bool(new and keep(new))
                if now:  # an object that starts matching the selectors is ADDED, as kube's watch filter does
                    self.send_event("MODIFIED" if was else "ADDED", new)
                elif was:
                    self.send_event("DELETED", old)
            if stream.compacted:
                self.send_event("ERROR", status.expired(TOO_OLD_WATCH).body)
                return

    # -- control ---------------------------------------------------------------------

    def control(self, method: str, parts: list) -> None:
        """``/_control/faults`` (GET counters and rules, PUT rules, DELETE counters), admin token only."""
        admin = self.server.config.admin_token
        if not admin or self.headers.get("Authorization", "") != f"Bearer {admin}":
            raise status.unauthorized()
        faults = self.server.faults
        if parts != ["faults"]:
            raise status.StatusError(status.status(404, "NotFound", "unknown control path", {}))
        if method == "PUT":
            try:
                faults.set_rules(self.body() or [])
            except (ValueError, TypeError, AttributeError) as exc:
                raise status.bad_request(str(exc)) from None
        elif method == "DELETE":
            faults.reset_counters()
        self.send_json(200, faults.snapshot())
