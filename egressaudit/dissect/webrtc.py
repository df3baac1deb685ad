"""Demultiplexing WebRTC's UDP port by the first byte (RFC 7983, RFC 5764 section 5.1.2).

==========  ===================
first byte  protocol
==========  ===================
0-3         STUN (RFC 8489)
16-19       ZRTP
20-63       DTLS
64-79       TURN ChannelData
128-191     RTP / RTCP
==========  ===================

Each candidate is confirmed by its own parser, so arbitrary UDP payloads are
rarely misnamed.  Microsoft's multiplexed TURN framing (0xFF10) counts as STUN.
"""

from __future__ import annotations

import struct
from typing import Literal

from egressaudit.dissect import dtls, rtp, stun

__all__ = ["FIRST_BYTES", "MIN_SIZE", "Kind", "demux", "demux_parsed", "is_zrtp", "ms_turn_datagram", "stun_datagram"]

Kind = Literal["stun", "turn_channel", "dtls", "rtp", "rtcp", "zrtp"]
_U16 = struct.Struct("!H")
ZRTP_MAGIC = b"ZRTP"
MIN_SIZE = 4  # bytes: shorter datagrams are none of these

#: The first bytes of each kind (the table above; "rtp" covers RTCP, "ms_turn" is STUN in Microsoft's TURN framing).
FIRST_BYTES: dict[str, range] = {
    "stun": range(0, 4),
    "zrtp": range(16, 20),
    "dtls": range(20, 64),
    "turn_channel": range(64, 80),
    "rtp": range(128, 192),
    "ms_turn": range(0xFF, 0x100),
}


def stun_datagram(payload: bytes) -> stun.StunMessage | None:
    """A STUN message that fills the datagram (first byte 0-3, its length field says the rest), or None."""
    if len(payload) >= 20 and 20 + _U16.unpack_from(payload, 2)[0] == len(payload):
        return stun.parse_stun(payload)
    return None


def ms_turn_datagram(payload: bytes) -> stun.StunMessage | None:
    """A STUN message in Microsoft's multiplexed-TURN framing (0xFF10), or None."""
    return stun.parse_stun(payload) if stun.is_ms_multiplexed_turn(payload) else None


def is_zrtp(payload: bytes) -> bool:
    return payload[4:8] == ZRTP_MAGIC


def demux(payload: bytes) -> Kind | None:
    """Name the protocol of one UDP payload on a WebRTC port, or None."""
    r = demux_parsed(payload)
    return r[0] if r is not None else None


def demux_parsed(payload: bytes) -> tuple[Kind, stun.StunMessage | rtp.RtpHeader | None] | None:
    """:func:`demux`, with the STUN message or RTP header that confirmed it (None for the other kinds)."""
    if len(payload) < MIN_SIZE:
        return None
    b0 = payload[0]
    if b0 <= 3:
        st = stun_datagram(payload)
        return ("stun", st) if st is not None else None
    if 16 <= b0 <= 19:
        return ("zrtp", None) if is_zrtp(payload) else None
    if 20 <= b0 <= 63:
        return ("dtls", None) if dtls.parse_dtls(payload) is not None else None
    if 64 <= b0 <= 79:
        return ("turn_channel", None) if stun.is_channel_data(payload) else None
    if 128 <= b0 <= 191:
        if rtp.is_rtcp_type(payload[1]):
            return ("rtcp", None) if rtp.parse_rtcp(payload) is not None else None
        h = rtp.parse_rtp(payload)
        return ("rtp", h) if h is not None else None
    if b0 == 0xFF:
        st = ms_turn_datagram(payload)
        if st is not None:
            return "stun", st
    return None
