"""One lease's thread: runs its :class:`~cni_ipam.dhcp.client.Client` and does the I/O the machine asks for.

Each lease has a thread of its own that does its I/O (:mod:`..netio`) in
the pod's network namespace, so one slow server or dead pod never holds up
another lease.  Other threads talk to it with :meth:`Worker.command` only.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

from ...cni.errors import TRY_AGAIN_LATER, UNKNOWN_CONTAINER
from .. import client as dhcp_client
from .. import netio, netns, packet
from ..lease import Lease
from .logs import LOG, emit
from .requests import Spec, netns_refused

RECORD_VERSION = 1  # of the lease files the worker saves


def wall_of(mono: float) -> float:
    """A monotonic time as wall-clock time, for lease files that outlive this process's monotonic clock."""
    return time.time() - (time.monotonic() - mono)


def mono_of(wall: float) -> float:
    """A wall-clock time from a lease file as this process's monotonic time."""
    return time.monotonic() - (time.time() - wall)


class Worker(threading.Thread):
    """One lease's thread: its state machine, its sockets while an exchange runs, its timers.

    ``daemon`` is the :class:`~.server.Daemon` (settings, metrics, lease files, manager).
    """

    def __init__(self, daemon, spec: Spec, lease: Lease | None = None, record: dict | None = None):
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
            except netns.Refused as exc:
                refusal = netns_refused(self.spec.netns, exc)
                self._fail(refusal.code, refusal.msg, refusal.details)
                return
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
        releasing = action.message.message_type == packet.RELEASE
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
