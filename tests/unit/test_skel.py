"""skel.dispatch(): env + stdin reader in, Outcome(stdout, stderr, exit_code) out."""

from __future__ import annotations

import ipaddress
import json

import pytest

from cni_ipam.cni import versions
from cni_ipam.cni.errors import CNIError
from cni_ipam.cni.result import IPConfig, Result
from cni_ipam.cni.skel import INTERNAL, Outcome, Plugin, dispatch, version_text
from cni_ipam.plugins import static

CONFIG = {"cniVersion": "1.0.0", "name": "net1", "ipam": {"type": "static"}}


def env(command="ADD", **extra):
    base = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/p", "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin"}
    base.update(extra)
    return base


def reader(config):
    data = config if isinstance(config, bytes) else json.dumps(config).encode()
    return lambda: data


def no_stdin():
    raise AssertionError("stdin must not be read")


def fake(calls=None, result=None, error=None, warn=None, crash=None):
    """A plugin whose ADD records the request and returns/raises what it is told."""
    calls = calls if calls is not None else []

    def add(request):
        calls.append(request)
        if warn:
            request.warnings.append(warn)
        if crash:
            raise crash
        if error:
            raise error
        return result

    return Plugin("fake", "does fake things", {"ADD": add, "DEL": lambda request: None})


def error_of(outcome: Outcome) -> dict:
    assert outcome.exit_code == 1, outcome
    return json.loads(outcome.stdout)


# --- no command, VERSION ------------------------------------------------------------------------

def test_no_command_prints_about_on_stderr_and_exits_0():
    outcome = dispatch(fake(), {}, no_stdin)
    assert outcome.exit_code == 0 and outcome.stdout == ""
    assert outcome.stderr.startswith("CNI fake plugin")
    assert "does fake things" in outcome.stderr
    assert f"CNI protocol versions supported: {', '.join(versions.SUPPORTED)}" in outcome.stderr


def test_empty_command_is_the_same_as_none():
    assert dispatch(fake(), {"CNI_COMMAND": ""}, no_stdin).exit_code == 0


def test_version_ignores_stdin_and_env():
    outcome = dispatch(fake(), {"CNI_COMMAND": "VERSION"}, no_stdin)
    assert outcome.exit_code == 0 and outcome.stderr == ""
    assert json.loads(outcome.stdout) == {"cniVersion": versions.LATEST, "supportedVersions": list(versions.SUPPORTED)}
    assert outcome.stdout == version_text() and outcome.stdout.endswith("\n")


# --- success ------------------------------------------------------------------------------------

def test_add_result_is_converted_to_the_request_version():
    result = Result([IPConfig(ipaddress.ip_interface("10.0.0.5/24"), ipaddress.ip_address("10.0.0.1"))])
    for version, key in (("0.2.0", "ip4"), ("0.4.0", "ips"), ("1.0.0", "ips")):
        outcome = dispatch(fake(result=result), env(), reader(dict(CONFIG, cniVersion=version)))
        assert outcome.exit_code == 0 and outcome.stderr == ""
        out = json.loads(outcome.stdout)
        assert out["cniVersion"] == version and key in out


def test_handler_gets_the_request():
    calls = []
    dispatch(fake(calls, result=Result()), env(CNI_ARGS="IgnoreUnknown=1"), reader(CONFIG))
    (request,) = calls
    assert (request.command, request.container_id, request.ifname, request.args) == ("ADD", "c1", "eth0", "IgnoreUnknown=1")


def test_handler_returning_none_prints_nothing():
    outcome = dispatch(fake(), env("DEL"), reader(CONFIG))
    assert (outcome.stdout, outcome.stderr, outcome.exit_code) == ("", "", 0)


def test_command_without_handler_succeeds_silently():
    outcome = dispatch(fake(), env("STATUS"), reader(dict(CONFIG, cniVersion="1.1.0")))
    assert (outcome.stdout, outcome.exit_code) == ("", 0)


def test_warnings_go_to_stderr_prefixed_with_the_plugin_name():
    outcome = dispatch(fake(result=Result(), warn="look out"), env(), reader(CONFIG))
    assert outcome.exit_code == 0
    assert outcome.stderr == "fake: warning: look out\n"


# --- errors -------------------------------------------------------------------------------------

