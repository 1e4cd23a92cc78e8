"""The dhcp plugin's commands through skel.dispatch, with a scripted fake daemon (no root, no network)."""

from __future__ import annotations

import json

import pytest

from cni_ipam.cni.skel import dispatch
from cni_ipam_lab.dhcp import FakeDaemon
from cni_ipam.plugins import dhcp

VIEW = {"address": "192.0.2.50", "prefix": 24, "gateway": "192.0.2.1", "server": "192.0.2.1",
        "routes": [{"dst": "10.9.0.0/16", "gw": "192.0.2.254"}, {"dst": "192.0.2.128/25", "gw": "0.0.0.0", "scope": 253}],
        "dns": {"nameservers": ["192.0.2.53"], "domain": "dhcp.test"}}


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


@pytest.fixture
def daemon(tmp_path):
    replies = {}

    def script(request):
        answer = replies.get(request["op"], {"ok": True})
        return [(0, line({"wait": 5})), (0, line(answer))]

    fake = FakeDaemon(str(tmp_path / "dhcp.sock"), script)
    fake.replies = replies
    yield fake
    fake.close()


def call(command, socket_path, version="1.0.0", args="", netns="/run/netns/pod", ifname="net1", **config):
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": args}
    ipam = dict({"type": "dhcp", "daemonSocketPath": socket_path}, **config.pop("ipam", {}))
    stdin = json.dumps(dict({"cniVersion": version, "name": "mynet", "type": "macvlan", "ipam": ipam}, **config))
    outcome = dispatch(dhcp.PLUGIN, env, lambda: stdin.encode())
    output = json.loads(outcome.stdout) if outcome.stdout.strip() else None
    return outcome, output


def test_add_asks_the_daemon_and_returns_address_gateway_routes_and_dns(daemon):
    daemon.replies["add"] = {"ok": True, "lease": VIEW}
    outcome, output = call("ADD", daemon.path, ipam={"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}],
                                                       "request": [{"option": "ntp-servers"}]},
                           args="IgnoreUnknown=1;K8S_POD_NAME=web-0")
    assert outcome.exit_code == 0, outcome
    assert output == {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.50/24", "gateway": "192.0.2.1"}],
                      "routes": [{"dst": "10.9.0.0/16", "gw": "192.0.2.254"}, {"dst": "192.0.2.128/25", "gw": "0.0.0.0"}],
                      "dns": {"nameservers": ["192.0.2.53"], "domain": "dhcp.test"}}
    [request] = daemon.requests
    assert request == {"op": "add", "v": 1, "containerID": "c1", "network": "mynet", "ifname": "net1",
                       "netns": "/run/netns/pod", "params": [1, 3, 6, 15, 33, 121, 42],
                       "provide": {"12": b"web-0".hex()}}


def test_add_in_1_1_0_carries_route_scope_and_priority(daemon):
    daemon.replies["add"] = {"ok": True, "lease": VIEW}
    outcome, output = call("ADD", daemon.path, version="1.1.0", ipam={"priority": 100})
    assert output["routes"] == [{"dst": "10.9.0.0/16", "gw": "192.0.2.254", "priority": 100},
                                {"dst": "192.0.2.128/25", "gw": "0.0.0.0", "priority": 100, "scope": 253}]


