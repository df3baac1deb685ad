"""Fuzz targets: one function per reader, dissector and body decoder, taking bytes and calling the real code.

Every target runs the code the way the pipeline does and raises only on a real
crash, that is anything other than the documented outcome:

* dissectors return None or a value and never raise;
* the capture path (``analyze`` on a file; the in-memory reader pieces
  ``decode_batch`` / ``ColumnarFlowTable`` / ``frames.decode`` / ``FlowTable``)
  raises only :class:`~egressaudit.capture.reader.CaptureError`, with one line;
* body decoders (``decode_content``, ``parse_body``) and the field inventory
  never raise, and a decoded body never exceeds its ceiling;
* HAR and ``.mitm`` files through ``record_files`` raise only ``FlowFileError``
  (one line), and the tables and session.json written re-read.

Each case is also bounded in time: a case that takes more than
:data:`CASE_CPU_S` seconds of CPU is a crash too (:class:`Broken`), so
decompression bombs and quadratic parsers count.  Memory is bounded by the
runner (libFuzzer's ``-rss_limit_mb``) and by the size checks here.

Targets whose input needs structure read it as *records* (see
:func:`records`): ``[u8 selector][u8 time step][u16 length][bytes]`` repeated,
so one input holds several frames, datagrams or packets of one flow.

``fuzz/run.py`` runs these under atheris (coverage-guided), ``tests/test_fuzz_corpus.py``
runs every corpus file through its target, ``tests/test_fuzz_properties.py``
drives them with hypothesis.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import shutil
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.capture import frames as fr
from egressaudit.capture.reader import CaptureError, FrameBatch
from egressaudit.dissect import discord, dns, dtls, quic, rtp, stun, tls, webrtc, zoom
from egressaudit.dissect import http as http_d
from egressaudit.flows.columnar import ColumnarFlowTable, decode_batch
from egressaudit.flows.table import Flow, FlowTable
from egressaudit.http import bodies
from egressaudit.http.inventory import inventory
from egressaudit.http.recorder import FlowFileError, RecorderOptions, record_files
from egressaudit.session.store import read_rows
from egressaudit.signatures import SignatureDB, default_db

CASE_CPU_S = float(os.environ.get("EGRESSAUDIT_FUZZ_CPU_S", "2.0"))
"""CPU seconds one case may take (inputs are at most a few hundred KB): more is a crash (a bomb, a quadratic parser)."""
BODY_LIMIT = 1 << 20
"""Ceiling passed to decode_content by the body targets (the recorder passes its body_limit, 64 MiB by default)."""
SALT = b"fuzz-salt-0123456789abcdef012345"
TS0 = 1_700_000_000.0


class Broken(AssertionError):
    """A documented outcome was broken: wrong result type, an exception text of several lines, a ceiling passed, too slow."""


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise Broken(what)


def _one_line(e: BaseException) -> None:
    msg = str(e)
    _need(bool(msg.strip()) and "\n" not in msg.strip(), f"{type(e).__name__} message is not one line: {msg[:300]!r}")


# -- shared state --------------------------------------------------------------------------------------------------

_DB: SignatureDB | None = None
_SCRATCH: Path | None = None


def db() -> SignatureDB:
    global _DB
    if _DB is None:
        _DB = default_db()
    return _DB


def scratch() -> Path:
    """A per-process scratch folder (in /dev/shm when there is one: every case writes a file)."""
    global _SCRATCH
    if _SCRATCH is None or not _SCRATCH.is_dir():
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _SCRATCH = Path(tempfile.mkdtemp(prefix="egressaudit-fuzz-", dir=base))
    return _SCRATCH


# -- structured inputs ---------------------------------------------------------------------------------------------


def records(data: bytes, limit: int = 256) -> list[tuple[int, int, bytes]]:
    """``[u8 selector][u8 time step][u16 length][bytes]`` repeated; the last record takes what is left."""
    out: list[tuple[int, int, bytes]] = []
    off, n = 0, len(data)
    while off + 4 <= n and len(out) < limit:
        sel, step, ln = data[off], data[off + 1], struct.unpack_from("!H", data, off + 2)[0]
        out.append((sel, step, data[off + 4 : off + 4 + ln]))
        off += 4 + ln
    return out


def pack_records(items: list[tuple[int, int, bytes]]) -> bytes:
    """The inverse of :func:`records` (seeds are built with it)."""
    return b"".join(struct.pack("!BBH", s, t, len(b)) + b for s, t, b in items)


def step_seconds(step: int) -> float:
    """A record's time step: 10 ms units up to 2.49 s, then 100 s units (idle timeouts, 120 s, are crossed)."""
    return step * 0.01 if step < 250 else (step - 249) * 100.0


# -- captures: files through analyze() -----------------------------------------------------------------------------


def _check_analysis(path: Path) -> None:
    try:
        res = analyze([path], AnalyzeOptions(session_id="fuzz"), db())
    except CaptureError as e:
        _one_line(e)
        return
    t = res.table
    s = res.session
    _need(t.num_rows == s["counts"]["flows"], "flows table and session.json disagree on the number of flows")
    _need(s["counts"]["packets"] == sum(i["packets"] for i in s["inputs"]), "session packet counts disagree")
    json.loads(json.dumps(s, default=str))
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    back = pq.read_table(pa.BufferReader(sink.getvalue()))
    _need(back.num_rows == t.num_rows, "flows.parquet does not re-read")


def capture_file(data: bytes) -> None:
    """A pcap, pcapng or gzip-compressed capture, as ``egressaudit analyze`` reads it."""
    path = scratch() / "case.cap"
    path.write_bytes(data)
    _check_analysis(path)


