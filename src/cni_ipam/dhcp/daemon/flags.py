"""The daemon's command line: Go's ``dhcp daemon`` flags (one dash or two) and ours, resolved to :class:`Settings`."""

from __future__ import annotations

import argparse
import os
import re

from ..rpc import DEFAULT_SOCKET

DEFAULT_LEASE_DIR = "/var/lib/cni/dhcp"

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (``10s``, ``1m30s``, ``500ms``) or plain seconds (``10``, ``2.5``)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            value += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 10s, 1m30s, 500ms, 2.5)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} is negative")
    return value


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "t", "true", "yes", "on"):
        return True
    if low in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Go's daemon flags (one dash, as Go writes them; two dashes work too) and ours."""
    go = parser.add_argument_group("flags of Go's dhcp daemon")
    go.add_argument("-socketpath", "--socketpath", "--socket-path", dest="socketpath", default=DEFAULT_SOCKET,
                    metavar="PATH", help=f"Unix socket to listen on (default {DEFAULT_SOCKET}); "
                                         "prefixed with -hostprefix")
    go.add_argument("-hostprefix", "--hostprefix", "--host-prefix", dest="hostprefix", default="", metavar="DIR",
                    help="where the host's / is mounted (e.g. /host in a DaemonSet): prefixes the socket path, "
                         "every pod's netns path and the default lease dir")
    go.add_argument("-pidfile", "--pidfile", dest="pidfile", default="", metavar="PATH",
                    help="write the daemon's PID here (absolute path)")
    go.add_argument("-timeout", "--timeout", dest="timeout", type=parse_duration, default=10.0, metavar="DURATION",
                    help="how long an ADD waits for a DHCP server to grant a lease (default 10s)")
    go.add_argument("-resendmax", "--resendmax", "--resend-max", dest="resendmax", type=parse_duration,
                    default=62.0, metavar="DURATION",
                    help="longest delay between two retransmissions (default 62s)")
    go.add_argument("-resendtimeout", "--resendtimeout", dest="resendtimeout", type=parse_duration, default=None,
                    metavar="DURATION", help="accepted for Go v1.6+ command lines; renewals retry until T2 and "
                                             "rebinding until the lease expires, as RFC 2131 says")
    go.add_argument("-broadcast", "--broadcast", dest="broadcast", type=parse_bool, nargs="?", const=True,
                    default=False, metavar="BOOL", help="set the BOOTP broadcast flag in requests (default false)")
    ours = parser.add_argument_group("cni-ipam flags")
    ours.add_argument("--lease-dir", "-leasedir", dest="lease_dir", default=None, metavar="DIR",
                      help=f"where leases are saved across restarts (default <hostprefix>{DEFAULT_LEASE_DIR})")
    ours.add_argument("--metrics-port", dest="metrics_port", type=int, default=0, metavar="PORT",
                      help="serve Prometheus metrics on this port (default: off)")
    ours.add_argument("--metrics-address", dest="metrics_address", default="0.0.0.0", metavar="ADDR",
                      help="address for the metrics port (default 0.0.0.0)")
    ours.add_argument("--check-interval", dest="check_interval", type=parse_duration, default=30.0,
                      metavar="DURATION", help="how often a bound lease checks that its pod's netns and "
                                               "interface still exist (default 30s)")
    ours.add_argument("--log-level", dest="log_level", default="info", choices=("debug", "info", "warning", "error"),
                      help="JSON log lines on stderr from this level (default info)")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="The DHCP daemon of cni-ipam's dhcp IPAM plugin: acquires, renews and releases DHCP "
                    "leases for pod interfaces, inside each pod's network namespace.",
        epilog="example: dhcp daemon -hostprefix /host -pidfile /run/cni/dhcp.pid")
    add_arguments(parser)
    return parser


class Settings:
    """The daemon's settings, resolved from the flags."""

    def __init__(self, args):
        self.hostprefix = args.hostprefix.rstrip("/")
        self.socket_path = self.hostprefix + args.socketpath
        self.pidfile = args.pidfile
        if self.pidfile and not os.path.isabs(self.pidfile):
            raise SystemExit(f"dhcp daemon: -pidfile must be an absolute path, got {self.pidfile!r}")
        if args.timeout <= 0:
            raise SystemExit("dhcp daemon: -timeout must be more than 0")
        self.timeout = args.timeout
        self.resend_max = max(args.resendmax, 0.5)
        self.resend_initial = min(1.0, self.resend_max)
        self.broadcast = bool(args.broadcast)
        self.lease_dir = args.lease_dir or self.hostprefix + DEFAULT_LEASE_DIR
        self.metrics_port = args.metrics_port
        self.metrics_address = args.metrics_address
        self.check_interval = max(args.check_interval, 0.2)
        self.log_level = args.log_level

    def netns_path(self, netns: str) -> str:
        return self.hostprefix + netns

