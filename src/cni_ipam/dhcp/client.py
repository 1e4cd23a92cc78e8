"""The DHCP client of one interface as a state machine: values in, values out.

In: :meth:`Client.start` / :meth:`Client.resume`, a received
:class:`~cni_ipam.dhcp.packet.Message` (:meth:`Client.receive`), "your
timer fired" (:meth:`Client.timer`), "release" (:meth:`Client.release`),
each with the time now.  Out: a list of :class:`Send` (this message, to
the broadcast address or unicast to the server), :class:`Event` (bound,
renewed, expired...) and :class:`Wake` (call :meth:`timer` at this time).
The machine never touches a socket or a clock, so every path, timers
included, is tested with plain values.

States (RFC 2131 figure 5)::

    INIT -> SELECTING -> REQUESTING -> BOUND -> RENEWING -> REBINDING -> EXPIRED
             ^   (NAK: INIT, then SELECTING again)  ^  ACK  |   ACK |
             |                                      +-------+-------+
    acquisition past its deadline: FAILED;  release(): RELEASED

Two tables, written as data as h11 writes its HTTP states
(python-hyper/h11 ``h11/_state.py``), decide what happens: :data:`HANDLERS`
maps ``(state, input)`` to the method that handles it, and
:data:`TRANSITIONS` lists the moves between states.  A call the table has no
entry for, or a move it does not list, raises :class:`LocalProtocolError`
(an exception, not an ``assert``, so ``python -O`` keeps it); a server's
message with no entry is discarded, as RFC 2131 figure 5 says.

Retransmissions back off from ``resend_initial`` doubling up to
``resend_max`` (Go's ``-resendmax``), with +-10 % jitter; acquisition gives
up at ``timeout`` (Go's ``-timeout``), renewal at T2, rebinding at expiry.
"""

from __future__ import annotations

import random

from . import packet
from .lease import Lease

INIT, SELECTING, REQUESTING, BOUND = "init", "selecting", "requesting", "bound"
RENEWING, REBINDING = "renewing", "rebinding"
EXPIRED, RELEASED, FAILED = "expired", "released", "failed"
TERMINAL = (EXPIRED, RELEASED, FAILED)
HOLDING = (BOUND, RENEWING, REBINDING)  # a valid lease is held

TRANSITIONS = {
    INIT: {SELECTING, FAILED, RELEASED},
    SELECTING: {REQUESTING, FAILED, RELEASED},
    REQUESTING: {BOUND, INIT, FAILED, RELEASED},
    BOUND: {RENEWING, REBINDING, EXPIRED, RELEASED},
    RENEWING: {BOUND, REBINDING, EXPIRED, RELEASED},
    REBINDING: {BOUND, EXPIRED, RELEASED},
    EXPIRED: {RELEASED},
    FAILED: {RELEASED},
    RELEASED: set(),
}

# Inputs: the caller's calls, and the server's messages by type.
START, RESUME, TIMER, RELEASE = "start", "resume", "timer", "release"
OFFER, ACK, NAK = "DHCPOFFER", "DHCPACK", "DHCPNAK"  # packet.Message.type_name
CALLS = (START, RESUME, TIMER, RELEASE)
MESSAGES = (OFFER, ACK, NAK)

# (state, input) -> the Client method that handles it.  A call missing here
# raises LocalProtocolError; a message missing here is discarded.
HANDLERS = {
    (INIT, START): "_start",
    (INIT, RESUME): "_resume",
    (INIT, TIMER): "_acquisition_timer",  # after a DHCPNAK: discover again
    (SELECTING, OFFER): "_on_offer",
    (SELECTING, TIMER): "_acquisition_timer",
    (REQUESTING, ACK): "_on_ack",
    (REQUESTING, NAK): "_on_nak",
    (REQUESTING, TIMER): "_acquisition_timer",
    (BOUND, TIMER): "_holding_timer",
    (RENEWING, ACK): "_on_renewal_ack",
    (RENEWING, NAK): "_on_renewal_nak",
    (RENEWING, TIMER): "_holding_timer",
    (REBINDING, ACK): "_on_renewal_ack",
    (REBINDING, NAK): "_on_renewal_nak",
    (REBINDING, TIMER): "_holding_timer",
    **{(state, RELEASE): "_release" for state in TRANSITIONS},  # any time, again after RELEASED too
}

