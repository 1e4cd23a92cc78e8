"""The DHCP daemon: gets, renews and releases leases for pod interfaces.

``dhcp daemon [flags]`` (the plugin executable, as Go's) or ``cni-ipam
dhcp-daemon [flags]``.  It listens on a Unix socket (default
``/run/cni/dhcp.sock``) for the plugin's requests (:mod:`.rpc`).  Each
lease has a thread of its own that runs a :class:`~.client.Client` state
machine and does its I/O (:mod:`.netio`) in the pod's network namespace,
so one slow server or dead pod never holds up another lease.  Leases are
saved (:mod:`.store`) and resumed when the daemon starts again.  Every lease
event is a JSON log line on stderr; metrics are served on an optional port.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time

from . import client as dhcp_client
from . import netio
from .lease import Lease, LeaseError, cni_view
from .names import RESERVED
from .rpc import DEFAULT_SOCKET
from .store import LeaseStore

LOG = logging.getLogger("cni_ipam.dhcp")
DEFAULT_LEASE_DIR = "/var/lib/cni/dhcp"
RECORD_VERSION = 1
ADD_MARGIN = 3.0           # link set-up and carrier wait, on top of -timeout
RELEASE_WAIT = 3.0         # how long DEL waits for the RELEASE to be sent
MAX_REQUEST = 1 << 20

# CNI error codes the daemon answers with (the plugin passes them on).
UNKNOWN_CONTAINER, INVALID_CONFIG, TRY_AGAIN_LATER = 3, 7, 11


# --- flags -----------------------------------------------------------------------------------------

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


# --- logs and metrics ------------------------------------------------------------------------------

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


class Metrics:
    """Counters the daemon keeps; exported by prometheus_client when a metrics port is given."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = {}
        self.renew_failures = 0
        self.acquire_seconds = []

    def event(self, kind: str) -> None:
        with self.lock:
            self.events[kind] = self.events.get(kind, 0) + 1
            if kind in ("rebinding", "expired", "nak"):
                self.renew_failures += 1

    def acquired(self, seconds: float) -> None:
        with self.lock:
            self.acquire_seconds.append(seconds)
            del self.acquire_seconds[:-1000]

    def serve(self, manager, address: str, port: int):
        """Start prometheus_client's HTTP server with a collector reading this object and the manager."""
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        metrics = self

        class Collector:
            def collect(self):
                states = manager.count_by_state()
                active = GaugeMetricFamily("cni_ipam_dhcp_leases", "Leases the daemon keeps, by client state",
                                           labels=["state"])
                for state in dhcp_client.TRANSITIONS:
                    active.add_metric([state], states.get(state, 0))
                yield active
                yield GaugeMetricFamily("cni_ipam_dhcp_active_leases", "Leases held (bound, renewing or rebinding)",
                                        value=sum(states.get(s, 0) for s in dhcp_client.HOLDING))
                with metrics.lock:
                    failures = metrics.renew_failures
                    events = dict(metrics.events)
                    samples = list(metrics.acquire_seconds)
                yield CounterMetricFamily("cni_ipam_dhcp_renew_failures", "Renewals that failed: rebinding "
                                          "started, or the lease expired or was refused", value=failures)
                family = CounterMetricFamily("cni_ipam_dhcp_lease_events", "Lease events by kind", labels=["event"])
                for kind, count in sorted(events.items()):
                    family.add_metric([kind], count)
                yield family
                if samples:
                    yield GaugeMetricFamily("cni_ipam_dhcp_last_acquire_seconds",
                                            "Time the most recent acquisition took", value=samples[-1])

        registry = CollectorRegistry()
        registry.register(Collector())
        return start_http_server(port, addr=address, registry=registry)


# --- one lease -------------------------------------------------------------------------------------

class RequestError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def _text(request: dict, key: str, required: bool = True) -> str:
    value = request.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise RequestError(INVALID_CONFIG, f"request field {key!r} must be a non-empty string, got {value!r}")
    return value


