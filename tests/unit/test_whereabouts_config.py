"""Tests for cni_ipam.config.whereabouts: every key, the flat file and its merge, CNI_ARGS.

Pure: requests are built directly and flat files come from a dict, so no
file, store or process is involved.
"""

from __future__ import annotations

import ipaddress

import pytest

from cni_ipam.cni.errors import INVALID_CONFIG, INVALID_ENV, CNIError
from cni_ipam.cni.request import Request
from cni_ipam.config import whereabouts as wb
from cni_ipam.config.whereabouts import DEFAULT_SQLITE_PATH

CP = "/tmp/flat/whereabouts.conf"  # a configuration_path; only the dict below "has" files


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def make_request(ipam: dict, args: str = "", command: str = "ADD", **top) -> Request:
    config = {"cniVersion": "1.0.0", "name": "net1", "ipam": dict({"type": "whereabouts"}, **ipam)}
    config.update(top)
    return Request(command, "c0ffee", "/run/netns/pod", "eth0", args, "/opt/cni/bin", config)


class Files:
    """A dict-backed ``read_json`` that records which paths were asked for."""

    def __init__(self, files: dict | None = None) -> None:
        self.files = files or {}
        self.asked = []

    def __call__(self, path):
        self.asked.append(path)
        return self.files.get(path)


def load(ipam: dict, args: str = "", files: dict | None = None, **top):
    request = make_request(ipam, args, **top)
    return wb.load(request, Files(files)), request


def config_error(ipam: dict, args: str = "", files: dict | None = None, **top) -> CNIError:
    request = make_request(ipam, args, **top)
    with pytest.raises(CNIError) as info:
        wb.load(request, Files(files))
    assert info.value.code == INVALID_CONFIG, info.value
    return info.value


def spans(config) -> list:
    """(key, cidr, first, last) of each range, addresses as text."""
    return [(s.key, s.range.cidr, s.range.to_text(s.range.start), s.range.to_text(s.range.end))
            for s in config.ranges]


# --- every key of the whereabouts key table is accepted ---

ACCEPTED = [
    ("range", "192.0.2.0/24"),
    ("range_start", "192.0.2.10"),
    ("range_end", "192.0.2.20"),
    ("exclude", ["192.0.2.16/30"]),
    ("ipRanges", [{"range": "fd00::/64", "range_start": "fd00::5", "range_end": "fd00::50",
                   "exclude": ["fd00::8/126"]}]),
    ("gateway", "192.0.2.1"),
    ("routes", [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]),
    ("dns", {"nameservers": ["192.0.2.53"], "domain": "example.org", "search": ["example.org"],
             "options": ["ndots:2"]}),
    ("addresses", [{"address": "198.51.100.5/24", "gateway": "198.51.100.1"}]),
    ("network_name", "example_net_common"),
    ("enable_overlapping_ranges", False),
    ("configuration_path", "/nonexistent/whereabouts.d"),
    ("log_file", "/tmp/whereabouts.log"),
    ("log_level", "error"),
    ("reconciler_cron_expression", "30 4 * * *"),
    ("datastore", "sqlite"),
    ("sqlite_path", "/tmp/wb.db"),
]
IGNORED = [
    ("leader_lease_duration", 1500),
    ("leader_renew_deadline", 1000),
    ("leader_retry_period", 500),
    ("sleep_for_race", 1),
]


@pytest.mark.parametrize("key, value", ACCEPTED, ids=[k for k, _ in ACCEPTED])
def test_each_key_is_accepted_without_warning(key, value):
    ipam = {"range": "192.0.2.0/24"}
    ipam[key] = value
    config, request = load(ipam)
    assert request.warnings == []
    assert config.ranges


@pytest.mark.parametrize("key, value", IGNORED, ids=[k for k, _ in IGNORED])
def test_ignored_keys_are_accepted_with_a_warning_naming_them(key, value):
    config, request = load({"range": "192.0.2.0/24", key: value})
    assert len(request.warnings) == 1
    assert f"ipam.{key} is ignored" in request.warnings[0]
    assert spans(config) == [("ipam.range", "192.0.2.0/24", "192.0.2.1", "192.0.2.254")]


def test_all_keys_together_give_their_values():
    config, request = load({
        "range": "192.0.2.0/24", "range_start": "192.0.2.10", "range_end": "192.0.2.20",
        "exclude": ["192.0.2.12/31"], "ipRanges": [{"range": "fd00::/64"}], "gateway": "192.0.2.1",
        "network_name": "tenant-a", "enable_overlapping_ranges": False, "datastore": "sqlite",
        "sqlite_path": "/tmp/x.db", "log_file": "/tmp/wb.log", "log_level": "verbose",
        "reconciler_cron_expression": "*/15 * * * *",
    })
    assert request.warnings == []
    assert spans(config) == [("ipam.range", "192.0.2.0/24", "192.0.2.10", "192.0.2.20"),
                             ("ipam.ipRanges[0]", "fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:fffe")]
    assert config.ranges[0].range.excluded == ((ip("192.0.2.12"), ip("192.0.2.13")),)
    assert config.gateway == ipaddress.ip_address("192.0.2.1")
    assert config.network_name == "tenant-a"
    assert config.overlapping is False
    assert all(s.network_name == "tenant-a" and s.overlapping is False for s in config.ranges)
    assert [s.pool for s in config.ranges] == ["tenant-a/192.0.2.0/24", "tenant-a/fd00::/64"]
    assert (config.store.datastore, config.store.sqlite_path) == ("sqlite", "/tmp/x.db")
    assert (config.log_file, config.log_level) == ("/tmp/wb.log", "verbose")
    assert config.network == "net1"


