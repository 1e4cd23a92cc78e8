"""The plugin's side of the daemon protocol, against a scripted fake daemon (no root, no network)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from cni_ipam.dhcp import rpc
from cni_ipam_lab.dhcp import FakeDaemon


@pytest.fixture
def fake(tmp_path):
    made = []

    def make(script):
        daemon = FakeDaemon(str(tmp_path / f"d{len(made)}.sock"), script)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_request_and_reply(fake):
    daemon = fake(lambda req: [(0, line({"ok": True, "echo": req["op"]}))])
    assert rpc.call(daemon.path, {"op": "status"}) == {"ok": True, "echo": "status"}
    assert daemon.requests == [{"op": "status", "v": rpc.VERSION}]


def test_a_wait_line_extends_the_deadline(fake):
    daemon = fake(lambda req: [(0, line({"wait": 2})), (0.4, line({"ok": True}))])
    started = time.monotonic()
    assert rpc.call(daemon.path, {"op": "add"}, first_timeout=0.2) == {"ok": True}
    assert 0.35 < time.monotonic() - started < 2


def test_replies_may_arrive_in_pieces(fake):
    data = line({"wait": 1}) + line({"ok": False, "code": 11, "msg": "x"})
    daemon = fake(lambda req: [(0, data[:5]), (0.05, data[5:30]), (0.05, data[30:])])
    assert rpc.call(daemon.path, {"op": "add"}) == {"ok": False, "code": 11, "msg": "x"}


def test_a_silent_daemon_costs_the_first_timeout_only(fake):
    daemon = fake(lambda req: [(3, b"")])
    started = time.monotonic()
    with pytest.raises(rpc.NoAnswer, match="did not answer within 0.3s"):
        rpc.call(daemon.path, {"op": "add"}, first_timeout=0.3)
    assert time.monotonic() - started < 1.5


def test_a_daemon_that_promised_and_did_not_deliver(fake):
    daemon = fake(lambda req: [(0, line({"wait": 0.3})), (3, b"")])
    with pytest.raises(rpc.NoAnswer, match="within 0.3s"):
        rpc.call(daemon.path, {"op": "add"}, first_timeout=0.2)


def test_no_socket_file(tmp_path):
    with pytest.raises(rpc.Unreachable, match="no DHCP daemon socket at"):
        rpc.call(str(tmp_path / "none.sock"), {"op": "status"})


def test_a_stale_socket_file(tmp_path):
    path = str(tmp_path / "stale.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()  # the file stays, nobody listens
    with pytest.raises(rpc.Unreachable, match="nothing is listening"):
        rpc.call(path, {"op": "status"})


def test_hang_up_and_garbage(fake):
    hang_up = fake(lambda req: [])
    with pytest.raises(rpc.Unreachable, match="closed the connection"):
        rpc.call(hang_up.path, {"op": "status"})
    garbage = fake(lambda req: [(0, b"<html>\n")])
    with pytest.raises(rpc.Unreachable, match="not JSON"):
        rpc.call(garbage.path, {"op": "status"})
    a_list = fake(lambda req: [(0, b"[1]\n")])
    with pytest.raises(rpc.Unreachable, match="not an object"):
        rpc.call(a_list.path, {"op": "status"})


def test_a_daemon_that_trickles_bytes_without_a_newline_costs_the_first_timeout_only(fake):
    daemon = fake(lambda req: [(0.1, b"{")] + [(0.1, b" ")] * 40)
    started = time.monotonic()
    with pytest.raises(rpc.NoAnswer, match="did not answer within 0.5s"):
        rpc.call(daemon.path, {"op": "add"}, first_timeout=0.5)
    assert time.monotonic() - started < 1.5
