"""The ``static`` IPAM config, with the Go plugin's sources of addresses.

Addresses come from, in order (each later source as Go does it):
1. ``ipam.addresses[]``;
2. ``CNI_ARGS`` ``IP=`` (comma-separated CIDRs), appended; ``GATEWAY=`` IPs
   are given to the ``IP=`` addresses whose subnet holds them;
3. ``args.cni.ips``, which replaces the list when not empty;
4. ``runtimeConfig.ips``, which replaces it again (the runtime wins).

Beyond Go: a bare address in ``IP=`` or ``runtimeConfig.ips`` (podman's
``--ip``, and what podman sends on ``network reload``) is accepted, with the
prefix of a configured subnet that holds it, else /32 or /128.  An address
asked for in ``IP=`` or ``runtimeConfig.ips`` is asked for once however often
it is repeated, and one the config already lists is that entry, gateway and
all (:func:`_as_requested`).  A gateway of the other family, a route whose ``gw`` is of the
other family than its ``dst``, a nameserver that is not an IP and an
address listed twice are refused (code 7); a gateway outside its address's
subnet is a warning (the bridge plugin can still use it as an on-link
gateway, so a working Go config keeps working).
"""

from __future__ import annotations

from ..cni import versions
from ..cni.request import parse_cni_args
from ..cni.errors import invalid_config
from ..cni.result import IPConfig
from ..net.ip import parse_interface, parse_ip, strict_ip
from .common import address_errors_as_invalid_config, give_gateways, items, parse_addresses, parse_dns, parse_routes

KNOWN_KEYS = ("type", "addresses", "routes", "dns", "name")


class StaticConfig:
    __slots__ = ("addresses", "routes", "dns")

    def __init__(self, addresses, routes, dns):
        self.addresses = addresses
        self.routes = routes
        self.dns = dns


def _cni_args_address(text: str, configured: list, key: str = "CNI_ARGS IP"):
    """``IP=`` as a CIDR, or (as podman's ``--ip`` sends it) a bare address.

    A bare address takes the prefix of the configured address whose subnet
    holds it, else a host prefix (/32 or /128).  Go's static refuses a bare
    address, so ``podman run --ip`` cannot work with it.
    """
    if "/" in text:
        return IPConfig(parse_interface(text, key))
    ip = parse_ip(text, key)
    from ..net.addr import Interface

    prefix = next((c.address.network.prefixlen for c in configured if ip in c.address.network), ip.max_prefixlen)
    return IPConfig(Interface(int(ip), prefix, ip.version))


def _is_bare_ip(text) -> bool:
    """An address without a prefix length (``10.0.0.5``), as podman sends in ``runtimeConfig.ips``."""
    try:
        strict_ip(text)
    except ValueError:
        return False
    return True


def _as_requested(asked: list, configured: list) -> list:
    """Addresses the runtime asks for, each once; one that ``configured`` lists is that entry, gateway and all.

    podman 4.3's ``network reload`` runs DEL, then ADD asking again for every
    address the container had (``IP=<the configured address>``, or
    ``runtimeConfig.ips`` with ``--ip`` repeated): the same addresses come back.
    """
    found = []
    for ip in asked:
        ip = next((entry for entry in configured if entry.address == ip.address), ip)
        if all(ip.address != other.address for other in found):
            found.append(ip)
    return found


def _addresses_from_runtime(value, configured: list) -> list:
    """``runtimeConfig.ips``: CIDRs, or bare addresses given a prefix as ``IP=`` gives one."""
    asked = [_cni_args_address(item, configured, where) if _is_bare_ip(item) else IPConfig(parse_interface(item, where))
             for where, item in items(value, "runtimeConfig.ips", "a list of CIDRs")]
    return _as_requested(asked, configured)


def _addresses_from_cni_args(args: dict, configured: list = ()) -> list:
    """``IP=`` addresses not already configured (:func:`_as_requested`), with their ``GATEWAY=``."""
    found = []
    if args.get("IP"):
        asked = [_cni_args_address(item.strip(), configured) for item in args["IP"].split(",")]
        found = [ip for ip in _as_requested(asked, configured) if all(ip is not entry for entry in configured)]
    if args.get("GATEWAY"):
        give_gateways([item.strip() for item in args["GATEWAY"].split(",")], found)
    return found


def _addresses_from_list(value, key: str) -> list:
    return [IPConfig(parse_interface(item, where)) for where, item in items(value, key, "a list of CIDRs")]


@address_errors_as_invalid_config
def parse(request) -> StaticConfig:
    """Validate the request's ``ipam`` section and collect its addresses."""
    ipam = request.ipam
    for key in ipam:
        if key not in KNOWN_KEYS:
            request.warnings.append(f"ipam.{key} is not a static IPAM key; it is ignored")
    addresses = parse_addresses(ipam.get("addresses"), "ipam.addresses")
    addresses += _addresses_from_cni_args(parse_cni_args(request.args, ("IP", "GATEWAY")), addresses)
    cni_args = request.config.get("args")
    if isinstance(cni_args, dict) and isinstance(cni_args.get("cni"), dict) and cni_args["cni"].get("ips"):
        addresses = _addresses_from_list(cni_args["cni"]["ips"], "args.cni.ips")
    if request.runtime_config.get("ips"):
        addresses = _addresses_from_runtime(request.runtime_config["ips"], addresses)
    _check_addresses(addresses, request)
    return StaticConfig(addresses, parse_routes(ipam.get("routes"), "ipam.routes"), parse_dns(ipam.get("dns"), "ipam.dns"))


def _check_addresses(addresses: list, request) -> None:
    seen = set()
    for ip in addresses:
        if ip.address.ip in seen:
            raise invalid_config(f"address {ip.address.ip} is listed twice", "give each address once")
        seen.add(ip.address.ip)
        if ip.gateway is not None and ip.gateway not in ip.address.network:
            request.warnings.append(f"gateway {ip.gateway} is outside the subnet of {ip.address}")
    if versions.is_legacy_result(request.cni_version):
        if not addresses:  # Go: "cannot convert: no valid IP addresses"
            raise invalid_config(f"CNI version {request.cni_version} needs at least one address, none were given",
                                 "set ipam.addresses (or CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips), "
                                 "or use cniVersion 0.3.0 or later")
        for family in (4, 6):
            if sum(1 for ip in addresses if ip.version == family) > 1:
                raise invalid_config(f"CNI version {request.cni_version} does not support more than 1 address per family",
                                     "use cniVersion 0.3.0 or later for several addresses")
