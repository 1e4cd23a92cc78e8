"""Sockets on a pod's interface, opened from inside the pod's network namespace.

A thread enters the namespace (:class:`~cni_ipam.dhcp.netns.Entered`, which
checks what it enters), looks the link up, brings it up if it is down, opens its
sockets and leaves again.  A socket belongs to the namespace it was
created in for the rest of its life, so the thread holds the namespace
only while it has sockets open: between renewals nothing keeps a deleted
pod's namespace alive, and the next look finds it gone.

Receiving uses a packet socket (``AF_PACKET``/``SOCK_DGRAM``, a BPF filter
for UDP to port 68): it sees replies on an interface that has no address
yet, whatever ``rp_filter`` says, as Go's and pyroute2's clients do.
Broadcasts are sent on it too (IPv4/UDP built by
:func:`~cni_ipam.dhcp.packet.ipv4_udp`).  Unicast (renew, release) goes
through a UDP socket bound to the device, so the kernel routes it from the
leased address; if that fails (address not configured) the frame goes to
the MAC address the server's last reply came from.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct
import time

from . import packet
from .netns import Entered, Gone

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8914, 0x8927
IFF_UP, IFF_RUNNING = 0x1, 0x40
PACKET_OUTGOING = 4
BROADCAST_MAC = b"\xff" * 6

# UDP to port 68, not fragmented; offsets from the IP header (SOCK_DGRAM).
_BPF = [
    (0x30, 0, 0, 9),        # A = ip protocol
    (0x15, 0, 6, 17),       # UDP? else drop
    (0x28, 0, 0, 6),        # A = flags + fragment offset
    (0x45, 4, 0, 0x1FFF),   # fragment? drop
    (0xB1, 0, 0, 0),        # X = ip header length
    (0x48, 0, 0, 2),        # A = udp destination port
    (0x15, 0, 1, 68),       # port 68? accept : drop
    (0x06, 0, 0, 0x40000),  # accept
    (0x06, 0, 0, 0),        # drop
]


class LinkGone(Gone):
    """The interface is not in the pod's namespace."""


def _ifreq(ifname: str, data: bytes = b"") -> bytes:
    return struct.pack("16s", ifname.encode()) + data.ljust(24, b"\x00")


def _flags(ctl: socket.socket, ifname: str) -> int:
    return struct.unpack_from("H", fcntl.ioctl(ctl, SIOCGIFFLAGS, _ifreq(ifname)), 16)[0]


def _bpf_program() -> tuple:
    code = b"".join(struct.pack("HBBI", *insn) for insn in _BPF)
    buffer = ctypes.create_string_buffer(code)
    return buffer, struct.pack("HL", len(_BPF), ctypes.addressof(buffer))


def check_link(path: str, ifname: str, identity=None) -> tuple:
    """The namespace's identity if it and ``ifname`` in it exist; NetnsGone, Refused or LinkGone otherwise."""
    with Entered(path, identity) as ns:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            raise LinkGone(errno.ENODEV, f"no interface {ifname} in {path}") from None
        return ns.identity


def link_identity(path: str, ifname: str) -> tuple:
    """``((st_dev, st_ino), MAC)`` of ``ifname`` in namespace ``path``; NetnsGone, Refused or LinkGone otherwise."""
    with Entered(path) as ns:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
            try:
                reply = fcntl.ioctl(ctl, SIOCGIFHWADDR, _ifreq(ifname))
            except OSError:
                raise LinkGone(errno.ENODEV, f"no interface {ifname} in {path}") from None
        return ns.identity, reply[18:24]


