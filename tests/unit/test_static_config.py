"""The static IPAM config: address sources, their precedence, and every validation error."""

from __future__ import annotations

import ipaddress
import json

import pytest

from cni_ipam.cni.errors import INVALID_CONFIG, INVALID_ENV, CNIError
from cni_ipam.cni.request import build_request
from cni_ipam.config.static import parse


def request(ipam=None, version="1.0.0", cni_args="", top=None, command="ADD"):
    config = {"cniVersion": version, "name": "net1", "ipam": {"type": "static", **(ipam or {})}}
    config.update(top or {})
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/p", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": cni_args}
    return build_request(env, lambda: json.dumps(config).encode())


def addresses(req) -> list:
    """(address, gateway) texts of the parsed config."""
    return [(str(ip.address), str(ip.gateway) if ip.gateway else None) for ip in parse(req).addresses]


def fails(req, code=INVALID_CONFIG) -> str:
    """Parse, expect the error code, return msg + details for checks on what it names."""
    with pytest.raises(CNIError) as info:
        parse(req)
    assert info.value.code == code, info.value
    return f"{info.value.msg} | {info.value.details}"


# --- ipam.addresses -----------------------------------------------------------------------------

def test_addresses_with_and_without_gateway():
    req = request({"addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}, {"address": "2001:db8::5/64"}]})
    assert addresses(req) == [("10.0.0.5/24", "10.0.0.1"), ("2001:db8::5/64", None)]


def test_empty_gateway_is_no_gateway():
    assert addresses(request({"addresses": [{"address": "10.0.0.5/24", "gateway": ""}]})) == [("10.0.0.5/24", None)]


@pytest.mark.parametrize("value", [None, []])
def test_no_addresses_is_fine_from_0_3_0(value):
    assert parse(request({"addresses": value})).addresses == []


def test_address_keeps_host_bits():
    (ip,) = parse(request({"addresses": [{"address": "10.0.0.5/8"}]})).addresses
    assert ip.address == ipaddress.ip_interface("10.0.0.5/8")


@pytest.mark.parametrize("entry, names", [
    ({"address": "10.0.0.5"}, ["ipam.addresses[0].address", '\"10.0.0.5\"', "CIDR"]),
    ({"address": "10.0.0.5/33"}, ["ipam.addresses[0].address", '\"10.0.0.5/33\"']),
    ({"address": "010.0.0.5/24"}, ["ipam.addresses[0].address", '\"010.0.0.5/24\"']),
    ({"address": "10.0.0.5/255.255.255.0"}, ["ipam.addresses[0].address", "255.255.255.0"]),
    ({"address": "fe80::1%eth0/64"}, ["ipam.addresses[0].address", "fe80::1%eth0/64"]),
    ({"address": " 10.0.0.5/24"}, ["ipam.addresses[0].address", '\" 10.0.0.5/24\"']),
    ({"address": "::ffff:10.0.0.5/120"}, ["ipam.addresses[0].address", "IPv4-mapped", "10.0.0.5/24"]),
    ({"address": 5}, ["ipam.addresses[0].address", "5"]),
    ({}, ["ipam.addresses[0].address", "missing"]),
    ({"address": "10.0.0.5/24", "gateway": "nope"}, ["ipam.addresses[0].gateway", '\"nope\"', "not a valid IP"]),
    ({"address": "10.0.0.5/24", "gateway": "10.0.0.1/24"}, ["ipam.addresses[0].gateway", '\"10.0.0.1/24\"']),
    ({"address": "10.0.0.5/24", "gateway": "2001:db8::1"},
     ["ipam.addresses[0].gateway", '\"2001:db8::1\"', "IPv6", '\"10.0.0.5/24\"', "IPv4"]),
    ({"address": "2001:db8::5/64", "gateway": "10.0.0.1"}, ["ipam.addresses[0].gateway", '\"10.0.0.1\"', "IPv4"]),
])
def test_bad_address_entry_names_field_and_value(entry, names):
    text = fails(request({"addresses": [entry]}))
    for name in names:
        assert name in text


def test_index_of_the_bad_entry_is_named():
    text = fails(request({"addresses": [{"address": "10.0.0.5/24"}, {"address": "10.0.0.6"}]}))
    assert "ipam.addresses[1].address" in text


@pytest.mark.parametrize("value", ["10.0.0.5/24", {"address": "10.0.0.5/24"}, 3])
def test_addresses_must_be_a_list(value):
    assert "ipam.addresses" in fails(request({"addresses": value}))


def test_entry_must_be_an_object():
    assert "ipam.addresses[0]" in fails(request({"addresses": ["10.0.0.5/24"]}))


def test_gateway_outside_subnet_is_a_warning_not_an_error():
    req = request({"addresses": [{"address": "10.0.0.5/24", "gateway": "10.1.0.1"}]})
    assert addresses(req) == [("10.0.0.5/24", "10.1.0.1")]
    assert req.warnings == ["gateway 10.1.0.1 is outside the subnet of 10.0.0.5/24"]


def test_gateway_inside_subnet_gives_no_warning():
    req = request({"addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]})
    parse(req)
    assert req.warnings == []


def test_duplicate_address_is_an_error_naming_it():
    req = request({"addresses": [{"address": "10.0.0.5/24"}, {"address": "10.0.0.5/16"}]})
    assert "10.0.0.5 is listed twice" in fails(req)


def test_duplicate_ipv6_in_other_spelling_is_caught():
    req = request({"addresses": [{"address": "2001:db8::5/64"}, {"address": "2001:DB8:0::5/64"}]})
    assert "2001:db8::5 is listed twice" in fails(req)


def test_unknown_ipam_key_is_a_warning():
    req = request({"addresses": [], "adresses": [{"address": "10.0.0.5/24"}]})
    assert parse(req).addresses == []
    assert req.warnings == ["ipam.adresses is not a static IPAM key; it is ignored"]


# --- legacy versions ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_allows_one_address_per_family(version):
    req = request({"addresses": [{"address": "10.0.0.5/24"}, {"address": "2001:db8::5/64"}]}, version=version)
    assert len(parse(req).addresses) == 2


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_refuses_two_addresses_of_a_family(version):
    req = request({"addresses": [{"address": "10.0.0.5/24"}, {"address": "10.0.0.6/24"}]}, version=version)
    assert f"CNI version {version} does not support more than 1 address per family" in fails(req)


def test_legacy_counts_addresses_from_every_source():
    req = request({"addresses": [{"address": "10.0.0.5/24"}]}, version="0.2.0", cni_args="IP=10.0.0.6/24")
    assert "more than 1 address per family" in fails(req)


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_needs_an_address(version):
    text = fails(request({"routes": [{"dst": "0.0.0.0/0"}]}, version=version))
    assert f"CNI version {version} needs at least one address" in text and "0.3.0" in text


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_many_addresses_per_family_from_0_3_0(version):
    req = request({"addresses": [{"address": "10.0.0.5/24"}, {"address": "10.0.0.6/24"}]}, version=version)
    assert len(parse(req).addresses) == 2


# --- CNI_ARGS IP= / GATEWAY= --------------------------------------------------------------------

def test_cni_args_ip_is_appended_to_the_config_addresses():
    req = request({"addresses": [{"address": "10.0.0.5/24"}]}, cni_args="IP=10.0.0.7/24,2001:db8::7/64")
    assert addresses(req) == [("10.0.0.5/24", None), ("10.0.0.7/24", None), ("2001:db8::7/64", None)]


def test_cni_args_items_may_have_spaces():
    assert addresses(request(cni_args="IP=10.0.0.7/24, 10.0.0.8/24")) == [("10.0.0.7/24", None), ("10.0.0.8/24", None)]


def test_cni_args_gateway_goes_to_the_ip_addresses_whose_subnet_holds_it():
    req = request(cni_args="IP=10.0.0.7/24,2001:db8::7/64,10.9.0.7/16;GATEWAY=2001:db8::1,10.0.0.1")
    assert addresses(req) == [("10.0.0.7/24", "10.0.0.1"), ("2001:db8::7/64", "2001:db8::1"), ("10.9.0.7/16", None)]


def test_cni_args_gateway_does_not_touch_ipam_addresses():
    # As Go: GATEWAY= applies only to the IP= addresses (measured against /usr/lib/cni/static).
    req = request({"addresses": [{"address": "10.0.0.5/24"}]}, cni_args="IP=10.0.0.7/24;GATEWAY=10.0.0.1")
    assert addresses(req) == [("10.0.0.5/24", None), ("10.0.0.7/24", "10.0.0.1")]


def test_cni_args_gateway_outside_every_subnet_is_ignored():
    assert addresses(request(cni_args="IP=10.0.0.7/24;GATEWAY=10.9.9.9")) == [("10.0.0.7/24", None)]


def test_cni_args_gateway_alone_does_nothing():
    assert addresses(request(cni_args="GATEWAY=10.0.0.1")) == []


@pytest.mark.parametrize("cni_args", ["IP=", "IP=10.0.0.7/24;GATEWAY="])
def test_empty_cni_args_values(cni_args):
    assert len(parse(request(cni_args=cni_args)).addresses) == cni_args.count("/")


def test_cni_args_ip_without_a_prefix_takes_a_host_prefix_or_the_configured_subnets():
    alone = parse(request(cni_args="IP=10.0.0.7,fd00::7")).addresses
    assert [str(a.address) for a in alone] == ["10.0.0.7/32", "fd00::7/128"]
    inside = parse(request({"addresses": [{"address": "10.0.0.1/24"}]}, cni_args="IP=10.0.0.7")).addresses
    assert [str(a.address) for a in inside] == ["10.0.0.1/24", "10.0.0.7/24"]
    text = fails(request(cni_args="IP=10.0.0.300"))
    assert "CNI_ARGS IP" in text and '\"10.0.0.300\"' in text


def test_cni_args_bad_gateway_is_named():
    text = fails(request(cni_args="IP=10.0.0.7/24;GATEWAY=x"))
    assert "CNI_ARGS GATEWAY" in text and '\"x\"' in text


def test_cni_args_unknown_key_is_code_4_unless_ignored():
    text = fails(request(cni_args="IP=10.0.0.7/24;K8S_POD_NAME=pod"), code=INVALID_ENV)
    assert '"K8S_POD_NAME=pod"' in text
    assert addresses(request(cni_args="IgnoreUnknown=1;K8S_POD_NAME=pod;IP=10.0.0.7/24")) == [("10.0.0.7/24", None)]


def test_cni_args_invalid_pair_is_code_4():
    assert "invalid pair 'junk'" in fails(request(cni_args="junk"), code=INVALID_ENV)


# --- args.cni.ips and runtimeConfig.ips ---------------------------------------------------------

ALL = {"addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]}


def test_args_cni_ips_replace_config_and_cni_args():
    req = request(ALL, cni_args="IP=10.0.0.7/24", top={"args": {"cni": {"ips": ["10.0.0.8/24", "2001:db8::8/64"]}}})
    assert addresses(req) == [("10.0.0.8/24", None), ("2001:db8::8/64", None)]


def test_runtime_config_ips_win_over_everything():
    top = {"args": {"cni": {"ips": ["10.0.0.8/24"]}}, "runtimeConfig": {"ips": ["10.0.0.10/24"]}}
    assert addresses(request(ALL, cni_args="IP=10.0.0.7/24", top=top)) == [("10.0.0.10/24", None)]


def test_runtime_config_ips_replace_config_addresses():
    assert addresses(request(ALL, top={"runtimeConfig": {"ips": ["10.0.0.10/24"]}})) == [("10.0.0.10/24", None)]


def test_empty_lists_replace_nothing():
    top = {"args": {"cni": {"ips": []}}, "runtimeConfig": {"ips": []}}
    assert addresses(request(ALL, cni_args="IP=10.0.0.7/24", top=top)) == [("10.0.0.5/24", "10.0.0.1"),
                                                                          ("10.0.0.7/24", None)]


@pytest.mark.parametrize("top", [{"args": "x"}, {"args": {"cni": "x"}}, {"args": {"k8s": {"ips": ["1.2.3.4/8"]}}},
                                 {"runtimeConfig": {"mac": "00:11:22:33:44:55"}}])
def test_other_args_shapes_are_ignored(top):
    assert addresses(request(ALL, top=top)) == [("10.0.0.5/24", "10.0.0.1")]


@pytest.mark.parametrize("top, key", [
    ({"args": {"cni": {"ips": ["10.0.0.8"]}}}, "args.cni.ips[0]"),
    ({"runtimeConfig": {"ips": ["10.0.0.10/24", "nope"]}}, "runtimeConfig.ips[1]"),
])
def test_ips_entries_must_be_cidrs(top, key):
    text = fails(request(top=top))
    assert key in text and "CIDR" in text


@pytest.mark.parametrize("top, key", [
    ({"args": {"cni": {"ips": "10.0.0.8/24"}}}, "args.cni.ips"),
    ({"runtimeConfig": {"ips": {"a": 1}}}, "runtimeConfig.ips"),
])
def test_ips_must_be_lists(top, key):
    assert key in fails(request(top=top))


def test_runtime_config_same_address_with_two_prefixes_is_caught():
    assert "listed twice" in fails(request(top={"runtimeConfig": {"ips": ["10.0.0.10/24", "10.0.0.10/16"]}}))


# --- what podman asks for again on `network reload` (DEL, then ADD with the container's addresses) ----

def test_runtime_config_repeated_address_is_one_request():
    assert addresses(request(top={"runtimeConfig": {"ips": ["10.0.0.10/24", "10.0.0.10/24"]}})) == [("10.0.0.10/24", None)]


def test_cni_args_ip_the_config_lists_is_that_address():
    """One configured address: podman's reload sends IP=<that address>; it is the configured entry, gateway and all."""
    assert addresses(request(ALL, cni_args="IP=10.0.0.5")) == [("10.0.0.5/24", "10.0.0.1")]
    assert addresses(request(ALL, cni_args="IP=10.0.0.5/24")) == [("10.0.0.5/24", "10.0.0.1")]


def test_cni_args_ip_repeated_is_one_request():
    assert addresses(request(cni_args="IP=10.0.0.7/24,10.0.0.7/24")) == [("10.0.0.7/24", None)]


def test_cni_args_ip_with_another_prefix_than_the_config_is_still_twice():
    assert "10.0.0.5 is listed twice" in fails(request(ALL, cni_args="IP=10.0.0.5/16"))


def test_bare_runtime_config_ips_take_the_configured_prefix_and_entry():
    """Several configured addresses: podman's reload sends them bare in runtimeConfig.ips."""
    ipam = {"addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}, {"address": "fd00::5/64"}]}
    top = {"runtimeConfig": {"ips": ["10.0.0.5", "fd00::5"]}}
    assert addresses(request(ipam, top=top)) == [("10.0.0.5/24", "10.0.0.1"), ("fd00::5/64", None)]


def test_bare_runtime_config_ip_in_a_configured_subnet_takes_its_prefix():
    assert addresses(request(ALL, top={"runtimeConfig": {"ips": ["10.0.0.9"]}})) == [("10.0.0.9/24", None)]


def test_bare_runtime_config_ip_outside_every_subnet_takes_a_host_prefix():
    top = {"runtimeConfig": {"ips": ["192.0.2.9", "2001:db8::9"]}}
    assert addresses(request(ALL, top=top)) == [("192.0.2.9/32", None), ("2001:db8::9/128", None)]


def test_reload_after_podman_ip_gives_the_same_addresses():
    """``--ip 10.0.0.9`` on a network with one address: ADD had IP=10.0.0.9; reload asks for
    [the --ip address, the current addresses...]: the same two come back, each once."""
    first = addresses(request(ALL, cni_args="IP=10.0.0.9"))
    again = addresses(request(ALL, top={"runtimeConfig": {"ips": ["10.0.0.9", "10.0.0.5", "10.0.0.9"]}}))
    assert sorted(first) == sorted(again) == [("10.0.0.5/24", "10.0.0.1"), ("10.0.0.9/24", None)]


# --- routes -------------------------------------------------------------------------------------

def test_routes():
    routes = parse(request({"routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.1.2.3/8", "gw": "10.0.0.254"},
                                       {"dst": "::/0", "gw": "2001:db8::1", "mtu": 1400, "scope": 0}]})).routes
    assert [(str(r.dst), str(r.gw) if r.gw else None, r.extras) for r in routes] == [
        ("0.0.0.0/0", None, {}), ("10.1.2.3/8", "10.0.0.254", {}), ("::/0", "2001:db8::1", {"mtu": 1400, "scope": 0})]


@pytest.mark.parametrize("route, names", [
    ({"dst": "10.0.0.0"}, ["ipam.routes[0].dst", '\"10.0.0.0\"', "CIDR"]),
    ({"gw": "10.0.0.1"}, ["ipam.routes[0].dst", "missing"]),
    ({"dst": "10.0.0.0/8", "gw": "x"}, ["ipam.routes[0].gw", '\"x\"']),
    ({"dst": "10.0.0.0/8", "gw": "2001:db8::1"}, ["ipam.routes[0].gw", '\"2001:db8::1\"', "IPv6", '\"10.0.0.0/8\"']),
    ({"dst": "::/0", "gw": "10.0.0.1"}, ["ipam.routes[0].gw", '\"10.0.0.1\"', "IPv4", '\"::/0\"']),
    ({"dst": "10.0.0.0/8", "mtu": -1}, ["ipam.routes[0].mtu", "-1"]),
    ({"dst": "10.0.0.0/8", "priority": "5"}, ["ipam.routes[0].priority", '\"5\"']),
    ({"dst": "10.0.0.0/8", "table": True}, ["ipam.routes[0].table", "true"]),
])
def test_bad_route_names_field_and_value(route, names):
    text = fails(request({"routes": [route]}))
    for name in names:
        assert name in text


def test_routes_must_be_a_list_of_objects():
    assert "ipam.routes" in fails(request({"routes": {"dst": "0.0.0.0/0"}}))
    assert "ipam.routes[0]" in fails(request({"routes": ["0.0.0.0/0"]}))


# --- dns ----------------------------------------------------------------------------------------

def test_dns_is_copied():
    dns = {"nameservers": ["10.0.0.1", "2001:db8::53"], "domain": "ex.test", "search": ["a.test"],
           "options": ["ndots:2", "rotate"]}
    assert parse(request({"dns": dns})).dns == dns


def test_dns_ignores_unknown_keys():
    assert parse(request({"dns": {"domain": "x", "junk": 1}})).dns == {"domain": "x"}


@pytest.mark.parametrize("dns, names", [
    ({"nameservers": ["dns.example"]}, ["ipam.dns.nameservers[0]", '\"dns.example\"', "not a valid IP"]),
    ({"nameservers": ["10.0.0.1", "10.0.0.1/24"]}, ["ipam.dns.nameservers[1]", '\"10.0.0.1/24\"']),
    ({"nameservers": "10.0.0.1"}, ["ipam.dns.nameservers", '\"10.0.0.1\"']),
    ({"domain": 5}, ["ipam.dns.domain", "5"]),
    ({"search": "a.test"}, ["ipam.dns.search", '\"a.test\"']),
    ({"options": ["ndots:2", 3]}, ["ipam.dns.options[1]", "3"]),
    ("x", ["ipam.dns", '\"x\"']),
])
def test_bad_dns_names_field_and_value(dns, names):
    text = fails(request({"dns": dns}))
    for name in names:
        assert name in text


def test_missing_ipam_is_code_7():
    req = build_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "e",
                         "CNI_PATH": "/p"}, lambda: b'{"cniVersion": "1.0.0", "name": "n"}')
    assert fails(req).startswith("IPAM config missing 'ipam' key")
