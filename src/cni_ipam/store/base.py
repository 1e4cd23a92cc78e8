"""What the whereabouts allocator, the reconciler and the admin commands need from storage, and the record it
stores.

A store keeps *allocations*: one address of one pool held by one attachment
(network name, container ID, interface).  Two uniqueness rules make an
address "held":

* in its **pool** (``<network_name>/<range CIDR>``), always;
* in its **address space** (the ``network_name``) when the range has
  overlapping-range checks on (``enable_overlapping_ranges``, the default),
  so that every range of that network shares one set of addresses.

:meth:`AllocatorStore.claim` enforces both atomically; the allocator only
proposes candidates.  Stores also keep a *hint* per range: an address below
which everything is held, so finding the lowest free address costs the same
in an empty range and in a full one.  A stale hint can only change which
free address is chosen, never hand out a held one.  Hints are keyed by the
range's whole definition, so every distinct ``exclude`` list makes a new
one: a store keeps at most :data:`MAX_HINTS_PER_POOL` per pool (creating
one more drops the pool's others, which costs their ranges one scan from
the start), so hints cannot grow without bound.

The interface is split by caller: :class:`AllocatorStore` holds the verbs of
one plugin command, :class:`MaintenanceStore` what the reconciler and the
admin commands add (the whole store, unbacked claims, the backend's own
consistency check).  A backend (:class:`Store`) implements both;
:mod:`cni_ipam.store` opens the one a config names.
"""

from __future__ import annotations

MAX_HINTS_PER_POOL = 16


class Allocation:
    """One held address and who holds it."""

    __slots__ = ("pool", "space", "ip", "version", "network", "container_id", "ifname",
                 "pod", "netns", "node", "created")

    def __init__(self, pool: str, ip: int, version: int, network: str, container_id: str, ifname: str,
                 space: str | None = None, pod: str = "", netns: str = "", node: str = "", created: float = 0.0):
        self.pool = pool
        self.space = space
        self.ip = ip
        self.version = version
        self.network = network
        self.container_id = container_id
        self.ifname = ifname
        self.pod = pod  # "namespace/name" from CNI_ARGS; the name alone from podman; "" when the runtime gives none
        self.netns = netns
        self.node = node
        self.created = created

    @property
    def address(self) -> str:
        from ..net.addr import Address

        return str(Address(self.ip, self.version))

    @property
    def attachment(self) -> tuple:
        return (self.network, self.container_id, self.ifname)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["ip"] = self.address
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Allocation":
        from ..net.addr import ip_address

        ip = ip_address(data["ip"])
        fields = {k: data[k] for k in cls.__slots__ if k in data and k not in ("ip", "version")}
        return cls(ip=int(ip), version=ip.version, **fields)

    def __eq__(self, other):
        return isinstance(other, Allocation) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self):
        return (f"Allocation({self.pool} {self.address} space={self.space!r} "
                f"{self.network}/{self.container_id[:12]}/{self.ifname} pod={self.pod!r})")


class Reservation:
    """An address-space claim (``space``, address) and the pool it names; ``token`` is the backend's own."""

    __slots__ = ("space", "ip", "version", "pool", "token")

    def __init__(self, space: str, ip: int, version: int, pool: str = "", token=None) -> None:
        self.space = space
        self.ip = ip
        self.version = version
        self.pool = pool
        self.token = token

    @property
    def address(self) -> str:
        from ..net.addr import Address

        return str(Address(self.ip, self.version))

    def __repr__(self):
        return f"Reservation({self.space!r} {self.address} pool={self.pool!r})"


def merge_unique(iterators):
    """Ascending addresses from several ascending sources (a pool and its space), each once.

    A k-way merge on ``_heapq``, the C module: ``heapq.merge`` is Python in ``heapq.py``, 0.2 ms a call to
    import.  Sources are read lazily, one address at a time, as they page through the store.
    """
    from _heapq import heapify, heappop, heapreplace

    heap = []
    for order, source in enumerate(map(iter, iterators)):
        for first in source:
            heap.append((first, order, source))
            break
    heapify(heap)
    last = None
    while heap:
        ip, order, source = heap[0]
        if ip != last:
            yield ip
            last = ip
        for following in source:
            heapreplace(heap, (following, order, source))
            break
        else:
            heappop(heap)


