"""What a store holds, as plain values: pools and their fill, allocations, liveness, export and import."""

from __future__ import annotations

import os
import time

from ..net.addr import ip_address
from ..net import in_cidr, split_pool
from ..store.base import Allocation

EXPORT_KIND = "cni-ipam-state"
EXPORT_VERSION = 1


class AdminError(Exception):
    """A problem the administrator must fix; the message says what and how.  ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --- pools --------------------------------------------------------------------------------

def range_from_hint_key(key: str):
    """The AddressRange a hint key names (``<network_name>|space|<cidr>|<start>-<end>|<lo>-<hi>,...``), or None."""
    from ..net.ranges import AddressRange

    parts = key.rsplit("|", 3)
    if len(parts) != 4:
        return None
    _, cidr, bounds, excluded = parts
    try:
        network = split_pool("/" + cidr)[1]
        start, _, end = bounds.partition("-")
        pairs = []
        for item in filter(None, excluded.split(",")):
            lo, _, hi = item.partition("-")
            pairs.append((int(ip_address(lo)), int(ip_address(hi))))
        if network is None:
            return None
        return AddressRange(network, int(ip_address(start)), int(ip_address(end)), pairs)
    except (ValueError, TypeError):
        return None


def usable_in_cidr(network) -> int:
    """Addresses of a CIDR a range may hand out: all but the network and broadcast addresses (as whereabouts)."""
    return max(network.num_addresses - 2, 0)


def pool_stats(allocations: list, hints: list) -> list:
    """One dict per pool: size (from the range definition in a hint key when the store has one, else the CIDR's
    usable count: ``size_from`` says which), held (addresses of the range taken, by this pool or by another
    pool of its address space), free and percent used."""
    pools = {}
    for a in allocations:
        pools.setdefault(a.pool, {"space": a.space, "own": []})["own"].append(a)
    definitions = {}
    for key, pool, space, _value in hints:
        entry = pools.setdefault(pool, {"space": space, "own": []})
        if entry["space"] is None:
            entry["space"] = space
        rng = range_from_hint_key(key)
        if rng is not None:
            definitions.setdefault(pool, []).append(rng)
    by_space = {}
    for a in allocations:
        if a.space is not None:
            by_space.setdefault((a.space, a.version), set()).add(a.ip)
    rows = []
    for pool in sorted(pools):
        entry = pools[pool]
        network_name, network = split_pool(pool)
        ranges = sorted(set(definitions.get(pool, [])), key=lambda r: (r.size(), r.fingerprint()))
        rng = ranges[-1] if ranges else None
        version = network.version if network is not None else (entry["own"][0].version if entry["own"] else 4)
        taken = {a.ip for a in entry["own"]}
        if entry["space"] is not None:
            taken |= by_space.get((entry["space"], version), set())
        if rng is not None:
            size, size_from = rng.size(), "range"
            held = sum(1 for ip in taken if rng.is_allocatable(ip))
            span = f"{rng.to_text(rng.start)}-{rng.to_text(rng.end)}"
            excluded = [f"{rng.to_text(lo)}-{rng.to_text(hi)}" for lo, hi in rng.excluded]
        elif network is not None:
            size, size_from = usable_in_cidr(network), "cidr"
            lo, hi = int(network.network_address) + 1, int(network.broadcast_address) - 1
            held = sum(1 for ip in taken if lo <= ip <= hi)
            span, excluded = None, []
        else:
            size, size_from, held, span, excluded = 0, "unknown", len(taken), None, []
        free = max(size - held, 0)
        rows.append({
            "pool": pool, "network_name": network_name, "cidr": str(network) if network is not None else None,
            "space": entry["space"], "size": size, "size_from": size_from, "range": span, "excluded": excluded,
            "definitions": len(ranges), "held": held, "own": len(entry["own"]), "free": free,
            "percent_used": round(100.0 * held / size, 1) if size else (100.0 if held else 0.0),
        })
    return rows


# --- allocations --------------------------------------------------------------------------

def canonical_ip(text: str) -> str:
    try:
        return str(ip_address(text))
    except ValueError:
        raise AdminError(f"{text!r} is not an IP address; give one like 192.0.2.10 or 2001:db8::10", 2) from None


def matches(a: Allocation, network=None, rng=None, pod=None, ip=None) -> bool:
    """``network`` is the CNI network name or the whereabouts network_name; ``rng`` the CIDR or the pool name."""
    network_name, cidr = split_pool(a.pool)
    if network is not None and network not in (a.network, network_name):
        return False
    if rng is not None and rng not in (a.pool, str(cidr) if cidr is not None else None):
        return False
    if pod is not None and a.pod != pod:
        return False
    return ip is None or a.address == ip


def when(created: float) -> str:
    if not created:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


def allocation_row(a: Allocation) -> dict:
    row = a.to_dict()
    row["since"] = when(a.created)
    return row


# --- liveness -----------------------------------------------------------------------------

def this_node() -> str:
    return os.environ.get("NODENAME") or os.uname().nodename


def liveness(a: Allocation, node: str | None = None) -> tuple:
    """("alive" | "gone" | "unknown", why): alive when the netns path exists on this node."""
    node = node or this_node()
    if a.node and a.node != node:
        return "unknown", (f"it was allocated on node {a.node!r} and this is {node!r}: whether its pod is alive "
                           f"cannot be told from here")
    if not a.netns:
        return "unknown", "the allocation records no network namespace, so whether its pod is alive is unknown"
    if os.path.exists(a.netns):
        return "alive", f"its network namespace {a.netns} still exists"
    return "gone", f"its network namespace {a.netns} is gone"


# --- export and import --------------------------------------------------------------------

def export_state(store, datastore: str = "") -> dict:
    from ..net.addr import Address
    from ..net import pool_version

    hints = []
    for key, pool, space, value in store.list_hints():
        hints.append({"key": key, "pool": pool, "space": space, "value": str(Address(value, pool_version(pool)))})
    return {"kind": EXPORT_KIND, "version": EXPORT_VERSION, "exported": when(time.time()), "datastore": datastore,
            "allocations": [a.to_dict() for a in store.allocations()], "hints": hints}


def parse_state(document) -> tuple:
    """(allocations, hints) from an export; AdminError naming the first bad entry."""
    if not isinstance(document, dict) or document.get("kind") != EXPORT_KIND:
        raise AdminError(f"not a cni-ipam export: expected a JSON object with \"kind\": \"{EXPORT_KIND}\" "
                         f"(write one with cni-ipam export)")
    if document.get("version") != EXPORT_VERSION:
        raise AdminError(f"export format version {document.get('version')!r} is not supported; this build reads "
                         f"version {EXPORT_VERSION}")
    allocations, hints = [], []
    for i, entry in enumerate(document.get("allocations") or []):
        try:
            if not isinstance(entry, dict):
                raise TypeError("expected an object")
            for field in ("pool", "ip", "network", "container_id", "ifname"):
                if not isinstance(entry.get(field), str):
                    raise TypeError(f"{field} must be a string")
            a = Allocation.from_dict(entry)
        except (TypeError, ValueError, KeyError) as exc:
            raise AdminError(f"allocations[{i}]: {exc}; fix or remove this entry") from None
        if not in_cidr(split_pool(a.pool)[1], a.ip, a.version):
            raise AdminError(f"allocations[{i}]: {a.address} is not inside pool {a.pool}; fix or remove this entry")
        allocations.append(a)
    for i, entry in enumerate(document.get("hints") or []):
        try:
            hints.append((entry["key"], entry["pool"], entry.get("space"), int(ip_address(entry["value"]))))
        except (TypeError, ValueError, KeyError) as exc:
            raise AdminError(f"hints[{i}]: {exc}; fix or remove this entry") from None
    return allocations, hints


def plan_import(existing: list, incoming: list) -> tuple:
    """(to write, already there, conflicts): an address held by another attachment (in its pool or its address
    space, in the store or earlier in the file) is a conflict; the same attachment holding it is already there."""
    by_pool, by_space = {}, {}
    for a in existing:
        by_pool[(a.pool, a.version, a.ip)] = a
        if a.space is not None:
            by_space[(a.space, a.version, a.ip)] = a
    write, present, conflicts = [], [], []
    for a in incoming:
        held = by_pool.get((a.pool, a.version, a.ip))
        if held is None and a.space is not None:
            held = by_space.get((a.space, a.version, a.ip))
        if held is not None:
            if held.pool == a.pool and held.attachment == a.attachment:
                present.append(a)
            else:
                conflicts.append((a, held))
            continue
        write.append(a)
        by_pool[(a.pool, a.version, a.ip)] = a
        if a.space is not None:
            by_space[(a.space, a.version, a.ip)] = a
    return write, present, conflicts


def describe(a: Allocation) -> str:
    pod = f" pod {a.pod}" if a.pod else ""
    return f"{a.address} in {a.pool} held by {a.network}/{a.container_id}/{a.ifname}{pod}"