def capture_gzip(data: bytes) -> None:
    """A capture compressed with gzip, then (first byte) kept whole, cut short or with one byte changed."""
    if not data:
        return
    mode, body = data[0], data[1:]
    z = gzip.compress(body, compresslevel=1, mtime=0)
    if mode % 3 == 1 and len(z) > 10:
        z = z[: 10 + (mode * 7919) % (len(z) - 10)]
    elif mode % 3 == 2 and len(z) > 10:
        i = 10 + (mode * 7919) % (len(z) - 10)
        z = z[:i] + bytes([z[i] ^ (mode | 1)]) + z[i + 1 :]
    capture_file(z)


# -- frames: link layers, IP, fragments, tunnels (the in-memory reader pieces, both flow tables) --------------------

LINKTYPES = [*sorted(fr.SUPPORTED_LINKTYPES), 147]  # 147: a user link type, unsupported


def _flow_key(f: Flow) -> tuple[Any, ...]:
    ends = sorted([(f.a_ip, f.a_port), (f.b_ip, f.b_port)])
    counts = (f.pkts_ab + f.pkts_ba, f.bytes_ab + f.bytes_ba, f.fragments, f.stun, f.rtp, f.dtls)
    return (f.proto, tuple(ends), *counts, f.hostname or "", f.app_protocol or "")


def frames_target(data: bytes, linktype: int | None = None) -> None:
    """Frames (records: selector = link type unless fixed) through the columnar and the per-packet decoders and flow tables.

    Both must take every frame without raising and agree on skips and flows (the
    columnar table promises the per-packet table's flows, field for field, when
    timestamps do not go backwards; here they never do).
    """
    recs = records(data)
    if not recs:
        return
    lts = [linktype if linktype is not None else LINKTYPES[sel % len(LINKTYPES)] for sel, _, _ in recs]
    ts: list[float] = []
    t = TS0
    for _, step, _ in recs:
        t += step_seconds(step)
        ts.append(t)
    frs = [b for _, _, b in recs]
    offs: list[int] = []
    pos = 0
    for b in frs:
        offs.append(pos)
        pos += len(b)
    i64 = np.int64
    caplen = np.asarray([len(b) for b in frs], i64)
    batch = FrameBatch(
        b"".join(frs), np.asarray(ts, np.float64), np.asarray(lts, i64), np.asarray(offs, i64), caplen, caplen.copy(), np.zeros(len(frs), i64)
    )
    col_flows: list[Flow] = []
    col_skipped: Counter[str] = Counter()
    table = ColumnarFlowTable(col_flows.append, idle_timeout=120.0)
    table.add_batch(decode_batch(batch, col_skipped))
    table.flush()

    pkt_flows: list[Flow] = []
    pkt_skipped: Counter[str] = Counter()
    ft = FlowTable(pkt_flows.append, idle_timeout=120.0)
    for lt, b, when in zip(lts, frs, ts, strict=True):
        r = fr.decode(lt, b)
        if isinstance(r, str):
            pkt_skipped[r] += 1
            continue
        _need(isinstance(r, fr.IPPacket), f"decode returned {type(r).__name__}")
        _need(0 <= r.sport <= 0xFFFF and 0 <= r.dport <= 0xFFFF and r.ip_len >= 0, f"decode: impossible header values {r[3:7]}")
        ft.add(r, when)
    ft.flush()
    _need(col_skipped == pkt_skipped, f"skip counts differ: columnar {dict(col_skipped)} per-packet {dict(pkt_skipped)}")
    a, b2 = sorted(map(_flow_key, col_flows)), sorted(map(_flow_key, pkt_flows))
    _need(a == b2, f"flows differ: columnar {a[:3]} per-packet {b2[:3]}")
    _need(table.orphan_fragments == ft.orphan_fragments, "orphan fragment counts differ")


def link_target(data: bytes) -> None:
    """Every supported link type (and an unsupported one), chosen per frame."""
    frames_target(data)


def ip_target(data: bytes) -> None:
    """Raw IP frames: IPv4 options, IPv6 extension headers, fragments."""
    frames_target(data, fr.LINKTYPE_RAW)


def tunnel_target(data: bytes) -> None:
    """Ethernet frames: VLAN/QinQ tags, PPPoE, GTP-U, IP-in-IP and 6in4."""
    frames_target(data, fr.LINKTYPE_ETHERNET)


# -- dissectors ----------------------------------------------------------------------------------------------------


def _hello(ch: object) -> None:
    if ch is None:
        return
    _need(isinstance(ch, tls.ClientHello), f"ClientHello parser returned {type(ch).__name__}")
    assert isinstance(ch, tls.ClientHello)
    _need(ch.sni is None or (ch.sni.isascii() and ch.sni.isprintable() and 0 < len(ch.sni) <= 255), f"bad SNI {ch.sni!r}")
    _need(all(isinstance(a, str) for a in ch.alpn), "ALPN not text")


def tls_client_hello(data: bytes) -> None:
    """The start of a client TCP stream (TLS records or SSLv2), a bare handshake message, a body (TLS and DTLS)."""
    _hello(tls.parse_client_hello(data))
    _need(isinstance(tls.needs_more(data), bool), "needs_more not a bool")
    _hello(tls.parse_client_hello_message(data))
    _hello(tls.parse_hello_body(data))
    _hello(tls.parse_hello_body(data, dtls=True))


def quic_initial(data: bytes) -> None:
    """Client datagrams (records) fed to one ClientHello assembler, as the flow table does on UDP 443."""
    asm = quic.QuicClientHelloAssembler()
    fed = 0
    for _, _, dgram in records(data, limit=16):
        quic.is_quic_long_header(dgram)
        _hello(asm.feed(dgram))
        fed += 1
    _need(not fed >= quic.MAX_DATAGRAMS or asm.done, "assembler still waiting after MAX_DATAGRAMS datagrams")


def _varint2(v: int) -> bytes:
    return struct.pack("!H", 0x4000 | v)


