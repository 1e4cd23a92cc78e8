"""cni_ipam.net.addr against the standard library's ipaddress, its oracle."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from cni_ipam.net import addr

V4 = st.integers(0, 2 ** 32 - 1)
V6 = st.integers(0, 2 ** 128 - 1)
# IPv6 values with long zero runs, where the '::' rules matter.
V6_SPARSE = st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABC]), min_size=8, max_size=8).map(
    lambda groups: sum(g << (16 * (7 - i)) for i, g in enumerate(groups)))


@given(st.one_of(V4.map(ipaddress.IPv4Address), V6.map(ipaddress.IPv6Address), V6_SPARSE.map(ipaddress.IPv6Address)))
def test_text_round_trips_like_ipaddress(expected):
    for text in (str(expected), expected.exploded):
        ours = addr.ip_address(text)
        assert (ours.version, int(ours)) == (expected.version, int(expected))
        assert str(ours) == str(expected)
        assert ours == expected and expected == ours
        assert hash(ours) == hash(addr.ip_address(str(expected)))
        mapped = getattr(expected, "ipv4_mapped", None)
        assert str(ours.ipv4_mapped) == str(mapped)


@given(st.text(alphabet="0123456789abcdefABCDEF:./%xg -", max_size=45))
def test_accepts_exactly_what_ipaddress_accepts(text):
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        expected = None
    if "%" in text:  # zones: ipaddress takes them, Go and we do not
        expected = None
    try:
        ours = addr.ip_address(text)
    except ValueError:
        ours = None
    assert (ours is None) == (expected is None), text
    if ours is not None:
        assert str(ours) == str(expected)


@given(st.one_of(st.tuples(V4, st.integers(0, 32), st.just(4)), st.tuples(V6, st.integers(0, 128), st.just(6))))
def test_interfaces_and_networks_match_ipaddress(case):
    value, prefix, version = case
    expected = ipaddress.ip_interface((ipaddress.ip_address(value) if version == 4 else ipaddress.IPv6Address(value),
                                       prefix))
    ours = addr.ip_interface(str(expected))
    assert str(ours) == str(expected) and str(ours.ip) == str(expected.ip)
    assert str(ours.network) == str(expected.network)
    assert int(ours.network.broadcast_address) == int(expected.network.broadcast_address)
    assert int(ours.network.netmask) == int(expected.network.netmask)
    assert ours == expected and expected == ours
    assert ours.network == expected.network and ours.ip in ours.network


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1/", "10.0.0.1/24/1", "10.0.0.1/255.255.255.0", "10.0.0.1/33",
                                  "fd00::/129", "10.0.0.1/-1", "x/24"])
def test_bad_interfaces_are_value_errors(text):
    with pytest.raises(ValueError):
        addr.ip_interface(text)


def test_networks_hold_only_their_own_family():
    net = addr.ip_interface("10.0.0.5/24").network
    assert addr.ip_address("10.0.0.255") in net and addr.ip_address("10.0.1.0") not in net
    assert addr.ip_address("::a00:5") not in net
    assert str(net) == "10.0.0.0/24" and net.num_addresses == 256
