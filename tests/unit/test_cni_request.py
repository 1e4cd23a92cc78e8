"""Building a Request from env + stdin: every rule of Go's skel, driven with plain values."""

from __future__ import annotations

import json

import pytest

from cni_ipam.cni import versions
from cni_ipam.cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    UNKNOWN_CONTAINER,
    CNIError,
)
from cni_ipam.cni.request import build_request, check_container_id, check_ifname, decode_config

CONFIG = {"cniVersion": "1.0.0", "name": "net1", "ipam": {"type": "static"}}


def env(command="ADD", **overrides) -> dict:
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/run/netns/pod",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def stdin_of(config) -> callable:
    data = config if isinstance(config, bytes) else json.dumps(config).encode()
    return lambda: data


def fails(env_dict, config=CONFIG) -> CNIError:
    with pytest.raises(CNIError) as info:
        build_request(env_dict, stdin_of(config))
    return info.value


# --- required environment variables -------------------------------------------------------------

@pytest.mark.parametrize("command, missing", [
    ("ADD", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
    ("CHECK", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
    ("DEL", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),  # CNI_NETNS is optional on DEL
    ("GC", ["CNI_PATH"]),
])
def test_missing_env_is_code_4_naming_every_variable_in_go_order(command, missing):
    bare = {"CNI_COMMAND": command}
    error = fails(bare)
    assert error.code == INVALID_ENV
    assert error.msg == f"required env variables [{','.join(missing)}] missing"


@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])
def test_one_missing_variable_is_named_alone(name):
    error = fails(env("ADD", **{name: None}))
    assert (error.code, error.msg) == (INVALID_ENV, f"required env variables [{name}] missing")


def test_empty_variable_counts_as_missing():
    error = fails(env("ADD", CNI_CONTAINERID=""))
    assert error.msg == "required env variables [CNI_CONTAINERID] missing"


def test_missing_command_is_named():
    error = fails({"CNI_CONTAINERID": "x"})
    assert (error.code, error.msg) == (INVALID_ENV, "required env variables [CNI_COMMAND] missing")


def test_del_without_netns_is_accepted():
    request = build_request(env("DEL", CNI_NETNS=None), stdin_of(CONFIG))
    assert request.command == "DEL" and request.netns == ""


@pytest.mark.parametrize("command", ["STATUS"])
def test_status_needs_no_container_variables(command):
    config = dict(CONFIG, cniVersion="1.1.0")
    request = build_request({"CNI_COMMAND": command}, stdin_of(config))
    assert request.command == command


def test_unknown_command_is_code_4():
    error = fails(env("FROB"))
    assert (error.code, error.msg) == (INVALID_ENV, "unknown CNI_COMMAND: FROB")


def test_request_carries_env_and_config():
    request = build_request(env("ADD", CNI_ARGS="IgnoreUnknown=1"), stdin_of(CONFIG))
    assert (request.command, request.container_id, request.netns, request.ifname, request.args, request.path) == \
        ("ADD", "c0ffee", "/run/netns/pod", "eth0", "IgnoreUnknown=1", "/opt/cni/bin")
    assert request.config == CONFIG
    assert request.cni_version == "1.0.0" and request.name == "net1"
    assert request.ipam == {"type": "static"}


# --- container ID -------------------------------------------------------------------------------

@pytest.mark.parametrize("container_id", ["a", "0abc", "A.b-c_d", "f" * 64])
def test_good_container_ids(container_id):
    assert build_request(env("ADD", CNI_CONTAINERID=container_id), stdin_of(CONFIG)).container_id == container_id


@pytest.mark.parametrize("container_id", ["-abc", ".abc", "_abc", "a b", "a/b", "a:b", "é", "ab\n"])
def test_bad_container_id_is_code_4_with_the_id_in_details(container_id):
    error = fails(env("ADD", CNI_CONTAINERID=container_id))
    assert (error.code, error.msg, error.details) == (INVALID_ENV, "invalid characters in containerID", container_id)


def test_empty_container_id_alone_is_code_3():
    # Only reachable for commands that do not require the variable; Go's ValidateContainerID says the same.
    with pytest.raises(CNIError) as info:
        check_container_id("")
    assert (info.value.code, info.value.msg) == (UNKNOWN_CONTAINER, "missing containerID")


# --- interface name -----------------------------------------------------------------------------

@pytest.mark.parametrize("ifname", ["eth0", "a" * 15, "net-1.2", "x"])
def test_good_ifnames(ifname):
    check_ifname(ifname)
    assert build_request(env("ADD", CNI_IFNAME=ifname), stdin_of(CONFIG)).ifname == ifname


