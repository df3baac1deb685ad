"""Request bodies: remove the content encoding, then say what the body is and parse it.

:func:`decode_content` undoes ``Content-Encoding`` (gzip, deflate in both its
zlib and raw forms, brotli, zstd, and chains of them) with a ceiling on the
decoded size, so a decompression bomb costs a bounded amount of memory.
:func:`parse_body` recognises the body (JSON, NDJSON, forms, multipart,
schemaless protobuf, Microsoft Bond, Sentry envelopes, text, binary files by
their magic bytes) from its content type first and its bytes second, and
returns a JSON-like tree for :mod:`egressaudit.http.inventory`.

Neither function raises on bad input: problems are reported as
``"error:<reason>"`` strings, which the recorder counts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import brotli  # type: ignore[import-untyped]
import zstandard

DECODE_LIMIT = 64 << 20
"""Default ceiling on a decoded body (bytes)."""
PARSE_LIMIT = 16 << 20
"""Bodies larger than this are not parsed into a tree (format ``error:too_large_to_parse``), only sniffed.

This bounds a tree's memory: at worst about 26 times the body in Python objects (16 MiB of ``[{},{},...]`` held
411 MB), most bodies 3-8 times.  Multipart bodies are parsed at any size (linear; only part headers, the first
:data:`MAX_PARTS` parts' magic and their text fields of up to 1 MiB are kept)."""
MAX_DEPTH = 32
"""Nesting depth beyond which protobuf fields are left as bytes."""
MAX_FORM_KEYS = 5000
"""Keys of a URL-encoded form kept in its tree; the others are counted (``ParsedBody.cut``) and not looked at."""
MAX_PARTS = 1000
"""Parts of a multipart body (items of a Sentry envelope) kept as :class:`Part`; all are counted and scanned."""


# -- content encodings -----------------------------------------------------------


class _TooLarge(Exception):
    pass


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check(out: bytearray, limit: int) -> None:
    if len(out) > limit:
        raise _TooLarge


def _zlib(data: bytes, wbits: int, limit: int, name: str, members: bool = False, partial: bool = False) -> bytes:
    """zlib, gzip (several concatenated members when ``members``) or raw deflate, output bounded."""
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(wbits)
        buf = rest
        try:
            while True:
                chunk = d.decompress(buf, limit + 1 - len(out))
                out += chunk
                _check(out, limit)
                buf = d.unconsumed_tail
                if not buf and (d.eof or not chunk):
                    break
        except zlib.error as e:
            raise _Bad(f"bad_{name}") from e
        if not d.eof:
            if partial:
                return bytes(out)
            raise _Bad(f"truncated_{name}")
        rest = d.unused_data
        if not rest:
            return bytes(out)
        if not (members and rest.startswith(b"\x1f\x8b")):
            if rest.strip(b"\x00"):
                raise _Bad(f"trailing_data_{name}")
            return bytes(out)


def _gzip(data: bytes, limit: int, partial: bool = False) -> bytes:
    return _zlib(data, 16 + zlib.MAX_WBITS, limit, "gzip", members=True, partial=partial)


def _deflate(data: bytes, limit: int, partial: bool = False) -> bytes:
    # RFC 9110 says zlib; some servers and clients send raw deflate, a few send gzip.
    try:
        return _zlib(data, 32 + zlib.MAX_WBITS, limit, "deflate", partial=partial)
    except _Bad:
        return _zlib(data, -zlib.MAX_WBITS, limit, "deflate", partial=partial)


def _brotli(data: bytes, limit: int, partial: bool = False) -> bytes:
    # brotli 1.1 has no output ceiling per call: feed it a few bytes at a time
    # (one input byte can expand to one 16 MB meta-block, no more).
    d = brotli.Decompressor()
    out = bytearray()
    step = 16
    try:
        for i in range(0, len(data), step):
            out += d.process(data[i : i + step])
            _check(out, limit)
        finished = d.is_finished()
    except brotli.error as e:
        raise _Bad("bad_br") from e
    if not finished and not partial:
        raise _Bad("truncated_br")
    return bytes(out)


def _zstd(data: bytes, limit: int, partial: bool = False) -> bytes:
    out = bytearray()
    rest = data
    step = 512  # a zstd block (<= 128 KiB out) takes a few input bytes at best
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            for i in range(0, len(rest), step):
                out += d.decompress(rest[i : i + step])
                _check(out, limit)
                if d.eof:
                    break
        except zstandard.ZstdError as e:
            raise _Bad("bad_zstd") from e
        if not d.eof:
            if partial:
                break
            raise _Bad("truncated_zstd")
        rest = d.unused_data + rest[i + step :]
        if rest and not rest.startswith(b"\x28\xb5\x2f\xfd"):
            if rest.strip(b"\x00"):
                raise _Bad("trailing_data_zstd")
            break
    return bytes(out)


_DECODERS: dict[str, Callable[[bytes, int, bool], bytes]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "x-deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def decode_content(raw: bytes, encoding: str | None, limit: int = DECODE_LIMIT, *, partial: bool = False) -> tuple[bytes | None, str | None]:
    """``(decoded, None)``, or ``(None, "error:<reason>")``: bad_gzip, truncated_br, too_large, unsupported_encoding, ...

    ``encoding`` is the Content-Encoding header value; codings listed in the
    order they were applied ("gzip, br" is gzip first) are undone in reverse.
    Decoding stops as soon as the output of any stage passes ``limit`` bytes
    (gzip and deflate stop exactly there; brotli and zstd may go past it by
    what one step of input can expand to, at most 16 MiB, before they stop),
    so a chain holds at most about two stages' worth, ``2 * limit``, at once.
    ``partial``: ``raw`` is only the first bytes of a longer body (a streamed
    body's head); what decodes from it is returned, its cut end is no error.
    """
    try:
        codings = [c.strip().lower() for c in (encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        data = bytes(raw)
        for c in reversed(codings):
            fn = _DECODERS.get(c)
            if fn is None:
                return None, "error:unsupported_encoding"
            if not data:
                continue
            data = fn(data, limit, partial)
        return data, None
    except _TooLarge:
        return None, "error:too_large"
    except _Bad as e:
        return None, f"error:{e.reason}"
    except (MemoryError, Exception):  # never raise on a body
        return None, "error:decode"


# -- magic bytes -------------------------------------------------------------------

_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"%PDF-", "pdf"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!\x1a\x07", "rar"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"ID3", "mp3"),
    (0, b"\x1a\x45\xdf\xa3", "mkv"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"\x00\x00\x01\x00", "ico"),
    (0, b"8BPS", "psd"),
    (0, b"{\\rtf", "rtf"),
    (0, b"%!PS", "ps"),
    (0, b"MDMP\x93\xa7", "minidump"),
    (0, b"SQLite format 3\x00", "sqlite"),
    (0, b"\x7fELF", "elf"),
    (0, b"\x00asm", "wasm"),
    (0, b"wOFF", "woff"),
    (0, b"wOF2", "woff2"),
    (0, b"\xd4\xc3\xb2\xa1", "pcap"),
    (0, b"\xa1\xb2\xc3\xd4", "pcap"),
    (0, b"\x0a\x0d\x0d\x0a", "pcapng"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),  # legacy .doc/.xls/.ppt/.msg
    (0, b"BEGIN:VCALENDAR", "ics"),
    (0, b"BEGIN:VCARD", "vcard"),
    (0, b"-----BEGIN ", "pem"),
    (0, b"\x30\x82", "der"),
]

_FTYP = {
    b"heic": "heic",
    b"heix": "heic",
    b"mif1": "heif",
    b"avif": "avif",
    b"qt  ": "mov",
    b"M4A ": "m4a",
    b"M4V ": "mp4",
    b"3gp4": "3gp",
    b"3gp5": "3gp",
    b"3g2a": "3gp",
}


def sniff_magic(data: bytes, size: int | None = None) -> str | None:
    """File type from the first bytes: png, jpeg, pdf, zip (docx, xlsx, pptx), mp4, webm, ogg, wav, ... or None.

    ``data`` may be the first 4 KiB only, with the whole body's ``size`` (a BMP header states it).
    """
    head = data[:64]
    size = len(data) if size is None else size
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        window = data[:4096]
        for marker, kind in ((b"word/", "docx"), (b"xl/", "xlsx"), (b"ppt/", "pptx"), (b"AndroidManifest.xml", "apk"), (b"META-INF/", "jar")):
            if marker in window:
                return kind
        return "zip"
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WAVE": "wav", b"WEBP": "webp", b"AVI ": "avi"}.get(head[8:12], "riff")
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "mp4")
    for off, sig, kind in _MAGIC:
        if head[off : off + len(sig)] == sig:
            if kind == "mkv" and b"webm" in data[:64]:
                return "webm"
            if kind == "der" and size < 128:
                continue
            return kind
    if head[:2] == b"BM" and len(head) >= 14 and int.from_bytes(head[2:6], "little") == size:
        return "bmp"
    if len(head) >= 2 and head[0] == 0xFF and head[1] in (0xFB, 0xF3, 0xF2):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "aac"
    if head.startswith((b"MZ",)) and size >= 64:
        return "pe"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return "macho"
    return None


# -- result ------------------------------------------------------------------------


@dataclass
class Part:
    """One part of a multipart body (or one non-JSON item of a Sentry envelope)."""

    name: str | None
    filename: str | None
    content_type: str | None
    size: int
    magic: str | None = None


@dataclass
class ParsedBody:
    """What a (decoded) body is.

    ``format``: json, ndjson, form, multipart, protobuf, bond, sentry_envelope,
    text, binary:<type>, empty, or error:<reason>.  ``tree`` is a JSON-like
    tree (dicts, lists, scalars; protobuf values are :class:`Varint`,
    :class:`Fixed32`, :class:`Fixed64`, str, bytes or nested dicts).
    ``warning`` says why a recognised body was only partly parsed
    (``truncated_multipart``, ``too_many_parts``, ``too_many_keys``,
    ``truncated_envelope``).  ``part_count`` and ``file_count`` count every
    part of a multipart body (``parts`` keeps the first :data:`MAX_PARTS`).
    """

    format: str
    tree: object | None = None
    parts: list[Part] = field(default_factory=list)
    magic: str | None = None
    size: int = 0
    warning: str | None = None
    part_count: int = 0
    file_count: int = 0
    cut: int = 0
    """Form keys or parts not kept (see :data:`MAX_FORM_KEYS`, :data:`MAX_PARTS`)."""


class Varint(int):
    """A protobuf varint (wire type 0)."""


class Fixed32(int):
    """A protobuf 32-bit field (wire type 5), as an unsigned integer."""


class Fixed64(int):
    """A protobuf 64-bit field (wire type 1), as an unsigned integer."""


# -- protobuf ----------------------------------------------------------------------


class _PbError(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _PbError
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _printable(b: bytes) -> str | None:
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if s.isprintable() or s.translate(_LINE_CHARS).isprintable():  # C loops, not one Python step per character
        return s
    return None


_LINE_CHARS = str.maketrans("", "", "\t\r\n")


def _pb_message(data: bytes, depth: int) -> dict[str, object]:
    """A protobuf message without its schema; raises _PbError unless the bytes are consumed exactly."""
    if depth > MAX_DEPTH:
        raise _PbError
    out: dict[str, object] = {}
    pos, n = 0, len(data)
    while pos < n:
        key, pos = _varint(data, pos)
        fieldno, wire = key >> 3, key & 7
        if fieldno == 0 or fieldno > 0x1FFFFFFF:
            raise _PbError
        value: object
        if wire == 0:
            v, pos = _varint(data, pos)
            value = Varint(v)
        elif wire == 1:
            if pos + 8 > n:
                raise _PbError
            value = Fixed64(int.from_bytes(data[pos : pos + 8], "little"))
            pos += 8
        elif wire == 5:
            if pos + 4 > n:
                raise _PbError
            value = Fixed32(int.from_bytes(data[pos : pos + 4], "little"))
            pos += 4
        elif wire == 2:
            ln, pos = _varint(data, pos)
            if pos + ln > n:
                raise _PbError
            chunk = data[pos : pos + ln]
            pos += ln
            value = _pb_bytes(chunk, depth)
        else:  # groups (3, 4) are deprecated and rare; 6, 7 are invalid
            raise _PbError
        k = f"#{fieldno}"
        if k in out:
            prev = out[k]
            if isinstance(prev, list):
                prev.append(value)
            else:
                out[k] = [prev, value]
        else:
            out[k] = value
    return out


def _pb_bytes(chunk: bytes, depth: int) -> object:
    """A length-delimited field: text when it reads as text, a nested message when it parses cleanly, else bytes."""
    if not chunk:
        return ""
    text = _printable(chunk)
    if text is not None:
        return text
    try:
        return _pb_message(chunk, depth + 1)
    except _PbError:
        return bytes(chunk)


def parse_protobuf(data: bytes) -> dict[str, object] | None:
    """A schemaless protobuf message as ``{"#<field>": value}``; None unless the bytes parse exactly."""
    try:
        return _pb_message(data, 0) if data else None
    except (_PbError, RecursionError):
        return None


def _grpc_frames(data: bytes) -> list[bytes] | None:
    frames, pos = [], 0
    while pos < len(data):
        if pos + 5 > len(data) or data[pos] not in (0, 1):
            return None
        ln = int.from_bytes(data[pos + 1 : pos + 5], "big")
        if data[pos] == 1 or pos + 5 + ln > len(data):  # compressed frames: not decoded here
            return None
        frames.append(data[pos + 5 : pos + 5 + ln])
        pos += 5 + ln
    return frames


# -- JSON family -------------------------------------------------------------------


def _json(data: bytes) -> object:
    text = data.decode("utf-8-sig")
    return json.loads(text)


def _ndjson(data: bytes) -> list[object] | None:
    lines = [ln.strip(b"\x1e \t\r") for ln in data.split(b"\n")]  # \x1e: RFC 7464 JSON text sequences
    lines = [ln for ln in lines if ln]
    if not lines:
        return None
    out: list[object] = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except (ValueError, UnicodeDecodeError):
            return None
    return out


_B64 = re.compile(r"^[A-Za-z0-9+/_-]{8,}={0,2}$")


def _expand(value: str) -> object:
    """A form value that is itself JSON (or base64 JSON, as Mixpanel's ``data=``) becomes a tree."""
    v = value.strip()
    if v[:1] in ("{", "["):
        try:
            return json.loads(v)
        except ValueError:
            return value
    if len(v) >= 16 and _B64.match(v):
        try:
            raw = base64.b64decode(v + "=" * (-len(v) % 4), altchars=b"-_" if ("-" in v or "_" in v) else None, validate=True)
        except (binascii.Error, ValueError):
            return value
        if raw[:1] in (b"{", b"["):
            try:
                return _json(raw)
            except (ValueError, UnicodeDecodeError):
                return value
    return value


_FORM = re.compile(rb"^[A-Za-z0-9_.\-\[\]%*~+$!:@/]+=[^&=\s]*(?:&[A-Za-z0-9_.\-\[\]%*~+$!:@/]+(?:=[^&\s]*)?)*&?$")


def _form_pairs(text: str, limit: int) -> tuple[list[tuple[str, str]], int]:
    """The first ``limit`` ``&``-separated pairs of a query or form, and how many more pieces there are (not parsed)."""
    end = -1
    for _ in range(limit):
        end = text.find("&", end + 1)
        if end < 0:
            return parse_qsl(text, keep_blank_values=True), 0
    return parse_qsl(text[:end], keep_blank_values=True), text.count("&", end) if end < len(text) - 1 else 0


def parse_form(data: bytes, limit: int = MAX_FORM_KEYS) -> dict[str, object]:
    """URL-encoded form as a dict; repeated keys become lists; JSON values are expanded (the first ``limit`` pairs)."""
    return _form_tree(data, limit)[0]


def _form_tree(data: bytes, limit: int = MAX_FORM_KEYS) -> tuple[dict[str, object], int]:
    tree: dict[str, object] = {}
    pairs, cut = _form_pairs(data.decode("utf-8", "replace"), limit)
    for k, v in pairs:
        val = _expand(v)
        if k in tree:
            prev = tree[k]
            if isinstance(prev, list):
                prev.append(val)
            else:
                tree[k] = [prev, val]
        else:
            tree[k] = val
    return tree, cut


def _form(data: bytes) -> ParsedBody:
    tree, cut = _form_tree(data)
    return ParsedBody("form", tree=tree, size=len(data), warning="too_many_keys" if cut else None, cut=cut)


# -- multipart ---------------------------------------------------------------------

_PARAM = re.compile(r'(\w[\w*-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))')


def _params(header: str) -> dict[str, str]:
    return {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM.finditer(header)}


def _boundary(data: bytes, content_type: str | None) -> bytes | None:
    if content_type and "boundary=" in content_type.lower():
        b = _params(content_type.split(";", 1)[1] if ";" in content_type else "").get("boundary")
        if b:
            return b.encode("latin-1", "replace")
    # the recorder passes the bare MIME type: the first line of the body names the boundary
    first = data[:300].split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    if first.startswith(b"--") and 3 <= len(first) <= 74 and b" " not in first.rstrip():
        return first[2:].rstrip()
    return None


def _part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").splitlines():
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return headers


def parse_multipart(data: bytes, content_type: str | None) -> ParsedBody:
    """Parts of a multipart body (RFC 7578), CRLF or bare LF line ends; a truncated body keeps the parts that arrived.

    Linear in the body's size: every search is bounded by the next delimiter, found once (the parser before this
    searched each part's header end from the part to the end of the body: 10k parts took 2.6 s, 40k 55 s). Neither
    library at hand fits: mitmproxy's ``decode_multipart`` is linear but keeps no filename, content type or exact size
    (it joins a part's lines), and python-multipart rejects the LF-only and truncated bodies clients send.
    At most :data:`MAX_PARTS` parts are kept as :class:`Part`; all are counted (``part_count``, ``file_count``).
    """
    boundary = _boundary(data, content_type)
    if not boundary:
        return ParsedBody("error:invalid_multipart", size=len(data))
    delim = b"--" + boundary
    start = data.find(delim)
    if start < 0:
        return ParsedBody("error:invalid_multipart", size=len(data))
    parts: list[Part] = []
    fields: dict[str, object] = {}
    count = files = 0
    pos = start + len(delim)
    complete = False
    n = len(data)
    while True:
        if data[pos : pos + 2] == b"--":
            complete = True
            break
        eol = data.find(b"\n", pos)
        if eol < 0:
            break
        nxt = data.find(b"\n" + delim, eol)
        seg_end = n if nxt < 0 else nxt
        # the blank line that ends the part's headers, looked for in this part only
        head_end = data.find(b"\r\n\r\n", eol, seg_end)
        sep = 4
        lf_end = data.find(b"\n\n", eol, seg_end if head_end < 0 else head_end)
        if lf_end >= 0:
            head_end, sep = lf_end, 2
        if head_end < 0:
            if nxt < 0:
                break  # cut inside the headers
            head_end, sep = seg_end, 0  # headers only, no body
        truncated = nxt < 0
        body_start = min(head_end + sep, seg_end)
        body_end = seg_end if truncated or data[nxt - 1 : nxt] != b"\r" else nxt - 1
        body_end = max(body_end, body_start)
        headers = _part_headers(data[eol + 1 : head_end])
        disp = _params(headers.get("content-disposition", ""))
        name = disp.get("name")
        filename = disp.get("filename*") or disp.get("filename")
        if filename and filename.lower().startswith("utf-8''"):
            filename = unquote(filename[7:])
        count += 1
        files += filename is not None
        size = body_end - body_start
        if len(parts) < MAX_PARTS:
            ctype = (headers.get("content-type") or "").split(";", 1)[0].strip().lower() or None
            parts.append(Part(name, filename, ctype, size, sniff_magic(data[body_start : min(body_end, body_start + 4096)], size)))
            if name is not None and filename is None and size <= 1 << 20 and name not in fields:
                fields[name] = _expand(data[body_start:body_end].decode("utf-8", "replace"))
        if truncated:
            break
        pos = nxt + 1 + len(delim)
    if not parts:
        return ParsedBody("error:invalid_multipart", size=len(data))
    tree: dict[str, object] = dict(fields)
    warning = None if complete else "truncated_multipart"
    if count > len(parts):
        warning = "too_many_parts"
    return ParsedBody(
        "multipart", tree=tree or None, parts=parts, size=len(data), warning=warning, part_count=count, file_count=files, cut=count - len(parts)
    )


# -- Sentry envelopes --------------------------------------------------------------


def parse_sentry_envelope(data: bytes) -> ParsedBody | None:
    """https://develop.sentry.dev/sdk/envelopes/ : tree ``{"header": {...}, "items": [{"header": {...}, "payload": ...}]}``."""
    nl = data.find(b"\n")
    head = data if nl < 0 else data[:nl]
    try:
        env = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(env, dict):
        return None
    items: list[object] = []
    parts: list[Part] = []
    pos = len(data) if nl < 0 else nl + 1
    warning = None
    while pos < len(data):
        nl = data.find(b"\n", pos)
        line = data[pos:] if nl < 0 else data[pos:nl]
        if not line.strip():
            pos = len(data) if nl < 0 else nl + 1
            continue
        try:
            ih = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(ih, dict) or "type" not in ih:
            return None
        pos = len(data) if nl < 0 else nl + 1
        length = ih.get("length")
        if isinstance(length, int) and length >= 0:
            payload = data[pos : pos + length]
            if pos + length > len(data):
                warning = "truncated_envelope"
            pos += length
            if data[pos : pos + 1] == b"\n":
                pos += 1
        else:
            nl = data.find(b"\n", pos)
            payload = data[pos:] if nl < 0 else data[pos:nl]
            pos = len(data) if nl < 0 else nl + 1
        parsed: object = None
        ctype = str(ih.get("content_type") or "")
        if ih.get("type") != "attachment" or "json" in ctype:
            try:
                parsed = _json(payload)
            except (ValueError, UnicodeDecodeError):
                parsed = None
        if parsed is None and payload and len(parts) < MAX_PARTS:
            parts.append(
                Part(
                    str(ih.get("type")),
                    ih.get("filename") if isinstance(ih.get("filename"), str) else None,
                    ctype or None,
                    len(payload),
                    sniff_magic(payload),
                )
            )
        items.append({"header": ih, "payload": parsed})
    if not items and not {"dsn", "event_id", "sent_at", "sdk"} & set(env):
        return None
    return ParsedBody("sentry_envelope", tree={"header": env, "items": items}, parts=parts, size=len(data), warning=warning)


# -- Bond --------------------------------------------------------------------------


def _looks_like_bond(data: bytes) -> bool:
    """Bond Compact Binary structs start with a field header: type id in the low 5 bits (2..18), field id above."""
    if len(data) < 2:
        return False
    t = data[0] & 0x1F
    return 2 <= t <= 18


_ARIA_HOSTS = re.compile(r"(^|\.)(pipe\.aria\.microsoft\.com|events\.data\.microsoft\.com|pipe\.skype\.com)$")


def _is_aria_host(host: str) -> bool:
    return bool(_ARIA_HOSTS.search(host.lower().rstrip(".").split(":", 1)[0]))


# -- dispatch ----------------------------------------------------------------------

_JSON_TYPES = ("application/json", "text/json", "application/x-json", "application/csp-report", "application/javascript+json")
_NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/json-seq",
    "application/x-json-stream",
)
_PB_TYPES = (
    "application/x-protobuf",
    "application/protobuf",
    "application/vnd.google.protobuf",
    "application/x-google-protobuf",
    "application/octet-stream+protobuf",
    "application/x-protobuffer",
    "application/proto",
)
_BOND_TYPES = ("application/bond-compact-binary", "application/x-bond-compact-binary", "application/bond")
_SENTRY_TYPES = ("application/x-sentry-envelope",)
_TEXT_SNIFF_TYPES = ("text/plain", "application/octet-stream", "application/x-www-form-urlencoded", "")


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_text(data: bytes) -> bool:
    try:
        s = data[:65536].decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < 65530:  # not just a character cut at the window's end
            return False
        s = data[: e.start].decode("utf-8")
    if not s:
        return False
    bad = sum(1 for c in s if not (c.isprintable() or c in "\t\r\n\f"))
    return bad <= len(s) // 100


def _sniff(data: bytes, mime: str) -> ParsedBody:
    n = len(data)
    magic = sniff_magic(data)
    if magic is not None:
        return ParsedBody(f"binary:{magic}", magic=magic, size=n)
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"{", b"["):
        try:
            return ParsedBody("json", tree=_json(data), size=n)
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        if stripped[:1] == b"{":
            env = parse_sentry_envelope(data)
            if env is not None:
                return env
            nd = _ndjson(data)
            if nd is not None and len(nd) > 1:
                return ParsedBody("ndjson", tree=nd, size=n)
    if data.startswith(b"--") and (mp := parse_multipart(data, None)).format == "multipart":
        return mp
    if _FORM.match(data) and b"=" in data:
        return _form(data)
    if _is_text(data):
        return ParsedBody("text", size=n)
    pb = parse_protobuf(data)
    if pb is not None:
        return ParsedBody("protobuf", tree=pb, size=n)
    sub = mime.split("/", 1)[1] if "/" in mime and mime != "application/octet-stream" else "unknown"
    return ParsedBody(f"binary:{sub}", size=n)


def parse_body(data: bytes, content_type: str | None, host: str | None = None) -> ParsedBody:
    """What a decoded request body is, and its tree; never raises (errors are ``format="error:<reason>"``).

    ``content_type`` may carry parameters (a multipart boundary) or not.
    ``host``, when given, lets a Bond body sent to Microsoft's telemetry
    collectors be recognised without its content type.
    """
    try:
        return _parse(bytes(data), content_type, host)
    except RecursionError:
        return ParsedBody("error:too_deep", size=len(data))
    except Exception:  # a parser bug must not lose the exchange
        return ParsedBody("error:parse", size=len(data))


def _parse(data: bytes, content_type: str | None, host: str | None) -> ParsedBody:
    n = len(data)
    if n == 0:
        return ParsedBody("empty")
    mime = _mime(content_type)
    if mime.startswith("multipart/"):
        return parse_multipart(data, content_type)
    if mime in _BOND_TYPES:
        return ParsedBody("bond", size=n)
    if n > PARSE_LIMIT:
        magic = sniff_magic(data)
        if magic is not None:
            return ParsedBody(f"binary:{magic}", magic=magic, size=n)
        return ParsedBody("error:too_large_to_parse", size=n)
    if mime in _SENTRY_TYPES:
        env = parse_sentry_envelope(data)
        return env if env is not None else ParsedBody("error:invalid_envelope", size=n)
    if mime in _NDJSON_TYPES:
        nd = _ndjson(data)
        return ParsedBody("ndjson", tree=nd, size=n) if nd is not None else ParsedBody("error:invalid_json", size=n)
    if mime in _JSON_TYPES or mime.endswith("+json"):
        try:
            return ParsedBody("json", tree=_json(data), size=n)
        except (ValueError, UnicodeDecodeError):
            pass
        nd = _ndjson(data)
        if nd is not None and len(nd) > 1:
            return ParsedBody("ndjson", tree=nd, size=n)
        env = parse_sentry_envelope(data)  # some SDK tunnels post envelopes as JSON
        if env is not None and env.tree is not None and isinstance(env.tree, dict) and env.tree.get("items"):
            return env
        return ParsedBody("error:invalid_json", size=n)
    if mime == "application/x-www-form-urlencoded":
        if _FORM.match(data) or b"=" in data[:4096]:
            return _form(data)
        return _sniff(data, mime)
    if mime in _PB_TYPES or mime.startswith("application/grpc"):
        if mime.startswith("application/grpc") and "web-text" not in mime:
            frames = _grpc_frames(data)
            if frames is not None:
                msgs = [parse_protobuf(f) if f else {} for f in frames]
                if all(m is not None for m in msgs):
                    return ParsedBody("protobuf", tree=msgs[0] if len(msgs) == 1 else msgs, size=n)
        pb = parse_protobuf(data)
        return ParsedBody("protobuf", tree=pb, size=n) if pb is not None else ParsedBody("error:invalid_protobuf", size=n)
    if mime.startswith(("image/", "audio/", "video/", "font/")) or mime in ("application/pdf", "application/zip"):
        magic = sniff_magic(data)
        return ParsedBody(f"binary:{magic or mime.split('/', 1)[1]}", magic=magic, size=n)
    if mime.startswith("text/") and mime != "text/plain":
        return ParsedBody("text", size=n)
    if mime in ("application/xml", "application/javascript", "application/x-javascript", "application/ecmascript") or mime.endswith("+xml"):
        return ParsedBody("text", size=n)
    parsed = _sniff(data, mime)
    if host and parsed.format in ("binary:unknown", "protobuf") and _is_aria_host(host) and _looks_like_bond(data):
        return ParsedBody("bond", size=n)
    return parsed
