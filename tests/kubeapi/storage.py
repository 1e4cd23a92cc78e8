"""Objects kept in etcd the way kube-apiserver's etcd3 storage keeps them.

Modelled on kubernetes/apiserver pkg/storage/etcd3/store.go @
24a394e516bfda066d7e2221d7d92c052de27c54:

- one key per object, ``<prefix>/registry/<storage path>/<namespace>/<name>``,
  holding the object as JSON without its ``resourceVersion``;
- an object's ``resourceVersion`` is its key's mod revision, a list's is
  the etcd header revision;
- ``Create`` is a transaction "create revision is 0 → put" (else AlreadyExists);
- ``GuaranteedUpdate`` reads, applies the change, and commits with a
  transaction "mod revision unchanged → put"; when another writer got in
  first it reads again and reapplies the change (so a JSON Patch ``test``
  of the old resourceVersion fails on the retry, as in kube-apiserver);
- ``Delete`` is a transaction "mod revision unchanged → delete";
- watches are etcd watches from ``resourceVersion + 1``, served without a
  watch cache (kube-apiserver with ``--watch-cache=false``).

The etcd client (``cni_ipam.store.etcd_client.EtcdClient``) keeps one
connection per endpoint and is not thread-safe: each server thread has its own.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

from cni_ipam.store.etcd_client import EtcdClient, EtcdError, absent, b64, decode_kv, delete, prefix_end, put, \
    unchanged

from . import status
from .resources import Resource

TOO_OLD_WATCH = "The resourceVersion for the provided watch is too old."  # pkg/storage/etcd3/errors.go
TOO_OLD_LIST = "The resourceVersion for the provided list is too old."


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def encode_continue(revision: int, next_key: bytes) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": revision, "start": base64.b64encode(next_key).decode()}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def decode_continue(token: str) -> tuple:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), base64.b64decode(data["start"])
    except (ValueError, KeyError, TypeError):
        raise status.bad_request(f"continue key is not valid: {token}") from None


class Registry:
    def __init__(self, endpoints: list, prefix: str) -> None:
        self.endpoints = list(endpoints)
        self.root = prefix.rstrip("/").encode() + b"/registry/"
        self.local = threading.local()

    @property
    def etcd(self) -> EtcdClient:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = EtcdClient(self.endpoints)
        return client

    # -- keys and values -----------------------------------------------------

    def collection(self, resource: Resource, namespace: str) -> bytes:
        """The key prefix of every object of this resource (in this namespace when one is given)."""
        base = self.root + resource.storage.encode() + b"/"
        return base + namespace.encode() + b"/" if namespace else base

    def key(self, resource: Resource, namespace: str, name: str) -> bytes:
        return self.collection(resource, namespace if resource.namespaced else "") + name.encode()

    @staticmethod
    def decode(kv: dict, revision: int = 0) -> dict:
        obj = json.loads(kv["value"])
        obj.setdefault("metadata", {})["resourceVersion"] = str(revision or kv["mod_revision"])
        return obj

    @staticmethod
    def encode(obj: dict) -> bytes:
        stored = dict(obj, metadata={k: v for k, v in obj["metadata"].items() if k != "resourceVersion"})
        return json.dumps(stored, separators=(",", ":")).encode()

    # -- verbs ---------------------------------------------------------------

    def get(self, resource: Resource, namespace: str, name: str) -> dict:
        kv = self.etcd.get(self.key(resource, namespace, name))
        if kv is None:
            raise status.not_found(resource.group, resource.name, name)
        return self.decode(kv)

    def list(self, resource: Resource, namespace: str, keep, limit: int = 0, token: str = "") -> tuple:
        """(objects that ``keep`` accepts, list resourceVersion, continue token or "")."""
        start, end = self.collection(resource, namespace), prefix_end(self.collection(resource, namespace))
        revision = 0
        if token:
            revision, start = decode_continue(token)
        items = []
        while True:
            request = {"key": b64(start), "range_end": b64(end), "sort_order": "ASCEND", "sort_target": "KEY"}
            if revision:
                request["revision"] = str(revision)
            if limit:
                request["limit"] = str(limit - len(items) + 1)
            try:
                answer = self.etcd.call("kv/range", request)
            except EtcdError as exc:
                if "compacted" in str(exc):
                    raise status.expired(TOO_OLD_LIST) from None
                raise
            revision = revision or int(answer["header"]["revision"])
            kvs = [decode_kv(kv) for kv in answer.get("kvs") or []]
            for kv in kvs:
                if limit and len(items) == limit:
                    return items, revision, encode_continue(revision, kv["key"])
                obj = self.decode(kv)
                if keep(obj):
                    items.append(obj)
            if not answer.get("more"):
                return items, revision, ""
            start = kvs[-1]["key"] + b"\x00"

    def create(self, resource: Resource, namespace: str, obj: dict) -> dict:
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        key = self.key(resource, namespace, meta["name"])
        answer = self.etcd.txn([absent(key)], [put(key, self.encode(obj))])
        if not answer["succeeded"]:
            raise status.already_exists(resource.group, resource.name, meta["name"])
        meta["resourceVersion"] = answer["header"]["revision"]
        return obj

    def guaranteed_update(self, resource: Resource, namespace: str, name: str, change) -> dict:
        """``change(current)`` gives the new object (or raises a StatusError); retried when another writer won."""
        key = self.key(resource, namespace, name)
        while True:
            kv = self.etcd.get(key)
            if kv is None:
                raise status.not_found(resource.group, resource.name, name)
            current = self.decode(kv)
            updated = change(json.loads(json.dumps(current)))
            meta, old_meta = updated["metadata"], current["metadata"]
            for kept in ("uid", "creationTimestamp", "name", "namespace", "resourceVersion"):
                if kept in old_meta:
                    meta[kept] = old_meta[kept]
            spec_changed = {k: v for k, v in updated.items() if k not in ("metadata", "status")} != \
                {k: v for k, v in current.items() if k not in ("metadata", "status")}
            meta["generation"] = old_meta.get("generation", 1) + (1 if spec_changed else 0)
            if updated == current:  # kube-apiserver skips the write of a no-op update
                return current
            answer = self.etcd.txn([unchanged(key, kv["mod_revision"])], [put(key, self.encode(updated))])
            if answer["succeeded"]:
                meta["resourceVersion"] = answer["header"]["revision"]
                return updated

    def delete(self, resource: Resource, namespace: str, name: str, preconditions: dict) -> dict:
        key = self.key(resource, namespace, name)
        while True:
            current = self.get(resource, namespace, name)
            meta = current["metadata"]
            for field, label in (("resourceVersion", "ResourceVersion"), ("uid", "UID")):
                wanted = preconditions.get(field)
                if wanted and wanted != meta.get(field):
                    raise status.conflict(resource.group, resource.name, name,
                                          f"Precondition failed: {label} in precondition: {wanted}, "
                                          f"{label} in object meta: {meta.get(field)}")
            answer = self.etcd.txn([unchanged(key, int(meta["resourceVersion"]))], [delete(key)])
            if answer["succeeded"]:
                return current

    def watch(self, resource: Resource, namespace: str, revision: int) -> "EtcdWatch":
        start = self.collection(resource, namespace)
        return EtcdWatch(self.endpoints, start, prefix_end(start), revision)


class EtcdWatch:
    """One etcd watch over the JSON gateway's streaming ``/v3/watch``, read without blocking the caller.

    The gateway answers with a chunked stream of JSON messages
    (``{"result": {"events": [...]}}``); :meth:`read` returns the events of
    the messages that arrived, so the server can wait on this socket and the
    client's together.  Plain http endpoints only (the test clusters' own).
    """

    def __init__(self, endpoints: list, start: bytes, end: bytes, revision: int) -> None:
        from cni_ipam.http11 import plain_connection
        from cni_ipam.store.etcd_client import Endpoint

        last = None
        for url in endpoints:
            endpoint = Endpoint(url)
            if endpoint.tls:
                raise ValueError("the test API server watches plain http etcd endpoints only")
            try:
                self.sock = plain_connection(endpoint.host, endpoint.port, 5.0)
                break
            except OSError as exc:
                last = exc
        else:
            raise status.service_unavailable(f"no etcd endpoint to watch: {last}")
        body = json.dumps({"create_request": {"key": b64(start), "range_end": b64(end),
                                              "start_revision": str(revision), "prev_kv": True}}).encode()
        self.sock.sendall(f"POST /v3/watch HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        self.raw = b""  # bytes not yet parsed as chunks
        self.text = ""  # chunk payload not yet parsed as JSON
        self.head_done = False
        self.compacted = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self) -> list:
        """The etcd events received now (call when the socket is readable); ConnectionError at the end."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("etcd closed the watch")
        self.raw += data
        if not self.head_done:
            if b"\r\n\r\n" not in self.raw:
                return []
            head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            if b" 200 " not in head.split(b"\r\n")[0]:
                raise ConnectionError(f"etcd refused the watch: {head[:80]!r}")
            self.head_done = True
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                raise ConnectionError("etcd ended the watch")
            if len(rest) < size + 2:
                break
            self.text += rest[:size].decode()
            self.raw = rest[size + 2:]
        events = []
        decoder = json.JSONDecoder()
        while True:
            self.text = self.text.lstrip()
            if not self.text:
                return events
            try:
                message, used = decoder.raw_decode(self.text)
            except ValueError:
                return events
            self.text = self.text[used:]
            result = message.get("result") or {}
            if "error" in message:
                raise ConnectionError(f"etcd watch error: {message['error']}")
            if int(result.get("compact_revision", 0)):
                self.compacted = True
                return events
            for event in result.get("events") or []:
                events.append((event.get("type", "PUT"), decode_kv(event["kv"]),
                               decode_kv(event["prev_kv"]) if event.get("prev_kv") else None))
