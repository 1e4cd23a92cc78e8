"""One reconcile pass: read the store, decide, then release; every step logged as a JSON line.

Order and safety rules:

* the store is read before any liveness source takes its snapshot (a pod
  listed before the store was read could otherwise be missing an address
  it got in between: whereabouts #207);
* an allocation younger than the grace period is never freed, whatever
  the sources say: its ADD may still be running and its pod not yet
  visible anywhere (whereabouts #162);
* a source that sees the attachment alive wins over one that sees it gone;
* just before each release every source looks again (``confirm``), and
  the store releases only if the allocation still belongs to the same
  attachment, so an address that was freed and handed out meanwhile stays
  with its new owner;
* each release is one store transaction (SQLite) or one txn (etcd): the
  allocation and its address-space claim go together, so a run that stops
  halfway leaves every allocation either whole or gone, and the next run
  finishes the job.  A failure stops the run.
"""

from __future__ import annotations

import time


class Decision:
    __slots__ = ("allocation", "stale", "code", "reason", "verdicts")

    def __init__(self, allocation, stale: bool, code: str, reason: str, verdicts=()):
        self.allocation = allocation
        self.stale = stale
        self.code = code
        self.reason = reason
        self.verdicts = list(verdicts)


def decide(allocation, sources, now: float, grace: float) -> Decision:
    """Stale or not, and why."""
    age = now - allocation.created if allocation.created else None
    if age is not None and age < grace:
        return Decision(allocation, False, "young", f"allocated {max(age, 0):.0f}s ago, within the {grace:.0f}s "
                                                    f"grace period (its ADD may still be running)")
    verdicts = []
    for source in sources:
        verdict = source.judge(allocation)
        if verdict is not None:
            verdict.source = source.name
            verdicts.append(verdict)
    return _combine(allocation, verdicts)


def _combine(allocation, verdicts) -> Decision:
    for verdict in verdicts:
        if verdict.alive:
            return Decision(allocation, False, verdict.code, verdict.reason, verdicts)
    if verdicts:
        return Decision(allocation, True, verdicts[0].code, "; ".join(v.reason for v in verdicts), verdicts)
    return Decision(allocation, False, "unknown", "no liveness source knows this attachment", verdicts)


def confirm(decision: Decision, sources, now: float) -> Decision:
    """Ask every source again, with a fresh look, right before freeing."""
    verdicts = []
    for source in sources:
        verdict = source.confirm(decision.allocation, now)
        if verdict is not None:
            verdict.source = source.name
            verdicts.append(verdict)
    return _combine(decision.allocation, verdicts)


def range_of(pool: str) -> str:
    """The range CIDR of a pool named ``<network_name>/<cidr>``."""
    return "/".join(pool.rsplit("/", 2)[-2:])


def describe(allocation) -> dict:
    """The fields a log line gives for an allocation."""
    from .log import iso

    return {
        "address": allocation.address, "range": range_of(allocation.pool), "pool": allocation.pool,
        "network": allocation.network, "network_name": allocation.pool.rsplit("/", 2)[0],
        "pod": allocation.pod, "container_id": allocation.container_id, "ifname": allocation.ifname,
        "node": allocation.node, "netns": allocation.netns,
        "created": iso(allocation.created) if allocation.created else None,
    }


