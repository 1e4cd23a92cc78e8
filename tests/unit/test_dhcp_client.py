"""The DHCP client state machine, driven with messages and times only (no sockets, no clock)."""

from __future__ import annotations

import random

import pytest

from cni_ipam.dhcp import client, packet
from cni_ipam.dhcp.client import Client, Config, Event, Send, Wake
from cni_ipam.dhcp.lease import Lease, LeaseError, cni_view
from cni_ipam.dhcp.packet import Message

MAC = bytes.fromhex("020000000001")
CID = client.client_identifier("c1", "net", "eth0")
SERVER = "192.0.2.1"
ADDRESS = "192.0.2.50"


def config(**extra) -> Config:
    values = dict(chaddr=MAC, client_id=CID, params=(1, 3, 121), timeout=10.0, resend_initial=1.0, resend_max=8.0)
    values.update(extra)
    return Config(**values)


def machine(**extra) -> Client:
    return Client(config(**extra), rng=random.Random(7))


def sends(actions) -> list:
    return [a for a in actions if isinstance(a, Send)]


def events(actions) -> list:
    return [(a.kind, a.reason) for a in actions if isinstance(a, Event)]


def wakes(actions) -> list:
    return [a.at for a in actions if isinstance(a, Wake)]


def reply(request: Message, kind: int, yiaddr: str = ADDRESS, server: str = SERVER, **options) -> Message:
    """What a server answers to ``request``."""
    opts = {packet.MESSAGE_TYPE: bytes([kind]), packet.SERVER_ID: server}
    if kind != packet.NAK:
        opts.update({packet.SUBNET_MASK: "255.255.255.0", packet.ROUTERS: [SERVER], packet.LEASE_TIME: 120,
                     packet.RENEWAL_TIME: 30, packet.REBINDING_TIME: 60})
    for key, value in options.items():  # o56="text": option 56
        opts[int(key.lstrip("o"))] = value
    return Message(packet.BOOTREPLY, request.xid, request.chaddr, opts, yiaddr=yiaddr if kind != packet.NAK else "0.0.0.0")


def bound(now: float = 0.0, **extra) -> tuple:
    """A client bound at ``now`` (offer and ack at the same instant)."""
    c = machine(**extra)
    discover = sends(c.start(now))[0].message
    request = sends(c.receive(reply(discover, packet.OFFER), now))[0].message
    out = c.receive(reply(request, packet.ACK), now)
    assert c.state == client.BOUND
    return c, out


# --- acquisition -----------------------------------------------------------------------------------

def test_start_broadcasts_a_discover_and_sets_a_retransmission_timer():
    c = machine(extra={packet.HOST_NAME: b"pod-a"})
    out = c.start(100.0)
    [send] = sends(out)
    assert send.broadcast and send.source == "0.0.0.0"
    m = send.message
    assert m.op == packet.BOOTREQUEST and m.message_type == packet.DISCOVER and m.chaddr == MAC
    assert m.options[packet.CLIENT_ID] == b"\x00c1/net/eth0"
    assert m.get(packet.PARAMETER_LIST) == [1, 3, 121]
    assert m.get(packet.HOST_NAME) == "pod-a"
    assert m.flags == 0 and m.ciaddr == "0.0.0.0"
    [at] = wakes(out)
    assert 100.9 <= at <= 101.1 and c.wake_at == at
    assert c.state == client.SELECTING


def test_broadcast_flag_when_configured():
    c = machine(broadcast_flag=True)
    assert sends(c.start(0))[0].message.flags == packet.FLAG_BROADCAST


