"""DHCPv4 messages (RFC 2131) and their options (RFC 2132, 3396, 3442), as bytes and values.

Pure: bytes in, :class:`Message` out, and back.  Every malformed input
raises :class:`PacketError` (a ``ValueError``) saying what and where; the
daemon drops such a packet and logs the reason.  Also here, because the
daemon sends and receives whole IPv4/UDP datagrams on a packet socket:
:func:`ipv4_udp` and :func:`parse_ipv4_udp`.

Options are kept as ``{code: raw bytes}`` in the order they came; typed
views (:func:`decode_option`, :func:`encode_option`) turn them into
addresses, numbers, strings and routes.
"""

from __future__ import annotations

import struct

from .names import option_name

BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHER = 1
MAGIC = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
SERVER_PORT, CLIENT_PORT = 67, 68
MIN_LENGTH = 300  # BOOTP's minimum; some servers drop shorter requests

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_TYPES = {DISCOVER: "DHCPDISCOVER", OFFER: "DHCPOFFER", REQUEST: "DHCPREQUEST", DECLINE: "DHCPDECLINE",
                 ACK: "DHCPACK", NAK: "DHCPNAK", RELEASE: "DHCPRELEASE", INFORM: "DHCPINFORM"}

# Option codes used by name in the daemon.
SUBNET_MASK, ROUTERS, DNS_SERVERS, HOST_NAME, DOMAIN_NAME = 1, 3, 6, 12, 15
STATIC_ROUTES, REQUESTED_ADDRESS, LEASE_TIME, OVERLOAD, MESSAGE_TYPE = 33, 50, 51, 52, 53
SERVER_ID, PARAMETER_LIST, MESSAGE, MAX_SIZE, RENEWAL_TIME, REBINDING_TIME = 54, 55, 56, 57, 58, 59
CLIENT_ID, CLASSLESS_ROUTES = 61, 121
PAD, END = 0, 255

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, then the magic cookie


class PacketError(ValueError):
    """A DHCP message, option or IP/UDP datagram that cannot be decoded or encoded."""


# --- IPv4 addresses as text <-> 4 bytes (no socket import: this module is pure) -------------------

def ip_bytes(text: str) -> bytes:
    parts = text.split(".") if isinstance(text, str) else ()
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts):
        raise PacketError(f"{text!r} is not an IPv4 address")
    return bytes(int(p) for p in parts)


def ip_text(data: bytes) -> str:
    return ".".join(str(b) for b in data)


def prefix_of_mask(mask: str) -> int:
    """``255.255.255.0`` -> 24; a non-contiguous mask is an error."""
    value = int.from_bytes(ip_bytes(mask), "big")
    prefix = bin(value).count("1")
    if value != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
        raise PacketError(f"subnet mask {mask} is not contiguous")
    return prefix


