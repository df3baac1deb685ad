"""DTLS records (RFC 6347 / RFC 9147 plaintext header) and the DTLS ClientHello.

A datagram may carry several records; every record header is checked and the
record lengths must add up to the datagram exactly.  Accepted content types
are 20-25 (change_cipher_spec, alert, handshake, application_data, heartbeat,
tls12_cid) and versions 0xFEFF (DTLS 1.0), 0xFEFD (DTLS 1.2) and 0xFEFC
(DTLS 1.3).  DTLS 1.3's encrypted "unified header" records (first byte
0x20-0x3F) are not parsed.

WebRTC's DTLS ClientHello usually has no SNI but does carry ALPN
("webrtc", "c-webrtc", RFC 8833) in some clients (Zoom's web client, for one).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from egressaudit.dissect.tls import ClientHello, parse_hello_body

__all__ = ["DTLS_VERSIONS", "DtlsRecord", "client_hello_sni", "parse_dtls", "parse_dtls_client_hello"]

_REC = struct.Struct("!BHHHIH")  # type, version, epoch, seq (48 bits as 16 + 32), length
DTLS_VERSIONS = {0xFEFF: "DTLS 1.0", 0xFEFD: "DTLS 1.2", 0xFEFC: "DTLS 1.3"}
CONTENT_TYPES = range(20, 26)
HANDSHAKE = 22
CLIENT_HELLO = 1


@dataclass(frozen=True, slots=True)
class DtlsRecord:
    """The first record of a datagram, and how many records it holds."""

    content_type: int
    version: int
    epoch: int
    sequence: int
    length: int
    records: int
    #: Handshake message type of the first record when it is an epoch-0 handshake record, else None.
    handshake_type: int | None = None


def _walk(payload: bytes) -> tuple[DtlsRecord, list[tuple[int, int]]] | None:
    n = len(payload)
    if n < 13:
        return None
    off = 0
    spans: list[tuple[int, int]] = []
    first: DtlsRecord | None = None
    while off < n:
        if off + 13 > n:
            return None
        ct, ver, epoch, seq_hi, seq_lo, length = _REC.unpack_from(payload, off)
        if ct not in CONTENT_TYPES or ver not in DTLS_VERSIONS:
            return None
        end = off + 13 + length
        if end > n:
            return None
        if first is None:
            hs = payload[off + 13] if ct == HANDSHAKE and epoch == 0 and length > 0 else None
            first = DtlsRecord(ct, ver, epoch, (seq_hi << 32) | seq_lo, length, 0, hs)
        spans.append((ct, off))
        off = end
        if len(spans) > 64:
            return None
    if first is None:
        return None
    return DtlsRecord(first.content_type, first.version, first.epoch, first.sequence, first.length, len(spans), first.handshake_type), spans


def parse_dtls(payload: bytes) -> DtlsRecord | None:
    """Parse the DTLS record layer of one datagram; None unless every record is consistent."""
    try:
        walked = _walk(payload)
        return walked[0] if walked else None
    except (struct.error, IndexError):
        return None


def parse_dtls_client_hello(payload: bytes) -> ClientHello | None:
    """The ClientHello of a datagram whose first record is an unfragmented DTLS ClientHello, else None."""
    try:
        walked = _walk(payload)
        if walked is None:
            return None
        rec, spans = walked
        if rec.content_type != HANDSHAKE or rec.epoch != 0:
            return None
        off = spans[0][1] + 13
        end = off + rec.length
        # DTLS handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)
        if end - off < 12 or payload[off] != CLIENT_HELLO:
            return None
        msg_len = int.from_bytes(payload[off + 1 : off + 4], "big")
        frag_off = int.from_bytes(payload[off + 6 : off + 9], "big")
        frag_len = int.from_bytes(payload[off + 9 : off + 12], "big")
        if frag_off != 0 or frag_len != msg_len or off + 12 + msg_len > end:
            return None
        return parse_hello_body(payload[off + 12 : off + 12 + msg_len], dtls=True)
    except (struct.error, IndexError, ValueError):
        return None


def client_hello_sni(payload: bytes) -> str | None:
    """The SNI of an unfragmented DTLS ClientHello in ``payload``, if it carries one."""
    ch = parse_dtls_client_hello(payload)
    return ch.sni if ch else None