def seal_initial(payload: bytes, dcid: bytes, pn: int = 0, version: int = quic.VERSION_1) -> bytes:
    """A client Initial packet carrying ``payload`` (frames), encrypted and header-protected as RFC 9001 5 says."""
    keys = quic.initial_keys(dcid, version)
    assert keys is not None
    key, iv, hp = keys
    payload = payload[:16000].ljust(4, b"\x00")
    pn_len = 2
    ptype = 1 if version == quic.VERSION_2 else 0
    first = 0xC0 | (ptype << 4) | (pn_len - 1)
    pn_bytes = pn.to_bytes(pn_len, "big")
    head = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00" + _varint2(pn_len + len(payload) + 16)
    header = head + pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(key).encrypt(nonce, payload, header)
    sample = sealed[4 - pn_len : 20 - pn_len]
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    masked_first = first ^ (mask[0] & 0x0F)
    masked_pn = bytes(b ^ mask[1 + i] for i, b in enumerate(pn_bytes))
    return bytes([masked_first]) + head[1:] + masked_pn + sealed


QUIC_DCID = bytes.fromhex("8394c8f03e515708")


def quic_crypto(data: bytes) -> None:
    """Decrypted Initial payloads (records: CRYPTO/ACK/PADDING frames...), sealed with real Initial keys, then fed.

    Byte mutations of encrypted packets never get past the AEAD tag; this
    target reaches the frame parser and the CRYPTO reassembly behind it.
    The selector's low bit picks QUIC v2, bit 1 coalesces with the previous packet.
    """
    asm = quic.QuicClientHelloAssembler()
    pending = b""
    dgrams: list[bytes] = []
    for i, (sel, _, payload) in enumerate(records(data, limit=16)):
        pkt = seal_initial(payload, QUIC_DCID, pn=i, version=quic.VERSION_2 if sel & 1 else quic.VERSION_1)
        if sel & 2 and pending:
            pending += pkt
        else:
            if pending:
                dgrams.append(pending)
            pending = pkt
    if pending:
        dgrams.append(pending)
    for d in dgrams:
        _need(quic.is_quic_long_header(d), "a sealed Initial is not a long-header packet")
        _hello(asm.feed(d))


def _dns(msg: object) -> None:
    if msg is None:
        return
    _need(isinstance(msg, dns.DnsMessage), f"DNS parser returned {type(msg).__name__}")
    assert isinstance(msg, dns.DnsMessage)
    _need(msg.qname is None or isinstance(msg.qname, str), "qname not text")
    _need(all(isinstance(o, str) and isinstance(a, str) for o, a in msg.answers + msg.cnames), "answers not text")


def dns_udp(data: bytes) -> None:
    """One DNS message (a UDP payload)."""
    _dns(dns.parse_dns(data))


def dns_tcp(data: bytes) -> None:
    """A TCP segment starting with a length-prefixed DNS message."""
    _dns(dns.parse_dns_tcp(data))


def _stun(m: object) -> None:
    if m is None:
        return
    _need(isinstance(m, stun.StunMessage), f"STUN parser returned {type(m).__name__}")
    assert isinstance(m, stun.StunMessage)
    _need(isinstance(stun.method_name(m.method), str), "method name")


def stun_target(data: bytes) -> None:
    """STUN/TURN over UDP (and MS multiplexed TURN), over TCP (plain and RFC 4571), TURN ChannelData, WebRTC demux."""
    _stun(stun.parse_stun(data))
    _stun(stun.parse_stun_tcp(data))
    _need(isinstance(stun.is_channel_data(data), bool) and isinstance(stun.is_channel_data(data, tcp=True), bool), "channel data")
    _need(isinstance(stun.is_ms_multiplexed_turn(data), bool), "ms turn")
    r = webrtc.demux_parsed(data)
    _need(r is None or r[0] in ("stun", "turn_channel", "dtls", "rtp", "rtcp", "zrtp"), f"demux kind {r!r}")


def rtp_rtcp(data: bytes) -> None:
    """RTP and (S)RTCP headers."""
    h = rtp.parse_rtp(data)
    _need(h is None or (isinstance(h, rtp.RtpHeader) and 12 <= h.header_length <= len(data)), f"RTP header {h!r}")
    c = rtp.parse_rtcp(data)
    _need(c is None or (isinstance(c, rtp.RtcpHeader) and 4 <= c.length <= len(data)), f"RTCP header {c!r}")


def dtls_target(data: bytes) -> None:
    """DTLS records of one datagram and the DTLS ClientHello."""
    r = dtls.parse_dtls(data)
    _need(r is None or (isinstance(r, dtls.DtlsRecord) and r.records >= 1), f"DTLS record {r!r}")
    _hello(dtls.parse_dtls_client_hello(data))
    sni = dtls.client_hello_sni(data)
    _need(sni is None or isinstance(sni, str), "DTLS SNI")


def zoom_target(data: bytes) -> None:
    """Zoom's SFU and media encapsulation (server side and peer to peer) and its P2P set-up packets."""
    for side in (True, False):
        z = zoom.parse_zoom(data, server_side=side)
        _need(z is None or isinstance(z, zoom.ZoomPacket), f"Zoom packet {z!r}")
    _need(isinstance(zoom.is_p2p_control(data), bool), "p2p control")


def discord_target(data: bytes) -> None:
    """Discord's voice IP discovery datagram."""
    d = discord.parse_ip_discovery(data)
    _need(d is None or (isinstance(d, discord.IpDiscovery) and 0 <= d.port <= 0xFFFF), f"IP discovery {d!r}")


def http_request(data: bytes) -> None:
    """The request line and headers of the first client segment."""
    r = http_d.parse_request(data)
    _need(r is None or (isinstance(r, http_d.HttpRequest) and r.method.encode() in http_d.METHODS), f"request {r!r}")


# -- body decoders -------------------------------------------------------------------------------------------------


def _decoded(raw: bytes, encoding: str) -> bytes | None:
    first: bytes | None = None
    for partial in (False, True):
        out, err = bodies.decode_content(raw, encoding, BODY_LIMIT, partial=partial)
        _need((out is None) != (err is None), f"decode_content({encoding!r}) returned {type(out).__name__}, {err!r}")
        if out is not None:
            _need(isinstance(out, bytes), "decoded body is not bytes")
            _need(len(out) <= BODY_LIMIT, f"decoded body of {len(out):,} bytes over the {BODY_LIMIT:,} ceiling ({encoding})")
        else:
            _need(isinstance(err, str) and err.startswith("error:"), f"decode error {err!r}")
        if not partial:
            first = out
    return first


