"""The daemon's pure parts: Go-style flags and durations, settings, request checking, log lines, metrics."""

from __future__ import annotations

import argparse
import json
import logging
import os

import pytest

from cni_ipam.dhcp.daemon.flags import Settings, build_parser, parse_duration
from cni_ipam.dhcp.daemon.logs import JSONFormatter
from cni_ipam.dhcp.daemon.metrics import Metrics
from cni_ipam.dhcp.daemon.requests import RequestError, Spec


@pytest.mark.parametrize("text,seconds", [("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5),
                                          ("0", 0), ("2.5", 2.5), ("250us", 0.00025), ("1h1m1s", 3661)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "1m 30s", "-5s", "ten"])
def test_bad_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_go_flags_in_every_spelling():
    parser = build_parser("dhcp daemon")
    args = parser.parse_args(["-socketpath", "/s.sock", "-hostprefix=/host", "-pidfile", "/run/d.pid",
                              "-timeout=5s", "-resendmax", "4s", "-broadcast=true", "-resendtimeout", "3m"])
    assert (args.socketpath, args.hostprefix, args.pidfile, args.timeout, args.resendmax, args.broadcast) == (
        "/s.sock", "/host", "/run/d.pid", 5, 4, True)
    args = parser.parse_args(["--socketpath=/t.sock", "--timeout", "1m", "--broadcast"])
    assert (args.socketpath, args.timeout, args.broadcast) == ("/t.sock", 60, True)
    args = parser.parse_args([])
    assert (args.socketpath, args.timeout, args.resendmax, args.broadcast) == ("/run/cni/dhcp.sock", 10, 62, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["-timeout", "soon"])


def test_settings_apply_the_host_prefix():
    args = build_parser("x").parse_args(["-hostprefix", "/host/"])
    settings = Settings(args)
    assert settings.socket_path == "/host/run/cni/dhcp.sock"
    assert settings.lease_dir == "/host/var/lib/cni/dhcp"
    assert settings.netns_path("/var/run/netns/pod") == "/host/var/run/netns/pod"
    explicit = Settings(build_parser("x").parse_args(["-hostprefix", "/host", "--lease-dir", "/l"]))
    assert explicit.lease_dir == "/l"


def test_settings_refuse_a_relative_pidfile_and_a_zero_timeout():
    with pytest.raises(SystemExit, match="absolute path"):
        Settings(build_parser("x").parse_args(["-pidfile", "dhcp.pid"]))
    with pytest.raises(SystemExit, match="-timeout"):
        Settings(build_parser("x").parse_args(["-timeout", "0s"]))


def request(**extra):
    return dict({"op": "add", "containerID": "c1", "network": "net", "ifname": "eth0", "netns": "/run/netns/p",
                 "params": [1, 3], "provide": {"12": b"web".hex()}}, **extra)


def test_spec_from_a_request():
    spec = Spec.from_request(request())
    assert spec.key == "c1/net/eth0" and spec.params == (1, 3) and spec.extra == {12: b"web"}
    again = Spec.from_record(json.loads(json.dumps(spec.to_record())))
    assert (again.key, again.netns, again.params, again.extra) == (spec.key, spec.netns, spec.params, spec.extra)


@pytest.mark.parametrize("extra,fragment", [
    ({"containerID": ""}, "'containerID' must be a non-empty string"),
    ({"ifname": 5}, "'ifname'"),
    ({"netns": "relative/path"}, "netns must be an absolute path"),
    ({"params": [1, 300]}, "params must be a list of option codes"),
    ({"params": "1,3"}, "params must be a list"),
    ({"provide": {"12": "zz"}}, "is not code: hex bytes"),
    ({"provide": {"53": "01"}}, "option 53 cannot be sent"),
    ({"provide": []}, "provide must be an object"),
])
def test_bad_requests(extra, fragment):
    with pytest.raises(RequestError) as caught:
        Spec.from_request(request(**extra))
    assert caught.value.code == 7 and fragment in caught.value.msg


@pytest.mark.parametrize("netns", ["/run/netns/../../proc/1/ns/net", "/..", "/run/netns/p/..", "/run/netns/p\udcff"])
def test_netns_paths_the_daemon_refuses_before_looking(netns):
    """``..`` (which would climb out of -hostprefix) and invalid UTF-8: code 4, naming CNI_NETNS and its value."""
    with pytest.raises(RequestError) as caught:
        Spec.from_request(request(netns=netns))
    assert caught.value.code == 4 and f"CNI_NETNS {netns!r}" in caught.value.msg
    assert "'..'" in caught.value.msg or "not valid UTF-8" in caught.value.msg
    assert "not the daemon's own" in caught.value.details


@pytest.mark.parametrize("netns", ["/run/netns/..pod", "/run/netns/pod..", "/proc/self/ns/net", "//run/./netns/p"])
def test_netns_paths_that_pass_to_the_open(netns):
    """No ``..`` component: what the path leads to is judged when it is opened (test_dhcp_netns.py)."""
    assert Spec.from_request(request(netns=netns)).netns == netns


@pytest.mark.parametrize("key", ["containerID", "network", "ifname"])
def test_text_fields_must_be_utf8(key):
    with pytest.raises(RequestError) as caught:
        Spec.from_request(request(**{key: "e\udcff"}), with_options=False)
    assert caught.value.code == 7 and f"{key!r} is not valid UTF-8" in caught.value.msg


def test_json_log_lines():
    record = logging.LogRecord("cni_ipam.dhcp", logging.WARNING, __file__, 1, "lost %s", ("192.0.2.5",), None)
    record.event = "lease.lost"
    record.fields = {"lease": "c1/net/eth0", "address": "192.0.2.5"}
    line = json.loads(JSONFormatter().format(record))
    assert line["level"] == "warning" and line["event"] == "lease.lost" and line["msg"] == "lost 192.0.2.5"
    assert line["lease"] == "c1/net/eth0" and line["ts"].endswith("Z")


def test_metrics_count_renew_failures():
    metrics = Metrics()
    for kind in ("bound", "renewing", "renewed", "rebinding", "rebound", "expired", "nak"):
        metrics.event(kind)
    assert metrics.renew_failures == 3 and metrics.events["bound"] == 1


def test_metrics_endpoint_serves_the_collector():
    prometheus = pytest.importorskip("prometheus_client")
    import socket
    import urllib.request

    class FakeManager:
        def count_by_state(self):
            return {"bound": 2, "rebinding": 1}

    metrics = Metrics()
    metrics.event("rebinding")
    metrics.acquired(0.012)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = metrics.serve(FakeManager(), "127.0.0.1", port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        if isinstance(served, tuple):
            served[0].shutdown()
    assert "cni_ipam_dhcp_active_leases 3.0" in text
    assert 'cni_ipam_dhcp_leases{state="rebinding"} 1.0' in text
    assert "cni_ipam_dhcp_renew_failures_total 1.0" in text
    assert 'cni_ipam_dhcp_lease_events_total{event="rebinding"} 1.0' in text
    assert prometheus is not None


def test_the_server_answers_each_connection_with_one_line(tmp_path):
    """Daemon.handle over a real socketpair: bad requests get code 7 and their reason, good ones their reply."""
    import socket

    from cni_ipam import linejson
    from cni_ipam.dhcp.daemon.server import Daemon

    server = Daemon(Settings(build_parser("x").parse_args(["--lease-dir", str(tmp_path / "leases")])))

    def ask(payload: bytes) -> dict:
        ours, theirs = socket.socketpair()
        with ours:
            ours.settimeout(5)
            ours.sendall(payload)
            ours.shutdown(socket.SHUT_WR)
            server.handle(theirs)
            return linejson.Reader(ours).read()

    assert ask(b'{"op": "status"}\n') == {"ok": True, "leases": 0}
    assert ask(b'{"op": "list"}\n') == {"ok": True, "leases": []}
    for payload, fragment in ((b"not json\n", "request is not JSON"), (b"[1]\n", "not a JSON object"),
                              (b'{"op": "status"}', "request is not a whole line"),
                              (b'{"op": "fly"}\n', "unknown op 'fly'"),
                              (b'{"op": "check", "containerID": "c1", "network": "n"}\n', "'ifname' must be")):
        answer = ask(payload)
        assert answer["ok"] is False and answer["code"] == 7 and fragment in answer["msg"], (payload, answer)


def test_refused_requests_are_answered_in_time_and_logged(tmp_path, caplog):
    """A FIFO, the daemon's own namespace, invalid UTF-8: each gets its CNI error at once and a log line.

    A FIFO used to block the request's thread in open(2) for good; the
    daemon's own namespace used to be entered (and its link brought up).
    """
    import socket
    import threading

    from cni_ipam import linejson
    from cni_ipam.dhcp.daemon.server import Daemon

    server = Daemon(Settings(build_parser("x").parse_args(["--lease-dir", str(tmp_path / "leases"), "-timeout", "1s"])))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)

    def ask(**fields) -> dict:
        ours, theirs = socket.socketpair()
        with ours:
            ours.settimeout(5)
            ours.sendall(linejson.encode(dict({"containerID": "c1", "network": "n", "ifname": "eth0"}, **fields)))
            threading.Thread(target=server.handle, args=(theirs,), daemon=True).start()
            reader = linejson.Reader(ours)
            while True:
                message = reader.read()  # TimeoutError if the daemon hangs
                if "ok" in message:
                    return message

    with caplog.at_level(logging.WARNING, logger="cni_ipam.dhcp"):
        answers = {"fifo": ask(op="add", netns=fifo), "own": ask(op="add", netns="/proc/self/ns/net"),
                   "utf8": ask(op="del", ifname="e\udcff")}
    assert answers["fifo"]["code"] == 4 and answers["fifo"]["msg"] == (
        f"dhcp: CNI_NETNS {fifo!r} refused: {fifo} is a FIFO, not a network namespace")
    assert answers["own"]["code"] == 4 and "is the DHCP daemon's own network namespace" in answers["own"]["msg"]
    assert answers["utf8"]["code"] == 7 and "'ifname' is not valid UTF-8" in answers["utf8"]["msg"]
    logged = [(r.fields["op"], r.fields["code"], r.getMessage()) for r in caplog.records if r.event == "rpc.refused"]
    assert [entry[:2] for entry in logged] == [("add", 4), ("add", 4), ("del", 7)]
    assert logged[0][2] == answers["fifo"]["msg"]
    assert ask(op="status") == {"ok": True, "leases": 0}
