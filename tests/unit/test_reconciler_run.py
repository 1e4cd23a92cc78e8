"""One reconcile pass on the in-memory and SQLite stores: what is freed, what is kept, what is logged."""

from __future__ import annotations

import io
import json

import pytest

from cni_ipam.net import pool_name
from cni_ipam.reconciler.liveness import Source, alive, stale
from cni_ipam.reconciler.log import JsonLog
from cni_ipam.reconciler.run import decide, reconcile
from cni_ipam.store.base import Allocation, Reservation

from memory_store import MemoryStore

NOW = 1_800_000_000.0
GRACE = 600.0
POOL = pool_name("blue", "192.0.2.0/24")


def alloc(last: int, pod: str = "", age: float = 3600.0, cid: str | None = None) -> Allocation:
    return Allocation(POOL, 0xC0000200 + last, 4, "net-blue", cid or f"c{last}", "net1", space="blue", pod=pod,
                      netns=f"/run/netns/p{last}", node="node-a", created=NOW - age)


class Fixed(Source):
    """Verdicts by address; ``later`` replaces them for ``confirm``."""

    name = "fixed"

    def __init__(self, verdicts: dict, later: dict | None = None) -> None:
        self.verdicts = verdicts
        self.later = later
        self.prepared = []

    def prepare(self, now):
        self.prepared.append(now)

    def judge(self, allocation):
        return self.verdicts.get(allocation.address)

    def confirm(self, allocation, now):
        return (self.later if self.later is not None else self.verdicts).get(allocation.address)


def new_log() -> JsonLog:
    log = JsonLog(stream=io.StringIO(), clock=lambda: NOW)
    log.lines = []
    return log


def gone(why="netns gone"):
    return stale("netns-gone", why)


def here(why="netns present"):
    return alive("netns-present", why)


def fill(store, *allocations):
    for a in allocations:
        assert store.claim(a)


def addresses(store) -> list:
    return [a.address for a in store.allocations()]


# --- decide ---

def test_a_young_allocation_is_never_stale():
    young = alloc(1, age=GRACE - 1)
    decision = decide(young, [Fixed({"192.0.2.1": gone()})], NOW, GRACE)
    assert (decision.stale, decision.code) == (False, "young")
    assert "within the 600s grace period" in decision.reason
    assert decide(alloc(1, age=GRACE), [Fixed({"192.0.2.1": gone()})], NOW, GRACE).stale is True


def test_alive_anywhere_wins_and_stale_reasons_are_joined():
    a = alloc(1)
    assert decide(a, [Fixed({"192.0.2.1": gone()}), Fixed({"192.0.2.1": here()})], NOW, GRACE).stale is False
    both = decide(a, [Fixed({"192.0.2.1": gone("one")}), Fixed({"192.0.2.1": gone("two")})], NOW, GRACE)
    assert (both.stale, both.reason) == (True, "one; two")
    unknown = decide(a, [Fixed({})], NOW, GRACE)
    assert (unknown.stale, unknown.code) == (False, "unknown")
    assert decide(a, [], NOW, GRACE).stale is False  # no source at all frees nothing


# --- a whole run ---

def test_run_frees_exactly_the_stale_and_logs_why():
    store = MemoryStore()
    fill(store, alloc(1, pod="ns/a"), alloc(2, pod="ns/b"), alloc(3, pod="ns/c"), alloc(4, age=10))
    source = Fixed({"192.0.2.1": gone("netns /run/netns/p1 no longer exists"), "192.0.2.2": here(),
                    "192.0.2.4": gone()})
    log = new_log()
    report = reconcile(store, [source], log, GRACE, clock=lambda: NOW)
    assert report.ok and report.examined == 4
    assert addresses(store) == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert report.kept == {"netns-present": 1, "unknown": 1, "young": 1}
    assert source.prepared == [NOW]
    [freed] = log.records("freed")
    assert {k: freed[k] for k in ("address", "range", "pool", "pod", "network", "container_id", "ifname", "why",
                                  "code")} == {
        "address": "192.0.2.1", "range": "192.0.2.0/24", "pool": POOL, "pod": "ns/a", "network": "net-blue",
        "container_id": "c1", "ifname": "net1", "why": "netns /run/netns/p1 no longer exists", "code": "netns-gone"}
    assert freed["msg"] == "freed 192.0.2.1 in 192.0.2.0/24 of pod ns/a: netns /run/netns/p1 no longer exists"
    events = [r["event"] for r in log.records() if r["level"] != "debug"]
    assert events == ["run-start", "examined", "freed", "run-end"]
    end = log.records("run-end")[0]
    assert (end["ok"], end["examined"], end["freed"], end["errors"]) == (True, 4, 1, 0)
    assert isinstance(end["duration_seconds"], float)
    assert log.records("examined")[0]["pools"] == {POOL: 4}


