"""The DHCP codec: known bytes, round trips, options, malformed input."""

from __future__ import annotations

import struct

import pytest

from cni_ipam.dhcp import names, packet
from cni_ipam.dhcp.packet import Message, PacketError

# A DHCPOFFER and the DHCPACK after it, as dnsmasq 2.90 sent them (captured in
# a test namespace): 192.0.2.106/24 from 192.0.2.1, 2-minute lease, T1 3 s,
# T2 6 s, router, DNS, domain and classless routes 10.9.0.0/16 via .254 and
# a default route via .1.
_HEAD = ("0201060006317dad0000000000000000c000026ac000020100000000f2825df4268f"
         + "00" * 202 + "63825363")
_TAIL = ("3604c00002013304000000783a04000000033b04000000060104ffffff001c04c00002ff0304c0000201"
         "790c100a09c00002fe00c00002010f0c6578616d706c652e746573740604c0000235ff")
DNSMASQ_OFFER = bytes.fromhex(_HEAD + "350102" + _TAIL)
DNSMASQ_ACK = bytes.fromhex(_HEAD + "350105" + _TAIL)
CHADDR = bytes.fromhex("f2825df4268f")


def test_decode_dnsmasq_offer():
    offer = Message.decode(DNSMASQ_OFFER)
    assert offer.op == packet.BOOTREPLY
    assert offer.xid == 0x06317DAD
    assert offer.message_type == packet.OFFER and offer.type_name == "DHCPOFFER"
    assert offer.yiaddr == "192.0.2.106" and offer.siaddr == "192.0.2.1" and offer.ciaddr == "0.0.0.0"
    assert offer.chaddr == CHADDR
    assert offer.get(packet.SERVER_ID) == "192.0.2.1"
    assert offer.get(packet.LEASE_TIME) == 120
    assert offer.get(packet.RENEWAL_TIME) == 3 and offer.get(packet.REBINDING_TIME) == 6
    assert offer.get(packet.SUBNET_MASK) == "255.255.255.0"
    assert offer.get(28) == "192.0.2.255"
    assert offer.get(packet.ROUTERS) == ["192.0.2.1"]
    assert offer.get(packet.DNS_SERVERS) == ["192.0.2.53"]
    assert offer.get(packet.DOMAIN_NAME) == "example.test"
    assert offer.get(packet.CLASSLESS_ROUTES) == [("10.9.0.0/16", "192.0.2.254"), ("0.0.0.0/0", "192.0.2.1")]
    assert Message.decode(DNSMASQ_ACK).message_type == packet.ACK


def test_decoded_offer_encodes_to_the_same_bytes():
    # dnsmasq's reply is exactly as long as its options (over the 300-byte minimum).
    assert Message.decode(DNSMASQ_OFFER).encode() == DNSMASQ_OFFER


def test_encode_discover_byte_for_byte():
    message = Message(packet.BOOTREQUEST, 0x01020304, bytes.fromhex("020000000001"),
                      {packet.MESSAGE_TYPE: bytes([packet.DISCOVER]), packet.CLIENT_ID: b"\x00c1/net/eth0",
                       packet.PARAMETER_LIST: bytes([1, 3])}, secs=2, flags=packet.FLAG_BROADCAST)
    expected = (struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x01020304, 2, 0x8000) + bytes(16)
                + bytes.fromhex("020000000001") + bytes(10) + bytes(64) + bytes(128) + b"\x63\x82\x53\x63"
                + b"\x35\x01\x01" + b"\x3d\x0c\x00c1/net/eth0" + b"\x37\x02\x01\x03" + b"\xff")
    expected += bytes(300 - len(expected))
    assert message.encode() == expected


def test_round_trip_keeps_every_field():
    message = Message(packet.BOOTREPLY, 0xFFFFFFFF, b"\xaa" * 6, {
        packet.MESSAGE_TYPE: bytes([packet.ACK]), packet.SERVER_ID: "10.0.0.1", packet.LEASE_TIME: 3600,
        packet.ROUTERS: ["10.0.0.1", "10.0.0.2"], packet.HOST_NAME: "pod-a", 2: -3600,
        packet.STATIC_ROUTES: [("10.20.0.0/16", "10.0.0.9")], 200: b"\x01\x02"},
        secs=65535, flags=0x8000, ciaddr="10.0.0.5", yiaddr="10.0.0.6", siaddr="10.0.0.7", giaddr="10.0.0.8",
        sname=b"server", file=b"boot.img", hops=3)
    again = Message.decode(message.encode())
    assert again == message
    assert again.get(2) == -3600
    assert again.get(packet.HOST_NAME) == "pod-a"
    assert again.get(200) == b"\x01\x02"


