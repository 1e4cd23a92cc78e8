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
"""

from __future__ import annotations

from .. import jsonlite as json
from ..kube import objects as ko
from ..kube.client import KubeError, KubeUnavailable
from ..net import pool_name, pool_version, split_pool
from .base import Allocation, Store, StoreError, StoreRefused

GV = ko.API_VERSION
NOTE = "cni-ipam.io/a."  # + an allocation key: that allocation's annotation
ANNOTATION = "cni-ipam.io/attachments"  # before notes: one annotation for all keys, still read
ANNOTATION_BUDGET = 200 * 1024  # kube-apiserver refuses more than 256 KiB of annotations per object
_NOTE_KEY_DIGITS = 63 - len(NOTE.split("/", 1)[1])  # an annotation's name (after the prefix) has at most 63 characters
RESERVATION_GRACE = 600.0  # seconds a reservation no allocation backs is left alone: a claim may still be on its way
ATTEMPTS = 20  # patches of one pool for one claim or release before giving up (code 11)
PAUSE = 0.01  # first jittered pause after a conflict, doubled each time, at most MAX_PAUSE
MAX_PAUSE = 0.25


class _Pool:
    """One IPPool as read: the parsed object, our pool name for it, its allocations, and our annotations
    (``notes``: allocation key -> its annotation's text as read; ``blob``: the old single annotation's text)."""

    __slots__ = ("name", "obj", "parsed", "network_name", "network", "pool", "extras", "stale", "allocations",
                 "annotations", "notes", "blob")

    def __init__(self, obj: dict, node_pools=None) -> None:
        self.obj = obj
        self.parsed = ko.parse_ippool(obj)
        self.name = self.parsed.name
        from ..net.addr import Network

        version, base = ko.pool_base(self.parsed.range)
        prefixlen = int(self.parsed.range.rsplit("/", 1)[1])
        prefixlen -= 96 if version == 4 and ":" in self.parsed.range else 0  # an IPv4-mapped range read as IPv4
        self.network = Network(base, prefixlen, version)
        named = _network_name(self.name, self.network)  # a node's pool: "<network_name>-<node>"
        self.network_name = (node_pools or {}).get(self.name, named)  # the address space's network name
        self.pool = pool_name(named, str(self.network))
        annotations = (obj.get("metadata") or {}).get("annotations")
        self.annotations = annotations if isinstance(annotations, dict) else None
        self.notes = {name[len(NOTE):]: text for name, text in (self.annotations or {}).items()
                      if name.startswith(NOTE) and isinstance(text, str)}
        blob = (self.annotations or {}).get(ANNOTATION)
        self.blob = blob if isinstance(blob, str) else None
        holders = {e.key: [e.allocation.container_id, e.allocation.ifname] for e in self.parsed.entries}
        self.extras, self.stale = {}, {}  # entries of the keys' current holders; the others (key gone or re-held)
        for key, row in _read_extras(obj).items():
            (self.extras if holders.get(key) == row[:2] else self.stale)[key] = row
        self.allocations = [self._allocation(e) for e in self.parsed.entries if e.address is not None]

    def _allocation(self, entry) -> Allocation:
        held = entry.allocation
        extra = self.extras.get(entry.key)
        row = list(extra) + [None] * (7 - len(extra)) if extra is not None else [None] * 7
        network, in_space, node, netns, created = row[2:7]
        return Allocation(self.pool, entry.address, self.parsed.version, _str(network), held.container_id,
                          held.ifname, space=None if in_space == 0 else self.network_name, pod=held.podref,
                          netns=_str(netns), node=_str(node),
                          created=float(created) if isinstance(created, (int, float)) else 0.0)

    def holding(self, address: int) -> list:
        return [a for a in self.allocations if a.ip == address]


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _network_name(name: str, network) -> str:
    """The ``network_name`` an IPPool's name carries before its normalized range ("" when none)."""
    suffix = ko.pool_name(ko.range_text(network))
    if name == suffix:
        return ""
    return name[:-len(suffix) - 1] if name.endswith("-" + suffix) else name


