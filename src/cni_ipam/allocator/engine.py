"""Whereabouts operations against a :class:`~cni_ipam.store.base.AllocatorStore`.

The plugin's ADD, DEL, CHECK and GC in terms of store verbs.  A range comes
as the config parsed it (:class:`cni_ipam.config.whereabouts.RangeSpec`:
``key``, ``range``, ``pool``, ``space``, ``network_name``, ``overlapping``).  Identity
follows the CNI spec and whereabouts: an allocation belongs to an
attachment (network name, container ID, ifname), and a pod restarted under
a new container ID keeps the address it held on the same interface.
"""

from __future__ import annotations

from ..store.base import Allocation
from . import core

MAX_LOST_RACES = 64  # claims lost to other nodes before an ADD gives up (code 11)
SPREAD = 16  # after a lost race, pick at random among this many free addresses


class RangeFull(Exception):
    """No free address in a range; the message names it and its size."""


class LostRaces(Exception):
    """Other allocators kept taking the candidates; retrying later will do."""


class AddressTaken(Exception):
    """A requested address is held by another attachment."""


class Owner:
    """Who is asking: the attachment and what we record about it."""

    __slots__ = ("network", "container_id", "ifname", "pod", "netns", "node")

    def __init__(self, network, container_id, ifname, pod="", netns="", node=""):
        self.network = network
        self.container_id = container_id
        self.ifname = ifname
        self.pod = pod
        self.netns = netns
        self.node = node


def _new(spec, ip: int, owner: Owner) -> Allocation:
    return Allocation(spec.pool, ip, spec.range.version, owner.network, owner.container_id, owner.ifname,
                      space=spec.space, pod=owner.pod, netns=owner.netns, node=owner.node)


def _existing(store, spec, owner: Owner):
    """What this attachment, or this pod's same interface under an older sandbox, holds in the range."""
    for held in store.find(network=owner.network, container_id=owner.container_id, ifname=owner.ifname):
        if held.pool == spec.pool and spec.range.is_allocatable(held.ip):
            return held
    if owner.pod:  # same network only: DEL finds an allocation by its network, and update_owner keeps it
        for held in store.find(network=owner.network, pod=owner.pod, ifname=owner.ifname):
            if held.pool == spec.pool and spec.range.is_allocatable(held.ip) and \
                    store.update_owner(held, owner.container_id, owner.netns):  # else freed meanwhile: allocate anew
                return held
    return None


def _lowest_free(store, spec, owner: Owner) -> Allocation:
    rng = spec.range
    key = core.hint_key(spec.network_name, spec.overlapping, rng)
    start = max(rng.start, store.hint(key, spec.pool, spec.space) or rng.start)
    for lost in range(MAX_LOST_RACES):
        held = store.held(spec.pool, spec.space, start, rng.end)
        if lost == 0:  # no contention seen: whereabouts' lowest-free order
            ip = core.first_free(rng, start, held)
            if ip is None and start > rng.start:  # a stale-high hint must not make a range with room look full
                start = rng.start
                ip = core.first_free(rng, start, store.held(spec.pool, spec.space, start, rng.end))
            first = ip
        else:  # contention: spread out over the next free addresses
            import random

            candidates = core.free_candidates(rng, start, held, SPREAD)
            ip = random.choice(candidates) if candidates else None
            first = candidates[0] if candidates else None
        if ip is None:
            raise RangeFull(core.exhausted_message(rng, spec.key))
        allocation = _new(spec, ip, owner)
        hint = (key, ip + 1) if ip == first else None  # everything below ip is held: the hint may move past it
        if store.claim(allocation, hint):
            return allocation
        start = first  # lower free addresses may remain; the lost one now reads as held
    raise LostRaces(f"{spec.key}: lost {MAX_LOST_RACES} races for addresses in {rng.cidr}; try again")


def _requested(store, spec, ip: int, owner: Owner) -> Allocation:
    allocation = _new(spec, ip, owner)
    if store.claim(allocation):
        return allocation
    holders = [a for a in store.find() if a.ip == ip and a.version == spec.range.version
               and (a.pool == spec.pool or (spec.space is not None and a.space == spec.space))]
    who = ", ".join(f"{h.network}/{h.container_id[:12]}/{h.ifname}" + (f" (pod {h.pod})" if h.pod else "")
                    for h in holders) or "another attachment"
    raise AddressTaken(f"requested address {rng_text(spec, ip)} in {spec.key} is held by {who}")


def rng_text(spec, ip: int) -> str:
    return spec.range.to_text(ip)


def assign(store, specs: list, owner: Owner, requested: dict | None = None) -> list:
    """One address per range for ``owner``, in range order; the same ones on a repeated ADD.

    ``requested`` maps a range index to the address asked for in that range
    (CNI_ARGS ``IP=`` / ``runtimeConfig.ips``).  Everything happens in one
    store transaction; if a later range fails, what this call claimed is
    given back, so a failed ADD holds nothing new.
    """
    requested = requested or {}
    out, claimed, moved = [], [], []
    with store.transaction():
        store.prefetch(owner.network, owner.container_id, owner.ifname, owner.pod,
                       [(core.hint_key(s.network_name, s.overlapping, s.range), s.pool, s.space) for s in specs])
        try:
            existing = [_existing(store, spec, owner) for spec in specs]  # all reads before any write
            for index, spec in enumerate(specs):
                held = existing[index]
                if held is not None and (index not in requested or requested[index] == held.ip):
                    out.append(held)
                    continue
                if index in requested:
                    allocation = _requested(store, spec, requested[index], owner)
                    if held is not None:  # asked for another address than it holds: move, once the new one is ours
                        store.release(held)
                        moved.append(held)
                else:
                    allocation = _lowest_free(store, spec, owner)
                claimed.append(allocation)
                out.append(allocation)
        except BaseException:
            for allocation in claimed:
                store.release(allocation)
            for allocation in moved:  # a store without rollback would otherwise lose them
                store.claim(allocation)
            raise
    return out


def release_attachment(store, network: str, container_id: str, ifname: str) -> list:
    """DEL: free everything the attachment holds, in every range; nothing held is fine."""
    with store.transaction():
        held = store.find(network=network, container_id=container_id, ifname=ifname)
        for allocation in held:
            store.release(allocation)
    return held


def garbage_collect(store, network: str, valid: set) -> list:
    """GC: free this network's allocations whose (containerID, ifname) the runtime no longer has."""
    freed = []
    with store.transaction():
        for allocation in store.find(network=network):
            if (allocation.container_id, allocation.ifname) not in valid:
                store.release(allocation)
                freed.append(allocation)
    return freed


def has_free(store, spec) -> bool:
    """STATUS: can this range still serve an ADD?"""
    rng = spec.range
    key = core.hint_key(spec.network_name, spec.overlapping, rng)
    start = max(rng.start, store.hint(key, spec.pool, spec.space) or rng.start)
    starts = (start, rng.start) if start > rng.start else (start,)  # a stale-high hint must not hide room
    return any(core.first_free(rng, s, store.held(spec.pool, spec.space, s, rng.end)) is not None for s in starts)
