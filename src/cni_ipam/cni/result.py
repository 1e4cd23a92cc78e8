"""IPAM results and their JSON form in each CNI version.

One model (:class:`Result`) is converted to what the request's
``cniVersion`` expects: ``ip4``/``ip6`` for 0.1.0/0.2.0, ``ips[]`` with a
``version`` for 0.3.x/0.4.0, ``ips[]`` without it from 1.0.0, and the route
fields ``mtu``, ``advmss``, ``priority``, ``table``, ``scope`` only in 1.1.0.
IPAM plugins never report ``interfaces`` (the main plugin does).
"""

from __future__ import annotations

from . import versions

ROUTE_EXTRAS_1_1 = ("mtu", "advmss", "priority", "table", "scope")
DNS_KEYS = ("nameservers", "domain", "search", "options")


class IPConfig:
    """One address for the interface: ``address`` keeps its host bits (``10.1.2.3/24``)."""

    __slots__ = ("address", "gateway")

    def __init__(self, address, gateway=None):
        self.address = address  # net.addr.Interface
        self.gateway = gateway  # net.addr.Address or None

    @property
    def version(self) -> int:
        return self.address.version

    def __eq__(self, other):
        return isinstance(other, IPConfig) and (self.address, self.gateway) == (other.address, other.gateway)

    def __repr__(self):
        return f"IPConfig({self.address}, gw={self.gateway})"


class Route:
    """A route; ``dst`` keeps host bits as written, like Go's ``types.Route``."""

    __slots__ = ("dst", "gw", "extras")

    def __init__(self, dst, gw=None, extras=None):
        self.dst = dst  # net.addr.Interface
        self.gw = gw
        self.extras = extras or {}  # the 1.1.0 fields that were given

    def __eq__(self, other):
        return isinstance(other, Route) and (self.dst, self.gw, self.extras) == (other.dst, other.gw, other.extras)

    def __repr__(self):
        return f"Route({self.dst}, gw={self.gw}, {self.extras})"

    def to_dict(self, version: str) -> dict:
        out = {"dst": text(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        if version == "1.1.0":
            for key in ROUTE_EXTRAS_1_1:
                if key in self.extras:
                    out[key] = self.extras[key]
        return out


class Result:
    """What an IPAM ADD returns: addresses, routes and DNS settings."""

    __slots__ = ("ips", "routes", "dns")

    def __init__(self, ips=(), routes=(), dns=None):
        self.ips = list(ips)
        self.routes = list(routes)
        self.dns = dns or {}

    def __repr__(self):
        return f"Result(ips={self.ips}, routes={self.routes}, dns={self.dns})"


def text(interface) -> str:
    """``10.1.2.3/24`` or ``2001:db8::5/64`` (IPv6 in RFC 5952 form, as Go prints it)."""
    return f"{interface.ip}/{interface.network.prefixlen}"


def _dns_dict(dns: dict) -> dict:
    return {k: dns[k] for k in DNS_KEYS if dns.get(k)}


def to_dict(result: Result, version: str) -> dict:
    """The result as the JSON object that ``version`` prescribes."""
    if versions.is_legacy_result(version):
        return _to_legacy(result, version)
    out = {"cniVersion": version}
    with_version = versions.has_ip_version_field(version)
    ips = []
    for ip in result.ips:
        entry = {"version": str(ip.version)} if with_version else {}
        entry["address"] = text(ip.address)
        if ip.gateway is not None:
            entry["gateway"] = str(ip.gateway)
        ips.append(entry)
    if ips:
        out["ips"] = ips
    if result.routes:
        out["routes"] = [r.to_dict(version) for r in result.routes]
    dns = _dns_dict(result.dns)
    if dns:
        out["dns"] = dns
    return out


def _to_legacy(result: Result, version: str) -> dict:
    """0.1.0/0.2.0: the first address of each family, routes sorted to their family."""
    out = {"cniVersion": version}
    for family, key in ((4, "ip4"), (6, "ip6")):
        first = next((ip for ip in result.ips if ip.version == family), None)
        if first is None:
            continue
        entry = {"ip": text(first.address)}
        if first.gateway is not None:
            entry["gateway"] = str(first.gateway)
        routes = [r.to_dict(version) for r in result.routes if r.dst.version == family]
        if routes:
            entry["routes"] = routes
        out[key] = entry
    dns = _dns_dict(result.dns)
    if dns:
        out["dns"] = dns
    return out


def addresses_in(result_dict) -> list:
    """``(address text, gateway text or None)`` of every address in a result of any version.

    Used on ``prevResult``, which comes in the format of the config's version.
    """
    if not isinstance(result_dict, dict):
        return []
    found = []
    for entry in result_dict.get("ips") or []:
        if isinstance(entry, dict) and "address" in entry:
            found.append((entry["address"], entry.get("gateway")))
    for key in ("ip4", "ip6"):
        entry = result_dict.get(key)
        if isinstance(entry, dict) and "ip" in entry:
            found.append((entry["ip"], entry.get("gateway")))
    return found