def _row(text):
    """An annotation's row, or None when it is not one."""
    try:
        row = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return row if isinstance(row, list) and len(row) >= 2 else None


def _read_extras(obj: dict) -> dict:
    """Our annotations: offset key -> ``[id, ifname, network, in-space, node, netns, created]``, from each key's
    own (``cni-ipam.io/a.<key>``), else from the single one objects written before them have."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict):
        return {}
    try:
        blob = json.loads(annotations.get(ANNOTATION) or "{}")
    except (ValueError, TypeError):
        blob = {}
    extras = {k: v for k, v in blob.items() if isinstance(v, list) and len(v) >= 2} if isinstance(blob, dict) else {}
    for name, text in annotations.items():
        row = _row(text) if name.startswith(NOTE) else None
        if row is not None:
            extras[name[len(NOTE):]] = row
    return extras


def _extra(a: Allocation, full: bool = True) -> list:
    row = [a.container_id, a.ifname, a.network, 1 if a.space is not None else 0]
    return row + [a.node, a.netns, a.created] if full else row


def note_name(key: str):
    """The annotation of allocation key ``key`` (``cni-ipam.io/a.<key>``: a qualified name, whose part after
    the prefix is at most 63 characters of ``[A-Za-z0-9-_.]`` beginning and ending alphanumeric), or None for
    a key that cannot name one (only decimal keys, as :func:`~cni_ipam.kube.objects.offset_key` writes, get one)."""
    return NOTE + key if key.isdigit() and key.isascii() and len(key) <= _NOTE_KEY_DIGITS else None


def note_text(row: list) -> str:
    """A row as its annotation's text: JSON in printable ASCII without ``<>&`` (escaped inside its strings), so
    a later ``test`` of it compares equal on any server (:func:`~cni_ipam.kube.objects.plain`)."""
    text = json.dumps(row, ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\x7f", "\\u007f")


def _size(name: str, text: str) -> int:
    """What an annotation counts toward the API server's limit (``ValidateAnnotationsSize``: key and value lengths)."""
    return len(name.encode()) + len(text.encode())


