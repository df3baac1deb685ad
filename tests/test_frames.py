"""Link-layer and IP decoding on frames built with scapy (the reference implementation)."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Raw

from egressaudit.capture import frames as fr


def _ip4(a: str) -> bytes:
    return socket.inet_aton(a)


UDP4 = IP(src="10.0.0.2", dst="203.0.113.9", id=7) / UDP(sport=5000, dport=8801) / Raw(b"x" * 30)
TCP6 = IPv6(src="fd00::2", dst="2001:db8::9") / TCP(sport=40000, dport=443, flags="S") / Raw(b"hello")


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (fr.LINKTYPE_ETHERNET, bytes(Ether() / UDP4)),
        (fr.LINKTYPE_ETHERNET, bytes(Ether() / Dot1Q(vlan=113) / UDP4)),
        (fr.LINKTYPE_ETHERNET, bytes(Ether() / Dot1AD(vlan=5) / Dot1Q(vlan=113) / UDP4)),
        (fr.LINKTYPE_LINUX_SLL, bytes(CookedLinux(proto=0x0800) / UDP4)),
        (fr.LINKTYPE_LINUX_SLL2, bytes(CookedLinuxV2(proto=0x0800) / UDP4)),
        (fr.LINKTYPE_RAW, bytes(UDP4)),
        (fr.LINKTYPE_IPV4, bytes(UDP4)),
        (fr.LINKTYPE_NULL, struct.pack("<I", 2) + bytes(UDP4)),
        (fr.LINKTYPE_LOOP, struct.pack(">I", 2) + bytes(UDP4)),
        (fr.LINKTYPE_NULL, bytes(Loopback(type=2) / UDP4)),
        (fr.LINKTYPE_NULL, struct.pack(">I", 2) + bytes(UDP4)),  # written on a big-endian host
    ],
)
def test_link_layers_ipv4_udp(linktype: int, frame: bytes) -> None:
    p = fr.decode(linktype, frame)
    assert isinstance(p, fr.IPPacket)
    assert (p.version, p.src, p.dst, p.proto, p.sport, p.dport) == (4, _ip4("10.0.0.2"), _ip4("203.0.113.9"), 17, 5000, 8801)
    assert p.ip_len == len(UDP4) == 20 + 8 + 30
    assert p.payload == b"x" * 30
    assert p.frag == 0


def test_vlan_id_is_the_outer_tag() -> None:
    p = fr.decode(fr.LINKTYPE_ETHERNET, bytes(Ether() / Dot1AD(vlan=5) / Dot1Q(vlan=113) / UDP4))
    assert isinstance(p, fr.IPPacket) and p.vlan == 5


def test_ipv6_with_extension_header_and_null_af_inet6() -> None:
    pkt = IPv6(src="fd00::2", dst="2001:db8::9") / IPv6ExtHdrHopByHop() / TCP(sport=40000, dport=443, flags="S") / Raw(b"hello")
    for linktype, frame in [(fr.LINKTYPE_ETHERNET, bytes(Ether() / pkt)), (fr.LINKTYPE_NULL, struct.pack("<I", 30) + bytes(pkt))]:
        p = fr.decode(linktype, frame)
        assert isinstance(p, fr.IPPacket)
        assert (p.version, p.proto, p.sport, p.dport, p.payload, p.tcp_flags) == (6, 6, 40000, 443, b"hello", 0x02)
        assert p.ip_len == len(pkt)


def test_ipv4_fragments() -> None:
    big = IP(src="10.0.0.2", dst="203.0.113.9", id=99) / UDP(sport=5000, dport=3478) / Raw(b"y" * 3000)
    frags = fragment(big, fragsize=1000)
    decoded = [fr.decode(fr.LINKTYPE_RAW, bytes(f)) for f in frags]
    assert all(isinstance(d, fr.IPPacket) for d in decoded)
    kinds = [d.frag for d in decoded if isinstance(d, fr.IPPacket)]
    assert kinds[0] == 1 and set(kinds[1:]) == {2}
    first = decoded[0]
    assert isinstance(first, fr.IPPacket) and (first.sport, first.dport, first.frag_id) == (5000, 3478, 99)
    assert sum(d.ip_len for d in decoded if isinstance(d, fr.IPPacket)) == sum(len(f) for f in frags)


def test_ipv6_fragment_header() -> None:
    pkt = IPv6(src="fd00::2", dst="2001:db8::9") / IPv6ExtHdrFragment(id=1234, m=1, offset=0) / UDP(sport=1, dport=2) / Raw(b"z" * 16)
    p = fr.decode(fr.LINKTYPE_RAW, bytes(pkt))
    assert isinstance(p, fr.IPPacket) and (p.frag, p.frag_id, p.sport, p.dport) == (1, 1234, 1, 2)


def test_gtpu_tunnel_is_decapsulated() -> None:
    inner = bytes(UDP4)
    gtp = struct.pack("!BBHI", 0x30, 0xFF, len(inner), 0x1234) + inner
    outer = IP(src="172.16.0.1", dst="172.16.0.2") / UDP(sport=2152, dport=2152) / Raw(gtp)
    p = fr.decode(fr.LINKTYPE_ETHERNET, bytes(Ether() / Dot1Q(vlan=113) / outer))
    assert isinstance(p, fr.IPPacket)
    assert (p.src, p.dport, p.vlan) == (_ip4("10.0.0.2"), 8801, 113)


@pytest.mark.parametrize(
    ("linktype", "frame", "reason"),
    [
        (fr.LINKTYPE_ETHERNET, b"\x00" * 5, fr.SKIP_MALFORMED_LINK),
        (fr.LINKTYPE_ETHERNET, bytes(Ether(type=0x0806) / Raw(b"a" * 28)), fr.SKIP_NOT_IP),
        (fr.LINKTYPE_ETHERNET, bytes(Ether(type=0x0800) / Raw(b"\x45\x00")), fr.SKIP_MALFORMED_IP),
        (fr.LINKTYPE_RAW, b"\x99" * 40, fr.SKIP_MALFORMED_IP),
        (fr.LINKTYPE_RAW, bytes(IP(src="1.1.1.1", dst="2.2.2.2", proto=6) / Raw(b"abc")), fr.SKIP_MALFORMED_TRANSPORT),
        (147, b"whatever", fr.SKIP_UNSUPPORTED_LINKTYPE),
        (fr.LINKTYPE_RAW, b"", fr.SKIP_MALFORMED_IP),
    ],
)
def test_bad_frames_give_a_skip_reason(linktype: int, frame: bytes, reason: str) -> None:
    assert fr.decode(linktype, frame) == reason


def test_garbage_never_raises() -> None:
    import random

    rng = random.Random(1)
    base = bytes(Ether() / Dot1Q() / UDP4)
    for _ in range(3000):
        n = rng.randrange(0, len(base) + 1)
        frame = bytearray(base[:n])
        for _ in range(rng.randrange(0, 4)):
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        for lt in (fr.LINKTYPE_ETHERNET, fr.LINKTYPE_RAW, fr.LINKTYPE_LINUX_SLL, fr.LINKTYPE_LINUX_SLL2, fr.LINKTYPE_NULL):
            r = fr.decode(lt, bytes(frame))
            assert isinstance(r, fr.IPPacket | str)
