"""Our ``static`` plugin under Debian's Go ``bridge`` and ``macvlan`` plugins, in real namespaces.

Each test makes a "node" namespace and "pod" namespaces (nothing touches the
machine's own network), runs the Go main plugin inside the node namespace
with ``CNI_PATH`` pointing at our launchers (Debian's own IPAM plugins are
not on that path), and looks at what the pod got with ``ip -j``.  The ``lab``
fixture removes every namespace at teardown, also when a test fails.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from cni_ipam_lab.namespaces import Attachment, Lab

pytestmark = pytest.mark.root

VERSIONS = ("0.3.1", "0.4.0", "1.0.0")
IFNAME = "net1"

# Dual stack on a bridge, with a default route per family and a route via
# another gateway per family.
BRIDGE_IPAM = {
    "type": "static",
    "addresses": [
        {"address": "10.10.21.10/24", "gateway": "10.10.21.1"},
        {"address": "fd00:21::10/64", "gateway": "fd00:21::1"},
    ],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.10.21.1"},
        {"dst": "192.168.17.0/24", "gw": "10.10.21.254"},
        {"dst": "::/0", "gw": "fd00:21::1"},
        {"dst": "fd00:99::/64", "gw": "fd00:21::fe"},
    ],
    "dns": {"nameservers": ["10.10.21.1"], "domain": "example.com", "search": ["example.com"]},
}

# Dual stack on macvlan, with routes via gateways but no default route.
MACVLAN_IPAM = {
    "type": "static",
    "addresses": [
        {"address": "10.10.22.10/24", "gateway": "10.10.22.1"},
        {"address": "fd00:22::10/64", "gateway": "fd00:22::1"},
    ],
    "routes": [
        {"dst": "192.168.18.0/24", "gw": "10.10.22.1"},
        {"dst": "fd00:98::/64", "gw": "fd00:22::1"},
    ],
}


def bridge_config(version: str, ipam: dict, bridge: str = "cni-e2e0", **extra) -> dict:
    return {"cniVersion": version, "name": "e2e-static-bridge", "type": "bridge", "bridge": bridge,
            "ipam": ipam, **extra}


def macvlan_config(version: str, ipam: dict, master: str, **extra) -> dict:
    return {"cniVersion": version, "name": "e2e-static-macvlan", "type": "macvlan", "master": master,
            "mode": "bridge", "ipam": ipam, **extra}


# --- what a pod namespace holds -------------------------------------------------------------------

def _canonical_interface(text: str) -> str:
    return str(ipaddress.ip_interface(text))


def pod_global_addresses(pod: str) -> dict:
    """``{ifname: {ip/prefix}}`` of every global-scope address in the pod namespace."""
    found = {}
    for link in json.loads(Lab.ip(pod, "-j", "addr", "show")):
        for addr in link.get("addr_info", []):
            if addr.get("scope") == "global":
                found.setdefault(link["ifname"], set()).add(_canonical_interface(f"{addr['local']}/{addr['prefixlen']}"))
    return found


def _route_key(route: dict, family: int) -> tuple:
    dst = route["dst"]
    if dst == "default":
        dst = "0.0.0.0/0" if family == 4 else "::/0"
    network = str(ipaddress.ip_network(dst, strict=False))
    gateway = route.get("gateway")
    return network, str(ipaddress.ip_address(gateway)) if gateway else None, route.get("dev")


def pod_routes(pod: str) -> set:
    """``{(dst, gateway or None, dev)}`` of the main table, both families, without lo and link-local."""
    routes = set()
    for family, flag in ((4, "-4"), (6, "-6")):
        for route in json.loads(Lab.ip(pod, "-j", flag, "route", "show")):
            key = _route_key(route, family)
            if key[2] == "lo" or key[0].startswith("fe80:"):
                continue
            routes.add(key)
    return routes


def has_link(pod: str, ifname: str) -> bool:
    return Lab.exec(pod, "ip", "link", "show", ifname).returncode == 0


def expected_routes(ipam_routes: list, ifname: str = IFNAME) -> set:
    return {(str(ipaddress.ip_network(r["dst"], strict=False)), str(ipaddress.ip_address(r["gw"])), ifname)
            for r in ipam_routes}


def result_addresses(output: dict) -> dict:
    """``{ip/prefix: gateway or None}`` from an ADD result."""
    return {_canonical_interface(ip["address"]): ip.get("gateway") for ip in output["ips"]}


def has_check(version: str) -> bool:
    return tuple(int(p) for p in version.split(".")) >= (0, 4, 0)


# --- the lifecycle every case goes through --------------------------------------------------------

def assert_attached(att: Attachment, addresses: dict, routes: set, version: str) -> None:
    """ADD's result and the pod's interface hold exactly ``addresses`` ({cidr: gw}) and ``routes``."""
    output = att.result
    assert output["cniVersion"] == version
    assert result_addresses(output) == {_canonical_interface(a): g for a, g in addresses.items()}
    if version != "1.0.0":  # 0.3.x and 0.4.0 results carry ips[].version
        assert {ip["version"] for ip in output["ips"]} == {str(ipaddress.ip_interface(a).version) for a in addresses}
    assert pod_global_addresses(att.pod) == {att.ifname: {_canonical_interface(a) for a in addresses}}
    present = pod_routes(att.pod)
    missing = routes - present
    assert not missing, f"routes missing in the pod: {sorted(missing, key=str)}; present: {sorted(present, key=str)}"
    for address in addresses:  # the connected route of each address
        network = str(ipaddress.ip_interface(address).network)
        assert (network, None, att.ifname) in present


def assert_detached(att: Attachment) -> None:
    """DEL succeeded and left nothing: no interface, no global address, no route (and DEL again succeeds)."""
    delete = att.delete()
    assert delete.ok, f"DEL failed: {delete}"
    assert not has_link(att.pod, att.ifname), f"{att.ifname} still exists after DEL"
    assert pod_global_addresses(att.pod) == {}
    assert pod_routes(att.pod) == set()
    again = att.delete()
    assert again.ok, f"second DEL failed: {again}"


def run_lifecycle(att: Attachment, addresses: dict, routes: set, version: str) -> None:
    add = att.add()
    assert add.ok, f"ADD failed: {add}"
    assert_attached(att, addresses, routes, version)
    if has_check(version):  # CHECK exists from CNI 0.4.0
        check = att.check()
        assert check.ok, f"CHECK failed: {check}"
    assert_detached(att)


def configured(ipam: dict) -> dict:
    return {a["address"]: a.get("gateway") for a in ipam["addresses"]}


# --- the cases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_bridge_dual_stack(lab, cni_path, version):
    node = lab.netns("node")
    pod = lab.netns("pod")
    att = Attachment(lab, node, pod, bridge_config(version, BRIDGE_IPAM), cni_path, ifname=IFNAME)
    routes = expected_routes(BRIDGE_IPAM["routes"])
    assert ("0.0.0.0/0", "10.10.21.1", IFNAME) in routes and ("::/0", "fd00:21::1", IFNAME) in routes
    run_lifecycle(att, configured(BRIDGE_IPAM), routes, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_macvlan_dual_stack(lab, cni_path, version):
    node = lab.netns("node")
    lab.veth(node, "wire0", "wire1")  # the macvlan parent (no dummy links in this kernel)
    pod = lab.netns("pod")
    att = Attachment(lab, node, pod, macvlan_config(version, MACVLAN_IPAM, "wire0"), cni_path, ifname=IFNAME)
    add = att.add()
    assert add.ok, f"ADD failed: {add}"
    assert_attached(att, configured(MACVLAN_IPAM), expected_routes(MACVLAN_IPAM["routes"]), version)
    # No default route was configured, so there is none.
    assert not [r for r in pod_routes(pod) if r[0] in ("0.0.0.0/0", "::/0")]
    if has_check(version):
        check = att.check()
        assert check.ok, f"CHECK failed: {check}"
    assert_detached(att)


def test_addresses_from_cni_args(lab, cni_path):
    """``CNI_ARGS`` ``IP=``/``GATEWAY=`` as a runtime sends them, with its other keys."""
    ipam = {"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.30.1"}, {"dst": "::/0", "gw": "fd00:30::1"}]}
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=x;IP=10.10.30.5/24,fd00:30::5/64;GATEWAY=10.10.30.1,fd00:30::1"
    node = lab.netns("node")
    pod = lab.netns("pod")
    att = Attachment(lab, node, pod, bridge_config("1.0.0", ipam), cni_path, ifname=IFNAME, args=args)
    run_lifecycle(att, {"10.10.30.5/24": "10.10.30.1", "fd00:30::5/64": "fd00:30::1"},
                  expected_routes(ipam["routes"]), "1.0.0")


def test_addresses_from_cni_args_are_added_to_the_config(lab, cni_path):
    """Like Go's static: ``IP=`` addresses come after those in ``ipam.addresses``."""
    ipam = {"type": "static", "addresses": [{"address": "10.10.31.5/24", "gateway": "10.10.31.1"}]}
    node = lab.netns("node")
    pod = lab.netns("pod")
    att = Attachment(lab, node, pod, bridge_config("1.0.0", ipam), cni_path, ifname=IFNAME,
                     args="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.10.31.6/24")
    run_lifecycle(att, {"10.10.31.5/24": "10.10.31.1", "10.10.31.6/24": None}, set(), "1.0.0")


