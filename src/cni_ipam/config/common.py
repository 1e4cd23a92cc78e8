"""Config pieces shared by the IPAM types: routes and DNS, as CNI's ``types`` define them.

Also the one place where the address math's :class:`~cni_ipam.net.errors.AddressError`
becomes CNI's "invalid config" error: ``net/`` knows nothing of CNI.
"""

from __future__ import annotations

from ..cni.errors import invalid_config, quote
from ..cni.result import ROUTE_EXTRAS_1_1, IPConfig, Route
from ..net.errors import AddressError
from ..net.ip import parse_interface, parse_ip


def address_errors_as_invalid_config(function):
    """``function`` with an :class:`AddressError` raised as code 7, its message and details unchanged.

    Wraps each config entry point (``static.parse``, ``whereabouts.load``).
    """
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except AddressError as exc:
            raise invalid_config(exc.msg, exc.details) from None
    wrapped.__doc__ = function.__doc__
    return wrapped


def expect(value, kind, key: str, kind_name: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise invalid_config(f"{key}: expected {kind_name}, got {quote(value)}")
    return value


def parse_addresses(value, key: str) -> list:
    """``addresses[]``: ``address`` (CIDR, host bits kept) and an optional ``gateway`` of its family."""
    if value is None:
        return []
    found = []
    for i, entry in enumerate(expect(value, list, key, "a list of {address, gateway}")):
        where = f"{key}[{i}]"
        expect(entry, dict, where, "an object with address and gateway")
        if "address" not in entry:
            raise invalid_config(f"{where}.address: missing", "each entry needs an address in CIDR form, e.g. 10.10.21.10/24")
        address = parse_interface(entry["address"], f"{where}.address")
        gateway = None
        if entry.get("gateway") not in (None, ""):
            gateway = parse_ip(entry["gateway"], f"{where}.gateway")
            if gateway.version != address.version:
                raise invalid_config(f"{where}.gateway: {quote(entry['gateway'])} is IPv{gateway.version} but the address "
                                     f"{quote(entry['address'])} is IPv{address.version}")
        found.append(IPConfig(address, gateway))
    return found


def parse_routes(value, key: str) -> list:
    """``routes[]``: ``dst`` (CIDR, required), ``gw`` (IP of the same family), and the 1.1.0 fields."""
    if value is None:
        return []
    routes = []
    for i, entry in enumerate(expect(value, list, key, "a list of routes")):
        where = f"{key}[{i}]"
        expect(entry, dict, where, "an object with dst and gw")
        if "dst" not in entry:
            raise invalid_config(f"{where}.dst: missing", "every route needs a destination CIDR, e.g. 0.0.0.0/0")
        dst = parse_interface(entry["dst"], f"{where}.dst")
        gw = None
        if entry.get("gw") not in (None, ""):
            gw = parse_ip(entry["gw"], f"{where}.gw")
            if gw.version != dst.version:
                raise invalid_config(f"{where}.gw: {quote(entry['gw'])} is IPv{gw.version} but dst "
                                     f"{quote(entry['dst'])} is IPv{dst.version}")
        extras = {}
        for field in ROUTE_EXTRAS_1_1:
            if field in entry and entry[field] is not None:
                number = entry[field]
                if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                    raise invalid_config(f"{where}.{field}: expected a non-negative integer, got {quote(number)}")
                extras[field] = number
        routes.append(Route(dst, gw, extras))
    return routes


def parse_dns(value, key: str) -> dict:
    """``dns``: ``nameservers`` (IPs), ``domain``, ``search``, ``options``."""
    if value is None:
        return {}
    expect(value, dict, key, "an object")
    dns = {}
    servers = value.get("nameservers")
    if servers is not None:
        for i, server in enumerate(expect(servers, list, f"{key}.nameservers", "a list of IP addresses")):
            parse_ip(server, f"{key}.nameservers[{i}]")
        dns["nameservers"] = list(servers)
    domain = value.get("domain")
    if domain is not None:
        dns["domain"] = expect(domain, str, f"{key}.domain", "a string")
    for field in ("search", "options"):
        items = value.get(field)
        if items is not None:
            for i, item in enumerate(expect(items, list, f"{key}.{field}", "a list of strings")):
                expect(item, str, f"{key}.{field}[{i}]", "a string")
            dns[field] = list(items)
    return dns