def test_defaults():
    config, request = load({"range": "192.0.2.0/24"})
    assert config.store.datastore == "sqlite"
    assert config.store.sqlite_path == "/var/lib/cni/whereabouts/whereabouts.db" == DEFAULT_SQLITE_PATH
    assert config.overlapping is True
    assert config.network_name == ""
    assert config.gateway is None
    assert (config.routes, config.dns, config.addresses) == ([], {}, [])
    assert config.requested == {}
    assert config.pod == ""
    assert config.flat_file is None
    assert config.log_level == "debug"


def test_unknown_log_level_warns_and_uses_debug():
    config, request = load({"range": "192.0.2.0/24", "log_level": "chatty"})
    assert config.log_level == "debug"
    assert any("log_level" in w and "chatty" in w for w in request.warnings)


# --- range forms ---

def test_cidr_with_host_bits_is_the_network_and_host_part_is_not_the_start():
    config, _ = load({"range": "192.168.2.230/28"})
    assert spans(config) == [("ipam.range", "192.168.2.224/28", "192.168.2.225", "192.168.2.238")]


def test_dash_form_takes_network_from_end_and_bounds_from_both():
    config, _ = load({"range": "192.168.2.225-192.168.2.230/28"})
    assert spans(config) == [("ipam.range", "192.168.2.224/28", "192.168.2.225", "192.168.2.230")]


def test_dash_form_in_ip_ranges_and_ipv6():
    config, _ = load({"ipRanges": [{"range": "fd00::10-fd00::20/64"}]})
    assert spans(config) == [("ipam.ipRanges[0]", "fd00::/64", "fd00::10", "fd00::20")]


def test_ipv4_leading_zeros_are_accepted_like_whereabouts():
    config, _ = load({"range": "00192.00168.001.0/24"})
    assert spans(config)[0][1] == "192.168.1.0/24"


def test_range_start_and_range_end_top_level_and_per_entry():
    config, _ = load({"range": "10.0.0.0/24", "range_start": "10.0.0.100", "range_end": "10.0.0.110",
                      "ipRanges": [{"range": "10.1.0.0/24", "range_start": "10.1.0.5", "range_end": "10.1.0.6"}]})
    assert spans(config) == [("ipam.range", "10.0.0.0/24", "10.0.0.100", "10.0.0.110"),
                             ("ipam.ipRanges[0]", "10.1.0.0/24", "10.1.0.5", "10.1.0.6")]


def test_range_start_at_the_network_address_means_first_usable():
    config, _ = load({"range": "10.0.0.0/24", "range_start": "10.0.0.0", "range_end": "10.0.0.255"})
    assert spans(config) == [("ipam.range", "10.0.0.0/24", "10.0.0.1", "10.0.0.254")]


def test_exclude_cidrs_and_bare_ips():
    config, _ = load({"range": "192.0.2.192/27", "exclude": ["192.0.2.192/30", "192.0.2.196/32", "192.0.2.200"]})
    rng = config.ranges[0].range
    assert rng.excluded == ((ip("192.0.2.193"), ip("192.0.2.196")), (ip("192.0.2.200"), ip("192.0.2.200")))
    assert rng.first_allocatable() == ip("192.0.2.197")


def test_top_level_exclude_applies_to_the_top_level_range_only():
    config, _ = load({"range": "10.0.0.0/24", "exclude": ["10.0.0.0/28"],
                      "ipRanges": [{"range": "10.0.0.0/24", "exclude": ["10.0.0.0/30"]}]})
    assert config.ranges[0].range.first_allocatable() == ip("10.0.0.16")
    assert config.ranges[1].range.first_allocatable() == ip("10.0.0.4")


def test_ip_ranges_order_top_level_range_first():
    config, _ = load({"ipRanges": [{"range": "fd00::/64"}, {"range": "10.2.0.0/16"}], "range": "10.1.0.0/16"})
    assert [(k, c) for k, c, _, _ in spans(config)] == [
        ("ipam.range", "10.1.0.0/16"), ("ipam.ipRanges[0]", "fd00::/64"), ("ipam.ipRanges[1]", "10.2.0.0/16")]


def test_mission_dual_stack_example():
    config, request = load({"ipRanges": [{"range": "192.168.10.0/24"}, {"range": "fd00::/64"}]},
                           cniVersion="0.3.1", type="bridge", name="whereabouts-dual-stack")
    assert request.warnings == []
    assert [s.range.to_text(s.range.first_allocatable()) for s in config.ranges] == ["192.168.10.1", "fd00::1"]
    assert config.network == "whereabouts-dual-stack"


# --- gateway, routes, dns, addresses ---

def test_gateway_is_parsed_as_an_address():
    config, _ = load({"range": "10.0.0.0/24", "ipRanges": [{"range": "fd00::/64"}], "gateway": "10.0.0.1"})
    assert config.gateway == ipaddress.IPv4Address("10.0.0.1")