def _annotation_ops(pool: _Pool, extras: dict) -> list:
    """JSON Patch operations that make our annotations say ``extras`` (key -> row), given the pool as read:
    one annotation per allocation key, added (``test`` absent), replaced or removed (``test`` of its text as
    read) only where its text changes, so writers of different keys do not conflict.  Built from
    ``pool.extras``, which holds only the entries of keys the pool still holds for the same attachment, so a
    write also drops the annotations another writer made stale (Go writers remove keys and leave annotations
    alone).  The old single annotation, when present, is removed (``test`` of its text) and its current entries
    are written as notes.  Past :data:`ANNOTATION_BUDGET` bytes of annotations (all of the object's, as read)
    a new row loses its node, netns and time, then is left out (its allocation then reads as Go-written).  A
    text that cannot be tested exactly (not :func:`~cni_ipam.kube.objects.plain`) makes the patch test
    ``resourceVersion`` instead."""
    annotations = pool.annotations or {}
    used = sum(_size(k, v) for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str))
    ops, added, whole = [], {}, False

    def guarded(name: str, text: str) -> list:
        nonlocal whole
        whole = whole or not ko.plain(text)
        return [{"op": "test", "path": ko.pointer("metadata", "annotations", name), "value": text}]

    if pool.blob is not None:
        ops += guarded(ANNOTATION, pool.blob) + [{"op": "remove", "path": ko.pointer("metadata", "annotations",
                                                                                      ANNOTATION)}]
        used -= _size(ANNOTATION, pool.blob)
    for key, old in sorted(pool.notes.items()):
        if key not in extras or note_name(key) is None:
            ops += guarded(NOTE + key, old) + [{"op": "remove", "path": ko.pointer("metadata", "annotations",
                                                                                    NOTE + key)}]
            used -= _size(NOTE + key, old)
    for key, row in extras.items():
        name, old = note_name(key), pool.notes.get(key)
        if name is None or old is not None and _row(old) == list(row):
            continue
        if old is not None:
            used -= _size(name, old)
        text = next((t for t in (note_text(row), note_text(row[:4])) if used + _size(name, t) <= ANNOTATION_BUDGET),
                    None)
        path = ko.pointer("metadata", "annotations", name)
        if text is None:
            if old is not None:
                ops += guarded(name, old) + [{"op": "remove", "path": path}]
            continue
        used += _size(name, text)
        if old is not None:
            ops += guarded(name, old) + [{"op": "replace", "path": path, "value": text}]
        elif pool.annotations is None:
            added[name] = text
        else:
            ops += [{"op": "test", "path": path, "value": None}, {"op": "add", "path": path, "value": text}]
    if added:  # no annotations at all: add the map, tested absent (a concurrent creator of it makes us read again)
        ops += [{"op": "test", "path": "/metadata/annotations", "value": None},
                {"op": "add", "path": "/metadata/annotations", "value": added}]
    if whole:
        ops.insert(0, ko.version_test(pool.parsed))
    return ops


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
        self._pools = None  # IPPool name -> _Pool, from the last LIST and our writes since; None: not read
        self._taken = set()  # (space, version, ip) this command found reserved by another: held, for held()
        self._node_pools = {}  # IPPool name -> network_name, of node pools named in NodeSlicePools read

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
                    pool = _Pool(obj, self._node_pools)
                except (ko.ObjectError, ValueError, IndexError):
                    continue  # verify reports it; nothing here can allocate from it
                pools[pool.name] = pool
            self._pools = pools
        return self._pools

    def _remember(self, obj: dict) -> "_Pool":
        pool = _Pool(obj, self._node_pools)
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
        with self.batches.claiming(name, allocation.ip):  # the agent's other calls pass it by meanwhile
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
                    if attempt > 0 and any(_same_attachment(a, allocation) for a in pool.holding(allocation.ip)):
                        reserved = None  # our own write, committed though its answer was lost (the client retried)
                        return True
                    return False
                key = _key_from(network, allocation, pool)
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
                extras[key] = _extra(allocation)
                ops = ko.pool_patch(pool.parsed, add={key: _upstream(allocation)}) + _annotation_ops(pool, extras)
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
        pool = _Pool(cached, self._node_pools) if cached is not None else self._pool(name)
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
            extras.update((w.key, _extra(w.allocation)) for w in wants)
            ops = ko.pool_patch(pool.parsed, add={w.key: _upstream(w.allocation) for w in wants})
            try:
                written = self._call(self.client.json_patch, GV, ko.IPPOOLS, name, ops + _annotation_ops(pool, extras))
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
        obj = ko.ippool_object(name, self.client.namespace, ko.range_text(network), {key: _upstream(allocation)})
        name = note_name(key)
        if name is not None:
            obj["metadata"]["annotations"] = {name: note_text(_extra(allocation))}
        try:
            self._remember(self._call(self.client.create, GV, ko.IPPOOLS, obj))
        except KubeError as exc:
            if exc.code != 409:
                raise StoreError(f"Kubernetes API: {exc.message}") from None
            return False
        return True

    def _reserve(self, allocation: Allocation):
        """Create the address's reservation: ``[name, resourceVersion]``, or None when it is held."""
        name = _reservation_name(allocation)
        obj = ko.reservation_object(name, self.client.namespace, allocation.pod, allocation.ifname,
                                    allocation.container_id)
        try:
            made = self._call(self.client.create, GV, ko.RESERVATIONS, obj)
        except KubeError as exc:
            if exc.code != 409:
                raise StoreError(f"Kubernetes API: {exc.message}") from None
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
            mine = [a for a in pool.holding(allocation.ip) if _same_attachment(a, allocation)]
            if not mine:
                if attempt > 0 and allocation.space is not None:
                    self._drop_own_reservation(allocation)  # our patch may have committed, its answer lost
                return attempt > 0
            keys = _keys_of(pool, allocation)
            extras = {k: v for k, v in pool.extras.items() if k not in keys}
            ops = ko.pool_patch(pool.parsed, remove=keys) + _annotation_ops(pool, extras)
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
        name = _reservation_name(held)
        try:
            found = ko.parse_reservation(self._call(self.client.get, GV, ko.RESERVATIONS, name))
            if _reservation_of(found, held):
                self._call(self.client.delete, GV, ko.RESERVATIONS, name, found.resource_version)
        except KubeError:
            pass  # gone, or changed meanwhile: not ours to delete

    def update_owner(self, allocation, container_id, netns):
        name, _ = self._object_name(allocation.pool)
        for attempt in range(ATTEMPTS):
            pool = self._pool(name, fresh=attempt > 0)
            held = [a for a in pool.holding(allocation.ip) if _same_attachment(a, allocation)] if pool else []
            if not held:
                return False  # released (and maybe claimed again) since the caller read it
            key = _keys_of(pool, allocation)[0]
            moved = Allocation.from_dict(dict(held[0].to_dict(), container_id=container_id, netns=netns))
            extras = dict(pool.extras)
            extras[key] = _extra(moved)
            ops = ko.pool_patch(pool.parsed, replace={key: _upstream(moved)}) + _annotation_ops(pool, extras)
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

    def hint(self, key, pool, space):
        return None

    def set_hint(self, key, pool, space, value):
        """No hints here: the pools are read whole, so the lowest free address costs no extra read."""

    def list_hints(self):
        return []

    # -- reservations no allocation backs ------------------------------------------------------

    def _reservations(self) -> list:
        """Every reservation, with its creation time (seconds since the epoch; 0 when unreadable)."""
        return [(ko.parse_reservation(obj), _created(obj))
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
                    _reservation_of(r, a) for _, version, ip in readings for a in holders.get((version, ip), ())):
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
        keys that cannot be read, allocations without their reservation, reservations without allocation."""
        from .check import Problem, duplicates, outside_its_pool, tick

        reservations = self._reservations()
        problems = []
        self._learn_node_pools()
        self._pools = {}
        for obj in self._call(self.client.list, GV, ko.IPPOOLS).get("items") or []:
            try:
                pool = self._remember(obj)
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
                                        repair=self._drop_stale(pool)))
        allocations = self.find()
        for done, _ in enumerate(allocations, 1):
            tick(progress, done, len(allocations))
        problems += filter(None, (outside_its_pool(a, self._release_outside(a)) for a in allocations))
        names = {r.name for r, _ in reservations}
        for a in allocations:
            if a.space is not None and _reservation_name(a) not in names:
                problems.append(Problem("missing-reservation",
                                        f"{a.address} of {a.pool} has no OverlappingRangeIPReservation: another "
                                        f"pool of address space {a.space!r} can hand it out again",
                                        repair=self._restore_reservation(a)))
        for reservation in self._unbacked(reservations, allocations):
            problems.append(Problem("unbacked-reservation",
                                    f"OverlappingRangeIPReservation {reservation.token[0]} holds {reservation.address} "
                                    f"in address space {reservation.space!r} but no allocation does: the address "
                                    f"is blocked", repair=self._drop_unbacked(reservation)))
        return problems + duplicates(allocations)

    def _release_outside(self, a: Allocation):
        def repair() -> str:
            if not self.release(a):
                return f"{a.address} of {a.pool} had changed; left alone (run verify again)"
            return f"released {a.address} from {a.pool}: no range of that pool can hold it"
        return repair

    def _restore_reservation(self, a: Allocation):
        def repair() -> str:
            if self._reserve(a) is None:
                return f"the reservation of {a.address} in address space {a.space!r} was made meanwhile; left alone"
            return f"restored the reservation of {a.address} in address space {a.space!r} for {a.pool}"
        return repair

    def _drop_stale(self, pool: _Pool):
        def repair() -> str:
            ops = _annotation_ops(pool, pool.extras)
            try:
                self._remember(self._call(self.client.json_patch, GV, ko.IPPOOLS, pool.name, ops))
            except KubeError:
                return f"IPPool {pool.name} changed meanwhile; its annotation was left alone (run verify again)"
            return f"dropped the stale annotation entries of keys {', '.join(sorted(pool.stale))} from IPPool {pool.name}"
        return repair

    def _drop_unbacked(self, reservation):
        def repair() -> str:
            if self.drop_reservation(reservation):
                return f"deleted the unbacked reservation {reservation.token[0]}"
            return f"the reservation {reservation.token[0]} changed meanwhile; left alone"
        return repair

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


def _upstream(a: Allocation) -> "ko.Allocation":
    return ko.Allocation(a.container_id, a.pod, a.ifname)


def _key_from(network, allocation: Allocation, pool=None) -> str:
    """The allocation's key in its pool (StoreRefused when Go whereabouts could not read it)."""
    try:
        if pool is not None:
            return pool.parsed.key_for(allocation.ip)
        return ko.offset_key(int(network.network_address), allocation.version, allocation.ip)
    except ko.ObjectError as exc:  # OffsetTooLarge included
        raise StoreRefused(f"{allocation.pool}: {exc}") from None


