"""CNI_ARGS parsing, as Go's types.LoadArgs does it."""

from __future__ import annotations

import pytest

from cni_ipam.cni.request import parse_bool, parse_cni_args
from cni_ipam.cni.errors import INVALID_ENV, CNIError

KNOWN = ("IP", "GATEWAY")


def fails(text, known=KNOWN) -> CNIError:
    with pytest.raises(CNIError) as info:
        parse_cni_args(text, known)
    return info.value


@pytest.mark.parametrize("text", ["", None])
def test_empty_is_no_args(text):
    assert parse_cni_args(text, KNOWN) == {}


def test_known_keys_are_returned():
    assert parse_cni_args("IP=10.0.0.7/24;GATEWAY=10.0.0.1", KNOWN) == {"IP": "10.0.0.7/24", "GATEWAY": "10.0.0.1"}


def test_value_may_be_empty():
    assert parse_cni_args("IP=", KNOWN) == {"IP": ""}


def test_last_value_of_a_repeated_key_wins():
    assert parse_cni_args("IP=10.0.0.7/24;IP=10.0.0.8/24", KNOWN) == {"IP": "10.0.0.8/24"}


def test_unknown_key_is_code_4_listing_the_pairs():
    error = fails("IP=10.0.0.7/24;K8S_POD_NAME=pod-a;K8S_POD_NAMESPACE=ns")
    assert error.code == INVALID_ENV
    assert error.msg == 'CNI_ARGS: unknown args ["K8S_POD_NAME=pod-a" "K8S_POD_NAMESPACE=ns"]'
    assert "IgnoreUnknown=1" in error.details


def test_keys_are_case_sensitive():
    error = fails("ip=10.0.0.7/24")
    assert '"ip=10.0.0.7/24"' in error.msg


@pytest.mark.parametrize("flag", ["1", "true", "TRUE", "True"])
def test_ignore_unknown_drops_unknown_keys(flag):
    text = f"IgnoreUnknown={flag};K8S_POD_NAME=pod-a;IP=10.0.0.7/24;K8S_POD_UID=u"
    assert parse_cni_args(text, KNOWN) == {"IP": "10.0.0.7/24"}


def test_ignore_unknown_may_come_last():
    assert parse_cni_args("K8S_POD_NAME=pod-a;IgnoreUnknown=1", KNOWN) == {}


@pytest.mark.parametrize("flag", ["0", "false"])
def test_ignore_unknown_false_still_refuses(flag):
    error = fails(f"IgnoreUnknown={flag};X=1")
    assert error.msg == 'CNI_ARGS: unknown args ["X=1"]'


def test_ignore_unknown_is_not_returned():
    assert "IgnoreUnknown" not in parse_cni_args("IgnoreUnknown=1", KNOWN)


def test_ignore_unknown_must_be_a_boolean():
    error = fails("IgnoreUnknown=yes")
    assert error.code == INVALID_ENV
    assert "IgnoreUnknown" in error.msg and "'yes'" in error.msg


@pytest.mark.parametrize("pair", ["garbage", "", "X==1", "A=b=c"])
def test_invalid_pair_is_code_4_naming_it(pair):
    error = fails(f"IgnoreUnknown=1;{pair}")
    assert (error.code, error.msg) == (INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r}")


def test_trailing_semicolon_is_an_invalid_empty_pair():
    assert fails("IP=10.0.0.7/24;").msg == "CNI_ARGS: invalid pair ''"


def test_invalid_pair_beats_ignore_unknown():
    # Go fails on the pair shape before it looks at IgnoreUnknown.
    assert "invalid pair" in fails("IgnoreUnknown=true;novalue").msg


def test_empty_key_is_unknown():
    assert parse_cni_args("=1;IgnoreUnknown=1", KNOWN) == {}
    assert fails("=1").msg == 'CNI_ARGS: unknown args ["=1"]'


def test_nothing_known_by_default():
    assert fails("IP=1", ()).msg == 'CNI_ARGS: unknown args ["IP=1"]'


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("TrUe", True), ("0", False), ("FALSE", False)])
def test_parse_bool(text, value):
    assert parse_bool(text, "K") is value


def test_parse_bool_refuses_other_words():
    with pytest.raises(CNIError) as info:
        parse_bool("on", "Flag")
    assert info.value.code == INVALID_ENV and "Flag='on'" in info.value.msg