def _decoder(encoding: str) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        out = _decoded(data, encoding)
        if out is not None:
            _parsed(out, None)

    run.__doc__ = f"Content-Encoding: {encoding}, then the body parsed."
    return run


CHAINS = ("gzip, br", "br, gzip", "zstd, gzip", "gzip, gzip", "deflate, zstd", "br, br", "identity, gzip", "x-gzip", "gzip, compress", " , gzip,")


def decode_chain(data: bytes) -> None:
    """Chains of content codings (the first byte picks one), undone in reverse order."""
    if data:
        _decoded(data[1:], CHAINS[data[0] % len(CHAINS)])


def _json_like(node: object, depth: int = 0) -> None:
    stack: list[tuple[object, int]] = [(node, depth)]
    while stack:
        n, d = stack.pop()
        if isinstance(n, dict):
            stack.extend((v, d + 1) for v in n.values())
        elif isinstance(n, list | tuple):
            stack.extend((v, d + 1) for v in n)
        else:
            _need(n is None or isinstance(n, str | int | float | bytes), f"tree leaf of type {type(n).__name__}")


def _parsed(data: bytes, content_type: str | None, host: str | None = None) -> bodies.ParsedBody:
    p = bodies.parse_body(data, content_type, host)
    _need(isinstance(p, bodies.ParsedBody) and isinstance(p.format, str), f"parse_body returned {p!r}"[:300])
    _need(len(p.parts) <= bodies.MAX_PARTS, f"{len(p.parts)} parts kept, over MAX_PARTS")
    _json_like(p.tree)
    _inventory(p.tree)
    return p


def _inventory(tree: object, keep: bool = False) -> None:
    rows = inventory(tree, salt=SALT, keep_values=keep, seen_names={"Alice Example"})
    _need(isinstance(rows, list), "inventory did not return a list")
    for r in rows:
        _need(isinstance(r["key_path"], str) and isinstance(r["count"], int) and isinstance(r["value_hash"], str), f"inventory row {r!r}"[:300])
        _need(all(isinstance(d, str) for d in r["detectors"]), "detectors not text")
        _need(keep or r["value"] is None, "a value kept without keep_values")


def _body(content_type: str | None, host: str | None = None) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        _parsed(data, content_type, host)

    run.__doc__ = f"parse_body with Content-Type {content_type!r}" + (f" to {host}" if host else "") + ", then the inventory."
    return run


def multipart(data: bytes) -> None:
    """Multipart bodies: the boundary from the first line (as the recorder passes the bare type) or from a parameter."""
    p = _parsed(data, "multipart/form-data")
    _need(p.part_count >= len(p.parts) and p.file_count <= p.part_count, "multipart counts")
    first = data[:80].split(b"\n", 1)[0].strip()
    if first.startswith(b"--") and len(first) > 2:
        _parsed(data, "multipart/mixed; boundary=" + first[2:].decode("latin-1"))


def grpc(data: bytes) -> None:
    """gRPC framing (5-byte prefixes) of protobuf messages."""
    _parsed(data, "application/grpc")
    _parsed(data, "application/grpc-web+proto")


def bond(data: bytes) -> None:
    """Microsoft Bond compact binary, by content type and by the Aria collector's host name."""
    _parsed(data, "application/bond-compact-binary")
    _parsed(data, "application/octet-stream", "mobile.pipe.aria.microsoft.com")
    _parsed(data, None, "self.events.data.microsoft.com")


def magic(data: bytes) -> None:
    """Magic-byte sniffing (with the body's stated size) and the content-type-less dispatch."""
    for size in (None, len(data), len(data) * 3 + 7):
        m = bodies.sniff_magic(data, size)
        _need(m is None or isinstance(m, str), "sniff_magic")
    for ctype in (None, "application/octet-stream", "text/plain", "image/png"):
        _parsed(data, ctype)