def test_offer_then_ack_binds_and_wakes_at_t1():
    c = machine()
    discover = sends(c.start(0.0))[0].message
    out = c.receive(reply(discover, packet.OFFER), 0.2)
    assert events(out) == [("offer", f"{SERVER} offered {ADDRESS}")]
    [send] = sends(out)
    request = send.message
    assert send.broadcast and request.message_type == packet.REQUEST and request.xid == discover.xid
    assert request.get(packet.REQUESTED_ADDRESS) == ADDRESS and request.get(packet.SERVER_ID) == SERVER
    assert request.ciaddr == "0.0.0.0"
    assert c.state == client.REQUESTING
    out = c.receive(reply(request, packet.ACK), 0.3)
    assert [e[0] for e in events(out)] == ["bound"]
    lease = [a for a in out if isinstance(a, Event)][0].lease
    assert lease.address == ADDRESS and lease.server_id == SERVER
    assert (lease.renew_at, lease.rebind_at, lease.expires_at) == (30.3, 60.3, 120.3)
    assert wakes(out) == [30.3] and c.state == client.BOUND
    assert c.history == [("init", "selecting"), ("selecting", "requesting"), ("requesting", "bound")]


def test_other_conversations_are_ignored():
    c = machine()
    discover = sends(c.start(0))[0].message
    offer = reply(discover, packet.OFFER)
    for stranger in (Message(packet.BOOTREPLY, discover.xid + 1, MAC, offer.options, yiaddr=ADDRESS),
                     Message(packet.BOOTREPLY, discover.xid, b"\x02" * 6, offer.options, yiaddr=ADDRESS),
                     Message(packet.BOOTREQUEST, discover.xid, MAC, offer.options, yiaddr=ADDRESS),
                     reply(discover, packet.ACK)):  # an ACK while selecting
        assert c.receive(stranger, 0.1) == []
    assert c.state == client.SELECTING
    assert events(c.receive(Message(packet.BOOTREPLY, discover.xid, MAC, {packet.MESSAGE_TYPE: b"\x02"},
                                    yiaddr=ADDRESS), 0.1)) == [("ignored", "DHCPOFFER without a server identifier")]
    request = sends(c.receive(offer, 0.1))[0].message
    # While requesting: another server's ACK and a second OFFER change nothing.
    assert c.receive(reply(request, packet.ACK, server="192.0.2.2"), 0.2) == []
    assert c.receive(reply(request, packet.OFFER), 0.2) == []
    assert c.state == client.REQUESTING


def test_discover_retransmits_with_backoff_then_fails_at_the_deadline():
    c = machine()
    out = c.start(0.0)
    times = [0.0]
    while c.state == client.SELECTING:
        now = c.wake_at
        out = c.timer(now)
        if sends(out):
            times.append(now)
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 1, 2, 4, 8 (capped by resend_max) ... each +-10 %, never past the 10 s deadline
    assert 0.9 <= gaps[0] <= 1.1 and 1.8 <= gaps[1] <= 2.2 and 3.6 <= gaps[2] <= 4.4
    assert len(times) == 4 and times[-1] < 10.0
    assert c.state == client.FAILED and c.wake_at is None
    assert events(out) == [("failed", "no DHCP server answered 4 DHCPDISCOVER(s) within 10s")]


def test_resend_max_caps_the_delay():
    c = machine(timeout=100.0, resend_max=2.0)
    c.start(0.0)
    gaps = []
    for _ in range(6):
        before = c.wake_at
        c.timer(before)
        gaps.append(c.wake_at - before)
    assert max(gaps) <= 2.2 and min(gaps[2:]) >= 1.8


def test_an_offer_without_an_ack_fails_with_what_was_offered():
    c = machine(timeout=5.0)
    discover = sends(c.start(0.0))[0].message
    c.receive(reply(discover, packet.OFFER), 0.1)
    while c.state == client.REQUESTING:
        out = c.timer(c.wake_at)
    assert c.state == client.FAILED
    assert events(out)[0][1].startswith(f"no DHCPACK within 5s: {SERVER} offered {ADDRESS} but did not acknowledge")