def test_add_in_0_2_0(daemon):
    daemon.replies["add"] = {"ok": True, "lease": dict(VIEW, routes=[{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}])}
    _, output = call("ADD", daemon.path, version="0.2.0")
    assert output["ip4"] == {"ip": "192.0.2.50/24", "gateway": "192.0.2.1",
                             "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]}


def test_a_relative_netns_is_made_absolute(daemon, monkeypatch, tmp_path):
    daemon.replies["add"] = {"ok": True, "lease": VIEW}
    monkeypatch.chdir(tmp_path)
    call("ADD", daemon.path, netns="ns/pod")
    assert daemon.requests[0]["netns"] == f"{tmp_path}/ns/pod"


def test_the_daemons_error_is_passed_on(daemon):
    daemon.replies["add"] = {"ok": False, "code": 11, "msg": "dhcp: no lease for net1: no DHCP server answered",
                             "details": "is a DHCP server reachable?"}
    outcome, output = call("ADD", daemon.path)
    assert outcome.exit_code == 1
    assert output == {"cniVersion": "1.0.0", "code": 11, "msg": "dhcp: no lease for net1: no DHCP server answered",
                      "details": "is a DHCP server reachable?"}


def test_no_daemon(tmp_path):
    socket_path = str(tmp_path / "nobody.sock")
    outcome, output = call("ADD", socket_path)
    assert output["code"] == 11 and "cannot reach the DHCP daemon: no DHCP daemon socket at" in output["msg"]
    assert "dhcp daemon" in output["details"]
    outcome, output = call("CHECK", socket_path, prevResult={"cniVersion": "1.0.0"})
    assert output["code"] == 11
    outcome, output = call("STATUS", socket_path, version="1.1.0")
    assert outcome.exit_code == 1 and output["code"] == 50
    outcome, output = call("DEL", socket_path)
    assert outcome.exit_code == 0 and output is None
    assert "lease not released: dhcp: cannot reach the DHCP daemon" in outcome.stderr
    outcome, _ = call("GC", socket_path, version="1.1.0", **{"cni.dev/valid-attachments": []})
    assert outcome.exit_code == 0 and "GC skipped" in outcome.stderr


def test_bad_options_never_reach_the_daemon(daemon):
    outcome, output = call("ADD", daemon.path, ipam={"request": [{"option": "nonsense"}]})
    assert output["code"] == 7 and "unknown DHCP option name 'nonsense'" in output["msg"]
    assert daemon.requests == []


def test_check_compares_the_lease_with_prev_result(daemon):
    daemon.replies["check"] = {"ok": True, "lease": VIEW, "state": "bound"}
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.50/24"}]}
    outcome, _ = call("CHECK", daemon.path, prevResult=prev)
    assert outcome.exit_code == 0, outcome
    assert daemon.requests[0] == {"op": "check", "v": 1, "containerID": "c1", "network": "mynet", "ifname": "net1"}
    outcome, output = call("CHECK", daemon.path, prevResult={"cniVersion": "1.0.0", "ips": [{"address": "192.0.2.9/24"}]})
    assert output["code"] == 7 and "is 192.0.2.50, not in prevResult (192.0.2.9)" in output["msg"]
    daemon.replies["check"] = {"ok": False, "code": 3, "msg": "dhcp: no DHCP lease is held for c1/mynet/net1"}
    outcome, output = call("CHECK", daemon.path, prevResult=prev)
    assert output["code"] == 3


def test_del_passes_the_daemons_note_on_and_needs_no_netns(daemon):
    daemon.replies["del"] = {"ok": True, "released": False, "note": "no lease was held for c1/mynet/net1"}
    outcome, output = call("DEL", daemon.path, netns="")
    assert outcome.exit_code == 0 and output is None
    assert "no lease was held" in outcome.stderr
    assert daemon.requests[0]["netns"] == ""


# What cni.environment() makes of a variable that is not UTF-8 (b"\\xff" read with surrogateescape).
NOT_UTF8 = {"ifname": "e\udcff", "netns": "/run/netns/p\udcff", "args": "K8S_POD_NAME=\udcff"}


@pytest.mark.parametrize("field,variable", [("ifname", "CNI_IFNAME"), ("netns", "CNI_NETNS"), ("args", "CNI_ARGS")])
def test_add_and_check_refuse_variables_that_are_not_utf8(daemon, field, variable):
    for command in ("ADD", "CHECK"):
        outcome, output = call(command, daemon.path, prevResult={"cniVersion": "1.0.0"}, **{field: NOT_UTF8[field]})
        assert outcome.exit_code == 1 and output["code"] == 4, outcome
        assert output["msg"].startswith(f"{variable}: b'") and output["msg"].endswith("' is not valid UTF-8")
        assert "\\xff" in output["msg"]
    assert daemon.requests == []


def test_del_with_variables_that_are_not_utf8_succeeds(daemon):
    """DEL always succeeds: no lease can exist for such an ifname; a bad netns or args is not needed."""
    outcome, output = call("DEL", daemon.path, ifname=NOT_UTF8["ifname"])
    assert outcome.exit_code == 0 and output is None and daemon.requests == []
    assert "CNI_IFNAME b'e\\xff' is not valid UTF-8, so no ADD can have used it: nothing to delete" in outcome.stderr
    for field in ("netns", "args"):
        outcome, output = call("DEL", daemon.path, **{field: NOT_UTF8[field]})
        assert outcome.exit_code == 0 and output is None, outcome
    assert [(r["op"], r["ifname"], r["netns"]) for r in daemon.requests] == [("del", "net1", ""),
                                                                             ("del", "net1", "/run/netns/pod")]


def test_del_without_an_ipam_section_still_succeeds(tmp_path):
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "net1", "CNI_PATH": "/x"}
    outcome = dispatch(dhcp.PLUGIN, env, lambda: b'{"cniVersion":"1.0.0","name":"n"}')
    assert outcome.exit_code == 0


def test_gc_sends_the_valid_attachments(daemon):
    daemon.replies["gc"] = {"ok": True, "released": ["old/mynet/net1"]}
    outcome, _ = call("GC", daemon.path, version="1.1.0",
                      **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "net1"}]})
    assert outcome.exit_code == 0 and "GC released the lease of old/mynet/net1" in outcome.stderr
    assert daemon.requests[0] == {"op": "gc", "v": 1, "network": "mynet", "valid": [["c1", "net1"]]}


def test_status_with_a_daemon(daemon):
    outcome, _ = call("STATUS", daemon.path, version="1.1.0")
    assert outcome.exit_code == 0 and daemon.requests[0]["op"] == "status"


def test_main_runs_the_daemon_for_argv_daemon(monkeypatch):
    seen = []
    import cni_ipam.dhcp.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr("sys.argv", ["dhcp", "daemon", "-socketpath", "/x.sock"])
    with pytest.raises(SystemExit) as caught:
        dhcp.main()
    assert caught.value.code == 0 and seen == [["-socketpath", "/x.sock"]]