class _Bytes:
    """A cursor over fuzz input that never fails (zeros once exhausted)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


_KEYS = ("email", "user", "name", "deviceId", "meeting_id", "phone", "title", "chat", "message", "", "ip", "serial", "1", "\udcff", "a.b", "x" * 300)


def build_tree(data: bytes) -> object:
    """A JSON-like tree from bytes, with what the body parsers can hand the inventory and more.

    Lone surrogates (``\\udcxx``: what ``surrogateescape`` makes of non-UTF-8), huge
    and negative integers, inf/NaN, bytes, protobuf scalars, non-string keys, and
    nesting deeper than the inventory's MAX_DEPTH (up to a few thousand levels).
    """
    src = _Bytes(data)

    def text() -> str:
        n = src.u8()
        raw = src.take(n % 64 if n < 250 else 2000)
        return raw.decode("utf-8", "surrogateescape")

    def node(depth: int) -> object:
        op = src.u8() % 16
        if src.left <= 0 or depth > 3000:
            return None
        if op == 0:
            n = src.u8() % 8
            out: dict[object, object] = {}
            for _ in range(n):
                k = src.u8()
                key: object = _KEYS[k % len(_KEYS)] if k < 200 else (text() if k < 250 else k)
                out[key] = node(depth + 1)
            return out
        if op == 1:
            return [node(depth + 1) for _ in range(src.u8() % 8)]
        if op == 2:  # a deep chain of lists or dicts
            deep = src.u8() * 4
            leaf = node(depth + 1)
            for i in range(deep):
                leaf = [leaf] if i & 1 else {"k": leaf}
            return leaf
        if op in (3, 4):
            return text()
        if op == 5:
            raw = src.take(src.u8() % 48)
            v = int.from_bytes(raw, "big")
            return -v if src.u8() & 1 else v
        if op == 6:
            return struct.unpack("!d", src.take(8).ljust(8, b"\x00"))[0]
        if op == 7:
            return (math.inf, -math.inf, math.nan, 1e308, -0.0, 2**63, 2**64, -(2**63) - 1)[src.u8() % 8]
        if op == 8:
            return bool(src.u8() & 1)
        if op == 9:
            return src.take(src.u8() % 64)
        if op == 10:
            cls = (bodies.Varint, bodies.Fixed32, bodies.Fixed64)[src.u8() % 3]
            return cls(int.from_bytes(src.take(8), "big"))
        if op == 11:
            return (src.u8() * 7919) % 10**12 if src.u8() & 1 else f"{src.u8() * 7919:09d}"  # meeting-number-like
        if op == 12:
            return ("alice@example.com", "+1 415 555 0100", "00:1b:44:11:3a:b7", "123e4567-e89b-12d3-a456-426614174000", "zoom.us/j/12345678901")[
                src.u8() % 5
            ]
        if op == 13:
            return tuple(node(depth + 1) for _ in range(src.u8() % 4))
        return None

    return node(0)


def inventory_target(data: bytes) -> None:
    """The field inventory on trees built from bytes (:func:`build_tree`)."""
    _inventory(build_tree(data), keep=bool(len(data) & 1))


# -- flow files: HAR and .mitm through record_files ----------------------------------------------------------------


def _flow_file(data: bytes, suffix: str) -> None:
    d = scratch()
    src = d / f"case{suffix}"
    src.write_bytes(data)
    out = d / "session"
    shutil.rmtree(out, ignore_errors=True)
    failed = False
    try:
        record_files([src], out, db(), RecorderOptions(session_id="fuzz"))
    except FlowFileError as e:
        _one_line(e)
        failed = True
    for table in ("http", "fields"):
        read_rows(out, table).to_pylist()  # the table and any parts re-read, every value readable (text valid UTF-8)
        _need(failed or (out / f"{table}.parquet").exists(), f"{table}.parquet not written")
    sj = out / "session.json"
    _need(failed or sj.exists(), "session.json not written")
    if sj.exists():
        json.loads(sj.read_text(encoding="utf-8"))


def har(data: bytes) -> None:
    """A HAR file through record_files: only FlowFileError, and the written tables re-read."""
    _flow_file(data, ".har")


def mitm(data: bytes) -> None:
    """A saved mitmproxy flow file (tnetstrings) through record_files: only FlowFileError, and the tables re-read."""
    _flow_file(data, ".mitm")


# -- session folders: a session.json and a table someone hands you, through open_session ---------------------------


def session_folder(data: bytes) -> None:
    """A session folder as the public API opens it: the first byte picks what the rest is, ``session.json`` (even) or
    ``flows.parquet`` beside a valid manifest (odd).  Only the error tree's errors, in one line; a session that opens
    gives a typed manifest and every table, read whole."""
    from egressaudit.errors import EgressAuditError
    from egressaudit.session import open_session
    from egressaudit.session.manifest import Manifest

    out = scratch() / "opened"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    body = data[1:]
    if not data or data[0] % 2 == 0:
        (out / "session.json").write_bytes(body)
    else:
        (out / "session.json").write_text(json.dumps({"session_id": "fuzz", "schema_version": "2.0"}))
        (out / "flows.parquet").write_bytes(body)
    try:
        s = open_session(out)
        _need(isinstance(s.manifest, Manifest), "open_session gave no Manifest")
        for table in ("flows", "http", "fields", "markers"):
            s.frame(table)
    except EgressAuditError as e:
        _one_line(e)


# -- structure-aware mutators (used by fuzz/run.py under atheris) --------------------------------------------------

#: Set by the runner to libFuzzer's own mutator (``atheris.Mutate``); a plain bit flipper otherwise.
byte_mutate: Callable[[bytes, int], bytes] | None = None


def _mutate_bytes(data: bytes, max_size: int, rnd: random.Random) -> bytes:
    if byte_mutate is not None:
        return byte_mutate(data, max_size)
    b = bytearray(data or b"\x00")
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(4)
        i = rnd.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[i] = rnd.choice((0, 0xFF, 0x7F, 0x80, 1))
        elif op == 2:
            del b[i : i + rnd.randint(1, 8)]
            b = b or bytearray(1)
        else:
            b[i:i] = rnd.randbytes(rnd.randint(1, 8))
    return bytes(b[:max_size])


def _pcapng_blocks(data: bytes) -> tuple[str, list[bytes], bytes]:
    """(byte order, complete blocks, trailing bytes that are not a block)."""
    endian = "<"
    if len(data) >= 12 and data[:4] == b"\x0a\x0d\x0d\x0a":
        endian = ">" if data[8:12] == b"\x1a\x2b\x3c\x4d" else "<"
    blocks: list[bytes] = []
    off = 0
    while off + 12 <= len(data):
        blen = struct.unpack_from(endian + "I", data, off + 4)[0]
        if blen < 12 or off + blen > len(data):
            break
        blocks.append(data[off : off + blen])
        off += blen
    return endian, blocks, data[off:]


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def _opt(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng_block(endian: str, rnd: random.Random) -> bytes:
    """A block to insert: interface descriptions with odd timestamp options, packets with odd timestamps, short blocks."""
    frame = rnd.choice(
        (
            bytes.fromhex("45000021000100004011f96ac0a83201c0a832019c4000350009aaaa") + b"x",
            bytes(14) + b"\x08\x00" + bytes.fromhex("450000140001000040060000c0a80001c0a80002"),
            b"",
        )
    )
    kind = rnd.randrange(9)
    if kind == 0:  # IDB with if_tsresol / if_tsoffset
        opts = b""
        if rnd.random() < 0.7:
            opts += _opt(endian, 9, bytes([rnd.choice((0, 1, 2, 6, 9, 10, 0x7F, 0x80, 0x81, 0x82, 0xBF, 0xFF))]))
        if rnd.random() < 0.5:
            opts += _opt(endian, 14, struct.pack(endian + "q", rnd.choice((2**62, -(2**62), 2**63 - 1, -(2**63), 10**12, -1))))
        if rnd.random() < 0.3:
            opts += _opt(endian, 2, "\udcffeth0".encode("utf-8", "surrogateescape"))
        opts += _opt(endian, 0, b"")
        lt = rnd.choice((1, 101, 113, 276, 0, 108, 228, 229, 147, 0xFFFF))
        return _block(endian, 1, struct.pack(endian + "HHI", lt, 0, rnd.choice((0, 65535, 2**32 - 1))) + opts)
    if kind in (1, 2):  # EPB with an extreme timestamp
        hi = rnd.choice((0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 400000, 0x00060000))
        lo = rnd.choice((0, 0xFFFFFFFF, 12345))
        iface = rnd.choice((0, 0, 1, 0xFFFF, 2**32 - 1))
        caplen = len(frame) if rnd.random() < 0.8 else rnd.choice((0xFFFFFFFF, len(frame) + 4, 2**20))
        return _block(endian, 6, struct.pack(endian + "IIIII", iface, hi, lo, caplen, len(frame)) + frame)
    if kind == 3:  # SPB
        return _block(endian, 3, struct.pack(endian + "I", rnd.choice((len(frame), 0, 2**32 - 1))) + frame)
    if kind == 4:  # obsolete PB
        return _block(endian, 2, struct.pack(endian + "HHIIII", rnd.choice((0, 1, 0xFFFF)), 0, 0xFFFFFFFF, 0, len(frame), len(frame)) + frame)
    if kind == 5:  # a 12-byte block of a type that needs a body (EPB, IDB, PB, SPB)
        return _block(endian, rnd.choice((6, 1, 2, 3)), b"")
    if kind == 6:  # a new section, either byte order, odd versions
        e2 = rnd.choice(("<", ">"))
        body = struct.pack(e2 + "IHHq", 0x1A2B3C4D, rnd.choice((1, 2, 0)), rnd.choice((0, 1)), -1)
        return _block(e2, 0x0A0D0D0A, body)
    if kind == 7:  # statistics, name resolution, unknown and custom blocks
        return _block(endian, rnd.choice((5, 4, 0x0BAD, 0x40000BAD, 0x80000001, 0xFFFFFFFF)), rnd.randbytes(rnd.randrange(0, 24)))
    return struct.pack(endian + "II", 6, rnd.choice((0, 4, 8, 13, 2**31))) + rnd.randbytes(rnd.randrange(0, 8))  # a broken length


def mutate_pcapng(data: bytes, max_size: int, seed: int) -> bytes:
    """Block-aware pcapng mutations: edit one block's body (lengths fixed up), insert, drop, repeat or cut blocks."""
    rnd = random.Random(seed)
    endian, blocks, tail = _pcapng_blocks(data)
    op = rnd.randrange(8)
    if not blocks or op == 0:
        return _mutate_bytes(data, max_size, rnd)
    i = rnd.randrange(len(blocks))
    if op in (1, 2):  # the body of one block, lengths fixed up
        b = blocks[i]
        btype = struct.unpack_from(endian + "I", b)[0]
        body = _mutate_bytes(b[8:-4], max(len(b), 64), rnd)
        blocks[i] = _block(endian, btype, body) if btype != 0x0A0D0D0A or len(body) >= 4 else b
    elif op == 3:
        blocks.insert(rnd.randrange(len(blocks) + 1), pcapng_block(endian, rnd))
    elif op == 4 and len(blocks) > 1:
        del blocks[rnd.randrange(1, len(blocks))]
    elif op == 5:
        blocks.insert(i, blocks[i])
    elif op == 6:  # the last block cut short (to 12 bytes or anywhere)
        last = blocks[-1]
        blocks[-1] = last[:12] if rnd.random() < 0.5 else last[: rnd.randrange(len(last))]
        tail = b""
    else:
        blocks.append(pcapng_block(endian, rnd))
    out = b"".join(blocks) + tail
    return out[:max_size]