MAX_MESSAGE_SIZE = 1500


class LocalProtocolError(Exception):
    """The machine was driven against its tables: a call its state takes no input for, or a move not listed.

    Always a bug in the caller or in this module, never caused by what a
    server sent (h11's exception of the same name, for the same reason).
    """


class Config:
    """What the client sends and how patiently.

    ``client_id`` is option 61's whole value (type byte included);
    ``params`` the parameter request list; ``extra`` more options to send
    (``{code: bytes}``, e.g. host-name; may replace option 61).
    """

    __slots__ = ("chaddr", "client_id", "params", "extra", "timeout", "resend_initial", "resend_max",
                 "broadcast_flag")

    def __init__(self, chaddr: bytes, client_id: bytes, params=(1, 3), extra=None, timeout: float = 10.0,
                 resend_initial: float = 1.0, resend_max: float = 62.0, broadcast_flag: bool = False):
        if not isinstance(chaddr, (bytes, bytearray)) or not 1 <= len(chaddr) <= 16:
            raise ValueError(f"chaddr {chaddr!r}: expected 1-16 bytes")
        if not client_id or len(client_id) > 255:
            raise ValueError("client_id must be 1-255 bytes")
        if timeout <= 0 or resend_initial <= 0 or resend_max < resend_initial:
            raise ValueError(f"timeout {timeout}, resend_initial {resend_initial}, resend_max {resend_max}: "
                             "need timeout > 0 and 0 < resend_initial <= resend_max")
        self.chaddr = bytes(chaddr)
        self.client_id = bytes(client_id)
        self.params = tuple(params)
        self.extra = dict(extra or {})
        self.timeout = float(timeout)
        self.resend_initial = float(resend_initial)
        self.resend_max = float(resend_max)
        self.broadcast_flag = broadcast_flag


def client_identifier(container_id: str, network: str, ifname: str) -> bytes:
    """Go's option 61: type 0 then ``<containerID>/<network>/<ifname>`` cut to 254 bytes."""
    return b"\x00" + f"{container_id}/{network}/{ifname}".encode()[:254]


# --- what comes out ---------------------------------------------------------------------------------

class Send:
    """Send ``message``: broadcast (``255.255.255.255``) or unicast to ``server``."""

    __slots__ = ("message", "broadcast", "server")

    def __init__(self, message: packet.Message, broadcast: bool, server: str | None = None):
        if not broadcast and not server:
            raise ValueError("a unicast Send needs a server address")
        self.message = message
        self.broadcast = broadcast
        self.server = server

    @property
    def source(self) -> str:
        return self.message.ciaddr

    def __repr__(self):
        return f"Send({self.message.type_name}, {'broadcast' if self.broadcast else 'to ' + self.server})"


class Event:
    """Something the daemon reports: ``kind`` is one of :data:`EVENT_KINDS`."""

    __slots__ = ("kind", "lease", "reason")

    def __init__(self, kind: str, lease: Lease | None = None, reason: str = ""):
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        self.kind = kind
        self.lease = lease
        self.reason = reason

    def __repr__(self):
        return f"Event({self.kind}, {self.lease}, {self.reason!r})"


EVENT_KINDS = ("offer", "bound", "renewing", "renewed", "rebinding", "rebound", "expired", "nak", "failed",
               "released", "resumed", "refused", "ignored")


class Wake:
    __slots__ = ("at",)

    def __init__(self, at: float):
        self.at = at

    def __repr__(self):
        return f"Wake({self.at:g})"