def test_routes_dns_and_addresses_pass_through():
    config, _ = load({
        "range": "10.0.0.0/24",
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "fd10::/64"}],
        "dns": {"nameservers": ["10.0.0.53", "fd00::53"], "domain": "corp", "search": ["corp", "lab"],
                "options": ["rotate"]},
        "addresses": [{"address": "198.51.100.5/24", "gateway": "198.51.100.1"}, {"address": "fd99::5/64"}],
    })
    assert [(str(r.dst), str(r.gw) if r.gw else None) for r in config.routes] == [
        ("0.0.0.0/0", "10.0.0.1"), ("fd10::/64", None)]
    assert config.dns == {"nameservers": ["10.0.0.53", "fd00::53"], "domain": "corp", "search": ["corp", "lab"],
                          "options": ["rotate"]}
    assert [(str(a.address), str(a.gateway) if a.gateway else None) for a in config.addresses] == [
        ("198.51.100.5/24", "198.51.100.1"), ("fd99::5/64", None)]


@pytest.mark.parametrize("ipam, key, value", [
    ({"gateway": "10.0.0.300"}, "ipam.gateway", "10.0.0.300"),
    ({"routes": [{"dst": "nowhere"}]}, "ipam.routes[0].dst", "nowhere"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}, "ipam.routes[0].gw", "fd00::1"),
    ({"dns": {"nameservers": ["ns1"]}}, "ipam.dns.nameservers[0]", "ns1"),
    ({"addresses": [{"address": "198.51.100.5"}]}, "ipam.addresses[0].address", "198.51.100.5"),
    ({"addresses": [{"address": "198.51.100.5/24", "gateway": "x"}]}, "ipam.addresses[0].gateway", "x"),
])
def test_bad_gateway_routes_dns_addresses(ipam, key, value):
    error = config_error(dict({"range": "10.0.0.0/24"}, **ipam))
    assert key in error.msg and value in error.msg


# --- the flat file ---

def test_flat_file_search_order_with_configuration_path():
    files = Files()
    config = wb.load(make_request({"range": "10.0.0.0/24", "configuration_path": CP}), files)
    assert files.asked == [CP, *wb.FLAT_FILE_PATHS]
    assert wb.FLAT_FILE_PATHS == ("/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
                                  "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
                                  "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf")
    assert config.flat_file is None


def test_flat_file_search_order_without_configuration_path():
    files = Files()
    wb.load(make_request({"range": "10.0.0.0/24"}), files)
    assert files.asked == list(wb.FLAT_FILE_PATHS)


def test_configuration_path_wins_and_stops_the_search():
    files = Files({CP: {"network_name": "from-cp"}, wb.FLAT_FILE_PATHS[0]: {"network_name": "from-std"}})
    config = wb.load(make_request({"range": "10.0.0.0/24", "configuration_path": CP}), files)
    assert files.asked == [CP]
    assert config.network_name == "from-cp"
    assert config.flat_file == CP


def test_first_existing_standard_path_wins():
    files = Files({wb.FLAT_FILE_PATHS[1]: {"range": "10.1.0.0/24"}, wb.FLAT_FILE_PATHS[2]: {"range": "10.2.0.0/24"}})
    config = wb.load(make_request({"configuration_path": CP}), files)
    assert files.asked == [CP, wb.FLAT_FILE_PATHS[0], wb.FLAT_FILE_PATHS[1]]
    assert spans(config)[0][1] == "10.1.0.0/24"
    assert config.flat_file == wb.FLAT_FILE_PATHS[1]


def test_flat_file_supplies_the_range():
    config, _ = load({"configuration_path": CP},
                     files={CP: {"range": "192.0.2.192/27", "exclude": ["192.0.2.192/30"]}})
    assert spans(config) == [("ipam.range", "192.0.2.192/27", "192.0.2.193", "192.0.2.222")]
    assert config.ranges[0].range.first_allocatable() == ip("192.0.2.196")


def test_network_config_wins_over_the_flat_file():
    # whereabouts' own test: gateway 192.168.10.1 in the NAD beats 192.168.5.5 in the flat file
    config, _ = load({"range": "192.168.10.0/24", "gateway": "192.168.10.1", "configuration_path": CP},
                     files={CP: {"gateway": "192.168.5.5", "range": "10.9.0.0/16", "network_name": "flat"}})
    assert config.gateway == ipaddress.ip_address("192.168.10.1")
    assert spans(config)[0][1] == "192.168.10.0/24"
    assert config.network_name == "flat"  # empty in the NAD: filled


def test_flat_file_fills_empty_values():
    config, _ = load({"range": "10.0.0.0/24", "network_name": "", "exclude": [], "configuration_path": CP},
                     files={CP: {"network_name": "flat-net", "exclude": ["10.0.0.0/28"],
                                 "sqlite_path": "/tmp/flat.db"}})
    assert config.network_name == "flat-net"
    assert config.ranges[0].range.first_allocatable() == ip("10.0.0.16")
    assert config.store.sqlite_path == "/tmp/flat.db"


@pytest.mark.parametrize("nad, flat, expected", [
    ({}, {"enable_overlapping_ranges": False}, True),
    ({"enable_overlapping_ranges": False}, {"enable_overlapping_ranges": True}, False),
    ({"enable_overlapping_ranges": True}, {"enable_overlapping_ranges": False}, True),
])
def test_enable_overlapping_ranges_never_comes_from_the_flat_file(nad, flat, expected):
    config, _ = load(dict({"range": "10.0.0.0/24", "configuration_path": CP}, **nad), files={CP: flat})
    assert config.overlapping is expected
    assert config.ranges[0].space == ("" if expected else None)


