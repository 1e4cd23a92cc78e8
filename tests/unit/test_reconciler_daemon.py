"""The daemon loop driven by a fake clock: runs on the schedule, picks up a rewritten schedule from the next
tick, keeps the running one when the new one is refused, and counts what it did in its metrics."""

from __future__ import annotations

import io
import os
import threading
from datetime import datetime, timezone

from cni_ipam.reconciler.daemon import Daemon, FastClock, Metrics
from cni_ipam.reconciler.log import JsonLog
from cni_ipam.reconciler.run import Report
from cni_ipam.reconciler.schedule import ScheduleSources, ScheduleWatcher

START = datetime(2026, 1, 31, 23, 0, 30, tzinfo=timezone.utc).timestamp()


class FakeClock:
    """Time moves only when the daemon sleeps; ``at(t, fn)`` runs ``fn`` when time reaches ``t``."""

    def __init__(self, start: float) -> None:
        self.t = start  # time as the sleeps made it
        self.offset = 0.0  # a step of the wall clock (NTP), see jump()
        self.events = []
        self.slept = []

    def now(self) -> float:
        return self.t + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def at(self, when: float, action) -> None:
        self.events.append((when, action))
        self.events.sort(key=lambda e: e[0])

    def sleep(self, seconds: float, stop) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        target = self.t + seconds
        while self.events and self.events[0][0] <= target:
            when, action = self.events.pop(0)
            self.t = max(self.t, when)
            action()
        self.t = target