def test_env_error_is_json_on_stdout_with_exit_1():
    outcome = dispatch(fake(), {"CNI_COMMAND": "ADD"}, no_stdin)
    error = error_of(outcome)
    assert error["code"] == 4 and "CNI_CONTAINERID" in error["msg"]
    assert error["cniVersion"] == versions.LATEST  # no config read yet


def test_handler_error_carries_the_request_version_and_details():
    outcome = dispatch(fake(error=CNIError(7, "bad thing", "fix it")), env(), reader(dict(CONFIG, cniVersion="0.3.1")))
    assert error_of(outcome) == {"cniVersion": "0.3.1", "code": 7, "msg": "bad thing", "details": "fix it"}


def test_error_without_details_has_no_details_key():
    outcome = dispatch(fake(error=CNIError(11, "later")), env(), reader(CONFIG))
    assert "details" not in error_of(outcome)


def test_warnings_are_kept_when_the_handler_fails():
    outcome = dispatch(fake(error=CNIError(7, "bad"), warn="w"), env(), reader(CONFIG))
    assert outcome.exit_code == 1 and outcome.stderr == "fake: warning: w\n"


def test_unsupported_version_error_uses_our_latest_version():
    error = error_of(dispatch(fake(), env(), reader(dict(CONFIG, cniVersion="9.9.9"))))
    assert error["code"] == 1 and error["cniVersion"] == versions.LATEST


def test_bad_json_is_code_6():
    assert error_of(dispatch(fake(), env(), reader(b"{")))["code"] == 6


def test_crash_is_code_999_with_traceback_on_stderr():
    outcome = dispatch(fake(crash=ZeroDivisionError("boom")), env(), reader(CONFIG))
    error = error_of(outcome)
    assert error["code"] == INTERNAL == 999
    assert "ZeroDivisionError: boom" in error["msg"]
    assert "Traceback" in outcome.stderr


def test_stdin_io_error_is_reported():
    def broken():
        raise CNIError(5, "error reading from stdin: EIO")

    assert error_of(dispatch(fake(), env(), broken)) == {"cniVersion": versions.LATEST, "code": 5,
                                                         "msg": "error reading from stdin: EIO"}


# --- the static plugin through dispatch ---------------------------------------------------------

STATIC = dict(CONFIG, ipam={"type": "static", "addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
                            "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.1"]}})


def test_static_add():
    outcome = dispatch(static.PLUGIN, env(), reader(STATIC))
    assert outcome.exit_code == 0, outcome
    assert json.loads(outcome.stdout) == {"cniVersion": "1.0.0",
                                          "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
                                          "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.1"]}}


def test_static_add_warns_about_a_gateway_outside_the_subnet():
    config = dict(CONFIG, ipam={"type": "static", "addresses": [{"address": "10.0.0.5/24", "gateway": "10.1.0.1"}]})
    outcome = dispatch(static.PLUGIN, env(), reader(config))
    assert outcome.exit_code == 0
    assert outcome.stderr == "static: warning: gateway 10.1.0.1 is outside the subnet of 10.0.0.5/24\n"


def test_static_warns_about_unknown_ipam_keys():
    config = dict(CONFIG, ipam={"type": "static", "adresses": []})
    outcome = dispatch(static.PLUGIN, env(), reader(config))
    assert outcome.exit_code == 0 and "ipam.adresses is not a static IPAM key" in outcome.stderr


def test_static_del_ignores_a_broken_config():
    config = dict(CONFIG, ipam={"type": "static", "addresses": [{"address": "junk"}]})
    outcome = dispatch(static.PLUGIN, env("DEL", CNI_NETNS=""), reader(config))
    assert (outcome.exit_code, outcome.stdout) == (0, "")


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_static_gc_and_status_succeed_at_1_1_0(command):
    outcome = dispatch(static.PLUGIN, {"CNI_COMMAND": command, "CNI_PATH": "/x"}, reader(dict(STATIC, cniVersion="1.1.0")))
    assert (outcome.exit_code, outcome.stdout) == (0, "")


def check_config(prev, addresses=({"address": "10.0.0.5/24", "gateway": "10.0.0.1"},), version="1.0.0"):
    config = dict(CONFIG, cniVersion=version, ipam={"type": "static", "addresses": list(addresses)})
    if prev is not ...:
        config["prevResult"] = prev
    return config


def test_static_check_passes_on_its_own_add_result():
    added = json.loads(dispatch(static.PLUGIN, env(), reader(check_config(...))).stdout)
    outcome = dispatch(static.PLUGIN, env("CHECK"), reader(check_config(added)))
    assert (outcome.exit_code, outcome.stdout) == (0, "")


