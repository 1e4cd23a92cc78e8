"""Where the schedule comes from, and how a change on disk (including the kubelet's ``..data`` swap) is seen."""

from __future__ import annotations

import json
import os

import pytest

from cni_ipam.reconciler.log import JsonLog
from cni_ipam.reconciler.schedule import ScheduleSources, ScheduleWatcher


class Mount:
    """A ConfigMap volume as the kubelet's atomic writer lays it out.

    ``<dir>/<key>`` -> ``..data/<key>``, ``..data`` -> ``..<timestamp>``;
    an update writes a new timestamped directory, points a temporary link
    at it and renames that over ``..data``, then removes the old directory.
    """

    def __init__(self, directory, key: str = "config") -> None:
        self.dir = str(directory)
        self.key = key
        self.generation = 0
        os.makedirs(self.dir, exist_ok=True)

    def write(self, value: str) -> None:
        self.write_all({self.key: value})

    def write_all(self, values: dict) -> None:
        """One ConfigMap update carrying these keys (and only these)."""
        self.generation += 1
        payload = os.path.join(self.dir, f"..2026_11_27_10_00_0{self.generation}.000000001")
        os.makedirs(payload)
        for key, value in values.items():
            with open(os.path.join(payload, key), "w") as handle:
                handle.write(value)
        data = os.path.join(self.dir, "..data")
        old = os.readlink(data) if os.path.islink(data) else None
        os.symlink(os.path.basename(payload), data + "_tmp")
        os.rename(data + "_tmp", data)  # the atomic swap
        for key in values:
            link = os.path.join(self.dir, key)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", key), link)
        if old:
            old_dir = os.path.join(self.dir, old)
            for name in os.listdir(old_dir):
                os.unlink(os.path.join(old_dir, name))
            os.rmdir(old_dir)

    @property
    def path(self) -> str:
        return os.path.join(self.dir, self.key)


def flat_file(tmp_path, **keys) -> str:
    path = tmp_path / "whereabouts.conf"
    path.write_text(json.dumps(dict({"datastore": "sqlite", "sqlite_path": str(tmp_path / "db")}, **keys)))
    return str(path)


def watcher_for(schedule_file, config_path) -> tuple:
    log = JsonLog(stream=open(os.devnull, "w"))
    log.lines = []
    return ScheduleWatcher(ScheduleSources(str(schedule_file), config_path), log), log


# --- sources and their order ---

def test_configmap_file_wins_over_flat_file_and_default(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("*/15 * * * *\n")
    watcher, log = watcher_for(mount.path, flat_file(tmp_path, reconciler_cron_expression="0 1 * * *"))
    assert watcher.load().text == "*/15 * * * *"
    assert watcher.source == mount.path
    assert log.records("schedule")[0]["expression"] == "*/15 * * * *"


@pytest.mark.parametrize("key", ["reconciler_cron_expression", "cron-expression"])
def test_a_directory_mount_is_read_by_key(tmp_path, key):
    mount = Mount(tmp_path / "cron-schedule", key=key)
    mount.write("*/5 * * * *")
    for given in (mount.dir, os.path.join(mount.dir, "config")):  # the directory, or the default file inside it
        watcher, _ = watcher_for(given, flat_file(tmp_path))
        assert watcher.load().text == "*/5 * * * *"
        assert watcher.source == mount.path


def test_openshift_key_wins_over_upstream_key(tmp_path):
    Mount(tmp_path / "m").write_all({"cron-expression": "1 1 * * *", "reconciler_cron_expression": "2 2 * * *"})
    watcher, _ = watcher_for(tmp_path / "m", flat_file(tmp_path))
    assert watcher.load().text == "2 2 * * *"


def test_flat_file_when_nothing_is_mounted(tmp_path):
    config = flat_file(tmp_path, reconciler_cron_expression="*/10 * * * *")
    watcher, _ = watcher_for(tmp_path / "absent" / "config", config)
    assert watcher.load().text == "*/10 * * * *"
    assert watcher.source == f"reconciler_cron_expression in {config}"


def test_flat_file_inside_a_network_config(tmp_path):
    path = tmp_path / "net.conf"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                                "ipam": {"type": "whereabouts", "reconciler_cron_expression": "7 7 * * *"}}))
    watcher, _ = watcher_for(tmp_path / "absent", str(path))
    assert watcher.load().text == "7 7 * * *"


def test_default_when_no_source_has_one(tmp_path):
    watcher, _ = watcher_for(tmp_path / "absent", flat_file(tmp_path))
    assert watcher.load().text == "30 4 * * *"
    assert watcher.source == "the default"


