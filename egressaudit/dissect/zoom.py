"""Zoom's media encapsulation on UDP 8801-8810 (and in peer-to-peer calls).

Publicly documented by Michel et al., "Enabling Passive Measurement of Zoom
Performance in Production Networks" (IMC 2022, the zoom-analysis project and
its Wireshark dissector) and implemented in nDPI's ``protocols/zoom.c``:

* Traffic to and from Zoom's multimedia routers starts with an 8-byte *SFU
  encapsulation*: type (1 byte; 1-4 connection set-up, 5 media), sequence
  number (2), 4 unknown bytes, direction (1 byte: 0 towards Zoom, 4 from Zoom).
* An SFU type-5 packet, and every peer-to-peer media packet, carries a *media
  encapsulation* whose first byte is the media type: 15 audio, 16 video,
  13 or 30 screen share, 33-35 RTCP.  The RTP header follows at a type-specific
  offset (19 audio, 24 video, 27 screen share, 16 RTCP) from the start of the
  media encapsulation; the RTP payload is encrypted, its header is not.

A packet is only called media when an RTP (or RTCP) header parses at that
offset, which keeps Zoom's control packets of the same media type out.
"""

from __future__ import annotations

from dataclasses import dataclass

from egressaudit.dissect.rtp import RtcpHeader, RtpHeader, parse_rtcp, parse_rtp

__all__ = ["MEDIA_TYPES", "P2P_CONTROL", "SFU_TYPES", "ZoomPacket", "is_p2p_control", "parse_zoom"]

SFU_HEADER = 8
SFU_MEDIA = 5
SFU_TYPES = frozenset((1, 2, 3, 4, 5))
STUN_COOKIE = b"\x21\x12\xa4\x42"

#: media type byte -> (kind, offset of the RTP/RTCP header inside the media encapsulation)
MEDIA_TYPES: dict[int, tuple[str, int]] = {
    15: ("audio", 19),
    16: ("video", 24),
    13: ("screen_share", 27),
    30: ("screen_share", 27),
    33: ("rtcp", 16),
    34: ("rtcp", 16),
    35: ("rtcp", 16),
}


@dataclass(frozen=True, slots=True)
class ZoomPacket:
    """One Zoom packet: ``kind`` is audio, video, screen_share, rtcp or other (set-up, control)."""

    kind: str
    #: The media type byte (None for SFU set-up packets).
    media_type: int | None
    #: SFU type (1-5) for server traffic, None for peer-to-peer packets.
    sfu_type: int | None
    rtp: RtpHeader | None = None
    rtcp: RtcpHeader | None = None
    #: 0 towards Zoom, 4 from Zoom (SFU traffic only).
    direction: int | None = None


def _media(data: bytes) -> tuple[str, int, RtpHeader | None, RtcpHeader | None] | None:
    if not data:
        return None
    known = MEDIA_TYPES.get(data[0])
    if known is None:
        return None
    kind, off = known
    if len(data) <= off:
        return None
    if kind == "rtcp":
        rtcp = parse_rtcp(data[off:])
        return (kind, data[0], None, rtcp) if rtcp is not None else None
    rtp = parse_rtp(data[off:])
    return (kind, data[0], rtp, None) if rtp is not None else None


def parse_zoom(payload: bytes, server_side: bool = True) -> ZoomPacket | None:
    """Parse a Zoom packet.

    ``server_side=True``: a packet to or from a Zoom server port (SFU
    encapsulation expected); any SFU packet is returned, with ``kind="other"``
    unless it carries media.  ``server_side=False``: a peer-to-peer packet; only
    media (an RTP/RTCP header at the documented offset) is returned.
    """
    if len(payload) < SFU_HEADER + 1:
        return None
    if server_side:
        sfu = payload[0]
        if sfu not in SFU_TYPES or payload[4:8] == STUN_COOKIE:
            return None
        direction = payload[7]
        if sfu == SFU_MEDIA:
            m = _media(payload[SFU_HEADER:])
            if m is not None:
                return ZoomPacket(m[0], m[1], sfu, m[2], m[3], direction)
            return ZoomPacket("other", payload[SFU_HEADER], sfu, direction=direction)
        return ZoomPacket("other", None, sfu, direction=direction)
    m = _media(payload)
    if m is None:
        return None
    return ZoomPacket(m[0], m[1], None, m[2], m[3])


#: The first byte of a Zoom peer-to-peer set-up packet.
P2P_CONTROL = 0x1F
#: Zoom peer-to-peer set-up packets (type 0x1f), as nDPI's zoom.c recognises them; they carry the peers' addresses.
P2P_CONTROL_TAIL = bytes.fromhex("0100080001000400")


def is_p2p_control(payload: bytes) -> bool:
    """A Zoom peer-to-peer connection set-up packet (type 0x1f)."""
    return len(payload) >= 24 and payload[0] == P2P_CONTROL and payload[1] in (1, 2) and payload[2:10] == P2P_CONTROL_TAIL