def test_merge_flat_never_takes_enable_overlapping_ranges():
    assert wb.merge_flat({"type": "whereabouts"}, {"enable_overlapping_ranges": False}) == {"type": "whereabouts"}
    assert wb.merge_flat({"enable_overlapping_ranges": False}, {"enable_overlapping_ranges": True}) == {
        "enable_overlapping_ranges": False}


def test_merge_flat_nested_kubernetes_dict():
    merged = wb.merge_flat({"type": "whereabouts", "kubernetes": {"kubeconfig": "/nad.kubeconfig"}},
                           {"kubernetes": {"kubeconfig": "/flat.kubeconfig", "k8s_api_root": "https://api"},
                            "datastore": "kubernetes"})
    assert merged == {"type": "whereabouts", "datastore": "kubernetes",
                      "kubernetes": {"kubeconfig": "/nad.kubeconfig", "k8s_api_root": "https://api"}}
    filled = wb.merge_flat({"type": "whereabouts"}, {"kubernetes": {"kubeconfig": "/flat.kubeconfig"}})
    assert filled["kubernetes"] == {"kubeconfig": "/flat.kubeconfig"}


def test_merge_flat_does_not_change_its_inputs():
    nad = {"kubernetes": {"kubeconfig": ""}}
    flat = {"kubernetes": {"kubeconfig": "/f"}, "range": "10.0.0.0/24"}
    merged = wb.merge_flat(nad, flat)
    assert merged == {"kubernetes": {"kubeconfig": "/f"}, "range": "10.0.0.0/24"}
    assert nad == {"kubernetes": {"kubeconfig": ""}}


def test_missing_flat_file_is_fine():
    config, _ = load({"range": "10.0.0.0/24", "configuration_path": "/does/not/exist"})
    assert config.flat_file is None
    assert spans(config)[0][1] == "10.0.0.0/24"


def test_flat_file_that_is_not_an_object_is_an_error():
    error = config_error({"range": "10.0.0.0/24", "configuration_path": CP}, files={CP: ["range"]})
    assert CP in error.msg


CNO_DIR = "/etc/kubernetes/cni/net.d/whereabouts.d"
CNO_FLAT_FILE = {  # exactly as OpenShift's cluster-network-operator writes it (bindata/network/multus/multus.yaml)
    "datastore": "kubernetes", "kubernetes": {"kubeconfig": f"{CNO_DIR}/whereabouts.kubeconfig"},
    "reconciler_cron_expression": "30 4 * * *", "log_level": "verbose", "configuration_path": CNO_DIR}


def test_the_cno_flat_file_names_the_kubernetes_store_and_its_kubeconfig():
    config, request = load({"range": "10.0.0.0/24"}, files={wb.FLAT_FILE_PATHS[0]: CNO_FLAT_FILE})
    assert config.flat_file == wb.FLAT_FILE_PATHS[0]
    assert (config.store.datastore, config.store.kubeconfig) == ("kubernetes", f"{CNO_DIR}/whereabouts.kubeconfig")
    assert config.store.timeout == 5.0 and config.log_level == "verbose"
    assert not any("kubernetes" in w for w in request.warnings)
    assert wb.nodename_files(config.ipam, config.flat_file) == [f"{CNO_DIR}/nodename"]


def test_the_go_installer_flat_file_works_through_configuration_path():
    flat = {"datastore": "kubernetes", "configuration_path": "/etc/cni/net.d/whereabouts.d",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
            "reconciler_cron_expression": "30 4 * * *"}
    config, _ = load({"range": "10.0.0.0/24", "configuration_path": CP}, files={CP: flat})
    assert config.store.kubeconfig == "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"


def test_the_kubernetes_datastore_needs_a_kubeconfig():
    error = config_error({"range": "10.0.0.0/24", "datastore": "kubernetes"})
    assert "ipam.kubernetes.kubeconfig" in error.msg and "from the flat file" not in error.msg
    error = config_error({"range": "10.0.0.0/24"}, files={wb.FLAT_FILE_PATHS[1]: {"datastore": "kubernetes"}})
    assert wb.FLAT_FILE_PATHS[1] in error.msg  # where the setting came from
    error = config_error({"range": "10.0.0.0/24", "datastore": "kubernetes", "kubernetes": {"kubeconfig": 7}})
    assert "ipam.kubernetes.kubeconfig" in error.msg and "7" in error.msg
    error = config_error({"range": "10.0.0.0/24", "datastore": "kubernetes",
                          "kubernetes": {"kubeconfig": "/k", "timeout": 0}})
    assert "ipam.kubernetes.timeout" in error.msg


def test_the_network_config_kubeconfig_wins_over_the_flat_file():
    config, _ = load({"range": "10.0.0.0/24", "kubernetes": {"kubeconfig": "/nad.kubeconfig"}},
                     files={wb.FLAT_FILE_PATHS[0]: CNO_FLAT_FILE})
    assert config.store.kubeconfig == "/nad.kubeconfig"


# --- errors: code 7, naming the key and the value ---

@pytest.mark.parametrize("ipam, key, value", [
    ({"range": "10.0.0.0/33"}, "ipam.range", "10.0.0.0/33"),
    ({"range": "10.0.0/24"}, "ipam.range", "10.0.0/24"),
    ({"range": "banana"}, "ipam.range", "banana"),
    ({"range": "10.0.0.0"}, "ipam.range", "10.0.0.0"),
    ({"ipRanges": [{"range": "fd00::/129"}]}, "ipam.ipRanges[0].range", "fd00::/129"),
    ({"range": "10.0.0.0/24", "ipRanges": [{"range": "10.1.0.0/24"}, {"range": "x/24"}]},
     "ipam.ipRanges[1].range", "x/24"),
])
def test_bad_cidr(ipam, key, value):
    error = config_error(ipam)
    assert key in error.msg and value in error.msg