def test_long_option_is_split_and_joined_again():
    """RFC 3396: a value over 255 bytes travels as several instances of the option."""
    value = bytes(range(256)) * 2
    message = Message(packet.BOOTREQUEST, 1, b"\x01" * 6, {packet.MESSAGE_TYPE: b"\x01", 224: value})
    data = message.encode()
    assert data.count(b"\xe0\xff") == 2  # 255 + 255 + 2 bytes
    assert Message.decode(data).options[224] == value


def test_option_overload_reads_file_and_sname():
    data = bytearray(Message(packet.BOOTREPLY, 7, b"\x01" * 6, {packet.MESSAGE_TYPE: b"\x05",
                                                                 packet.OVERLOAD: 3}).encode())
    file_at, sname_at = 108, 44
    data[file_at:file_at + 7] = b"\x0f\x03abc\xff\x00"
    data[sname_at:sname_at + 5] = b"\x0c\x02hn\xff"
    message = Message.decode(bytes(data))
    assert message.get(packet.DOMAIN_NAME) == "abc"
    assert message.get(packet.HOST_NAME) == "hn"
    assert message.file == b"" and message.sname == b""


@pytest.mark.parametrize("routes,encoded", [
    # RFC 3442's examples of destination encodings
    ([("10.0.0.0/8", "192.0.2.1")], "080a" + "c0000201"),
    ([("10.17.0.0/16", "192.0.2.1")], "100a11" + "c0000201"),
    ([("10.27.129.0/24", "192.0.2.1")], "180a1b81" + "c0000201"),
    ([("10.229.0.128/25", "192.0.2.1")], "190ae50080" + "c0000201"),
    ([("10.198.122.47/32", "192.0.2.1")], "200ac67a2f" + "c0000201"),
    ([("0.0.0.0/0", "192.0.2.1"), ("192.0.2.0/24", "0.0.0.0")], "00c0000201" + "18c0000200000000"),
])
def test_classless_routes_known_encodings(routes, encoded):
    assert packet.encode_routes121(routes).hex() == encoded
    assert packet.decode_routes121(bytes.fromhex(encoded)) == routes


def test_classless_route_bits_past_the_width_are_ignored():
    assert packet.decode_routes121(bytes.fromhex("090aff" + "c0000201")) == [("10.128.0.0/9", "192.0.2.1")]


@pytest.mark.parametrize("dst,prefix", [("10.0.0.0", 8), ("172.16.0.0", 16), ("192.168.1.0", 24),
                                        ("10.1.0.0", 16), ("10.1.2.0", 24), ("10.1.2.3", 32), ("224.0.0.0", 32)])
def test_static_routes_use_the_classful_mask_widened_to_keep_host_bits(dst, prefix):
    data = packet.ip_bytes(dst) + packet.ip_bytes("192.0.2.1")
    assert packet.decode_option(packet.STATIC_ROUTES, data) == [(f"{dst}/{prefix}", "192.0.2.1")]


@pytest.mark.parametrize("data,fragment", [
    (b"\x01" * 10, "shorter than a DHCP message"),
    (DNSMASQ_OFFER[:236] + b"\x00\x00\x00\x00" + DNSMASQ_OFFER[240:], "no DHCP magic cookie"),
    (DNSMASQ_OFFER[:240] + b"\x35", "option 53 at byte 0 has no length byte"),
    (DNSMASQ_OFFER[:240] + b"\x36\x04\xc0\x00", "option 54 (dhcp-server-identifier) at byte 0 says 4 bytes, only 2 left"),
    (DNSMASQ_OFFER[:2] + b"\x00" + DNSMASQ_OFFER[3:], "hlen 0"),
    (DNSMASQ_OFFER[:240] + b"\x79\x05\x21\x0a\x00\x00\x00\xff", None),
])
def test_malformed_messages_say_what_is_wrong(data, fragment):
    if fragment is None:  # option 121 is only decoded when asked for
        message = Message.decode(data)
        with pytest.raises(PacketError, match="prefix length 33 > 32"):
            message.get(packet.CLASSLESS_ROUTES)
        return
    with pytest.raises(PacketError) as caught:
        Message.decode(data)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("code,data,fragment", [
    (packet.SUBNET_MASK, b"\xff\xff\xff", "option 1 (subnet-mask): expected 4 bytes (an address), got 3 bytes"),
    (packet.ROUTERS, b"\x01\x02\x03\x04\x05", "a multiple of 4 bytes"),
    (packet.LEASE_TIME, b"\x00\x00\x01", "expected 4 bytes"),
    (packet.STATIC_ROUTES, b"\x0a\x00\x00\x00", "a multiple of 8 bytes"),
    (packet.CLASSLESS_ROUTES, b"\x18\x0a\x00", "route at byte 0 is truncated"),
])
def test_malformed_options_say_what_is_wrong(code, data, fragment):
    with pytest.raises(PacketError) as caught:
        packet.decode_option(code, data)
    assert fragment in str(caught.value)


