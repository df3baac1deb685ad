"""Property tests (hypothesis) for every dissector and body decoder: valid messages built from structure parse back to
what was built, and mutations of them never raise.

The never-raise checks go through ``fuzz/targets.py``, the same functions the atheris harness (``fuzz/run.py``) runs,
so they hold the same outcomes: None or a value from dissectors, ``error:<reason>`` from body decoders, a decoded body
under its ceiling, and no case over the CPU limit.

Examples per test: a CI-sized number by default (the whole file in well under a minute); ``HYPOTHESIS_PROFILE=long``
runs a hundred times more.
"""

from __future__ import annotations

import gzip
import importlib.util
import ipaddress
import json
import os
import struct
import sys
import warnings
import zlib
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egressaudit.dissect import dns, dtls, http, quic, rtp, stun, tls, zoom
from egressaudit.http import bodies

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def _load_targets() -> ModuleType:
    if "fuzz_targets" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fuzz_targets", FUZZ / "targets.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["fuzz_targets"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["fuzz_targets"]


T = _load_targets()

# hypothesis imports its patch writer (libcst, which warns on import) only after a failure, inside pytest's report hook,
# where the suite's warnings-as-errors turns a failing example into an INTERNALERROR: import it here, quietly.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}
settings.register_profile("egressaudit-ci", max_examples=40, derandomize=True, **_COMMON)  # the same examples every run  # type: ignore[arg-type]
settings.register_profile("long", max_examples=4000, **_COMMON)  # type: ignore[arg-type]
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "egressaudit-ci")
SETTINGS = settings.get_profile(PROFILE if PROFILE in ("egressaudit-ci", "long") else "egressaudit-ci")


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` cut short, with bytes flipped, set to extremes, inserted or removed."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.integers(0, 4))
            if not b:
                b += draw(st.binary(min_size=1, max_size=8))
                continue
            i = draw(st.integers(0, len(b) - 1))
            if op == 0:
                b[i] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:
                b[i] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)))
            elif op == 2:
                del b[i:]
            elif op == 3:
                b[i:i] = draw(st.binary(min_size=1, max_size=16))
            else:
                del b[i : i + draw(st.integers(1, 8))]
        return bytes(b)

    return mutate()


# -- DNS ----------------------------------------------------------------------------------------------------------

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"


@st.composite
def dns_messages(draw: st.DrawFn) -> tuple[bytes, str, list[tuple[str, str]], list[tuple[str, str]]]:
    """A DNS response: one question, A/AAAA/CNAME answers, owner names compressed (pointer to the question) or not."""
    qname = draw(NAME)
    ident = draw(st.integers(0, 0xFFFF))
    answers: list[tuple[str, str]] = []
    cnames: list[tuple[str, str]] = []
    rrs = b""
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(("a", "aaaa", "cname")))
        compressed = draw(st.booleans())
        owner = qname if compressed else draw(NAME)
        owner_bytes = b"\xc0\x0c" if compressed else dns_name(owner)
        if kind == "a":
            addr = draw(st.ip_addresses(v=4))
            rdata, rtype = addr.packed, 1
            answers.append((owner, str(addr)))
        elif kind == "aaaa":
            addr6 = draw(st.ip_addresses(v=6))
            rdata, rtype = addr6.packed, 28
            answers.append((owner, str(addr6)))
        else:
            target = draw(NAME)
            rdata, rtype = dns_name(target), 5
            cnames.append((owner, target))
        rrs += owner_bytes + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    n = len(answers) + len(cnames)
    msg = struct.pack("!HHHHHH", ident, 0x8180, 1, n, 0, 0) + dns_name(qname) + b"\x00\x01\x00\x01" + rrs
    return msg, qname, answers, cnames


@SETTINGS
@given(dns_messages())
def test_dns_reads_back_what_was_built(m: tuple[bytes, str, list[tuple[str, str]], list[tuple[str, str]]]) -> None:
    msg, qname, answers, cnames = m
    for parsed in (dns.parse_dns(msg), dns.parse_dns_tcp(struct.pack("!H", len(msg)) + msg)):
        assert parsed is not None
        assert parsed.is_response and parsed.qname == qname and parsed.qtype == 1
        assert [(o, ipaddress.ip_address(a)) for o, a in parsed.answers] == [(o, ipaddress.ip_address(a)) for o, a in answers]
        assert list(parsed.cnames) == cnames


@SETTINGS
@given(st.data(), dns_messages())
def test_dns_never_raises_on_mutations(data: st.DataObject, m: tuple[bytes, str, object, object]) -> None:
    bad = data.draw(mutations(m[0]))
    T.check("dns_udp", bad)
    T.check("dns_tcp", struct.pack("!H", len(bad)) + bad)


# -- TLS, DTLS, QUIC ------------------------------------------------------------------------------------------------

HOST = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
ALPN = st.lists(st.sampled_from(("h2", "http/1.1", "h3", "webrtc", "c-webrtc")), max_size=3)
VERSIONS = st.lists(st.sampled_from((0x0304, 0x0303, 0x0A0A, 0x7F1C)), max_size=4)


def hello_body(sni: str | None, alpn: list[str], versions: list[int], dtls_cookie: bool = False) -> bytes:
    exts = b""
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        exts += struct.pack("!HH", 0, len(entry) + 2) + struct.pack("!H", len(entry)) + entry
    if alpn:
        protos = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
        exts += struct.pack("!HH", 16, len(protos) + 2) + struct.pack("!H", len(protos)) + protos
    if versions:
        vs = b"".join(struct.pack("!H", v) for v in versions)
        exts += struct.pack("!HH", 43, len(vs) + 1) + bytes([len(vs)]) + vs
    ver = b"\xfe\xfd" if dtls_cookie else b"\x03\x03"
    body = ver + bytes(32) + b"\x20" + bytes(32) + (b"\x00" if dtls_cookie else b"") + b"\x00\x04\x13\x01\xc0\x2f" + b"\x01\x00"
    return body + struct.pack("!H", len(exts)) + exts


def records_of(msg: bytes, cuts: list[int]) -> bytes:
    """A handshake message split into TLS records at ``cuts``."""
    points = sorted({c % len(msg) for c in cuts} - {0})
    out = b""
    for a, b in zip([0, *points], [*points, len(msg)], strict=True):
        out += b"\x16\x03\x01" + struct.pack("!H", b - a) + msg[a:b]
    return out


@SETTINGS
@given(HOST, ALPN, VERSIONS, st.lists(st.integers(1, 10_000), max_size=4))
def test_tls_client_hello_reads_back_over_any_record_split(sni: str, alpn: list[str], versions: list[int], cuts: list[int]) -> None:
    body = hello_body(sni, alpn, versions)
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    stream = records_of(msg, cuts)
    ch = tls.parse_client_hello(stream)
    assert ch is not None and ch.sni == sni and list(ch.alpn) == alpn and list(ch.supported_versions) == versions
    for end in range(1, len(stream), max(1, len(stream) // 24)):
        assert tls.parse_client_hello(stream[:end]) is None
        assert tls.needs_more(stream[:end]), end


@SETTINGS
@given(st.data(), HOST, ALPN)
def test_tls_never_raises_on_mutations(data: st.DataObject, sni: str, alpn: list[str]) -> None:
    body = hello_body(sni, alpn, [0x0304])
    stream = records_of(b"\x01" + len(body).to_bytes(3, "big") + body, [])
    T.check("tls_client_hello", data.draw(mutations(stream)))


@SETTINGS
@given(st.one_of(st.none(), HOST), ALPN)
def test_dtls_client_hello_reads_back(sni: str | None, alpn: list[str]) -> None:
    body = hello_body(sni, alpn, [], dtls_cookie=True)
    hs = b"\x01" + len(body).to_bytes(3, "big") + b"\x00\x00" + b"\x00\x00\x00" + len(body).to_bytes(3, "big") + body
    rec = b"\x16\xfe\xfd\x00\x00" + bytes(6) + struct.pack("!H", len(hs)) + hs
    r = dtls.parse_dtls(rec)
    assert r is not None and r.records == 1 and r.handshake_type == 1
    ch = dtls.parse_dtls_client_hello(rec)
    assert ch is not None and ch.sni == sni and list(ch.alpn) == alpn
    assert dtls.client_hello_sni(rec) == sni


def quic_varint(v: int) -> bytes:
    return bytes([v]) if v < 64 else struct.pack("!H", 0x4000 | v)


@SETTINGS
@given(HOST, ALPN, st.lists(st.integers(1, 3000), max_size=5), st.randoms(use_true_random=False), st.booleans(), st.booleans())
def test_quic_assembler_finds_the_sni_in_split_reordered_coalesced_initials(
    sni: str, alpn: list[str], cuts: list[int], rnd: object, v2: bool, coalesce: bool
) -> None:
    body = hello_body(sni, alpn, [0x0304])
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    points = sorted({c % len(msg) for c in cuts} - {0})
    frames = [b"\x06" + quic_varint(a) + quic_varint(b - a) + msg[a:b] for a, b in zip([0, *points], [*points, len(msg)], strict=True)]
    rnd.shuffle(frames)  # type: ignore[attr-defined]
    version = quic.VERSION_2 if v2 else quic.VERSION_1
    packets = [T.seal_initial(b"\x01" + f + b"\x00" * 4, T.QUIC_DCID, pn=i, version=version) for i, f in enumerate(frames)]
    dgrams = [b"".join(packets)] if coalesce else packets
    asm = quic.QuicClientHelloAssembler()
    results = [asm.feed(d) for d in dgrams[: quic.MAX_DATAGRAMS]]
    if len(dgrams) <= quic.MAX_DATAGRAMS:
        assert results[-1] is not None and results[-1].sni == sni and list(results[-1].alpn) == alpn
        assert asm.done and asm.version == version


@SETTINGS
@given(st.data(), HOST)
def test_quic_never_raises_on_mutated_initials(data: st.DataObject, sni: str) -> None:
    body = hello_body(sni, [], [0x0304])
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    plain = b"\x06\x00" + quic_varint(len(msg)) + msg
    T.check("quic_crypto", T.pack_records([(0, 0, data.draw(mutations(plain)))]))
    T.check("quic_initial", T.pack_records([(0, 0, data.draw(mutations(T.seal_initial(plain, T.QUIC_DCID))))]))


# -- STUN, RTP/RTCP, Zoom, HTTP -------------------------------------------------------------------------------------

ATTRS = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24)), max_size=8)


def stun_message(mtype: int, tid: bytes, attrs: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("!HH", t, len(v)) + v + b"\x00" * (-len(v) % 4) for t, v in attrs)
    return struct.pack("!HHI", mtype, len(body), stun.MAGIC_COOKIE) + tid + body


@SETTINGS
@given(st.integers(0, 0x3FFF), st.binary(min_size=12, max_size=12), ATTRS)
def test_stun_reads_back_over_udp_and_both_tcp_framings(mtype: int, tid: bytes, attrs: list[tuple[int, bytes]]) -> None:
    msg = stun_message(mtype, tid, attrs)
    for parsed in (stun.parse_stun(msg), stun.parse_stun_tcp(msg + b"more"), stun.parse_stun_tcp(struct.pack("!H", len(msg)) + msg)):
        assert parsed is not None and not parsed.classic
        assert parsed.transaction_id == tid and list(parsed.attributes) == attrs
    assert not stun.is_channel_data(msg)


@SETTINGS
@given(st.data(), st.integers(0, 0x3FFF), ATTRS)
def test_stun_never_raises_on_mutations(data: st.DataObject, mtype: int, attrs: list[tuple[int, bytes]]) -> None:
    T.check("stun", data.draw(mutations(stun_message(mtype, bytes(12), attrs))))


@SETTINGS
@given(
    st.sampled_from([*range(0, 35), *range(96, 128)]),
    st.booleans(),
    st.integers(0, 15),
    st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.integers(0, 6))),
    st.integers(0, 40),
    st.integers(0, 20),
    st.integers(0, 2**32 - 1),
)
def test_rtp_header_reads_back(pt: int, marker: bool, cc: int, ext: tuple[int, int] | None, pay: int, pad: int, ssrc: int) -> None:
    b0 = 0x80 | cc | (0x10 if ext else 0) | (0x20 if pad else 0)
    pkt = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), 7, 960, ssrc) + bytes(4 * cc)
    if ext:
        pkt += struct.pack("!HH", ext[0], ext[1]) + bytes(4 * ext[1])
    hlen = len(pkt)
    pkt += bytes(pay) + (bytes(pad - 1) + bytes([pad]) if pad else b"")
    h = rtp.parse_rtp(pkt)
    assert h is not None and (h.payload_type, h.marker, h.ssrc, h.csrc_count, h.header_length) == (pt, marker, ssrc, cc, hlen)
    assert h.extension_profile == (ext[0] if ext else None)


@SETTINGS
@given(st.lists(st.tuples(st.integers(192, 213), st.integers(0, 6)), min_size=1, max_size=5), st.integers(0, 2**32 - 1))
def test_rtcp_compound_reads_back(packets: list[tuple[int, int]], ssrc: int) -> None:
    data = b"".join(struct.pack("!BBHI", 0x81, pt, words, ssrc) + bytes(4 * words - 4 if words else 0) for pt, words in packets if words) or b""
    packets = [p for p in packets if p[1]]
    if not packets:
        return
    h = rtp.parse_rtcp(data)
    assert h is not None and h.compound and h.packets == len(packets) and h.packet_type == packets[0][0] and h.ssrc == ssrc
    assert rtp.parse_rtcp(data + bytes(14)) is not None  # an SRTCP trailer after the first packet


@SETTINGS
@given(st.sampled_from(sorted(zoom.MEDIA_TYPES)), st.integers(0, 2**32 - 1), st.integers(0, 1))
def test_zoom_media_reads_back(media_type: int, ssrc: int, direction: int) -> None:
    kind, off = zoom.MEDIA_TYPES[media_type]
    inner = struct.pack("!BBHI", 0x81, 200, 6, ssrc) + bytes(20) if kind == "rtcp" else struct.pack("!BBHII", 0x80, 111, 1, 960, ssrc) + bytes(40)
    media = bytes([media_type]) + bytes(off - 1) + inner
    z = zoom.parse_zoom(bytes([5, 0, 1, 0, 0, 0, 0, direction * 4]) + media, server_side=True)
    assert z is not None and z.kind == kind and z.direction == direction * 4
    assert (z.rtp.ssrc if z.rtp else z.rtcp.ssrc if z.rtcp else None) == ssrc
    p2p = zoom.parse_zoom(media, server_side=False)
    assert p2p is not None and p2p.kind == kind


@SETTINGS
@given(
    st.sampled_from(sorted(m.decode() for m in http.METHODS if m != b"CONNECT")),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-?=&", min_size=1, max_size=40),
    HOST,
    st.booleans(),
)
def test_http_request_reads_back(method: str, path: str, host: str, complete: bool) -> None:
    head = f"{method} /{path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ua\r\n".encode() + (b"\r\n" if complete else b"")
    r = http.parse_request(head)
    assert r is not None and (r.method, r.path, r.host, r.user_agent, r.complete) == (method, "/" + path, host, "ua", complete)


# -- body decoders --------------------------------------------------------------------------------------------------

ENCODERS = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@SETTINGS
@given(st.binary(max_size=4096), st.lists(st.sampled_from(sorted(ENCODERS)), min_size=1, max_size=3))
def test_content_codings_round_trip(body: bytes, chain: list[str]) -> None:
    data = body
    for c in chain:
        data = ENCODERS[c](data)
    assert bodies.decode_content(data, ", ".join(chain)) == (body, None)


@SETTINGS
@given(st.integers(1, 64), st.sampled_from(sorted(ENCODERS)))
def test_a_body_over_the_ceiling_is_refused(kib: int, coding: str) -> None:
    limit = kib * 1024 - 1
    raw = ENCODERS[coding](b"\x00" * (limit + 1))
    assert bodies.decode_content(raw, coding, limit) == (None, "error:too_large")
    assert bodies.decode_content(raw, coding, limit + 1) == (b"\x00" * (limit + 1), None)


@SETTINGS
@given(st.data(), st.sampled_from(sorted(ENCODERS)), st.binary(max_size=512))
def test_decoders_never_raise_on_mutations(data: st.DataObject, coding: str, body: bytes) -> None:
    T.check(coding, data.draw(mutations(ENCODERS[coding](body))))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@SETTINGS
@given(JSON)
def test_json_and_ndjson_round_trip(tree: object) -> None:
    text = json.dumps(tree).encode()
    p = bodies.parse_body(text, "application/json")
    assert p.format == "json" and p.tree == tree
    nd = bodies.parse_body(text + b"\n" + text + b"\n", "application/x-ndjson")
    assert nd.format == "ndjson" and nd.tree == [tree, tree]
    T.check("json", text)


@SETTINGS
@given(st.data(), JSON)
def test_json_bodies_never_raise_on_mutations(data: st.DataObject, tree: object) -> None:
    text = json.dumps(tree).encode()
    T.check("json", data.draw(mutations(text)))
    T.check("ndjson", data.draw(mutations(text + b"\n" + text)))
    T.check("sentry_envelope", data.draw(mutations(b'{"event_id":"x"}\n{"type":"event"}\n' + text)))


PLAIN = st.text("abcdefghijklmnopqrstuvwxyz0123456789 _.-", max_size=12)  # values that are not JSON nor base64 JSON


@SETTINGS
@given(st.lists(st.tuples(st.text("abcdefgh", min_size=1, max_size=6), PLAIN), min_size=1, max_size=12))
def test_form_round_trips(pairs: list[tuple[str, str]]) -> None:
    expected: dict[str, object] = {}
    for k, v in pairs:
        if k in expected:
            prev = expected[k]
            expected[k] = [*prev, v] if isinstance(prev, list) else [prev, v]
        else:
            expected[k] = v
    body = urlencode(pairs).encode()
    p = bodies.parse_body(body, "application/x-www-form-urlencoded")
    assert p.format == "form" and p.tree == expected


PART = st.tuples(st.text("abcdefgh", min_size=1, max_size=6), st.one_of(st.none(), st.text("abcdef", min_size=1, max_size=8)), st.binary(max_size=64))


@SETTINGS
@given(st.lists(PART, min_size=1, max_size=8), st.booleans())
def test_multipart_round_trips(parts: list[tuple[str, str | None, bytes]], crlf: bool) -> None:
    nl = b"\r\n" if crlf else b"\n"
    boundary = b"Bd7x0q"
    body = b""
    for name, filename, content in parts:
        content = content.replace(b"--" + boundary, b"")
        disp = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}.bin"' if filename else "")
        body += b"--" + boundary + nl + disp.encode() + nl + nl + content + nl
    body += b"--" + boundary + b"--" + nl
    for ctype in ("multipart/form-data", "multipart/form-data; boundary=" + boundary.decode()):
        p = bodies.parse_body(body, ctype)
        assert p.format == "multipart" and p.warning is None
        assert p.part_count == len(parts) and p.file_count == sum(1 for _, f, _ in parts if f)
        assert [(x.name, x.filename, x.size) for x in p.parts] == [
            (n, f"{f}.bin" if f else None, len(c.replace(b"--" + boundary, b""))) for n, f, c in parts
        ]


@SETTINGS
@given(st.data(), st.integers(1, 40))
def test_multipart_never_raises_on_mutations(data: st.DataObject, n: int) -> None:
    body = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(n)) + b"--b--\r\n"
    T.check("multipart", data.draw(mutations(body)))


PB_FIELD = st.tuples(st.integers(1, 2000), st.sampled_from(("varint", "fixed32", "fixed64", "text")), st.integers(0, 2**64 - 1), PLAIN.filter(bool))


def pb_key(field: int, wire: int) -> bytes:
    v, out = (field << 3) | wire, b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


@SETTINGS
@given(st.lists(PB_FIELD, min_size=1, max_size=8))
def test_protobuf_reads_back_and_grpc_framing_too(fields: list[tuple[int, str, int, str]]) -> None:
    msg = b""
    expected: dict[str, object] = {}
    for num, kind, n, text in fields:
        if kind == "varint":
            value: object = n
            msg += pb_key(num, 0) + _varint(n)
        elif kind == "fixed32":
            value = n & 0xFFFFFFFF
            msg += pb_key(num, 5) + struct.pack("<I", value)
        elif kind == "fixed64":
            value = n
            msg += pb_key(num, 1) + struct.pack("<Q", n)
        else:
            value = text
            msg += pb_key(num, 2) + _varint(len(text)) + text.encode()
        k = f"#{num}"
        if k in expected:
            prev = expected[k]
            expected[k] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            expected[k] = value
    assert bodies.parse_protobuf(msg) == expected
    framed = b"\x00" + struct.pack("!I", len(msg)) + msg
    p = bodies.parse_body(framed, "application/grpc")
    assert p.format == "protobuf" and p.tree == expected
    T.check("protobuf", msg)
    T.check("grpc", framed)


def _varint(v: int) -> bytes:
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(("event", "session", "attachment")), JSON, st.booleans()), min_size=1, max_size=5))
def test_sentry_envelope_reads_back(items: list[tuple[str, object, bool]]) -> None:
    env = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\n'
    for kind, payload, with_length in items:
        body = json.dumps(payload).encode()
        header: dict[str, object] = {"type": kind, "content_type": "application/json"}
        if with_length:
            header["length"] = len(body)
        env += json.dumps(header).encode() + b"\n" + body + b"\n"
    p = bodies.parse_body(env, "application/x-sentry-envelope")
    assert p.format == "sentry_envelope"
    assert isinstance(p.tree, dict)
    assert [i["payload"] for i in p.tree["items"]] == [payload for _, payload, _ in items]


@SETTINGS
@given(st.binary(max_size=600))
def test_inventory_takes_any_tree(raw: bytes) -> None:
    T.check("inventory", raw)


# -- every target, on bytes and on mutations of its corpus ----------------------------------------------------------

CHEAP = [n for n in T.TARGETS if n not in ("pcap", "pcapng", "capture_gzip", "har", "mitm", "multipart", "form")]
SLOW = ["pcap", "pcapng", "capture_gzip", "har", "mitm"]


@pytest.mark.parametrize("name", CHEAP)
def test_every_cheap_target_takes_any_bytes(name: str) -> None:
    @SETTINGS
    @given(st.binary(max_size=2048))
    def run(data: bytes) -> None:
        T.check(name, data)

    run()


def _seeds(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((FUZZ / "corpus" / name).glob("seed-*"))[:6]]


@pytest.mark.parametrize("name", SLOW)
def test_readers_take_structure_aware_mutations_of_their_seeds(name: str) -> None:
    seeds = _seeds(name)
    mutator = T.TARGETS[name].mutator

    @settings(SETTINGS, max_examples=max(10, SETTINGS.max_examples // 3))
    @given(st.sampled_from(seeds), st.integers(0, 2**32 - 1))
    def run(seed: bytes, n: int) -> None:
        data = mutator(seed, 65536, n) if mutator is not None else T._mutate_bytes(seed, 65536, __import__("random").Random(n))
        T.check(name, data)

    run()
