"""The long-running reconciler: run on the cron schedule, reload it without a restart, export metrics.

The loop owns no clock of its own: it asks a clock object for the time and
to sleep, so tests drive it with a fake clock (no waiting) and
``cni-ipam reconciler --tick SECONDS`` runs it with a fast one (a cron
minute lasting SECONDS).  Every wake-up re-reads the schedule sources'
``stat`` signature, at least every ``poll`` seconds; a changed schedule
replaces the pending run time at once, so it is used from the next tick.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

DEFAULT_POLL = 5.0  # seconds between looks at the schedule files
DEFAULT_METRICS_PORT = 9413


class RealClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(max(seconds, 0.0))


class FastClock:
    """Wall time at start, then running ``60 / minute_seconds`` times faster (``--tick``)."""

    def __init__(self, minute_seconds: float, start: float | None = None, monotonic=time.monotonic) -> None:
        if minute_seconds <= 0:
            raise ValueError("a cron minute must last more than 0 seconds")
        self.scale = 60.0 / minute_seconds
        self.start = time.time() if start is None else start
        self.monotonic = monotonic
        self.origin = monotonic()

    def now(self) -> float:
        return self.start + (self.monotonic() - self.origin) * self.scale

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(max(seconds, 0.0) / self.scale)


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class Metrics:
    """Prometheus metrics of one daemon, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        p = "cni_ipam_reconciler_"
        self.runs = Counter(p + "runs", "Reconcile runs, by outcome", ["outcome"], registry=self.registry)
        self.freed = Counter(p + "freed_addresses", "Addresses freed (in dry runs: that would have been)",
                             registry=self.registry)
        self.freed_reservations = Counter(p + "freed_reservations", "Unbacked address-space reservations freed",
                                          registry=self.registry)
        self.errors = Counter(p + "errors", "Errors that stopped a run", registry=self.registry)
        self.last_success = Gauge(p + "last_success_timestamp_seconds", "When the last successful run ended",
                                  registry=self.registry)
        self.duration = Gauge(p + "last_run_duration_seconds", "How long the last run took", registry=self.registry)
        self.examined = Gauge(p + "allocations", "Allocations examined by the last run", registry=self.registry)
        self.next_run = Gauge(p + "next_run_timestamp_seconds", "When the next run is due", registry=self.registry)
        self.watch_freed = Counter(p + "pod_watch_freed_addresses", "Addresses freed by the pod watch",
                                   registry=self.registry)
        self.watch_failed = Counter(p + "pod_watch_free_failures", "Addresses the pod watch failed to free",
                                    registry=self.registry)
        self.watch_relists = Counter(p + "pod_watch_relists", "Pod watches that expired (410) and listed again",
                                     registry=self.registry)
        self.watch_errors = Counter(p + "pod_watch_errors", "Pod watch errors, each followed by a back-off",
                                    registry=self.registry)
        labels = ["pool", "network_name"]
        self.pool_size = Gauge(p + "pool_size", "Allocatable addresses of a pool (range)", labels, registry=self.registry)
        self.pool_held = Gauge(p + "pool_held", "Held addresses of a pool, its address space included", labels,
                               registry=self.registry)
        self.pool_free = Gauge(p + "pool_free", "Free addresses of a pool", labels, registry=self.registry)
        for outcome in ("success", "failure"):
            self.runs.labels(outcome)  # both series exist from the start, at 0

    def observe(self, report, now: float) -> None:
        self.runs.labels("success" if report.ok else "failure").inc()
        self.freed.inc(len(report.freed))
        self.freed_reservations.inc(len(report.reservations))
        self.errors.inc(len(report.errors))
        self.duration.set(report.duration)
        self.examined.set(report.examined)
        if report.ok:
            self.last_success.set(now)

    def observe_pools(self, rows: list) -> None:
        """Per-pool size, held and free, as ``cni-ipam pools`` computes them (admin.state.pool_stats)."""
        for gauge in (self.pool_size, self.pool_held, self.pool_free):
            gauge.clear()  # a pool that went away must not linger
        for row in rows:
            labels = (row["pool"], row["network_name"] or "")
            self.pool_size.labels(*labels).set(row["size"])
            self.pool_held.labels(*labels).set(row["held"])
            self.pool_free.labels(*labels).set(row["free"])

    def serve(self, port: int, address: str = "0.0.0.0"):
        """Start the HTTP endpoint; returns (server, the port it listens on)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, address, registry=self.registry)
        return server, server.server_port

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


class Daemon:
    """Runs ``run_pass()`` whenever the schedule says, until ``stop`` is set (or ``max_runs`` runs)."""

    def __init__(self, watcher, run_pass, clock, log, metrics: Metrics | None = None,
                 poll: float = DEFAULT_POLL) -> None:
        self.watcher = watcher
        self.run_pass = run_pass
        self.clock = clock
        self.log = log
        self.metrics = metrics
        self.poll = poll
        self.runs = 0
        self.next_at = None  # datetime of the pending run

    def _plan(self, now: float, why: str) -> None:
        schedule = self.watcher.current
        self.next_at = schedule.next_after(utc(now))
        wait = self.next_at.timestamp() - now
        if self.metrics is not None:
            self.metrics.next_run.set(self.next_at.timestamp())
        self.log("next-run", f"next run at {self.next_at.isoformat().replace('+00:00', 'Z')} (in {wait:.0f}s) on "
                 f"schedule {schedule.text!r} from {self.watcher.source} ({why})",
                 at=self.next_at.isoformat().replace("+00:00", "Z"), in_seconds=round(wait, 3),
                 expression=schedule.text, source=self.watcher.source, why=why)

    def run(self, stop: threading.Event | None = None, max_runs: int | None = None) -> int:
        stop = stop or threading.Event()
        if self.watcher.current is None:
            self.watcher.load()
        last = self.clock.now()
        self._plan(last, "start")
        while not stop.is_set():
            now = self.clock.now()
            if now < last - 1.0:  # the clock went back: plan again rather than wait for a time long past
                self._plan(now, "clock went back")
            last = now
            if self.watcher.poll():
                self._plan(now, "schedule changed")
            if now >= self.next_at.timestamp():
                self.runs += 1
                report = self.run_pass()
                if self.metrics is not None:
                    self.metrics.observe(report, self.clock.now())
                if max_runs is not None and self.runs >= max_runs:
                    break
                last = self.clock.now()
                self._plan(last, "after run")
                continue
            self.clock.sleep(min(self.poll, self.next_at.timestamp() - now), stop)
        self.log("stopped", f"reconciler stopped after {self.runs} runs", runs=self.runs)
        return self.runs
