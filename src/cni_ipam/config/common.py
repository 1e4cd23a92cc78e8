"""Config pieces shared by the IPAM types: lists, addresses, routes and DNS, as CNI's ``types`` define them.

Also the one place where the address math's :class:`~cni_ipam.net.AddressError`
becomes CNI's "invalid config" error: ``net/`` knows nothing of CNI.
"""

from __future__ import annotations

from ..cni.errors import invalid_config
from ..jsonlite import quote
from ..cni.result import ROUTE_EXTRAS_1_1, IPConfig, Route
from ..net import AddressError
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


def items(value, key: str, kind_name: str) -> list:
    """``(key[i], item)`` for each item of the list at ``key``; None is no items, any other non-list is refused."""
    if value is None:
        return []
    return [(f"{key}[{i}]", item) for i, item in enumerate(expect(value, list, key, kind_name))]


class CIDRList:
    """How one list of ``{CIDR, gateway}`` objects is spelt: its two keys and the words of its messages."""

    __slots__ = ("cidr_key", "gateway_key", "cidr_name", "kind_name", "entry_name", "missing_hint")

    def __init__(self, cidr_key, gateway_key, cidr_name, kind_name, entry_name, missing_hint):
        self.cidr_key = cidr_key
        self.gateway_key = gateway_key
        self.cidr_name = cidr_name
        self.kind_name = kind_name
        self.entry_name = entry_name
        self.missing_hint = missing_hint


ADDRESSES = CIDRList("address", "gateway", "the address", "a list of {address, gateway}",
                     "an object with address and gateway",
                     "each entry needs an address in CIDR form, e.g. 10.10.21.10/24")
ROUTES = CIDRList("dst", "gw", "dst", "a list of routes", "an object with dst and gw",
                  "every route needs a destination CIDR, e.g. 0.0.0.0/0")


def read_cidr_list(value, key: str, shape: CIDRList) -> list:
    """The one reader of ``addresses[]`` and ``routes[]``: (where, entry, cidr, gateway or None) per entry.

    Each entry is an object with a CIDR (host bits kept) and an optional
    gateway IP of the CIDR's family.
    """
    found = []
    for where, entry in items(value, key, shape.kind_name):
        expect(entry, dict, where, shape.entry_name)
        if shape.cidr_key not in entry:
            raise invalid_config(f"{where}.{shape.cidr_key}: missing", shape.missing_hint)
        cidr = parse_interface(entry[shape.cidr_key], f"{where}.{shape.cidr_key}")
        gateway = None
        if entry.get(shape.gateway_key) not in (None, ""):
            gateway = parse_ip(entry[shape.gateway_key], f"{where}.{shape.gateway_key}")
            if gateway.version != cidr.version:
                raise invalid_config(f"{where}.{shape.gateway_key}: {quote(entry[shape.gateway_key])} is "
                                     f"IPv{gateway.version} but {shape.cidr_name} {quote(entry[shape.cidr_key])} "
                                     f"is IPv{cidr.version}")
        found.append((where, entry, cidr, gateway))
    return found


def parse_addresses(value, key: str) -> list:
    """``addresses[]``: ``address`` (CIDR, host bits kept) and an optional ``gateway`` of its family."""
    return [IPConfig(address, gateway) for _, _, address, gateway in read_cidr_list(value, key, ADDRESSES)]


def parse_routes(value, key: str) -> list:
    """``routes[]``: ``dst`` (CIDR, required), ``gw`` (IP of the same family), and the 1.1.0 fields."""
    routes = []
    for where, entry, dst, gw in read_cidr_list(value, key, ROUTES):
        extras = {}
        for field in ROUTE_EXTRAS_1_1:
            if field in entry and entry[field] is not None:
                number = entry[field]
                if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                    raise invalid_config(f"{where}.{field}: expected a non-negative integer, got {quote(number)}")
                extras[field] = number
        routes.append(Route(dst, gw, extras))
    return routes


def give_gateways(texts, addresses: list) -> None:
    """CNI_ARGS ``GATEWAY=``: each gateway goes to the addresses whose subnet holds it, as Go static does."""
    for text in texts:
        gateway = parse_ip(text, "CNI_ARGS GATEWAY")
        for ip in addresses:
            if gateway in ip.address.network:
                ip.gateway = gateway


def parse_dns(value, key: str) -> dict:
    """``dns``: ``nameservers`` (IPs), ``domain``, ``search``, ``options``."""
    if value is None:
        return {}
    expect(value, dict, key, "an object")
    dns = {}
    servers = value.get("nameservers")
    for where, server in items(servers, f"{key}.nameservers", "a list of IP addresses"):
        parse_ip(server, where)
    if servers is not None:
        dns["nameservers"] = list(servers)
    domain = value.get("domain")
    if domain is not None:
        dns["domain"] = expect(domain, str, f"{key}.domain", "a string")
    for field in ("search", "options"):
        listed = value.get(field)
        for where, item in items(listed, f"{key}.{field}", "a list of strings"):
            expect(item, str, where, "a string")
        if listed is not None:
            dns[field] = list(listed)
    return dns
