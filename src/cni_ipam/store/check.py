"""What a store's consistency check reports (``cni-ipam verify``), and the checks every backend shares.

Each backend finds its own damage (:meth:`cni_ipam.store.base.MaintenanceStore.check`):
it alone knows how it keeps an allocation.  A finding is a :class:`Problem`
with a ``repair`` callable when the fix cannot take an address from a pod
that may still use it, else a ``hint`` saying what the administrator must
decide.
"""

from __future__ import annotations

from ..net import in_cidr, split_pool

DUPLICATE_HINT = ("decide which attachment keeps the address and free the other with "
                  "cni-ipam release --container-id ID --network NETWORK")


class Problem:
    __slots__ = ("kind", "detail", "repair", "hint")

    def __init__(self, kind: str, detail: str, repair=None, hint: str = "") -> None:
        self.kind = kind
        self.detail = detail
        self.repair = repair  # () -> str saying what was done, or None when not safe to do automatically
        self.hint = hint

    def to_dict(self) -> dict:
        return {"kind": self.kind, "detail": self.detail, "repairable": self.repair is not None, "hint": self.hint}


class Report:
    """What :meth:`~cni_ipam.store.base.MaintenanceStore.verify` found, after the repairs it made (``repaired``:
    one sentence each)."""

    __slots__ = ("problems", "repaired")

    def __init__(self, problems: list, repaired: list) -> None:
        self.problems = problems
        self.repaired = repaired


def tick(progress, done: int, total: int) -> None:
    """Report progress through ``progress(done, total)``, when the caller asked for it."""
    if progress is not None:
        progress(done, total)


def outside_its_pool(a, repair) -> Problem | None:
    """An allocation whose address no range of its pool can hold (its CIDR is in the pool's name)."""
    if in_cidr(split_pool(a.pool)[1], a.ip, a.version):
        return None
    return Problem("outside-cidr", f"{a.address} is outside the CIDR of its pool {a.pool} "
                                   f"(held by {a.network}/{a.container_id}/{a.ifname})", repair=repair)


def released(store, a):
    """The repair of an address no range of its pool can hold (:func:`outside_its_pool`), where the backend's
    own release frees it safely (unless it changed since the check read it)."""
    def repair() -> str:
        if not store.release(a):
            return f"{a.address} of {a.pool} had changed; left alone (run verify again)"
        return f"released {a.address} from {a.pool}: no range of that pool can hold it"
    return repair


def dropped(store, reservation, named: str):
    """The repair of an address-space claim no allocation backs, through the backend's own
    ``drop_reservation`` (which leaves it alone if it changed since the check read it); ``named``: the claim
    as the backend calls it, for both sentences."""
    def repair() -> str:
        if store.drop_reservation(reservation):
            return f"deleted the unbacked {named}"
        return f"the {named} changed meanwhile; left alone"
    return repair


def duplicates(allocations) -> list:
    """One address held twice in one address space: the store's uniqueness rule was broken (left for a decision)."""
    groups = {}
    for a in allocations:
        if a.space is not None:
            groups.setdefault((a.space, a.version, a.ip), []).append(a)
    problems = []
    for (space, _version, _ip), holders in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        if len(holders) > 1:
            who = "; ".join(f"{a.pool} by {a.network}/{a.container_id}/{a.ifname}" for a in holders)
            problems.append(Problem("duplicate", f"{holders[0].address} is held twice in address space {space!r}: "
                                                 f"{who}", hint=DUPLICATE_HINT))
    return problems