def _reservation_name(a: Allocation) -> str:
    try:
        return ko.reservation_name(a.ip, a.version, a.space or "")
    except ko.ObjectError as exc:
        raise StoreRefused(str(exc)) from None


def _keys_of(pool, allocation: Allocation) -> list:
    """The allocation keys of ``pool`` that hold ``allocation``'s address for its container and interface."""
    return [e.key for e in pool.parsed.held[allocation.ip]
            if (e.allocation.container_id, e.allocation.ifname) == (allocation.container_id, allocation.ifname)]


def _same_attachment(held: Allocation, asked: Allocation) -> bool:
    """``held`` belongs to ``asked``'s attachment; a Go-written one (no network) matches any network."""
    return (held.container_id, held.ifname) == (asked.container_id, asked.ifname) and held.network in ("",
                                                                                                        asked.network)


def _reservation_of(r, held: Allocation) -> bool:
    """Whether reservation ``r`` is ``held``'s: the same container (ours record it), else the same pod and
    interface (Go's record only those; a pod keeps them across a sandbox restart)."""
    if r.ifname != held.ifname:
        return False
    return bool(r.container_id and r.container_id == held.container_id or r.podref and r.podref == held.pod)


def reservation_readings(name: str) -> list:
    """Every ``(space, version, ip)`` a reservation's name can stand for: ``<network_name>-<address>`` or
    ``<address>``, the address with ``:`` written as ``-`` (``NormalizeIP``).  A name can be read more than one
    way (``beef-fd00--1``: ``beef:fd00::1``, or ``fd00::1`` of network ``beef``); longest space last."""
    from ..net.addr import ip_address

    readings = []
    cuts = [-1] + [i for i, c in enumerate(name) if c == "-"]
    for cut in cuts:
        space, text = ("", name) if cut < 0 else (name[:cut], name[cut + 1:])
        if cut >= 0 and not space:
            continue
        try:
            ip = ip_address(text if "." in text and "-" not in text else text.replace("-", ":"))
        except ValueError:
            continue
        try:
            if ko.reservation_name(int(ip), ip.version, space) == name:
                readings.append((space, ip.version, int(ip)))
        except ko.ObjectError:
            continue
    return readings


def _created(obj: dict) -> float:
    """``metadata.creationTimestamp`` (RFC 3339, UTC, as kube-apiserver writes it) in seconds; 0 when absent."""
    import calendar
    import time

    text = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return 0.0


def _pause(client, attempt: int) -> None:
    """A jittered pause before patching a pool again: concurrent writers spread out instead of colliding."""
    import random

    client.sleep(random.uniform(0, min(MAX_PAUSE, PAUSE * 2 ** attempt)))