@pytest.mark.parametrize("ipam, key, value", [
    ({"range": "10.0.0.0/24", "range_start": "10.0.1.1"}, "ipam.range_start", "10.0.1.1"),
    ({"range": "10.0.0.0/24", "range_start": "10.0.0.255"}, "ipam.range_start", "10.0.0.255"),
    ({"range": "10.0.0.0/24", "range_end": "10.0.2.1"}, "ipam.range_end", "10.0.2.1"),
    ({"range": "10.0.0.0/24", "range_start": "10.0.0.50", "range_end": "10.0.0.40"}, "ipam.range_end", "10.0.0.40"),
    ({"range": "10.0.0.0/24", "range_start": "not-an-ip"}, "ipam.range_start", "not-an-ip"),
    ({"ipRanges": [{"range": "fd00::/64", "range_start": "fd01::1"}]}, "ipam.ipRanges[0].range_start", "fd01::1"),
    ({"range": "10.0.1.5-10.0.0.20/24"}, "ipam.range", "10.0.1.5"),
])
def test_start_or_end_outside_the_range(ipam, key, value):
    error = config_error(ipam)
    assert key in error.msg and value in error.msg


@pytest.mark.parametrize("exclude, key, value", [
    (["10.0.0.300"], "ipam.exclude[0]", "10.0.0.300"),
    (["10.0.0.0/28", "10.0.0.0/40"], "ipam.exclude[1]", "10.0.0.0/40"),
    (["010.0.0.1"], "ipam.exclude[0]", "010.0.0.1"),
    ("10.0.0.1", "ipam.exclude", "10.0.0.1"),
])
def test_bad_exclude(exclude, key, value):
    error = config_error({"range": "10.0.0.0/24", "exclude": exclude})
    assert key in error.msg and value in error.msg


@pytest.mark.parametrize("cidr", ["10.0.0.0/31", "10.0.0.5/32", "fd00::/127", "fd00::1/128"])
def test_ranges_without_usable_addresses(cidr):
    error = config_error({"range": cidr})
    assert "ipam.range" in error.msg and cidr in error.msg and "no usable addresses" in error.msg


@pytest.mark.parametrize("ipam, key, value", [
    ({"range": "10.0.0.1-fd00::5/64"}, "ipam.range", "10.0.0.1-fd00::5/64"),
    ({"range": "10.0.0.0/24", "range_start": "fd00::1"}, "ipam.range_start", "fd00::1"),
    ({"range": "10.0.0.0/24", "range_end": "fd00::1"}, "ipam.range_end", "fd00::1"),
    ({"range": "10.0.0.0/24", "exclude": ["fd00::/64"]}, "ipam.exclude[0]", "fd00::/64"),
    ({"ipRanges": [{"range": "fd00::/64", "exclude": ["10.0.0.1"]}]}, "ipam.ipRanges[0].exclude[0]", "10.0.0.1"),
])
def test_mixed_families_in_one_range(ipam, key, value):
    error = config_error(ipam)
    assert key in error.msg and value in error.msg


def test_unknown_datastore():
    error = config_error({"range": "10.0.0.0/24", "datastore": "redis"})
    assert "ipam.datastore" in error.msg and "redis" in error.msg


def test_a_kubernetes_key_beside_another_store_is_a_warning():
    _, request = load({"range": "10.0.0.0/24",
                       "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"}})
    assert any("ipam.kubernetes is ignored" in w for w in request.warnings)


@pytest.mark.parametrize("ipam, key", [
    ({"datastore": "sqlite", "etcd_host": "https://10.0.0.1:2379"}, "ipam.etcd_host"),
    ({"datastore": "sqlite", "etcd_username": "u"}, "ipam.etcd_username"),
    ({"etcd_password": "p"}, "ipam.etcd_password"),
    ({"etcd_key_file": "/k"}, "ipam.etcd_key_file"),
    ({"etcd_ca_cert_file": "/ca"}, "ipam.etcd_ca_cert_file"),
])
def test_etcd_keys_beside_the_sqlite_store_are_an_error(ipam, key):
    error = config_error(dict({"range": "10.0.0.0/24"}, **ipam))
    assert key in error.msg and "sqlite" in error.msg and "etcd" in error.details


def test_etcd_settings():
    config, _ = load({"range": "10.0.0.0/24", "etcd_host": "10.0.0.1:2379, 10.0.0.2:2379",
                      "etcd_endpoints": ["http://10.0.0.3:2379", "http://10.0.0.1:2379"],
                      "etcd_username": "u", "etcd_password": "p", "etcd_prefix": "/x/", "etcd_timeout": 2})
    store = config.store
    assert store.datastore == "etcd"  # implied by etcd_host
    assert store.endpoints == ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
    assert (store.username, store.password, store.prefix, store.timeout) == ("u", "p", "/x/", 2.0)
    tls = load({"range": "10.0.0.0/24", "datastore": "etcd", "etcd_host": "etcd:2379",
                "etcd_ca_cert_file": "/ca", "etcd_cert_file": "/c", "etcd_key_file": "/k"})[0].store
    assert tls.endpoints == ["https://etcd:2379"] and (tls.ca_file, tls.cert_file, tls.key_file) == ("/ca", "/c", "/k")


