"""Group commit of IPPool claims in the node agent: claims made at once for one pool go out as one patch.

In the agent, concurrent ADDs each hold their own
:class:`~cni_ipam.store.kubernetes.KubernetesStore`; each patching the pool
on its own, N of them at once on one pool send N patches, each a rewrite of
the whole object (and, where a patch must test ``resourceVersion``, fail
each other's test and retry).  Through :class:`PoolBatches`, shared by the
stores the agent opens with the same settings, a claim joins its pool's
queue instead; one caller at a time per pool (the leader) takes the whole
queue and writes it as one patch (each claim's key and annotation guarded by
its own ``test``), while the next claims queue up behind it.  The pool as
last written or read is kept here, so the leader patches without reading it
first; a conflict (422: a key or annotation changed under us) reads it again.

What is written is decided by :func:`plan`, pure: an address the pool
already holds loses its claim (when read fresh; as cached, it is read again
first), and so does a second claim of one address in one batch.  A lost
claim makes its allocator try another address, as a race lost to another
node does.  The I/O of a batch (patch, read, pause) is the leader store's
(:meth:`KubernetesStore._commit_batch`); each claim's outcome reaches its
own caller only.  The plugin process has no batches: it patches alone.
"""

from __future__ import annotations

from .claims import Claims
from .kube_pools import same_attachment

COMMITTED = "committed"  # the pool holds the claim: written by this batch, or found there after a lost answer
LOST = "lost"  # the address is someone else's: the caller tries another
GONE = "gone"  # the pool does not exist (deleted meanwhile): the caller creates it


class Want:
    """One claim waiting for its batch: the allocation, its key in the pool, and, once decided, the
    ``outcome`` (or ``error``, a StoreError for this caller) and ``pool`` (the pool object it was decided on)."""

    __slots__ = ("allocation", "key", "outcome", "error", "pool")

    def __init__(self, allocation, key: str) -> None:
        self.allocation = allocation
        self.key = key
        self.outcome = None
        self.error = None
        self.pool = None

    @property
    def decided(self) -> bool:
        return self.outcome is not None or self.error is not None


class Plan:
    """What to do with a batch, given a pool: ``write`` these, these are ``lost``, these are ``done`` (the
    pool already holds them for their own attachment), and ``recheck``: held in a cached pool, read it again."""

    __slots__ = ("write", "lost", "done", "recheck")

    def __init__(self) -> None:
        self.write, self.lost, self.done, self.recheck = [], [], [], []


def plan(holding, wants: list, fresh: bool) -> Plan:
    """Sort ``wants`` by what the pool holds: ``holding(ip)`` lists the allocations holding an address.

    On a ``fresh`` pool (read after these claims were first tried) a held address is decided: its own
    attachment's is done (a write whose answer was lost), anyone else's is lost.  On a cached pool it may
    have been released since, and a stale "done" would hand out an address nothing holds: recheck.  Of two
    claims of one address in the batch, the first is written and the second lost."""
    out = Plan()
    taken = set()
    for want in wants:
        ip = want.allocation.ip
        holders = holding(ip)
        if holders:
            if not fresh:
                out.recheck.append(want)
            elif any(same_attachment(h, want.allocation) for h in holders):
                out.done.append(want)
            else:
                out.lost.append(want)
        elif ip in taken:
            out.lost.append(want)
        else:
            taken.add(ip)
            out.write.append(want)
    return out


class PoolBatches(Claims):
    """The agent's queues of claims, one per IPPool name, and the pools as last seen (shared by threads).
    As :class:`~cni_ipam.store.claims.Claims`, the addresses its calls are claiming (``claiming``/``pending``,
    by IPPool name) and the allocator's memory (``kept``).

    :meth:`submit` queues a claim and returns once it is decided.  Whoever finds its pool idle becomes the
    leader: it takes everything queued for the pool and calls ``commit(name, wants)`` (its own store's), then
    wakes the others; claims queued meanwhile go in the next batch."""

    def __init__(self, watch: bool = False, note=None) -> None:
        import threading

        from .kube_cache import PoolCache

        self._changed = threading.Condition()
        self._queues = {}  # pool name -> [Want] waiting for the next batch
        self._writing = {}  # pool name -> [Want] of the batch being written
        self.cache = PoolCache()  # the IPPools as last written, read or watched (:mod:`.kube_cache`)
        self._watch = watch  # keep the cache current with a LIST+WATCH (the agent), started by the first ADD
        self._watcher = None
        self._note = note
        super().__init__()

    def submit(self, name: str, want: Want, commit) -> Want:
        with self._changed:
            self._queues.setdefault(name, []).append(want)
            while not want.decided and name in self._writing:
                self._changed.wait()
            if want.decided:
                return want
            batch = self._writing[name] = self._queues.pop(name)  # ours is in it: lead this batch
        try:
            commit(name, batch)
        except Exception as exc:  # noqa: BLE001 -- whatever it was, no caller of this batch may hang
            from .base import StoreError

            for other in batch:
                if not other.decided:
                    other.error = StoreError(f"{type(exc).__name__}: {exc}", retry=getattr(exc, "retry", False))
        finally:
            with self._changed:
                del self._writing[name]
                for other in batch:
                    if not other.decided:  # commit() decides each; never leave one waiting
                        from .base import StoreError

                        other.error = StoreError(f"IPPool {name}: the claim of {other.allocation.address} was "
                                                 f"not decided", retry=True)
                self._changed.notify_all()
        return want

    def cached(self, name: str):
        return self.cache.get(name)

    def seen(self, name: str, obj) -> None:
        """The pool as just written or read (None: it does not exist); the next batch patches it.  Never
        replaces a newer one (resourceVersion)."""
        self.cache.seen(name, obj)

    def watched(self, client):
        """Every IPPool object by name, from the watched cache; None while the watch is not synced (or not
        started: the first call starts it, with ``client()``, a KubeClient of its own), and always None
        without ``watch``."""
        if not self._watch:
            return None
        with self._changed:
            if self._watcher is None:
                from .kube_cache import PoolWatch

                self._watcher = PoolWatch(self.cache, client(), self._note).start()
        return self.cache.pools()

    def close(self) -> None:
        """Stop the watch (the agent stops)."""
        with self._changed:
            watcher, self._watcher, self._watch = self._watcher, None, False
        if watcher is not None:
            watcher.close()
