"""The cluster store: allocations in etcd v3, one key per held address.

Layout under the prefix (default ``/cni-ipam/``)::

    pools/<pool>/<ip>                    the allocation record (JSON)
    spaces/<space>/<ip>                  the pool holding it, when overlapping checks are on
    attachments/<network>/<cid>/<ifname>/<pool>/<ip>   index for DEL and repeated ADD (a copy of the record)
    pods/<pod>/<ifname>/<pool>/<ip>      index for a pod's restarted sandbox (a copy of the record)
    hints/<pool>/<range>                 lowest address that may be free in a range
    hint-spaces/<space>/<range>          the hint key, for ranges sharing an address space

``<ip>`` is a family digit and the address in fixed-width hex, so keys sort
numerically.  A claim is one transaction that creates the pool key (and
the space key) only if absent, so two nodes can never hold one address;
nothing is written for a range until an address in it is used, and no key
grows with the range.  Segments are escaped so a ``/`` in a name cannot
move a key into another's prefix.

Round trips are what an ADD costs here, so an uncontended ADD makes two:
one read of everything the attachment may already hold and of the ranges'
hints (:meth:`EtcdStore.prefetch`), then per range the claim of the first
address from the hint on, which also moves the hint
(:meth:`EtcdStore.claim_else_held`).  Only when that address is taken (a
stale hint, or another node was faster) does the same transaction read the
held addresses from the hint on, pool and space together, for the next try.
Reading a hint also counts its pool's hints (up to the bound), so creating
one costs a further round trip only when it takes the pool past the bound.

In the node agent (``claims``, :class:`~cni_ipam.store.claims.Claims`,
shared by the agent's stores of these settings), an address another call of
the agent is claiming, or claimed in the last few seconds, reads as held
(:meth:`EtcdStore.held`, :meth:`EtcdStore.pending`): concurrent ADDs that
read one hint claim the next addresses from it, one each, instead of all
the same one; and a call never sends a claim of an address another call of
the agent is claiming.  The transaction's guard is still what makes a
duplicate impossible.  The allocator's memory of lost races
(:meth:`EtcdStore.kept`) lives there too.
"""

from __future__ import annotations

from .. import jsonlite as json  # the json module costs 8 ms per plugin call

from . import etcd_client as ec
from ..net import pool_version
from .base import MAX_HINTS_PER_POOL, Allocation, Store, StoreError, merge_unique

DEFAULT_PREFIX = "/cni-ipam/"
PAGE = 256


def seg(text: str) -> str:
    return text.replace("%", "%25").replace("/", "%2F")


