"""Maintenance of the Kubernetes store: ``cni-ipam verify``'s check and safe repairs, and the reservations no
allocation backs (which verify and the reconciler free).

:meth:`KubernetesStore.check <cni_ipam.store.kubernetes.KubernetesStore.check>`,
``unbacked_reservations`` and ``drop_reservation``, kept apart so that no
plugin command loads them (the store imports this module lazily, in those
methods alone).  It works on the store's own reads and writes, as the
methods it is: unreadable pools and keys, annotations another writer left
stale, allocations without their OverlappingRangeIPReservation, and
reservations no allocation backs (past :data:`RESERVATION_GRACE`).
"""

from __future__ import annotations

from ..kube import objects as ko
from ..kube.client import KubeError
from .base import Allocation, Reservation
from .check import Problem, dropped, duplicates, outside_its_pool, released, tick
from .kube_node_pools import learn_node_pools
from .kube_pools import (ANNOTATION, NOTE, Pool, annotation_ops, created_at, reservation_name, reservation_of,
                         reservation_readings)

RESERVATION_GRACE = 600.0  # seconds a reservation no allocation backs is left alone: a claim may still be on its way


def check(store, progress=None) -> list:
    """Besides what any store can hold (addresses outside their pool, duplicates in a space): pools and
    keys that cannot be read, allocations without their reservation, reservations without allocation."""
    reservations = _reservations(store)
    problems = []
    learn_node_pools(store)
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
    for reservation in _unbacked(store, reservations, allocations):
        problems.append(Problem("unbacked-reservation",
                                f"OverlappingRangeIPReservation {reservation.token[0]} holds {reservation.address} "
                                f"in address space {reservation.space!r} but no allocation does: the address "
                                f"is blocked",
                                repair=dropped(store, reservation, f"reservation {reservation.token[0]}")))
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


# -- reservations no allocation backs ------------------------------------------------------

def _reservations(store) -> list:
    """Every reservation, with its creation time (seconds since the epoch; 0 when unreadable)."""
    return [(ko.parse_reservation(obj), created_at(obj))
            for obj in store._call(store.client.list, ko.API_VERSION, ko.RESERVATIONS).get("items") or []]


def unbacked_reservations(store):
    """Reservations whose address no allocation of their address space holds (read before the pools:
    a claim or release after this read changes the reservation, and ``drop_reservation`` leaves it)."""
    reservations = _reservations(store)
    return _unbacked(store, reservations, store.allocations())


def _unbacked(store, reservations, allocations) -> list:
    """The reservations of ``reservations`` that nothing backs, as :class:`Reservation` (``token``: name and
    resourceVersion, the reservation as read).  Left out, so never deleted: a name we cannot read; one younger than
    :data:`RESERVATION_GRACE` (a claim creates it before it patches the pool, and upstream's Go writer
    reuses one of its own pod before patching); one whose address an allocation of its space holds
    (under any reading of the name); and one whose address an allocation of the same pod and interface
    holds in any space (a name written by another rule than upstream's v0.9 ``NormalizeIP``)."""
    import time

    backed = {(a.space, a.version, a.ip) for a in allocations if a.space is not None}
    holders = {}
    for a in allocations:
        holders.setdefault((a.version, a.ip), []).append(a)
    pools = store._all().values()
    spaces = {a.space for a in allocations if a.space is not None} | {p.network_name for p in pools}
    now = time.time()
    found = []
    for r, created in reservations:
        readings = reservation_readings(r.name)
        if not readings or now - created < RESERVATION_GRACE or any(x in backed for x in readings) or any(
                reservation_of(r, a) for _, version, ip in readings for a in holders.get((version, ip), ())):
            continue
        space, version, ip = next((x for x in readings if x[0] in spaces), readings[-1])
        holder = next((p.pool for p in pools if p.network_name == space and p.network.version == version
                       and int(p.network.network_address) <= ip <= int(p.network.broadcast_address)), "")
        found.append(Reservation(space, ip, version, holder, (r.name, r.resource_version, r)))
    return found


def drop_reservation(store, reservation) -> bool:
    """Delete it unless it changed since it was listed, or the pools, read again just before, now back it
    (a Go writer may have reused it for its pod meanwhile)."""
    name, resource_version, listed = reservation.token
    store._pools = None
    if not _unbacked(store, [(listed, 0.0)], store.find()):
        return False
    try:
        store._call(store.client.delete, ko.API_VERSION, ko.RESERVATIONS, name, resource_version)
    except KubeError:
        return False  # gone or changed meanwhile
    return True