@pytest.mark.parametrize("ifname, words", [
    ("a" * 16, "too long"),
    (".", ". or .."),
    ("..", ". or .."),
    ("a/b", "contains / or : or whitespace"),
    ("a:b", "contains / or : or whitespace"),
    ("a b", "contains / or : or whitespace"),
    ("a\tb", "contains / or : or whitespace"),
])
def test_bad_ifname_is_code_4(ifname, words):
    error = fails(env("ADD", CNI_IFNAME=ifname))
    assert error.code == INVALID_ENV
    assert words in error.msg


def test_too_long_ifname_says_the_limit():
    error = fails(env("DEL", CNI_IFNAME="a" * 16))
    assert error.details == "interface name should be less than 16 characters"


def test_empty_ifname_alone():
    with pytest.raises(CNIError) as info:
        check_ifname("")
    assert (info.value.code, info.value.msg) == (INVALID_ENV, "interface name is empty")


# --- stdin: JSON and network name ---------------------------------------------------------------

@pytest.mark.parametrize("stdin", [b"", b"{not json", b"[]", b"42", b'"text"', b"\xff\xfe"])
def test_undecodable_stdin_is_code_6(stdin):
    error = fails(env("ADD"), stdin)
    assert error.code == DECODE_FAILURE
    assert error.msg.startswith("error unmarshalling network config")


@pytest.mark.parametrize("config", [{"cniVersion": "1.0.0"}, {"cniVersion": "1.0.0", "name": ""},
                                    {"cniVersion": "1.0.0", "name": None}])
def test_missing_name_is_code_7(config):
    error = fails(env("ADD"), config)
    assert (error.code, error.msg) == (INVALID_CONFIG, "missing network name")


@pytest.mark.parametrize("name", ["bad name", "-net", "net/1", "nét"])
def test_invalid_name_is_code_7_with_the_name(name):
    error = fails(env("ADD"), dict(CONFIG, name=name))
    assert (error.code, error.msg, error.details) == (INVALID_CONFIG, "invalid characters found in network name", name)


def test_non_string_name_is_code_6():
    assert fails(env("ADD"), dict(CONFIG, name=5)).code == DECODE_FAILURE


def test_name_is_checked_before_the_container_id():
    # Go validates the config, then the container ID, then the ifname.
    error = fails(env("ADD", CNI_CONTAINERID="-x", CNI_IFNAME=".."), {"cniVersion": "1.0.0"})
    assert error.msg == "missing network name"
    error = fails(env("ADD", CNI_CONTAINERID="-x", CNI_IFNAME=".."))
    assert error.msg == "invalid characters in containerID"


def test_decode_config_returns_the_object():
    assert decode_config(b'{"name": "n", "x": [1]}') == {"name": "n", "x": [1]}


# --- cniVersion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_every_supported_version_is_accepted_for_add(version):
    assert build_request(env("ADD"), stdin_of(dict(CONFIG, cniVersion=version))).cni_version == version


@pytest.mark.parametrize("version", ["9.9.9", "0.5.0", "abc", "1.0"])
def test_unsupported_version_is_code_1_with_details(version):
    error = fails(env("ADD"), dict(CONFIG, cniVersion=version))
    assert (error.code, error.msg) == (INCOMPATIBLE_VERSION, "incompatible CNI versions")
    supported = " ".join(f'"{v}"' for v in versions.SUPPORTED)
    assert error.details == f'config is "{version}", plugin supports [{supported}]'


def test_missing_or_empty_version_means_0_1_0():
    for config in ({"name": "n"}, {"name": "n", "cniVersion": ""}):
        assert build_request(env("ADD"), stdin_of(config)).cni_version == "0.1.0"


def test_non_string_version_is_code_6():
    assert fails(env("ADD"), dict(CONFIG, cniVersion=1)).code == DECODE_FAILURE


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1"])
def test_check_below_0_4_0_is_code_1(version):
    error = fails(env("CHECK"), dict(CONFIG, cniVersion=version))
    assert (error.code, error.msg) == (INCOMPATIBLE_VERSION, "config version does not allow CHECK")
    assert version in error.details and "0.4.0" in error.details


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_from_0_4_0(version):
    assert build_request(env("CHECK"), stdin_of(dict(CONFIG, cniVersion=version))).command == "CHECK"


@pytest.mark.parametrize("command", ["GC", "STATUS"])
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_gc_and_status_below_1_1_0_are_code_1(command, version):
    error = fails(env(command), dict(CONFIG, cniVersion=version))
    assert (error.code, error.msg) == (INCOMPATIBLE_VERSION, f"config version does not allow {command}")


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_at_1_1_0(command):
    assert build_request(env(command), stdin_of(dict(CONFIG, cniVersion="1.1.0"))).command == command


def test_del_below_0_4_0_is_fine():
    assert build_request(env("DEL"), stdin_of(dict(CONFIG, cniVersion="0.1.0"))).cni_version == "0.1.0"


# --- VERSION never reads stdin ------------------------------------------------------------------

