"""TLS ClientHello (RFC 8446 section 4.1.2, RFC 5246 section 7.4.1.2): SNI, ALPN, versions.

``data`` given to :func:`parse_client_hello` is the start of the client's TCP
byte stream (segments concatenated in order).  The ClientHello may be split
over several TLS records and several segments (post-quantum key shares make
it 1.5-2 KB); handshake fragments are joined until the message is complete.
:func:`needs_more` tells the caller whether to keep buffering.

:func:`parse_client_hello_message` parses a bare handshake message (type 1 +
3-byte length + body) as carried in QUIC CRYPTO frames, and
:func:`parse_hello_body` the body alone (also used for DTLS, whose body has a
cookie after the session id).

An SSLv2-compatible ClientHello (old clients, e.g. the 2014 Skype capture)
is recognised too; it has no extensions, hence no SNI or ALPN.

:func:`server_certificate_name` reads the other direction: the server's
Certificate message (RFC 5246 section 7.4.2), in clear up to TLS 1.2 (TLS 1.3
encrypts it), and gives its first certificate's subject common name, the name
of an SNI-less flow's server.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "ClientHello",
    "needs_more",
    "parse_client_hello",
    "parse_client_hello_message",
    "parse_hello_body",
    "server_certificate_name",
]

_U16 = struct.Struct("!H")
CONTENT_HANDSHAKE = 0x16
HS_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
#: Largest TLS record body allowed (2^14 plaintext + 2048 expansion, RFC 5246 6.2.3).
MAX_RECORD = 16384 + 2048
#: No real ClientHello comes near this; it bounds what a caller is asked to buffer.
MAX_HELLO = 65536


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello says about its destination and protocol."""

    sni: str | None
    alpn: tuple[str, ...]
    legacy_version: int
    #: The supported_versions extension (GREASE values included, as sent), empty if absent.
    supported_versions: tuple[int, ...] = ()


def _hostname(raw: bytes) -> str | None:
    if not raw or len(raw) > 255:
        return None
    for b in raw:
        if b <= 0x20 or b >= 0x7F:
            return None
    return raw.decode("ascii")


def _sni(ext: bytes) -> str | None:
    # ServerNameList: list length(2), then entries type(1) length(2) name
    if len(ext) < 5:
        return None
    end = min(len(ext), 2 + _U16.unpack_from(ext, 0)[0])
    off = 2
    while off + 3 <= end:
        name_type = ext[off]
        nlen = _U16.unpack_from(ext, off + 1)[0]
        name = ext[off + 3 : off + 3 + nlen]
        if len(name) != nlen:
            return None
        if name_type == 0:
            return _hostname(name)
        off += 3 + nlen
    return None


def _alpn(ext: bytes) -> tuple[str, ...]:
    if len(ext) < 2:
        return ()
    end = min(len(ext), 2 + _U16.unpack_from(ext, 0)[0])
    out: list[str] = []
    off = 2
    while off < end:
        plen = ext[off]
        proto = ext[off + 1 : off + 1 + plen]
        if plen == 0 or len(proto) != plen:
            break
        out.append(proto.decode("latin-1"))
        off += 1 + plen
    return tuple(out)


def _versions(ext: bytes) -> tuple[int, ...]:
    if not ext:
        return ()
    vlen = ext[0]
    body = ext[1 : 1 + vlen]
    return tuple(_U16.unpack_from(body, i)[0] for i in range(0, len(body) - 1, 2))


def parse_hello_body(body: bytes, dtls: bool = False) -> ClientHello | None:
    """Parse a ClientHello body (after the handshake header); ``dtls`` adds the cookie field."""
    try:
        n = len(body)
        if n < 38:
            return None
        legacy_version = _U16.unpack_from(body, 0)[0]
        if body[0] != 3 and body[0] != 0xFE:
            return None
        off = 34
        sid_len = body[off]
        if sid_len > 32:
            return None
        off += 1 + sid_len
        if dtls:
            off += 1 + body[off]
        cs_len = _U16.unpack_from(body, off)[0]
        if cs_len < 2 or cs_len & 1:
            return None
        off += 2 + cs_len
        comp_len = body[off]
        if comp_len < 1:
            return None
        off += 1 + comp_len
        if off > n:
            return None
        sni: str | None = None
        alpn: tuple[str, ...] = ()
        versions: tuple[int, ...] = ()
        if off + 2 <= n:
            ext_end = off + 2 + _U16.unpack_from(body, off)[0]
            if ext_end > n:
                return None
            off += 2
            while off + 4 <= ext_end:
                etype, elen = struct.unpack_from("!HH", body, off)
                off += 4
                if off + elen > ext_end:
                    return None
                if etype == EXT_SERVER_NAME:
                    sni = _sni(body[off : off + elen])
                elif etype == EXT_ALPN:
                    alpn = _alpn(body[off : off + elen])
                elif etype == EXT_SUPPORTED_VERSIONS:
                    versions = _versions(body[off : off + elen])
                off += elen
        return ClientHello(sni, alpn, legacy_version, versions)
    except (struct.error, IndexError):
        return None


def parse_client_hello_message(msg: bytes) -> ClientHello | None:
    """Parse a handshake message ``01 <len:3> <ClientHello body>``; None if it is not a complete one."""
    if len(msg) < 4 or msg[0] != HS_CLIENT_HELLO:
        return None
    mlen = int.from_bytes(msg[1:4], "big")
    if len(msg) < 4 + mlen:
        return None
    return parse_hello_body(msg[4 : 4 + mlen])


