"""The node agent's copy of the namespace's IPPools, kept current by a LIST and a WATCH (issue 15).

A plugin command LISTs the IPPools once (:mod:`cni_ipam.store.kubernetes`);
in the agent, which serves every call of its node, that LIST was one round
trip of every ADD.  Here one thread per store settings lists them once and
then watches them, as client-go's reflector does
(kubernetes/client-go tools/cache/reflector.go: list, then watch from the
list's resourceVersion): a broken watch resumes from the last
resourceVersion it saw; one answered 410 Expired (compacted) lists again.
An ADD reads the pools from here while the watch is open (:meth:`PoolCache.pools`), else it LISTs as
before.

:class:`PoolCache` is the merge, pure but for its lock: watch events, LISTs
and the answers to our own writes (the whole pool as committed) all go in,
and an object never replaces a newer one (resourceVersions are compared as
the integers kube-apiserver's etcd storage makes them; a deletion is kept
as a tombstone at its version until a LIST at or past it).  A stale copy is
safe for claims: every write is guarded by JSON Patch ``test``s, so it only
costs a 422 and a read.  What a stale copy could get wrong, the store
checks: :func:`held_elsewhere` (a claim's answer shows the attachment
already held an address there) and a fresh read of a pool before an ADD
returns what the copy says the attachment holds.
"""

from __future__ import annotations

EXPIRED = 410
WATCH_SECONDS = 300  # one watch request; the server ends it, and it is opened again from where it was


def version_of(obj) -> int | None:
    """An object's resourceVersion as an integer; None when it has none that reads as one."""
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def name_of(obj) -> str:
    return str(((obj or {}).get("metadata") or {}).get("name") or "")


class PoolCache:
    """IPPool name -> object, merged from LISTs, watch events and our writes' answers, never older over newer.

    ``synced``: a watch is open from a LIST this holds, so what the API server commits arrives here in
    order; only then do ADDs read from it.  Shared by the threads of the agent and its watch."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._objects = {}  # name -> the newest object known
        self._versions = {}  # name -> resourceVersion of the newest state known (an object, or its deletion)
        self.version = None  # resourceVersion to watch from (the last LIST's, then the last event's); None: LIST
        self.synced = False

    def _put(self, obj, ordered: bool, name: str = "") -> None:
        """``ordered``: from the watch or a LIST, in the server's order (applied even without a version)."""
        name, version = name or name_of(obj), version_of(obj)
        if not name:
            return
        known = self._versions.get(name)
        if version is None:
            if not ordered:
                return  # an answer we cannot order: the watch brings it
        elif known is not None and known >= version:
            return  # older than what is here
        self._objects[name] = obj
        if version is not None:
            self._versions[name] = version

    def _drop(self, name: str, version) -> None:
        known = self._versions.get(name)
        if version is not None and known is not None and known > version:
            return  # re-created since
        self._objects.pop(name, None)
        self._versions[name] = version if version is not None else (known or 0)

    def listed(self, items: list, version: str) -> None:
        """A LIST at ``version``: its objects, and the deletion of every object it lacks that is no newer."""
        try:
            at = int(version)
        except (TypeError, ValueError):
            at = None
        with self._lock:
            names = set()
            for obj in items:
                names.add(name_of(obj))
                self._put(obj, True)
            for name in list(self._versions):
                if name in names:
                    continue
                known = self._versions[name]
                if at is None or known <= at:  # gone by the LIST (or deleted before it: no tombstone needed)
                    self._objects.pop(name, None)
                    del self._versions[name]
            self.version = version

    def event(self, kind: str, obj: dict) -> None:
        """One watch event (ADDED, MODIFIED, DELETED; BOOKMARK only moves the version)."""
        with self._lock:
            if kind == "DELETED":
                self._drop(name_of(obj), version_of(obj))
            elif kind in ("ADDED", "MODIFIED"):
                self._put(obj, True)
            version = ((obj or {}).get("metadata") or {}).get("resourceVersion")
            if version:
                self.version = str(version)

    def seen(self, name: str, obj) -> None:
        """The pool as one of our writes committed it, or as read (None: not found)."""
        with self._lock:
            if obj is None:
                self._drop(name, None)
            else:
                self._put(obj, False, name)

    def get(self, name: str):
        with self._lock:
            return self._objects.get(name)

    def pools(self):
        """Name -> object of every pool while synced; None when not (the caller LISTs)."""
        with self._lock:
            return dict(self._objects) if self.synced else None

    def mark_synced(self) -> None:
        with self._lock:
            self.synced = True

    def unsynced(self, relist: bool = False) -> None:
        with self._lock:
            self.synced = False
            if relist:
                self.version = None


