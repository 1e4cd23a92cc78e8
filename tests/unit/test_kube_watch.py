"""``KubeClient.watch`` reads a chunked watch answer from a real socket on loopback: events split across chunks
and several in one chunk come out whole and in order; an ``ERROR`` event is a KubeError with its Status (410
Expired: list again); a refusal answered with a length-delimited Status is a KubeError too."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from cni_ipam.kube.client import KubeClient, KubeError
from cni_ipam.kube.kubeconfig import KubeSettings


def serve_once(answer: bytes) -> tuple:
    """A one-connection HTTP server on loopback that sends ``answer`` after the request head; (port, requests)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    heads = []

    def run():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            heads.append(data.decode())
            conn.sendall(answer)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], heads


def client(port: int) -> KubeClient:
    fields = dict.fromkeys(KubeSettings.__slots__, "")
    fields.update(server=f"http://127.0.0.1:{port}", scheme="http", host="127.0.0.1", port=port, ca_data=None,
                  insecure=False, cert_data=None, key_data=None, token="t", namespace="kube-system")
    return KubeClient(KubeSettings(**fields))


def chunked(*pieces: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def event(kind: str, name: str, rv: str) -> bytes:
    return json.dumps({"type": kind, "object": {"metadata": {"name": name, "resourceVersion": rv}}}).encode() + b"\n"


def test_events_split_across_chunks_or_sharing_one_come_out_whole_and_in_order():
    a, b, c = event("ADDED", "a", "5"), event("MODIFIED", "a", "6"), event("DELETED", "b", "7")
    port, heads = serve_once(chunked(a[:10], a[10:] + b[:3], b[3:] + c))
    got = list(client(port).watch("whereabouts.cni.cncf.io/v1alpha1", "ippools", "4", 60))
    assert got[0] == (None, None)  # the server took the watch
    assert [(k, o["metadata"]["resourceVersion"]) for k, o in got[1:]] == [("ADDED", "5"), ("MODIFIED", "6"),
                                                                          ("DELETED", "7")]
    assert "watch=1&resourceVersion=4&timeoutSeconds=60" in heads[0]
    assert "Authorization: Bearer t" in heads[0]


def test_an_error_event_is_a_kube_error_with_its_status_code():
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                           "message": "The resourceVersion for the provided watch is too old."}}
    port, _ = serve_once(chunked(event("ADDED", "a", "5"), json.dumps(expired).encode() + b"\n"))
    events = client(port).watch("whereabouts.cni.cncf.io/v1alpha1", "ippools", "4", 60)
    assert next(events) == (None, None) and next(events)[0] == "ADDED"
    with pytest.raises(KubeError) as raised:
        next(events)
    assert raised.value.code == 410 and raised.value.reason == "Expired"


def test_a_refused_watch_is_a_kube_error():
    body = json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden", "message": "cannot watch"}).encode()
    port, _ = serve_once(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
    with pytest.raises(KubeError) as raised:
        list(client(port).watch("whereabouts.cni.cncf.io/v1alpha1", "ippools", "4", 60))
    assert raised.value.code == 403 and "cannot watch" in raised.value.message
