"""The cluster store on the Kubernetes API, in Go whereabouts' own objects (``whereabouts.cni.cncf.io/v1alpha1``).

One **IPPool** per pool (range and ``network_name``; :mod:`cni_ipam.kube.objects`
names it): ``spec.allocations`` maps each held address's offset from the
range's first IP to ``{id, podref, ifname}``.  With overlapping-range checks
on (a pool with an address space), each held address also has an
**OverlappingRangeIPReservation** named after it (and the ``network_name``).
Both as upstream writes them (k8snetworkplumbingwg/whereabouts
pkg/storage/kubernetes/ipam.go @ v0.9.4, 3a262bd0cd873e13d9b379342f8251b852a89b8f),
so our plugins and Go whereabouts can allocate from one cluster's pools at once.

A claim is: the reservation created (409 AlreadyExists: the address is held
in its space), then the pool patched with a JSON Patch that guards only what
it touches (:func:`cni_ipam.kube.objects.pool_patch`): a ``test`` that the
key is absent before its ``add``, a ``test`` of the ``id`` and ``ifname`` a
key was read with before its ``remove`` or ``replace``, and the same for
each key's annotation.  kube-apiserver applies a patch to the object as it
is when it commits, again after a concurrent commit, so writers of
different keys of one pool (ours in other processes, or on other nodes) all
succeed at once; Go writers still test ``resourceVersion``, which each of
our writes changes.  A 422 is a key (or its annotation) changed under us:
the pool is read again; the address now held is a lost race (``claim``
returns False and the allocator moves on to another candidate,
:mod:`cni_ipam.allocator.engine`); still free, the patch is retried after a
jittered pause, a bounded number of times.  A claim that finally fails
deletes its reservation.  Upstream also takes a Lease around its writes;
the ``test`` operations make each write safe without it, so none is taken,
and one held by a Go writer delays nothing here.
In the node agent (``batches``, :mod:`cni_ipam.store.kube_batch`), the patch
is shared: claims of one pool made at once by the agent's calls are written
together, each key with its own guard, on the pool as the agent cached it.

What upstream's objects have no place for, and where it is:

* our allocation's CNI network name, address space, node, netns and creation
  time: in one annotation per allocation key, ``cni-ipam.io/a.<key>`` (JSON
  ``[id, ifname, network, in-space, node, netns, created]``), added and
  removed in the same patch as its key.  An entry counts only while its
  key's ``id`` and ``ifname`` still match (Go writers leave annotations
  alone; our next write of the pool drops what they left stale).  Pools
  written before these have one annotation :data:`ANNOTATION` holding
  every key's row: it is still read, and our next write of the pool
  replaces it with per-key ones (``test`` of its text, ``remove``).  An
  allocation written by Go whereabouts has none: its network reads as ""
  (it matches any network, as upstream's DEL matches by container ID and
  ifname alone), and it is in the ``network_name``'s address space
  (upstream's default).  Past :data:`ANNOTATION_BUDGET` bytes of
  annotations the node, netns and time are left out, then the whole entry,
  to stay under the API server's 256 KiB limit for all annotations.
* hints: none.  Every command reads the pools whole anyway (one LIST, or the
  agent's watched copy), so the lowest free address is found in memory;
  ``hint`` is always None, and ``list_hints`` has nothing (``cni-ipam pools``
  learns ranges from allocations).
* addresses whose offset Go cannot read (below the range's first IP, or 2^63
  past it) and names that are not Kubernetes names: refused with
  :class:`~cni_ipam.store.base.StoreRefused`.

Reads: each plugin command (``transaction()``) lists the namespace's IPPools
once, and works from that list, updated by our own writes' answers (a store
the agent keeps open forgets it before its next call).  In the node agent an ADD reads them instead from
a copy that a LIST+WATCH keeps current (:mod:`.kube_cache`, shared by the
agent's stores of one settings, fed our writes' answers too), while that
watch is open: no round trip.  A copy that lags is safe for claims (the
``test``s); what it could get wrong is checked: an attachment the copy shows
holding an address has that pool read afresh before the ADD returns it, and
a claim's answer (the whole pool as committed) that shows the attachment
already held another address, written where the copy had not seen it yet,
gives the claim back and raises :class:`~.base.StaleRead`, and the ADD is
decided again on a LIST.  DEL, CHECK, GC and STATUS still LIST.

This module does the I/O of every command.  What an IPPool and our
annotations say, and the patches that change them, are read and built in
:mod:`.kube_pools` (pure).  Loaded only where needed: ``cni-ipam verify``'s
check and repairs, and the reservations no allocation backs, in
:mod:`.kube_verify`; NodeSlicePools' node IPPools in :mod:`.kube_node_pools`;
what only the node agent does (its watched copy, batched claims) in
:mod:`.kube_agent`.
"""