@pytest.mark.parametrize("main_plugin", ["bridge", "macvlan"])
def test_runtime_config_ips_replace_the_config(lab, cni_path, main_plugin):
    """``runtimeConfig.ips`` (the ``ips`` capability) wins over ``ipam.addresses``."""
    ipam = {"type": "static", "addresses": [{"address": "10.10.40.99/24", "gateway": "10.10.40.1"}],
            "routes": [{"dst": "192.168.40.0/24", "gw": "10.10.40.1"}]}
    runtime = {"capabilities": {"ips": True}, "runtimeConfig": {"ips": ["10.10.40.5/24", "fd00:40::5/64"]}}
    node = lab.netns("node")
    pod = lab.netns("pod")
    if main_plugin == "bridge":
        config = bridge_config("1.0.0", ipam, **runtime)
    else:
        lab.veth(node, "wire0", "wire1")
        config = macvlan_config("1.0.0", ipam, "wire0", **runtime)
    att = Attachment(lab, node, pod, config, cni_path, ifname=IFNAME)
    run_lifecycle(att, {"10.10.40.5/24": None, "fd00:40::5/64": None}, expected_routes(ipam["routes"]), "1.0.0")


def test_two_bridge_pods_ping_each_other(lab, cni_path):
    node = lab.netns("node")
    # The bridge exists before the pods, with a MAC set by hand: otherwise Linux
    # gives a bridge the lowest MAC of its ports, so the second pod's ADD can
    # change it, and Go bridge's CHECK of the first pod fails ("Mac doesn't match").
    lab.ip(node, "link", "add", "cni-e2e0", "type", "bridge")
    lab.ip(node, "link", "set", "cni-e2e0", "address", "02:00:00:0e:2e:01")
    pods = []
    for name, v4, v6 in (("pod-a", "10.10.21.10/24", "fd00:21::10/64"), ("pod-b", "10.10.21.11/24", "fd00:21::11/64")):
        ipam = dict(BRIDGE_IPAM, addresses=[{"address": v4, "gateway": "10.10.21.1"},
                                            {"address": v6, "gateway": "fd00:21::1"}])
        att = Attachment(lab, node, lab.netns(name), bridge_config("1.0.0", ipam), cni_path, ifname=IFNAME)
        add = att.add()
        assert add.ok, f"ADD {name} failed: {add}"
        assert_attached(att, configured(ipam), expected_routes(ipam["routes"]), "1.0.0")
        pods.append((att, v4.split("/")[0], v6.split("/")[0]))
    (a, a4, a6), (b, b4, b6) = pods
    for source, target in ((a, b4), (b, a4), (a, b6), (b, a6)):
        # -w: keep trying for a while (IPv6 addresses are usable once DAD is done)
        ping = Lab.exec(source.pod, "ping", "-c", "1", "-w", "10", target, timeout=30)
        assert ping.returncode == 0, f"{source.pod} cannot ping {target}: {ping.stdout}{ping.stderr}"
    for att, _, _ in pods:
        check = att.check()
        assert check.ok, f"CHECK {att.pod} failed: {check}"
    for att, _, _ in pods:
        assert_detached(att)
