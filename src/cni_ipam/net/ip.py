"""Parsing addresses and CIDRs from config text, exactly as strictly as the Go tools do.

Users' configs were written against Go's ``net.ParseIP``/``net.ParseCIDR``
(static, and whereabouts' exclusions and gateways): no IPv4 leading zeros,
no zones, a decimal prefix length (never a netmask).  whereabouts reads its
ranges with Kubernetes' ``ParseIPSloppy``, which takes IPv4 leading zeros
as decimal: the ``*_sloppy`` functions.  :mod:`.addr` parses as strictly as
``ipaddress``; the checks here add Go's rules on top.

Every error is an :class:`.errors.AddressError`, in one style:
``<key>: "<value as in the JSON>" is not a valid IP address`` (or ``CIDR``),
with the reason in the details.
"""

from __future__ import annotations

from . import addr
from . import AddressError

_DIGITS = frozenset("0123456789")
_CIDR_HINT = ("expected an address and a decimal prefix length such as "
              "192.168.2.0/24 or fd00::/64")


# --- parsing: these raise ValueError(reason); the parse_* wrappers below add the key ---

def _check_text(text) -> None:
    """Reject what Go's parser rejects, with a reason a user can act on."""
    if not isinstance(text, str):
        raise ValueError("expected a string")
    if not text:
        raise ValueError("the address is empty")
    if not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError("spaces and non-ASCII characters are not allowed")
    if "%" in text:
        raise ValueError("IPv6 zones (%...) are not allowed here")


def strict_ip(text):
    """Go net.ParseIP: no leading zeros in IPv4 octets, no zones."""
    _check_text(text)
    return addr.ip_address(text)


def _sloppy_v4(text) -> addr.Address:
    """Go 1.16 IPv4 parsing, as k8s ParseIPSloppy keeps it: leading zeros are
    decimal (``010`` is 10, not octal 8)."""
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"expected 4 decimal octets in {text!r}")
    value = 0
    for part in parts:
        if not part or not _DIGITS.issuperset(part):
            raise ValueError(f"octet {part!r} is not a decimal number")
        digits = part.lstrip("0") or "0"
        if len(digits) > 3 or int(digits) > 255:
            raise ValueError(f"octet {part!r} is greater than 255")
        value = value << 8 | int(digits)
    return addr.Address(value, 4)


def sloppy_ip(text):
    """k8s ParseIPSloppy: leading zeros allowed in IPv4 (also IPv6's IPv4 tail)."""
    _check_text(text)
    if ":" not in text:
        return _sloppy_v4(text)
    head, _, tail = text.rpartition(":")
    if "." in tail:
        text = f"{head}:{_sloppy_v4(tail)}"
    return addr.ip_address(text)


def cidr(text, parse_address=strict_ip):
    """Go net.ParseCIDR: ``address/n`` with host bits allowed, n decimal; no
    netmask form.  Like Go's dtoi, leading zeros in n are accepted.
    ``parse_address`` is :func:`strict_ip` or :func:`sloppy_ip`."""
    _check_text(text)
    address, sep, bits = text.partition("/")
    if not sep:
        raise ValueError("missing the /prefix length; " + _CIDR_HINT)
    ip = parse_address(address)
    if not bits or not _DIGITS.issuperset(bits):
        raise ValueError(f"prefix length {bits!r} is not a decimal number; "
                         + _CIDR_HINT)
    digits = bits.lstrip("0") or "0"
    if len(digits) > 3 or int(digits) > ip.max_prefixlen:
        raise ValueError(f"prefix length {bits} is greater than "
                         f"{ip.max_prefixlen} for IPv{ip.version}")
    return ip, int(digits)


def _keyed(parse, text, key: str, what: str):
    """``parse(text)``, its ValueError turned into the AddressError naming ``key`` and the value."""
    try:
        return parse(text)
    except ValueError as exc:
        raise AddressError(key, text, f"is not a valid {what}", str(exc)) from None


def parse_ip(text, key: str):
    """Parse an IP strictly, as Go's net.ParseIP: errors name ``key``."""
    return _keyed(strict_ip, text, key, "IP address")


def parse_ip_sloppy(text, key: str):
    """Parse an IP as k8s ParseIPSloppy (``00192.00168.1.5`` is accepted),
    the way whereabouts reads ranges and the top-level range_start/end."""
    return _keyed(sloppy_ip, text, key, "IP address")


def parse_cidr(text, key: str):
    """Parse ``addr/prefix`` strictly (Go net.ParseCIDR); returns (ip, prefixlen)
    with the host bits kept in ip."""
    return _keyed(cidr, text, key, "CIDR")


def parse_cidr_sloppy(text, key: str):
    """Like :func:`parse_cidr`, with IPv4 leading zeros (ParseCIDRSloppy)."""
    return _keyed(lambda t: cidr(t, sloppy_ip), text, key, "CIDR")


def parse_interface(text, key: str):
    """``ip/prefix`` with host bits kept (``10.1.2.3/24``), as an :class:`.addr.Interface` (static's addresses)."""
    ip, prefixlen = parse_cidr(text, key)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        # Go silently turns ::ffff:10.0.0.5/120 into 10.0.0.5/24 (and /96 into /0).
        raise AddressError(key, text, "is an IPv4-mapped IPv6 address",
                           f"write it as an IPv4 CIDR, e.g. {ip.ipv4_mapped}/{max(prefixlen - 96, 0)}")
    return addr.Interface(int(ip), prefixlen, ip.version)