def test_nak_while_requesting_goes_back_to_discover_after_a_pause():
    c = machine()
    discover = sends(c.start(0.0))[0].message
    request = sends(c.receive(reply(discover, packet.OFFER), 0.1))[0].message
    out = c.receive(reply(request, packet.NAK, **{"o56": "address in use"}), 0.2)
    assert c.state == client.INIT and sends(out) == []
    assert events(out) == [("refused", f"DHCPNAK from {SERVER} for {ADDRESS}: address in use")]
    assert 1.1 <= c.wake_at <= 1.3
    out = c.timer(c.wake_at)
    [send] = sends(out)
    assert send.message.message_type == packet.DISCOVER and send.message.xid != discover.xid
    # A server that always refuses: the acquisition ends at the deadline, saying so.
    while c.state != client.FAILED:
        for s in sends(out):
            answer = reply(s.message, packet.OFFER if s.message.message_type == packet.DISCOVER else packet.NAK)
            out = c.receive(answer, c.wake_at - 0.01)
            if sends(out) or c.state == client.INIT:
                break
        else:
            out = c.timer(c.wake_at)
    assert events(out)[0][1].startswith(f"refused by a DHCP server: DHCPNAK from {SERVER}")


def test_an_early_timer_call_changes_nothing():
    c = machine()
    c.start(0.0)
    at = c.wake_at
    assert sends(c.timer(at - 0.5)) == [] and c.wake_at == at
    lease_client, _ = bound()
    assert sends(lease_client.timer(10.0)) == [] and lease_client.wake_at == 30.0


# --- renewal ---------------------------------------------------------------------------------------

def test_renew_at_t1_by_unicast_from_the_leased_address():
    c, _ = bound()
    out = c.timer(30.0)
    assert events(out) == [("renewing", "")] and c.state == client.RENEWING
    [send] = sends(out)
    assert not send.broadcast and send.server == SERVER and send.source == ADDRESS
    m = send.message
    assert m.message_type == packet.REQUEST and m.ciaddr == ADDRESS
    assert packet.REQUESTED_ADDRESS not in m.options and packet.SERVER_ID not in m.options
    out = c.receive(reply(m, packet.ACK), 30.5)
    assert [e[0] for e in events(out)] == ["renewed"] and c.state == client.BOUND
    assert c.lease.renew_at == 60.5 and wakes(out) == [60.5]


def test_renewal_retries_until_t2_then_rebinds_by_broadcast_until_expiry():
    c, _ = bound()
    out = c.timer(30.0)
    unicasts = 0
    while c.state == client.RENEWING:
        assert c.wake_at <= 60.0
        unicasts += len([s for s in sends(out) if not s.broadcast])
        out = c.timer(c.wake_at)
    assert unicasts >= 4 and c.state == client.REBINDING
    assert events(out) == [("rebinding", "")]
    [send] = sends(out)
    assert send.broadcast and send.message.ciaddr == ADDRESS and send.message.flags == 0
    while c.state == client.REBINDING:
        assert c.wake_at <= 120.0
        out = c.timer(c.wake_at)
    assert c.state == client.EXPIRED and c.wake_at is None
    assert events(out) == [("expired", f"lease on {ADDRESS} expired: no DHCPACK since 120s")]


def test_rebinding_ack_from_another_server_moves_the_lease_to_it():
    c, _ = bound()
    c.timer(30.0)
    out = c.timer(60.0)
    assert c.state == client.REBINDING
    out = c.receive(reply(sends(out)[0].message, packet.ACK, server="192.0.2.2"), 61.0)
    assert [e[0] for e in events(out)] == ["rebound"]
    assert c.lease.server_id == "192.0.2.2" and c.lease.address == ADDRESS


def test_nak_while_renewing_loses_the_lease():
    c, _ = bound()
    request = sends(c.timer(30.0))[0].message
    out = c.receive(reply(request, packet.NAK), 30.1)
    assert c.state == client.EXPIRED and events(out) == [("nak", f"DHCPNAK from {SERVER}")]
    assert c.wake_at is None


