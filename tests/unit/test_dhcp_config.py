"""The dhcp plugin's ipam section: option names and codes, request/provide, errors (code 7)."""

from __future__ import annotations

import pytest

from cni_ipam.cni.errors import CNIError
from cni_ipam.cni.request import Request
from cni_ipam.dhcp.config import DEFAULT_SOCKET, lenient_args, parse
from cni_ipam.dhcp.names import DEFAULT_REQUEST


def request(ipam: dict, args: str = "") -> Request:
    return Request("ADD", "c1", "/run/netns/p", "eth0", args, "/opt/cni/bin",
                   {"cniVersion": "1.0.0", "name": "net", "ipam": dict({"type": "dhcp"}, **ipam)})


def test_defaults():
    config = parse(request({}))
    assert config.socket_path == DEFAULT_SOCKET
    assert config.params == list(DEFAULT_REQUEST) == [1, 3, 6, 15, 33, 121]
    assert config.provide == {} and config.priority is None


def test_request_adds_to_the_defaults_by_name_or_code():
    config = parse(request({"request": [{"option": "ntp-servers"}, {"option": "26"}, {"option": "routers"}]}))
    assert config.params == [1, 3, 6, 15, 33, 121, 42, 26]


def test_skip_default_keeps_only_what_is_requested():
    config = parse(request({"request": [{"option": "subnet-mask", "skipDefault": True}, {"option": "121"}]}))
    assert config.params == [1, 121]


def test_provide_value_and_from_arg():
    ipam = {"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"},
                        {"option": "vendor-class-identifier", "value": "cni"},
                        {"option": "user-class", "value": "fallback", "fromArg": "MISSING"},
                        {"option": "dhcp-client-identifier", "value": "my-id"}]}
    config = parse(request(ipam, "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;odd"))
    assert config.provide == {12: b"web-0", 60: b"cni", 77: b"fallback", 61: b"my-id"}


def test_from_arg_wins_over_value():
    ipam = {"provide": [{"option": "host-name", "value": "fixed", "fromArg": "K8S_POD_NAME"}]}
    assert parse(request(ipam, "K8S_POD_NAME=a=b")).provide == {12: b"a=b"}


def test_lenient_args_never_refuses():
    assert lenient_args("A=1;junk;;B=x=y;=z") == {"A": "1", "B": "x=y", "": "z"}
    assert lenient_args("") == {}


@pytest.mark.parametrize("ipam,fragment", [
    ({"request": [{"option": "classless_static_routes"}]}, "unknown DHCP option name 'classless_static_routes'"),
    ({"request": [{"option": "0"}]}, "out of range 1-254"),
    ({"request": [{"option": "255"}]}, "out of range 1-254"),
    ({"request": [{"skipDefault": True}]}, "ipam.request[0].option"),
    ({"request": [{"option": "dhcp-message-type"}]}, "not an option a server sends"),
    ({"request": "routers"}, "ipam.request: expected a list"),
    ({"request": ["routers"]}, "expected an object"),
    ({"request": [{"option": "routers", "skipDefault": "yes"}]}, "skipDefault: expected true or false"),
    ({"provide": [{"option": "300", "value": "x"}]}, "out of range 1-254"),
    ({"provide": [{"option": "host-name", "value": "x" * 256}]}, "256 bytes is too long"),
    ({"provide": [{"option": "dhcp-server-identifier", "value": "1.2.3.4"}]}, "the daemon sets"),
    ({"provide": [{"option": "53", "value": "1"}]}, "the daemon sets"),
    ({"provide": [{"option": "host-name", "value": 5}]}, "must be strings"),
    ({"provide": {"option": "host-name"}}, "ipam.provide: expected a list"),
    ({"daemonSocketPath": 5}, "daemonSocketPath: expected a path"),
    ({"priority": -1}, "ipam.priority"),
    ({"priority": True}, "ipam.priority"),
])
def test_bad_config_is_code_7_and_names_the_key(ipam, fragment):
    with pytest.raises(CNIError) as caught:
        parse(request(ipam))
    assert caught.value.code == 7
    assert fragment in caught.value.msg


def test_a_from_arg_value_too_long_is_code_7():
    ipam = {"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}
    with pytest.raises(CNIError, match="CNI_ARGS K8S_POD_NAME: 300 bytes is too long"):
        parse(request(ipam, "K8S_POD_NAME=" + "p" * 300))


def test_unknown_keys_are_warned_about():
    req = request({"daemonSocketPath": "/x.sock", "daemonSocket": "/y.sock", "priority": 5})
    config = parse(req)
    assert config.socket_path == "/x.sock" and config.priority == 5
    assert req.warnings == ["ipam.daemonSocket is not a dhcp IPAM key; it is ignored"]
