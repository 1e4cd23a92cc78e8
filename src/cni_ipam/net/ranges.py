"""Address math for whereabouts ranges: parsing, usable bounds, exclusions.

No I/O, and nothing beyond this package, :mod:`cni_ipam.jsonlite` (to quote
values in messages) and ``bisect``: a plugin imports this on every CNI call.  Addresses are plain ints, so IPv6 gets the full
128 bits (whereabouts' 64-bit offsets stop at the first /65 of a /64).

Every error is an :class:`.errors.AddressError` and its message
names the config key and the bad value, e.g.
``ipam.ipRanges[1].range_start: "10.0.1.5" is not a usable address ...``.
"""

from __future__ import annotations

from _bisect import bisect_right  # the C module: bisect.py adds nothing we use, at 0.1 ms a call

from ..jsonlite import quote
from . import addr
from . import AddressError
from .ip import cidr, parse_cidr_sloppy, parse_ip, parse_ip_sloppy, sloppy_ip, strict_ip

# --- int helpers ---

def _block(ip, prefixlen: int):
    """The (lo, hi) ints of the subnet ``ip/prefixlen``, host bits dropped."""
    hostmask = (1 << (ip.max_prefixlen - prefixlen)) - 1
    lo = int(ip) & ~hostmask
    return lo, lo | hostmask


def _network(ip, prefixlen: int):
    """The network holding ``ip/prefixlen``."""
    return addr.Network(int(ip), prefixlen, ip.version)


def _merge(intervals, start: int, end: int) -> tuple:
    """Clip to [start, end], sort, and join overlapping or touching intervals,
    so one jump past an interval always lands on an allocatable address."""
    out = []
    for lo, hi in sorted((max(lo, start), min(hi, end)) for lo, hi in intervals):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


