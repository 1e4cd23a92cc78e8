"""The daemon's log: one JSON object per line on stderr, each with an ``event`` name and the lease's fields."""

from __future__ import annotations

import json
import logging
import sys
import time

LOG = logging.getLogger("cni_ipam.dhcp")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
               "event": getattr(record, "event", "log"), "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def emit(level: int, event: str, msg: str, **fields) -> None:
    LOG.log(level, msg, extra={"event": event, "fields": fields})


def setup(level: str) -> None:
    """Send the daemon's log to stderr as JSON lines from ``level`` on."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False

