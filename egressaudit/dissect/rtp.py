"""RTP (RFC 3550) and RTCP headers, told apart as RFC 5761 section 4 does.

Only the clear-text headers are read: with SRTP/SRTCP (RFC 3711) the RTP
header and the first 8 bytes of an SRTCP compound stay in the clear, so the
payload type, sequence number, timestamp and SSRC are visible even when the
media is encrypted.

False positives are kept low on purpose, since the flow engine tries these
parsers on arbitrary UDP payloads:

* RTP: version 2; a payload type that is static (0-34) or dynamic (96-127)
  (as nDPI's ``is_valid_rtp_payload_type``); the header (CSRC list and
  extension included) and the padding, if any, fit in the packet; and the
  second byte is not in the RTCP range 192-223 (RFC 5761: payload types 64-95
  collide with RTCP packet types when the marker bit is set).
* RTCP: version 2; packet type 192-213 (RFC 3550 SR/RR/SDES/BYE/APP, RFC 4585
  feedback, RFC 3611 XR and later IANA types); the first packet's length fits;
  and either the packets of the compound add up to the datagram exactly
  (plain RTCP), or what follows the first packet is long enough for an SRTCP
  trailer (E flag + 31-bit index + authentication tag, RFC 3711 section 3.4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["RtcpHeader", "RtpHeader", "is_rtcp_type", "parse_rtcp", "parse_rtp"]

_HDR = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_RTCP_FIRST = struct.Struct("!BBHI")

#: RTCP packet types (IANA "RTP Control Protocol (RTCP) Control Packet types").
RTCP_TYPES = range(192, 214)
#: SRTCP trailer: 4 bytes E flag + index, then an authentication tag (RFC 3711
#: recommends 80 bits; AEAD modes (RFC 7714) put the tag inside the ciphertext).
SRTCP_MIN_TRAILER = 4


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fixed RTP header and the length of everything before the payload."""

    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    csrc_count: int
    has_extension: bool
    padding: bool
    #: Bytes before the payload: 12 + 4 * CSRC count + extension (4 + 4 * words).
    header_length: int
    #: The header extension's profile (0xBEDE for RFC 8285 one-byte, 0x100x for two-byte), or None.
    extension_profile: int | None = None
    version: int = 2


@dataclass(frozen=True, slots=True)
class RtcpHeader:
    """The first RTCP packet of a compound, and how the rest of the datagram looks."""

    packet_type: int
    #: Sender SSRC of the first packet (for SR/RR/feedback; the first chunk's SSRC for SDES/BYE).
    ssrc: int
    #: Reception-report count / subtype (the low 5 bits of the first byte).
    count: int
    #: Length of the first packet in bytes ((length field + 1) * 4).
    length: int
    #: Number of RTCP packets whose headers were walked.
    packets: int
    #: True when the walked packets cover the datagram exactly (plain RTCP); False when
    #: bytes that cannot be walked follow (encrypted SRTCP payload and trailer).
    compound: bool
    version: int = 2


def is_rtcp_type(second_byte: int) -> bool:
    """True when a packet's second byte is an RTCP packet type (RFC 5761 demultiplexing)."""
    return 192 <= second_byte <= 223


def parse_rtp(payload: bytes) -> RtpHeader | None:
    """Parse an RTP header; None unless it is a plausible RTP version-2 packet (not RTCP)."""
    try:
        n = len(payload)
        if n < 12:
            return None
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(payload, 0)
        if b0 >> 6 != 2 or is_rtcp_type(b1):
            return None
        pt = b1 & 0x7F
        if 34 < pt < 96:
            return None
        cc = b0 & 0x0F
        hlen = 12 + 4 * cc
        ext_profile: int | None = None
        has_ext = bool(b0 & 0x10)
        if has_ext:
            if hlen + 4 > n:
                return None
            ext_profile = _U16.unpack_from(payload, hlen)[0]
            words = _U16.unpack_from(payload, hlen + 2)[0]
            hlen += 4 + 4 * words
        if hlen > n:
            return None
        padding = bool(b0 & 0x20)
        if padding:
            pad = payload[-1]
            if pad == 0 or hlen + pad > n:
                return None
        return RtpHeader(pt, bool(b1 & 0x80), seq, ts, ssrc, cc, has_ext, padding, hlen, ext_profile)
    except (struct.error, IndexError):
        return None


def parse_rtcp(payload: bytes) -> RtcpHeader | None:
    """Parse the first RTCP packet of a (possibly SRTCP-protected) compound; None if inconsistent."""
    try:
        n = len(payload)
        if n < 8:
            return None
        b0, pt, words, ssrc = _RTCP_FIRST.unpack_from(payload, 0)
        if b0 >> 6 != 2 or pt not in RTCP_TYPES:
            return None
        first_len = (words + 1) * 4
        if first_len > n:
            return None
        off = first_len
        packets = 1
        while off + 4 <= n:
            c0 = payload[off]
            cpt = payload[off + 1]
            if c0 >> 6 != 2 or cpt not in RTCP_TYPES:
                break
            clen = (_U16.unpack_from(payload, off + 2)[0] + 1) * 4
            if off + clen > n:
                break
            off += clen
            packets += 1
        if off == n:
            return RtcpHeader(pt, ssrc, b0 & 0x1F, first_len, packets, True)
        if n - first_len < SRTCP_MIN_TRAILER:
            return None
        return RtcpHeader(pt, ssrc, b0 & 0x1F, first_len, packets, False)
    except (struct.error, IndexError):
        return None