def hhmm(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")


def setup(tmp_path, expression: str, runs_report=None):
    schedule = tmp_path / "cron-schedule" / "config"
    schedule.parent.mkdir()
    schedule.write_text(expression)
    config = tmp_path / "whereabouts.conf"
    config.write_text("{}")
    clock = FakeClock(START)
    log = JsonLog(stream=io.StringIO(), clock=clock.now)
    log.lines = []
    watcher = ScheduleWatcher(ScheduleSources(str(schedule), str(config)), log)
    ran = []

    def run_pass():
        ran.append(clock.now())
        clock.t += 2.5  # a run takes time
        report = runs_report(len(ran)) if runs_report else Report(False)
        if not runs_report:
            report.ok = True
        return report

    return schedule, clock, log, watcher, ran, run_pass


def test_every_minute_then_the_rewritten_schedule_from_the_next_tick(tmp_path):
    schedule, clock, log, watcher, ran, run_pass = setup(tmp_path, "* * * * *")
    # after the third run (23:03:02.5), the ConfigMap changes to every 5 minutes
    clock.at(START + 3 * 60 + 10, lambda: schedule.write_text("*/5 * * * *"))
    daemon = Daemon(watcher, run_pass, clock, log, poll=5.0)
    assert daemon.run(max_runs=6) == 6
    assert [hhmm(t) for t in ran] == ["23:01:00", "23:02:00", "23:03:00", "23:05:00", "23:10:00", "23:15:00"]
    [changed] = log.records("schedule-changed")
    assert (changed["previous"], changed["expression"]) == ("* * * * *", "*/5 * * * *")
    assert changed["ts"] <= "2026-01-31T23:03:45.000Z"  # seen within one poll interval of the write
    plans = [(r["why"], r["at"]) for r in log.records("next-run")]
    assert plans[:4] == [("start", "2026-01-31T23:01:00Z"), ("after run", "2026-01-31T23:02:00Z"),
                         ("after run", "2026-01-31T23:03:00Z"), ("after run", "2026-01-31T23:04:00Z")]
    assert plans[4] == ("schedule changed", "2026-01-31T23:05:00Z")  # 23:04 of the old schedule never runs
    assert max(clock.slept) <= 5.0  # the files are looked at at least every poll interval


def test_the_next_run_crosses_midnight_and_the_month_end(tmp_path):
    _, clock, log, watcher, ran, run_pass = setup(tmp_path, "30 0 1 * *")  # 00:30 on the 1st of the month
    Daemon(watcher, run_pass, clock, log, poll=3600.0).run(max_runs=2)
    assert [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in ran] == [
        "2026-02-01T00:30:00+00:00", "2026-03-01T00:30:00+00:00"]


def test_a_refused_rewrite_keeps_the_running_schedule(tmp_path):
    schedule, clock, log, watcher, ran, run_pass = setup(tmp_path, "* * * * *")
    clock.at(START + 90, lambda: schedule.write_text("0 * * * * *"))  # six fields
    Daemon(watcher, run_pass, clock, log, poll=5.0).run(max_runs=4)
    assert [hhmm(t) for t in ran] == ["23:01:00", "23:02:00", "23:03:00", "23:04:00"]
    [refused] = log.records("schedule-refused")
    assert refused["in_force"] == "* * * * *"
    assert "has 6 fields" in refused["msg"] and "The schedule in force stays '* * * * *'" in refused["msg"]
    assert log.records("schedule-changed") == []


def test_the_clock_going_back_plans_again(tmp_path):
    _, clock, log, watcher, ran, run_pass = setup(tmp_path, "0 * * * *")  # hourly
    # at 23:10 the clock is set back by a day (an NTP step): waiting for 00:00 "tomorrow" would take 25 hours
    clock.at(START + 600, lambda: clock.jump(-86400))
    Daemon(watcher, run_pass, clock, log, poll=60.0).run(max_runs=1)
    assert [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in ran] == ["2026-01-31T00:00:00+00:00"]
    assert [r["why"] for r in log.records("next-run")] == ["start", "clock went back"]


def test_stop_ends_the_loop(tmp_path):
    _, clock, log, watcher, ran, run_pass = setup(tmp_path, "* * * * *")
    stop = threading.Event()
    clock.at(START + 150, stop.set)
    daemon = Daemon(watcher, run_pass, clock, log, poll=5.0)
    assert daemon.run(stop) == 2
    assert log.records("stopped")[0]["runs"] == 2


def test_metrics_count_runs_freed_addresses_errors_and_last_success(tmp_path):
    def report(n):
        r = Report(False)
        r.ok = n != 2
        r.freed = ["x"] * n if r.ok else []
        r.errors = [] if r.ok else ["etcd unreachable"]
        r.duration = 0.25
        r.examined = 10 * n
        return r

    _, clock, log, watcher, ran, run_pass = setup(tmp_path, "* * * * *", runs_report=report)
    metrics = Metrics()
    Daemon(watcher, run_pass, clock, log, metrics, poll=5.0).run(max_runs=3)
    text = metrics.text()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['cni_ipam_reconciler_runs_total{outcome="success"}'] == 2
    assert values['cni_ipam_reconciler_runs_total{outcome="failure"}'] == 1
    assert values["cni_ipam_reconciler_freed_addresses_total"] == 1 + 3
    assert values["cni_ipam_reconciler_errors_total"] == 1
    assert values["cni_ipam_reconciler_allocations"] == 30
    assert values["cni_ipam_reconciler_last_success_timestamp_seconds"] == ran[2] + 2.5  # the end of run 3
    assert values["cni_ipam_reconciler_next_run_timestamp_seconds"] == ran[2]  # planned after run 2


def test_metrics_are_served_over_http():
    from urllib.request import urlopen

    metrics = Metrics()
    metrics.runs.labels("success").inc()
    server, port = metrics.serve(0, "127.0.0.1")
    try:
        body = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'cni_ipam_reconciler_runs_total{outcome="success"} 1.0' in body


def test_fast_clock_runs_minutes_in_seconds():
    ticks = iter([100.0, 100.5, 101.0])
    clock = FastClock(0.5, start=START, monotonic=lambda: next(ticks))
    assert clock.now() == START + 60.0  # half a real second is one cron minute
    assert clock.now() == START + 120.0
    waited = []

    class Stop:
        def wait(self, seconds):
            waited.append(seconds)

    clock.sleep(60.0, Stop())
    assert waited == [0.5]


def test_a_real_flat_file_schedule_is_used_when_nothing_is_mounted(tmp_path):
    config = tmp_path / "whereabouts.conf"
    config.write_text('{"reconciler_cron_expression": "*/30 * * * *"}')
    clock = FakeClock(START)
    log = JsonLog(stream=io.StringIO(), clock=clock.now)
    log.lines = []
    ran = []

    def run_pass():
        ran.append(clock.now())
        r = Report(False)
        r.ok = True
        return r

    watcher = ScheduleWatcher(ScheduleSources(os.path.join(str(tmp_path), "none", "config"), str(config)), log)
    Daemon(watcher, run_pass, clock, log).run(max_runs=2)
    assert [hhmm(t) for t in ran] == ["23:30:00", "00:00:00"]


def test_pool_gauges_follow_the_pools_and_forget_gone_ones():
    from cni_ipam.reconciler.daemon import Metrics

    metrics = Metrics()
    metrics.observe_pools([
        {"pool": "blue/192.0.2.0/24", "network_name": "blue", "size": 254, "held": 10, "free": 244},
        {"pool": "/10.0.0.0/30", "network_name": "", "size": 2, "held": 2, "free": 0},
    ])
    text = metrics.text()
    assert 'cni_ipam_reconciler_pool_size{network_name="blue",pool="blue/192.0.2.0/24"} 254.0' in text
    assert 'cni_ipam_reconciler_pool_held{network_name="blue",pool="blue/192.0.2.0/24"} 10.0' in text
    assert 'cni_ipam_reconciler_pool_free{network_name="",pool="/10.0.0.0/30"} 0.0' in text
    metrics.observe_pools([{"pool": "/10.0.0.0/30", "network_name": "", "size": 2, "held": 1, "free": 1}])
    text = metrics.text()
    assert "blue/192.0.2.0/24" not in text
    assert 'cni_ipam_reconciler_pool_free{network_name="",pool="/10.0.0.0/30"} 1.0' in text
