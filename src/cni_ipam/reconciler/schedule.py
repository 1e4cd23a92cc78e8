"""Where the reconciler's cron expression comes from, and noticing when it changes.

Sources, first found wins:

1. the ConfigMap ``whereabouts-config`` mounted at the schedule path
   (default ``/cron-schedule/config``): that file holds the expression.  If
   the path is a directory, or is absent but its directory exists, the
   files ``reconciler_cron_expression`` (OpenShift's key) and then
   ``cron-expression`` (upstream whereabouts' key) in it are read, which is
   what a ConfigMap mounted without ``items`` looks like;
2. ``reconciler_cron_expression`` in the whereabouts flat file (the file
   given with ``--config``, else whereabouts' standard locations);
3. the default ``30 4 * * *`` (04:30 UTC daily).

An empty file counts as absent.  A found expression that is invalid is
refused, with a message saying why and which schedule stays in force: at
start-up the next source's; later, the schedule already running.

Changes are found by polling ``stat`` of every file involved (inode,
mtime, size, symlink target, and the target of the ``..data`` link that
the kubelet swaps atomically when a ConfigMap changes), so no inotify
dependency is needed and a swap that keeps size and mtime is still seen.
"""

from __future__ import annotations

import os

from .cron import CronError, CronSchedule, parse

DEFAULT_EXPRESSION = "30 4 * * *"
DEFAULT_SCHEDULE_FILE = "/cron-schedule/config"
KEY_FILES = ("reconciler_cron_expression", "cron-expression")
FLAT_KEY = "reconciler_cron_expression"


class Found:
    """An expression found at a source (``problem`` set when the source itself could not be read)."""

    __slots__ = ("source", "text", "problem")

    def __init__(self, source: str, text: str = "", problem: str = "") -> None:
        self.source = source
        self.text = text
        self.problem = problem

    def schedule(self) -> CronSchedule:
        if self.problem:
            raise CronError(self.problem)
        return parse(self.text)

    def __repr__(self):
        return f"Found({self.source!r}, {self.text!r}, {self.problem!r})"


class ScheduleSources:
    """Reads the three sources; ``signature()`` changes whenever one of their files may have."""

    def __init__(self, schedule_file: str = DEFAULT_SCHEDULE_FILE, config_path: str | None = None,
                 default: str = DEFAULT_EXPRESSION) -> None:
        self.schedule_file = schedule_file
        self.config_path = config_path
        self.default = default

    def mount_files(self) -> list:
        """The files that may hold the ConfigMap's value, in order."""
        path = self.schedule_file
        if os.path.isdir(path):
            return [os.path.join(path, key) for key in KEY_FILES]
        if os.path.exists(path):
            return [path]
        return [path] + [os.path.join(os.path.dirname(path), key) for key in KEY_FILES]

    def flat_files(self) -> list:
        from ..config.whereabouts import FLAT_FILE_PATHS

        return [self.config_path] if self.config_path else list(FLAT_FILE_PATHS)

    def signature(self) -> tuple:
        directories = {self.schedule_file, os.path.dirname(self.schedule_file)}
        paths = sorted(directories) + [os.path.join(d, "..data") for d in sorted(directories)]
        paths += self.mount_files() + [os.path.join(self.schedule_file, k) for k in KEY_FILES] + self.flat_files()
        return tuple(_stat(p) for p in paths)

    def find(self) -> list:
        """What each source holds, in order of precedence; the default is always last."""
        found = []
        for path in self.mount_files():
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read().strip()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as exc:
                found.append(Found(path, problem=f"cannot read {path}: {exc.strerror or exc}"))
                break
            if text:
                found.append(Found(path, text))
                break
        found.extend(self._flat())
        found.append(Found("the default", self.default))
        return found

    def _flat(self) -> list:
        from ..config.admin import ConfigFileError, read_config

        try:
            ipam, source = read_config(self.config_path)
        except ConfigFileError as exc:
            return [Found(f"flat file {self.config_path or 'whereabouts.conf'}", problem=f"cannot read it: {exc}")]
        if source is None or FLAT_KEY not in ipam:
            return []
        value = ipam[FLAT_KEY]
        where = f"{FLAT_KEY} in {source}"
        if not isinstance(value, str):
            return [Found(where, problem=f"{where} must be a string, not {value!r}")]
        return [Found(where, value.strip())] if value.strip() else []


def _stat(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)
    try:
        link = os.readlink(path)
    except OSError:
        link = None
    return (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, link)


class ScheduleWatcher:
    """The schedule in force, reloaded when its sources change; every decision is logged."""

    def __init__(self, sources: ScheduleSources, log) -> None:
        self.sources = sources
        self.log = log
        self.current = None  # CronSchedule
        self.source = ""
        self._signature = None
        self._refused = None  # (source, text) last refused, so an unchanged bad file is reported once

    def load(self) -> CronSchedule:
        """Pick the schedule at start-up: the first valid source; refusals name the one that is used."""
        self._signature = self.sources.signature()
        refused = []
        for found in self.sources.find():
            try:
                schedule = found.schedule()
            except CronError as exc:
                refused.append((found, exc))
                continue
            self.current, self.source = schedule, found.source
            break
        else:  # only a bad --default could get here
            raise CronError(f"no usable cron expression: {'; '.join(str(e) for _, e in refused)}")
        for found, exc in refused:
            self._refuse(found, exc)
        self.log("schedule", f"reconciling on schedule {self.current.text!r} from {self.source}"
                 + (f": {self.current.explain()}" if self.current.explain() else ""),
                 expression=self.current.text, source=self.source)
        return self.current

    def _refuse(self, found: Found, exc: CronError) -> None:
        self._refused = (found.source, found.text, found.problem)
        self.log("schedule-refused",
                 f"refused the cron expression from {found.source}: {exc}. The schedule in force stays "
                 f"{self.current.text!r} (from {self.source})",
                 level="error", source=found.source, expression=found.text, why=str(exc),
                 in_force=self.current.text, in_force_source=self.source)

    def poll(self) -> bool:
        """Re-read the sources if a file changed; True when the schedule in force changed."""
        signature = self.sources.signature()
        if signature == self._signature:
            return False
        self._signature = signature
        winner = self.sources.find()[0]
        try:
            schedule = winner.schedule()
        except CronError as exc:
            if self._refused != (winner.source, winner.text, winner.problem):
                self._refuse(winner, exc)
            return False
        self._refused = None
        if schedule == self.current and winner.source == self.source:
            self.log("schedule-unchanged", f"schedule files changed on disk; the expression is still "
                     f"{schedule.text!r} from {winner.source}", level="debug", expression=schedule.text,
                     source=winner.source)
            return False
        old, old_source = self.current, self.source
        self.current, self.source = schedule, winner.source
        self.log("schedule-changed", f"schedule changed from {old.text!r} ({old_source}) to {schedule.text!r} "
                 f"({winner.source}); it applies from the next run, no restart needed",
                 expression=schedule.text, source=winner.source, previous=old.text, previous_source=old_source)
        return schedule != old
