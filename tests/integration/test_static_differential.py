"""Our ``static`` against Debian's Go ``static`` (plugins v1.1.1), case by case.

Each row of :data:`CASES` runs both executables as subprocesses with the
same clean environment (:func:`cni_ipam_lab.namespaces.cni_env`) and the same stdin:

* a row without ``reason`` says both behave alike: on success the parsed
  stdout JSON must be equal, on failure both must fail with the same code,
  and our message must contain what the row expects;
* a row with ``reason`` is a deliberate difference: it states what Go does
  (``go``) and what we do (``ours``), and both are asserted, so the test
  fails if either side stops behaving as written here.

Normalization before comparing results, and only this: an empty ``"dns": {}``
equals a missing ``dns`` (Go v1.1.1 always prints ``"dns": {}``; we omit it,
as newer Go libraries do).  Error objects are not compared as a whole: Go
omits ``cniVersion`` and words its messages differently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from cni_ipam_lab.namespaces import GO_PLUGIN_DIR, cni_env, run_plugin

GO_STATIC = os.path.join(GO_PLUGIN_DIR, "static")

pytestmark = pytest.mark.skipif(
    not os.access(GO_STATIC, os.X_OK),
    reason=f"Go reference plugin {GO_STATIC} is missing (apt-get install containernetworking-plugins)",
)

GO_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
OUR_VERSIONS = GO_VERSIONS + ["1.1.0"]


@dataclass
class Ok:
    """Exit 0.  ``result``: the expected stdout JSON (None: only compared with the other side);
    ``stderr``: text stderr must contain."""

    result: dict | None = None
    stderr: str = ""


@dataclass
class Err:
    """Exit non-zero with an error object of ``code`` whose ``msg`` contains ``msg``."""

    code: int
    msg: str = ""


@dataclass
class Case:
    id: str
    command: str
    config: dict | bytes | None
    ours: Ok | Err
    go: Ok | Err | None = None  # None: Go does the same as we do
    reason: str = ""  # why we differ on purpose; required when go is given
    args: str = ""  # CNI_ARGS
    env: dict = field(default_factory=dict)  # overrides of cni_env()'s keyword arguments


def conf(version="1.0.0", top=None, **ipam) -> dict:
    config = {"cniVersion": version, "name": "diffnet", "ipam": {"type": "static", **ipam}}
    config.update(top or {})
    return config


V4 = [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}]
V6 = [{"address": "2001:db8:99::50/64", "gateway": "2001:db8:99::1"}]
DUAL = V4 + V6
ROUTES = [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.99.0.254"}, {"dst": "::/0", "gw": "2001:db8:99::fe"}]
DNS = {"nameservers": ["10.99.0.1", "2001:db8:99::53"], "domain": "example.test",
       "search": ["example.test", "svc.test"], "options": ["ndots:2", "rotate"]}
PREV = {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}]}
CODE_999 = ("Go reports every plain error as code 999; we use code 7 (invalid network config) "
            "with a message naming the field and the value")
RELOAD = ("podman's `network reload` runs DEL, then ADD asking again for the container's addresses, bare; "
          "refusing them leaves the running container without an address")
ARGS_999 = "Go reports CNI_ARGS errors as code 999; we use code 4 (invalid environment variables)"


def dual_result(version):
    """What both plugins return for the DUAL/ROUTES/DNS config in ``version``."""
    if version in ("0.1.0", "0.2.0"):
        return {"cniVersion": version,
                "ip4": {"ip": "10.99.0.50/24", "gateway": "10.99.0.1",
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.99.0.254"}]},
                "ip6": {"ip": "2001:db8:99::50/64", "gateway": "2001:db8:99::1",
                        "routes": [{"dst": "::/0", "gw": "2001:db8:99::fe"}]},
                "dns": DNS}
    ips = [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"},
           {"address": "2001:db8:99::50/64", "gateway": "2001:db8:99::1"}]
    if version < "1.0.0":
        ips = [dict(version=v, **ip) for v, ip in zip("46", ips)]
    return {"cniVersion": version, "ips": ips, "routes": ROUTES, "dns": DNS}


CASES = [
    # --- ADD: every version, v4 / v6 / dual, routes, dns ----------------------------------------
    *[Case(f"add-dual-{v}", "ADD", conf(v, addresses=DUAL, routes=ROUTES, dns=DNS), Ok(dual_result(v)))
      for v in GO_VERSIONS],
    Case("add-v4-only", "ADD", conf(addresses=V4, routes=ROUTES[:2]),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}],
             "routes": ROUTES[:2]})),
    Case("add-v6-only-0.4.0", "ADD", conf("0.4.0", addresses=V6, routes=ROUTES[2:]),
         Ok({"cniVersion": "0.4.0",
             "ips": [{"version": "6", "address": "2001:db8:99::50/64", "gateway": "2001:db8:99::1"}],
             "routes": ROUTES[2:]})),
    Case("add-0.2.0-v6-only-drops-v4-routes", "ADD", conf("0.2.0", addresses=V6, routes=ROUTES),
         Ok({"cniVersion": "0.2.0", "ip6": {"ip": "2001:db8:99::50/64", "gateway": "2001:db8:99::1",
                                            "routes": [{"dst": "::/0", "gw": "2001:db8:99::fe"}]}})),
    Case("add-0.1.0-no-gateway-no-routes", "ADD", conf("0.1.0", addresses=[{"address": "10.99.0.50/24"}]),
         Ok({"cniVersion": "0.1.0", "ip4": {"ip": "10.99.0.50/24"}})),
    Case("add-no-cniversion-is-0.1.0", "ADD", {"name": "diffnet", "ipam": {"type": "static", "addresses": V4}},
         Ok({"cniVersion": "0.1.0", "ip4": {"ip": "10.99.0.50/24", "gateway": "10.99.0.1"}})),
    Case("add-empty-cniversion-is-0.1.0", "ADD", conf("", addresses=V4),
         Ok({"cniVersion": "0.1.0", "ip4": {"ip": "10.99.0.50/24", "gateway": "10.99.0.1"}})),
    Case("add-no-addresses-1.0.0", "ADD", conf(), Ok({"cniVersion": "1.0.0"})),
    Case("add-no-addresses-0.3.1-routes-dns", "ADD", conf("0.3.1", routes=ROUTES[:1], dns={"domain": "x.test"}),
         Ok({"cniVersion": "0.3.1", "routes": ROUTES[:1], "dns": {"domain": "x.test"}})),
    Case("add-dns-options-only", "ADD", conf(addresses=V4, dns={"options": ["ndots:5", "timeout:1"]}),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}],
             "dns": {"options": ["ndots:5", "timeout:1"]}})),
    Case("add-dns-empty-nameservers", "ADD", conf(addresses=V4, dns={"nameservers": []}), Ok()),
    Case("add-empty-gateway-is-none", "ADD", conf(addresses=[{"address": "10.99.0.50/24", "gateway": ""}]),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24"}]})),
    Case("add-route-dst-keeps-host-bits", "ADD", conf(addresses=V4, routes=[{"dst": "10.1.2.3/8"}]),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}],
             "routes": [{"dst": "10.1.2.3/8"}]})),
    Case("add-ipv6-written-long-and-upper", "ADD",
         conf(addresses=[{"address": "2001:DB8:99:0:0:0:0:50/64", "gateway": "2001:0db8:99::1"}]),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "2001:db8:99::50/64", "gateway": "2001:db8:99::1"}]})),
    Case("add-prefix-with-leading-zero", "ADD", conf(addresses=[{"address": "10.99.0.50/024"}]),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24"}]})),
    Case("add-1.1.0-route-fields-dropped-in-1.0.0", "ADD",
         conf(routes=[{"dst": "10.9.0.0/16", "mtu": 1400, "priority": 5, "table": 10, "scope": 0}]),
         Ok({"cniVersion": "1.0.0", "routes": [{"dst": "10.9.0.0/16"}]})),
    Case("add-unknown-ipam-key", "ADD", conf(addresses=V4, rangeStart="10.99.0.10"),
         Ok(stderr="static: warning: ipam.rangeStart is not a static IPAM key; it is ignored"),
         reason="we warn on stderr about ipam keys static does not know (typos); Go ignores them silently"),
    Case("add-gateway-outside-subnet", "ADD", conf(addresses=[{"address": "10.99.0.50/24", "gateway": "10.98.0.1"}]),
         Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.98.0.1"}]},
            stderr="static: warning: gateway 10.98.0.1 is outside the subnet of 10.99.0.50/24"),
         reason="a gateway outside its subnet is a warning on stderr; the result is Go's"),

    # --- ADD: address sources and precedence ----------------------------------------------------
    Case("cni-args-ip-appended", "ADD", conf(addresses=[{"address": "10.99.0.10/24"}]), args="IP=10.99.0.40/24",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.10/24"}, {"address": "10.99.0.40/24"}]})),
    Case("cni-args-dual-gateways-any-order", "ADD", conf(),
         args="IP=10.99.0.77/24,2001:db8:99::77/64;GATEWAY=2001:db8:99::1,10.99.0.1",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.77/24", "gateway": "10.99.0.1"},
                                                 {"address": "2001:db8:99::77/64", "gateway": "2001:db8:99::1"}]})),
    Case("cni-args-gateway-skips-ipam-addresses", "ADD", conf(addresses=[{"address": "10.99.0.10/24"}]),
         args="IP=10.99.0.40/24;GATEWAY=10.99.0.1",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.10/24"},
                                                 {"address": "10.99.0.40/24", "gateway": "10.99.0.1"}]})),
    Case("cni-args-gateway-outside-every-subnet", "ADD", conf(), args="IP=10.99.0.40/24;GATEWAY=10.1.1.1",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.40/24"}]})),
    Case("cni-args-kubelet-style", "ADD", conf("0.3.1"),
         args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod-a;K8S_POD_INFRA_CONTAINER_ID=c0ffee;IP=10.99.0.41/24",
         ours=Ok({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.99.0.41/24"}]})),
    Case("cni-args-ignoreunknown-true-upper", "ADD", conf(), args="IgnoreUnknown=TRUE;X=1;IP=10.99.0.42/24",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.42/24"}]})),
    Case("cni-args-repeated-ip-last-wins", "ADD", conf(), args="IP=10.99.0.43/24;IP=10.99.0.44/24",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.44/24"}]})),
    Case("cni-args-spaces-after-comma", "ADD", conf(), args="IP=10.99.0.45/24, 10.99.0.46/24", ours=Ok()),
    Case("args-cni-ips-replace", "ADD", conf(addresses=V4, top={"args": {"cni": {"ips": ["10.99.0.8/24", "2001:db8:99::8/64"]}}}),
         args="IP=10.99.0.40/24",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.8/24"}, {"address": "2001:db8:99::8/64"}]})),
    Case("runtime-config-ips-win", "ADD",
         conf(addresses=V4, top={"args": {"cni": {"ips": ["10.99.0.8/24"]}}, "runtimeConfig": {"ips": ["10.99.0.9/24"]}}),
         args="IP=10.99.0.40/24", ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.9/24"}]})),
    Case("empty-ips-lists-replace-nothing", "ADD",
         conf(addresses=V4, top={"args": {"cni": {"ips": []}}, "runtimeConfig": {"ips": []}}),
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}]})),

    # --- ADD: config errors both report (codes differ on purpose) -------------------------------
    Case("err-address-without-prefix", "ADD", conf(addresses=[{"address": "10.99.0.50"}]),
         Err(7, "ipam.addresses[0].address: \"10.99.0.50\" is not a valid CIDR"),
         go=Err(999, "the 'address' field is expected to be in CIDR notation, got: '10.99.0.50'"), reason=CODE_999),
    Case("err-gateway-not-an-ip", "ADD", conf(addresses=[{"address": "10.99.0.50/24", "gateway": "nope"}]),
         Err(7, "ipam.addresses[0].gateway: \"nope\" is not a valid IP address"),
         go=Err(999, "invalid IP address: nope"), reason=CODE_999),
    Case("err-route-dst-not-cidr", "ADD", conf(routes=[{"dst": "10.0.0.0"}]),
         Err(7, "ipam.routes[0].dst: \"10.0.0.0\" is not a valid CIDR"),
         go=Err(999, "invalid CIDR address: 10.0.0.0"), reason=CODE_999),
    Case("err-missing-ipam", "ADD", {"cniVersion": "1.0.0", "name": "diffnet"},
         Err(7, "IPAM config missing 'ipam' key"), go=Err(999, "IPAM config missing 'ipam' key"), reason=CODE_999),
    Case("err-0.2.0-two-v4-addresses", "ADD", conf("0.2.0", addresses=V4 + [{"address": "10.99.0.51/24"}]),
         Err(7, "CNI version 0.2.0 does not support more than 1 address per family"),
         go=Err(999, "CNI version 0.2.0 does not support more than 1 address per family"), reason=CODE_999),
    Case("err-0.2.0-no-addresses", "ADD", conf("0.2.0", routes=ROUTES, dns=DNS),
         Err(7, "CNI version 0.2.0 needs at least one address"),
         go=Err(999, "cannot convert: no valid IP addresses"), reason=CODE_999),
    Case("err-0.1.0-two-v6-from-cni-args", "ADD", conf("0.1.0", addresses=V6), args="IP=2001:db8:99::51/64",
         ours=Err(7, "CNI version 0.1.0 does not support more than 1 address per family"),
         go=Err(999, "does not support more than 1 address per family"), reason=CODE_999),
    Case("cni-args-ip-without-prefix", "ADD", conf(), args="IP=10.99.0.79",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.79/32"}]}),
         go=Err(999, "the 'ip' field is expected to be in CIDR notation, got: '10.99.0.79'"),
         reason="podman's --ip sends IP=<address> without a prefix; we accept it (host prefix here), Go refuses"),
    Case("cni-args-ip-without-prefix-in-a-configured-subnet", "ADD", conf(addresses=[{"address": "10.99.0.10/24"}]),
         args="IP=10.99.0.80",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.10/24"}, {"address": "10.99.0.80/24"}]}),
         go=Err(999, "the 'ip' field is expected to be in CIDR notation, got: '10.99.0.80'"),
         reason="a bare IP= takes the prefix of the configured subnet that holds it; Go refuses a bare IP="),
    Case("err-cni-args-ip-not-an-address", "ADD", conf(), args="IP=10.99.0.999",
         ours=Err(7, "CNI_ARGS IP: \"10.99.0.999\" is not a valid IP address"),
         go=Err(999, "10.99.0.999"), reason=CODE_999),
    Case("err-cni-args-bad-gateway", "ADD", conf(), args="IP=10.99.0.79/24;GATEWAY=x",
         ours=Err(7, "CNI_ARGS GATEWAY: \"x\" is not a valid IP address"),
         go=Err(999, "invalid gateway address: x"), reason=CODE_999),
    Case("err-runtime-config-ip-not-cidr", "ADD", conf(top={"runtimeConfig": {"ips": ["10.99.0.9/x"]}}),
         Err(7, "runtimeConfig.ips[0]: \"10.99.0.9/x\" is not a valid CIDR"),
         go=Err(999, "an entry in the 'ips' field is NOT in CIDR notation, got: '10.99.0.9/x'"), reason=CODE_999),
    # --- what podman 4.3 sends on `network reload`: DEL, then ADD asking for the addresses again ------
    Case("runtime-config-ip-without-prefix", "ADD", conf(top={"runtimeConfig": {"ips": ["10.99.0.9"]}}),
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.9/32"}]}),
         go=Err(999, "an entry in the 'ips' field is NOT in CIDR notation, got: '10.99.0.9'"),
         reason=RELOAD + "; a bare address takes a prefix as a bare IP= does (here /32)"),
    Case("reload-several-configured-addresses", "ADD",
         conf(addresses=DUAL, top={"runtimeConfig": {"ips": ["10.99.0.50", "2001:db8:99::50"]}}),
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"},
                                                 {"address": "2001:db8:99::50/64", "gateway": "2001:db8:99::1"}]}),
         go=Err(999, "an entry in the 'ips' field is NOT in CIDR notation, got: '10.99.0.50'"),
         reason=RELOAD + "; an address the config lists is that entry, gateway and all"),
    Case("reload-one-configured-address", "ADD", conf(addresses=V4), args="IP=10.99.0.50",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}]}),
         go=Err(999, "the 'ip' field is expected to be in CIDR notation, got: '10.99.0.50'"),
         reason=RELOAD + "; IP=<an address the config lists> is that address, not a second one"),
    Case("cni-args-ip-repeats-a-configured-address", "ADD", conf(addresses=V4), args="IP=10.99.0.50/24",
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}]}),
         go=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"},
                                               {"address": "10.99.0.50/24"}]}),
         reason="an address the config lists, asked for again, is that address: Go returns it twice"),
    Case("reload-after-podman-ip", "ADD",
         conf(addresses=V4, top={"runtimeConfig": {"ips": ["10.99.0.9", "10.99.0.50", "10.99.0.9"]}}),
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.9/24"},
                                                 {"address": "10.99.0.50/24", "gateway": "10.99.0.1"}]}),
         go=Err(999, "an entry in the 'ips' field is NOT in CIDR notation, got: '10.99.0.9'"),
         reason=RELOAD + " (the --ip address first, then the container's addresses): each once"),
    Case("runtime-config-ips-repeated", "ADD", conf(top={"runtimeConfig": {"ips": ["10.99.0.9/24", "10.99.0.9/24"]}}),
         ours=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.9/24"}]}),
         go=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.9/24"}, {"address": "10.99.0.9/24"}]}),
         reason="identical requested addresses are one request: Go returns the address twice"),
    Case("err-args-cni-ip-not-cidr", "ADD", conf(top={"args": {"cni": {"ips": ["10.99.0.8"]}}}),
         Err(7, "args.cni.ips[0]: \"10.99.0.8\" is not a valid CIDR"),
         go=Err(999, "an entry in the 'ips' field is NOT in CIDR notation"), reason=CODE_999),
    Case("err-cni-args-unknown-key", "ADD", conf(), args="IP=10.99.0.40/24;K8S_POD_NAME=pod-a",
         ours=Err(4, 'CNI_ARGS: unknown args ["K8S_POD_NAME=pod-a"]'),
         go=Err(999, 'ARGS: unknown args ["K8S_POD_NAME=pod-a"]'), reason=ARGS_999),
    Case("err-cni-args-invalid-pair", "ADD", conf(), args="IP=10.99.0.40/24;garbage",
         ours=Err(4, "CNI_ARGS: invalid pair 'garbage'"), go=Err(999, 'ARGS: invalid pair "garbage"'), reason=ARGS_999),
    Case("err-cni-args-trailing-semicolon", "ADD", conf(), args="IP=10.99.0.40/24;",
         ours=Err(4, "CNI_ARGS: invalid pair ''"), go=Err(999, 'ARGS: invalid pair ""'), reason=ARGS_999),

    # --- ADD: validations Go does not make ------------------------------------------------------
    Case("beyond-go-gateway-other-family", "ADD", conf(addresses=[{"address": "10.99.0.50/24", "gateway": "2001:db8:99::1"}]),
         Err(7, "ipam.addresses[0].gateway: \"2001:db8:99::1\" is IPv6 but the address \"10.99.0.50/24\" is IPv4"),
         go=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "2001:db8:99::1"}]}),
         reason="a gateway of the other family cannot work; Go returns it, we refuse it"),
    Case("beyond-go-route-gw-other-family", "ADD", conf(routes=[{"dst": "10.0.0.0/8", "gw": "2001:db8:99::1"}]),
         Err(7, "ipam.routes[0].gw: \"2001:db8:99::1\" is IPv6 but dst \"10.0.0.0/8\" is IPv4"),
         go=Ok({"cniVersion": "1.0.0", "routes": [{"dst": "10.0.0.0/8", "gw": "2001:db8:99::1"}]}),
         reason="a route via a gateway of the other family cannot be installed; Go returns it, we refuse it"),
    Case("beyond-go-nameserver-not-ip", "ADD", conf(dns={"nameservers": ["dns.example.test"]}),
         Err(7, "ipam.dns.nameservers[0]: \"dns.example.test\" is not a valid IP address"),
         go=Ok({"cniVersion": "1.0.0", "dns": {"nameservers": ["dns.example.test"]}}),
         reason="resolv.conf needs IP addresses as nameservers; Go copies any string, we refuse non-IPs"),
    Case("beyond-go-duplicate-address", "ADD", conf(addresses=V4 + V4),
         Err(7, "address 10.99.0.50 is listed twice"),
         go=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}] * 2}),
         reason="the same address twice is a config mistake; Go returns it twice, we refuse it"),
    Case("beyond-go-duplicate-across-sources", "ADD", conf(addresses=V4), args="IP=10.99.0.50/16",
         ours=Err(7, "address 10.99.0.50 is listed twice"),
         go=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"},
                                               {"address": "10.99.0.50/16"}]}),
         reason="the same address from ipam.addresses and CNI_ARGS IP=; Go returns both, we refuse it"),
    Case("beyond-go-ipv4-mapped-address", "ADD", conf(addresses=[{"address": "::ffff:10.99.0.50/120"}]),
         Err(7, "ipam.addresses[0].address: \"::ffff:10.99.0.50/120\" is an IPv4-mapped IPv6 address"),
         go=Ok({"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.50/24"}]}),
         reason="Go silently rewrites an IPv4-mapped IPv6 CIDR to IPv4 (and /96 to /0); we refuse it and say "
                "which IPv4 CIDR to write"),

    # --- versions -------------------------------------------------------------------------------
    Case("version-1.1.0", "ADD", conf("1.1.0", addresses=V4, routes=[{"dst": "10.9.0.0/16", "mtu": 1400, "scope": 0}]),
         Ok({"cniVersion": "1.1.0", "ips": [{"address": "10.99.0.50/24", "gateway": "10.99.0.1"}],
             "routes": [{"dst": "10.9.0.0/16", "mtu": 1400, "scope": 0}]}),
         go=Err(1, 'config is "1.1.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0"]'),
         reason="we speak CNI 1.1.0 (route mtu/advmss/priority/table/scope); Debian's Go static 1.1.1 stops at 1.0.0"),
    Case("version-unsupported", "ADD", conf("9.9.9", addresses=V4), Err(1, 'config is "9.9.9", plugin supports ["0.1.0"')),
    Case("version-not-semver", "ADD", conf("abc", addresses=V4), Err(1, "incompatible CNI versions")),
    Case("version-command", "VERSION", None, env={"container_id": "", "netns": "", "ifname": "", "cni_path": ""},
         ours=Ok({"cniVersion": "1.1.0", "supportedVersions": OUR_VERSIONS}),
         go=Ok({"cniVersion": "1.0.0", "supportedVersions": GO_VERSIONS}),
         reason="our library speaks up to 1.1.0; Go's v1.1.1 library reports 1.0.0"),
    Case("version-ignores-garbage-stdin", "VERSION", b"\x00 not json", ours=Ok({"cniVersion": "1.1.0",
                                                                                 "supportedVersions": OUR_VERSIONS}),
         go=Ok({"cniVersion": "1.0.0", "supportedVersions": GO_VERSIONS}),
         reason="our library speaks up to 1.1.0; Go's v1.1.1 library reports 1.0.0"),
    Case("no-command-prints-about", "", conf(addresses=V4),
         Ok(stderr="CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0")),

    # --- DEL ------------------------------------------------------------------------------------
    Case("del", "DEL", conf(addresses=V4), Ok()),
    Case("del-0.1.0-no-netns", "DEL", conf("0.1.0", addresses=V4), Ok(), env={"netns": ""}),
    Case("del-broken-config", "DEL", conf(addresses=[{"address": "junk"}], routes="junk"), Ok()),
    Case("del-missing-ipam", "DEL", {"cniVersion": "1.0.0", "name": "diffnet"}, Ok()),
    Case("del-bad-cni-args", "DEL", conf(addresses=V4), Ok(), args="K8S_POD_NAME=x"),
    Case("del-unsupported-version", "DEL", conf("9.9.9"), Err(1, "incompatible CNI versions")),

    # --- CHECK ----------------------------------------------------------------------------------
    Case("check-match-1.0.0", "CHECK", conf(addresses=V4, top={"prevResult": PREV}), Ok()),
    Case("check-match-0.4.0-dual", "CHECK",
         conf("0.4.0", addresses=DUAL, top={"prevResult": dual_result("0.4.0")}), Ok()),
    Case("check-ipv6-other-spelling", "CHECK",
         conf(addresses=V6, top={"prevResult": {"cniVersion": "1.0.0", "ips": [
             {"address": "2001:DB8:99:0::50/64", "gateway": "2001:db8:99:0::1"}]}}), Ok()),
    Case("check-no-config-gateway-ignores-prev-gateway", "CHECK",
         conf(addresses=[{"address": "10.99.0.50/24"}], top={"prevResult": {"cniVersion": "1.0.0", "ips": [
             {"address": "10.99.0.50/24", "gateway": "10.99.0.9"}]}}), Ok()),
    Case("check-empty-prev-and-no-addresses", "CHECK", conf(top={"prevResult": {}}), Ok()),
    Case("check-gateway-mismatch", "CHECK",
         conf(addresses=V4, top={"prevResult": {"cniVersion": "1.0.0", "ips": [
             {"address": "10.99.0.50/24", "gateway": "10.99.0.2"}]}}),
         Err(7, "static: Failed to match addr 10.99.0.50 on interface eth0"),
         go=Err(999, "static: Failed to match addr 10.99.0.50 on interface eth0"), reason=CODE_999),
    Case("check-missing-prev-result", "CHECK", conf(addresses=V4), Err(7, "Required prevResult missing"),
         go=Err(999, "Required prevResult missing"), reason=CODE_999),
    Case("check-address-absent-from-prev", "CHECK",
         conf(addresses=V4, top={"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.51/24"}]}}),
         Err(7, "static: address 10.99.0.50/24 is not in prevResult on interface eth0"), go=Ok(),
         reason="CHECK must report a missing IP reservation; Go only compares gateways of addresses it finds"),
    Case("check-empty-prev-with-addresses", "CHECK", conf(addresses=V4, top={"prevResult": {}}),
         Err(7, "static: address 10.99.0.50/24 is not in prevResult"), go=Ok(),
         reason="CHECK must report a missing IP reservation; Go only compares gateways of addresses it finds"),
    Case("check-prev-result-other-version", "CHECK",
         conf(addresses=V4, top={"prevResult": {"cniVersion": "0.4.0", "ips": [
             {"version": "4", "address": "10.99.0.50/24", "gateway": "10.99.0.1"}]}}), Ok(),
         go=Err(999, 'could not parse prevResult: result type supports [1.0.0] but unmarshalled CNIVersion is "0.4.0"'),
         reason="we read the addresses of a prevResult in any version; Go wants the config's version "
                "(libcni always converts, so runtimes never see this)"),
    Case("check-below-0.4.0", "CHECK", conf("0.3.1", addresses=V4, top={"prevResult": PREV}),
         Err(1, "config version does not allow CHECK")),

    # --- GC / STATUS ----------------------------------------------------------------------------
    Case("gc-1.1.0", "GC", conf("1.1.0", top={"cni.dev/valid-attachments": []}), Ok(),
         go=Err(4, "unknown CNI_COMMAND: GC"), reason="GC is a CNI 1.1.0 verb; static holds nothing, so it succeeds"),
    Case("status-1.1.0", "STATUS", conf("1.1.0"), Ok(), go=Err(4, "unknown CNI_COMMAND: STATUS"),
         reason="STATUS is a CNI 1.1.0 verb; static is always ready"),
    Case("status-1.0.0", "STATUS", conf("1.0.0"), Err(1, "config version does not allow STATUS"),
         go=Err(4, "unknown CNI_COMMAND: STATUS"),
         reason="we know STATUS and refuse it below cniVersion 1.1.0 (code 1); Go v1.1.1 does not know it (code 4)"),

    # --- environment and stdin errors (Go's skel rules, same codes) -----------------------------
    Case("env-all-missing-add", "ADD", conf(addresses=V4),
         Err(4, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"),
         env={"container_id": "", "netns": "", "ifname": "", "cni_path": ""}),
    Case("env-all-missing-del", "DEL", conf(addresses=V4),
         Err(4, "required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing"),
         env={"container_id": "", "netns": "", "ifname": "", "cni_path": ""}),
    Case("env-missing-path-check", "CHECK", conf(addresses=V4, top={"prevResult": PREV}),
         Err(4, "required env variables [CNI_PATH] missing"), env={"cni_path": ""}),
    Case("env-bad-container-id", "ADD", conf(addresses=V4), Err(4, "invalid characters in containerID"),
         env={"container_id": "-bad"}),
    Case("env-ifname-too-long", "ADD", conf(addresses=V4), Err(4, "is too long"), env={"ifname": "a" * 16}),
    Case("env-ifname-15-chars-ok", "ADD", conf(addresses=V4), Ok(), env={"ifname": "a" * 15}),
    Case("env-ifname-dotdot", "DEL", conf(addresses=V4), Err(4, "is . or .."), env={"ifname": ".."}),
    Case("env-ifname-colon", "ADD", conf(addresses=V4), Err(4, "contains / or : or whitespace characters"),
         env={"ifname": "eth0:1"}),
    Case("env-unknown-command", "FROB", conf(addresses=V4), Err(4, "unknown CNI_COMMAND: FROB")),
    Case("stdin-bad-json", "ADD", b"{not json", Err(6, "error unmarshalling network config")),
    Case("stdin-not-an-object", "ADD", b"[1, 2]", Err(6, "error unmarshalling network config")),
    Case("stdin-missing-name", "ADD", {"cniVersion": "1.0.0", "ipam": {"type": "static"}}, Err(7, "missing network name")),
    Case("stdin-invalid-name", "ADD", dict(conf(addresses=V4), name="bad name"),
         Err(7, "invalid characters found in network name")),
]


def normalize(output):
    """The only normalization: an empty ``dns`` object equals a missing one."""
    if isinstance(output, dict) and output.get("dns") == {}:
        output = {k: v for k, v in output.items() if k != "dns"}
    return output


def run(plugin: str, case: Case):
    env_args = {"container_id": "c0ffee", "netns": "/run/netns/diff", "ifname": "eth0", "cni_path": "/opt/cni/bin"}
    env_args.update(case.env)
    env = cni_env(case.command, args=case.args, **env_args)
    stdin = case.config if isinstance(case.config, bytes) else (b"" if case.config is None else case.config)
    return run_plugin(plugin, env, stdin, timeout=30)


def assert_outcome(call, expected, who):
    if isinstance(expected, Ok):
        assert call.exit_code == 0, f"{who}: expected success, got {call}"
        if expected.result is not None:
            assert normalize(call.output) == expected.result, f"{who}: unexpected result {call.stdout}"
    else:
        assert call.exit_code != 0, f"{who}: expected failure, got {call}"
        assert isinstance(call.output, dict), f"{who}: error is not a JSON object on stdout: {call}"
        assert call.output.get("code") == expected.code, f"{who}: expected code {expected.code}, got {call.output}"
        assert expected.msg in f"{call.output.get('msg')}; {call.output.get('details', '')}", \
            f"{who}: expected msg containing {expected.msg!r}, got {call.output}"


def test_table_is_big_and_well_formed():
    assert len(CASES) >= 40
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for case in CASES:
        if case.go is not None or case.reason:
            assert case.reason, f"{case.id}: a difference from Go needs a reason"
            assert case.go is not None or (isinstance(case.ours, Ok) and case.ours.stderr), \
                f"{case.id}: a reason must come with the difference it explains"
    covered = {case.config.get("cniVersion") for case in CASES if isinstance(case.config, dict)}
    assert set(GO_VERSIONS) <= covered
    assert {"ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", ""} <= {case.command for case in CASES}


@pytest.fixture(scope="module")
def our_static(plugin_bin_dir):
    return os.path.join(plugin_bin_dir, "static")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_static_against_go(case, our_static):
    ours = run(our_static, case)
    go = run(GO_STATIC, case)
    assert_outcome(ours, case.ours, "ours")
    if case.go is None:
        # Same behaviour: same exit status; equal results, or the same error code.
        if isinstance(case.ours, Ok):
            assert go.exit_code == 0, f"Go failed where we succeed: {go}"
            assert normalize(ours.output) == normalize(go.output), f"results differ:\nours {ours.stdout}\ngo   {go.stdout}"
            if ours.output is None:
                assert go.stdout.strip() == "" and ours.stdout.strip() == ""
        else:
            assert_outcome(go, Err(case.ours.code), "go")
    else:
        assert_outcome(go, case.go, "go")
    if isinstance(case.ours, Ok) and case.ours.stderr:
        assert case.ours.stderr in ours.stderr, f"ours: stderr lacks {case.ours.stderr!r}: {ours.stderr!r}"
        if case.reason and case.go is None:  # the difference is the stderr text itself
            assert case.ours.stderr not in go.stderr
            assert normalize(ours.output) == normalize(go.output)
        elif not case.reason:
            assert case.ours.stderr in go.stderr, f"go: stderr lacks {case.ours.stderr!r}: {go.stderr!r}"