class Spec:
    """Which attachment a lease is for and what to ask the server."""

    __slots__ = ("key", "container_id", "network", "ifname", "netns", "params", "extra")

    def __init__(self, container_id, network, ifname, netns="", params=(), extra=None):
        self.container_id = container_id
        self.network = network
        self.ifname = ifname
        self.netns = netns
        self.key = f"{container_id}/{network}/{ifname}"
        self.params = tuple(params)
        self.extra = dict(extra or {})

    @classmethod
    def from_request(cls, request: dict, with_options: bool = True) -> "Spec":
        spec = cls(_text(request, "containerID"), _text(request, "network"), _text(request, "ifname"),
                   request.get("netns") or "")
        if not with_options:
            return spec
        if not isinstance(spec.netns, str) or not spec.netns.startswith("/"):
            raise RequestError(INVALID_CONFIG, f"netns must be an absolute path, got {spec.netns!r}")
        params = request.get("params", [1, 3])
        if not isinstance(params, list) or not all(isinstance(p, int) and 1 <= p <= 254 for p in params):
            raise RequestError(INVALID_CONFIG, f"params must be a list of option codes 1-254, got {params!r}")
        spec.params = tuple(params)
        provide = request.get("provide", {})
        if not isinstance(provide, dict):
            raise RequestError(INVALID_CONFIG, f"provide must be an object, got {provide!r}")
        for code, value in provide.items():
            try:
                number, data = int(code), bytes.fromhex(value)
            except (TypeError, ValueError):
                raise RequestError(INVALID_CONFIG, f"provide: {code!r}: {value!r} is not code: hex bytes") from None
            if not 1 <= number <= 254 or number in RESERVED or len(data) > 255:
                raise RequestError(INVALID_CONFIG, f"provide: option {code} cannot be sent (reserved, out of "
                                                   f"range or longer than 255 bytes)")
            spec.extra[number] = data
        return spec

    def to_record(self) -> dict:
        return {"container_id": self.container_id, "network": self.network, "ifname": self.ifname,
                "netns": self.netns, "params": list(self.params),
                "extra": {str(k): v.hex() for k, v in self.extra.items()}}

    @classmethod
    def from_record(cls, record: dict) -> "Spec":
        return cls(record["container_id"], record["network"], record["ifname"], record["netns"], record["params"],
                   {int(k): bytes.fromhex(v) for k, v in record["extra"].items()})

    def fields(self) -> dict:
        return {"lease": self.key, "container_id": self.container_id, "network": self.network,
                "ifname": self.ifname}


def wall_of(mono: float) -> float:
    return time.time() - (time.monotonic() - mono)


def mono_of(wall: float) -> float:
    return time.monotonic() - (time.time() - wall)


