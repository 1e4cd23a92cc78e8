"""Address math (``addr``, ``ip``, ``ranges``); here, what every module of it, the configs and the stores share,
so that none of them loads a module more for it: the one error the address math raises (a config value that
is not a usable address, CIDR or range), and pool names (below).

``net/`` knows nothing of CNI; the config readers (:mod:`cni_ipam.config.common`)
turn an :class:`AddressError` into CNI's "invalid config" error, keeping
its ``msg`` and ``details`` as they are.
"""

from __future__ import annotations

from ..jsonlite import quote


class AddressError(ValueError):
    """``<key>: "<value as in the JSON>" <problem>``, with the reason or the fix in ``details``.

    ``key`` is where the value sits in the config (``ipam.ipRanges[1].range``),
    ``value`` the value as given.  ``part`` names the piece of the value the
    problem is about (``start 10.0.0.5`` of a dash range): the message then
    reads ``<key>: "<value>": <part> <problem>``.
    """

    def __init__(self, key: str, value, problem: str, details: str = "", part: str = "") -> None:
        subject = f"{quote(value)}: {part}" if part else quote(value)
        self.msg = f"{key}: {subject} {problem}"
        super().__init__(self.msg)
        self.key = key
        self.value = value
        self.details = details


# -- Pool names ------------------------------------------------------------------------------------------------------
#
# Pool names: what whereabouts allocates from, named from plain values.
#
# A pool is one range of one ``network_name``: ``<network_name>/<range CIDR>``
# (one IPPool per range and network name, as whereabouts names them in
# pkg/storage/kubernetes/ipam.go).  The config says which pool each range
# draws from, the stores key their records by it, and the admin commands read
# the network name and CIDR back out of it; so the name lives here, beside
# the address math, where all of them may import it.

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