@pytest.mark.parametrize("ipam, key, value", [
    ({"datastore": "etcd"}, "etcd_host", ""),
    ({"etcd_host": "http://etcd"}, "ipam.etcd_host", "http://etcd"),
    ({"etcd_host": "ftp://etcd:2379"}, "ipam.etcd_host", "ftp://etcd:2379"),
    ({"etcd_endpoints": "http://etcd:2379"}, "ipam.etcd_endpoints", "http://etcd:2379"),
    ({"etcd_endpoints": ["http://etcd:2379/v3"]}, "ipam.etcd_endpoints[0]", "http://etcd:2379/v3"),
    ({"etcd_host": "etcd:2379", "etcd_cert_file": "/c"}, "ipam.etcd_cert_file", ""),
    ({"etcd_host": "etcd:2379", "etcd_password": "p"}, "ipam.etcd_password", ""),
    ({"etcd_host": "etcd:2379", "etcd_prefix": "x/"}, "ipam.etcd_prefix", "x/"),
    ({"etcd_host": "etcd:2379", "etcd_timeout": 0}, "ipam.etcd_timeout", "0"),
])
def test_bad_etcd_settings_are_code_7(ipam, key, value):
    error = config_error(dict({"range": "10.0.0.0/24"}, **ipam))
    assert error.code == INVALID_CONFIG and key in error.msg and value in error.msg


@pytest.mark.parametrize("ipam, key, intended", [
    ({"range": "10.0.0.0/24", "rangeStart": "10.0.0.5"}, "ipam.rangeStart", "range_start"),
    ({"range": "10.0.0.0/24", "rangeEnd": "10.0.0.5"}, "ipam.rangeEnd", "range_end"),
    ({"range": "10.0.0.0/24", "range-end": "10.0.0.5"}, "ipam.range-end", "range_end"),
    ({"subnet": "10.0.0.0/24"}, "ipam.subnet", "range"),
    ({"range": "10.0.0.0/24", "networkName": "x"}, "ipam.networkName", "network_name"),
    ({"range": "10.0.0.0/24", "ip_ranges": []}, "ipam.ip_ranges", "ipRanges"),
    ({"ipRanges": [{"range": "10.0.0.0/24", "rangeStart": "10.0.0.5"}]}, "ipam.ipRanges[0].rangeStart", "range_start"),
    ({"ipRanges": [{"subnet": "10.0.0.0/24"}]}, "ipam.ipRanges[0].subnet", "range"),
])
def test_misspelt_keys_are_errors_saying_did_you_mean(ipam, key, intended):
    error = config_error(ipam)
    assert f"{key} is not a whereabouts key" in error.msg
    assert f"did you mean {intended}?" in error.msg


def test_other_unknown_keys_are_warnings():
    config, request = load({"range": "10.0.0.0/24", "flavour": "vanilla",
                            "ipRanges": [{"range": "fd00::/64", "colour": "blue"}]})
    assert request.warnings == ["ipam.flavour is not a whereabouts key; it is ignored",
                                "ipam.ipRanges[0].colour is not a whereabouts key; it is ignored"]
    assert len(config.ranges) == 2


@pytest.mark.parametrize("ipam, key", [
    ({"ipRanges": "10.0.0.0/24"}, "ipam.ipRanges"),
    ({"ipRanges": ["10.0.0.0/24"]}, "ipam.ipRanges[0]"),
    ({"ipRanges": [{"exclude": ["10.0.0.1"]}]}, "ipam.ipRanges[0].range"),
    ({"range": "10.0.0.0/24", "enable_overlapping_ranges": "false"}, "ipam.enable_overlapping_ranges"),
    ({"range": "10.0.0.0/24", "network_name": 7}, "ipam.network_name"),
    ({"range": "10.0.0.0/24", "sqlite_path": ["/tmp/x"]}, "ipam.sqlite_path"),
    ({"range": "10.0.0.0/24", "addresses": {"address": "10.1.0.1/24"}}, "ipam.addresses"),
])
def test_wrong_types_name_the_key(ipam, key):
    assert key in config_error(ipam).msg


def test_no_range_at_all():
    error = config_error({"network_name": "x"})
    assert "no range" in error.msg


def test_missing_ipam():
    request = Request("ADD", "c", "/n", "eth0", "", "", {"cniVersion": "1.0.0", "name": "n"})
    with pytest.raises(CNIError) as info:
        wb.load(request, Files())
    assert info.value.code == INVALID_CONFIG and "ipam" in info.value.msg


# --- CNI_ARGS and runtimeConfig ---

def test_pod_from_cni_args():
    config, _ = load({"range": "10.0.0.0/24"},
                     "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee;"
                     "K8S_POD_UID=1234")
    assert config.pod == "team-a/web-0"


def test_pod_name_without_namespace_is_recorded_as_podman_gives_it():
    """podman sends K8S_POD_NAME=<container name> and no namespace."""
    config, _ = load({"range": "10.0.0.0/24"}, "IgnoreUnknown=1;K8S_POD_NAME=web-0")
    assert config.pod == "web-0"


def test_no_pod_name_is_fine():
    config, _ = load({"range": "10.0.0.0/24"}, "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a")
    assert config.pod == ""


