"""Pool names: what whereabouts allocates from, named from plain values.

A pool is one range of one ``network_name``: ``<network_name>/<range CIDR>``
(one IPPool per range and network name, as whereabouts names them in
pkg/storage/kubernetes/ipam.go).  The config says which pool each range
draws from, the stores key their records by it, and the admin commands read
the network name and CIDR back out of it; so the name lives here, beside
the address math, where all of them may import it.
"""

from __future__ import annotations


def pool_name(network_name: str, cidr: str) -> str:
    """``<network_name>/<cidr>``: one pool per range and network name, as whereabouts' IPPool."""
    return f"{network_name}/{cidr}"


def pool_version(pool: str) -> int:
    """A pool is one range, so one family: read it off the CIDR in its name (a space mixes both)."""
    return 6 if ":" in pool.rsplit("/", 2)[-2] else 4


def split_pool(pool: str) -> tuple:
    """``<network_name>/<cidr>`` -> (network_name, Network); Network is None when the name holds no CIDR."""
    from .addr import Network, ip_address

    parts = pool.rsplit("/", 2)
    if len(parts) != 3:
        return pool, None
    try:
        ip = ip_address(parts[1])
        prefixlen = int(parts[2])
        return parts[0], Network(int(ip), prefixlen, ip.version)
    except (ValueError, TypeError):
        return parts[0], None


def in_cidr(network, ip: int, version: int) -> bool:
    """Whether ``ip`` of family ``version`` lies in ``network`` (None, from an unreadable pool name: never)."""
    return network is not None and network.version == version and int(network.network_address) <= ip <= int(
        network.broadcast_address)