class AddressRange:
    """One whereabouts range entry: allocate from [start, end], skip excluded.

    ``start``/``end`` are the inclusive ints after range_start/range_end;
    ``excluded`` is a sorted tuple of merged (lo, hi) inclusive intervals
    clipped to [start, end].  Treat instances as immutable values.
    """

    __slots__ = ("network", "version", "prefixlen", "cidr", "start", "end",
                 "excluded", "_los")

    def __init__(self, network, start: int, end: int, excluded=()) -> None:
        first = int(network.network_address) + 1
        last = int(network.broadcast_address) - 1
        if not first <= start <= end <= last:
            raise ValueError(f"bounds {start}-{end} not within the usable "
                             f"addresses of {network}")
        self.network = network
        self.version = network.version
        self.prefixlen = network.prefixlen
        self.cidr = str(network)
        self.start = start
        self.end = end
        self.excluded = _merge(excluded, start, end)
        self._los = [lo for lo, _ in self.excluded]

    def _cover(self, ip_int: int):
        """The excluded interval holding ip_int, or None (one bisect)."""
        i = bisect_right(self._los, ip_int) - 1
        if i >= 0 and ip_int <= self.excluded[i][1]:
            return self.excluded[i]
        return None

    def is_allocatable(self, ip_int: int) -> bool:
        """True if ip_int is within [start, end] and not excluded."""
        return self.start <= ip_int <= self.end and self._cover(ip_int) is None

    def next_allocatable(self, ip_int: int):
        """Smallest allocatable address >= ip_int, or None.  Intervals are
        merged, so a single jump past the covering one is enough."""
        ip_int = max(ip_int, self.start)
        cover = self._cover(ip_int)
        if cover is not None:
            ip_int = cover[1] + 1
        return ip_int if ip_int <= self.end else None

    def first_allocatable(self):
        """The lowest allocatable address, or None if all are excluded."""
        return self.next_allocatable(self.start)

    def last_allocatable(self):
        """The highest allocatable address, or None if all are excluded.
        Only the last interval can reach ``end``, because they are merged."""
        ip_int = self.end
        if self.excluded and self.excluded[-1][1] == ip_int:
            ip_int = self.excluded[-1][0] - 1
        return ip_int if ip_int >= self.start else None

    def size(self) -> int:
        """Count of allocatable addresses: exact ints, so a /64 is 2**64-2."""
        excluded = sum(hi - lo + 1 for lo, hi in self.excluded)
        return self.end - self.start + 1 - excluded

    def iter_allocatable(self, from_int=None):
        """Allocatable addresses in ascending order from ``from_int`` (default
        start), lazily, one run between exclusions at a time."""
        ip_int = self.next_allocatable(self.start if from_int is None else from_int)
        while ip_int is not None:
            i = bisect_right(self._los, ip_int)
            stop = self._los[i] if i < len(self._los) else self.end + 1
            yield from range(ip_int, stop)
            ip_int = self.next_allocatable(stop)

    def to_text(self, ip_int: int) -> str:
        """Canonical text of an address of this range's family."""
        return str(addr.Address(ip_int, self.version))

    def from_text(self, text, key: str = "address") -> int:
        """Parse an address (strictly) of this range's family into an int."""
        ip = parse_ip(text, key)
        if ip.version != self.version:
            raise AddressError(key, text, f"is an IPv{ip.version} address, but "
                               f"range {self.cidr} is IPv{self.version}")
        return int(ip)

    def interface_text(self, ip_int: int) -> str:
        """``ip/prefixlen``, the address form of a CNI result."""
        return f"{self.to_text(ip_int)}/{self.prefixlen}"

    def fingerprint(self) -> str:
        """A stable string for (cidr, start, end, excluded), usable as a
        storage key: ``cidr|start-end|lo-hi,lo-hi``."""
        text = self.to_text
        excluded = ",".join(f"{text(lo)}-{text(hi)}" for lo, hi in self.excluded)
        return f"{self.cidr}|{text(self.start)}-{text(self.end)}|{excluded}"

    def _key(self):
        return (self.cidr, self.start, self.end, self.excluded)

    def __eq__(self, other):
        if not isinstance(other, AddressRange):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self) -> str:
        text = self.to_text
        excluded = [f"{text(lo)}-{text(hi)}" for lo, hi in self.excluded]
        return (f"AddressRange({self.cidr!r}, start={text(self.start)!r}, "
                f"end={text(self.end)!r}, excluded={excluded!r})")


# --- building a range from config values ---

def _usable(key: str, value, network):
    """[network+1, broadcast-1] for IPv4 and IPv6 alike, as whereabouts does."""
    if network.prefixlen >= network.max_prefixlen - 1:
        raise AddressError(
            key, value, "has no usable addresses",
            "the network and broadcast addresses are never allocated, so a "
            "range needs a prefix of /30 or shorter (IPv6: /126 or shorter)")
    return int(network.network_address) + 1, int(network.broadcast_address) - 1


def _outside(key: str, value, network, first: int, last: int, part=""):
    """The error for a bound outside the usable addresses (whereabouts
    silently ignores such a bound; we refuse it)."""
    def cls(value):
        return addr.Address(value, network.version)

    return AddressError(
        key, value, f"is not a usable address of {network} ({cls(first)}-{cls(last)})",
        "whereabouts would silently ignore it; give an address inside the "
        "range, or leave it out", part=part)


def _bound_ip(key: str, value, network):
    """Parse range_start/range_end (sloppy, like whereabouts' top level) and
    check the family."""
    ip = value if isinstance(value, addr.Address) else parse_ip_sloppy(value, key)
    if ip.version != network.version:
        raise AddressError(key, value, f"is an IPv{ip.version} address, but range "
                           f"{network} is IPv{network.version}")
    return int(ip)


def _start_of(x: int, first: int, last: int):
    """A start at the network address (whereabouts' default) means first usable."""
    if x == first - 1:
        return first
    return x if first <= x <= last else None


def _end_of(x: int, first: int, last: int):
    """An end at the broadcast address means last usable."""
    if x == last + 1:
        return last
    return x if first <= x <= last else None