class Worker(threading.Thread):
    """One lease's thread: its state machine, its sockets while an exchange runs, its timers."""

    def __init__(self, daemon: "Daemon", spec: Spec, lease: Lease | None = None, record: dict | None = None):
        super().__init__(name=f"lease {spec.key}", daemon=True)
        self.d = daemon
        self.spec = spec
        self.path = daemon.settings.netns_path(spec.netns)
        self.client = None
        self.io = None
        self.resume_lease = lease
        self.mac = bytes.fromhex(record["mac"]) if record else None
        self.server_mac = bytes.fromhex(record["server_mac"]) if record and record.get("server_mac") else None
        self.identity = tuple(record["netns_identity"]) if record and record.get("netns_identity") else None
        self.commands = []
        self.command_lock = threading.Lock()
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.settled = threading.Event()  # the first acquisition ended, either way
        self.finished = threading.Event()
        self.error = None                 # (code, msg, details) when the acquisition failed
        self.dropped = ""                 # why the lease was dropped (netns or link gone)
        self.last_reason = ""
        self.release_sent = False
        self.release_note = ""
        self.started_at = time.monotonic()
        self.renewals = 0
        self.next_check = time.monotonic() + daemon.settings.check_interval

    # -- from other threads --
    def command(self, what: str) -> None:
        with self.command_lock:  # the same lock closes the eventfd: never write to a reused fd number
            if self.wakeup is None:
                return
            self.commands.append(what)
            try:
                os.eventfd_write(self.wakeup, 1)
            except OSError:
                pass

    @property
    def state(self) -> str:
        if self.dropped:
            return "dropped"
        return self.client.state if self.client is not None else dhcp_client.INIT

    def holding(self) -> bool:
        return self.client is not None and not self.dropped and self.client.state in dhcp_client.HOLDING

    def snapshot(self) -> dict:
        client = self.client
        lease = client.lease if client is not None else None
        out = {"key": self.spec.key, "containerID": self.spec.container_id, "network": self.spec.network,
               "ifname": self.spec.ifname, "netns": self.spec.netns, "state": self.state,
               "renewals": self.renewals}
        if lease is not None:
            out.update(address=lease.address, server=lease.server_id)
            for name, value in (("renew_at", lease.renew_at), ("rebind_at", lease.rebind_at),
                                ("expires_at", lease.expires_at)):
                out[name] = None if value is None else round(wall_of(value), 3)
        if self.dropped or self.last_reason:
            out["reason"] = self.dropped or self.last_reason
        return out

    # -- the thread --
    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug: report it, free the caller, never take the daemon down
            LOG.exception("lease thread failed", extra={"event": "lease.crashed", "fields": self.spec.fields()})
            self._fail(TRY_AGAIN_LATER, f"internal error in the DHCP daemon: {type(exc).__name__}: {exc}")
        finally:
            self._close_io()
            with self.command_lock:
                os.close(self.wakeup)
                self.wakeup = None
            self.settled.set()
            self.finished.set()
            self.d.manager.finished(self)

    def _run(self) -> None:
        now = time.monotonic()
        if self.resume_lease is not None:
            self.client = dhcp_client.Client(self._config(self.mac))
            try:
                self.identity = netio.check_link(self.path, self.spec.ifname, self.identity)
            except netio.Gone as exc:
                self.client.lease = self.resume_lease
                self._drop(str(exc))
                return
            except OSError as exc:  # not a verdict on the pod: carry on, the next exchange looks again
                emit(logging.WARNING, "lease.check_failed", f"cannot look at {self.spec.netns}: {exc}",
                     **self.spec.fields())
            actions = self.client.resume(self.resume_lease, now)
            self.settled.set()
        else:
            emit(logging.INFO, "lease.acquiring", f"acquiring a lease on {self.spec.ifname} in {self.spec.netns}",
                 **self.spec.fields(), netns=self.spec.netns)
            try:
                self.io = netio.LinkIO(self.path, self.spec.ifname,
                                       carrier_wait=min(2.0, self.d.settings.timeout / 2))
            except netio.Gone as exc:
                self._fail(UNKNOWN_CONTAINER, str(exc), "the pod's network namespace or interface is missing")
                return
            except OSError as exc:
                self._fail(TRY_AGAIN_LATER, f"cannot open {self.spec.ifname} in {self.spec.netns}: {exc}")
                return
            self.identity = self.io.identity
            self.mac = self.io.mac
            if self.io.brought_up:
                emit(logging.INFO, "link.up", f"{self.spec.ifname} was down: set it up", **self.spec.fields())
            self.client = dhcp_client.Client(self._config(self.mac))
            actions = self.client.start(time.monotonic())
        while True:
            if self._apply(actions):
                return
            state = self.client.state
            if state in dhcp_client.TERMINAL:
                return
            if state == dhcp_client.BOUND:
                self._close_io()
            actions = self._next_input()
            if actions is None:  # told to stop (daemon shutdown): keep the lease on disk
                return

    def _config(self, mac: bytes) -> dhcp_client.Config:
        s = self.d.settings
        return dhcp_client.Config(
            mac, dhcp_client.client_identifier(self.spec.container_id, self.spec.network, self.spec.ifname),
            params=self.spec.params, extra=self.spec.extra, timeout=s.timeout, resend_initial=s.resend_initial,
            resend_max=s.resend_max, broadcast_flag=s.broadcast)

    def _next_input(self):
        """Block until a packet, a command, the state machine's timer or the liveness check; return actions."""
        while True:
            now = time.monotonic()
            wake_at = self.client.wake_at
            due = self.next_check if wake_at is None else min(wake_at, self.next_check)
            poller = select.poll()
            poller.register(self.wakeup, select.POLLIN)
            if self.io is not None:
                poller.register(self.io.fileno(), select.POLLIN)
            ready = {fd for fd, _ in poller.poll(max(0.0, due - now) * 1000 + 1)}
            now = time.monotonic()
            if self.wakeup in ready:
                try:
                    os.eventfd_read(self.wakeup)
                except OSError:
                    pass
                with self.command_lock:
                    commands, self.commands = self.commands, []
                if "release" in commands:
                    return self.client.release(now)
                if "stop" in commands:
                    return None
                if "check" in commands:
                    self.next_check = now
            if self.io is not None and self.io.fileno() in ready:
                actions = []
                for message, sender in self.io.receive():
                    out = self.client.receive(message, time.monotonic())
                    if any(isinstance(a, dhcp_client.Event) and a.kind in ("bound", "renewed", "rebound")
                           for a in out):
                        self.server_mac = sender
                    actions += out
                if actions:
                    return actions
            if now >= self.next_check:
                self.next_check = now + self.d.settings.check_interval
                try:
                    self.identity = netio.check_link(self.path, self.spec.ifname, self.identity)
                except netio.Gone as exc:
                    self._drop(str(exc))
                    return [_Stop()]
                except OSError as exc:
                    emit(logging.WARNING, "lease.check_failed", f"cannot look at {self.spec.netns}: {exc}",
                         **self.spec.fields())
            if wake_at is not None and now >= wake_at:
                return self.client.timer(now)

    def _apply(self, actions) -> bool:
        """Do what the state machine said; True when the thread should end."""
        for action in actions:
            if isinstance(action, _Stop):
                return True
            if isinstance(action, dhcp_client.Send):
                if self._send(action):
                    return True
            elif isinstance(action, dhcp_client.Event):
                self._on_event(action)
        return False

    def _send(self, action: dhcp_client.Send) -> bool:
        releasing = action.message.message_type == 7
        try:
            if self.io is None:
                self.io = netio.LinkIO(self.path, self.spec.ifname, self.identity, carrier_wait=0.5,
                                       source=action.source)
            self.io.send(action.message.encode(), action.broadcast, action.source, action.server, self.server_mac)
            if releasing:
                self.release_sent = True
            return False
        except netio.Gone as exc:
            if releasing:
                self.release_note = f"DHCPRELEASE not sent: {exc}"
                return False
            self._drop(str(exc))
            return True
        except OSError as exc:
            if releasing:
                self.release_note = f"DHCPRELEASE not sent: {exc}"
                return False
            self._close_io()  # open afresh next time; the state machine's timer paces the retries
            emit(logging.WARNING, "lease.send_failed", f"sending {action.message.type_name} failed: {exc}",
                 **self.spec.fields())
            return False

    def _on_event(self, event: dhcp_client.Event) -> None:
        kind = event.kind
        fields = self.spec.fields()
        lease = event.lease
        if lease is not None:
            fields.update(address=lease.address, server=lease.server_id)
            if lease.expires_at is not None and kind in ("bound", "renewed", "rebound", "resumed"):
                fields.update(renew_in=round(lease.renew_at - time.monotonic(), 1),
                              expires_in=round(lease.expires_at - time.monotonic(), 1))
        if event.reason:
            fields["reason"] = event.reason
            self.last_reason = event.reason
        self.d.metrics.event(kind)
        if kind == "bound":
            took = time.monotonic() - self.started_at
            self.d.metrics.acquired(took)
            self._save()
            emit(logging.INFO, "lease.bound", f"bound {lease.address} from {lease.server_id} in {took * 1000:.0f} ms",
                 **fields)
            self.settled.set()
        elif kind in ("renewed", "rebound"):
            self.renewals += 1
            self.last_reason = ""
            self._save()
            emit(logging.INFO, f"lease.{kind}", f"{kind} {lease.address} with {lease.server_id}", **fields)
        elif kind == "renewing":
            emit(logging.INFO, "lease.renewing", f"renewing {lease.address} with {lease.server_id}", **fields)
        elif kind == "rebinding":
            emit(logging.WARNING, "lease.rebinding",
                 f"no answer from {lease.server_id} to the renewal of {lease.address} before T2: rebinding "
                 "by broadcast", **fields)
        elif kind in ("expired", "nak"):
            self.d.store.delete(self.spec.key)
            emit(logging.ERROR, "lease.lost" if kind == "nak" else "lease.expired",
                 f"lost {lease.address}: {event.reason}", **fields)
        elif kind == "failed":
            self._fail(TRY_AGAIN_LATER, f"dhcp: no lease for {self.spec.ifname}: {event.reason}",
                       "is a DHCP server reachable from the pod's interface? (the daemon's -timeout sets how "
                       "long an ADD waits)")
        elif kind == "released":
            self.d.store.delete(self.spec.key)
            emit(logging.INFO, "lease.released", event.reason, **fields)
        elif kind == "resumed":
            emit(logging.INFO, "lease.resumed", f"resumed {lease.address} from the lease file", **fields)
        elif kind == "offer":
            emit(logging.DEBUG, "lease.offer", event.reason, **fields)
        elif kind == "refused":
            emit(logging.WARNING, "lease.refused", event.reason, **fields)
        else:
            emit(logging.DEBUG, f"lease.{kind}", event.reason or kind, **fields)

    def _fail(self, code: int, msg: str, details: str = "") -> None:
        if self.error is None and not self.settled.is_set():
            self.error = (code, msg, details)
            emit(logging.WARNING, "lease.failed", msg, **self.spec.fields())
        self.settled.set()

    def _drop(self, why: str) -> None:
        self.dropped = why
        self.d.store.delete(self.spec.key)
        self.d.metrics.event("dropped")
        emit(logging.WARNING, "lease.dropped", f"dropped the lease: {why}", **self.spec.fields())
        self._fail(UNKNOWN_CONTAINER, why, "the pod's network namespace or interface is gone")

    def _save(self) -> None:
        lease = self.client.lease
        record = {"version": RECORD_VERSION, "spec": self.spec.to_record(), "mac": self.mac.hex(),
                  "server_mac": self.server_mac.hex() if self.server_mac else "",
                  "netns_identity": list(self.identity) if self.identity else None,
                  "lease": lease.to_record(wall_of), "saved_at": time.time()}
        try:
            self.d.store.save(self.spec.key, record)
        except OSError as exc:
            emit(logging.ERROR, "lease.save_failed", f"cannot save the lease: {exc}", **self.spec.fields())

    def _close_io(self) -> None:
        if self.io is not None:
            self.io.close()
            self.io = None


