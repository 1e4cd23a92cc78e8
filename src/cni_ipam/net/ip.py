"""Parsing single addresses and CIDRs exactly as strictly as Go's ``net`` package.

Go's ``net.ParseIP``/``net.ParseCIDR`` are what users' configs were written
against: no IPv4 leading zeros, no zones, a decimal prefix length (never a
netmask).  :mod:`.addr` parses as strictly as ``ipaddress`` (leading zeros,
zones refused); the checks here add Go's rules on top.
"""

from __future__ import annotations

from . import addr
from ..cni.errors import invalid_config


def _plain(text) -> bool:
    return isinstance(text, str) and text != "" and "%" not in text and text.strip() == text


def parse_ip(text, key: str):
    """An IPv4 or IPv6 address; ``key`` names the config field in the error."""
    if _plain(text) and "/" not in text:
        try:
            return addr.ip_address(text)
        except ValueError:
            pass
    raise invalid_config(f"{key}: {text!r} is not a valid IP address")


def parse_interface(text, key: str, what: str = "CIDR"):
    """``ip/prefix`` with host bits kept (``10.1.2.3/24``), as an :class:`.addr.Interface`."""
    if _plain(text) and text.count("/") == 1:
        address, prefix = text.split("/")
        if prefix.isascii() and prefix.isdigit() and "/" not in address:
            try:
                ip = addr.ip_address(address)
                if ip.version == 6 and ip.ipv4_mapped is not None:
                    # Go silently turns ::ffff:10.0.0.5/120 into 10.0.0.5/24 (and /96 into /0).
                    raise invalid_config(f"{key}: {text!r} is an IPv4-mapped IPv6 address",
                                         f"write it as an IPv4 {what}, e.g. {ip.ipv4_mapped}/{max(int(prefix) - 96, 0)}")
                if int(prefix) <= ip.max_prefixlen:
                    return addr.Interface(int(ip), int(prefix), ip.version)
            except ValueError:
                pass
    raise invalid_config(f"{key}: {text!r} is not in {what} notation (address/prefix-length)")
