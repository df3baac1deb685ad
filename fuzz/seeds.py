#!/usr/bin/env python3
"""Write the seed corpus: real payloads from the public captures, scapy-built packets, and the issue's reproducers.

    python fuzz/seeds.py            # (re)writes fuzz/corpus/<target>/seed-* and repro-*

Real payloads (ClientHellos, QUIC Initials, STUN, RTP/RTCP, DTLS, DNS, Zoom,
Discord, HTTP requests, link-layer frames) are found in
``../shared/captures/public`` with the project's own reader and dissectors;
without that folder only the built seeds are written.  Files named ``found-*``
(added by ``fuzz/run.py``) are left alone.  Deterministic: the same captures
give the same files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import zstandard

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
sys.path[:0] = [str(FUZZ), str(ROOT)]

import targets as T  # noqa: E402
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR, fragment  # noqa: E402
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, fragment6  # noqa: E402
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether, Loopback  # noqa: E402
from scapy.layers.ppp import PPP, PPPoE  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from egressaudit.capture import frames as fr  # noqa: E402
from egressaudit.capture.reader import ReadStats, iter_frames  # noqa: E402
from egressaudit.dissect import discord, dns, dtls, http, quic, rtp, stun, tls, zoom  # noqa: E402
from tests import factories  # noqa: E402

CORPUS = FUZZ / "corpus"
SHARED = ROOT.parent / "shared" / "captures" / "public"
PER_KIND = 6
MAX_SEED = 2048


def put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# -- pcapng / pcap building ------------------------------------------------------------------------------------------


def shb(e: str = "<") -> bytes:
    return T._block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype: int = 1, opts: bytes = b"", e: str = "<") -> bytes:
    return T._block(e, 1, struct.pack(e + "HHI", linktype, 0, 65535) + opts)


def epb(frame: bytes, hi: int = 0x0005F5E1, lo: int = 0, iface: int = 0, e: str = "<") -> bytes:
    return T._block(e, 6, struct.pack(e + "IIIII", iface, hi, lo, len(frame), len(frame)) + frame)


def pcap(frames: list[bytes], linktype: int = 1, ts: int = 1_700_000_000) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", ts + i, 0, len(f), len(f)) + f
    return out


def opt(code: int, value: bytes) -> bytes:
    return T._opt("<", code, value)


UDP_FRAME = bytes(Ether() / IP(src="192.168.1.2", dst="203.0.113.9") / UDP(sport=5000, dport=53) / Raw(b"\x00\x01\x01\x00\x00\x01" + bytes(6)))


def reproducers() -> None:
    """Every reproducer of issue 11 (captures, flow files, bodies)."""
    end = opt(0, b"")
    for name, code in (("tsresol-10e1", 0x01), ("tsresol-2e0", 0x80), ("tsresol-2e1", 0x81)):
        put("pcapng", f"repro-{name}.pcapng", shb() + idb(1, opt(9, bytes([code])) + end) + epb(UDP_FRAME, hi=0x00060000))
    put("pcapng", "repro-huge-tsoffset.pcapng", shb() + idb(1, opt(14, struct.pack("<q", 2**62)) + end) + epb(UDP_FRAME))
    put("pcapng", "repro-epb-high-word-ffffffff.pcapng", shb() + idb() + epb(UDP_FRAME, hi=0xFFFFFFFF, lo=0xFFFFFFFF))
    good = shb() + idb() + epb(UDP_FRAME)
    put("pcapng", "repro-last-block-12-byte-epb.pcapng", good + T._block("<", 6, b""))
    put("pcapng", "repro-last-block-12-byte-idb.pcapng", good + T._block("<", 1, b""))
    put("pcapng", "repro-last-block-12-byte-pb.pcapng", good + T._block("<", 2, b""))
    z = bytearray(gzip.compress(pcap([UDP_FRAME] * 3), mtime=0))
    z[10] = 0x07  # BFINAL=1, BTYPE=11 (reserved): "invalid block type" in the first deflate block
    put("pcap", "repro-gzip-bad-first-deflate-block.pcap.gz", bytes(z))
    put("capture_gzip", "seed-pcap", b"\x00" + pcap([UDP_FRAME] * 3))
    put("capture_gzip", "seed-pcapng-cut", b"\x01" + good + epb(UDP_FRAME))

    # HAR: non-UTF-8 text, status >= 2^31, inf/NaN times, a query string with many keys
    base = har_doc()
    bad_text = json.dumps(har_doc(header=("x-client", "\udcff\udcfe"), ctype="application/\udcffjson"), ensure_ascii=False)
    put("har", "repro-non-utf8-bytes.har", bad_text.encode("utf-8", "surrogateescape"))
    escaped = har_doc(header=("x-client", "\udcff\udcfe"), ctype="application/\udcffjson", url="https://h\udcff.example/p\udcfe?q=\udcfd")
    escaped["log"]["entries"][0]["request"]["method"] = "P\udcffST"  # type: ignore[index]
    put("har", "repro-non-utf8-text.har", json.dumps(escaped).encode())  # lone surrogates as \\u escapes: valid JSON
    put("har", "repro-status-2e31.har", json.dumps(har_doc(status=2**31)).encode())
    put("har", "repro-status-2e64.har", json.dumps(har_doc(status=2**64)).encode())
    put("har", "repro-time-inf.har", json.dumps(har_doc(time_ms=float("inf"))).encode())
    put("har", "repro-time-nan.har", json.dumps(har_doc(time_ms=float("nan"))).encode())
    put("har", "repro-query-many-keys.har", json.dumps(har_doc(url="https://t.example/c?" + "a&" * 6000)).encode())
    put("har", "seed-post-json.har", json.dumps(base).encode())
    # .mitm: nesting >= 1000, an 11-digit length prefix in a 16-byte file, empty, a flow id that is not a string, NaN times
    from mitmproxy.io import tnetstring

    flow = mitm_state()
    put("mitm", "seed-flow.mitm", tnetstring.dumps(flow))
    sys.setrecursionlimit(20_000)  # tnetstring.dumps recurses once per level
    deep: object = b"x"
    for _ in range(1100):
        deep = [deep]
    put("mitm", "repro-nested-1100.mitm", tnetstring.dumps(deep))
    put("mitm", "repro-nested-1100-in-flow.mitm", tnetstring.dumps({**flow, "metadata": {"x": deep}}))
    put("mitm", "repro-11-digit-length.mitm", b"99999999999:abcd")
    put("mitm", "repro-empty.mitm", b"")
    put("mitm", "repro-id-not-a-string.mitm", tnetstring.dumps({**flow, "id": 12345}))
    r = dict(flow["request"])
    r["timestamp_start"] = float("nan")
    r["timestamp_end"] = float("inf")
    put("mitm", "repro-timestamps-nan-inf.mitm", tnetstring.dumps({**flow, "request": r}))
    r2 = dict(flow["request"])
    r2["headers"] = [[b"content-type", b"application/\xffjson"], [b"x-\xfe", b"\xff"]]
    r2["method"], r2["path"], r2["authority"] = b"P\xffST", b"/\xff?a=\xfe", b"h\xff.example"
    put("mitm", "repro-non-utf8-request.mitm", tnetstring.dumps({**flow, "request": r2}))
    resp = dict(flow["response"])
    resp["status_code"] = 2**31
    put("mitm", "repro-status-2e31.mitm", tnetstring.dumps({**flow, "response": resp}))

    # bodies: 10k-part multipart, many form keys, deep JSON, bombs
    put("multipart", "repro-10k-parts", b"--b\n" + b"\n\n--b\n" * 10_000 + b"--")
    put("form", "repro-many-keys", b"a=&" * 6000)
    put("json", "repro-deep-array", b"[" * 5000)
    put("json", "repro-deep-object", b'{"a":' * 3000 + b"1" + b"}" * 3000)
    put("ndjson", "repro-deep-lines", (b"[" * 1500 + b"]" * 1500 + b"\n") * 3)
    bomb = b"\x00" * (T.BODY_LIMIT * 4)
    put("gzip", "repro-bomb-4x", gzip.compress(bomb, mtime=0))
    put("deflate", "repro-bomb-4x", zlib.compress(bomb, 9))
    put("br", "repro-bomb-64mib", brotli.compress(b"\x00" * (64 << 20)))
    put("zstd", "repro-bomb-64mib", zstandard.ZstdCompressor(level=19).compress(b"\x00" * (64 << 20)))
    put("decode_chain", "repro-bomb-gzip-of-br", b"\x00" + gzip.compress(brotli.compress(b"\x00" * (64 << 20)), mtime=0))
    put("zstd", "seed-two-frames", zstandard.ZstdCompressor().compress(b'{"a":1}') * 2)
    put("gzip", "seed-two-members", gzip.compress(b'{"a":', mtime=0) + gzip.compress(b"1}", mtime=0))
    put("deflate", "seed-raw", zlib.compress(b"a=1&b=2")[2:-4])
    put("br", "seed-json", brotli.compress(b'{"email":"alice@example.com"}'))


def har_doc(
    header: tuple[str, str] = ("x-app", "zoom"),
    ctype: str = "application/json",
    status: int = 200,
    time_ms: float = 12.5,
    url: str = "https://telemetry.example/v1/events?user=alice&sid=1",
) -> dict[str, object]:
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "fuzz", "version": "1"},
            "entries": [
                {
                    "startedDateTime": "2024-05-01T10:00:00.000Z",
                    "time": time_ms,
                    "serverIPAddress": "203.0.113.7",
                    "request": {
                        "method": "POST",
                        "url": url,
                        "httpVersion": "HTTP/1.1",
                        "headers": [{"name": "content-type", "value": ctype}, {"name": header[0], "value": header[1]}],
                        "queryString": [],
                        "cookies": [],
                        "headersSize": -1,
                        "bodySize": 40,
                        "postData": {"mimeType": ctype, "text": '{"email":"alice@example.com","deviceId":"123e4567-e89b-12d3-a456-426614174000"}'},
                    },
                    "response": {
                        "status": status,
                        "statusText": "OK",
                        "httpVersion": "HTTP/1.1",
                        "headers": [{"name": "content-type", "value": "text/plain"}],
                        "cookies": [],
                        "content": {"size": 2, "mimeType": "text/plain", "text": "ok"},
                        "redirectURL": "",
                        "headersSize": -1,
                        "bodySize": 2,
                    },
                    "cache": {},
                    "timings": {"send": 0, "wait": 10, "receive": 2},
                }
            ],
        }
    }


def mitm_state() -> dict[str, object]:
    from mitmproxy import http as mhttp
    from mitmproxy.test import tflow

    f = tflow.tflow(resp=True)
    f.request = mhttp.Request.make(
        "POST", "https://telemetry.example/v1/events?sid=1", b'{"email":"alice@example.com"}', {"content-type": "application/json"}
    )
    f.request.timestamp_start, f.request.timestamp_end = 1_714_557_600.0, 1_714_557_600.1
    return f.get_state()  # type: ignore[no-any-return]


# -- real payloads --------------------------------------------------------------------------------------------------


def real_payloads() -> None:
    if not SHARED.is_dir():
        print(f"{SHARED} absent: no seeds from real captures", file=sys.stderr)
        return
    found: dict[str, dict[object, bytes]] = defaultdict(dict)
    quic_dgrams: dict[tuple[bytes, int], list[bytes]] = defaultdict(list)
    link_frames: dict[int, list[bytes]] = defaultdict(list)
    raw_ip: list[bytes] = []

    def keep(target: str, key: object, data: bytes) -> None:
        if key not in found[target] and len(found[target]) < PER_KIND and len(data) <= MAX_SEED:
            found[target][key] = data

    checks: list[tuple[str, Callable[[bytes], object | None], Callable[[object], object]]] = [
        ("stun", stun.parse_stun, lambda m: (m.method, m.cls, m.vendor_hint, m.classic)),  # type: ignore[attr-defined]
        ("dtls", dtls.parse_dtls, lambda r: (r.content_type, r.handshake_type)),  # type: ignore[attr-defined]
        ("zoom", lambda b: zoom.parse_zoom(b, server_side=True), lambda z: (z.kind, z.sfu_type)),  # type: ignore[attr-defined]
        ("discord", discord.parse_ip_discovery, lambda d: d.is_response),  # type: ignore[attr-defined]
        ("dns_udp", dns.parse_dns, lambda m: (m.is_response, m.qtype, bool(m.cnames))),  # type: ignore[attr-defined]
    ]
    for cap in sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng")):
        for fi, frame in enumerate(iter_frames(cap, ReadStats(str(cap)))):
            if fi < 40 and len(frame.data) <= 600 and len(link_frames[frame.linktype]) < 12:
                link_frames[frame.linktype].append(frame.data)
            pkt = fr.decode(frame.linktype, frame.data)
            if not isinstance(pkt, fr.IPPacket) or not pkt.payload or pkt.frag == 2:
                continue
            r = fr.link_payload(frame.linktype, frame.data)
            if not isinstance(r, str) and len(raw_ip) < 24 and len(frame.data) < 400:
                raw_ip.append(frame.data[r[0] :])
            p = pkt.payload
            if pkt.proto == fr.PROTO_TCP:
                ch = tls.parse_client_hello(p)
                if ch is not None:
                    keep("tls_client_hello", (ch.sni is None, len(ch.alpn), ch.legacy_version), p)
                req = http.parse_request(p)
                if req is not None:
                    keep("http_request", (req.method, req.host is None), p[:MAX_SEED])
                if pkt.sport in (53, 5353) or pkt.dport in (53, 5353):
                    if dns.parse_dns_tcp(p) is not None:
                        keep("dns_tcp", len(found["dns_tcp"]), p)
                continue
            if pkt.proto != fr.PROTO_UDP:
                continue
            if 443 in (pkt.sport, pkt.dport) and quic.is_quic_long_header(p) and pkt.dport == 443:
                flow = (pkt.src, pkt.sport)
                if len(quic_dgrams) < 4 or flow in quic_dgrams:
                    if len(quic_dgrams[flow]) < 2:
                        quic_dgrams[flow].append(p)
            for target, parse, key in checks:
                m = parse(p)
                if m is not None:
                    keep(target, key(m), p)
            h = rtp.parse_rtp(p)
            if h is not None and len(p) <= 400:
                keep("rtp_rtcp", ("rtp", h.payload_type, h.has_extension), p)
            c = rtp.parse_rtcp(p)
            if c is not None:
                keep("rtp_rtcp", ("rtcp", c.packet_type, c.compound), p)
            if dtls.parse_dtls_client_hello(p) is not None:
                keep("tls_client_hello", "dtls", p)
    for target, items in found.items():
        for i, data in enumerate(items.values()):
            put(target, f"seed-real-{i}", data)
    for i, dg in enumerate(list(quic_dgrams.values())[:4]):
        put("quic_initial", f"seed-real-{i}", T.pack_records([(0, 0, d) for d in dg]))
    for lt, frs in sorted(link_frames.items()):
        sel = T.LINKTYPES.index(lt) if lt in T.LINKTYPES else 0
        put("link", f"seed-real-linktype-{lt}", T.pack_records([(sel, 1, f) for f in frs]))
    for i in range(0, len(raw_ip), 8):
        put("ip", f"seed-real-{i // 8}", T.pack_records([(0, 1, b) for b in raw_ip[i : i + 8]]))
    # captures: the head of each real capture, cut at a record/block boundary
    for cap in sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng"))[:10]:
        data = cap.read_bytes()
        if cap.suffix == ".pcap":
            put("pcap", f"seed-real-{cap.stem}.pcap", cut(data, 6000))
        else:
            _, blocks, _ = T._pcapng_blocks(data)
            out = b""
            for b in blocks:
                if len(out) + len(b) > 6000 and len(out) > 0:
                    break
                out += b
            put("pcapng", f"seed-real-{cap.stem}.pcapng", out)


# -- built packets --------------------------------------------------------------------------------------------------


def built() -> None:
    hello = factories.client_hello("zoom.us")
    put("tls_client_hello", "seed-scapy", hello)
    put("tls_client_hello", "seed-scapy-split", hello[:5] + hello[5:60] + b"\x16\x03\x01" + struct.pack("!H", len(hello) - 60) + hello[60:])
    dq = factories.dns_exchange("log.zoom.us", "52.202.62.238")
    for i, p in enumerate(dq):
        payload = bytes(p[UDP].payload)
        put("dns_udp", f"seed-scapy-{i}", payload)
        put("dns_tcp", f"seed-scapy-{i}", struct.pack("!H", len(payload)) + payload)
    put("http_request", "seed-post", b"POST /v1/stats HTTP/1.1\r\nHost: stats.example:8443\r\nUser-Agent: zoom\r\n\r\n")
    put("http_request", "seed-connect", b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n")
    put("http_request", "seed-absolute", b"GET http://a.example/x HTTP/1.0\r\nHost: b\r\n")
    put("stun", "seed-binding", bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("80220004") + b"test")
    put("stun", "seed-channel-data", bytes.fromhex("40000008") + bytes(8))
    put("stun", "seed-tcp-framed", bytes.fromhex("001c000100082112a442") + bytes(12) + bytes.fromhex("80220004") + b"test")
    put(
        "stun",
        "seed-ms-turn",
        bytes.fromhex("ff10001c") + bytes(8) + bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("80080004") + bytes(4),
    )
    put("zoom", "seed-audio", bytes([5, 0, 1, 0, 0, 0, 0, 0, 15]) + bytes(18) + bytes.fromhex("8070000100000001deadbeef") + bytes(40))
    put("zoom", "seed-p2p-control", b"\x1f\x01" + zoom.P2P_CONTROL_TAIL + bytes(20))
    put("discord", "seed-request", struct.pack("!HHI", 1, 70, 0x1234) + bytes(64) + b"\x00\x00")
    put("rtp_rtcp", "seed-rtp-ext", bytes.fromhex("9060000100000001deadbeefbede0001") + b"\x10\xaa\x00\x00" + bytes(20))
    put("rtp_rtcp", "seed-rtcp-sr-rr", bytes.fromhex("80c8000600000001") + bytes(20) + bytes.fromhex("81c9000700000001") + bytes(24))
    # QUIC: CRYPTO frames around a ClientHello, out of order, split, with ACK/PING/PADDING
    msg = hello[5:]
    half = len(msg) // 2

    def crypto(off: int, chunk: bytes) -> bytes:
        return b"\x06" + quic_varint(off) + quic_varint(len(chunk)) + chunk

    put("quic_crypto", "seed-one", T.pack_records([(0, 0, crypto(0, msg) + bytes(40))]))
    put(
        "quic_crypto",
        "seed-split-reordered",
        T.pack_records([(0, 0, b"\x01" + crypto(half, msg[half:])), (2, 0, b"\x02\x00\x00\x00\x00" + crypto(0, msg[:half]))]),
    )
    put("quic_crypto", "seed-v2", T.pack_records([(1, 0, crypto(0, msg) + b"\x00" * 8)]))
    put("quic_initial", "seed-sealed", T.pack_records([(0, 0, T.seal_initial(crypto(0, msg), T.QUIC_DCID))]))
    put("dtls", "seed-client-hello", dtls_hello())
    # frames: every link type, tunnels, IPv4 options, IPv6 extension headers, fragments
    inner = IP(src="10.0.0.1", dst="198.51.100.7") / UDP(sport=40000, dport=443) / Raw(b"\xc0\x00\x00\x00\x01" + bytes(30))
    tcp = IP(src="10.0.0.1", dst="198.51.100.7") / TCP(sport=40001, dport=443, flags="PA") / Raw(hello)
    eth = [
        Ether() / Dot1Q(vlan=7) / inner,
        Ether() / Dot1AD(vlan=3) / Dot1Q(vlan=9) / inner,
        Ether() / PPPoE() / PPP(proto=0x0021) / inner,
        Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=2152, dport=2152) / Raw(bytes.fromhex("30ff00000000000a") + bytes(inner)),
        Ether()
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / UDP(sport=2152, dport=2152)
        / Raw(bytes.fromhex("34ff0000000000010000008501000000") + bytes(inner)),
        Ether() / IP(src="192.0.2.1", dst="192.0.2.2", proto=4) / inner,
        Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=53) / Raw(b"x" * 12),
        Ether() / tcp,
    ]
    put("tunnel", "seed-tunnels", T.pack_records([(0, 1, bytes(p)) for p in eth]))
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    ip_pkts = [
        IP(src="10.0.0.1", dst="198.51.100.7", options=[IPOption_RR()]) / UDP(sport=1, dport=3478) / Raw(b"\x00\x01" + bytes(30)),
        v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / UDP(sport=5353, dport=5353) / Raw(bytes(dq[0][UDP].payload)),
        *fragment(IP(src="10.0.0.1", dst="198.51.100.7") / UDP(sport=7, dport=8801) / Raw(b"z" * 200), fragsize=64),
        *fragment6(v6 / IPv6ExtHdrFragment(id=5) / UDP(sport=9, dport=443) / Raw(b"q" * 300), 150),
        tcp,
    ]
    put("ip", "seed-scapy", T.pack_records([(0, 1, bytes(p)) for p in ip_pkts]))
    lts = {
        fr.LINKTYPE_NULL: Loopback(type=2) / inner,
        fr.LINKTYPE_LOOP: Loopback(type=2) / inner,
        fr.LINKTYPE_LINUX_SLL: CookedLinux(proto=0x0800) / inner,
        fr.LINKTYPE_RAW: inner,
        fr.LINKTYPE_IPV6: v6 / UDP(sport=1, dport=2),
    }
    recs = [(T.LINKTYPES.index(lt), 1, bytes(p)) for lt, p in lts.items()]
    recs.append((T.LINKTYPES.index(fr.LINKTYPE_LINUX_SLL2), 1, struct.pack("!HHIHHBB8s", 0x0800, 0, 1, 1, 1, 0, 6, bytes(8)) + bytes(inner)))
    recs.append((T.LINKTYPES.index(147), 1, bytes(inner)))
    put("link", "seed-every-linktype", T.pack_records(recs))
    # whole captures
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        put(
            "pcap",
            "seed-sample-call.pcap",
            cut(factories.write_pcap(Path(d) / "a.pcap", factories.dns_exchange("zoom.us", "3.7.35.1") + eth_flow()).read_bytes()),
        )
        put(
            "pcapng",
            "seed-sample-call.pcapng",
            factories.write_pcap(Path(d) / "a.pcapng", factories.dns_exchange("zoom.us", "3.7.35.1") + eth_flow(), ng=True).read_bytes(),
        )
    put(
        "pcapng",
        "seed-two-interfaces",
        shb()
        + idb(1)
        + idb(101, opt(9, b"\x09") + opt(0, b""))
        + epb(UDP_FRAME)
        + epb(bytes(inner), iface=1)
        + shb(">")
        + idb(1, e=">")
        + epb(UDP_FRAME, e=">"),
    )
    put("pcap", "seed-linux-sll", pcap([bytes(CookedLinux(proto=0x0800) / inner)] * 2, linktype=113))


def eth_flow() -> list[object]:
    return factories.tls_flow("52.202.62.236", "zoom.us", 40002, 0.2, body_out=1000, body_in=1000)[:5]


def cut(data: bytes, limit: int = 4000) -> bytes:
    """A pcap file's head: the global header and the records that fit in ``limit`` bytes."""
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off = 24
    while off + 16 <= len(data):
        n = 16 + struct.unpack_from(e + "I", data, off + 8)[0]
        if off + n > limit:
            break
        off += n
    return data[:off]