def _sslv2_hello(data: bytes) -> ClientHello | None:
    # SSL 2.0 record with 2-byte header (RFC 6101 appendix E.2 / draft-hickman): used by old
    # clients to offer SSLv3/TLS 1.x in an SSLv2-compatible ClientHello.
    if len(data) < 11:
        return None
    rlen = ((data[0] & 0x7F) << 8) | data[1]
    if data[2] != HS_CLIENT_HELLO or data[3] not in (0, 3):
        return None
    version, cs_len, sid_len, ch_len = struct.unpack_from("!HHHH", data, 3)
    if cs_len == 0 or cs_len % 3 or sid_len not in (0, 16) or not 16 <= ch_len <= 32:
        return None
    if rlen != 9 + cs_len + sid_len + ch_len:
        return None
    return ClientHello(None, (), version)


def _handshake_bytes(data: bytes) -> bytes | None:
    """Join the handshake fragments of the leading TLS records (the last one may be partial).

    None when ``data`` does not start as a stream of TLS handshake records.
    """
    n = len(data)
    off = 0
    parts: list[bytes] = []
    have = 0
    while off < n:
        if data[off] != CONTENT_HANDSHAKE:
            if not parts:
                return None
            break
        if off + 1 < n and data[off + 1] != 3:
            return None
        if off + 5 > n:
            break
        rlen = _U16.unpack_from(data, off + 3)[0]
        if rlen == 0 or rlen > MAX_RECORD or data[off + 2] > 4:
            return None
        frag = data[off + 5 : off + 5 + rlen]
        parts.append(frag)
        have += len(frag)
        if have > MAX_HELLO + 4:
            break
        off += 5 + rlen
    return b"".join(parts)


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse the ClientHello at the start of a client->server TCP stream; None if absent or incomplete."""
    try:
        if not data:
            return None
        if data[0] & 0x80:
            return _sslv2_hello(data)
        hs = _handshake_bytes(data)
        if hs is None:
            return None
        return parse_client_hello_message(hs)
    except (struct.error, IndexError, ValueError):
        return None


def needs_more(data: bytes) -> bool:
    """True when ``data`` starts like a TLS handshake record but the ClientHello is not complete yet."""
    try:
        n = len(data)
        if n == 0 or data[0] != CONTENT_HANDSHAKE:
            return False
        if n >= 2 and data[1] != 3:
            return False
        if n >= 3 and data[2] > 4:
            return False
        joined = _handshake_bytes(data)
        if joined is None:
            return False
        if not joined:
            return True
        if joined[0] != HS_CLIENT_HELLO:
            return False
        if len(joined) < 4:
            return True
        mlen = int.from_bytes(joined[1:4], "big")
        if mlen < 38 or mlen > MAX_HELLO:
            return False
        return len(joined) < 4 + mlen
    except (struct.error, IndexError, ValueError):
        return False


# -- the server's certificate (TLS 1.2 and older) -------------------------------------------------------------------

HS_CERTIFICATE = 11
_OID_COMMON_NAME = b"\x06\x03\x55\x04\x03"  # 2.5.4.3
_STRING_TAGS = frozenset((0x0C, 0x13, 0x14, 0x16, 0x1E))  # UTF8String, PrintableString, T61String, IA5String, BMPString


def _der(buf: bytes, off: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``off``; IndexError/ValueError when cut."""
    tag = buf[off]
    first = buf[off + 1]
    off += 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if not 1 <= size <= 3:
            raise ValueError("DER length")
        length = int.from_bytes(buf[off : off + size], "big")
        off += size
    return tag, off, off + length


def _common_name(cert: bytes) -> str | None:
    """The subject's common name of a DER certificate of which only the start may be here (the subject comes before
    the key and the extensions)."""
    tag, body, _ = _der(cert, 0)  # Certificate
    if tag != 0x30:
        return None
    tag, off, _ = _der(cert, body)  # TBSCertificate
    if tag != 0x30:
        return None
    fields: list[tuple[int, int, int]] = []
    while len(fields) < 6:
        tag, start, end = _der(cert, off)
        if tag == 0xA0 and not fields:  # [0] version: not a field of the count below
            off = end
            continue
        fields.append((tag, start, end))
        off = end
    tag, start, end = fields[4]  # serialNumber, signature, issuer, validity, subject
    if tag != 0x30 or end > len(cert):
        return None
    at = cert.find(_OID_COMMON_NAME, start, end)
    if at < 0:
        return None
    tag, vstart, vend = _der(cert, at + len(_OID_COMMON_NAME))
    if tag not in _STRING_TAGS or vend > end:
        return None
    raw = cert[vstart:vend]
    name = raw.decode("utf-16-be" if tag == 0x1E else "latin-1", errors="replace").strip().lower()
    if name.startswith("*."):
        name = name[2:]
    return _hostname(name.encode("ascii", errors="replace")) if "." in name and " " not in name else None


def server_certificate_name(data: bytes) -> str | None:
    """The subject common name of the first certificate in the server's handshake records that start ``data`` (one
    segment is enough when it holds the certificate's start: ServerHello, then Certificate), or None."""
    try:
        hs = _handshake_bytes(data)
        off = 0
        while hs is not None and off + 4 <= len(hs):
            mtype, mlen = hs[off], int.from_bytes(hs[off + 1 : off + 4], "big")
            if mtype == HS_CERTIFICATE:
                first = off + 4 + 3  # the certificate_list's length, then the first certificate's
                clen = int.from_bytes(hs[first : first + 3], "big")
                return _common_name(hs[first + 3 : first + 3 + clen]) if clen else None
            off += 4 + mlen
    except (IndexError, ValueError):
        pass
    return None