# --- the machine ------------------------------------------------------------------------------------

class Client:
    """One interface's DHCP client.  Start with :meth:`start` (acquire) or :meth:`resume` (a saved lease)."""

    def __init__(self, config: Config, rng=None):
        self.config = config
        self.rng = rng or random.Random()
        self.state = INIT
        self.lease = None
        self.wake_at = None
        self.xid = 0
        self.attempts = 0          # retransmissions of the current message
        self.started = None        # when this acquisition or renewal began (for secs)
        self.deadline = None       # acquisition gives up here
        self.offer = None          # (address, server) being requested
        self.sent = {}             # message counts this acquisition, for the failure message
        self.offers_seen = 0
        self.last_nak = None
        self.history = []          # (from, to) of every transition, for tests and logs

    # -- the inputs: each goes through HANDLERS --
    def start(self, now: float) -> list:
        """Begin acquiring: DHCPDISCOVER now, give up at ``now + timeout``."""
        return self._handle(START, now)

    def resume(self, lease: Lease, now: float) -> list:
        """Carry on with ``lease`` (after a daemon restart): bound, renewing, rebinding or expired by now."""
        return self._handle(RESUME, now, lease)

    def receive(self, message: packet.Message, now: float) -> list:
        """A message from a server; one that is not for us, or not expected now, is discarded."""
        if (message.op != packet.BOOTREPLY or message.xid != self.xid
                or message.chaddr[:len(self.config.chaddr)] != self.config.chaddr):
            return []  # someone else's conversation
        kind = message.type_name
        if kind not in MESSAGES or (self.state, kind) not in HANDLERS:
            return []
        return self._handle(kind, now, message)

    def timer(self, now: float) -> list:
        """Call at (or after) ``wake_at``; an early call does what is due and sets the same timer."""
        return self._handle(TIMER, now)

    def release(self, now: float) -> list:
        """Give the lease back: DHCPRELEASE unicast to its server when one is held."""
        return self._handle(RELEASE, now)

    def _handle(self, kind: str, now: float, *args) -> list:
        handler = HANDLERS.get((self.state, kind))
        if handler is None:
            raise LocalProtocolError(f"a DHCP client in state {self.state} takes no {kind!r}")
        return getattr(self, handler)(now, *args)

    # -- helpers --
    def _move(self, state: str) -> None:
        if state == self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"{self.state} -> {state} is not a DHCP client transition")
        self.history.append((self.state, state))
        self.state = state

    def _delay(self, attempt: int) -> float:
        base = min(self.config.resend_initial * (2 ** min(attempt, 30)), self.config.resend_max)
        return base * self.rng.uniform(0.9, 1.1)

    def _wake(self, at, out: list) -> list:
        self.wake_at = at
        if at is not None:
            out.append(Wake(at))
        return out

    def _secs(self, now: float) -> int:
        return max(0, min(0xFFFF, int(now - (self.started if self.started is not None else now))))

    def _message(self, kind: int, now: float, ciaddr: str = "0.0.0.0", options=None) -> packet.Message:
        opts = {packet.MESSAGE_TYPE: bytes((kind,)), packet.CLIENT_ID: self.config.client_id}
        opts.update(options or {})
        if kind in (packet.DISCOVER, packet.REQUEST):
            opts[packet.MAX_SIZE] = MAX_MESSAGE_SIZE.to_bytes(2, "big")
            opts[packet.PARAMETER_LIST] = bytes(self.config.params)
            opts.update(self.config.extra)
        elif packet.CLIENT_ID in self.config.extra:  # a provided client id stays the same on RELEASE
            opts[packet.CLIENT_ID] = self.config.extra[packet.CLIENT_ID]
        flags = packet.FLAG_BROADCAST if self.config.broadcast_flag and ciaddr == "0.0.0.0" else 0
        return packet.Message(packet.BOOTREQUEST, self.xid, self.config.chaddr, opts, secs=self._secs(now),
                              flags=flags, ciaddr=ciaddr)

    def _new_xid(self) -> None:
        self.xid = self.rng.getrandbits(32)

    # -- acquisition --
    def _start(self, now: float) -> list:
        self.deadline = now + self.config.timeout
        self.sent = {}
        self.offers_seen = 0
        self.last_nak = None
        return self._discover(now)

    def _discover(self, now: float) -> list:
        self._move(SELECTING)
        self._new_xid()
        self.started = now
        self.attempts = 0
        self.offer = None
        return self._send_acquire(now, [])

    def _acquire_message(self, now: float) -> packet.Message:
        if self.state == SELECTING:
            return self._message(packet.DISCOVER, now)
        address, server = self.offer
        return self._message(packet.REQUEST, now, options={
            packet.REQUESTED_ADDRESS: packet.ip_bytes(address), packet.SERVER_ID: packet.ip_bytes(server)})

    def _send_acquire(self, now: float, out: list) -> list:
        message = self._acquire_message(now)
        self.sent[message.type_name] = self.sent.get(message.type_name, 0) + 1
        out.append(Send(message, broadcast=True))
        return self._wake(min(now + self._delay(self.attempts), self.deadline), out)

    def _failure_reason(self) -> str:
        spent = f"{self.config.timeout:g}s"
        discovers = self.sent.get("DHCPDISCOVER", 0)
        requests = self.sent.get("DHCPREQUEST", 0)
        if self.last_nak:
            return f"refused by a DHCP server: {self.last_nak}; no lease within {spent}"
        if self.offer or self.offers_seen:
            offered = f" {self.offer[1]} offered {self.offer[0]} but" if self.offer else " a server offered but"
            return (f"no DHCPACK within {spent}:{offered} did not acknowledge {requests} DHCPREQUEST(s)")
        return f"no DHCP server answered {discovers} DHCPDISCOVER(s) within {spent}"

    # -- a saved lease --
    def _resume(self, now: float, lease: Lease) -> list:
        self.lease = lease
        self.state = BOUND  # not a transition: the lease was bound by an earlier run
        out = [Event("resumed", lease)]
        return out + self.timer(now)

    # -- a server's messages --
    def _on_offer(self, now: float, message: packet.Message) -> list:
        server = message.get(packet.SERVER_ID)
        if message.yiaddr == "0.0.0.0" or server is None:
            return [Event("ignored", reason=f"DHCPOFFER without {'an address' if server else 'a server identifier'}")]
        self.offers_seen += 1
        self.offer = (message.yiaddr, server)
        self._move(REQUESTING)
        self.attempts = 0
        return self._send_acquire(now, [Event("offer", reason=f"{server} offered {message.yiaddr}")])

    def _from_offered_server(self, message: packet.Message) -> bool:
        """While requesting, answers of other servers to our broadcast DHCPREQUEST are not ours."""
        server = message.get(packet.SERVER_ID)
        return server is None or server == self.offer[1]

    def _on_ack(self, now: float, message: packet.Message) -> list:
        return self._bind(message, now, "bound") if self._from_offered_server(message) else []

    def _on_nak(self, now: float, message: packet.Message) -> list:
        if not self._from_offered_server(message):
            return []
        text = message.get(packet.MESSAGE)
        self.last_nak = f"DHCPNAK from {self.offer[1]} for {self.offer[0]}" + (f": {text}" if text else "")
        self._move(INIT)
        self.offer = None
        out = [Event("refused", reason=self.last_nak)]
        # RFC 2131: back to INIT; wait a little so a server that always NAKs cannot make us spin.
        return self._wake(min(now + self._delay(0), self.deadline), out)

    def _bind(self, message: packet.Message, now: float, kind: str) -> list:
        server = self.offer[1] if self.offer else (self.lease.server_id if self.lease else None)
        if message.yiaddr == "0.0.0.0" and self.lease is not None:
            message.yiaddr = self.lease.address
        self.lease = Lease.from_ack(message, now, server)
        self._move(BOUND)
        self.offer = None
        self.deadline = None
        return self._wake(self.lease.renew_at, [Event(kind, self.lease)])

    def _on_renewal_ack(self, now: float, message: packet.Message) -> list:
        if message.yiaddr not in ("0.0.0.0", self.lease.address):
            return self._lose(now, "nak", f"{message.get(packet.SERVER_ID) or 'the server'} answered the "
                                          f"renewal of {self.lease.address} with {message.yiaddr}")
        return self._bind(message, now, "renewed" if self.state == RENEWING else "rebound")

    def _on_renewal_nak(self, now: float, message: packet.Message) -> list:
        text = message.get(packet.MESSAGE)
        return self._lose(now, "nak", f"DHCPNAK from {message.get(packet.SERVER_ID) or 'a server'}"
                                      + (f": {text}" if text else ""))

    def _lose(self, now: float, kind: str, reason: str) -> list:
        self._move(EXPIRED)
        return self._wake(None, [Event(kind, self.lease, reason)])

    # -- the timer --
    def _acquisition_timer(self, now: float) -> list:
        if self.deadline is None:  # never started
            return []
        if now >= self.deadline:
            self._move(FAILED)
            return self._wake(None, [Event("failed", reason=self._failure_reason())])
        if self.wake_at is not None and now < self.wake_at:
            return self._wake(self.wake_at, [])
        if self.state == INIT:
            return self._discover(now)
        self.attempts += 1
        return self._send_acquire(now, [])

    def _holding_timer(self, now: float) -> list:
        lease = self.lease
        if lease.expires_at is not None and now >= lease.expires_at:
            return self._lose(now, "expired", f"lease on {lease.address} expired: no DHCPACK since "
                                              f"{now - lease.acked_at:.0f}s")
        if self.state == BOUND:
            if lease.renew_at is None or now < lease.renew_at:
                return self._wake(lease.renew_at, [])
            if now < lease.rebind_at:
                self._move(RENEWING)
                return self._begin(now, [Event("renewing", lease)])
            self._move(REBINDING)
            return self._begin(now, [Event("rebinding", lease)])
        if self.state == RENEWING and now >= lease.rebind_at:
            self._move(REBINDING)
            return self._begin(now, [Event("rebinding", lease)])
        if self.wake_at is not None and now < self.wake_at:
            return self._wake(self.wake_at, [])
        self.attempts += 1
        return self._send_holding(now, [])

    def _begin(self, now: float, out: list) -> list:
        self._new_xid()
        self.started = now
        self.attempts = 0
        return self._send_holding(now, out)

    def _send_holding(self, now: float, out: list) -> list:
        lease = self.lease
        message = self._message(packet.REQUEST, now, ciaddr=lease.address)
        if self.state == RENEWING:
            out.append(Send(message, broadcast=False, server=lease.server_id))
            limit = lease.rebind_at
        else:
            out.append(Send(message, broadcast=True))
            limit = lease.expires_at
        return self._wake(min(now + self._delay(self.attempts), limit), out)

    # -- release --
    def _release(self, now: float) -> list:
        out = []
        if self.state in HOLDING:
            self._new_xid()
            self.started = now
            message = self._message(packet.RELEASE, now, ciaddr=self.lease.address,
                                    options={packet.SERVER_ID: packet.ip_bytes(self.lease.server_id)})
            out.append(Send(message, broadcast=False, server=self.lease.server_id))
            reason = f"released {self.lease.address} to {self.lease.server_id}"
        else:
            reason = "no lease was held"
        self._move(RELEASED)
        out.append(Event("released", self.lease, reason))
        return self._wake(None, out)