def quic_varint(v: int) -> bytes:
    return bytes([v]) if v < 64 else struct.pack("!H", 0x4000 | v)


def dtls_hello() -> bytes:
    body = b"\xfe\xfd" + bytes(32) + b"\x00" + b"\x00" + b"\x00\x02\xc0\x2b" + b"\x01\x00"
    alpn = b"\x00\x07\x06webrtc"
    body += struct.pack("!H", 4 + len(alpn)) + struct.pack("!HH", 16, len(alpn)) + alpn
    hs = b"\x01" + len(body).to_bytes(3, "big") + b"\x00\x00" + b"\x00\x00\x00" + len(body).to_bytes(3, "big") + body
    return b"\x16\xfe\xff\x00\x00" + bytes(6) + struct.pack("!H", len(hs)) + hs


def bodies() -> None:
    put("json", "seed-event", b'{"event":"join","user":{"email":"alice@example.com","name":"Alice Example"},"meeting_id":"123 456 7890","ts":1.5e9}')
    put("ndjson", "seed-two", b'{"a":1}\n{"b":[1,2,{"c":"x"}]}\n')
    put("form", "seed-mixpanel", b"data=eyJldmVudCI6ImpvaW4iLCJwcm9wZXJ0aWVzIjp7ImRpc3RpbmN0X2lkIjoiYWxpY2UifX0%3D&ip=1")
    put("form", "seed-json-value", b"a=%7B%22x%22%3A1%7D&a=2&b[]=3")
    mp = (
        b'--XyZ\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{"user":"alice"}\r\n'
        b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 x\r\n--XyZ--\r\n"
    )
    put("multipart", "seed-crlf", mp)
    put("multipart", "seed-lf-truncated", mp.replace(b"\r\n", b"\n")[:-12])
    pb = b"\x08\x96\x01\x12\x07testing\x1a\x03\x08\x01\x10\x02\x25\x00\x00\x80\x3f\x29" + bytes(8)
    put("protobuf", "seed-nested", pb)
    put("grpc", "seed-two-frames", b"\x00" + struct.pack("!I", len(pb)) + pb + b"\x00\x00\x00\x00\x00")
    put("bond", "seed-struct", bytes.fromhex("29010a036162630b00") + bytes.fromhex("49e807"))
    env = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"https://k@o1.ingest.example/1"}\n{"type":"event","length":20}\n{"message":"hello!"}\n{"type":"attachment","filename":"a.png","length":8}\n\x89PNG\r\n\x1a\n\n'
    put("sentry_envelope", "seed-event-attachment", env)
    put("sentry_envelope", "seed-no-length", b'{}\n{"type":"session"}\n{"sid":"x","status":"ok"}\n')
    put("magic", "seed-docx", b"PK\x03\x04" + bytes(26) + b"word/document.xml")
    put("magic", "seed-bmp", b"BM" + struct.pack("<I", 64) + bytes(58))
    put("magic", "seed-mp4", b"\x00\x00\x00\x18ftypisom" + bytes(12))
    put("inventory", "seed-tree", bytes([0, 5, 0, 3, 5, 1, 0, 4, 12, 0, 2, 3, 7, 1, 9, 8, 10, 1, 2, 4, 5, 3, 1, 1, 11, 1, 3]) + b"x" * 16)
    put("inventory", "seed-deep", bytes([2, 255, 3, 4, 65, 66, 67, 68]))


def main() -> None:
    for d in CORPUS.glob("*"):
        for p in d.glob("seed-*"):
            p.unlink()
        for p in d.glob("repro-*"):
            p.unlink()
    reproducers()
    built()
    bodies()
    real_payloads()
    total = 0
    for d in sorted(CORPUS.glob("*")):
        files = list(d.glob("*"))
        size = sum(p.stat().st_size for p in files)
        total += size
        print(f"{d.name:<18} {len(files):>3} files {size / 1024:>7.1f} KB")
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(CORPUS.rglob("*")) if p.is_file())).hexdigest()[:12]
    print(f"total {total / 1024:.1f} KB; digest {digest}")
    missing = [t for t in T.TARGETS if not (CORPUS / t).is_dir()]
    if missing:
        print(f"targets without seeds: {', '.join(missing)}")


if __name__ == "__main__":
    main()