from __future__ import annotations

from ..kube import objects as ko
from ..kube.client import KubeError, KubeUnavailable
from ..net import pool_version, split_pool
from .base import Allocation, Store, StoreError, StoreRefused
from .kube_pools import (Pool, allocation_key, annotation_ops, keys_of, note_name, note_row, note_text,
                         reservation_name, reservation_of, same_attachment, upstream)

GV = ko.API_VERSION
ATTEMPTS = 20  # patches of one pool for one claim or release before giving up (code 11)
PAUSE = 0.01  # first jittered pause after a conflict, doubled each time, at most MAX_PAUSE
MAX_PAUSE = 0.25
REREAD_AFTER = 3  # a plugin command's lost reservation races before each one reads the pool again: the first
# ones pick the next candidate from the list already read (the lost address passed by; a lost race spreads at
# random over the range, where that list is almost always right), instead of a GET per lost race


class _Fresh:
    """A plugin command: read the API again at its start (an ADD in the agent: its watched copy); each claim
    and release is atomic on its own."""

    def __init__(self, store) -> None:
        self.store = store

    def __enter__(self):
        self.store.forget_reads()
        return self.store

    def __exit__(self, *exc):
        return False


class KubernetesStore(Store):
    def __init__(self, client, batches=None) -> None:
        self.client = client
        self.batches = batches  # the agent's PoolBatches (claims of one pool written together); None: alone
        self._pools = None  # IPPool name -> Pool, from the last LIST and our writes since; None: not read
        self._taken = set()  # (space, version, ip) this command found reserved by another: held, for held()
        self._node_pools = {}  # IPPool name -> network_name, of node pools named in NodeSlicePools read
        self._kept = batches.kept if batches is not None else {}  # the allocator's memory: the agent's, or this call's
        self._cached = False  # this command's pools came from the agent's watched copy, not a LIST
        self._verified = set()  # IPPool names this command read afresh after the copy said they hold its attachment
        self._distrust = False  # a decision on the copy was stale (StaleRead): the next ADD LISTs
        self._parsed = {}  # IPPool name -> (object, node pool's network_name, Pool): in the agent, see _parse

    def forget_reads(self) -> None:
        """Read again on the next use (a new command; the agent lends this store to another call)."""
        self._pools = None
        self._taken.clear()
        self._cached = False
        self._verified.clear()

    def _call(self, method, *args):
        try:
            return method(*args)
        except KubeUnavailable as exc:
            raise StoreError(str(exc), retry=True) from None
        except KubeError as exc:
            if exc.code in (404, 409, 422):
                raise
            raise StoreError(f"Kubernetes API: {exc.message}", retry=exc.code == 429 or exc.code >= 500) from None

    def transaction(self):
        return _Fresh(self)

    # -- reading pools ----------------------------------------------------------------------

    def _all(self) -> dict:
        if self._pools is None:
            listed = self._call(self.client.list, GV, ko.IPPOOLS)
            pools = {}
            for obj in listed.get("items") or []:
                try:
                    pool = Pool(obj, self._node_pools)
                except (ko.ObjectError, ValueError, IndexError):
                    continue  # verify reports it; nothing here can allocate from it
                pools[pool.name] = pool
            self._pools = pools
        return self._pools

    def _parse(self, name: str, obj: dict) -> "Pool":
        """The Pool of ``obj``; in the agent, parsed once per object, whichever of an ADD's steps reads it
        first (its reading of the copy, its batch's write, the write's answer: three parses an ADD before)."""
        if self.batches is None:
            return Pool(obj, self._node_pools)
        named = self._node_pools.get(name)
        kept = self._parsed.get(name)
        if kept is None or kept[0] is not obj or kept[1] != named:
            kept = self._parsed[name] = (obj, named, Pool(obj, self._node_pools))
        return kept[2]

    def _remember(self, obj: dict) -> "Pool":
        pool = self._parse((obj.get("metadata") or {}).get("name"), obj)
        if self._pools is not None:
            self._pools[pool.name] = pool
        if self.batches is not None:
            self.batches.seen(pool.name, obj)  # the agent's copy: never replaces a newer one
        return pool

    def _object_name(self, pool: str) -> tuple:
        """(IPPool name, Network) of our pool name; StoreRefused when it is not a Kubernetes name."""
        network_name, network = split_pool(pool)
        if network is None:
            raise StoreRefused(f"pool {pool!r} names no CIDR")
        try:
            return ko.pool_name(ko.range_text(network), network_name), network
        except ko.ObjectError as exc:
            raise StoreRefused(str(exc)) from None

    def _fetch(self, name: str):
        """The pool read afresh, or None when there is none."""
        try:
            return self._remember(self._call(self.client.get, GV, ko.IPPOOLS, name))
        except KubeError as exc:
            if exc.code == 404:
                if self._pools is not None:
                    self._pools.pop(name, None)
                if self.batches is not None:
                    self.batches.seen(name, None)
                return None
            raise StoreError(f"Kubernetes API: {exc.message}") from None

    def _refresh(self, name: str) -> None:
        """Read the pool again before the allocator's next candidate: in the agent, while this command reads the
        watched copy, that copy as it is now (the watch has brought what others committed since; no round
        trip: a claim decided on it is still guarded by its ``test``s), else a GET."""
        obj = self.batches.cached(name) if self._cached else None
        if obj is not None:
            try:
                self._pools[name] = self._parse(name, obj)
                return
            except (ko.ObjectError, ValueError, IndexError):
                pass
        self._fetch(name)

    def _pool(self, name: str, fresh: bool = False):
        pools = self._all()
        if not fresh and name in pools:
            return pools[name]
        return self._fetch(name)

    # -- Store verbs ------------------------------------------------------------------------------

    def prefetch(self, network, container_id, ifname, pod, hints) -> None:
        """Everything an ADD reads comes from one LIST of the pools; in the agent, from its copy that a watch
        keeps current (:mod:`.kube_cache`), while the watch is synced: no round trip."""
        if self._pools is None and self.batches is not None and not self._distrust:
            from .kube_agent import parse, watch_client

            objects = self.batches.watched(lambda: watch_client(self.client))
            if objects is not None:
                self._pools = parse(self, objects)
                self._cached = True
                return
        self._distrust = False
        self._all()

    def held(self, pool, space, lo, hi):
        name, _ = self._object_name(pool)
        version = pool_version(pool)
        pools = self._all()
        found = set()
        own = pools.get(name)
        if own is not None:
            found.update(own.parsed.held)
        if self.batches is not None:
            found.update(self.batches.pending(name))  # claimed by other calls of this agent, not yet written
        if space is not None:
            for other in pools.values():
                found.update(a.ip for a in other.allocations if a.space == space and a.version == version)
            found.update(ip for s, v, ip in self._taken if (s, v) == (space, version))
        return iter(sorted(ip for ip in found if lo <= ip <= hi))

    def claim(self, allocation: Allocation, hint=None) -> bool:
        if self.batches is None:
            return self._claim(allocation)
        name, _ = self._object_name(allocation.pool)
        with self.batches.claiming((name,), allocation.ip):  # the agent's other calls pass it by meanwhile
            won = self._claim(allocation)
            if won and self._cached:
                self._check_cached_decision(name, allocation)
            return won

    def _check_cached_decision(self, name: str, allocation: Allocation) -> None:
        """In the agent: give the claim back and raise StaleRead if its answer shows the attachment already
        held another address there (:func:`.kube_agent.check_cached_decision`)."""
        from .kube_agent import check_cached_decision

        check_cached_decision(self, name, allocation)

    def _claim(self, allocation: Allocation) -> bool:
        import time

        allocation.created = allocation.created or time.time()
        name, network = self._object_name(allocation.pool)
        reserved = None  # [name, resourceVersion] of the reservation this claim made, until the pool holds it
        try:
            for attempt in range(ATTEMPTS):
                pool = self._pool(name, fresh=attempt > 0)
                if pool is not None and pool.parsed.held.get(allocation.ip):
                    if attempt > 0 and any(same_attachment(a, allocation) for a in pool.holding(allocation.ip)):
                        reserved = None  # our own write, committed though its answer was lost (the client retried)
                        return True
                    return False
                key = allocation_key(network, allocation, pool)
                if allocation.space is not None and reserved is None:
                    reserved = self._reserve(allocation)
                    if reserved is None:  # held in its address space: a lost race, whose winner may not have
                        self._taken.add((allocation.space, allocation.version, allocation.ip))  # patched yet
                        if self._cached or len(self._taken) >= REREAD_AFTER:
                            self._refresh(name)  # our list is stale: read the pool again for the next candidate
                        return False
                if pool is None:
                    if self._create_pool(name, network, allocation, key):
                        reserved = None  # kept: it backs the allocation now
                        return True
                    continue  # created meanwhile by someone else: read it, then patch it
                if self.batches is not None:  # in the agent: written with the other claims of this pool
                    won = self._claim_in_batch(name, allocation, key)
                    if won is not None:
                        reserved = None if won else reserved
                        return won
                    continue  # the pool is gone: read it again (none: create it)
                extras = dict(pool.extras)
                extras[key] = note_row(allocation)
                ops = ko.pool_patch(pool.parsed, add={key: upstream(allocation)}) + annotation_ops(pool, extras)
                if self._patch_pool(name, ops, attempt):
                    reserved = None
                    return True
            raise StoreError(f"IPPool {name} kept changing under {ATTEMPTS} attempts to claim {allocation.address}; "
                             f"try again", retry=True)
        finally:
            if reserved is not None:
                self._unreserve(reserved)

    def _claim_in_batch(self, name: str, allocation: Allocation, key: str):
        """True: the pool holds the claim; False: lost (the address is another's); None: the pool is gone.
        Raises the StoreError of this claim's write only."""
        from .kube_batch import COMMITTED, LOST, Want

        want = self.batches.submit(name, Want(allocation, key), self._commit_batch)
        if want.pool is not None:
            self._remember(want.pool)  # the pool it was decided on: fresher than our list
        if want.error is not None:
            raise want.error
        return True if want.outcome == COMMITTED else False if want.outcome == LOST else None

    def _commit_batch(self, name: str, wants: list) -> None:
        """The leader's write of one batch of claims (:func:`.kube_agent.commit_batch`)."""
        from .kube_agent import commit_batch

        commit_batch(self, name, wants)

    def _create_pool(self, name: str, network, allocation: Allocation, key: str) -> bool:
        """Create the pool already holding ``allocation``; False when someone else created it first."""
        obj = ko.ippool_object(name, self.client.namespace, ko.range_text(network), {key: upstream(allocation)})
        name = note_name(key)
        if name is not None:
            obj["metadata"]["annotations"] = {name: note_text(note_row(allocation))}
        try:
            self._remember(self._call(self.client.create, GV, ko.IPPOOLS, obj))
        except KubeError as exc:
            if exc.code != 409:
                raise StoreError(f"Kubernetes API: {exc.message}") from None
            return False
        return True

    def _reserve(self, allocation: Allocation):
        """Create the address's reservation: ``[name, resourceVersion]``, or None when it is held."""
        name = reservation_name(allocation)
        obj = ko.reservation_object(name, self.client.namespace, allocation.pod, allocation.ifname,
                                    allocation.container_id)
        try:
            made = self._call(self.client.create, GV, ko.RESERVATIONS, obj)
        except KubeError as exc:
            if exc.code != 409:
                raise StoreError(f"Kubernetes API: {exc.message}") from None
            if not exc.retried:
                return None  # refused on its first sending: another attachment's, no need to read it
            return self._own_reservation(name, allocation)
        return [name, made["metadata"]["resourceVersion"]]

    def _own_reservation(self, name: str, allocation: Allocation):
        """``[name, resourceVersion]`` when the existing reservation is this attachment's own (our create
        committed though its answer was lost, and the client's retry met it), else None: held by another."""
        try:
            found = ko.parse_reservation(self._call(self.client.get, GV, ko.RESERVATIONS, name))
        except (KubeError, ko.ObjectError):
            return None  # deleted meanwhile: its holder let go, but another may claim it first; move on
        if (found.container_id, found.ifname) != (allocation.container_id, allocation.ifname):
            return None
        return [name, found.resource_version]

    def _unreserve(self, reserved: list) -> None:
        """Delete a reservation this claim made and no longer needs (best effort: the reconciler frees what
        is left)."""
        try:
            self._call(self.client.delete, GV, ko.RESERVATIONS, reserved[0], reserved[1])
        except (KubeError, StoreError):
            pass

    def release(self, allocation: Allocation) -> bool:
        name, _ = self._object_name(allocation.pool)
        for attempt in range(ATTEMPTS):
            pool = self._pool(name, fresh=attempt > 0)
            if pool is None:
                return False
            mine = [a for a in pool.holding(allocation.ip) if same_attachment(a, allocation)]
            if not mine:
                if attempt > 0 and allocation.space is not None:
                    self._drop_own_reservation(allocation)  # our patch may have committed, its answer lost
                return attempt > 0
            keys = keys_of(pool, allocation)
            extras = {k: v for k, v in pool.extras.items() if k not in keys}
            ops = ko.pool_patch(pool.parsed, remove=keys) + annotation_ops(pool, extras)
            if not self._patch_pool(name, ops, attempt):
                continue
            if mine[0].space is not None:
                self._drop_own_reservation(mine[0])
            return True
        raise StoreError(f"IPPool {name} kept changing under {ATTEMPTS} attempts to release {allocation.address}",
                         retry=True)

    def _patch_pool(self, name: str, ops: list, attempt: int) -> bool:
        """Apply ``ops`` (each change after its own ``test``) to IPPool ``name``; False, after a jittered pause,
        when another writer changed what they test first (409/422): the caller reads it again and retries."""
        try:
            self._remember(self._call(self.client.json_patch, GV, ko.IPPOOLS, name, ops))
            return True
        except KubeError as exc:
            if exc.code not in (409, 422):
                raise StoreError(f"Kubernetes API: {exc.message}") from None
        _pause(self.client, attempt)
        return False

    def _drop_own_reservation(self, held: Allocation) -> None:
        """Delete the address's reservation if it is this allocation's (not another pool's of the space)."""
        name = reservation_name(held)
        try:
            found = ko.parse_reservation(self._call(self.client.get, GV, ko.RESERVATIONS, name))
            if reservation_of(found, held):
                self._call(self.client.delete, GV, ko.RESERVATIONS, name, found.resource_version)
        except KubeError:
            pass  # gone, or changed meanwhile: not ours to delete

    def update_owner(self, allocation, container_id, netns):
        name, _ = self._object_name(allocation.pool)
        for attempt in range(ATTEMPTS):
            pool = self._pool(name, fresh=attempt > 0)
            held = [a for a in pool.holding(allocation.ip) if same_attachment(a, allocation)] if pool else []
            if not held:
                return False  # released (and maybe claimed again) since the caller read it
            key = keys_of(pool, allocation)[0]
            moved = Allocation.from_dict(dict(held[0].to_dict(), container_id=container_id, netns=netns))
            extras = dict(pool.extras)
            extras[key] = note_row(moved)
            ops = ko.pool_patch(pool.parsed, replace={key: upstream(moved)}) + annotation_ops(pool, extras)
            if not self._patch_pool(name, ops, attempt):
                continue
            allocation.container_id, allocation.netns = container_id, netns
            return True
        raise StoreError(f"IPPool {name} kept changing; the new container ID was not recorded", retry=True)

    def find(self, network=None, container_id=None, ifname=None, pod=None):
        found = self._found(network, container_id, ifname, pod)
        if self._cached and found:  # the agent's copy may lag a release: what an ADD would return as held, or move
            names = {p.pool: p.name for p in self._pools.values()}  # to a new sandbox, is read afresh first
            stale = {names[a.pool] for a in found if a.pool in names} - self._verified
            for name in sorted(stale):
                self._verified.add(name)
                self._fetch(name)
            if stale:
                found = self._found(network, container_id, ifname, pod)
        return found

    def _found(self, network, container_id, ifname, pod) -> list:
        found = [a for p in self._all().values() for a in p.allocations
                 if (network is None or a.network in ("", network))
                 and (container_id is None or a.container_id == container_id)
                 and (ifname is None or a.ifname == ifname) and (pod is None or a.pod == pod)]
        return sorted(found, key=lambda a: (a.pool, a.version, a.ip))

    def allocations(self):
        from .kube_node_pools import learn_node_pools

        self._pools = None
        learn_node_pools(self)
        return self.find()

    def kept(self) -> dict:
        """In the agent, shared by its calls (per settings, with the batches): a node that lost a race lately
        keeps away from the lowest free addresses the other nodes claim (:class:`cni_ipam.allocator.Contention`).
        The plugin alone keeps it for its one call: a lost race moves to a random address of the whole range,
        not one of the next few (measured: fewer refused creates)."""
        return self._kept

    def hint(self, key, pool, space):
        return None

    def set_hint(self, key, pool, space, value):
        """No hints here: the pools are read whole, so the lowest free address costs no extra read."""

    def list_hints(self):
        return []

    # -- maintenance (reconciler, cni-ipam verify): in .kube_verify, loaded only by these -------------------

    def unbacked_reservations(self):
        from . import kube_verify

        return kube_verify.unbacked_reservations(self)

    def drop_reservation(self, reservation) -> bool:
        from . import kube_verify

        return kube_verify.drop_reservation(self, reservation)

    def check(self, progress=None) -> list:
        """Besides what any store can hold (addresses outside their pool, duplicates in a space): pools and
        keys that cannot be read, allocations without their reservation, reservations without allocation
        (:mod:`.kube_verify`, loaded here only: no plugin command checks)."""
        from . import kube_verify

        return kube_verify.check(self, progress)

    # -- node slices (node_slice_size): in .kube_node_pools, loaded only by the commands that use them --------

    def node_slices(self, slice_pool: str, network_name: str):
        """``(where, allocations)`` of NodeSlicePool ``slice_pool``; its node IPPools are then read as of
        ``network_name``'s address space (:func:`.kube_node_pools.node_slices`)."""
        from .kube_node_pools import node_slices

        return node_slices(self, slice_pool, network_name)

    def close(self) -> None:
        self.client.close()


def _pause(client, attempt: int) -> None:
    """A jittered pause before patching a pool again: concurrent writers spread out instead of colliding."""
    import random

    client.sleep(random.uniform(0, min(MAX_PAUSE, PAUSE * 2 ** attempt)))