def test_logs_are_json_lines():
    store = MemoryStore()
    fill(store, alloc(1))
    stream = io.StringIO()
    reconcile(store, [Fixed({"192.0.2.1": gone()})], JsonLog(stream=stream, clock=lambda: NOW), GRACE,
              clock=lambda: NOW)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["run-start", "examined", "freed", "run-end"]
    assert all(line["ts"] == "2027-01-15T08:00:00.000Z" for line in lines)


def test_dry_run_frees_nothing_and_reports_the_same():
    def run(dry_run):
        store = MemoryStore()
        fill(store, alloc(1, pod="ns/a"), alloc(2, pod="ns/b"), alloc(3))
        log = new_log()
        report = reconcile(store, [Fixed({"192.0.2.1": gone(), "192.0.2.3": gone()})], log, GRACE,
                           dry_run=dry_run, clock=lambda: NOW)
        return store, log, report

    store, log, report = run(True)
    assert addresses(store) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert log.records("freed") == []
    would = [{k: v for k, v in r.items() if k not in ("ts", "event", "msg", "dry_run")}
             for r in log.records("would-free")]
    assert [r["msg"].split(" ")[:3] for r in log.records("would-free")] == [["would", "free", "192.0.2.1"],
                                                                             ["would", "free", "192.0.2.3"]]
    real_store, real_log, real_report = run(False)
    freed = [{k: v for k, v in r.items() if k not in ("ts", "event", "msg", "dry_run")}
             for r in real_log.records("freed")]
    assert would == freed and len(freed) == 2
    assert addresses(real_store) == ["192.0.2.2"]
    assert len(report.freed) == len(real_report.freed) == 2


def test_a_fresh_look_before_release_can_save_an_allocation():
    store = MemoryStore()
    fill(store, alloc(1), alloc(2))
    log = new_log()
    source = Fixed({"192.0.2.1": gone(), "192.0.2.2": gone()}, later={"192.0.2.1": here("came back"),
                                                                      "192.0.2.2": gone()})
    report = reconcile(store, [source], log, GRACE, clock=lambda: NOW)
    assert addresses(store) == ["192.0.2.1"]
    [skipped] = log.records("skipped")
    assert skipped["address"] == "192.0.2.1" and "came back" in skipped["msg"]
    assert len(report.skipped) == 1 and len(report.freed) == 1


def test_an_allocation_taken_over_meanwhile_is_not_freed(tmp_path):
    from cni_ipam.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "ipam.db"))  # (the memory store hands out its own objects: no snapshot)
    old = alloc(1)
    fill(store, old)

    class TakeOver(Fixed):
        def confirm(self, allocation, now):
            store.update_owner(store.allocations()[0], "new-sandbox", "/run/netns/new")  # a restarted sandbox
            return gone()

    log = new_log()
    report = reconcile(store, [TakeOver({"192.0.2.1": gone()})], log, GRACE, clock=lambda: NOW)
    assert [a.container_id for a in store.allocations()] == ["new-sandbox"]
    assert report.freed == [] and log.records("skipped")[0]["code"] == "changed"
    store.close()


def test_a_source_that_fails_to_prepare_frees_nothing():
    store = MemoryStore()
    fill(store, alloc(1))

    class Broken(Fixed):
        def prepare(self, now):
            raise ConnectionError("API server unreachable")

    log = new_log()
    report = reconcile(store, [Broken({"192.0.2.1": gone()})], log, GRACE, clock=lambda: NOW)
    assert not report.ok and report.errors == ["API server unreachable"]
    assert addresses(store) == ["192.0.2.1"]
    error = log.records("run-error")[0]
    assert error["level"] == "error" and error["error_type"] == "ConnectionError"
    assert log.records("run-end")[0]["ok"] is False


def test_a_store_that_cannot_be_opened_is_a_failed_run():
    from cni_ipam.store.base import StoreError

    def opener():
        raise StoreError("cannot reach etcd at http://10.0.0.1:2379")

    log = new_log()
    report = reconcile(opener, [], log, GRACE, clock=lambda: NOW)
    assert not report.ok
    assert "cannot reach etcd" in log.records("run-error")[0]["msg"]


def test_an_opened_store_is_closed_after_the_run():
    store = MemoryStore()
    closed = []
    store.close = lambda: closed.append(True)
    reconcile(lambda: store, [], new_log(), GRACE, clock=lambda: NOW)
    assert closed == [True]


