"""STUN (RFC 5389/8489, classic RFC 3489) and TURN (RFC 8656) messages, with vendor hints.

Accepted shapes:

* STUN with the magic cookie 0x2112A442: first two bits zero, length a
  multiple of 4 and equal to the datagram's remaining bytes, attributes that
  walk to the end exactly.
* Classic STUN (RFC 3489, no cookie: the 16-byte transaction id starts at
  byte 4), used by old Skype and by Zoom's desktop client on 3478/3479: only
  the message types RFC 3489 (and Wireshark/nDPI) know, at least one
  attribute, and an exact attribute walk.
* Microsoft's multiplexed TURN header (type 0xFF10, MS-TURN 2.2.3): 12 bytes
  before a STUN message; the inner message is parsed and marked "microsoft".
* Over TCP (:func:`parse_stun_tcp`): plain messages (RFC 8489 section 6.2.2,
  also TURN over TCP) or RFC 4571 framing (2-byte length prefix).

Vendor hints, first match wins (attribute numbers from nDPI's
``src/lib/protocols/stun.c`` ``is_stun()`` and Wireshark's
``epan/dissectors/packet-stun.c``):

* ``"microsoft"``: MS-TURN / MS-ICE2 / MS-TURNBWM attributes: MS-VERSION
  0x8008, MS-ALTERNATE-HOST-NAME 0x8032, MS-APP-ID 0x8037, MS-SECURE-TAG
  0x8039, MS-SEQUENCE-NUMBER 0x8050, MS-CANDIDATE-IDENTIFIER 0x8054,
  MS-SERVICE-QUALITY 0x8055, BANDWIDTH-ACM and the other bandwidth-management
  attributes 0x8056-0x8062 and 0x8068, MS-IMPLEMENTATION-VERSION 0x8070,
  MS-ALT-MAPPED-ADDRESS 0x8090, MS-MULTIPLEXED-TURN-SESSION-ID 0x8095, plus
  the undocumented 0x24DF, 0x3802, 0x8006, 0x8036 that nDPI sees on
  Skype/Teams calls; or the 0xFF10 multiplexed-TURN header.
* ``"zoom"``: attributes 0x0101 or 0x0103 (nDPI's Zoom rule; Zoom's classic
  STUN to its 3478/3479 servers carries them).
* ``"google"``: GOOG-* attributes of Google's WebRTC stack (libwebrtc):
  0xC057-0xC060, 0xFF03-0xFF05.  libwebrtc is embedded in Chrome and in many
  other apps, so this is weaker evidence than the other two.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "MAGIC_COOKIE",
    "StunMessage",
    "is_channel_data",
    "is_ms_multiplexed_turn",
    "method_name",
    "parse_stun",
    "parse_stun_tcp",
]

_HDR = struct.Struct("!HHI")
_U16 = struct.Struct("!H")
_ATTR = struct.Struct("!HH")

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = b"\x21\x12\xa4\x42"
MS_MULTIPLEX_TURN = 0xFF10
MAX_ATTRIBUTES = 64

ATTR_USERNAME = 0x0006
ATTR_REALM = 0x0014
ATTR_SOFTWARE = 0x8022

MICROSOFT_ATTRIBUTES = frozenset(
    {0x8008, 0x8032, 0x8037, 0x8039, 0x8050, 0x8054, 0x8055, *range(0x8056, 0x8063), 0x8068, 0x8070, 0x8090, 0x8095}
    | {0x24DF, 0x3802, 0x8006, 0x8036}
)
ZOOM_ATTRIBUTES = frozenset({0x0101, 0x0103})
GOOGLE_ATTRIBUTES = frozenset({*range(0xC057, 0xC061), 0xFF03, 0xFF04, 0xFF05})

#: RFC 3489 message types, as Wireshark and nDPI accept them for cookie-less STUN.
CLASSIC_TYPES = frozenset(
    {0x0001, 0x0101, 0x0111, 0x0002, 0x0102, 0x0112, 0x0003, 0x0103, 0x0113, 0x0004, 0x0104, 0x0114, 0x0115, 0x0006, 0x0106, 0x0116}
)

CLASSES = ("request", "indication", "success", "error")
METHODS = {
    0x001: "binding",
    0x002: "shared_secret",
    0x003: "allocate",
    0x004: "refresh",
    0x005: "data_old",
    0x006: "send",
    0x007: "data",
    0x008: "create_permission",
    0x009: "channel_bind",
    0x00A: "connect",
    0x00B: "connection_bind",
    0x00C: "connection_attempt",
    0x080: "goog_ping",
}


@dataclass(frozen=True, slots=True)
class StunMessage:
    """One STUN/TURN message."""

    method: int
    cls: str
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    software: str | None
    vendor_hint: str | None
    #: True for RFC 3489 messages without the magic cookie (then the transaction id is 16 bytes).
    classic: bool = False
    #: The REALM attribute (a domain for TURN servers, e.g. Google's), if any.
    realm: str | None = None


def method_name(method: int) -> str:
    """A readable name for a STUN method number (``"method_0x..."`` when unknown)."""
    return METHODS.get(method, f"method_{method:#x}")


def _text(raw: bytes) -> str | None:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    s = s.rstrip("\x00").strip()
    if not s or not s.isprintable():
        return None
    return s


def _vendor(types: list[int]) -> str | None:
    ts = set(types)
    if ts & MICROSOFT_ATTRIBUTES:
        return "microsoft"
    if ts & ZOOM_ATTRIBUTES:
        return "zoom"
    if ts & GOOGLE_ATTRIBUTES:
        return "google"
    return None


def _parse(payload: bytes, exact: bool) -> StunMessage | None:
    n = len(payload)
    if n < 20:
        return None
    mtype, mlen, cookie = _HDR.unpack_from(payload, 0)
    if mtype >> 14:
        return None
    end = 20 + mlen
    if end > n or (exact and end != n):
        return None
    classic = cookie != MAGIC_COOKIE
    if classic:
        if mtype not in CLASSIC_TYPES or mlen == 0:
            return None
    elif mlen & 3:
        return None
    attrs: list[tuple[int, bytes]] = []
    types: list[int] = []
    off = 20
    while off + 4 <= end:
        atype, alen = _ATTR.unpack_from(payload, off)
        vend = off + 4 + alen
        if vend > end:
            return None
        attrs.append((atype, payload[off + 4 : vend]))
        types.append(atype)
        if len(attrs) > MAX_ATTRIBUTES:
            return None
        off = vend + (-alen & 3)
        if off > end:
            if vend == end:  # a last attribute sent without its padding
                off = end
            else:
                return None
    if off != end:
        return None
    software = realm = None
    for atype, value in attrs:
        if atype == ATTR_SOFTWARE and software is None:
            software = _text(value)
        elif atype == ATTR_REALM and realm is None:
            realm = _text(value)
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = CLASSES[((mtype & 0x0100) >> 7) | ((mtype & 0x0010) >> 4)]
    tid = payload[4:20] if classic else payload[8:20]
    return StunMessage(method, cls, tid, tuple(attrs), software, _vendor(types), classic, realm)


def is_ms_multiplexed_turn(payload: bytes) -> bool:
    """True for Microsoft's multiplexed-TURN framing (0xFF10, length = datagram - 4, 12-byte header)."""
    return len(payload) >= 12 and payload[0] == 0xFF and payload[1] == 0x10 and _U16.unpack_from(payload, 2)[0] + 4 == len(payload)


