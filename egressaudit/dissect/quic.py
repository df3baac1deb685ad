"""QUIC Initial packets: decrypt the client's Initials and read the TLS ClientHello (SNI, ALPN).

Supported versions: QUIC v1 (RFC 9000/9001), QUIC v2 (RFC 9369) and the
IETF drafts 23-32 that shipped in browsers.  Initial keys are public: they
derive from the Destination Connection ID of the client's first Initial
(RFC 9001 section 5.2).  HKDF is computed with :mod:`hmac`/:mod:`hashlib`;
AES (header protection: AES-ECB on a 16-byte sample; payload: AES-128-GCM)
comes from ``cryptography``.

The ClientHello is carried in CRYPTO frames, possibly over several Initial
packets, coalesced in one datagram or spread over several datagrams, out of
order, split in small pieces and mixed with PADDING/PING/ACK frames (Chrome
does all of this: "chaos protection", and post-quantum key shares make the
ClientHello 1.5-2 KB).  :class:`QuicClientHelloAssembler` collects CRYPTO
data by offset until the handshake message is complete, then parses it with
:func:`egressaudit.dissect.tls.parse_client_hello_message`.

Google QUIC (Q0xx/T0xx versions) uses other crypto and is not decrypted.

:class:`QuicWire` recognises a flow as QUIC from its wire image alone, whatever
it carries (RFC 8999's invariants, RFC 9000 section 17): a long header naming a
version that is QUIC's (IETF v1/v2 and drafts, Google QUIC ``Q0xx``/``T0xx``,
Facebook's mvfst), Google QUIC's older public header naming its version (flag
0x01, the version after an 8-byte connection ID), or, for a flow caught after
its handshake, short headers: three datagrams in a row from one side that
start with the same eight bytes after the first byte (the connection ID the
peer chose; nDPI looks for the same, ``may_be_sh`` in its quic.c).  The fixed
bit (0x40) puts QUIC's first bytes apart from STUN, DTLS and RTP (64-127 and
192-255 against 0-63 and 128-191: the "QUIC bit" is there for that), so RTP
multiplexed with QUIC on one port, as Snapchat's calls do, is still told apart
(:func:`names_version`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from egressaudit.dissect.tls import ClientHello, parse_client_hello_message

__all__ = [
    "VERSION_1",
    "VERSION_2",
    "QuicClientHelloAssembler",
    "QuicWire",
    "gquic_public_version",
    "initial_keys",
    "is_known_version",
    "is_quic_long_header",
    "long_header_version",
    "names_version",
    "read_varint",
    "version_name",
]

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF
_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # drafts 29-32
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # drafts 23-28

#: version -> (initial salt, HKDF label prefix, long-header packet type of Initial)
_VERSIONS: dict[int, tuple[bytes, bytes, int]] = {
    VERSION_1: (_SALT_V1, b"quic ", 0),
    VERSION_2: (_SALT_V2, b"quicv2 ", 1),
    **{0xFF000000 + d: (_SALT_D29, b"quic ", 0) for d in range(29, 33)},
    **{0xFF000000 + d: (_SALT_D23, b"quic ", 0) for d in range(23, 29)},
}
#: long-header packet types that carry a Length field (all but Retry), per version family
_RETRY_TYPE = {0: 3, 1: 0}  # keyed by the Initial type: v1 family Retry=3, v2 Retry=0

MAX_DATAGRAMS = 8
MAX_CRYPTO = 65536
MAX_CID = 20

_U32 = struct.Struct("!I")
_NOT_PADDING = re.compile(rb"[^\x00]")

#: (header-protection key, AEAD key, IV) for one direction
Keys = tuple[bytes, AESGCM, bytes]


def read_varint(buf: bytes, off: int) -> tuple[int, int]:
    """Read a QUIC variable-length integer (RFC 9000 16) at ``off``; returns (value, new offset).

    Raises IndexError when ``buf`` is too short (callers catch it).
    """
    first = buf[off]
    size = 1 << (first >> 6)
    if off + size > len(buf):
        raise IndexError("varint past the end")
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | buf[off + i]
    return value, off + size


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def initial_keys(dcid: bytes, version: int, is_client: bool = True) -> tuple[bytes, bytes, bytes] | None:
    """Initial (key, iv, hp) of one side for a Destination Connection ID, or None for unknown versions."""
    spec = _VERSIONS.get(version)
    if spec is None:
        return None
    salt, prefix, _ = spec
    initial_secret = hmac.new(salt, dcid, hashlib.sha256).digest()
    secret = _expand_label(initial_secret, b"client in" if is_client else b"server in", 32)
    return _expand_label(secret, prefix + b"key", 16), _expand_label(secret, prefix + b"iv", 12), _expand_label(secret, prefix + b"hp", 16)


def is_quic_long_header(datagram: bytes) -> bool:
    """True when the datagram starts with a QUIC long-header packet (RFC 8999 invariants) of a non-zero version."""
    n = len(datagram)
    if n < 7 or not datagram[0] & 0x80:
        return False
    if _U32.unpack_from(datagram, 1)[0] == 0:  # version negotiation (server to client)
        return False
    dlen = datagram[5]
    if dlen > MAX_CID or 6 + dlen >= n:
        return False
    slen = datagram[6 + dlen]
    return slen <= MAX_CID and 7 + dlen + slen <= n


def _decrypt(packet: bytes, pn_offset: int, end: int, keys: Keys) -> bytes | None:
    hp, aead, iv = keys
    if pn_offset + 20 > end:
        return None
    sample = packet[pn_offset + 4 : pn_offset + 20]
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    first = packet[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(packet[pn_offset + i] ^ mask[1 + i] for i in range(pn_len))
    pn = int.from_bytes(pn_bytes, "big")
    header = bytes([first]) + packet[1:pn_offset] + pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    try:
        return aead.decrypt(nonce, packet[pn_offset + pn_len : end], header)
    except (InvalidTag, ValueError):
        return None


def _crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """CRYPTO frames of a decrypted Initial payload; stops at the first frame not allowed there."""
    out: list[tuple[int, bytes]] = []
    n = len(payload)
    off = 0
    try:
        while off < n:
            ftype = payload[off]
            if ftype == 0x00:  # PADDING: skip the run (searched in place: a copy per run was quadratic on 00 01 00 01 ...)
                m = _NOT_PADDING.search(payload, off)
                off = m.start() if m is not None else n
                continue
            off += 1
            if ftype == 0x01:  # PING
                continue
            if ftype in (0x02, 0x03):  # ACK
                _, off = read_varint(payload, off)  # largest acknowledged
                _, off = read_varint(payload, off)  # delay
                count, off = read_varint(payload, off)
                _, off = read_varint(payload, off)  # first range
                if count > 256:
                    break
                for _ in range(2 * count):
                    _, off = read_varint(payload, off)
                if ftype == 0x03:
                    for _ in range(3):
                        _, off = read_varint(payload, off)
                continue
            if ftype == 0x06:  # CRYPTO
                coff, off = read_varint(payload, off)
                clen, off = read_varint(payload, off)
                if off + clen > n:
                    break
                out.append((coff, payload[off : off + clen]))
                off += clen
                continue
            break  # CONNECTION_CLOSE or anything not allowed in Initial packets
    except IndexError:
        pass
    return out


class QuicClientHelloAssembler:
    """Reassemble the client's ClientHello from the Initial packets of one QUIC connection.

    Feed it the client's UDP datagrams in order.  Non-Initial packets are
    skipped; coalesced packets are walked.  After :data:`MAX_DATAGRAMS`
    datagrams without a complete ClientHello it gives up (``done`` becomes True).
    """

    __slots__ = ("_chunks", "_dcid", "_keys", "datagrams", "done", "result", "version")

    def __init__(self) -> None:
        """Start with no data."""
        self._chunks: dict[int, bytes] = {}
        self._dcid: bytes | None = None
        self._keys: dict[tuple[int, bytes], Keys | None] = {}
        self.datagrams = 0
        self.done = False
        self.result: ClientHello | None = None
        self.version: int | None = None

    def _keys_for(self, version: int, dcid: bytes) -> Keys | None:
        k = (version, dcid)
        if k not in self._keys:
            if len(self._keys) > 8:
                return None
            ks = initial_keys(dcid, version, is_client=True)
            self._keys[k] = (ks[2], AESGCM(ks[0]), ks[1]) if ks else None
        return self._keys[k]

    def feed(self, datagram: bytes) -> ClientHello | None:
        """Take one client datagram; return the ClientHello when it becomes complete, else None."""
        if self.done:
            return None
        self.datagrams += 1
        try:
            self._datagram(datagram)
            result = self._assemble()
        except Exception:  # noqa: BLE001 - never let a malformed datagram escape
            result = None
        if result is not None:
            self.done = True
            self.result = result
            return result
        if self.datagrams >= MAX_DATAGRAMS:
            self.done = True
        return None

    def _datagram(self, data: bytes) -> None:
        off = 0
        n = len(data)
        while off + 7 <= n and data[off] & 0x80:
            version = _U32.unpack_from(data, off + 1)[0]
            spec = _VERSIONS.get(version)
            if spec is None:
                return
            initial_type = spec[2]
            ptype = (data[off] >> 4) & 0x03
            p = off + 5
            dlen = data[p]
            if dlen > MAX_CID:
                return
            dcid = data[p + 1 : p + 1 + dlen]
            p += 1 + dlen
            slen = data[p]
            if slen > MAX_CID:
                return
            p += 1 + slen
            if ptype == _RETRY_TYPE[initial_type]:
                return
            if ptype == initial_type:
                tlen, p = read_varint(data, p)
                p += tlen
            length, p = read_varint(data, p)
            end = p + length
            if end > n:
                return
            if ptype == initial_type:
                self._initial(data[off:end], p - off, version, dcid)
            off = end

    def _initial(self, packet: bytes, pn_offset: int, version: int, dcid: bytes) -> None:
        if self._dcid is None:
            self._dcid = dcid
            self.version = version
        plain = None
        for cid in (self._dcid, dcid) if dcid != self._dcid else (self._dcid,):
            keys = self._keys_for(version, cid)
            if keys is None:
                continue
            plain = _decrypt(packet, pn_offset, len(packet), keys)
            if plain is not None:
                break
        if plain is None:
            return
        for coff, chunk in _crypto_frames(plain):
            if coff + len(chunk) > MAX_CRYPTO or not chunk:
                continue
            prev = self._chunks.get(coff)
            if prev is None or len(prev) < len(chunk):
                self._chunks[coff] = chunk

    def _assemble(self) -> ClientHello | None:
        if 0 not in self._chunks:
            return None
        buf = bytearray()
        # Join contiguous (possibly overlapping) chunks from offset 0.
        for coff in sorted(self._chunks):
            chunk = self._chunks[coff]
            if coff > len(buf):
                break
            if coff + len(chunk) > len(buf):
                buf += chunk[len(buf) - coff :]
        if buf[0] != 1:
            self.done = True  # not a ClientHello: nothing to wait for
            return None
        if len(buf) < 4:
            return None
        need = 4 + int.from_bytes(buf[1:4], "big")
        if need > MAX_CRYPTO:
            self.done = True
            return None
        if len(buf) < need:
            return None
        ch = parse_client_hello_message(bytes(buf[:need]))
        if ch is None:
            self.done = True  # complete but malformed
        return ch


# -- the wire image: is this flow QUIC at all? ---------------------------------------------------------------------

_GQUIC = re.compile(rb"[QT]0[0-9][0-9]")  # Google QUIC's versions: "Q046", "T051" in ASCII
_MVFST = 0xFACEB000  # Facebook's mvfst: 0xfaceb001, 0xfaceb002, 0xfaceb00e ...
SHORT_RUN = 3  # short-header datagrams in a row from one side, with the same connection ID, that make a flow QUIC
_CID_PREFIX = 8  # bytes of connection ID compared (nDPI's QUIC_SERVER_CID_HEURISTIC_LENGTH; Chrome and Google use 8)


def is_known_version(version: int) -> bool:
    """A version number that is QUIC's: IETF v1, v2 and drafts (0xff0000xx), Google QUIC (Q0xx/T0xx), mvfst.

    Greased versions (0x?a?a?a?a) are left out on purpose: one 4-byte value in 65,536 matches them, too often for
    random encrypted payloads of other protocols.
    """
    if version in (VERSION_1, VERSION_2) or version >> 8 == 0xFF0000 or version & 0xFFFFFF00 == _MVFST:
        return True
    return _GQUIC.fullmatch(version.to_bytes(4, "big")) is not None


def version_name(version: int | None) -> str:
    if version is None:
        return "unknown version"
    if version == VERSION_1:
        return "v1"
    if version == VERSION_2:
        return "v2"
    if version >> 8 == 0xFF0000:
        return f"draft-{version & 0xFF}"
    if version & 0xFFFFFF00 == _MVFST:
        return f"mvfst {version:#x}"
    raw = version.to_bytes(4, "big")
    return raw.decode("ascii") if _GQUIC.fullmatch(raw) else f"{version:#010x}"


def long_header_version(datagram: bytes) -> int | None:
    """The version of a long-header packet (first bit set) when it is one of QUIC's (:func:`is_known_version`), else None.

    IETF versions must also hold RFC 8999's connection-ID lengths (at most 20 bytes each, within the datagram);
    Google QUIC's Q046 packs both lengths in one byte, so only its version is checked.
    """
    if len(datagram) < 7 or not datagram[0] & 0x80:
        return None
    version = int(_U32.unpack_from(datagram, 1)[0])
    if not is_known_version(version):
        return None
    if _GQUIC.fullmatch(datagram[1:5]) is not None:
        return version
    return version if is_quic_long_header(datagram) else None


def gquic_public_version(datagram: bytes) -> int | None:
    """The version named by Google QUIC's public header (Q043 and older): flags with 0x01 (version) and 0x08 (an
    8-byte connection ID) set and the two top bits clear, the version right after the connection ID; else None."""
    if len(datagram) < 14 or datagram[0] & 0xC9 != 0x09:
        return None
    return int(_U32.unpack_from(datagram, 9)[0]) if _GQUIC.fullmatch(datagram[9:13]) is not None else None


def names_version(datagram: bytes, version: int | None) -> bool:
    """True when the datagram is a long header of ``version`` (a packet of that QUIC connection whose fixed bit may
    be greased, RFC 9287), False for anything else: with a first byte of 128-191, RTP or RTCP multiplexed with QUIC."""
    return version is not None and len(datagram) >= 5 and _U32.unpack_from(datagram, 1)[0] == version


class QuicWire:
    """What one UDP flow's datagrams say about QUIC (see the module docstring), and its client's ClientHello.

    :meth:`see` takes datagrams until the flow is recognised; ``form`` then says how (for the flow's evidence),
    ``version`` which version (None when only short headers were seen) and ``hello`` assembles the client's
    ClientHello when its Initial packets can be decrypted (IETF versions).
    """

    __slots__ = ("_runs", "form", "hello", "version")

    def __init__(self) -> None:
        self.form: str | None = None
        self.version: int | None = None
        self.hello: QuicClientHelloAssembler | None = None
        self._runs: list[tuple[bytes, int]] = [(b"", 0), (b"", 0)]  # per side (server, client): connection ID, datagrams in a row

    def see(self, datagram: bytes, from_client: bool, short_headers: bool, any_long_header: bool = False) -> bool:
        """Look at one datagram of a flow not recognised yet; True once the flow is QUIC.

        ``short_headers``: runs of short headers count too (the flow is on UDP 443, HTTP/3's port: elsewhere a short
        header is too little to go on).  ``any_long_header``: a long header of any version holding RFC 8999's
        invariants counts (on 443, as before).
        """
        version = long_header_version(datagram)
        if version is None and any_long_header and is_quic_long_header(datagram):
            version = int(_U32.unpack_from(datagram, 1)[0])
        if version is not None:
            self._recognised(f"long header {version_name(version)}", version)
            if from_client and version in _VERSIONS:
                self.hello = QuicClientHelloAssembler()
            return True
        version = gquic_public_version(datagram)
        if version is not None:
            self._recognised(f"public header {version_name(version)}", version)
            return True
        if not short_headers:
            return False
        side = int(from_client)
        b0 = datagram[0]
        # an IETF/Q046 short header (fixed bit set, form bit clear), or Google QUIC's public header with an 8-byte ID
        if len(datagram) < 1 + _CID_PREFIX or (b0 & 0xC0 != 0x40 and b0 & 0xC8 != 0x08):
            self._runs[side] = (b"", 0)
            return False
        cid = datagram[1 : 1 + _CID_PREFIX]
        last, run = self._runs[side]
        run = run + 1 if run and cid == last else 1
        if run < SHORT_RUN:
            self._runs[side] = (cid, run)
            return False
        self._recognised(f"short headers (connection ID {cid.hex()} in {SHORT_RUN} datagrams)", None)
        return True

    def _recognised(self, form: str, version: int | None) -> None:
        self.form = form
        self.version = version
        self._runs = []