class LinkIO:
    """The sockets of one DHCP exchange on ``ifname`` in namespace ``path``."""

    def __init__(self, path: str, ifname: str, identity=None, carrier_wait: float = 2.0, source: str = "0.0.0.0"):
        self.ifname = ifname
        self.rx = self.udp = self.ctl = None
        self.brought_up = False
        try:
            with Entered(path, identity) as ns:
                self.identity = ns.identity
                try:
                    self.index = socket.if_nametoindex(ifname)
                except OSError:
                    raise LinkGone(errno.ENODEV, f"no interface {ifname} in {path}") from None
                self.ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                reply = fcntl.ioctl(self.ctl, SIOCGIFHWADDR, _ifreq(ifname))
                self.mac = reply[18:24]
                flags = _flags(self.ctl, ifname)
                if not flags & IFF_UP:
                    fcntl.ioctl(self.ctl, SIOCSIFFLAGS, _ifreq(ifname, struct.pack("H", flags | IFF_UP)))
                    self.brought_up = True
                self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
                buffer, program = _bpf_program()
                self.rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
                del buffer
                self.rx.bind((ifname, ETH_P_IP))
                self.rx.setblocking(False)
                self._drain()  # what arrived before the filter was attached
                self.udp = self._udp_socket(ifname, source)
        except BaseException:
            self.close()
            raise
        self._wait_carrier(carrier_wait)

    @staticmethod
    def _udp_socket(ifname: str, source: str):
        """Port 68 on the device: the kernel's route for unicast, and no ICMP "port unreachable" for replies.

        Bound to the leased address when there is one: a bound device lets the
        kernel send unicast from 0.0.0.0 when the address is not configured,
        and servers ignore such a DHCPRELEASE (dnsmasq does).  If the address
        is not on the interface, there is no socket and :meth:`send` builds
        the frame with the right source itself.
        """
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            udp.bind((source, packet.CLIENT_PORT))
            udp.setblocking(False)
            return udp
        except OSError:
            udp.close()
            return None

    def _wait_carrier(self, limit: float) -> None:
        """A link that was just set up takes a moment to carry frames; sending earlier loses them."""
        deadline = time.monotonic() + limit
        while True:
            try:
                if _flags(self.ctl, self.ifname) & IFF_RUNNING:
                    return
            except OSError:
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    def _drain(self) -> None:
        while True:
            try:
                self.rx.recv(4096)
            except (BlockingIOError, InterruptedError):
                return

    def fileno(self) -> int:
        return self.rx.fileno()

    def send(self, payload: bytes, broadcast: bool, source: str, server: str | None, server_mac: bytes | None):
        """Broadcast from ``source`` (0.0.0.0 before a lease), or unicast to ``server`` port 67."""
        if broadcast:
            frame = packet.ipv4_udp(source, "255.255.255.255", packet.CLIENT_PORT, packet.SERVER_PORT, payload)
            self.rx.sendto(frame, (self.ifname, ETH_P_IP, 0, 0, BROADCAST_MAC))
            return
        if self.udp is not None and self.udp.getsockname()[0] == source:
            try:
                self.udp.sendto(payload, (server, packet.SERVER_PORT))
                return
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise
        frame = packet.ipv4_udp(source, server, packet.CLIENT_PORT, packet.SERVER_PORT, payload)
        self.rx.sendto(frame, (self.ifname, ETH_P_IP, 0, 0, server_mac or BROADCAST_MAC))

    def receive(self) -> list:
        """Every DHCP message waiting now: ``[(Message, sender MAC), ...]``; undecodable ones are skipped."""
        found = []
        if self.udp is not None:  # only here to hold the port; its copies are not needed
            try:
                while True:
                    self.udp.recv(4096)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass
        while True:
            try:
                data, address = self.rx.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return found
            if address[2] == PACKET_OUTGOING:
                continue
            try:
                _, _, sport, dport, payload = packet.parse_ipv4_udp(data)
                if sport != packet.SERVER_PORT or dport != packet.CLIENT_PORT:
                    continue
                found.append((packet.Message.decode(payload), address[4]))
            except packet.PacketError:
                continue

    def close(self) -> None:
        for sock in (self.rx, self.udp, self.ctl):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.rx = self.udp = self.ctl = None
