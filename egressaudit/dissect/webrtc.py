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

__all__ = ["Kind", "demux", "demux_parsed"]

Kind = Literal["stun", "turn_channel", "dtls", "rtp", "rtcp", "zrtp"]
_U16 = struct.Struct("!H")
ZRTP_MAGIC = b"ZRTP"


def demux(payload: bytes) -> Kind | None:
    """Name the protocol of one UDP payload on a WebRTC port, or None."""
    r = demux_parsed(payload)
    return r[0] if r is not None else None


def demux_parsed(payload: bytes) -> tuple[Kind, stun.StunMessage | rtp.RtpHeader | None] | None:
    """:func:`demux`, with the STUN message or RTP header that confirmed it (None for the other kinds)."""
    if len(payload) < 4:
        return None
    b0 = payload[0]
    if b0 <= 3:
        if len(payload) >= 20 and 20 + _U16.unpack_from(payload, 2)[0] == len(payload):
            st = stun.parse_stun(payload)
            if st is not None:
                return "stun", st
        return None
    if 16 <= b0 <= 19:
        return ("zrtp", None) if payload[4:8] == ZRTP_MAGIC else None
    if 20 <= b0 <= 63:
        return ("dtls", None) if dtls.parse_dtls(payload) is not None else None
    if 64 <= b0 <= 79:
        return ("turn_channel", None) if stun.is_channel_data(payload) else None
    if 128 <= b0 <= 191:
        if rtp.is_rtcp_type(payload[1]):
            return ("rtcp", None) if rtp.parse_rtcp(payload) is not None else None
        h = rtp.parse_rtp(payload)
        return ("rtp", h) if h is not None else None
    if b0 == 0xFF and stun.is_ms_multiplexed_turn(payload):
        st = stun.parse_stun(payload)
        if st is not None:
            return "stun", st
    return None
