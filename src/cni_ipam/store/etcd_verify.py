"""``cni-ipam verify`` on the etcd store, and the space claims no allocation backs (the reconciler's too).

An allocation is several keys in etcd (:mod:`.etcd`): its record, its
address-space claim and its index entries, so a crash or a hand edit can
leave one without the others.  Nothing here is on a plugin command's path:
the store loads this module for ``verify`` and the reconciler only.
"""

from __future__ import annotations

from .. import jsonlite as json
from . import etcd_client as ec
from .base import Allocation
from .etcd import _unseg, ip_from_key, ip_key, seg


def unbacked(store, spaces: list, allocations: list) -> list:
    """The :class:`Reservation` of each ``spaces/`` key in ``spaces`` that none of ``allocations`` backs."""
    from .base import Reservation

    base = store._k("spaces") + b"/"
    backed = {(seg(a.space), ip_key(a.ip, a.version)) for a in allocations if a.space is not None}
    found = []
    for kv in spaces:
        space_seg, ipk = kv["key"][len(base):].decode().rsplit("/", 1)
        if (space_seg, ipk) not in backed:
            ip, version = ip_from_key(ipk)
            found.append(Reservation(_unseg(space_seg), ip, version, kv["value"].decode(errors="replace"),
                                     kv["mod_revision"]))
    return found


def check(store, progress=None) -> list:
    """An allocation is several keys here, so besides what any store can hold (records outside their
    pool's CIDR, duplicates in a space) there can be unreadable records, a record without its space
    claim, a space claim without its record, and an index entry without its record."""
    from .check import Problem, dropped, duplicates, outside_its_pool, released, tick

    problems = []
    pools_base = store._k("pools") + b"/"
    records = {}  # pools key -> Allocation
    kvs = store._section("pools")
    for done, kv in enumerate(kvs, 1):
        tick(progress, done, len(kvs))
        key = kv["key"]
        try:
            a = Allocation.from_dict(json.loads(kv["value"]))
            pool_seg, ipk = key[len(pools_base):].decode().rsplit("/", 1)
            if pool_seg != seg(a.pool) or ip_from_key(ipk) != (a.ip, a.version):
                raise ValueError("its key names another pool or address than its record")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(Problem("bad-record", f"{key.decode(errors='replace')}: unreadable record ({exc})",
                                    hint="read it with etcdctl get; the address stays blocked until it is "
                                         "deleted"))
            continue
        records[key] = a
    allocations = list(records.values())
    problems += filter(None, (outside_its_pool(a, released(store, a)) for a in allocations))

    spaces = store._section("spaces")
    claimed = {kv["key"] for kv in spaces}
    for a in allocations:
        if a.space is not None and store._space_key(a) not in claimed:
            problems.append(Problem("missing-space-key",
                                    f"{a.address} of {a.pool} has no claim in address space {a.space!r}: "
                                    f"another pool of that space can hand it out again",
                                    repair=_restore_claim(store, a)))
    for reservation in unbacked(store, spaces, allocations):
        problems.append(Problem("unbacked-space-key",
                                f"address space {reservation.space!r} claims {reservation.address} for pool "
                                f"{reservation.pool!r} but no allocation holds it: the address is blocked",
                                repair=dropped(store, reservation, f"claim of {reservation.address} in address "
                                                                   f"space {reservation.space!r}")))

    for section, depth in (("attachments", 5), ("pods", 4)):
        base = store._k(section) + b"/"
        for kv in store._section(section):
            parts = kv["key"][len(base):].decode().split("/")
            if len(parts) != depth or store._k("pools", parts[-2], parts[-1]) not in records:
                problems.append(Problem("orphan-index", f"{kv['key'].decode(errors='replace')}: index entry "
                                                        f"without its allocation record",
                                        repair=_delete_orphan(store, kv)))

    problems += duplicates(allocations)
    return problems


def _restore_claim(store, a: Allocation):
    def repair() -> str:
        key = store._space_key(a)
        if store._call(store.client.txn, [ec.absent(key)], [ec.put(key, a.pool.encode())])["succeeded"]:
            return f"restored the claim of {a.address} in address space {a.space!r} for {a.pool}"
        return f"the claim of {a.address} in address space {a.space!r} was written meanwhile; left alone"
    return repair


def _delete_orphan(store, kv):
    def repair() -> str:
        key = kv["key"]
        if store._call(store.client.txn, [ec.unchanged(key, kv["mod_revision"])], [ec.delete(key)])["succeeded"]:
            return f"deleted the orphan index entry {key.decode(errors='replace')}"
        return f"{key.decode(errors='replace')} changed meanwhile; left alone"
    return repair