def test_a_renewal_answered_with_another_address_loses_the_lease():
    c, _ = bound()
    request = sends(c.timer(30.0))[0].message
    out = c.receive(reply(request, packet.ACK, yiaddr="192.0.2.99"), 30.1)
    assert c.state == client.EXPIRED and events(out)[0][0] == "nak"


# --- release and resume ----------------------------------------------------------------------------

def test_release_unicasts_to_the_server():
    c, _ = bound()
    out = c.release(5.0)
    [send] = sends(out)
    assert not send.broadcast and send.server == SERVER and send.source == ADDRESS
    m = send.message
    assert m.message_type == packet.RELEASE and m.ciaddr == ADDRESS and m.get(packet.SERVER_ID) == SERVER
    assert m.options[packet.CLIENT_ID] == CID
    assert c.state == client.RELEASED and c.wake_at is None
    assert events(out) == [("released", f"released {ADDRESS} to {SERVER}")]
    assert events(c.release(6.0)) == [("released", "no lease was held")]


def test_release_while_acquiring_sends_nothing():
    c = machine()
    c.start(0.0)
    out = c.release(0.5)
    assert sends(out) == [] and c.state == client.RELEASED and c.wake_at is None


def test_a_provided_client_id_is_used_everywhere():
    c, _ = bound(extra={packet.CLIENT_ID: b"\x01custom"})
    assert sends(c.timer(30.0))[0].message.options[packet.CLIENT_ID] == b"\x01custom"
    assert sends(c.release(31.0))[0].message.options[packet.CLIENT_ID] == b"\x01custom"


@pytest.mark.parametrize("now,state,sent,kinds", [
    (10.0, client.BOUND, 0, ["resumed"]),
    (40.0, client.RENEWING, 1, ["resumed", "renewing"]),
    (70.0, client.REBINDING, 1, ["resumed", "rebinding"]),
    (130.0, client.EXPIRED, 0, ["resumed", "expired"]),
])
def test_resume_a_saved_lease(now, state, sent, kinds):
    _, out = bound()
    lease = [a for a in out if isinstance(a, Event)][0].lease
    c = machine()
    out = c.resume(lease, now)
    assert c.state == state and len(sends(out)) == sent
    assert [e[0] for e in events(out)] == kinds
    if state == client.BOUND:
        assert c.wake_at == 30.0


def test_every_transition_is_in_the_table():
    assert set(client.TRANSITIONS) == {client.INIT, client.SELECTING, client.REQUESTING, client.BOUND,
                                       client.RENEWING, client.REBINDING, client.EXPIRED, client.RELEASED,
                                       client.FAILED}
    c = machine()
    c.state = client.BOUND
    with pytest.raises(client.LocalProtocolError, match="bound -> selecting"):
        c._move(client.SELECTING)


def in_state(state: str) -> Client:
    """A client brought to ``state`` by real inputs only."""
    if state == client.BOUND:
        return bound()[0]
    c = machine()
    if state == client.RELEASED:
        c.release(0.0)
    elif state != client.INIT:
        discover = sends(c.start(0.0))[0].message
        if state == client.REQUESTING:
            c.receive(reply(discover, packet.OFFER), 0.0)
        elif state == client.FAILED:
            c.timer(c.deadline)
        elif state in (client.RENEWING, client.REBINDING, client.EXPIRED):
            c = bound()[0]
            c.timer({client.RENEWING: 30.0, client.REBINDING: 60.0, client.EXPIRED: 120.0}[state])
    assert c.state == state
    return c


def call(c: Client, kind: str) -> list:
    _, out = bound()
    saved = [a for a in out if isinstance(a, Event)][0].lease
    return {client.START: lambda: c.start(1.0), client.RESUME: lambda: c.resume(saved, 1.0),
            client.TIMER: lambda: c.timer(c.wake_at or 1.0), client.RELEASE: lambda: c.release(1.0)}[kind]()


