"""A lease as a value: what a DHCPACK granted, its timers, and what CNI makes of it.

Pure.  Times are seconds on one clock chosen by the caller (the daemon uses
``time.monotonic()``); :meth:`Lease.to_record` and :meth:`Lease.from_record`
move a lease across a restart by converting to and from wall-clock time.
"""

from __future__ import annotations

from . import packet

INFINITE = 0xFFFFFFFF  # RFC 2131: a lease time of all ones never expires
DEFAULT_LEASE_TIME = 3600  # when an ACK has no option 51 (Go uses one hour too)
MIN_RENEW = 1.0  # never renew more often than this, whatever T1 the server sends


class LeaseError(ValueError):
    """An ACK that cannot be turned into a CNI result (e.g. no subnet mask)."""


class Lease:
    """The address ``address`` from server ``server_id``, acknowledged at ``acked_at``.

    ``options`` holds the ACK's options as ``{code: bytes}``; ``t1``/``t2``/
    ``lease_time`` are durations from ``acked_at`` (``None`` for an infinite lease).
    """

    __slots__ = ("address", "server_id", "options", "acked_at", "lease_time", "t1", "t2")

    def __init__(self, address, server_id, options, acked_at, lease_time, t1, t2):
        self.address = address
        self.server_id = server_id
        self.options = dict(options)
        self.acked_at = acked_at
        self.lease_time = lease_time
        self.t1 = t1
        self.t2 = t2

    @classmethod
    def from_ack(cls, ack: packet.Message, now: float, server_id: str | None = None) -> "Lease":
        """Timers as RFC 2131 4.4.5 says: T1 0.5, T2 0.875 of the lease unless the server gives valid ones."""
        lease_time = ack.get(packet.LEASE_TIME, DEFAULT_LEASE_TIME)
        server = ack.get(packet.SERVER_ID) or server_id or ack.siaddr
        if lease_time == INFINITE:
            return cls(ack.yiaddr, server, ack.options, now, None, None, None)
        t2 = ack.get(packet.REBINDING_TIME)
        if t2 is None or not 0 < t2 <= lease_time:
            t2 = lease_time * 0.875
        t1 = ack.get(packet.RENEWAL_TIME)
        if t1 is None or not 0 < t1 <= t2:
            t1 = min(lease_time * 0.5, t2)
        t1 = max(t1, min(MIN_RENEW, lease_time))
        t2 = max(t2, t1)
        return cls(ack.yiaddr, server, ack.options, now, float(lease_time), float(t1), float(t2))

    @property
    def renew_at(self):
        return None if self.t1 is None else self.acked_at + self.t1

    @property
    def rebind_at(self):
        return None if self.t2 is None else self.acked_at + self.t2

    @property
    def expires_at(self):
        return None if self.lease_time is None else self.acked_at + self.lease_time

    def get(self, code: int, default=None):
        data = self.options.get(code)
        return default if data is None else packet.decode_option(code, data)

    # -- persistence --
    def to_record(self, clock_to_wall) -> dict:
        """A JSON-able dict; ``clock_to_wall`` maps this lease's clock to Unix time."""
        return {"address": self.address, "server_id": self.server_id,
                "options": {str(code): value.hex() for code, value in self.options.items()},
                "acked_at": clock_to_wall(self.acked_at), "lease_time": self.lease_time, "t1": self.t1,
                "t2": self.t2}

    @classmethod
    def from_record(cls, record: dict, wall_to_clock) -> "Lease":
        try:
            options = {int(code): bytes.fromhex(value) for code, value in record["options"].items()}
            packet.ip_bytes(record["address"])
            packet.ip_bytes(record["server_id"])
            return cls(record["address"], record["server_id"], options, wall_to_clock(float(record["acked_at"])),
                       record["lease_time"], record["t1"], record["t2"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LeaseError(f"lease record is not valid: {type(exc).__name__}: {exc}") from None

    def __eq__(self, other):
        return isinstance(other, Lease) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self):
        return f"Lease({self.address} from {self.server_id}, t1={self.t1}, t2={self.t2}, lease={self.lease_time})"


def cni_view(lease: Lease) -> dict:
    """What the plugin turns into a CNI result: address/prefix, gateway, routes, DNS.

    Routes follow RFC 3442 as Go's plugin does: with option 121 only its
    routes (an on-link route has gateway 0.0.0.0 and scope 253); otherwise
    option 33's routes and a default route via the first router.
    """
    mask = lease.get(packet.SUBNET_MASK)
    if mask is None:
        raise LeaseError(f"the DHCPACK for {lease.address} from {lease.server_id} has no subnet mask (option 1)")
    try:
        prefix = packet.prefix_of_mask(mask)
    except packet.PacketError as exc:
        raise LeaseError(f"the DHCPACK for {lease.address}: {exc}") from None
    routers = lease.get(packet.ROUTERS) or []
    gateway = routers[0] if routers else None
    routes = []
    classless = lease.get(packet.CLASSLESS_ROUTES) or []
    if classless:
        for dst, gw in classless:
            route = {"dst": dst, "gw": gw}
            if gw == "0.0.0.0":
                route["scope"] = 253  # link
            routes.append(route)
    else:
        for dst, gw in lease.get(packet.STATIC_ROUTES) or []:
            routes.append({"dst": dst, "gw": gw})
        if gateway is not None:
            routes.append({"dst": "0.0.0.0/0", "gw": gateway})
    dns = {}
    servers = lease.get(packet.DNS_SERVERS)
    if servers:
        dns["nameservers"] = servers
    domain = lease.get(packet.DOMAIN_NAME)
    if domain:
        dns["domain"] = domain
    return {"address": lease.address, "prefix": prefix, "gateway": gateway, "routes": routes, "dns": dns,
            "server": lease.server_id}
