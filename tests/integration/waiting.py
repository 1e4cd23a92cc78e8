"""Waiting for something another process does (an agent's watch, a reconciler's freeing), without a fixed sleep."""

from __future__ import annotations

import time


def wait_until(test, what: str, timeout: float):
    """Poll ``test()`` every 50 ms until it is true (returned), or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = test()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)
