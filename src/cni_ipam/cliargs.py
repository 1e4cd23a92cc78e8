"""Shared by the ``cni-ipam`` commands: one way to read a number of seconds, one way to stop on a signal."""

from __future__ import annotations

import argparse


def seconds(zero_allowed: bool, most: float | None = None):
    """An argparse ``type`` for a number of seconds: 0 or more (``zero_allowed``) or more than 0, at most
    ``most``; a refused value is named in the error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or (value == 0 and not zero_allowed):
            raise argparse.ArgumentTypeError(f"{text!r} must not be negative" if zero_allowed
                                             else f"{text!r} must be more than 0")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {most:g}")
        return value
    return parse


def stop_on_signals():
    """A ``threading.Event`` set by SIGTERM (the kubelet stopping a pod) or SIGINT: long-running
    commands wait on it between their rounds and end cleanly."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop
