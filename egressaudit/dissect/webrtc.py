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

__all__ = ["Kind", "demux"]

Kind = Literal["stun", "turn_channel", "dtls", "rtp", "rtcp", "zrtp"]
_U16 = struct.Struct("!H")
ZRTP_MAGIC = b"ZRTP"


def demux(payload: bytes) -> Kind | None:
    """Name the protocol of one UDP payload on a WebRTC port, or None."""
    if len(payload) < 4:
        return None
    b0 = payload[0]
    if b0 <= 3:
        if len(payload) >= 20 and 20 + _U16.unpack_from(payload, 2)[0] == len(payload) and stun.parse_stun(payload) is not None:
            return "stun"
        return None
    if 16 <= b0 <= 19:
        return "zrtp" if payload[4:8] == ZRTP_MAGIC else None
    if 20 <= b0 <= 63:
        return "dtls" if dtls.parse_dtls(payload) is not None else None
    if 64 <= b0 <= 79:
        return "turn_channel" if stun.is_channel_data(payload) else None
    if 128 <= b0 <= 191:
        if rtp.is_rtcp_type(payload[1]):
            return "rtcp" if rtp.parse_rtcp(payload) is not None else None
        return "rtp" if rtp.parse_rtp(payload) is not None else None
    if b0 == 0xFF and stun.is_ms_multiplexed_turn(payload) and stun.parse_stun(payload) is not None:
        return "stun"
    return None
