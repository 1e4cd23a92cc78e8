"""Result conversion to every CNI version's JSON form."""

from __future__ import annotations

import ipaddress

import pytest

from cni_ipam.cni import versions
from cni_ipam.cni.result import IPConfig, Result, Route, addresses_in, text, to_dict


def ipc(address, gateway=None):
    return IPConfig(ipaddress.ip_interface(address), ipaddress.ip_address(gateway) if gateway else None)


def route(dst, gw=None, **extras):
    return Route(ipaddress.ip_interface(dst), ipaddress.ip_address(gw) if gw else None, extras)


DUAL = Result(
    ips=[ipc("10.0.0.5/24", "10.0.0.1"), ipc("10.0.1.5/24"), ipc("2001:db8::5/64", "2001:db8::1"),
         ipc("2001:db8:1::5/64")],
    routes=[route("0.0.0.0/0"), route("192.168.0.0/16", "10.0.0.254"), route("::/0", "2001:db8::fe"),
            route("10.9.0.0/16", mtu=1400)],
    dns={"nameservers": ["10.0.0.1"], "domain": "ex.test", "search": ["ex.test"], "options": ["ndots:2"]},
)
DNS = {"nameservers": ["10.0.0.1"], "domain": "ex.test", "search": ["ex.test"], "options": ["ndots:2"]}


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_cni_version_is_the_requested_one(version):
    assert to_dict(Result([ipc("10.0.0.5/24")]), version)["cniVersion"] == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_takes_the_first_address_per_family_and_sorts_routes(version):
    out = to_dict(DUAL, version)
    assert out == {
        "cniVersion": version,
        "ip4": {"ip": "10.0.0.5/24", "gateway": "10.0.0.1",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"},
                           {"dst": "10.9.0.0/16"}]},
        "ip6": {"ip": "2001:db8::5/64", "gateway": "2001:db8::1", "routes": [{"dst": "::/0", "gw": "2001:db8::fe"}]},
        "dns": DNS,
    }
    assert "ips" not in out and "routes" not in out


def test_legacy_family_without_address_drops_its_routes():
    result = Result([ipc("2001:db8::5/64")], [route("0.0.0.0/0"), route("::/0")])
    assert to_dict(result, "0.2.0") == {"cniVersion": "0.2.0", "ip6": {"ip": "2001:db8::5/64", "routes": [{"dst": "::/0"}]}}


def test_legacy_without_gateway_or_routes():
    assert to_dict(Result([ipc("10.0.0.5/24")]), "0.1.0") == {"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.5/24"}}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_0_3_and_0_4_carry_a_version_per_ip(version):
    out = to_dict(DUAL, version)
    assert out["ips"] == [
        {"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1"},
        {"version": "4", "address": "10.0.1.5/24"},
        {"version": "6", "address": "2001:db8::5/64", "gateway": "2001:db8::1"},
        {"version": "6", "address": "2001:db8:1::5/64"},
    ]
    assert out["routes"][3] == {"dst": "10.9.0.0/16"}  # no 1.1.0 fields before 1.1.0
    assert out["dns"] == DNS
    assert set(out) == {"cniVersion", "ips", "routes", "dns"}


def test_1_0_0_has_no_ip_version_and_no_route_extras():
    out = to_dict(DUAL, "1.0.0")
    assert all("version" not in ip for ip in out["ips"])
    assert [ip["address"] for ip in out["ips"]] == ["10.0.0.5/24", "10.0.1.5/24", "2001:db8::5/64", "2001:db8:1::5/64"]
    assert out["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"},
                             {"dst": "::/0", "gw": "2001:db8::fe"}, {"dst": "10.9.0.0/16"}]
    assert "interfaces" not in out


def test_1_1_0_route_fields():
    result = Result([ipc("10.0.0.5/24")],
                    [route("10.9.0.0/16", "10.0.0.254", mtu=1400, advmss=1360, priority=5, table=100, scope=0)])
    out = to_dict(result, "1.1.0")
    assert out["routes"] == [{"dst": "10.9.0.0/16", "gw": "10.0.0.254", "mtu": 1400, "advmss": 1360,
                              "priority": 5, "table": 100, "scope": 0}]
    assert "version" not in out["ips"][0]
    for older in ("0.2.0", "0.4.0", "1.0.0"):
        assert "mtu" not in str(to_dict(result, older))


def test_1_1_0_route_only_has_the_fields_given():
    out = to_dict(Result([], [route("10.9.0.0/16", scope=253)]), "1.1.0")
    assert out["routes"] == [{"dst": "10.9.0.0/16", "scope": 253}]


def test_empty_parts_are_omitted():
    assert to_dict(Result(), "1.0.0") == {"cniVersion": "1.0.0"}
    assert to_dict(Result(dns={"nameservers": [], "domain": ""}), "0.4.0") == {"cniVersion": "0.4.0"}


def test_dns_keeps_only_known_non_empty_keys():
    out = to_dict(Result(dns={"domain": "x", "search": [], "junk": 1}), "1.0.0")
    assert out["dns"] == {"domain": "x"}


def test_addresses_keep_host_bits_and_ipv6_is_compressed():
    result = Result([ipc("2001:DB8:0:0:0:0:0:5/64")], [route("10.1.2.3/8")])
    out = to_dict(result, "1.0.0")
    assert out["ips"][0]["address"] == "2001:db8::5/64"
    assert out["routes"][0]["dst"] == "10.1.2.3/8"
    assert text(ipaddress.ip_interface("10.1.2.3/8")) == "10.1.2.3/8"


def test_addresses_in_reads_every_version():
    assert addresses_in({"ips": [{"version": "4", "address": "10.0.0.5/24", "gateway": "10.0.0.1"},
                                 {"address": "2001:db8::5/64"}]}) == [("10.0.0.5/24", "10.0.0.1"), ("2001:db8::5/64", None)]
    assert addresses_in({"ip4": {"ip": "10.0.0.5/24"}, "ip6": {"ip": "2001:db8::5/64", "gateway": "2001:db8::1"}}) == \
        [("10.0.0.5/24", None), ("2001:db8::5/64", "2001:db8::1")]


@pytest.mark.parametrize("junk", [None, [], "x", {"ips": None}, {"ips": ["x", {"gateway": "1.1.1.1"}]}, {"ip4": "x"}])
def test_addresses_in_tolerates_junk(junk):
    assert addresses_in(junk) == []


def test_equality_of_values():
    assert ipc("10.0.0.5/24", "10.0.0.1") == ipc("10.0.0.5/24", "10.0.0.1")
    assert ipc("10.0.0.5/24") != ipc("10.0.0.5/25")
    assert route("0.0.0.0/0", mtu=1) != route("0.0.0.0/0")
    assert ipc("10.0.0.5/24").version == 4 and ipc("::1/128").version == 6
