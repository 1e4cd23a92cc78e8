"""Output for the admin commands: tables with bars, JSON, YAML, and progress on stderr."""

from __future__ import annotations

import sys
import time

FORMATS = ("table", "json", "yaml")
BAR_WIDTH = 20


def render(rows: list, columns: list, fmt: str, out=None) -> None:
    """``rows`` are dicts; ``columns`` (header, function of a row) pick what the table shows."""
    out = out or sys.stdout
    if fmt == "json":
        import json

        out.write(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    elif fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(rows, sort_keys=True, default_flow_style=False) if rows else "[]\n")
    else:
        out.write(table([[header for header, _ in columns]] + [[str(f(r)) for _, f in columns] for r in rows]))


def table(cells: list) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in cells)


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    filled = min(width, int(round(percent * width / 100.0)))
    if percent > 0 and filled == 0:
        filled = 1  # a range with anything held never looks empty
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Progress:
    """``label: done/total`` on stderr: one rewritten line on a terminal, a line a second with ``--progress``."""

    def __init__(self, label: str, forced: bool = False, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = forced or self.tty
        self.label = label
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self.last < (0.1 if self.tty else 1.0):
            return
        self.last = now
        end = "\n" if not self.tty or done >= total else ""
        start = "\r" if self.tty else ""
        self.stream.write(f"{start}{self.label}: {done}/{total}{end}")
        self.stream.flush()