def test_an_empty_configmap_file_counts_as_absent(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("  \n")
    watcher, _ = watcher_for(mount.path, flat_file(tmp_path, reconciler_cron_expression="0 2 * * *"))
    assert watcher.load().text == "0 2 * * *"


# --- refusals at start-up name the schedule that is used instead ---

def test_six_fields_in_the_configmap_are_refused_and_the_next_source_used(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("0 */5 * * * *")
    config = flat_file(tmp_path, reconciler_cron_expression="0 3 * * *")
    watcher, log = watcher_for(mount.path, config)
    assert watcher.load().text == "0 3 * * *"
    [refused] = log.records("schedule-refused")
    assert refused["level"] == "error"
    assert refused["source"] == mount.path
    assert "has 6 fields, but a seconds field is not supported" in refused["msg"]
    assert refused["in_force"] == "0 3 * * *"
    assert f"The schedule in force stays '0 3 * * *' (from reconciler_cron_expression in {config})" in refused["msg"]


def test_bad_configmap_and_bad_flat_file_leave_the_default(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("whenever")
    watcher, log = watcher_for(mount.path, flat_file(tmp_path, reconciler_cron_expression=15))
    assert watcher.load().text == "30 4 * * *"
    refusals = log.records("schedule-refused")
    assert [r["source"] for r in refusals] == [mount.path, f"reconciler_cron_expression in {tmp_path}/whereabouts.conf"]
    assert "has 1 field;" in refusals[0]["why"]
    assert "must be a string, not 15" in refusals[1]["why"]
    assert all(r["in_force"] == "30 4 * * *" and r["in_force_source"] == "the default" for r in refusals)


def test_an_unreadable_flat_file_is_reported_and_skipped(tmp_path):
    bad = tmp_path / "whereabouts.conf"
    bad.write_text("{not json")
    watcher, log = watcher_for(tmp_path / "absent", str(bad))
    assert watcher.load().text == "30 4 * * *"
    assert "cannot read it" in log.records("schedule-refused")[0]["why"]


# --- changes while running ---

def test_nothing_changed_means_no_reload(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("*/5 * * * *")
    watcher, log = watcher_for(mount.path, flat_file(tmp_path))
    watcher.load()
    assert watcher.poll() is False
    assert watcher.poll() is False
    assert log.records("schedule-changed") == []


def test_a_data_swap_is_seen_even_with_the_same_size_and_mtime(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("*/5 * * * *")
    watcher, log = watcher_for(mount.path, flat_file(tmp_path))
    watcher.load()
    before = os.stat(mount.path)
    mount.write("*/7 * * * *")  # same length
    os.utime(mount.path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    assert os.stat(mount.path).st_size == before.st_size
    assert watcher.poll() is True
    assert watcher.current.text == "*/7 * * * *"
    [changed] = log.records("schedule-changed")
    assert (changed["previous"], changed["expression"], changed["source"]) == ("*/5 * * * *", "*/7 * * * *", mount.path)
    assert "no restart needed" in changed["msg"]
    assert watcher.poll() is False


def test_a_plain_file_rewritten_in_place_is_seen(tmp_path):
    path = tmp_path / "config"
    path.write_text("*/5 * * * *")
    watcher, _ = watcher_for(path, flat_file(tmp_path))
    watcher.load()
    path.write_text("*/30 * * * *")
    assert watcher.poll() is True
    assert watcher.current.text == "*/30 * * * *"


def test_a_swap_to_the_same_expression_changes_nothing(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("*/5 * * * *")
    watcher, log = watcher_for(mount.path, flat_file(tmp_path))
    watcher.load()
    mount.write("*/5 * * * *\n")
    assert watcher.poll() is False
    assert log.records("schedule-changed") == []
    assert watcher.current.text == "*/5 * * * *"


def test_an_invalid_change_is_refused_once_and_the_running_schedule_stays(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("*/5 * * * *")
    watcher, log = watcher_for(mount.path, flat_file(tmp_path, reconciler_cron_expression="0 1 * * *"))
    watcher.load()
    mount.write("*/10 * * * * *")
    assert watcher.poll() is False
    assert watcher.current.text == "*/5 * * * *"  # not the flat file's: the running schedule stays
    [refused] = log.records("schedule-refused")
    assert refused["in_force"] == "*/5 * * * *" and refused["in_force_source"] == mount.path
    assert "The schedule in force stays '*/5 * * * *'" in refused["msg"]
    os.utime(mount.path)  # touched, still bad: not reported again
    assert watcher.poll() is False
    assert len(log.records("schedule-refused")) == 1
    mount.write("*/20 * * * *")  # fixed
    assert watcher.poll() is True
    assert watcher.current.text == "*/20 * * * *"


def test_removing_the_configmap_key_falls_back_to_the_flat_file(tmp_path):
    mount = Mount(tmp_path / "cron-schedule")
    mount.write("*/5 * * * *")
    config = flat_file(tmp_path, reconciler_cron_expression="0 1 * * *")
    watcher, log = watcher_for(mount.path, config)
    watcher.load()
    os.unlink(mount.path)
    assert watcher.poll() is True
    assert watcher.current.text == "0 1 * * *"
    assert log.records("schedule-changed")[0]["source"] == f"reconciler_cron_expression in {config}"


def test_a_changed_flat_file_is_seen(tmp_path):
    config = flat_file(tmp_path, reconciler_cron_expression="0 1 * * *")
    watcher, _ = watcher_for(tmp_path / "absent", config)
    watcher.load()
    flat_file(tmp_path, reconciler_cron_expression="0 2 * * *")
    assert watcher.poll() is True
    assert watcher.current.text == "0 2 * * *"


def test_a_configmap_mounted_later_takes_over(tmp_path):
    watcher, _ = watcher_for(tmp_path / "cron-schedule" / "config", flat_file(tmp_path))
    assert watcher.load().text == "30 4 * * *"
    Mount(tmp_path / "cron-schedule").write("*/2 * * * *")
    assert watcher.poll() is True
    assert watcher.current.text == "*/2 * * * *"
