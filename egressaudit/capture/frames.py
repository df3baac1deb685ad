"""From captured frames to IP packets, without building scapy Packets.

``decode(linktype, frame)`` strips the link layer (Ethernet with 802.1Q/QinQ
tags, Linux cooked v1/v2, raw IP, BSD null/loopback), reads the IPv4/IPv6
header (IPv6 extension headers and fragments included), the TCP/UDP ports and
decapsulates GTP-U, IP-in-IP and 6in4 tunnels so that the inner flow is the
one counted (as nDPI and Wireshark do).  It returns an :class:`IPPacket` or a
skip reason: the caller counts every skipped frame by reason.

This is the hot path of offline ingest and live capture: plain ``struct``
unpacking over ``bytes``; scapy's layers are used only by the dissectors, for
the few packets that need them.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_12 = 12  # DLT_RAW on most BSDs
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "null",
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_RAW: "raw",
    LINKTYPE_RAW_12: "raw",
    LINKTYPE_RAW_14: "raw",
    LINKTYPE_LOOP: "loop",
    LINKTYPE_LINUX_SLL: "linux_sll",
    LINKTYPE_IPV4: "ipv4",
    LINKTYPE_IPV6: "ipv6",
    LINKTYPE_LINUX_SLL2: "linux_sll2",
}

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = {0x8100, 0x88A8, 0x9100, 0x9200}
ETH_PPPOE_SESSION = 0x8864

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_ICMPV6 = 58
IPV6_EXT_HEADERS = {0, 43, 60, 51}  # hop-by-hop, routing, destination options, AH
IPV6_FRAGMENT = 44
GTPU_PORT = 2152

_u16 = struct.Struct("!H").unpack_from
_u16x2 = struct.Struct("!HH").unpack_from
_null_le = struct.Struct("<I").unpack_from
_null_be = struct.Struct(">I").unpack_from


class IPPacket(NamedTuple):
    """One IP packet's flow-relevant facts.  Addresses are packed bytes."""

    version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    ip_len: int  # bytes of the IP packet (header included), from the IP header
    payload: bytes  # transport payload (may be cut short by the snap length)
    tcp_flags: int  # TCP flags byte, 0 for other transports
    frag: int  # 0: not a fragment, 1: first fragment, 2: later fragment
    frag_id: int  # IPv4 identification / IPv6 fragment identification
    vlan: int  # outermost VLAN id, -1 if none


# Skip reasons, counted per capture and reported in session.json
SKIP_UNSUPPORTED_LINKTYPE = "unsupported_linktype"
SKIP_NOT_IP = "not_ip"
SKIP_MALFORMED_LINK = "malformed_link"
SKIP_MALFORMED_IP = "malformed_ip"
SKIP_MALFORMED_TRANSPORT = "malformed_transport"


def _ethertype_payload(frame: bytes, off: int, ethertype: int) -> tuple[int, int, int] | str:
    """Follow VLAN tags and PPPoE from (offset, ethertype); return (offset, ethertype, vlan) or a skip reason."""
    vlan = -1
    n = len(frame)
    while ethertype in ETH_VLAN:
        if off + 4 > n:
            return SKIP_MALFORMED_LINK
        if vlan < 0:
            vlan = _u16(frame, off)[0] & 0x0FFF
        ethertype = _u16(frame, off + 2)[0]
        off += 4
    if ethertype == ETH_PPPOE_SESSION:
        if off + 8 > n:
            return SKIP_MALFORMED_LINK
        ppp = _u16(frame, off + 6)[0]
        off += 8
        ethertype = ETH_IPV4 if ppp == 0x0021 else ETH_IPV6 if ppp == 0x0057 else 0
    return off, ethertype, vlan


def link_payload(linktype: int, frame: bytes) -> tuple[int, int] | str:
    """Offset of the IP header in a frame and the outer VLAN id, or a skip reason."""
    n = len(frame)
    vlan = -1
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return SKIP_MALFORMED_LINK
        r = _ethertype_payload(frame, 14, _u16(frame, 12)[0])
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return SKIP_MALFORMED_LINK
        r = _ethertype_payload(frame, 16, _u16(frame, 14)[0])
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return SKIP_MALFORMED_LINK
        r = _ethertype_payload(frame, 20, _u16(frame, 0)[0])
    elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return (0, vlan)
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return SKIP_MALFORMED_LINK
        # NULL is in the capturing host's byte order; LOOP in network order.  AF_INET is 2
        # everywhere; AF_INET6 is 10, 24, 28 or 30 depending on the OS.
        # Captures moved between machines may carry the other byte order: the family is
        # always small, so a value above 0xFFFF means the bytes are swapped.
        fam = _null_be(frame, 0)[0] if linktype == LINKTYPE_LOOP else _null_le(frame, 0)[0]
        if fam > 0xFFFF:
            fam = _null_le(frame, 0)[0] if linktype == LINKTYPE_LOOP else _null_be(frame, 0)[0]
        if fam == 2 or fam in (10, 24, 28, 30):
            return (4, vlan)
        return SKIP_NOT_IP
    else:
        return SKIP_UNSUPPORTED_LINKTYPE
    if isinstance(r, str):
        return r
    off, ethertype, vlan = r
    if ethertype not in (ETH_IPV4, ETH_IPV6):
        return SKIP_NOT_IP
    return (off, vlan)