def test_static_check_needs_prev_result():
    error = error_of(dispatch(static.PLUGIN, env("CHECK"), reader(check_config(...))))
    assert (error["code"], error["msg"]) == (7, "Required prevResult missing")


def test_static_check_null_prev_result_is_missing():
    assert error_of(dispatch(static.PLUGIN, env("CHECK"), reader(check_config(None))))["msg"] == \
        "Required prevResult missing"


def test_static_check_empty_prev_result_is_present_but_lacks_the_address():
    error = error_of(dispatch(static.PLUGIN, env("CHECK"), reader(check_config({}))))
    assert error["msg"] == "static: address 10.0.0.5/24 is not in prevResult on interface eth0"


def test_static_check_empty_prev_result_and_no_addresses_passes():
    outcome = dispatch(static.PLUGIN, env("CHECK"), reader(check_config({}, addresses=())))
    assert outcome.exit_code == 0


def test_static_check_prev_result_must_be_an_object():
    error = error_of(dispatch(static.PLUGIN, env("CHECK"), reader(check_config(["x"]))))
    assert error["code"] == 7 and error["msg"].startswith("prevResult: expected an object")


def test_static_check_gateway_mismatch():
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.9"}]}
    error = error_of(dispatch(static.PLUGIN, env("CHECK"), reader(check_config(prev))))
    assert error["msg"] == "static: Failed to match addr 10.0.0.5 on interface eth0"
    assert error["details"] == "config gateway 10.0.0.1, prevResult gateway 10.0.0.9"


def test_static_check_gateway_missing_in_prev_result():
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24"}]}
    error = error_of(dispatch(static.PLUGIN, env("CHECK"), reader(check_config(prev))))
    assert error["details"] == "config gateway 10.0.0.1, prevResult gateway none"


def test_static_check_without_configured_gateway_ignores_prev_gateway():
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.9"}]}
    outcome = dispatch(static.PLUGIN, env("CHECK"), reader(check_config(prev, [{"address": "10.0.0.5/24"}])))
    assert outcome.exit_code == 0


def test_static_check_compares_ipv6_canonically():
    prev = {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "2001:DB8:0::5/64", "gateway": "2001:0db8::1"}]}
    addresses = [{"address": "2001:db8::5/64", "gateway": "2001:db8::1"}]
    outcome = dispatch(static.PLUGIN, env("CHECK"), reader(check_config(prev, addresses, version="0.4.0")))
    assert outcome.exit_code == 0, outcome


# --- hostile input (issue 14) --------------------------------------------------------------------

def test_del_of_an_interface_not_utf8_succeeds_without_running_the_plugin():
    calls = []

    def delete(request):
        calls.append(request)

    plugin = Plugin("fake", "does fake things", {"DEL": delete})
    outcome = dispatch(plugin, env("DEL", CNI_IFNAME="e\udcff"), reader(CONFIG))
    assert (outcome.exit_code, outcome.stdout, calls) == (0, "", [])
    assert outcome.stderr.startswith("fake: warning: CNI_IFNAME b'e\\xff' is not valid UTF-8")


def test_a_deeply_nested_config_is_code_6_in_every_command():
    deep = b'{"cniVersion":"1.1.0","name":"n","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    for command in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        outcome = dispatch(static.PLUGIN, env(command), reader(deep))
        assert error_of(outcome)["code"] == 6, outcome
        assert outcome.stderr == ""


def test_main_reads_at_most_one_byte_past_the_stdin_limit():
    import subprocess
    import sys

    from cni_ipam.cni.request import MAX_STDIN

    # After main() answers, the child counts what it left unread on stdin.
    code = ("import sys; from cni_ipam.cni import skel; from cni_ipam.plugins import static\n"
            "try:\n    skel.main(static.PLUGIN)\nexcept SystemExit:\n"
            "    sys.stderr.write(str(len(sys.stdin.buffer.read())))")
    stdin = b'{"cniVersion":"1.0.0","name":"n","ipam":{}}' + b" " * (2 * MAX_STDIN)
    done = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True,
                          env=dict(env("ADD"), PATH="/usr/bin:/bin"), timeout=60)
    assert json.loads(done.stdout)["code"] == 6
    assert b"larger than 4 MiB" in done.stdout
    assert int(done.stderr) == len(stdin) - MAX_STDIN - 1