def _unseg(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def ip_key(ip: int, version: int) -> str:
    return f"4{ip:08x}" if version == 4 else f"6{ip:032x}"


def ip_from_key(text: str) -> tuple:
    return int(text[1:], 16), int(text[0])


class _NoTransaction:
    """etcd needs no store-wide lock: every claim is atomic on its own."""

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        return self.store

    def __exit__(self, *exc):
        return False


class EtcdStore(Store):
    reads_whole = False  # held() pages through etcd: a contended allocator reads from its cursor on

    def __init__(self, client: "ec.EtcdClient", prefix: str = DEFAULT_PREFIX, claims=None) -> None:
        self.client = client
        self.claims = claims  # the agent's Claims shared by its calls; None: a plugin process, alone
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._hint_seen = {}  # hint key -> mod revision when last read
        self._hints_in_pool = {}  # pool -> its hint keys when last read, up to MAX_HINTS_PER_POOL
        self._prefetched = {}  # index prefix or hint key -> kvs read by prefetch(), used once
        try:
            client.authenticate()
        except (ec.EtcdUnavailable, ec.EtcdError) as exc:
            raise _store_error(exc) from None

    def _k(self, *parts: str) -> bytes:
        return (self.prefix + "/".join(parts)).encode()

    def _call(self, method, *args):
        try:
            return method(*args)
        except (ec.EtcdUnavailable, ec.EtcdError) as exc:
            raise _store_error(exc) from None

    # -- keys of one allocation ---------------------------------------------------

    def _pool_key(self, a: Allocation) -> bytes:
        return self._k("pools", seg(a.pool), ip_key(a.ip, a.version))

    def _space_key(self, a: Allocation) -> bytes:
        return self._k("spaces", seg(a.space), ip_key(a.ip, a.version))

    def _index_keys(self, a: Allocation) -> list:
        keys = [self._k("attachments", seg(a.network), seg(a.container_id), seg(a.ifname), seg(a.pool),
                        ip_key(a.ip, a.version))]
        if a.pod:
            keys.append(self._k("pods", seg(a.pod), seg(a.ifname), seg(a.pool), ip_key(a.ip, a.version)))
        return keys

    def transaction(self):
        return _NoTransaction(self)

    # -- Store verbs --------------------------------------------------------------------

    def _scan(self, base: bytes, lo: bytes, hi: bytes, first_page=None):
        start, end = base + lo, ec.prefix_end(base + hi)
        while True:
            kvs = first_page if first_page is not None else self._call(self.client.range, start, end, PAGE, True)
            first_page = None
            for kv in kvs:
                yield ip_from_key(kv["key"][len(base):].decode())[0]
            if len(kvs) < PAGE:
                return
            start = kvs[-1]["key"] + b"\x00"

    def _held_ranges(self, pool, space, lo, hi) -> tuple:
        """``(bases, lo key, hi key, ranges)``: the first page of the pool's and the space's keys in [lo, hi]."""
        version = pool_version(pool)
        lo_k, hi_k = ip_key(lo, version).encode(), ip_key(hi, version).encode()
        bases = [self._k("pools", seg(pool)) + b"/"]
        if space is not None:
            bases.append(self._k("spaces", seg(space)) + b"/")
        return bases, lo_k, hi_k, [(b + lo_k, ec.prefix_end(b + hi_k), PAGE, True) for b in bases]

    def _held_from(self, bases, lo_k, hi_k, pages):
        return merge_unique([self._scan(b, lo_k, hi_k, page) for b, page in zip(bases, pages)])

    def held(self, pool, space, lo, hi):
        """Pool and space addresses in [lo, hi]: the first page of both in one round trip; in the agent, with
        those its other calls are claiming (:meth:`pending`)."""
        bases, lo_k, hi_k, ranges = self._held_ranges(pool, space, lo, hi)
        return self._with_pending(self._held_from(bases, lo_k, hi_k, self._call(self.client.read, ranges)),
                                  pool, space, lo, hi)

    def _names(self, pool: str, space, version: int) -> tuple:
        """What an address is pending under in the agent's claims: its pool, and its address space."""
        return (("pool", pool),) + ((("space", space, version),) if space is not None else ())

    def pending(self, pool, space, lo, hi):
        """In the agent: addresses in [lo, hi] of the pool or its space that its other calls are claiming or
        claimed a moment ago (:mod:`.claims`), ascending, read from memory.  Alone: none."""
        if self.claims is None:
            return []
        found = set()
        for name in self._names(pool, space, pool_version(pool)):
            found |= self.claims.pending(name)
        return sorted(ip for ip in found if lo <= ip <= hi)

    def _with_pending(self, held, pool, space, lo, hi):
        return held if self.claims is None else merge_unique([held, self.pending(pool, space, lo, hi)])

    def _claiming(self, allocation: Allocation):
        """In the agent, the registration of the claim (a context manager), or None when another call of the
        agent is claiming the address: this one must not."""
        names = self._names(allocation.pool, allocation.space, allocation.version)
        return self.claims.claiming(names, allocation.ip, exclusive=True), names

    def kept(self):
        """In the agent, the allocator's memory shared by its calls (with the claims), so a node that lost a race
        lately claims from a cursor of its own.  Alone, none: a lost race picks among the next free addresses,
        as the plugin always did."""
        return None if self.claims is None else self.claims.kept

    def prefetch(self, network, container_id, ifname, pod, hints) -> None:
        """Read what an ADD looks at first, in one round trip: the attachment's and the pod's index
        entries and the ranges' hints (``hints``: ``(key, pool, space)`` per range)."""
        keys = [self._k("attachments", seg(network), seg(container_id), seg(ifname)) + b"/"]
        if pod:
            keys.append(self._k("pods", seg(pod), seg(ifname)) + b"/")
        ranges = [(k, ec.prefix_end(k), 0, False) for k in keys]
        hint_keys = [self._hint_key(*h) for h in hints]
        pools = list(dict.fromkeys(pool for _, pool, _ in hints))
        ranges += [(k, None, 0, False) for k in hint_keys] + [self._pool_hints_range(p) for p in pools]
        answers = self._call(self.client.read, ranges)
        for key, kvs in zip(keys + hint_keys, answers):
            self._prefetched[key] = kvs
        for pool, kvs in zip(pools, answers[len(keys) + len(hint_keys):]):
            self._hints_in_pool[pool] = len(kvs)

    def claim(self, allocation: Allocation, hint=None) -> bool:
        """Create the pool (and space) key if absent; with ``hint`` (key, value), move that hint in the same
        round trip if nobody moved it since we read it.  In the agent, False without a round trip when another
        call of the agent is claiming the address."""
        if self.claims is None:
            return self._claim(allocation, hint)[0]
        registration, names = self._claiming(allocation)
        if registration is None:
            return False
        with registration:
            claimed = self._claim(allocation, hint)[0]
            if claimed:
                self.claims.claimed(names, allocation.ip)  # before it stops being pending: no gap
        return claimed

    def claim_else_held(self, allocation: Allocation, hint, lo: int, hi: int):
        """:meth:`claim`, whose transaction reads, if the address is taken, the first page of :meth:`held` in
        [lo, hi] instead (etcd runs a transaction's ``failure`` operations when a compare fails): one round
        trip either way.  In the agent, when another call of the agent is claiming the address, only the read
        (this one claims nothing)."""
        pool, space = allocation.pool, allocation.space
        bases, lo_k, hi_k, ranges = self._held_ranges(pool, space, lo, hi)
        if self.claims is None:
            claimed, pages = self._claim(allocation, hint, ranges)
            return (True, None) if claimed else (False, self._held_from(bases, lo_k, hi_k, pages))
        registration, names = self._claiming(allocation)
        if registration is None:
            return False, self.held(pool, space, lo, hi)
        with registration:
            claimed, pages = self._claim(allocation, hint, ranges)
            if claimed:
                self.claims.claimed(names, allocation.ip)
        if claimed:
            return True, None
        return False, self._with_pending(self._held_from(bases, lo_k, hi_k, pages), pool, space, lo, hi)

    def _claim(self, allocation: Allocation, hint, reads=()) -> tuple:
        """``(claimed, pages)``: the claim's transaction; when it fails, its failure branch reads the pool key
        (our own claim, if a retried transaction finds it done, is recognised by its random ``claim``) and
        ``reads`` (``EtcdClient.read``'s ranges), whose key-value lists are ``pages``."""
        import posix
        import time

        allocation.created = allocation.created or time.time()
        record = allocation.to_dict()
        record["claim"] = posix.urandom(8).hex()  # recognises our own claim if a retried txn finds it done
        value = json.dumps(record).encode()
        compare = [ec.absent(self._pool_key(allocation))]
        success = [ec.put(self._pool_key(allocation), value)]
        if allocation.space is not None:
            compare.append(ec.absent(self._space_key(allocation)))
            success.append(ec.put(self._space_key(allocation), allocation.pool.encode()))
        success += [ec.put(key, value) for key in self._index_keys(allocation)]
        new_hint = hint is not None and not self._hint_seen.get(self._hint_key(hint[0], allocation.pool, None))
        if hint is not None:
            success.append(ec.nested(*self._hint_update(hint[0], allocation.pool, allocation.space, hint[1])))
        self._forget_indexes()
        failure = [ec.read_op(self._pool_key(allocation), None)] + [ec.read_op(*r) for r in reads]
        answer = self._call(self.client.txn, compare, success, failure)
        if answer["succeeded"]:
            if new_hint:
                self._hint_created(allocation.pool, hint[0])
            return True, None
        current, *pages = ec.read_results(answer)
        return bool(current) and json.loads(current[0]["value"]).get("claim") == record["claim"], pages

    def _read(self, allocation: Allocation):
        kv = self._call(self.client.get, self._pool_key(allocation))
        if kv is None:
            return None, None
        return _decode(kv["value"]), kv["mod_revision"]

    def release(self, allocation: Allocation) -> bool:
        """Delete the record, its indexes and its space key if unchanged since read; the read also fetches the
        hints of its pool and space (for :meth:`_lower_hints`), so a release costs one read and one delete."""
        self._forget_indexes()
        for _ in range(8):
            ranges = [(self._pool_key(allocation), None, 0, False)] + self._hints_ranges(allocation)
            kvs, hints, *pointers = self._call(self.client.read, ranges)
            if not kvs:
                return False
            held, revision = _decode(kvs[0]["value"]), kvs[0]["mod_revision"]
            if held.attachment != allocation.attachment:
                return False
            ops = [ec.delete(self._pool_key(held))] + [ec.delete(k) for k in self._index_keys(held)]
            if held.space is not None:
                ops.append(ec.delete(self._space_key(held)))
            if self._call(self.client.txn, [ec.unchanged(self._pool_key(held), revision)], ops)["succeeded"]:
                same = held.pool == allocation.pool and held.space == allocation.space
                if self.claims is not None:  # free again at once for the agent's other calls
                    self.claims.forget(self._names(held.pool, held.space, held.version), held.ip)
                self._lower_hints(held, (hints, pointers[0] if pointers else []) if same else None)
                return True
        raise StoreError(f"allocation {allocation.address} in {allocation.pool} kept changing; release not done",
                         retry=True)

    def _hints_ranges(self, a: Allocation) -> list:
        """``EtcdClient.read``'s ranges of every ``hints/<pool>/`` key of ``a``'s pool and, with a space, every
        ``hint-spaces/<space>/`` pointer."""
        bases = [self._k("hints", seg(a.pool)) + b"/"]
        if a.space is not None:
            bases.append(self._k("hint-spaces", seg(a.space)) + b"/")
        return [(base, ec.prefix_end(base), 0, False) for base in bases]

    def _lower_hints(self, held: Allocation, read=None) -> None:
        """Make a freed address the first candidate again in every range of its pool and space.

        ``read``: ``(hints of the pool, hint-spaces pointers of the space)`` as
        read with the record; else they are read here.  A pointer to a hint
        of another pool is followed with one more read.  Only the order of
        allocation depends on this: a missed update never makes a held
        address look free (each update is made only if the hint is unchanged).
        """
        if read is None:
            hints, *pointers = self._call(self.client.read, self._hints_ranges(held))
            read = hints, pointers[0] if pointers else []
        hints, pointers = read
        hints = list(hints)
        known = {h["key"] for h in hints}
        others = [p["value"] for p in pointers if p["value"] not in known]
        if others:
            for kvs in self._call(self.client.read, [(key, None, 0, False) for key in dict.fromkeys(others)]):
                hints += kvs
        for kv in hints:
            hint = json.loads(kv["value"])
            value, version = ip_from_key(hint["value"])
            if version == held.version and value > held.ip:
                hint["value"] = ip_key(held.ip, held.version)
                self._call(self.client.txn, [ec.unchanged(kv["key"], kv["mod_revision"])],
                           [ec.put(kv["key"], json.dumps(hint).encode())])

    def update_owner(self, allocation, container_id, netns):
        self._forget_indexes()
        for _ in range(8):
            held, revision = self._read(allocation)
            if held is None or held.attachment != allocation.attachment:
                return False  # released (and maybe claimed again) since the caller read it
            old_index = self._index_keys(held)
            held.container_id, held.netns = container_id, netns
            new_index = self._index_keys(held)
            record = json.dumps(held.to_dict()).encode()
            ops = [ec.delete(k) for k in old_index if k not in new_index]  # etcd refuses a key twice in a txn
            ops += [ec.put(k, record) for k in [self._pool_key(held)] + new_index]
            if self._call(self.client.txn, [ec.unchanged(self._pool_key(held), revision)], ops)["succeeded"]:
                allocation.container_id, allocation.netns = container_id, netns
                return True
        raise StoreError(f"allocation {allocation.address} in {allocation.pool} kept changing; owner not moved",
                         retry=True)

    def find(self, network=None, container_id=None, ifname=None, pod=None):
        if network is not None and container_id is not None and ifname is not None:
            base = self._k("attachments", seg(network), seg(container_id), seg(ifname)) + b"/"
            found = self._from_index(base)
        elif pod is not None and ifname is not None:
            found = self._from_index(self._k("pods", seg(pod), seg(ifname)) + b"/")
        else:
            found = self.allocations()
        return [a for a in found
                if (network is None or a.network == network) and (container_id is None or a.container_id == container_id)
                and (ifname is None or a.ifname == ifname) and (pod is None or a.pod == pod)]

    def _forget_indexes(self) -> None:
        """After a write, prefetched index entries may be out of date; prefetched hints are only advice."""
        hints = self._k("hints")
        self._prefetched = {k: v for k, v in self._prefetched.items() if k.startswith(hints)}

    def _from_index(self, base: bytes) -> list:
        """Index entries carry a copy of the record; an empty one (older layout) is looked up."""
        kvs = self._prefetched.get(base)
        if kvs is None:
            kvs = self._call(self.client.prefix, base)
        found = []
        for kv in kvs:
            if kv["value"]:
                found.append(_decode(kv["value"]))
                continue
            pool_seg, ipk = kv["key"][len(base):].decode().rsplit("/", 1)
            record = self._call(self.client.get, self._k("pools", pool_seg, ipk))
            if record is not None:
                found.append(_decode(record["value"]))
        return found

    def _section(self, section: str) -> list:
        """Every key (with its value) under ``<prefix><section>/``, a page at a time."""
        base = self._k(section) + b"/"
        start, end, found = base, ec.prefix_end(base), []
        while True:
            kvs = self._call(self.client.range, start, end, PAGE)
            found += kvs
            if len(kvs) < PAGE:
                return found
            start = kvs[-1]["key"] + b"\x00"

    def allocations(self):
        found = [_decode(kv["value"]) for kv in self._section("pools")]
        return sorted(found, key=lambda a: (a.pool, a.version, a.ip))

    def unbacked_reservations(self):
        """``spaces/`` keys whose address no allocation of that space holds.

        The space keys are read before the records: a claim or release of
        the address after that read changes the key's revision, and
        :meth:`drop_reservation` then leaves it alone.
        """
        from .etcd_verify import unbacked

        spaces = self._section("spaces")
        return unbacked(self, spaces, self.allocations())

    def drop_reservation(self, reservation) -> bool:
        key = self._k("spaces", seg(reservation.space), ip_key(reservation.ip, reservation.version))
        if not self._call(self.client.txn, [ec.unchanged(key, reservation.token)], [ec.delete(key)])["succeeded"]:
            return False
        self._lower_hints(Allocation(reservation.pool, reservation.ip, reservation.version, "", "", "",
                                     space=reservation.space))  # the address is a first candidate again
        return True

    def _hint_key(self, key: str, pool: str, space) -> bytes:
        return self._k("hints", seg(pool), seg(key))

    def _pool_hints_range(self, pool: str) -> tuple:
        """A read of the pool's hint keys, enough of them to tell whether one more passes the bound."""
        base = self._k("hints", seg(pool)) + b"/"
        return base, ec.prefix_end(base), MAX_HINTS_PER_POOL, True

    def hint(self, key, pool, space):
        """The hint, and (in the same round trip) how many hints its pool holds, for :meth:`_hint_created`."""
        hint_key = self._hint_key(key, pool, space)
        if hint_key in self._prefetched:
            kvs = self._prefetched.pop(hint_key)
        else:
            kvs, in_pool = self._call(self.client.read, [(hint_key, None, 0, False), self._pool_hints_range(pool)])
            self._hints_in_pool[pool] = len(in_pool)
        kv = kvs[0] if kvs else None
        self._hint_seen[hint_key] = kv["mod_revision"] if kv else 0
        return ip_from_key(json.loads(kv["value"])["value"])[0] if kv else None

    def set_hint(self, key, pool, space, value):
        """Raise the hint only if nobody moved it since we read it (a release may have lowered it)."""
        new = not self._hint_seen.get(self._hint_key(key, pool, space))
        if self._call(self.client.txn, *self._hint_update(key, pool, space, value))["succeeded"] and new:
            self._hint_created(pool, key)

    def _hint_created(self, pool: str, key: str) -> None:
        """After creating hint ``key``: prune the pool only if the last read of its hints (:meth:`hint`) says it
        now holds more than :data:`MAX_HINTS_PER_POOL`, or if its hints were never read.  Creators racing past
        the bound leave a few more; the next creation prunes them."""
        count = self._hints_in_pool.get(pool, MAX_HINTS_PER_POOL) + 1
        self._hints_in_pool[pool] = count
        if count > MAX_HINTS_PER_POOL:
            self._prune_hints(pool, key)

    def _prune_hints(self, pool: str, kept: str) -> None:
        """Past :data:`MAX_HINTS_PER_POOL` in the pool, drop its hints but ``kept`` and their ``hint-spaces/``
        pointers (the space of a pool's hints is its network name, when it has one)."""
        from ..net import split_pool

        base = self._k("hints", seg(pool)) + b"/"
        keys = [kv["key"] for kv in self._call(self.client.range, base, ec.prefix_end(base), 0, True)]
        if len(keys) <= MAX_HINTS_PER_POOL:
            self._hints_in_pool[pool] = len(keys)
            return
        space = seg(split_pool(pool)[0])
        ops = []
        for key in keys:
            key_seg = key[len(base):].decode()
            if key_seg != seg(kept):
                ops += [ec.delete(key), ec.delete(self._k("hint-spaces", space, key_seg))]
        self._call(self.client.txn, [], ops)
        self._hints_in_pool[pool] = 1

    def list_hints(self):
        """``hints/<pool>/<key>``, with the space from the ``hint-spaces/`` pointers."""
        spaces = {}
        base = self._k("hint-spaces") + b"/"
        for kv in self._call(self.client.prefix, base):
            spaces[kv["value"]] = _unseg(kv["key"][len(base):].decode().rsplit("/", 1)[0])
        base = self._k("hints") + b"/"
        found = []
        for kv in self._call(self.client.prefix, base):
            pool_seg, key_seg = kv["key"][len(base):].decode().split("/", 1)
            value = ip_from_key(json.loads(kv["value"])["value"])[0]
            found.append((_unseg(key_seg), _unseg(pool_seg), spaces.get(kv["key"]), value))
        return sorted(found)

    def _hint_update(self, key, pool, space, value) -> tuple:
        """(compare, operations) that move a hint unless it changed since :meth:`hint` read it."""
        version = pool_version(pool)
        hint_key = self._hint_key(key, pool, space)
        seen = self._hint_seen.get(hint_key, 0)
        compare = [ec.unchanged(hint_key, seen)] if seen else [ec.absent(hint_key)]
        ops = [ec.put(hint_key, json.dumps({"value": ip_key(value, version)}).encode())]
        if space is not None:
            ops.append(ec.put(self._k("hint-spaces", seg(space), seg(key)), hint_key))
        return compare, ops

    # -- consistency check (cni-ipam verify) -------------------------------------------------------

    def check(self, progress=None) -> list:
        """``cni-ipam verify``'s check and repairs (:mod:`.etcd_verify`, loaded here only: no plugin command
        checks)."""
        from . import etcd_verify

        return etcd_verify.check(self, progress)

    def close(self) -> None:
        self.client.close()


def _decode(value: bytes) -> Allocation:
    return Allocation.from_dict(json.loads(value))


def _store_error(exc) -> StoreError:
    return StoreError(str(exc), retry=isinstance(exc, ec.EtcdUnavailable))