def decode(linktype: int, frame: bytes) -> IPPacket | str:
    """Decode one captured frame into an :class:`IPPacket`, or return a skip reason."""
    r = link_payload(linktype, frame)
    if isinstance(r, str):
        return r
    off, vlan = r
    return decode_ip(frame, off, vlan, 0)


_IPV4 = struct.Struct("!BxHHHxBxx4s4s").unpack_from


def decode_ip(buf: bytes, off: int, vlan: int = -1, depth: int = 0) -> IPPacket | str:
    """Decode an IP packet starting at ``off`` (tunnels followed up to a small depth)."""
    n = len(buf)
    if off >= n:
        return SKIP_MALFORMED_IP
    version = buf[off] >> 4
    if version == 4:
        if off + 20 > n:
            return SKIP_MALFORMED_IP
        vihl, total, frag_id, frag_field, proto, src, dst = _IPV4(buf, off)
        ihl = (vihl & 0x0F) * 4
        if ihl < 20 or off + ihl > n:
            return SKIP_MALFORMED_IP
        if total < ihl:
            # TSO/GRO captures carry 0 here; fall back to what was captured
            total = n - off if total == 0 else -1
            if total < 0:
                return SKIP_MALFORMED_IP
        frag = 0 if not frag_field & 0x3FFF else (1 if not frag_field & 0x1FFF else 2)
        t = off + ihl
        end = min(n, off + total)
    elif version == 6:
        if off + 40 > n:
            return SKIP_MALFORMED_IP
        plen = _u16(buf, off + 4)[0]
        total = 40 + plen
        proto = buf[off + 6]
        src = buf[off + 8 : off + 24]
        dst = buf[off + 24 : off + 40]
        t = off + 40
        end = min(n, off + total) if plen else n  # jumbograms / TSO: use what was captured
        if not plen:
            total = n - off
        frag = 0
        frag_id = 0
        # walk extension headers
        for _ in range(8):
            if proto in IPV6_EXT_HEADERS:
                if t + 2 > end:
                    return SKIP_MALFORMED_IP
                nxt = buf[t]
                hlen = (buf[t + 1] + 2) * 4 if proto == 51 else (buf[t + 1] + 1) * 8
                proto = nxt
                t += hlen
            elif proto == IPV6_FRAGMENT:
                if t + 8 > end:
                    return SKIP_MALFORMED_IP
                nxt = buf[t]
                fo = _u16(buf, t + 2)[0]
                frag_off = fo >> 3
                more = fo & 1
                frag = 0 if not (more or frag_off) else (1 if frag_off == 0 else 2)
                frag_id = struct.unpack_from("!I", buf, t + 4)[0]
                proto = nxt
                t += 8
            else:
                break
        if t > end:
            return SKIP_MALFORMED_IP
    else:
        return SKIP_MALFORMED_IP

    if frag == 2:
        return IPPacket(version, src, dst, proto, 0, 0, total, b"", 0, 2, frag_id, vlan)

    sport = dport = flags = 0
    payload = b""
    if proto == PROTO_TCP:
        if t + 20 > end:
            return SKIP_MALFORMED_TRANSPORT
        sport, dport = _u16x2(buf, t)
        doff = (buf[t + 12] >> 4) * 4
        if doff < 20:
            return SKIP_MALFORMED_TRANSPORT
        flags = buf[t + 13]
        payload = buf[t + doff : end]
    elif proto == PROTO_UDP:
        if t + 8 > end:
            return SKIP_MALFORMED_TRANSPORT
        sport, dport = _u16x2(buf, t)
        payload = buf[t + 8 : end]
        if depth < 2 and (sport == GTPU_PORT or dport == GTPU_PORT) and frag == 0:
            inner = _gtpu_inner(payload)
            if inner is not None:
                r = decode_ip(payload, inner, vlan, depth + 1)
                if not isinstance(r, str):
                    return r
    elif proto in (PROTO_IPIP, PROTO_IPV6) and depth < 2 and frag == 0:
        r = decode_ip(buf[:end], t, vlan, depth + 1)
        if not isinstance(r, str):
            return r
    elif proto in (PROTO_ICMP, PROTO_ICMPV6):
        payload = buf[t:end]
    return IPPacket(version, src, dst, proto, sport, dport, total, payload, flags, frag, frag_id, vlan)


def _gtpu_inner(p: bytes) -> int | None:
    """Offset of the inner IP packet of a GTP-U (v1) G-PDU, or None."""
    if len(p) < 8 or (p[0] >> 5) != 1 or not (p[0] & 0x10) or p[1] != 0xFF:
        return None
    off = 8
    flags = p[0]
    if flags & 0x07:  # sequence, N-PDU or extension header present
        off = 12
        if len(p) < off:
            return None
        nxt = p[11]
        if flags & 0x04:
            while nxt:
                if off >= len(p):
                    return None
                ln = p[off] * 4
                if ln == 0 or off + ln > len(p):
                    return None
                nxt = p[off + ln - 1]
                off += ln
    if off < len(p) and (p[off] >> 4) in (4, 6):
        return off
    return None