def test_after_sees_the_pass_result_on_the_same_open_store_once():
    """The daemon's pool gauges are counted on the run's own store, after the stale ones are freed."""
    store = MemoryStore()
    fill(store, alloc(1), alloc(2))
    opened, seen = [], []
    store.close = lambda: seen.append("closed")

    def opener():
        opened.append(True)
        return store

    report = reconcile(opener, [Fixed({"192.0.2.1": gone(), "192.0.2.2": here()})], new_log(), GRACE,
                       clock=lambda: NOW, after=lambda s: seen.append((s is store, addresses(s))))
    assert report.ok and opened == [True]
    assert seen == [(True, ["192.0.2.2"]), "closed"]


def test_a_failing_after_is_logged_and_the_run_stays_ok():
    store = MemoryStore()
    fill(store, alloc(1))
    log = new_log()

    def broken(_store):
        raise RuntimeError("gauges exploded")

    report = reconcile(store, [Fixed({"192.0.2.1": gone()})], log, GRACE, clock=lambda: NOW, after=broken)
    assert report.ok and addresses(store) == []
    assert log.records("after-error")[0]["error"] == "gauges exploded"
    assert log.records("run-end")[0]["ok"] is True


def test_an_opener_that_finds_no_store_makes_an_ok_run_that_examines_nothing():
    """No store yet (a SQLite file never created): the run succeeds on nothing, and ``after`` is told so."""
    log, seen = new_log(), []
    report = reconcile(lambda: None, [Fixed({})], log, GRACE, clock=lambda: NOW, after=seen.append)
    assert report.ok and report.examined == 0 and report.reservations == [] and seen == [None]
    assert log.records("examined")[0]["allocations"] == 0


def test_after_is_not_called_when_the_pass_failed():
    seen = []

    def opener():
        raise ConnectionError("etcd unreachable")

    report = reconcile(opener, [], new_log(), GRACE, clock=lambda: NOW, after=seen.append)
    assert not report.ok and seen == []


# --- a run that fails halfway ---

def test_a_failure_halfway_leaves_the_sqlite_store_whole_and_the_next_run_finishes(tmp_path):
    from cni_ipam.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "ipam.db"))
    fill(store, *(alloc(n) for n in range(1, 6)))
    release = store.release
    calls = []

    def flaky(allocation):
        calls.append(allocation.address)
        if len(calls) == 3:
            raise OSError("disk I/O error")
        return release(allocation)

    store.release = flaky
    source = Fixed({f"192.0.2.{n}": gone() for n in (1, 2, 3, 4)})
    log = new_log()
    report = reconcile(store, [source], log, GRACE, clock=lambda: NOW)
    assert not report.ok
    assert [a.address for a in report.freed] == ["192.0.2.1", "192.0.2.2"]
    assert addresses(store) == ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
    # nothing half-done: every remaining row is whole, and the freed addresses can be claimed again
    assert all(a.space == "blue" and a.container_id == f"c{a.address.split('.')[-1]}" for a in store.allocations())
    assert store.claim(alloc(1, cid="new", age=1))  # a new pod got it: young, so the next run keeps it
    store.release = release
    report = reconcile(store, [source], new_log(), GRACE, clock=lambda: NOW)
    assert report.ok and [a.address for a in report.freed] == ["192.0.2.3", "192.0.2.4"]
    assert addresses(store) == ["192.0.2.1", "192.0.2.5"]
    store.close()


# --- unbacked reservations ---

class WithLeftovers(MemoryStore):
    def __init__(self, leftovers):
        super().__init__()
        self.leftovers = list(leftovers)
        self.dropped = []

    def unbacked_reservations(self):
        return list(self.leftovers)

    def drop_reservation(self, reservation):
        if reservation.token == "changed":
            return False
        self.leftovers.remove(reservation)
        self.dropped.append(reservation)
        return True


@pytest.mark.parametrize("dry_run", [False, True])
def test_unbacked_reservations_are_freed_and_logged(dry_run):
    leftovers = [Reservation("blue", 0xC0000263, 4, POOL, 7), Reservation("red", 0xC0000264, 4, "x", "changed")]
    store = WithLeftovers(leftovers)
    log = new_log()
    report = reconcile(store, [], log, GRACE, dry_run=dry_run, clock=lambda: NOW)
    if dry_run:
        assert store.dropped == [] and len(report.reservations) == 2
        assert [r["address"] for r in log.records("would-free-reservation")] == ["192.0.2.99", "192.0.2.100"]
    else:
        assert store.dropped == [leftovers[0]] and report.reservations == [leftovers[0]]
        [line] = log.records("freed-reservation")
        assert (line["address"], line["network_name"]) == ("192.0.2.99", "blue")
    assert log.records("run-end")[0]["freed_reservations"] == len(report.reservations)
