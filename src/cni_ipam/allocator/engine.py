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
from . import Contention, exhausted_message, first_free, free_candidates, hint_key

MAX_LOST_RACES = 64  # claims lost to other nodes before an ADD gives up (code 11)
SPREAD = 16  # after a lost race, pick at random among this many free addresses (a store that keeps nothing)


class RangeFull(Exception):
    """No free address in a range; the message names it and its size."""


class LostRaces(Exception):
    """Other allocators kept taking the candidates; retrying later will do."""


class AddressTaken(Exception):
    """A requested address is held by another attachment."""


class Choices:
    """Ranges one address may come from, tried in order: a node's slices of a range (``node_slice_size``,
    :mod:`cni_ipam.config.node_slices`).  A repeated ADD finds what it holds in any of them; a new address comes from the
    first with room; ``full`` (an exception) is raised when none has, else the last range's RangeFull."""

    __slots__ = ("specs", "full")

    def __init__(self, specs, full=None) -> None:
        self.specs = tuple(specs)
        self.full = full


def _choices(item) -> Choices:
    return item if isinstance(item, Choices) else Choices((item,))


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


def _existing(store, choices: Choices, owner: Owner):
    """What this attachment, or this pod's same interface under an older sandbox, holds in the range."""
    def ours(held) -> bool:
        return any(held.pool == spec.pool and spec.range.is_allocatable(held.ip) for spec in choices.specs)

    for held in store.find(network=owner.network, container_id=owner.container_id, ifname=owner.ifname):
        if ours(held):
            return held
    if owner.pod:  # same network only: DEL finds an allocation by its network, and update_owner keeps it
        for held in store.find(network=owner.network, pod=owner.pod, ifname=owner.ifname):
            if ours(held) and store.update_owner(held, owner.container_id, owner.netns):  # else freed: allocate anew
                return held
    return None


def _first_with_room(store, choices: Choices, owner: Owner) -> Allocation:
    full = None
    for spec in choices.specs:
        try:
            return _lowest_free(store, spec, owner)
        except RangeFull as exc:
            full = exc
    raise choices.full or full


def _lowest_free(store, spec, owner: Owner) -> Allocation:
    rng = spec.range
    key = hint_key(spec.network_name, spec.overlapping, rng)
    memory = _contention(store, key, spec.pool)
    if memory is not None and memory.contended(_clock()):
        return _spread(store, spec, owner, memory, 0)
    start = max(rng.start, store.hint(key, spec.pool, spec.space) or rng.start)
    held = None
    # the lowest free address from the hint on, if the hint is right, past what the agent's other calls claim
    guess = first_free(rng, start, store.pending(spec.pool, spec.space, start, rng.end))
    if guess is not None:
        allocation = _new(spec, guess, owner)
        tried = store.claim_else_held(allocation, (key, guess + 1), start, rng.end)
        if tried is not None:
            claimed, held = tried
            if claimed:
                return allocation
    for lost in range(MAX_LOST_RACES):
        ip, first = _pick(store, spec, start, lost, held)
        held = None  # read anew after a lost race
        if ip is None and start > rng.start:  # a stale-high hint must not make a range with room look full
            start = rng.start
            ip, first = _pick(store, spec, start, lost)
        if ip is None:
            raise RangeFull(exhausted_message(rng, spec.key))
        allocation = _new(spec, ip, owner)
        hint = (key, ip + 1) if ip == first else None  # everything below ip is held: the hint may move past it
        if store.claim(allocation, hint):
            return allocation
        if memory is not None:  # a race lost to another allocator: spread out, and keep spreading for a while
            return _spread(store, spec, owner, memory, lost + 1)
        start = first  # lower free addresses may remain; the lost one now reads as held
    raise LostRaces(f"{spec.key}: lost {MAX_LOST_RACES} races for addresses in {rng.cidr}; try again")


