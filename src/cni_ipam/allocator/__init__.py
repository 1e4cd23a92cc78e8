"""The allocator: here, in the package itself (every command that allocates or frees loads it), the decisions,
with no I/O: which address, given a range and what is held.  :mod:`.engine` runs them against a store.

Whereabouts hands out the lowest free address of a range.  We keep that
order.  The store passes held addresses as an ascending iterator that it
reads lazily, and a *hint* (an address below which every allocatable one is
held), so the walk starts near the first gap instead of at the range start.

Under contention an allocator that keeps running (the node agent) leaves
that order for a while (:class:`Contention`): allocators on several nodes
that all take the lowest free address all claim the same ones, and all but
one lose each race.
"""

from __future__ import annotations


def first_free(rng, start: int, held) -> int | None:
    """The lowest allocatable address of ``rng`` at or above ``start`` that ``held`` lacks.

    ``held`` yields held addresses in ascending order (it may include
    addresses outside the range or below ``start``).  Returns None when
    every allocatable address from ``start`` on is held.
    """
    candidate = rng.next_allocatable(start)
    for ip in held:
        if candidate is None:
            return None
        if ip < candidate:
            continue
        if ip > candidate:
            return candidate
        candidate = rng.next_allocatable(candidate + 1)
    return candidate


def free_candidates(rng, start: int, held, count: int) -> list:
    """Up to ``count`` free allocatable addresses from ``start`` on, ascending.

    After a lost race an allocator whose store keeps nothing between calls
    (:class:`Contention` otherwise) picks one of these at random, so that
    many allocators in one range spread out instead of all fighting over the
    next address (measured: lowest-free by 16 processes collapsed into
    conflict storms; random free candidates had none).
    """
    found = []
    candidate = rng.next_allocatable(start)
    held = iter(held)
    ip = next(held, None)
    while candidate is not None and len(found) < count:
        while ip is not None and ip < candidate:
            ip = next(held, None)
        if ip != candidate:
            found.append(candidate)
        candidate = rng.next_allocatable(candidate + 1)
    return found


QUIET = 10.0  # seconds without a lost race before a kept-open allocator takes the lowest free address again
DRAWS = 8  # random draws for a free address before the next free one after the last draw is taken


def _held_at(held: list, ip: int) -> bool:
    from _bisect import bisect_left  # the C module, as net.ranges uses it

    i = bisect_left(held, ip)
    return i < len(held) and held[i] == ip


def next_free_from(rng, cursor: int, held: list) -> int | None:
    """The first free allocatable address at or above ``cursor``, else (wrapping round) from the range's start.

    ``held``: the held addresses, ascending, as a list.  None when the range is full.
    """
    from _bisect import bisect_left

    ip = first_free(rng, cursor, iter(held[bisect_left(held, cursor):]))
    return ip if ip is not None else first_free(rng, rng.start, iter(held))


def random_free(rng, held: list, rand) -> int | None:
    """A free allocatable address drawn at random over the whole range (``rand``: a :class:`random.Random`).

    Uniform over the free addresses while a few draws find one; a nearly
    full range takes the next free address after the last draw.  None when
    the range is full.
    """
    first, last = rng.first_allocatable(), rng.last_allocatable()
    if first is None:
        return None
    for _ in range(DRAWS):
        ip = rand.randint(first, last)
        if rng.is_allocatable(ip) and not _held_at(held, ip):
            return ip
    return next_free_from(rng, rand.randint(first, last), held)


class Contention:
    """One range as an allocator that keeps running (the node agent) remembers it: where its picks go while
    it keeps losing races to other nodes.

    Every node's allocator taking the lowest free address means the nodes
    all claim the same addresses at once, and all but one lose.  After a lost
    race (:meth:`lost`) the allocator moves its ``cursor`` to a free address
    drawn over the whole range, and for :data:`QUIET` seconds after the last
    lost race (:meth:`contended`) takes the next free address from the cursor
    on, moving it past (:meth:`pick`), as host-local's round robin does.  Each
    node then fills a stretch of its own, away from the others'; the loser of
    a race moves, the winner stays, so the nodes drift apart and stay apart.
    Once QUIET passes with no lost race, the allocator takes the lowest free
    address again.  Values in, values out: the caller passes the clock and
    the random source.  Shared by the agent's threads: two picks at once may
    both take one address, which only costs one of them a lost race.
    """

    __slots__ = ("cursor", "lost_at")

    def __init__(self) -> None:
        self.cursor = None  # where the next pick starts while contended
        self.lost_at = None  # clock reading of the last lost race

    def contended(self, now: float) -> bool:
        return self.lost_at is not None and self.cursor is not None and 0 <= now - self.lost_at < QUIET

    def pick(self, rng, held: list) -> int | None:
        """The next free address from the cursor on (wrapping round); the cursor moves past it."""
        ip = next_free_from(rng, self.cursor if self.cursor is not None else rng.start, held)
        if ip is not None:
            self.cursor = ip + 1
        return ip

    def pick_from(self, rng, held_in) -> int | None:
        """:meth:`pick`, reading what is held lazily: ``held_in(lo, hi)`` yields the held addresses in
        ``[lo, hi]`` ascending (a store that pages reads from the cursor on, and from the start only when
        nothing above is free)."""
        cursor = self.cursor if self.cursor is not None else rng.start
        ip = first_free(rng, cursor, held_in(cursor, rng.end))
        if ip is None and cursor > rng.start:
            ip = first_free(rng, rng.start, held_in(rng.start, cursor - 1))
            ip = ip if ip is not None and ip < cursor else None  # at or past the cursor: read as full above
        if ip is not None:
            self.cursor = ip + 1
        return ip

    def jump(self, rng, now: float, rand) -> None:
        """A race was just lost, and reading the whole range is dear: the cursor jumps to an allocatable
        address drawn at random (the next pick takes the first free one from there)."""
        self.lost_at = now
        first, last = rng.first_allocatable(), rng.last_allocatable()
        if first is None:
            self.cursor = None
            return
        ip = rng.next_allocatable(rand.randint(first, last))
        self.cursor = ip if ip is not None else first

    def lost(self, rng, held: list, now: float, rand) -> int | None:
        """A race was just lost: the cursor jumps to a free address drawn at random; that address, picked."""
        self.lost_at = now
        ip = random_free(rng, held, rand)
        self.cursor = None if ip is None else ip + 1
        return ip


def hint_key(network_name: str, overlapping: bool, rng) -> str:
    """Hints are per range definition within its pool: a changed exclude list starts afresh."""
    return f"{network_name}|{'space' if overlapping else 'pool'}|{rng.fingerprint()}"


def exhausted_message(rng, key: str) -> str:
    first, last = rng.first_allocatable(), rng.last_allocatable()
    span = f"{rng.to_text(first)}-{rng.to_text(last)}" if first is not None else "none (all excluded)"
    excluded = ", ".join(f"{rng.to_text(lo)}-{rng.to_text(hi)}" for lo, hi in rng.excluded) or "none"
    return (f"{key}: no free address in range {rng.cidr}: all {rng.size()} allocatable addresses are held "
            f"(allocatable {span}; excluded {excluded})")
