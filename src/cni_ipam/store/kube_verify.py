"""``cni-ipam verify`` on the Kubernetes store: what its objects can hold wrong, and the safe repairs.

:meth:`KubernetesStore.check <cni_ipam.store.kubernetes.KubernetesStore.check>`,
kept apart so that no plugin command loads it (the store imports it lazily,
in ``check`` alone).  It works on the store's own reads and writes, as the
method it is: unreadable pools and keys, annotations another writer left
stale, allocations without their OverlappingRangeIPReservation, and
reservations no allocation backs (past the store's grace period).
"""

from __future__ import annotations

from ..kube import objects as ko
from ..kube.client import KubeError
from .base import Allocation
from .check import Problem, duplicates, outside_its_pool, released, tick
from .kube_pools import ANNOTATION, NOTE, Pool, annotation_ops, reservation_name


def check(store, progress=None) -> list:
    """Besides what any store can hold (addresses outside their pool, duplicates in a space): pools and
    keys that cannot be read, allocations without their reservation, reservations without allocation."""
    reservations = store._reservations()
    problems = []
    store._learn_node_pools()
    store._pools = {}
    for obj in store._call(store.client.list, ko.API_VERSION, ko.IPPOOLS).get("items") or []:
        try:
            pool = store._remember(obj)
        except (ko.ObjectError, ValueError, IndexError) as exc:
            name = (obj.get("metadata") or {}).get("name")
            problems.append(Problem("bad-pool", f"IPPool {name}: unreadable ({exc})",
                                    hint="read it with kubectl get ippool -o yaml; its addresses cannot be "
                                         "handed out by cni-ipam until it is fixed"))
            continue
        for entry in pool.parsed.unknown:
            problems.append(Problem("bad-key", f"IPPool {pool.name}: allocation key {entry.key!r} names no "
                                               f"address of {pool.parsed.range}",
                                    hint="Go whereabouts cannot read it either; remove it with kubectl edit "
                                         "ippool once its holder is gone"))
        if pool.stale:
            problems.append(Problem("stale-annotation", f"IPPool {pool.name}: annotations ({NOTE}<key>, "
                                                        f"{ANNOTATION}) have entries for keys "
                                                        f"{', '.join(sorted(pool.stale))} that another writer "
                                                        f"removed or gave to another attachment",
                                    repair=_drop_stale(store, pool)))
    allocations = store.find()
    for done, _ in enumerate(allocations, 1):
        tick(progress, done, len(allocations))
    problems += filter(None, (outside_its_pool(a, released(store, a)) for a in allocations))
    names = {r.name for r, _ in reservations}
    for a in allocations:
        if a.space is not None and reservation_name(a) not in names:
            problems.append(Problem("missing-reservation",
                                    f"{a.address} of {a.pool} has no OverlappingRangeIPReservation: another "
                                    f"pool of address space {a.space!r} can hand it out again",
                                    repair=_restore_reservation(store, a)))
    for reservation in store._unbacked(reservations, allocations):
        problems.append(Problem("unbacked-reservation",
                                f"OverlappingRangeIPReservation {reservation.token[0]} holds {reservation.address} "
                                f"in address space {reservation.space!r} but no allocation does: the address "
                                f"is blocked", repair=_drop_unbacked(store, reservation)))
    return problems + duplicates(allocations)


def _restore_reservation(store, a: Allocation):
    def repair() -> str:
        if store._reserve(a) is None:
            return f"the reservation of {a.address} in address space {a.space!r} was made meanwhile; left alone"
        return f"restored the reservation of {a.address} in address space {a.space!r} for {a.pool}"
    return repair


def _drop_stale(store, pool: Pool):
    def repair() -> str:
        ops = annotation_ops(pool, pool.extras)
        try:
            store._remember(store._call(store.client.json_patch, ko.API_VERSION, ko.IPPOOLS, pool.name, ops))
        except KubeError:
            return f"IPPool {pool.name} changed meanwhile; its annotation was left alone (run verify again)"
        return f"dropped the stale annotation entries of keys {', '.join(sorted(pool.stale))} from IPPool {pool.name}"
    return repair


def _drop_unbacked(store, reservation):
    def repair() -> str:
        if store.drop_reservation(reservation):
            return f"deleted the unbacked reservation {reservation.token[0]}"
        return f"the reservation {reservation.token[0]} changed meanwhile; left alone"
    return repair