def held_elsewhere(pool, allocation, busy=()) -> list:
    """What a pool read fresh holds for ``allocation``'s attachment at other addresses than the one just
    claimed (the same rules as the allocator's repeated ADD: the attachment, else the same pod and
    interface), except addresses in ``busy`` (being claimed by the agent's other calls right now).

    After a claim decided on the cached pools, anything here was written where the cache had not seen it
    yet (a plugin that ran without the agent, Go whereabouts): the ADD must be decided again on a fresh read."""
    from .kube_pools import same_attachment

    out = []
    for held in pool.allocations:
        if held.ip == allocation.ip or held.ip in busy or held.network not in ("", allocation.network):
            continue
        if same_attachment(held, allocation) or (allocation.pod and held.pod == allocation.pod
                                                 and held.ifname == allocation.ifname):
            out.append(held)
    return out


class PoolWatch:
    """The thread that keeps a :class:`PoolCache` current: LIST, then WATCH from its resourceVersion.

    ``client``: a :class:`~cni_ipam.kube.client.KubeClient` of its own (a watch holds its connection).
    ``note(event, **fields)`` logs (the agent's log)."""

    def __init__(self, cache: PoolCache, client, note=None, seconds: int = WATCH_SECONDS) -> None:
        import threading

        self.cache = cache
        self.client = client
        self.note = note or (lambda event, **fields: None)
        self.seconds = seconds
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="ippool-watch", daemon=True)

    def start(self) -> "PoolWatch":
        self.thread.start()
        return self

    def close(self) -> None:
        """Stop: end the watch request under way (its socket shut down), and the thread with it."""
        import _socket

        self.stop.set()
        connection = self.client.connection
        raw = getattr(connection, "raw", None)
        if raw is not None:
            try:
                raw.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread.is_alive():
            self.thread.join(5)
        self.client.close()

    def run(self) -> None:
        from ..kube.client import KubeError, KubeUnavailable

        import time

        failures = 0
        while not self.stop.is_set():
            listed = False
            try:
                if self.cache.version is None:
                    self.relist()
                    listed = True
                began = time.monotonic()
                self.follow()
                if time.monotonic() - began < 1.0:  # ended at once: never spin on a server that does that
                    failures = self._backoff(failures, ValueError("the watch ended as soon as it began"))
                else:
                    failures = 0
            except KubeError as exc:
                self.cache.unsynced(relist=exc.code == EXPIRED)
                if self.stop.is_set():
                    break
                if exc.code == EXPIRED:
                    self.note("pool-watch-expired", why=exc.message)
                    if not listed:  # list again at once; a 410 right after a LIST backs off first
                        continue
                failures = self._backoff(failures, exc)
            except (KubeUnavailable, OSError, ValueError) as exc:  # broken stream, garbled event, server down
                self.cache.unsynced()
                if self.stop.is_set():
                    break
                failures = self._backoff(failures, exc)
            except Exception as exc:  # noqa: BLE001 -- the watch outlives any error; ADDs list meanwhile
                self.cache.unsynced(relist=True)
                if self.stop.is_set():
                    break
                failures = self._backoff(failures, exc)
        self.cache.unsynced()

    def _backoff(self, failures: int, exc) -> int:
        import random

        delay = min(30.0, 0.5 * 2 ** failures) * (0.5 + random.random() / 2)
        self.note("pool-watch-error", error=f"{type(exc).__name__}: {exc}", retry_in_seconds=round(delay, 3),
                  resource_version=self.cache.version)
        self.stop.wait(delay)
        return failures + 1

    def relist(self) -> None:
        from ..kube import objects as ko

        listed = self.client.list(ko.API_VERSION, ko.IPPOOLS)
        version = (listed.get("metadata") or {}).get("resourceVersion")
        self.cache.listed(listed.get("items") or [], version)
        self.note("pool-watch-listed", pools=len(listed.get("items") or []), resource_version=version)

    def follow(self) -> None:
        """One watch request from the cache's version, its events into the cache until the server ends it."""
        from ..kube import objects as ko

        events = self.client.watch(ko.API_VERSION, ko.IPPOOLS, self.cache.version, self.seconds)
        try:
            for kind, obj in events:
                if kind is None:  # the server took the watch: what it commits from now on comes here
                    self.cache.mark_synced()
                    continue
                self.cache.event(kind, obj)
                if self.stop.is_set():
                    return
        finally:
            events.close()
            self.cache.unsynced()