def test_unknown_cni_args_without_ignore_unknown_fail_like_go():
    request = make_request({"range": "10.0.0.0/24"}, "K8S_POD_NAME=a;FOO=bar")
    with pytest.raises(CNIError) as info:
        wb.load(request, Files())
    assert info.value.code == INVALID_ENV and "FOO=bar" in info.value.msg


@pytest.mark.parametrize("args", ["IP=10.0.0.7", "IP=10.0.0.7/24", "IgnoreUnknown=1;IP=10.0.0.7/16;K8S_POD_NAME=p"])
def test_ip_arg_in_a_range_is_requested_from_it(args):
    config, _ = load({"range": "10.0.0.0/24"}, args)
    assert config.requested == {0: ip("10.0.0.7")}
    assert config.addresses == []


def test_ip_args_go_to_the_range_holding_each():
    config, _ = load({"range": "10.0.0.0/24", "ipRanges": [{"range": "fd00::/64"}, {"range": "10.1.0.0/24"}]},
                     "IP=10.1.0.9,fd00::abcd")
    assert config.requested == {2: ip("10.1.0.9"), 1: ip("fd00::abcd")}


def test_ip_arg_outside_every_range_is_a_static_extra_address_with_gateway_arg():
    config, _ = load({"range": "10.0.0.0/24"}, "IP=198.51.100.7/24;GATEWAY=198.51.100.1")
    assert config.requested == {}
    assert [(str(a.address), str(a.gateway)) for a in config.addresses] == [("198.51.100.7/24", "198.51.100.1")]


def test_ip_arg_outside_every_range_needs_a_prefix():
    error = config_error({"range": "10.0.0.0/24"}, "IP=198.51.100.7")
    assert "CNI_ARGS IP" in error.msg and "198.51.100.7" in error.msg and "prefix" in error.msg


@pytest.mark.parametrize("ipam, args", [
    ({"range": "10.0.0.0/24", "exclude": ["10.0.0.0/28"]}, "IP=10.0.0.7"),
    ({"range": "10.0.0.0/24", "range_start": "10.0.0.100"}, "IP=10.0.0.7"),
    ({"range": "10.0.0.0/24"}, "IP=10.0.0.255"),
])
def test_ip_arg_excluded_or_outside_the_bounds_is_an_error(ipam, args):
    error = config_error(ipam, args)
    assert "CNI_ARGS IP" in error.msg and args.split("=")[1] in error.msg and "ipam.range" in error.msg


def test_two_ip_args_in_one_range_is_an_error():
    error = config_error({"range": "10.0.0.0/24"}, "IP=10.0.0.7,10.0.0.8")
    assert "10.0.0.8" in error.msg and "second address" in error.msg and "ipam.range" in error.msg


def test_bad_ip_arg():
    error = config_error({"range": "10.0.0.0/24"}, "IP=10.0.0.999")
    assert "CNI_ARGS IP" in error.msg and "10.0.0.999" in error.msg


def test_runtime_config_ips_in_a_range_are_requested():
    config, _ = load({"ipRanges": [{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}]},
                     runtimeConfig={"ips": ["10.0.0.9/24", "fd00::9"]})
    assert config.requested == {0: ip("10.0.0.9"), 1: ip("fd00::9")}
    assert config.addresses == []


def test_runtime_config_ips_outside_become_static_and_need_a_prefix():
    config, _ = load({"range": "10.0.0.0/24"}, runtimeConfig={"ips": ["198.51.100.7/24"]})
    assert [str(a.address) for a in config.addresses] == ["198.51.100.7/24"]
    error = config_error({"range": "10.0.0.0/24"}, runtimeConfig={"ips": ["198.51.100.7"]})
    assert "runtimeConfig.ips[0]" in error.msg and "198.51.100.7" in error.msg


def test_runtime_config_ips_excluded_or_twice_are_errors():
    error = config_error({"range": "10.0.0.0/24", "exclude": ["10.0.0.9"]}, runtimeConfig={"ips": ["10.0.0.9"]})
    assert "runtimeConfig.ips[0]" in error.msg and "10.0.0.9" in error.msg
    error = config_error({"range": "10.0.0.0/24"}, runtimeConfig={"ips": ["10.0.0.9", "10.0.0.10"]})
    assert "runtimeConfig.ips[1]" in error.msg and "second address" in error.msg


def test_ip_arg_and_runtime_config_for_the_same_range_conflict():
    error = config_error({"range": "10.0.0.0/24"}, "IP=10.0.0.5", runtimeConfig={"ips": ["10.0.0.6"]})
    assert "runtimeConfig.ips[0]" in error.msg and "second address" in error.msg


# --- what podman asks for again on `network reload` (DEL, then ADD with the container's addresses) ----

def test_the_same_address_asked_for_twice_is_one_request():
    """A container started with --ip A gets runtimeConfig.ips ["A", "A"] on reload."""
    config, _ = load({"range": "10.0.0.0/24"}, runtimeConfig={"ips": ["10.0.0.9", "10.0.0.9"]})
    assert config.requested == {0: ip("10.0.0.9")}
    config, _ = load({"range": "10.0.0.0/24"}, "IP=10.0.0.9", runtimeConfig={"ips": ["10.0.0.9/24"]})
    assert config.requested == {0: ip("10.0.0.9")}


def test_dual_stack_reload_asks_for_each_address_once():
    config, _ = load({"ipRanges": [{"range": "10.0.0.0/24"}, {"range": "fd00::/64"}]},
                     runtimeConfig={"ips": ["10.0.0.9", "fd00::9", "10.0.0.9", "fd00::9"]})
    assert config.requested == {0: ip("10.0.0.9"), 1: ip("fd00::9")}