def test_every_handler_is_a_method_and_every_state_is_in_the_table():
    assert {state for state, _ in client.HANDLERS} <= set(client.TRANSITIONS)
    assert {kind for _, kind in client.HANDLERS} == set(client.CALLS + client.MESSAGES)
    for name in client.HANDLERS.values():
        assert callable(getattr(Client, name)), name


@pytest.mark.parametrize("kind", client.CALLS)
@pytest.mark.parametrize("state", sorted(client.TRANSITIONS))
def test_a_call_is_handled_or_raises_the_named_error(state, kind):
    c = in_state(state)
    if (state, kind) in client.HANDLERS:
        call(c, kind)
        assert all(to in client.TRANSITIONS[frm] for frm, to in c.history)
    else:
        with pytest.raises(client.LocalProtocolError, match=f"state {state} takes no '{kind}'"):
            call(c, kind)
        assert c.state == state


@pytest.mark.parametrize("kind", [packet.OFFER, packet.ACK, packet.NAK])
@pytest.mark.parametrize("state", sorted(client.TRANSITIONS))
def test_a_message_is_handled_or_discarded(state, kind):
    c = in_state(state)
    before = (c.state, c.wake_at, c.lease, list(c.history))
    out = c.receive(reply(Message(packet.BOOTREQUEST, c.xid, MAC, {}), kind), 1.0)
    if (state, packet.MESSAGE_TYPES[kind]) in client.HANDLERS:
        assert out and c.state != state
    else:  # RFC 2131 figure 5: a message a state does not expect is discarded
        assert out == [] and (c.state, c.wake_at, c.lease, c.history) == before


def test_the_tables_hold_under_python_O():
    """The errors are exceptions, not asserts: ``python -O`` (which drops asserts) raises them too."""
    import ast
    import pathlib
    import subprocess
    import sys

    script = (
        "import random, sys\n"
        "from cni_ipam.dhcp import client\n"
        "c = client.Client(client.Config(bytes(6), b'\\x00id'), rng=random.Random(1))\n"
        "c.start(0.0)\n"
        "for bad in (lambda: c.start(1.0), lambda: c.resume(None, 1.0)):\n"
        "    try:\n"
        "        bad()\n"
        "    except client.LocalProtocolError as exc:\n"
        "        print(sys.flags.optimize, exc)\n"
        "c.state = client.BOUND\n"
        "try:\n"
        "    c._move(client.SELECTING)\n"
        "except client.LocalProtocolError as exc:\n"
        "    print(sys.flags.optimize, exc)\n")
    run = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=30)
    assert run.stdout.splitlines() == ["1 a DHCP client in state selecting takes no 'start'",
                                       "1 a DHCP client in state selecting takes no 'resume'",
                                       "1 bound -> selecting is not a DHCP client transition"], run.stderr
    package = pathlib.Path(client.__file__).parent
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)], path


def test_config_is_checked():
    with pytest.raises(ValueError, match="chaddr"):
        Config(b"", CID)
    with pytest.raises(ValueError, match="client_id"):
        Config(MAC, b"")
    with pytest.raises(ValueError, match="resend_initial"):
        Config(MAC, CID, resend_initial=5, resend_max=1)
    assert client.client_identifier("c" * 300, "n", "e")[:2] == b"\x00c"
    assert len(client.client_identifier("c" * 300, "n", "e")) == 255


# --- leases ---------------------------------------------------------------------------------------

def ack(**options) -> Message:
    opts = {packet.MESSAGE_TYPE: b"\x05", packet.SERVER_ID: SERVER, packet.SUBNET_MASK: "255.255.255.0"}
    for key, value in options.items():
        opts[int(key.lstrip("o"))] = value
    return Message(packet.BOOTREPLY, 1, MAC, opts, yiaddr=ADDRESS)