def _explicit_bounds(key, network, first, last, range_start, range_end):
    """Resolve range_start/range_end ('' or None means unset)."""
    start, end = first, last
    if range_start is not None and range_start != "":
        skey = key + ".range_start"
        start = _start_of(_bound_ip(skey, range_start, network), first, last)
        if start is None:
            raise _outside(skey, range_start, network, first, last)
    if range_end is not None and range_end != "":
        ekey = key + ".range_end"
        end = _end_of(_bound_ip(ekey, range_end, network), first, last)
        if end is None:
            raise _outside(ekey, range_end, network, first, last)
        if end < start:
            raise AddressError(ekey, range_end, "is before range_start "
                               f"{addr.Address(start, network.version)}")
    return start, end


def _dash_range(key: str, text: str):
    """``A-B/p``: the network is B/p, A must lie inside it; start=A, end=B."""
    a_text, _, b_text = text.partition("-")
    try:
        a = sloppy_ip(a_text)
    except ValueError as exc:
        raise AddressError(key, text, f"has an invalid start address {quote(a_text)}",
                           str(exc)) from None
    try:
        b, prefixlen = cidr(b_text, sloppy_ip)
    except ValueError as exc:
        raise AddressError(key, text, f"has an invalid end {quote(b_text)}",
                           str(exc)) from None
    network = _network(b, prefixlen)
    if a.version != b.version or a not in network:
        raise AddressError(
            key, text, f"is not inside {network}",
            "in the form START-END/prefix the network is END/prefix and "
            "START must lie inside it", part=f"start {a}")
    first, last = _usable(key, text, network)
    start = _start_of(int(a), first, last)
    if start is None:
        raise _outside(key, text, network, first, last, f"start {a}")
    end = _end_of(int(b), first, last)
    if end is None:
        raise _outside(key, text, network, first, last, f"end {b}")
    if end < start:
        raise AddressError(key, text, f"is before start {a}", part=f"end {b}")
    return network, start, end


def _exclusions(key: str, exclude, network) -> list:
    """Each entry a CIDR or bare IP (a /32 or /128), parsed strictly like
    whereabouts; the whole subnet is excluded, wherever it lies."""
    if exclude is None:
        return []
    if isinstance(exclude, (str, bytes, dict)) or not hasattr(exclude, "__iter__"):
        raise AddressError(
            f"{key}.exclude", exclude, "is not a list",
            'give a list of CIDRs or IP addresses, e.g. ["192.168.2.0/30"]')
    out = []
    for i, item in enumerate(exclude):
        ikey = f"{key}.exclude[{i}]"
        try:
            if isinstance(item, str) and "/" in item:
                ip, prefixlen = cidr(item, strict_ip)
            else:
                ip = strict_ip(item)
                prefixlen = ip.max_prefixlen
        except ValueError as exc:
            raise AddressError(ikey, item, "is not a valid CIDR or IP address",
                               str(exc)) from None
        if ip.version != network.version:
            raise AddressError(ikey, item, f"is IPv{ip.version}, but range "
                               f"{network} is IPv{network.version}")
        out.append(_block(ip, prefixlen))
    return out


def parse_range(key: str, range, range_start=None, range_end=None,
                exclude=()) -> AddressRange:
    """Build one range entry with whereabouts semantics, except that a bad
    range_start/range_end is an error instead of being silently ignored.

    ``key`` prefixes every message: "ipam" or "ipam.ipRanges[1]".
    """
    rkey = key + ".range"
    if isinstance(range, str) and "-" in range:
        network, start, end = _dash_range(rkey, range)
    else:
        network = _network(*parse_cidr_sloppy(range, rkey))
        first, last = _usable(rkey, range, network)
        start, end = _explicit_bounds(key, network, first, last,
                                      range_start, range_end)
    return AddressRange(network, start, end, _exclusions(key, exclude, network))
