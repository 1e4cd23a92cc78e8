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
* hints: none.  Every command reads the pools whole anyway (one LIST), so the
  lowest free address is found in memory; ``hint`` is always None, and
  ``list_hints`` has nothing (``cni-ipam pools`` learns ranges from allocations).
* addresses whose offset Go cannot read (below the range's first IP, or 2^63
  past it) and names that are not Kubernetes names: refused with
  :class:`~cni_ipam.store.base.StoreRefused`.

Reads: each plugin command (``transaction()``) lists the namespace's IPPools
once, and works from that list, updated by our own writes' answers.

This module does the I/O.  What an IPPool and our annotations say, and the
patches that change them, are read and built in :mod:`.kube_pools` (pure);
``cni-ipam verify``'s check and repairs are in :mod:`.kube_verify`.
"""

from __future__ import annotations

from ..kube import objects as ko
from ..kube.client import KubeError, KubeUnavailable
from ..net import pool_version, split_pool
from .base import Allocation, Store, StoreError, StoreRefused
from .kube_pools import (Pool, allocation_key, annotation_ops, created_at, keys_of, note_name, note_row, note_text,
                         reservation_name, reservation_of, reservation_readings, same_attachment, upstream)

GV = ko.API_VERSION
RESERVATION_GRACE = 600.0  # seconds a reservation no allocation backs is left alone: a claim may still be on its way
ATTEMPTS = 20  # patches of one pool for one claim or release before giving up (code 11)
PAUSE = 0.01  # first jittered pause after a conflict, doubled each time, at most MAX_PAUSE
MAX_PAUSE = 0.25


class _Fresh:
    """A plugin command: read the API again at its start; each claim and release is atomic on its own."""

    def __init__(self, store) -> None:
        self.store = store

    def __enter__(self):
        self.store._pools = None
        self.store._taken.clear()
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

    def _remember(self, obj: dict) -> "Pool":
        pool = Pool(obj, self._node_pools)
        if self._pools is not None:
            self._pools[pool.name] = pool
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
                return None
            raise StoreError(f"Kubernetes API: {exc.message}") from None

    def _pool(self, name: str, fresh: bool = False):
        pools = self._all()
        if not fresh and name in pools:
            return pools[name]
        return self._fetch(name)

    # -- Store verbs ------------------------------------------------------------------------------

    def prefetch(self, network, container_id, ifname, pod, hints) -> None:
        """Everything an ADD reads comes from one LIST of the pools."""
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
            return self._claim(allocation)

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
                        self._taken.add((allocation.space, allocation.version, allocation.ip))  # patched yet,
                        self._fetch(name)  # and our list is stale: read the pool again for the next candidate
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
        """The leader's write of one batch of claims (:mod:`.kube_batch`): one patch of the pool as cached,
        every claim :func:`~.kube_batch.plan` lets through in it.  A conflict reads the pool again and, after
        a jittered pause, writes what is left; a refusal that is not a conflict (the pool unchanged) is
        retried claim by claim, so it reaches only the claim it is about."""
        from .kube_batch import COMMITTED, GONE, LOST, plan

        cached = self.batches.cached(name)
        pool = Pool(cached, self._node_pools) if cached is not None else self._pool(name)
        fresh = False  # a cached pool, or our own list: a held address is read again before it decides
        for attempt in range(ATTEMPTS):
            if pool is None:
                for want in wants:
                    want.outcome = GONE
                return
            decided = plan(pool.holding, wants, fresh)
            if decided.recheck:  # held in the pool as cached: read it before losing or keeping a claim
                pool, fresh = self._reread(name), True
                continue
            for want in decided.lost:
                want.outcome, want.pool = LOST, pool.obj
            for want in decided.done:
                want.outcome, want.pool = COMMITTED, pool.obj
            wants = decided.write
            if not wants:
                return
            extras = dict(pool.extras)
            extras.update((w.key, note_row(w.allocation)) for w in wants)
            ops = ko.pool_patch(pool.parsed, add={w.key: upstream(w.allocation) for w in wants})
            try:
                written = self._call(self.client.json_patch, GV, ko.IPPOOLS, name, ops + annotation_ops(pool, extras))
            except KubeError as exc:  # 404, 409, 422 (_call turned the others into StoreError)
                tested = pool.parsed.resource_version
                pool, fresh = self._reread(name), True
                if exc.code != 404 and pool is not None and pool.parsed.resource_version == tested and len(wants) > 1:
                    return self._one_by_one(name, wants)  # not a conflict: refused for one claim's sake
                if exc.code != 404:
                    _pause(self.client, attempt)
                continue
            except StoreError as exc:
                if not exc.retry and len(wants) > 1:
                    return self._one_by_one(name, wants)
                for want in wants:
                    want.error = StoreError(str(exc), retry=exc.retry)
                return
            self.batches.seen(name, written)
            for want in wants:
                want.outcome, want.pool = COMMITTED, written
            return
        for want in wants:
            want.error = StoreError(f"IPPool {name} kept changing under {ATTEMPTS} attempts to claim "
                                    f"{want.allocation.address}; try again", retry=True)

    def _one_by_one(self, name: str, wants: list) -> None:
        for want in wants:
            self._commit_batch(name, [want])

    def _reread(self, name: str):
        """The pool read afresh (None: gone), remembered here and in the agent's cache."""
        pool = self._fetch(name)
        self.batches.seen(name, pool.obj if pool is not None else None)
        return pool

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
        found = [a for p in self._all().values() for a in p.allocations
                 if (network is None or a.network in ("", network))
                 and (container_id is None or a.container_id == container_id)
                 and (ifname is None or a.ifname == ifname) and (pod is None or a.pod == pod)]
        return sorted(found, key=lambda a: (a.pool, a.version, a.ip))

    def allocations(self):
        self._pools = None
        self._learn_node_pools()
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

    # -- reservations no allocation backs ------------------------------------------------------

    def _reservations(self) -> list:
        """Every reservation, with its creation time (seconds since the epoch; 0 when unreadable)."""
        return [(ko.parse_reservation(obj), created_at(obj))
                for obj in self._call(self.client.list, GV, ko.RESERVATIONS).get("items") or []]

    def unbacked_reservations(self):
        """Reservations whose address no allocation of their address space holds (read before the pools:
        a claim or release after this read changes the reservation, and ``drop_reservation`` leaves it)."""
        reservations = self._reservations()
        return self._unbacked(reservations, self.allocations())

    def _unbacked(self, reservations, allocations) -> list:
        """The reservations of ``reservations`` that nothing backs, as :class:`Reservation` (``token``: name and
        resourceVersion, the reservation as read).  Left out, so never deleted: a name we cannot read; one younger than
        :data:`RESERVATION_GRACE` (a claim creates it before it patches the pool, and upstream's Go writer
        reuses one of its own pod before patching); one whose address an allocation of its space holds
        (under any reading of the name); and one whose address an allocation of the same pod and interface
        holds in any space (a name written by another rule than upstream's v0.9 ``NormalizeIP``)."""
        import time

        from .base import Reservation

        backed = {(a.space, a.version, a.ip) for a in allocations if a.space is not None}
        holders = {}
        for a in allocations:
            holders.setdefault((a.version, a.ip), []).append(a)
        pools = self._all().values()
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

    def drop_reservation(self, reservation) -> bool:
        """Delete it unless it changed since it was listed, or the pools, read again just before, now back it
        (a Go writer may have reused it for its pod meanwhile)."""
        name, resource_version, listed = reservation.token
        self._pools = None
        if not self._unbacked([(listed, 0.0)], self.find()):
            return False
        try:
            self._call(self.client.delete, GV, ko.RESERVATIONS, name, resource_version)
        except KubeError:
            return False  # gone or changed meanwhile
        return True


    # -- consistency check (cni-ipam verify) ------------------------------------------------------

    def check(self, progress=None) -> list:
        """Besides what any store can hold (addresses outside their pool, duplicates in a space): pools and
        keys that cannot be read, allocations without their reservation, reservations without allocation
        (:mod:`.kube_verify`, loaded here only: no plugin command checks)."""
        from . import kube_verify

        return kube_verify.check(self, progress)

    # -- node slices (node_slice_size) ---------------------------------------------------------------

    def node_slices(self, slice_pool: str, network_name: str):
        """``(where, allocations)``: NodeSlicePool ``slice_pool`` as ``namespace/name``, and its
        ``status.allocations`` as ``(nodeName, sliceRange)`` pairs (None when there is no such NodeSlicePool),
        read as upstream's ``GetNodeSlicePoolRange`` reads it (pkg/storage/kubernetes/ipam.go @ v0.9.4).
        Its node IPPools are then read as of ``network_name``'s address space."""
        where = f"{self.client.namespace}/{slice_pool}"
        try:
            found = ko.parse_node_slice_pool(self._call(self.client.get, GV, ko.NODE_SLICE_POOLS, slice_pool))
        except KubeError as exc:
            if exc.code == 404:
                return where, None
            raise StoreError(f"Kubernetes API: {exc.message}") from None
        except ko.ObjectError as exc:
            raise StoreError(f"NodeSlicePool {where}: {exc}") from None
        self._name_node_pools(found, network_name)
        return where, list(found.allocations)

    def _name_node_pools(self, found, network_name: str) -> None:
        """Remember the node IPPools a NodeSlicePool names (``IPPoolName`` with a node) as ``network_name``'s:
        ``<network_name>-<node>-<slice>`` would otherwise read as network ``<network_name>-<node>``."""
        for node, text in found.allocations:
            try:
                self._node_pools[ko.pool_name(text, network_name, node)] = network_name
            except ko.ObjectError:
                continue  # not a name an IPPool can have: no pool to name

    def _learn_node_pools(self) -> None:
        """For the whole store (reconciler, admin commands): every NodeSlicePool's node IPPools, with or
        without ``network_name`` (the NodeSlicePool is named after it, else after the configuration).
        Without the CRD or the right to list them, node pools read as before."""
        try:
            listed = self._call(self.client.list, GV, ko.NODE_SLICE_POOLS).get("items") or []
        except (KubeError, StoreError):
            return
        for obj in listed:
            try:
                found = ko.parse_node_slice_pool(obj)
            except ko.ObjectError:
                continue
            self._name_node_pools(found, "")
            self._name_node_pools(found, found.name)

    def close(self) -> None:
        self.client.close()


def _pause(client, attempt: int) -> None:
    """A jittered pause before patching a pool again: concurrent writers spread out instead of colliding."""
    import random

    client.sleep(random.uniform(0, min(MAX_PAUSE, PAUSE * 2 ** attempt)))