@pytest.mark.parametrize("options,timers", [
    ({"o51": 1000}, (500.0, 875.0, 1000.0)),                      # RFC defaults
    ({"o51": 1000, "o58": 100, "o59": 200}, (100.0, 200.0, 1000.0)),
    ({"o51": 1000, "o58": 300, "o59": 200}, (500.0, 200.0, 1000.0)),  # T1 > T2: T1 = min(half, T2)
    ({"o51": 1000, "o59": 2000}, (500.0, 875.0, 1000.0)),          # T2 > lease: default
    ({"o51": 1000, "o58": 0, "o59": 0}, (500.0, 875.0, 1000.0)),   # zeros are not valid timers
    ({}, (1800.0, 3150.0, 3600.0)),                                # no lease time: one hour
])
def test_lease_timers(options, timers):
    lease = Lease.from_ack(ack(**options), 0.0)
    t1, t2, total = timers
    assert lease.lease_time == total and lease.t2 == t2
    assert lease.t1 == min(t1, t2)


def test_renewals_are_never_closer_than_a_second():
    lease = Lease.from_ack(ack(o51=120, o58=0, o59=0), 0.0)
    assert lease.t1 == 60.0
    tiny = Lease.from_ack(ack(o51=120, o58=1, o59=1), 0.0)
    assert tiny.t1 == 1.0 and tiny.t2 == 1.0


def test_infinite_lease_has_no_timers():
    lease = Lease.from_ack(ack(o51=0xFFFFFFFF), 5.0)
    assert lease.renew_at is None and lease.expires_at is None
    c = machine()
    out = c.resume(lease, 1e9)
    assert c.state == client.BOUND and c.wake_at is None and sends(out) == []


def test_lease_record_round_trip_across_clocks():
    lease = Lease.from_ack(ack(o51=120, o3=[SERVER]), 100.0)
    record = lease.to_record(lambda t: t + 1_700_000_000)
    assert record["acked_at"] == 1_700_000_100
    again = Lease.from_record(record, lambda wall: wall - 1_700_000_000 + 50)
    assert again.acked_at == 150.0 and again.options == lease.options and again.address == ADDRESS
    with pytest.raises(LeaseError, match="not valid"):
        Lease.from_record({"address": "x"}, float)


def test_cni_view_with_classless_routes_ignores_option_33_and_router():
    lease = Lease.from_ack(ack(o3=[SERVER, "192.0.2.2"], o33=[("10.1.0.0/16", "192.0.2.9")],
                               o121=[("10.9.0.0/16", "192.0.2.254"), ("192.0.2.128/25", "0.0.0.0")],
                               o6=["192.0.2.53", "192.0.2.54"], o15="example.test"), 0.0)
    view = cni_view(lease)
    assert view["address"] == ADDRESS and view["prefix"] == 24 and view["gateway"] == SERVER
    assert view["routes"] == [{"dst": "10.9.0.0/16", "gw": "192.0.2.254"},
                              {"dst": "192.0.2.128/25", "gw": "0.0.0.0", "scope": 253}]
    assert view["dns"] == {"nameservers": ["192.0.2.53", "192.0.2.54"], "domain": "example.test"}


def test_cni_view_without_classless_routes_uses_option_33_and_a_default_route():
    view = cni_view(Lease.from_ack(ack(o3=[SERVER], o33=[("10.1.0.0/16", "192.0.2.9")]), 0.0))
    assert view["routes"] == [{"dst": "10.1.0.0/16", "gw": "192.0.2.9"}, {"dst": "0.0.0.0/0", "gw": SERVER}]
    assert view["dns"] == {}
    no_router = cni_view(Lease.from_ack(ack(), 0.0))
    assert no_router["routes"] == [] and no_router["gateway"] is None


def test_cni_view_needs_a_subnet_mask():
    message = ack()
    del message.options[packet.SUBNET_MASK]
    with pytest.raises(LeaseError, match="no subnet mask"):
        cni_view(Lease.from_ack(message, 0.0))
