"""The DHCP daemon: gets, renews and releases leases for pod interfaces.

``dhcp daemon [flags]`` (the plugin executable, as Go's), ``cni-ipam
dhcp-daemon [flags]`` or ``python -m cni_ipam.dhcp.daemon``.  It listens on
a Unix socket (default ``/run/cni/dhcp.sock``) for the plugin's requests
(:mod:`..rpc`).  Each lease has a thread of its own that runs a
:class:`~cni_ipam.dhcp.client.Client` state machine and does its I/O
(:mod:`..netio`) in the pod's network namespace, so one slow server or dead
pod never holds up another lease.  Leases are saved (:mod:`..store`) and
resumed when the daemon starts again.  Every lease event is a JSON log line
on stderr; metrics are served on an optional port.

The parts, each in its module: :mod:`.flags` (command line and settings),
:mod:`.logs`, :mod:`.metrics`, :mod:`.requests` (what the plugin asks,
checked), :mod:`.worker` (one lease's thread), :mod:`.manager` (all leases
and the answers to requests), :mod:`.server` (the socket).  This module
wires them together and runs them until a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from .. import netns
from . import logs
from .flags import Settings, build_parser
from .server import Daemon


class _Shutdown(Exception):
    """Raised in the main thread by SIGTERM or SIGINT: stop serving, then clean up."""


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run(args) -> int:
    """Run the daemon with parsed flags until SIGTERM or SIGINT."""
    settings = Settings(args)
    logs.setup(settings.log_level)
    _raise_fd_limit()
    threading.stack_size(512 * 1024)  # one thread per lease: keep each small
    netns.Home.open()  # the namespace to come back to (and never to serve), from the main thread
    d = Daemon(settings)
    d.listener = d.listen()

    def stop(signum, frame):
        if not d.stopping.is_set():
            d.stopping.set()
            raise _Shutdown()

    if settings.pidfile:
        with open(settings.pidfile, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    if settings.metrics_port:
        try:
            d.metrics.serve(d.manager, settings.metrics_address, settings.metrics_port)
        except ImportError:
            logs.emit(logging.ERROR, "daemon.metrics", "prometheus_client is not installed: no metrics endpoint")
    resumed = d.manager.resume_all()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logs.emit(logging.INFO, "daemon.start", f"listening on {settings.socket_path}", socket=settings.socket_path,
              lease_dir=settings.lease_dir, resumed=resumed, timeout=settings.timeout, pid=os.getpid())
    try:
        d.serve()
    except _Shutdown:
        pass
    finally:
        d.stopping.set()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            d.listener.close()
        except OSError:
            pass
        d.manager.stop_all()
        for path in ("" if d.activated else settings.socket_path, settings.pidfile):
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        logs.emit(logging.INFO, "daemon.stop", "stopped; leases stay saved and resume at the next start")
    return 0


def main(argv=None, prog: str = "dhcp daemon") -> int:
    args = build_parser(prog).parse_args(argv)
    return run(args)