def mask_of_prefix(prefix: int) -> str:
    return ip_text(((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF).to_bytes(4, "big"))


# --- option values ---------------------------------------------------------------------------------

# How each known option's bytes read.  Unknown codes stay bytes.
KINDS = {
    1: "ip", 2: "i32", 3: "ips", 4: "ips", 5: "ips", 6: "ips", 7: "ips", 8: "ips", 9: "ips", 10: "ips", 11: "ips",
    12: "str", 13: "u16", 14: "str", 15: "str", 16: "ip", 17: "str", 18: "str", 19: "u8", 22: "u16", 23: "u8",
    24: "u32", 26: "u16", 28: "ip", 32: "ip", 33: "routes33", 35: "u32", 37: "u8", 38: "u32", 40: "str",
    41: "ips", 42: "ips", 44: "ips", 45: "ips", 46: "u8", 47: "str", 50: "ip", 51: "u32", 52: "u8", 53: "u8",
    54: "ip", 55: "u8s", 56: "str", 57: "u16", 58: "u32", 59: "u32", 60: "str", 66: "str", 67: "str",
    121: "routes121",
}


def _need(code: int, data: bytes, ok: bool, expected: str) -> None:
    if not ok:
        raise PacketError(f"option {code} ({option_name(code)}): expected {expected}, got {len(data)} bytes")


def _classful_prefix(dst: bytes) -> int:
    """Option 33's destination has no mask: its class, widened until no host bit is cut off."""
    first = dst[0]
    prefix = 8 if first < 128 else 16 if first < 192 else 24 if first < 224 else 32
    value = int.from_bytes(dst, "big")
    while prefix < 32 and value & ((1 << (32 - prefix)) - 1):
        prefix += 8
    return prefix


def decode_routes121(data: bytes) -> list:
    """RFC 3442: ``[(destination "a.b.c.d/n", router "a.b.c.d"), ...]``; router 0.0.0.0 means on-link."""
    routes = []
    i = 0
    while i < len(data):
        width = data[i]
        if width > 32:
            raise PacketError(f"option 121 (classless-static-routes): prefix length {width} > 32 at byte {i}")
        significant = (width + 7) // 8
        end = i + 1 + significant + 4
        if end > len(data):
            raise PacketError(f"option 121 (classless-static-routes): route at byte {i} is truncated "
                              f"(needs {1 + significant + 4} bytes, {len(data) - i} left)")
        dst = int.from_bytes(data[i + 1:i + 1 + significant] + bytes(4 - significant), "big")
        dst &= (0xFFFFFFFF << (32 - width)) & 0xFFFFFFFF  # RFC 3442: bits past the width are ignored
        routes.append((f"{ip_text(dst.to_bytes(4, 'big'))}/{width}", ip_text(data[end - 4:end])))
        i = end
    return routes


def encode_routes121(routes) -> bytes:
    out = bytearray()
    for dst, router in routes:
        address, _, width = dst.partition("/")
        if not width.isdigit() or int(width) > 32:
            raise PacketError(f"route destination {dst!r} is not a.b.c.d/n")
        width = int(width)
        out.append(width)
        out += ip_bytes(address)[:(width + 7) // 8]
        out += ip_bytes(router)
    return bytes(out)


def decode_option(code: int, data: bytes):
    """The value of option ``code``: str, int, list or bytes according to :data:`KINDS`."""
    kind = KINDS.get(code)
    if kind == "ip":
        _need(code, data, len(data) == 4, "4 bytes (an address)")
        return ip_text(data)
    if kind == "ips":
        _need(code, data, len(data) >= 4 and len(data) % 4 == 0, "a multiple of 4 bytes (addresses)")
        return [ip_text(data[i:i + 4]) for i in range(0, len(data), 4)]
    if kind in ("u8", "u16", "u32", "i32"):
        size = {"u8": 1, "u16": 2, "u32": 4, "i32": 4}[kind]
        _need(code, data, len(data) == size, f"{size} bytes")
        return int.from_bytes(data, "big", signed=kind == "i32")
    if kind == "u8s":
        return list(data)
    if kind == "str":
        return data.rstrip(b"\x00").decode("utf-8", "replace")
    if kind == "routes33":
        _need(code, data, len(data) >= 8 and len(data) % 8 == 0, "a multiple of 8 bytes (destination, router)")
        return [(f"{ip_text(data[i:i + 4])}/{_classful_prefix(data[i:i + 4])}", ip_text(data[i + 4:i + 8]))
                for i in range(0, len(data), 8)]
    if kind == "routes121":
        return decode_routes121(data)
    return bytes(data)


def encode_option(code: int, value) -> bytes:
    """Bytes for ``value`` (as :func:`decode_option` returns it); bytes pass through."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    kind = KINDS.get(code)
    try:
        if kind == "ip":
            return ip_bytes(value)
        if kind == "ips":
            return b"".join(ip_bytes(v) for v in value)
        if kind in ("u8", "u16", "u32", "i32"):
            size = {"u8": 1, "u16": 2, "u32": 4, "i32": 4}[kind]
            return int(value).to_bytes(size, "big", signed=kind == "i32")
        if kind == "u8s":
            return bytes(value)
        if kind == "str":
            return value.encode("utf-8")
        if kind == "routes33":
            return b"".join(ip_bytes(dst.split("/")[0]) + ip_bytes(gw) for dst, gw in value)
        if kind == "routes121":
            return encode_routes121(value)
    except (OverflowError, TypeError, AttributeError) as exc:
        raise PacketError(f"option {code} ({option_name(code)}): cannot encode {value!r}: {exc}") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise PacketError(f"option {code} ({option_name(code)}): give bytes for an option of unknown type")


def parse_options(data: bytes, where: str = "options") -> list:
    """``[(code, bytes), ...]`` from an options area; stops at END (a missing END is tolerated)."""
    found = []
    i = 0
    while i < len(data):
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            break
        if i + 1 >= len(data):
            raise PacketError(f"{where}: option {code} at byte {i} has no length byte")
        length = data[i + 1]
        if i + 2 + length > len(data):
            raise PacketError(f"{where}: option {code} ({option_name(code)}) at byte {i} says {length} bytes, "
                              f"only {len(data) - i - 2} left")
        found.append((code, bytes(data[i + 2:i + 2 + length])))
        i += 2 + length
    return found


def encode_options(options: dict) -> bytes:
    """Options then END; values over 255 bytes are split into several instances (RFC 3396)."""
    out = bytearray()
    for code, value in options.items():
        if not 1 <= code <= 254:
            raise PacketError(f"option code {code} is out of range 1-254")
        value = bytes(value)
        if not value:
            out += bytes((code, 0))
        for i in range(0, len(value), 255):
            chunk = value[i:i + 255]
            out += bytes((code, len(chunk))) + chunk
    out.append(END)
    return bytes(out)


# --- messages --------------------------------------------------------------------------------------

class Message:
    """One DHCP message.  Addresses are dotted-quad text, ``chaddr`` the hardware address bytes.

    Checked on construction, so a bad value never reaches the wire; a
    decoded message is checked the same way.
    """

    __slots__ = ("op", "xid", "secs", "flags", "ciaddr", "yiaddr", "siaddr", "giaddr", "chaddr", "sname",
                 "file", "hops", "options")

    def __init__(self, op, xid, chaddr, options=None, secs=0, flags=0, ciaddr="0.0.0.0", yiaddr="0.0.0.0",
                 siaddr="0.0.0.0", giaddr="0.0.0.0", sname=b"", file=b"", hops=0):
        if op not in (BOOTREQUEST, BOOTREPLY):
            raise PacketError(f"op {op} is neither BOOTREQUEST (1) nor BOOTREPLY (2)")
        if not 0 <= xid <= 0xFFFFFFFF:
            raise PacketError(f"xid {xid} does not fit 32 bits")
        if not 0 <= secs <= 0xFFFF or not 0 <= flags <= 0xFFFF or not 0 <= hops <= 255:
            raise PacketError(f"secs {secs}, flags {flags} or hops {hops} out of range")
        if not isinstance(chaddr, (bytes, bytearray)) or not 1 <= len(chaddr) <= 16:
            raise PacketError(f"chaddr {chaddr!r}: expected 1-16 bytes")
        for name, value in (("ciaddr", ciaddr), ("yiaddr", yiaddr), ("siaddr", siaddr), ("giaddr", giaddr)):
            ip_bytes(value)  # raises PacketError naming the value
        if len(sname) > 64 or len(file) > 128:
            raise PacketError("sname is limited to 64 bytes and file to 128")
        self.op = op
        self.xid = xid
        self.secs = secs
        self.flags = flags
        self.hops = hops
        self.ciaddr = ciaddr
        self.yiaddr = yiaddr
        self.siaddr = siaddr
        self.giaddr = giaddr
        self.chaddr = bytes(chaddr)
        self.sname = bytes(sname)
        self.file = bytes(file)
        self.options = {}
        for code, value in (options or {}).items():
            self.options[code] = encode_option(code, value)

    # -- typed access --
    @property
    def message_type(self):
        data = self.options.get(MESSAGE_TYPE)
        return data[0] if data and len(data) == 1 else None

    @property
    def type_name(self) -> str:
        kind = self.message_type
        return MESSAGE_TYPES.get(kind, f"type {kind}" if kind is not None else "BOOTP")

    def get(self, code: int, default=None):
        """The decoded value of option ``code`` (see :func:`decode_option`), or ``default``."""
        data = self.options.get(code)
        return default if data is None else decode_option(code, data)

    # -- bytes --
    def encode(self) -> bytes:
        header = _HEADER.pack(self.op, HTYPE_ETHER, len(self.chaddr), self.hops, self.xid, self.secs, self.flags,
                              ip_bytes(self.ciaddr), ip_bytes(self.yiaddr), ip_bytes(self.siaddr),
                              ip_bytes(self.giaddr), self.chaddr, self.sname, self.file)
        data = header + MAGIC + encode_options(self.options)
        return data + bytes(max(0, MIN_LENGTH - len(data)))

    @classmethod
    def decode(cls, data: bytes) -> "Message":
        if len(data) < _HEADER.size + 4:
            raise PacketError(f"{len(data)} bytes is shorter than a DHCP message ({_HEADER.size + 4})")
        (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
         file) = _HEADER.unpack_from(data)
        if data[_HEADER.size:_HEADER.size + 4] != MAGIC:
            raise PacketError(f"no DHCP magic cookie (found {data[_HEADER.size:_HEADER.size + 4].hex()})")
        if not 1 <= hlen <= 16:
            raise PacketError(f"hlen {hlen} is not within 1-16")
        pairs = parse_options(data[_HEADER.size + 4:])
        overload = [v for c, v in pairs if c == OVERLOAD]
        if overload:  # RFC 2131 4.1: file, then sname, may carry more options
            value = overload[0][0] if overload[0] else 0
            if value & 1:
                pairs += parse_options(file, "file field (option overload)")
                file = b""
            if value & 2:
                pairs += parse_options(sname, "sname field (option overload)")
                sname = b""
        options = {}
        for code, value in pairs:  # RFC 3396: repeated options concatenate
            options[code] = options.get(code, b"") + value
        message = cls(op, xid, chaddr[:hlen], None, secs, flags, ip_text(ciaddr), ip_text(yiaddr),
                      ip_text(siaddr), ip_text(giaddr), sname.rstrip(b"\x00"), file.rstrip(b"\x00"), hops)
        message.options = options
        return message

    def __eq__(self, other):
        return isinstance(other, Message) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self):
        return (f"Message({self.type_name}, xid={self.xid:#010x}, ciaddr={self.ciaddr}, yiaddr={self.yiaddr}, "
                f"chaddr={self.chaddr.hex(':')}, options={sorted(self.options)})")


# --- IPv4 + UDP around a message (for the packet socket) ----------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ttl: int = 64) -> bytes:
    """An IPv4 datagram carrying one UDP datagram, both checksums filled in."""
    src_b, dst_b = ip_bytes(src), ip_bytes(dst)
    length = 8 + len(payload)
    if 20 + length > 0xFFFF:
        raise PacketError(f"payload of {len(payload)} bytes does not fit one IPv4 datagram")
    pseudo = src_b + dst_b + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 20 + length, 0, 0, ttl, 17, 0, src_b, dst_b)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def parse_ipv4_udp(data: bytes) -> tuple:
    """``(src, dst, sport, dport, payload)`` of an IPv4/UDP datagram.

    Checksums are not verified: a datagram from a local peer over a veth
    often carries a partial checksum (offload), as every DHCP client learns.
    """
    if len(data) < 28:
        raise PacketError(f"{len(data)} bytes is too short for IPv4 + UDP")
    version, ihl = data[0] >> 4, (data[0] & 0x0F) * 4
    if version != 4 or ihl < 20:
        raise PacketError(f"not an IPv4 header (version {version}, header length {ihl})")
    total = int.from_bytes(data[2:4], "big")
    if total < ihl + 8 or total > len(data):
        raise PacketError(f"IPv4 total length {total} does not fit the {len(data)} bytes received")
    if data[9] != 17:
        raise PacketError(f"IP protocol {data[9]} is not UDP")
    if int.from_bytes(data[6:8], "big") & 0x3FFF:
        raise PacketError("fragmented datagram")
    sport, dport, length = struct.unpack_from("!HHH", data, ihl)
    if length < 8 or ihl + length > total:
        raise PacketError(f"UDP length {length} does not fit the IPv4 datagram")
    return ip_text(data[12:16]), ip_text(data[16:20]), sport, dport, bytes(data[ihl + 8:ihl + length])