def mutate_pcap(data: bytes, max_size: int, seed: int) -> bytes:
    """pcap mutations: the global header's magic, snap length and link type, a record header's fields, records cut."""
    rnd = random.Random(seed)
    if len(data) < 24 or rnd.random() < 0.3:
        return _mutate_bytes(data, max_size, rnd)
    le = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    e = "<" if le else ">"
    head, body = bytearray(data[:24]), data[24:]
    offs = []
    off = 0
    while off + 16 <= len(body):
        offs.append(off)
        cap = struct.unpack_from(e + "I", body, off + 8)[0]
        if cap > len(body):
            break
        off += 16 + cap
    op = rnd.randrange(5)
    if op == 0:
        head[0:4] = rnd.choice((b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x34\xcd\xb2\xa1"))
    elif op == 1:
        struct.pack_into(e + "I", head, 16, rnd.choice((0, 1, 65535, 2**31, 2**32 - 1)))
    elif op == 2:
        struct.pack_into(e + "I", head, 20, rnd.choice(LINKTYPES + [0xFFFFFFFF, 0x10000001]))
    elif op == 3 and offs:
        b = bytearray(body)
        o = rnd.choice(offs)
        field = rnd.randrange(4)
        if o + 4 * field + 4 <= len(b):
            struct.pack_into(e + "I", b, o + 4 * field, rnd.choice((0, 0xFFFFFFFF, 0x7FFFFFFF, 1_000_000, 999_999_999, 2**20)))
        body = bytes(b)
    else:
        body = body[: rnd.randrange(len(body) + 1)]
    return (bytes(head) + body)[:max_size]


_HOSTILE: tuple[object, ...] = (
    2**31,
    2**63,
    2**64 + 1,
    -(2**31) - 1,
    -1,
    10**30,
    math.inf,
    -math.inf,
    math.nan,
    1e308,
    "",
    "\udcff\udcfe",
    "app/\udcffjson",
    "\x00",
    "x" * 5000,
    [],
    {},
    None,
    True,
    0,
    "2024-01-01T00:00:00Z",
    "not a date",
    "a=1&" * 2000,
)


def _json_nodes(node: object, path: tuple[Any, ...], out: list[tuple[Any, ...]]) -> None:
    out.append(path)
    if len(out) > 2000:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            _json_nodes(v, (*path, k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _json_nodes(v, (*path, i), out)


def _replace(node: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


def _hostile(rnd: random.Random) -> object:
    if rnd.random() < 0.1:
        v: object = rnd.choice(_HOSTILE)
        for _ in range(rnd.choice((10, 1100))):
            v = [v]
        return v
    return rnd.choice(_HOSTILE)


def mutate_har(data: bytes, max_size: int, seed: int) -> bytes:
    """HAR mutations: one value of the JSON tree replaced by a hostile one (huge ints, inf/NaN, non-UTF-8 text, deep nesting)."""
    rnd = random.Random(seed)
    try:
        doc = json.loads(data.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return _mutate_bytes(data, max_size, rnd)
    if rnd.random() < 0.15:
        return _mutate_bytes(data, max_size, rnd)
    paths: list[tuple[Any, ...]] = []
    _json_nodes(doc, (), paths)
    doc = _replace(doc, rnd.choice(paths[1:] or paths), _hostile(rnd))
    try:
        text = json.dumps(doc, ensure_ascii=False)
    except (ValueError, RecursionError):
        return data
    return text.encode("utf-8", "surrogateescape")[:max_size]


def _tn_nodes(node: object, path: tuple[Any, ...], out: list[tuple[Any, ...]]) -> None:
    out.append(path)
    if len(out) > 4000:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            _tn_nodes(v, (*path, k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _tn_nodes(v, (*path, i), out)


def mutate_mitm(data: bytes, max_size: int, seed: int) -> bytes:
    """.mitm mutations: one value of a flow's tnetstring replaced by a hostile one (of a tnetstring type), or bytes edited."""
    from mitmproxy.io import tnetstring

    rnd = random.Random(seed)
    if rnd.random() < 0.2:
        return _mutate_bytes(data, max_size, rnd)
    try:
        flows = []
        rest = memoryview(data)
        while rest:
            obj, rest = tnetstring.pop(rest)
            flows.append(obj)
    except Exception:  # anything the reader refuses: mutate the bytes instead
        return _mutate_bytes(data, max_size, rnd)
    if not flows:
        return _mutate_bytes(data, max_size, rnd)
    i = rnd.randrange(len(flows))
    paths: list[tuple[Any, ...]] = []
    _tn_nodes(flows[i], (), paths)
    value = rnd.choice(
        (
            2**63,
            2**64,
            -(2**63) - 1,
            -1,
            math.inf,
            math.nan,
            b"\xff\xfe",
            b"",
            "\udcff".encode("utf-8", "surrogateescape"),
            [],
            {},
            None,
            True,
            0,
            b"x" * 3000,
        )
    )
    if isinstance(value, int | float) and not isinstance(value, bool) and rnd.random() < 0.1:
        value = [value] * rnd.randint(1, 4)
    flows[i] = _replace(flows[i], rnd.choice(paths[1:] or paths), value)
    try:
        out = b"".join(tnetstring.dumps(f) for f in flows)
    except (ValueError, TypeError, RecursionError):
        return data
    return out[:max_size]


# -- the registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    fn: Callable[[bytes], None]
    max_len: int = 4096
    #: atheris/libFuzzer dictionary entries (tokens the mutator may insert)
    dictionary: tuple[bytes, ...] = ()
    mutator: Callable[[bytes, int, int], bytes] | None = None

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


_PCAPNG_DICT = (
    b"\x0a\x0d\x0d\x0a",
    b"\x4d\x3c\x2b\x1a",
    b"\x1a\x2b\x3c\x4d",
    b"\x01\x00\x00\x00",
    b"\x06\x00\x00\x00",
    b"\x03\x00\x00\x00",
    b"\x02\x00\x00\x00",
    b"\x05\x00\x00\x00",
    b"\x09\x00\x01\x00",
    b"\x0e\x00\x08\x00",
    b"\xff\xff\xff\xff",
    b"\x0c\x00\x00\x00",
)
_PCAP_DICT = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\x1f\x8b\x08\x00", b"\xff\xff\x00\x00", b"\xff\xff\xff\xff")
_NET_DICT = (
    b"\x08\x00",
    b"\x86\xdd",
    b"\x81\x00",
    b"\x88\xa8",
    b"\x88\x64",
    b"\x00\x21",
    b"\x00\x57",
    b"\x45\x00",
    b"\x60\x00\x00\x00",
    b"\x08\x68",  # 2152 (GTP-U)
    b"\x30\xff",
    b"\x34\xff",
    b"\x01\xbb",
    b"\x00\x35",
    b"\x22\x61",  # 8801
    b"\x0d\x96",  # 3478
    b"\x2c",  # fragment header
    b"\x04",
    b"\x29",
    b"\x11",
    b"\x06",
)
_TLS_DICT = (b"\x16\x03\x01", b"\x16\x03\x03", b"\x01\x00", b"\x00\x00", b"\x00\x10", b"\x00\x2b", b"\x03\x03", b"\xfe\xfd", b"\x80")
_STUN_DICT = (
    b"\x21\x12\xa4\x42",
    b"\x00\x01",
    b"\x01\x01",
    b"\x80\x22",
    b"\x00\x14",
    b"\x80\x08",
    b"\x01\x01",
    b"\xc0\x57",
    b"\xff\x10",
    b"\x40\x00",
)
_HTTP_DICT = (b"GET ", b"POST ", b"CONNECT ", b" HTTP/1.1\r\n", b"Host: ", b"User-Agent: ", b"\r\n\r\n", b"http://", b"[::1]:443")
_JSON_DICT = (b"{", b"}", b"[", b"]", b'"email"', b"1e999", b"NaN", b"Infinity", b"-0", b'"\\ud800"', b"\\u0000", b"null")
_MP_DICT = (
    b"--b\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b"--b--",
    b"Content-Disposition: form-data; ",
    b'name="',
    b'filename="',
    b"filename*=utf-8''",
    b"Content-Type: ",
)
_HAR_DICT = (
    b'"entries"',
    b'"request"',
    b'"response"',
    b'"postData"',
    b'"text"',
    b'"status"',
    b'"headers"',
    b'"startedDateTime"',
    b"2147483648",
    b"1e400",
    b"NaN",
    b'"_id"',
    b'"encoding":"base64"',
)
_MITM_DICT = (b"5:flows,", b"4:http;", b"7:request;", b"8:response;", b"7:content,", b"9:timestamp^", b"99999999999:", b"]", b"}", b"~", b"!", b"^")

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("pcap", capture_file, 65536, _PCAP_DICT + _NET_DICT, mutate_pcap),
        Target("pcapng", capture_file, 65536, _PCAPNG_DICT + _NET_DICT, mutate_pcapng),
        Target("capture_gzip", capture_gzip, 65536, _PCAPNG_DICT + _PCAP_DICT),
        Target("link", link_target, 8192, _NET_DICT),
        Target("ip", ip_target, 8192, _NET_DICT),
        Target("tunnel", tunnel_target, 8192, _NET_DICT),
        Target("tls_client_hello", tls_client_hello, 8192, _TLS_DICT),
        Target("quic_initial", quic_initial, 16384),
        Target("quic_crypto", quic_crypto, 16384, (b"\x06\x00", b"\x02", b"\x03", b"\x01", b"\x00\x00\x00\x00", b"\x40\x00", b"\x1c")),
        Target("dns_udp", dns_udp, 2048, (b"\xc0\x0c", b"\x00\x01\x00\x01", b"\x00\x05", b"\x00\x1c", b"\x03com\x00")),
        Target("dns_tcp", dns_tcp, 2048, (b"\xc0\x0c", b"\x00\x01\x00\x01", b"\x00\x05", b"\x00\x1c")),
        Target("stun", stun_target, 2048, _STUN_DICT),
        Target("rtp_rtcp", rtp_rtcp, 2048, (b"\x80", b"\x90", b"\xa0", b"\xbe\xde", b"\xc8", b"\xc9", b"\xca", b"\xcb")),
        Target("dtls", dtls_target, 4096, (b"\x16\xfe\xfd", b"\x16\xfe\xff", b"\x14\xfe\xfd", b"\x17\xfe\xfc", b"\x01\x00\x00")),
        Target("zoom", zoom_target, 2048, (b"\x05", b"\x0f", b"\x10", b"\x21", b"\x1f\x01\x01\x00\x08\x00\x01\x00\x04\x00", b"\x80")),
        Target("discord", discord_target, 128),
        Target("http_request", http_request, 8192, _HTTP_DICT),
        Target("gzip", _decoder("gzip"), 65536, (b"\x1f\x8b\x08\x00", b"\x00\x00\xff\xff")),
        Target("deflate", _decoder("deflate"), 65536, (b"\x78\x9c", b"\x78\x01", b"\x1f\x8b")),
        Target("br", _decoder("br"), 65536),
        Target("zstd", _decoder("zstd"), 65536, (b"\x28\xb5\x2f\xfd", b"\x50\x2a\x4d\x18")),
        Target("decode_chain", decode_chain, 65536),
        Target("json", _body("application/json"), 16384, _JSON_DICT),
        Target("ndjson", _body("application/x-ndjson"), 16384, _JSON_DICT + (b"\n", b"\x1e")),
        Target("form", _body("application/x-www-form-urlencoded"), 16384, (b"&", b"=", b"%", b"%7B%22", b"data=eyJ", b"[]")),
        Target("multipart", multipart, 16384, _MP_DICT),
        Target("protobuf", _body("application/x-protobuf"), 65536, (b"\x08", b"\x0a", b"\x12", b"\x0d", b"\x09", b"\xff\xff\xff\xff\x0f")),
        Target("grpc", grpc, 65536, (b"\x00\x00\x00\x00", b"\x01\x00\x00\x00")),
        Target("bond", bond, 65536),
        Target("sentry_envelope", _body("application/x-sentry-envelope"), 65536, _JSON_DICT + (b'{"type":"event","length":', b'{"dsn":"')),
        Target("magic", magic, 8192, (b"PK\x03\x04", b"RIFF", b"ftyp", b"\x89PNG", b"%PDF-", b"BM", b"MZ", b"word/")),
        Target("inventory", inventory_target, 4096),
        Target("har", har, 32768, _HAR_DICT, mutate_har),
        Target("mitm", mitm, 32768, _MITM_DICT, mutate_mitm),
        Target("session", session_folder, 32768, _JSON_DICT + (b"PAR1", b'"schema_version"', b'"2.0"', b'"9.0"', b'"1.0"', b'"state"')),
    )
}


def check(name: str, data: bytes) -> None:
    """Run one case of target ``name``; raise on a crash (an exception, :class:`Broken`, or over :data:`CASE_CPU_S`)."""
    target = TARGETS[name]
    start = time.process_time()
    target.fn(bytes(data))
    spent = time.process_time() - start
    if spent > CASE_CPU_S:
        raise Broken(f"{name}: {spent:.2f} s of CPU for {len(data):,} bytes (limit {CASE_CPU_S} s)")


def target_of(path: Path) -> str:
    """The target a corpus or crash file belongs to: the name of its folder."""
    name = path.parent.name
    if name not in TARGETS:
        raise KeyError(f"{path}: folder {name!r} is not a fuzz target ({', '.join(TARGETS)})")
    return name


__all__ = ["TARGETS", "Broken", "Target", "build_tree", "check", "pack_records", "records", "seal_initial", "target_of"]