def test_bad_values_are_refused_on_construction():
    with pytest.raises(PacketError, match="not an IPv4 address"):
        Message(packet.BOOTREQUEST, 1, b"\x01" * 6, ciaddr="10.0.0.256")
    with pytest.raises(PacketError, match="xid"):
        Message(packet.BOOTREQUEST, 1 << 32, b"\x01" * 6)
    with pytest.raises(PacketError, match="op 3"):
        Message(3, 1, b"\x01" * 6)
    with pytest.raises(PacketError, match="chaddr"):
        Message(packet.BOOTREQUEST, 1, b"\x01" * 17)
    with pytest.raises(PacketError, match="option 51 .*cannot encode"):
        Message(packet.BOOTREQUEST, 1, b"\x01" * 6, {packet.LEASE_TIME: 1 << 40})
    with pytest.raises(PacketError, match="out of range"):
        packet.encode_options({255: b"x"})


def test_masks_and_prefixes():
    assert packet.prefix_of_mask("255.255.255.0") == 24
    assert packet.prefix_of_mask("0.0.0.0") == 0
    assert packet.prefix_of_mask("255.255.255.255") == 32
    assert packet.mask_of_prefix(20) == "255.255.240.0"
    with pytest.raises(PacketError, match="not contiguous"):
        packet.prefix_of_mask("255.0.255.0")


def test_ipv4_udp_round_trip_and_checksums():
    payload = Message(packet.BOOTREQUEST, 9, b"\x02" * 6, {packet.MESSAGE_TYPE: b"\x01"}).encode()
    frame = packet.ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, payload)
    assert len(frame) == 20 + 8 + len(payload)
    assert packet._checksum(frame[:20]) == 0  # a valid header sums to zero
    pseudo = frame[12:20] + struct.pack("!BBH", 0, 17, 8 + len(payload))
    assert packet._checksum(pseudo + frame[20:]) == 0
    assert packet.parse_ipv4_udp(frame) == ("0.0.0.0", "255.255.255.255", 68, 67, payload)
    assert packet.parse_ipv4_udp(frame + b"trailing ethernet padding")[4] == payload


@pytest.mark.parametrize("mutate,fragment", [
    (lambda f: f[:20], "too short"),
    (lambda f: b"\x65" + f[1:], "not an IPv4 header"),
    (lambda f: f[:9] + b"\x06" + f[10:], "not UDP"),
    (lambda f: f[:6] + b"\x20\x00" + f[8:], "fragmented"),
    (lambda f: f[:2] + b"\xff\xff" + f[4:], "total length"),
    (lambda f: f[:24] + b"\x00\x04" + f[26:], "UDP length 4"),
])
def test_malformed_datagrams(mutate, fragment):
    frame = packet.ipv4_udp("192.0.2.1", "192.0.2.9", 67, 68, b"x" * 40)
    with pytest.raises(PacketError, match=fragment):
        packet.parse_ipv4_udp(mutate(frame))


def test_option_names_accept_go_names_dhcp_options_names_and_codes():
    for name, code in (("dhcp-client-identifier", 61), ("subnet-mask", 1), ("routers", 3), ("host-name", 12),
                       ("user-class", 77), ("vendor-class-identifier", 60), ("classless-static-routes", 121),
                       ("rfc3442-classless-static-routes", 121), ("domain-name-servers", 6), ("domain-name", 15),
                       ("static-routes", 33), ("ntp-servers", 42), ("interface-mtu", 26)):
        assert names.option_code(name) == code
    assert names.option_code("121") == 121 and names.option_code(42) == 42
    for bad in ("0", "255", "256", "-1", "classless_static_routes", "١٢", "", True, None, 1.5):
        with pytest.raises(ValueError):
            names.option_code(bad)
    assert names.option_name(121) == "classless-static-routes" and names.option_name(250) == "option-250"