def test_version_never_reads_stdin():
    def explode():
        raise AssertionError("VERSION read stdin")

    request = build_request({"CNI_COMMAND": "VERSION"}, explode)
    assert request.command == "VERSION"


def test_add_reads_stdin_once():
    calls = []

    def reader():
        calls.append(1)
        return json.dumps(CONFIG).encode()

    request = build_request(env("ADD"), reader)
    assert calls == [1] and request.stdin == json.dumps(CONFIG).encode()


def test_missing_env_is_reported_before_stdin_is_read():
    def explode():
        raise AssertionError("stdin read before the env check")

    assert fails({"CNI_COMMAND": "ADD"}, b"").code == INVALID_ENV
    with pytest.raises(CNIError):
        build_request({"CNI_COMMAND": "ADD"}, explode)


# --- Request accessors --------------------------------------------------------------------------

def test_missing_ipam_is_code_7():
    request = build_request(env("ADD"), stdin_of({"cniVersion": "1.0.0", "name": "n"}))
    with pytest.raises(CNIError) as info:
        request.ipam
    assert (info.value.code, info.value.msg) == (INVALID_CONFIG, "IPAM config missing 'ipam' key")


def test_ipam_not_an_object_is_code_7():
    request = build_request(env("ADD"), stdin_of(dict(CONFIG, ipam=[1])))
    with pytest.raises(CNIError) as info:
        request.ipam
    assert info.value.code == INVALID_CONFIG and "ipam" in info.value.msg and "list" in info.value.msg


def test_runtime_config_and_prev_result():
    config = dict(CONFIG, runtimeConfig={"ips": ["10.0.0.1/24"]}, prevResult={"cniVersion": "1.0.0"})
    request = build_request(env("CHECK"), stdin_of(config))
    assert request.runtime_config == {"ips": ["10.0.0.1/24"]}
    assert request.prev_result == {"cniVersion": "1.0.0"}
    bare = build_request(env("ADD"), stdin_of(dict(CONFIG, runtimeConfig="junk")))
    assert bare.runtime_config == {} and bare.prev_result is None


# --- hostile input: size, depth, bytes that are not UTF-8 (issue 14) -----------------------------

def test_stdin_beyond_the_limit_is_code_6_naming_it():
    from cni_ipam.cni.request import MAX_STDIN

    big = json.dumps(dict(CONFIG, pad="x" * MAX_STDIN)).encode()
    error = fails(env("ADD"), big)
    assert error.code == DECODE_FAILURE
    assert "larger than 4 MiB" in error.msg and str(MAX_STDIN) in error.details


def test_stdin_at_the_limit_is_read():
    from cni_ipam.cni.request import MAX_STDIN

    data = json.dumps(CONFIG).encode()
    data += b" " * (MAX_STDIN - len(data))
    assert build_request(env("ADD"), stdin_of(data)).name == "net1"


@pytest.mark.parametrize("depth", [300, 995, 1000])
def test_deep_nesting_is_code_6(depth):
    stdin = b'{"cniVersion":"1.0.0","name":"n","x":' + b"[" * depth + b"]" * depth + b"}"
    error = fails(env("ADD"), stdin)
    assert error.code == DECODE_FAILURE
    assert "nested more than" in error.msg


def test_unpaired_surrogate_in_config_is_code_6():
    error = fails(env("ADD"), b'{"cniVersion":"1.0.0","name":"n","ipam":{"log_file":"/tmp/\\ud800"}}')
    assert error.code == DECODE_FAILURE and "surrogate" in error.msg


NOT_UTF8 = "e\udcff"  # b"e\xff" as cni.environment() decodes it (surrogateescape)


@pytest.mark.parametrize("command", ["ADD", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize("name", ["CNI_IFNAME", "CNI_NETNS", "CNI_ARGS"])
def test_variable_not_utf8_is_code_4_naming_it(command, name):
    config = dict(CONFIG, cniVersion="1.1.0")
    error = fails(env(command, **{name: NOT_UTF8}), config)
    assert error.code == INVALID_ENV
    assert error.msg == f"{name}: b'e\\xff' is not valid UTF-8"


def test_del_of_an_interface_name_not_utf8_has_nothing_to_do():
    from cni_ipam.cni.request import NothingToDo

    with pytest.raises(NothingToDo, match="CNI_IFNAME b'e\\\\xff' is not valid UTF-8"):
        build_request(env("DEL", CNI_IFNAME=NOT_UTF8), stdin_of(CONFIG))


@pytest.mark.parametrize("name", ["CNI_NETNS", "CNI_ARGS"])
def test_del_drops_netns_or_args_not_utf8_with_a_warning(name):
    request = build_request(env("DEL", **{name: NOT_UTF8}), stdin_of(CONFIG))
    assert (request.netns if name == "CNI_NETNS" else request.args) == ""
    assert request.warnings == [f"{name} b'e\\xff' is not valid UTF-8; DEL ignores it"]