class Report:
    """What one run did, for the daemon's metrics and the tests."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.examined = 0
        self.stale = []  # Decisions found stale
        self.freed = []  # allocations released (or, in a dry run, that would be)
        self.kept = {}  # code -> count
        self.skipped = []  # stale at first, then alive again or changed in the store
        self.reservations = []  # unbacked address-space claims freed (or that would be)
        self.errors = []
        self.ok = False
        self.duration = 0.0


def reconcile(store, sources, log, grace: float, dry_run: bool = False, clock=time.time,
              monotonic=time.monotonic, after=None) -> Report:
    """One pass over ``store`` (a Store, or a function that opens one: it is then opened inside the run
    and closed after it, so a store that cannot be opened is a failed run; the function returns None when
    no store exists yet, and the run then examines nothing).  Exceptions are logged and
    reported, never raised.  ``after(store)``, if given, runs once the pass succeeded, on the same open
    store (the daemon counts the pools for its metrics there, without opening the store again); an
    exception from it is logged, and the run stays ok: what it freed is freed."""
    report = Report(dry_run)
    started, start_mono = clock(), monotonic()
    log("run-start", f"reconcile run started{' (dry run: nothing will be freed)' if dry_run else ''}",
        dry_run=dry_run, sources=[s.describe() for s in sources], grace_seconds=grace)
    opened = None
    try:
        if callable(store):
            store = opened = store()
        _run(store, sources, log, grace, dry_run, clock, report)
        report.ok = True
        if after is not None:
            _after(after, store, log)
    except Exception as exc:  # noqa: BLE001 -- the daemon must outlive any one run
        report.errors.append(str(exc))
        log("run-error", f"reconcile run failed: {exc}; what was freed before stays freed, nothing else changed",
            level="error", error=str(exc), error_type=type(exc).__name__)
    finally:
        if opened is not None:
            try:
                opened.close()
            except Exception:  # noqa: BLE001 -- closing never undoes the run's outcome
                pass
    report.duration = monotonic() - start_mono
    verb = "would free" if dry_run else "freed"
    log("run-end", f"reconcile run {'finished' if report.ok else 'failed'} in {report.duration:.3f}s: examined "
        f"{report.examined} allocations, {verb} {len(report.freed)} addresses and {len(report.reservations)} "
        f"unbacked reservations", ok=report.ok, dry_run=dry_run, examined=report.examined,
        stale=len(report.stale), freed=len(report.freed), freed_reservations=len(report.reservations),
        skipped=len(report.skipped), kept=report.kept, errors=len(report.errors), started=_iso(started),
        duration_seconds=round(report.duration, 6))
    return report


def _after(after, store, log) -> None:
    try:
        after(store)
    except Exception as exc:  # noqa: BLE001 -- the run's outcome stands
        log("after-error", f"the step after the run failed: {exc}", level="error", error=str(exc),
            error_type=type(exc).__name__)


def _iso(epoch):
    from .log import iso

    return iso(epoch)


def _run(store, sources, log, grace, dry_run, clock, report) -> None:
    # First the store, then the sources (whereabouts #207).  No store yet: nothing is held.
    allocations = list(store.allocations()) if store is not None else []
    now = clock()
    for source in sources:
        source.prepare(now)
    pools = {}
    for allocation in allocations:
        report.examined += 1
        pools[allocation.pool] = pools.get(allocation.pool, 0) + 1
        decision = decide(allocation, sources, now, grace)
        if decision.stale:
            report.stale.append(decision)
        else:
            report.kept[decision.code] = report.kept.get(decision.code, 0) + 1
            log("kept", f"kept {allocation.address} ({allocation.pool}): {decision.reason}", level="debug",
                why=decision.reason, code=decision.code, **describe(allocation))
    log("examined", f"examined {report.examined} allocations in {len(pools)} pools: {len(report.stale)} stale",
        allocations=report.examined, pools=pools, stale=len(report.stale), kept=report.kept)
    for decision in report.stale:
        _free(store, sources, log, dry_run, clock, decision, report)
    if store is not None:
        _free_reservations(store, log, dry_run, report)


def _free(store, sources, log, dry_run, clock, decision, report) -> None:
    allocation = decision.allocation
    fresh = confirm(decision, sources, clock())
    if not fresh.stale:
        report.skipped.append(decision)
        log("skipped", f"not freeing {allocation.address} ({allocation.pool}): a fresh look says {fresh.reason}",
            why=fresh.reason, code=fresh.code, **describe(allocation))
        return
    fields = dict(describe(allocation), why=fresh.reason, code=fresh.code,
                  sources=[v.source for v in fresh.verdicts], dry_run=dry_run)
    pod = f" of pod {allocation.pod}" if allocation.pod else ""
    if dry_run:
        report.freed.append(allocation)
        log("would-free", f"would free {allocation.address} in {range_of(allocation.pool)}{pod}: {fresh.reason}",
            **fields)
        return
    with store.transaction():
        released = store.release(allocation)
    if not released:
        report.skipped.append(decision)
        log("skipped", f"not freeing {allocation.address} ({allocation.pool}): it changed in the store since it "
            f"was read (released, or now held by another attachment)", why="changed in the store",
            code="changed", **describe(allocation))
        return
    report.freed.append(allocation)
    log("freed", f"freed {allocation.address} in {range_of(allocation.pool)}{pod}: {fresh.reason}", **fields)


def _free_reservations(store, log, dry_run, report) -> None:
    """Address-space claims that no allocation backs (an older build's or a hand-written leftover)."""
    for reservation in store.unbacked_reservations():
        fields = {"address": reservation.address, "network_name": reservation.space, "pool": reservation.pool,
                  "dry_run": dry_run, "why": "no allocation holds this address-space reservation"}
        if dry_run:
            report.reservations.append(reservation)
            log("would-free-reservation", f"would free the unbacked reservation of {reservation.address} in "
                f"network_name {reservation.space!r}", **fields)
            continue
        if store.drop_reservation(reservation):
            report.reservations.append(reservation)
            log("freed-reservation", f"freed the unbacked reservation of {reservation.address} in network_name "
                f"{reservation.space!r}", **fields)


__all__ = ["Decision", "Report", "confirm", "decide", "reconcile"]