class _Stop:
    """An internal action: end the thread."""


# --- all leases ------------------------------------------------------------------------------------

class Manager:
    def __init__(self, daemon: "Daemon"):
        self.d = daemon
        self.lock = threading.Lock()
        self.workers = {}  # key -> Worker

    def finished(self, worker: Worker) -> None:
        """A thread ended: forget it unless it holds what CHECK should still report (expired, lost)."""
        with self.lock:
            if self.workers.get(worker.spec.key) is worker and (worker.error or worker.dropped or (
                    worker.client is not None and worker.client.state in (dhcp_client.RELEASED,))):
                del self.workers[worker.spec.key]

    def forget(self, worker: Worker) -> None:
        with self.lock:
            if self.workers.get(worker.spec.key) is worker:
                del self.workers[worker.spec.key]

    def count_by_state(self) -> dict:
        with self.lock:
            workers = list(self.workers.values())
        counts = {}
        for worker in workers:
            counts[worker.state] = counts.get(worker.state, 0) + 1
        return counts

    def resume_all(self) -> int:
        resumed = 0
        for path, record, error in self.d.store.load_all():
            if record is None:
                emit(logging.ERROR, "lease.unreadable", f"lease file {path} cannot be read ({error}): moved aside")
                self.d.store.quarantine(path)
                continue
            try:
                spec = Spec.from_record(record["spec"])
                lease = Lease.from_record(record["lease"], mono_of)
                bytes.fromhex(record["mac"])
            except (KeyError, TypeError, ValueError, AttributeError, LeaseError) as exc:
                emit(logging.ERROR, "lease.unreadable", f"lease file {path} is not valid ({exc}): moved aside")
                self.d.store.quarantine(path)
                continue
            worker = Worker(self.d, spec, lease, record)
            with self.lock:
                self.workers[spec.key] = worker
            worker.start()
            resumed += 1
        return resumed

    def add(self, request: dict) -> dict:
        spec = Spec.from_request(request)
        try:
            identity, mac = netio.link_identity(self.d.settings.netns_path(spec.netns), spec.ifname)
        except netio.Gone as exc:
            raise RequestError(UNKNOWN_CONTAINER, str(exc), "the pod's network namespace or interface is missing") \
                from None
        for _ in range(3):  # more rounds only if an existing lease ended or was replaced while we looked
            created = False
            replaced = None
            with self.lock:
                worker = self.workers.get(spec.key)
                if worker is not None and worker.holding() and (
                        worker.spec.netns != spec.netns or worker.mac != mac
                        or (worker.identity and tuple(worker.identity) != identity)):
                    # The same attachment on another interface (a new namespace, or a new
                    # link): that lease is of no use.  No RELEASE: it carries the same client
                    # identifier, so a late one would free the lease acquired now.
                    del self.workers[spec.key]
                    replaced = worker
            if replaced is not None:
                replaced.command("stop")
                replaced.finished.wait(RELEASE_WAIT)
                self.d.store.delete(spec.key)
                emit(logging.INFO, "lease.replaced", "the attachment's interface changed: acquiring afresh",
                     **spec.fields())
                continue
            with self.lock:
                worker = self.workers.get(spec.key)
                if worker is None or worker.finished.is_set() or worker.state in dhcp_client.TERMINAL:
                    worker = Worker(self.d, spec)
                    self.workers[spec.key] = worker
                    worker.start()
                    created = True
            if not worker.settled.wait(self.d.settings.timeout + ADD_MARGIN):
                raise RequestError(TRY_AGAIN_LATER, f"dhcp: no lease for {spec.ifname} within "
                                                    f"{self.d.settings.timeout + ADD_MARGIN:g}s")
            if worker.holding():
                try:
                    return {"ok": True, "lease": cni_view(worker.client.lease)}
                except LeaseError as exc:
                    self.release(request)
                    raise RequestError(TRY_AGAIN_LATER, f"dhcp: {exc}", "check the DHCP server's options") from None
            if worker.error is not None:
                self.forget(worker)
                code, msg, details = worker.error
                raise RequestError(code, msg, details)
            if not created and (worker.dropped or worker.state in dhcp_client.TERMINAL):
                continue  # it ended (expired) between our look and now: acquire afresh
            raise RequestError(TRY_AGAIN_LATER, f"dhcp: the lease for {spec.key} ended while it was acquired "
                                                f"({worker.state})")
        raise RequestError(TRY_AGAIN_LATER, f"dhcp: no lease for {spec.key}")

    def check(self, request: dict) -> dict:
        spec = Spec.from_request(request, with_options=False)
        with self.lock:
            worker = self.workers.get(spec.key)
        if worker is None:
            raise RequestError(UNKNOWN_CONTAINER, f"dhcp: no DHCP lease is held for {spec.key}",
                               "the daemon never got one, or it was released")
        if worker.holding():
            try:
                return {"ok": True, "lease": cni_view(worker.client.lease), "state": worker.state}
            except LeaseError as exc:
                raise RequestError(TRY_AGAIN_LATER, f"dhcp: {exc}", "check the DHCP server's options") from None
        if worker.state in (dhcp_client.INIT, dhcp_client.SELECTING, dhcp_client.REQUESTING):
            raise RequestError(TRY_AGAIN_LATER, f"dhcp: the lease for {spec.key} is still being acquired")
        reason = worker.dropped or worker.last_reason or worker.state
        raise RequestError(UNKNOWN_CONTAINER, f"dhcp: the lease for {spec.key} is {worker.state}: {reason}")

    def release(self, request: dict) -> dict:
        spec = Spec.from_request(request, with_options=False)
        with self.lock:
            worker = self.workers.pop(spec.key, None)
        if worker is None:
            self.d.store.delete(spec.key)
            return {"ok": True, "released": False, "note": f"no lease was held for {spec.key}"}
        worker.command("release")
        worker.finished.wait(RELEASE_WAIT)
        self.d.store.delete(spec.key)
        note = worker.release_note or ("" if worker.release_sent else "no lease was held")
        return {"ok": True, "released": worker.release_sent, "note": note}

    def gc(self, request: dict) -> dict:
        network = _text(request, "network")
        valid = request.get("valid")
        if not isinstance(valid, list):
            raise RequestError(INVALID_CONFIG, "gc: 'valid' must be a list of [containerID, ifname]")
        keep = {(v[0], v[1]) for v in valid if isinstance(v, list) and len(v) == 2}
        with self.lock:
            doomed = [w for w in self.workers.values()
                      if w.spec.network == network and (w.spec.container_id, w.spec.ifname) not in keep]
        released = []
        for worker in doomed:
            self.release({"containerID": worker.spec.container_id, "network": network,
                          "ifname": worker.spec.ifname})
            released.append(worker.spec.key)
        return {"ok": True, "released": released}

    def listing(self) -> dict:
        with self.lock:
            workers = list(self.workers.values())
        return {"ok": True, "leases": [w.snapshot() for w in workers]}

    def stop_all(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.command("stop")
        deadline = time.monotonic() + 5
        for worker in workers:
            worker.finished.wait(max(0.0, deadline - time.monotonic()))


# --- the socket ------------------------------------------------------------------------------------

class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.store = LeaseStore(settings.lease_dir)
        self.manager = Manager(self)
        self.listener = None
        self.activated = False
        self.stopping = threading.Event()

    def handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REQUEST:
                    raise RequestError(INVALID_CONFIG, "request too long")
            try:
                request = json.loads(data.split(b"\n", 1)[0] or b"null")
            except ValueError as exc:
                raise RequestError(INVALID_CONFIG, f"request is not JSON: {exc}") from None
            if not isinstance(request, dict):
                raise RequestError(INVALID_CONFIG, "request is not a JSON object")
            op = request.get("op")
            if op == "add":
                self._send(conn, {"wait": self.settings.timeout + ADD_MARGIN + 2})
                conn.settimeout(None)
                reply = self.manager.add(request)
            elif op == "del":
                self._send(conn, {"wait": RELEASE_WAIT + 2})
                reply = self.manager.release(request)
            elif op == "check":
                reply = self.manager.check(request)
            elif op == "gc":
                self._send(conn, {"wait": 60})
                reply = self.manager.gc(request)
            elif op == "status":
                reply = {"ok": True, "leases": len(self.manager.workers)}
            elif op == "list":
                reply = self.manager.listing()
            else:
                raise RequestError(INVALID_CONFIG, f"unknown op {op!r}")
        except RequestError as exc:
            reply = {"ok": False, "code": exc.code, "msg": exc.msg}
            if exc.details:
                reply["details"] = exc.details
        except OSError:
            return  # the plugin went away
        except Exception as exc:  # a bug: answer, log, keep serving
            LOG.exception("request failed", extra={"event": "rpc.crashed", "fields": {}})
            reply = {"ok": False, "code": 999, "msg": f"internal error in the DHCP daemon: {exc}"}
        try:
            self._send(conn, reply)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _send(conn: socket.socket, message: dict) -> None:
        conn.sendall(json.dumps(message).encode() + b"\n")

    def listen(self) -> socket.socket:
        activated = _systemd_socket()
        if activated is not None:
            self.activated = True  # systemd owns the socket file
            return activated
        path = self.settings.socket_path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                raise SystemExit(f"dhcp daemon: another daemon is listening on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # a stale socket of a daemon that is gone
            except OSError:
                os.unlink(path)
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o660)
        listener.listen(128)
        return listener

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            threading.Thread(target=self.handle, args=(conn,), name="rpc", daemon=True).start()


class _Shutdown(Exception):
    pass


def _systemd_socket():
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count == 0:
        return None
    if count != 1:
        raise SystemExit(f"dhcp daemon: Too many ({count}) FDs passed through socket activation")
    return socket.socket(fileno=3)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False


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
    _setup_logging(settings.log_level)
    _raise_fd_limit()
    threading.stack_size(512 * 1024)  # one thread per lease: keep each small
    netio.Home.open()  # the namespace to come back to, from the main thread
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
            emit(logging.ERROR, "daemon.metrics", "prometheus_client is not installed: no metrics endpoint")
    resumed = d.manager.resume_all()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    emit(logging.INFO, "daemon.start", f"listening on {settings.socket_path}", socket=settings.socket_path,
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
        emit(logging.INFO, "daemon.stop", "stopped; leases stay saved and resume at the next start")
    return 0


def main(argv=None, prog: str = "dhcp daemon") -> int:
    args = build_parser(prog).parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(prog="python -m cni_ipam.dhcp.daemon"))
