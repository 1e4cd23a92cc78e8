"""IP addresses, interfaces and networks: the small part of ``ipaddress`` the plugins use.

Why not ``ipaddress``: importing it costs 3-5 ms (it pulls in ``functools``
and ``collections``), a quarter of a whole ``static`` ADD.  These classes
keep ``ipaddress``'s names and text forms (``str()`` is the same, IPv6 in
RFC 5952 form), and compare equal to ``ipaddress`` objects, so code and
tests read the same.  Parsing is as strict as ``ipaddress``: IPv4 octets
without leading zeros, IPv6 without zones.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
MAX_PREFIX = {4: 32, 6: 128}


def _v4(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"Expected 4 octets in {text!r}")
    value = 0
    for part in parts:
        if not part or len(part) > 3 or not _DIGITS.issuperset(part):
            raise ValueError(f"Octet {part!r} in {text!r} is not a decimal number of 1-3 digits")
        if len(part) > 1 and part[0] == "0":
            raise ValueError(f"Leading zeros are not permitted in {part!r} in {text!r}")
        if int(part) > 255:
            raise ValueError(f"Octet {part} (> 255) not permitted in {text!r}")
        value = value << 8 | int(part)
    return value


def _hextets(text: str, last: bool) -> list:
    """The 16-bit groups of one side of ``::``; an IPv4 tail is allowed at the very end."""
    if not text:
        return []
    groups = []
    items = text.split(":")
    for i, item in enumerate(items):
        if last and i == len(items) - 1 and "." in item:
            v4 = _v4(item)
            groups += [v4 >> 16, v4 & 0xFFFF]
        elif 1 <= len(item) <= 4 and _HEX.issuperset(item):
            groups.append(int(item, 16))
        else:
            raise ValueError(f"{item!r} is not a group of 1-4 hex digits")
    return groups


def _v6(text: str) -> int:
    head, sep, tail = text.partition("::")
    if "::" in tail:
        raise ValueError(f"At most one '::' permitted in {text!r}")
    if sep:
        groups = _hextets(head, False), _hextets(tail, True)
        missing = 8 - len(groups[0]) - len(groups[1])
        if missing < 1:
            raise ValueError(f"Too many groups in {text!r}")
        groups = groups[0] + [0] * missing + groups[1]
    else:
        groups = _hextets(text, True)
        if len(groups) != 8:
            raise ValueError(f"Exactly 8 groups expected in {text!r}")
    value = 0
    for group in groups:
        value = value << 16 | group
    return value


def _v6_text(value: int) -> str:
    """RFC 5952: lower-case hex, the longest run of two or more zero groups as ``::``."""
    groups = [(value >> shift) & 0xFFFF for shift in range(112, -1, -16)]
    best, best_len, run_start, run_len = -1, 0, -1, 0
    for i, group in enumerate(groups):
        if group == 0:
            if run_len == 0:
                run_start = i
            run_len += 1
            if run_len > best_len:
                best, best_len = run_start, run_len
        else:
            run_len = 0
    text = [f"{g:x}" for g in groups]
    if best_len > 1:
        text[best:best + best_len] = [""]
        if best == 0:
            text.insert(0, "")
        if best + best_len == 8:
            text.append("")
    return ":".join(text)


class Address:
    """One IPv4 or IPv6 address; ``int()`` gives its value."""

    __slots__ = ("version", "_ip")

    def __init__(self, value: int, version: int) -> None:
        if not 0 <= value < 1 << MAX_PREFIX[version]:
            raise ValueError(f"{value} does not fit an IPv{version} address")
        self.version = version
        self._ip = value

    @property
    def _version(self) -> int:  # what ipaddress's __eq__ reads off the other side
        return self.version

    @property
    def max_prefixlen(self) -> int:
        return MAX_PREFIX[self.version]

    @property
    def ipv4_mapped(self):
        """For ``::ffff:a.b.c.d``, the IPv4 address; else None."""
        if self.version == 6 and self._ip >> 32 == 0xFFFF:
            return Address(self._ip & 0xFFFFFFFF, 4)
        return None

    def __int__(self) -> int:
        return self._ip

    def __str__(self) -> str:
        if self.version == 4:
            v = self._ip
            return f"{v >> 24}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"
        return _v6_text(self._ip)

    def __repr__(self) -> str:
        return f"IPv{self.version}Address({str(self)!r})"

    def __eq__(self, other) -> bool:
        try:
            return self._ip == other._ip and self.version == other._version
        except AttributeError:
            return NotImplemented

    def __lt__(self, other) -> bool:
        return (self.version, self._ip) < (other.version, int(other))

    def __hash__(self) -> int:
        return hash((self.version, self._ip))


class Network:
    """``network_address/prefixlen`` with the host bits cleared."""

    __slots__ = ("version", "prefixlen", "network_address", "broadcast_address")

    def __init__(self, value: int, prefixlen: int, version: int) -> None:
        bits = MAX_PREFIX[version]
        if not 0 <= prefixlen <= bits:
            raise ValueError(f"prefix length {prefixlen} is not within 0-{bits} for IPv{version}")
        hostmask = (1 << (bits - prefixlen)) - 1
        self.version = version
        self.prefixlen = prefixlen
        self.network_address = Address(value & ~hostmask, version)
        self.broadcast_address = Address((value & ~hostmask) | hostmask, version)

    @property
    def _version(self) -> int:
        return self.version

    @property
    def max_prefixlen(self) -> int:
        return MAX_PREFIX[self.version]

    @property
    def netmask(self) -> Address:
        bits = MAX_PREFIX[self.version]
        return Address(((1 << bits) - 1) ^ ((1 << (bits - self.prefixlen)) - 1), self.version)

    @property
    def num_addresses(self) -> int:
        return int(self.broadcast_address) - int(self.network_address) + 1

    def __contains__(self, ip) -> bool:
        return (getattr(ip, "version", None) == self.version
                and int(self.network_address) <= int(ip) <= int(self.broadcast_address))

    def __str__(self) -> str:
        return f"{self.network_address}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"IPv{self.version}Network({str(self)!r})"

    def __eq__(self, other) -> bool:
        try:
            return (self.version == other._version and self.network_address == other.network_address
                    and self.prefixlen == other.prefixlen)
        except AttributeError:
            return NotImplemented

    def __hash__(self) -> int:
        return hash((self.version, int(self.network_address), self.prefixlen))


class Interface(Address):
    """An address with its prefix length, host bits kept: ``10.1.2.3/24``."""

    __slots__ = ("network",)

    def __init__(self, value: int, prefixlen: int, version: int) -> None:
        super().__init__(value, version)
        self.network = Network(value, prefixlen, version)

    @property
    def ip(self) -> Address:
        return Address(self._ip, self.version)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def __str__(self) -> str:
        return f"{Address.__str__(self)}/{self.network.prefixlen}"

    def __repr__(self) -> str:
        return f"IPv{self.version}Interface({str(self)!r})"

    def __eq__(self, other) -> bool:
        same = Address.__eq__(self, other)
        if same is NotImplemented or not same:
            return same
        return self.network == getattr(other, "network", None)

    def __hash__(self) -> int:
        return hash((self.version, self._ip, self.network.prefixlen))


def ip_address(text) -> Address:
    """Parse an address (``ValueError`` if it is not one); an int is taken as IPv4 below 2**32."""
    if isinstance(text, int) and not isinstance(text, bool):
        return Address(text, 4 if text < 1 << 32 else 6)
    if not isinstance(text, str) or not text or "%" in text:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address")
    return Address(_v6(text), 6) if ":" in text else Address(_v4(text), 4)


def ip_interface(text: str) -> Interface:
    """``address/prefixlen`` (decimal prefix length only), host bits kept."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f"{text!r} is not address/prefix-length")
    address, prefix = text.split("/")
    ip = ip_address(address)
    if not prefix or not _DIGITS.issuperset(prefix):
        raise ValueError(f"prefix length {prefix!r} is not a decimal number")
    return Interface(int(ip), int(prefix), ip.version)