def test_an_address_the_config_lists_is_that_address():
    ipam = {"range": "10.0.0.0/24", "addresses": [{"address": "198.51.100.7/24", "gateway": "198.51.100.1"}]}
    config, _ = load(ipam, runtimeConfig={"ips": ["10.0.0.9", "198.51.100.7"]})
    assert config.requested == {0: ip("10.0.0.9")}
    assert [(str(a.address), str(a.gateway)) for a in config.addresses] == [("198.51.100.7/24", "198.51.100.1")]


def test_a_bare_address_outside_the_ranges_takes_the_prefix_of_a_configured_subnet():
    ipam = {"range": "10.0.0.0/24", "addresses": [{"address": "198.51.100.7/24"}]}
    config, _ = load(ipam, "IP=198.51.100.8")
    assert [str(a.address) for a in config.addresses] == ["198.51.100.7/24", "198.51.100.8/24"]


def test_a_bare_address_outside_every_subnet_says_what_to_do():
    error = config_error({"range": "10.0.0.0/24"}, "IP=198.51.100.7")
    assert "ipam.range 10.0.0.0/24" in error.msg
    assert "inside a range" in error.details and "ipam.addresses" in error.details and "--ip" in error.details


def test_runtime_config_ips_must_be_a_list():
    assert "runtimeConfig.ips" in config_error({"range": "10.0.0.0/24"}, runtimeConfig={"ips": "10.0.0.5"}).msg


# --- what DEL and GC need ---

def test_store_settings_need_no_ranges():
    settings = wb.store_settings({"type": "whereabouts", "range": "garbage"})
    assert (settings.datastore, settings.sqlite_path) == ("sqlite", DEFAULT_SQLITE_PATH)
    assert wb.store_settings({"sqlite_path": "/tmp/a.db"}).sqlite_path == "/tmp/a.db"
    with pytest.raises(CNIError) as info:
        wb.store_settings({"datastore": "etcd"})
    assert info.value.code == INVALID_CONFIG


# --- the gateway is never handed out; legacy versions ---

def test_gateway_inside_the_range_is_excluded():
    config, _ = load({"range": "10.0.0.0/24", "gateway": "10.0.0.1", "ipRanges": [{"range": "fd00::/64"}]})
    v4, v6 = config.ranges
    assert v4.range.first_allocatable() == ip("10.0.0.2")
    assert not v4.range.is_allocatable(ip("10.0.0.1"))
    assert v6.range.first_allocatable() == ip("fd00::1")  # other family: untouched


def test_gateway_outside_the_range_changes_nothing():
    config, _ = load({"range": "10.0.0.0/24", "range_start": "10.0.0.10", "gateway": "10.0.0.1"})
    assert config.ranges[0].range.first_allocatable() == ip("10.0.0.10")
    assert config.ranges[0].range.excluded == ()


def test_asking_for_the_gateway_is_an_error():
    error = config_error({"range": "10.0.0.0/24", "gateway": "10.0.0.1"}, args="IgnoreUnknown=1;IP=10.0.0.1")
    assert "CNI_ARGS IP" in error.msg and "10.0.0.1" in error.msg


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_versions_refuse_two_addresses_of_one_family(version):
    error = config_error({"range": "10.0.0.0/24", "ipRanges": [{"range": "10.1.0.0/24"}]}, cniVersion=version)
    assert version in error.msg and "1 address per family" in error.msg
    config, _ = load({"range": "10.0.0.0/24", "ipRanges": [{"range": "fd00::/64"}]}, cniVersion=version)
    assert len(config.ranges) == 2  # one of each family is fine


# --- bounds on hostile input (issue 14) ---

def _hosts(count: int) -> list:
    return [str(ipaddress.ip_address("10.0.0.0") + i) for i in range(count)]


@pytest.mark.parametrize("where", ["top", "ipRanges"])
def test_more_exclude_entries_than_the_bound_is_code_7_naming_key_and_bound(where):
    exclude = _hosts(wb.MAX_EXCLUDE + 1)
    ipam = ({"range": "10.0.0.0/16", "exclude": exclude} if where == "top" else
            {"ipRanges": [{"range": "10.1.0.0/24"}, {"range": "10.0.0.0/16", "exclude": exclude}]})
    error = config_error(ipam)
    key = "ipam.exclude" if where == "top" else "ipam.ipRanges[1].exclude"
    assert error.msg == f"{key}: {wb.MAX_EXCLUDE + 1} entries, more than the {wb.MAX_EXCLUDE} allowed"


def test_exclude_entries_up_to_the_bound_and_a_gateway_in_the_range_are_accepted():
    config, _ = load({"range": "10.0.0.0/16", "exclude": _hosts(wb.MAX_EXCLUDE), "gateway": "10.0.255.254"})
    assert config.ranges[0].range.first_allocatable() == ip("10.0.4.0")


def test_a_nul_byte_in_log_file_or_sqlite_path_is_code_7():
    assert "NUL" in config_error({"range": "10.0.0.0/24", "log_file": "/tmp/a\0b"}).msg
    assert "NUL" in config_error({"range": "10.0.0.0/24", "sqlite_path": "/tmp/a\0b"}).msg
    assert "ipam.log_file: expected a file path" in config_error({"range": "10.0.0.0/24", "log_file": 5}).msg
