"""Discord voice: the UDP IP-discovery exchange that opens every voice connection.

Documented in Discord's developer docs ("Voice Connections", *IP Discovery*)
and matched the same way by nDPI's ``protocols/discord.c``: a 74-byte
datagram, type 0x0001 (request) or 0x0002 (response), length 70, the SSRC,
a NUL-padded 64-byte address (the client's public address in the response)
and a port.  The voice stream that follows is RTP with that SSRC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["FIRST_BYTE", "IpDiscovery", "parse_ip_discovery"]

_HDR = struct.Struct("!HHI")
SIZE = 74
FIRST_BYTE = 0  # the type (1 or 2) is big-endian 16 bits


@dataclass(frozen=True, slots=True)
class IpDiscovery:
    is_response: bool
    ssrc: int
    #: The address the server saw (responses only; empty in requests).
    address: str
    port: int


def parse_ip_discovery(payload: bytes) -> IpDiscovery | None:
    if len(payload) != SIZE:
        return None
    kind, length, ssrc = _HDR.unpack_from(payload, 0)
    if kind not in (1, 2) or length != SIZE - 4:
        return None
    raw = payload[8:72].split(b"\x00", 1)[0]
    try:
        address = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if address and not all(c.isalnum() or c in ".:" for c in address):
        return None
    return IpDiscovery(kind == 2, ssrc, address, struct.unpack_from("!H", payload, 72)[0])
