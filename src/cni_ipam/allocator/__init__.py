"""The allocator: here, in the package itself (every command that allocates or frees loads it), the decisions,
with no I/O: which address, given a range and what is held.  :mod:`.engine` runs them against a store.

Whereabouts hands out the lowest free address of a range.  We keep that
order.  The store passes held addresses as an ascending iterator that it
reads lazily, and a *hint* (an address below which every allocatable one is
held), so the walk starts near the first gap instead of at the range start.
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

    After a lost race the allocator picks one of these at random, so that
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


def hint_key(network_name: str, overlapping: bool, rng) -> str:
    """Hints are per range definition within its pool: a changed exclude list starts afresh."""
    return f"{network_name}|{'space' if overlapping else 'pool'}|{rng.fingerprint()}"


def exhausted_message(rng, key: str) -> str:
    first, last = rng.first_allocatable(), rng.last_allocatable()
    span = f"{rng.to_text(first)}-{rng.to_text(last)}" if first is not None else "none (all excluded)"
    excluded = ", ".join(f"{rng.to_text(lo)}-{rng.to_text(hi)}" for lo, hi in rng.excluded) or "none"
    return (f"{key}: no free address in range {rng.cidr}: all {rng.size()} allocatable addresses are held "
            f"(allocatable {span}; excluded {excluded})")