def _contention(store, key: str, pool: str):
    """The range's :class:`Contention`, kept where the store keeps the allocator's memory; None: nowhere."""
    memory = store.kept()
    return None if memory is None else memory.setdefault((key, pool), Contention())


def _clock() -> float:
    import time

    return time.monotonic()


def _spread(store, spec, owner: Owner, memory, lost: int) -> Allocation:
    """Contended (:class:`Contention`): claim from the cursor on; after ``lost`` races (any), from a free
    address drawn at random.  No hint moves: what is below the claimed address may be free.  A store whose
    :meth:`held` pages through the network (``reads_whole`` False: etcd) is read from the cursor on only,
    and the cursor jumps to a random address rather than a random free one."""
    import random

    rng = spec.range
    while lost < MAX_LOST_RACES:
        if store.reads_whole:
            held = list(store.held(spec.pool, spec.space, rng.start, rng.end))
            ip = memory.lost(rng, held, _clock(), random) if lost else memory.pick(rng, held)
        else:
            if lost:
                memory.jump(rng, _clock(), random)
            ip = memory.pick_from(rng, lambda lo, hi: store.held(spec.pool, spec.space, lo, hi))
        if ip is None:
            raise RangeFull(exhausted_message(rng, spec.key))
        allocation = _new(spec, ip, owner)
        if store.claim(allocation):
            return allocation
        lost += 1
    raise LostRaces(f"{spec.key}: lost {MAX_LOST_RACES} races for addresses in {rng.cidr}; try again")


def _pick(store, spec, start: int, lost: int, held=None) -> tuple:
    """(address to claim, lowest free address), both None when nothing is free from ``start`` on.

    Before any lost race: whereabouts' lowest-free order.  After one, a random
    one of the next free addresses, so that contending allocators spread out.
    ``held``: what the store holds from ``start`` on, if it was just read.
    """
    rng = spec.range
    held = store.held(spec.pool, spec.space, start, rng.end) if held is None else held
    if lost == 0:
        ip = first_free(rng, start, held)
        return ip, ip
    candidates = free_candidates(rng, start, held, SPREAD)
    if not candidates:
        return None, None
    import random

    return random.choice(candidates), candidates[0]


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

    ``specs``: a range spec each, or :class:`Choices` of several.  ``requested`` maps a range index to the
    address asked for in that range
    (CNI_ARGS ``IP=`` / ``runtimeConfig.ips``).  Everything happens in one
    store transaction; if a later range fails, what this call claimed is
    given back, so a failed ADD holds nothing new.
    """
    requested = requested or {}
    groups = [_choices(item) for item in specs]
    out, claimed, moved = [], [], []
    with store.transaction():
        store.prefetch(owner.network, owner.container_id, owner.ifname, owner.pod,
                       [(hint_key(s.network_name, s.overlapping, s.range), s.pool, s.space)
                        for group in groups for s in group.specs])
        try:
            existing = [_existing(store, group, owner) for group in groups]  # all reads before any write
            for index, group in enumerate(groups):
                held = existing[index]
                if held is not None and (index not in requested or requested[index] == held.ip):
                    out.append(held)
                    continue
                if index in requested:  # the range that holds it (the caller checked that one does)
                    ip = requested[index]
                    spec = next((s for s in group.specs if s.range.is_allocatable(ip)), group.specs[0])
                    allocation = _requested(store, spec, ip, owner)
                    if held is not None:  # asked for another address than it holds: move, once the new one is ours
                        store.release(held)
                        moved.append(held)
                else:
                    allocation = _first_with_room(store, group, owner)
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
    key = hint_key(spec.network_name, spec.overlapping, rng)
    start = max(rng.start, store.hint(key, spec.pool, spec.space) or rng.start)
    starts = (start, rng.start) if start > rng.start else (start,)  # a stale-high hint must not hide room
    return any(first_free(rng, s, store.held(spec.pool, spec.space, s, rng.end)) is not None for s in starts)