def parse_stun(payload: bytes) -> StunMessage | None:
    """Parse one STUN/TURN message filling a UDP datagram; None if it is not one."""
    try:
        if is_ms_multiplexed_turn(payload):
            inner = _parse(payload[12:], exact=True)
            if inner is None or inner.classic:
                return None
            return StunMessage(inner.method, inner.cls, inner.transaction_id, inner.attributes, inner.software, "microsoft", False, inner.realm)
        return _parse(payload, exact=True)
    except (struct.error, IndexError):
        return None


def parse_stun_tcp(data: bytes) -> StunMessage | None:
    """Parse the first STUN message of a TCP stream: plain (RFC 8489 6.2.2) or RFC 4571-framed."""
    try:
        n = len(data)
        if n >= 20 and data[4:8] == _COOKIE_BYTES:
            mlen = _U16.unpack_from(data, 2)[0]
            if 20 + mlen <= n:
                return _parse(data[: 20 + mlen], exact=True)
            return None
        if n >= 22 and data[6:10] == _COOKIE_BYTES:
            flen = _U16.unpack_from(data, 0)[0]
            if 2 + flen <= n:
                return _parse(data[2 : 2 + flen], exact=True)
        return None
    except (struct.error, IndexError):
        return None


def is_channel_data(payload: bytes, tcp: bool = False) -> bool:
    """True for a TURN ChannelData message (RFC 8656 12.4): channel 0x4000-0x7FFF, length that fits.

    Over UDP the datagram holds one message, padded to 4 bytes at most; over TCP
    (``tcp=True``) more data may follow.
    """
    n = len(payload)
    if n < 5 or not 0x40 <= payload[0] <= 0x7F:
        return False
    dlen = _U16.unpack_from(payload, 2)[0]
    if dlen == 0 or 4 + dlen > n:
        return False
    return tcp or n - 4 - dlen < 4
