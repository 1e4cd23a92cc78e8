"""JSON-line logs: one object per line, ``ts``, ``level``, ``event``, ``msg`` and the event's fields.

``ts`` comes from the daemon's clock, so a test that drives the loop with
a fake clock reads the times it set.  ``msg`` is the line for a human;
the other fields are for machines (``jq 'select(.event=="freed")'``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def iso(epoch: float) -> str:
    """An epoch time as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLog:
    def __init__(self, stream=None, clock=time.time, level: str = "info") -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self.level = LEVELS[level]
        self.lines = None  # a list to keep every record in, for tests; None keeps nothing
        self._lock = threading.Lock()

    def __call__(self, event: str, msg: str, level: str = "info", **fields) -> dict:
        record = {"ts": iso(self.clock()), "level": level, "event": event, "msg": msg}
        record.update(fields)
        if self.lines is not None:
            self.lines.append(record)
        if LEVELS[level] >= self.level:
            text = json.dumps(record, default=str, separators=(",", ":"))
            with self._lock:
                self.stream.write(text + "\n")
                self.stream.flush()
        return record

    def records(self, event: str | None = None) -> list:
        """What was logged (when ``lines`` is a list), optionally only one event's records."""
        return [r for r in self.lines or () if event is None or r["event"] == event]