class StoreError(Exception):
    """The store cannot be used (opened, reached, written).  ``retry`` says whether a retry may help."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class StaleRead(StoreError):
    """A decision made on a cached read (the node agent's copy of the Kubernetes IPPools) was wrong for this
    call: a claim's answer showed the attachment already held an address the copy had not seen yet.  The
    claim is given back before this is raised; the caller decides again, on a fresh read."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=True)


class StoreRefused(StoreError):
    """The backend's format cannot hold what was asked (an address or a name it has no way to write):
    the config must change, retrying will not help."""


class AllocatorStore:
    """What the allocator needs: the verbs of one plugin command (host-local's small ``backend.Store``,
    containernetworking/plugins plugins/ipam/host-local/backend/store.go).

    ``transaction()`` groups the calls of one plugin command: the SQLite store
    serializes them across processes, the etcd store makes each claim atomic
    on its own.
    """

    reads_whole = True  # held() over a whole range is cheap (read in memory, or local): see Contention

    def transaction(self):
        raise NotImplementedError

    def pending(self, pool: str, space: str | None, lo: int, hi: int):
        """Addresses in ``[lo, hi]`` that calls sharing this store's memory (the node agent's) are claiming or
        just claimed, ascending, known without a round trip: the allocator's first guess passes them by.
        :meth:`held` includes them.  None by default (a store alone)."""
        return ()

    def held(self, pool: str, space: str | None, lo: int, hi: int):
        """Held addresses in ``[lo, hi]`` of ``pool`` (and of ``space`` if given), ascending."""
        raise NotImplementedError

    def claim(self, allocation: Allocation, hint=None) -> bool:
        """Record ``allocation`` unless its address is held; False if it was.

        ``hint``, a ``(key, value)`` pair, is set as by :meth:`set_hint` when
        the claim succeeds (a networked store does both in one round trip).
        """
        raise NotImplementedError

    def claim_else_held(self, allocation: Allocation, hint, lo: int, hi: int):
        """:meth:`claim` with ``hint``; if the address was held, also :meth:`held` over ``[lo, hi]``, as it was
        when the claim failed: ``(True, None)`` or ``(False, held)``.

        A networked store does both in one round trip, so the allocator
        claims the first candidate from the hint on without reading first,
        and reads only when that address is taken.  None (the default): no
        such shortcut, the allocator reads first.
        """
        return None

    def prefetch(self, network: str, container_id: str, ifname: str, pod: str, hints: list) -> None:
        """A hint that an ADD is about to ask for this attachment, this pod and these hints
        (``(key, pool, space)``); a networked store reads them in one round trip."""

    def kept(self) -> dict | None:
        """Where the allocator keeps what it learns of contention (:class:`cni_ipam.allocator.Contention`): one
        dict for every call a store kept open serves, so it outlives the call.  None (the default): kept
        nowhere, every ADD starts from the lowest free address."""
        return None

    def release(self, allocation: Allocation) -> bool:
        """Forget ``allocation`` (same pool, address and attachment); False if it was not there."""
        raise NotImplementedError

    def update_owner(self, allocation: Allocation, container_id: str, netns: str) -> bool:
        """A restarted sandbox keeps its pod's address under a new container ID.

        False, changing nothing, when ``allocation``'s attachment no longer
        holds the address (released, or released and claimed again, since it
        was read): the caller then allocates anew rather than hand out an
        address whose record is gone.
        """
        raise NotImplementedError

    def find(self, network: str | None = None, container_id: str | None = None, ifname: str | None = None,
             pod: str | None = None) -> list:
        """Allocations matching every given field."""
        raise NotImplementedError

    def hint(self, key: str, pool: str, space: str | None) -> int | None:
        raise NotImplementedError

    def set_hint(self, key: str, pool: str, space: str | None, value: int) -> None:
        """Set the hint ``key``; creating it in a pool that then holds more than :data:`MAX_HINTS_PER_POOL`
        hints drops the pool's other hints."""
        raise NotImplementedError

    def forget_reads(self) -> None:
        """Drop whatever this store read for its last call (a store kept open between calls,
        :class:`cni_ipam.store.KeptOpen`, must not answer the next call from it)."""

    def stale(self) -> bool:
        """True when this open store must not serve another call: it no longer reaches what opening it again
        would, or a failed call left it in a state of its own (a store kept open between calls,
        :class:`cni_ipam.store.KeptOpen`, is then opened anew)."""
        return False

    def close(self) -> None:
        pass

    def leave_open(self) -> None:
        """Done with the store in a process that ends at once with ``_exit``: what :meth:`close` must still
        do (the SQLite store leaves its connection open, for its WAL)."""
        self.close()


class MaintenanceStore:
    """What the reconciler and the admin commands need besides: the whole store, and its repair."""

    def allocations(self):
        """Every allocation, in (pool, address) order."""
        raise NotImplementedError

    def list_hints(self) -> list:
        """Every hint as ``(key, pool, space, value)``, by key: the keys name the range definitions
        (``allocator.hint_key``), which is how ``cni-ipam pools`` and ``export`` learn them."""
        raise NotImplementedError

    def unbacked_reservations(self) -> list:
        """Address-space claims that no allocation backs (:class:`Reservation`), for the reconciler.

        Only a store that keeps the claim apart from the record can have any
        (etcd: a ``spaces/`` key left without its ``pools/`` key by an older
        build or by hand).  In SQLite and in memory the claim is part of the
        allocation itself, so there are none.
        """
        return []

    def drop_reservation(self, reservation: Reservation) -> bool:
        """Delete a claim :meth:`unbacked_reservations` returned, unless it changed since; True if deleted."""
        return False

    def check(self, progress=None) -> list:
        """The backend's own consistency check: every :class:`~cni_ipam.store.check.Problem` found, each with
        its repair when one is safe.  ``progress(done, total)`` is called as records are read."""
        raise NotImplementedError

    def verify(self, repair: bool = False, progress=None):
        """``cni-ipam verify``: :meth:`check`, and with ``repair`` the safe repairs, then check again.

        Returns a :class:`~cni_ipam.store.check.Report`: the problems left and what was repaired.
        """
        from .check import Report

        problems = self.check(progress)
        repaired = [p.repair() for p in problems if p.repair is not None] if repair else []
        if repaired:
            problems = self.check()
        return Report(problems, repaired)


class Store(AllocatorStore, MaintenanceStore):
    """A backend (SQLite, etcd): both interfaces, so the allocator and the admin commands share one store."""
