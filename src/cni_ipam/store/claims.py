"""What the node agent's concurrent calls share about their claims, whatever the store: the addresses being
claimed, those just claimed, and the allocator's memory.

In the agent, many ADDs on one range run at once, each with its own store.
Each reads the same starting point (the range's hint, or its lowest free
address) and, left alone, all claim the same address: one wins, the others
lose a race to their own agent and try again (measured on etcd at 64-way:
6.6-7 transactions per ADD instead of 2).  Through :class:`Claims`, shared
by the stores the agent opens with the same settings, an address one call
is claiming (:meth:`Claims.claiming`) or has just claimed
(:meth:`Claims.claimed`, for :data:`RECENT` seconds: a hint read meanwhile
may still point below it) reads as :meth:`~Claims.pending` to the others,
which pass it by.  ``kept`` is the allocator's memory across calls
(:meth:`~cni_ipam.store.base.AllocatorStore.kept`).  The plugin process has
none of this: it claims alone.  Names are the store's own (an IPPool name,
or a pool and an address space): addresses are per name.
"""

from __future__ import annotations

RECENT = 5.0  # seconds an address this agent claimed reads as pending (a lagging hint may point below it)
RECENT_MAX = 4096  # per name: the newest kept, so memory stays bounded however fast ADDs come


class Claims:
    """The agent's claims under way and just made, per name, shared by its threads."""

    def __init__(self) -> None:
        import threading

        self._claims_lock = threading.Lock()
        self._claiming = {}  # name -> [address] of the claims under way (one entry per claim)
        self._recent = {}  # name -> {address: clock when claimed}, oldest first
        self.kept = {}  # the allocator's memory across the agent's calls (AllocatorStore.kept): a few per range

    def close(self) -> None:
        """Nothing to stop (the agent stops); :class:`~cni_ipam.store.kube_batch.PoolBatches` stops its watch."""

    def claiming(self, names, ip: int, exclusive: bool = False):
        """For the whole of a claim: the address reads as :meth:`pending` under each of ``names``.  With
        ``exclusive``, None (nothing registered) when it already does: another call has it."""
        import contextlib

        with self._claims_lock:
            if exclusive and any(ip in self._claiming.get(n, ()) or ip in self._recent.get(n, ()) for n in names):
                return None
            for name in names:
                self._claiming.setdefault(name, []).append(ip)

        @contextlib.contextmanager
        def held():
            try:
                yield
            finally:
                with self._claims_lock:
                    for name in names:
                        self._claiming[name].remove(ip)
                        if not self._claiming[name]:
                            del self._claiming[name]
        return held()

    def claimed(self, names, ip: int, now: float | None = None) -> None:
        """A claim of the address succeeded: it reads as pending for :data:`RECENT` seconds more."""
        now = _clock() if now is None else now
        with self._claims_lock:
            for name in names:
                recent = self._recent.setdefault(name, {})
                recent.pop(ip, None)
                recent[ip] = now
                _prune(recent, now)

    def forget(self, names, ip: int) -> None:
        """The address was released: it is free again at once."""
        with self._claims_lock:
            for name in names:
                self._recent.get(name, {}).pop(ip, None)

    def pending(self, name, now: float | None = None) -> set:
        """Addresses of ``name`` that calls of this agent are claiming or just claimed: an allocator choosing
        now passes them by, so concurrent calls pick different addresses."""
        now = _clock() if now is None else now
        with self._claims_lock:
            found = set(self._claiming.get(name, ()))
            recent = self._recent.get(name)
            if recent:
                _prune(recent, now)
                found.update(recent)
            return found


def _prune(recent: dict, now: float) -> None:
    """Drop the entries older than :data:`RECENT`, and the oldest past :data:`RECENT_MAX` (oldest first)."""
    while recent:
        ip, at = next(iter(recent.items()))
        if now - at < RECENT and len(recent) <= RECENT_MAX:
            return
        del recent[ip]


def _clock() -> float:
    import time

    return time.monotonic()
