"""Golden tests: every dissector run on the real packets of ../shared/captures/public.

For each capture the test walks every IP packet (frames decoded by
``egressaudit.capture.frames``), hands each UDP/TCP payload to the dissectors
that apply, and summarises what they found: TLS and QUIC server names and
ALPN, DNS answers, STUN methods/classes/vendor attributes, DTLS records, RTP
payload types and SSRCs, RTCP packet types, Zoom media kinds, HTTP hosts.
The summary must equal ``tests/golden/dissect/<capture>.json``; regenerate
with ``EGRESSAUDIT_REGEN_GOLDEN=1`` after checking a difference by hand (for
example against tshark, see ``test_sni_agrees_with_ndpi``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP, IPPacket, decode
from egressaudit.capture.reader import ReadStats, iter_frames
from egressaudit.dissect import discord, dns, dtls, http, quic, rtp, stun, tls, webrtc, zoom
from tests.ndpi_expected import NDPI, SHARED, SKIP_REASON, parse

GOLDEN = Path(__file__).parent / "golden" / "dissect"
REGEN = os.environ.get("EGRESSAUDIT_REGEN_GOLDEN") == "1"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=SKIP_REASON)


def _captures() -> list[Path]:
    if not SHARED.is_dir():
        return []
    return sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def summarise(path: Path) -> dict[str, Any]:
    sni: Counter[str] = Counter()
    alpn: Counter[str] = Counter()
    quic_sni: Counter[str] = Counter()
    dns_answers: set[tuple[str, str]] = set()
    dns_msgs = Counter[str]()
    stun_msgs: Counter[str] = Counter()
    stun_vendors: Counter[str] = Counter()
    stun_software: Counter[str] = Counter()
    demux: Counter[str] = Counter()
    dtls_types: Counter[str] = Counter()
    rtp_pts: Counter[str] = Counter()
    ssrcs: set[int] = set()
    rtcp_types: Counter[str] = Counter()
    zoom_kinds: Counter[str] = Counter()
    http_hosts: Counter[str] = Counter()
    discord_ip: Counter[str] = Counter()
    assemblers: dict[tuple[bytes, int], quic.QuicClientHelloAssembler] = {}
    for frame in iter_frames(path, ReadStats(str(path))):
        pkt = decode(frame.linktype, frame.data)
        if not isinstance(pkt, IPPacket) or not pkt.payload or pkt.frag == 2:
            continue
        pl, sp, dp = pkt.payload, pkt.sport, pkt.dport
        if pkt.proto == PROTO_TCP:
            if 53 in (sp, dp):
                m = dns.parse_dns_tcp(pl)
                if m is not None:
                    dns_msgs["response" if m.is_response else "query"] += 1
                    dns_answers.update(m.answers)
                continue
            ch = tls.parse_client_hello(pl)
            if ch is not None:
                sni[ch.sni or "-"] += 1
                alpn[",".join(ch.alpn) or "-"] += 1
                continue
            req = http.parse_request(pl)
            if req is not None:
                http_hosts[req.host or "-"] += 1
                continue
            st = stun.parse_stun_tcp(pl)
            if st is not None:
                stun_msgs[f"{stun.method_name(st.method)}/{st.cls}"] += 1
            continue
        if pkt.proto != PROTO_UDP:
            continue
        if sp in (53, 5353, 5355) or dp in (53, 5353, 5355):
            m = dns.parse_dns(pl)
            if m is not None:
                dns_msgs["response" if m.is_response else "query"] += 1
                dns_answers.update(m.answers)
                continue
        if 443 in (sp, dp) and (quic.is_quic_long_header(pl) or (pkt.src, sp) in assemblers):
            key = (pkt.src, sp)
            if dp == 443 and quic.is_quic_long_header(pl):
                asm = assemblers.setdefault(key, quic.QuicClientHelloAssembler())
                ch = asm.feed(pl)
                if ch is not None:
                    quic_sni[f"{ch.sni or '-'} alpn={','.join(ch.alpn) or '-'}"] += 1
            demux["quic"] += 1
            continue
        if 8801 <= sp <= 8810 or 8801 <= dp <= 8810:
            zp = zoom.parse_zoom(pl, server_side=True)
            if zp is not None:
                zoom_kinds[f"sfu{zp.sfu_type}/{zp.kind}"] += 1
                if zp.rtp is not None:
                    rtp_pts[f"zoom/{zp.rtp.payload_type}"] += 1
                continue
        kind = webrtc.demux(pl)
        if kind is None:
            zp = zoom.parse_zoom(pl, server_side=False)
            if zp is not None:
                zoom_kinds[f"p2p/{zp.kind}"] += 1
            elif zoom.is_p2p_control(pl):
                zoom_kinds["p2p/control"] += 1
            else:
                disc = discord.parse_ip_discovery(pl)
                if disc is not None:
                    discord_ip[f"{'response' if disc.is_response else 'request'} {disc.address or '-'}"] += 1
            continue
        demux[kind] += 1
        if kind == "stun":
            st = stun.parse_stun(pl)
            assert st is not None
            stun_msgs[f"{stun.method_name(st.method)}/{st.cls}"] += 1
            if st.vendor_hint:
                stun_vendors[st.vendor_hint] += 1
            if st.software:
                stun_software[st.software] += 1
        elif kind == "dtls":
            rec = dtls.parse_dtls(pl)
            assert rec is not None
            dtls_types[f"{rec.content_type}/{dtls.DTLS_VERSIONS.get(rec.version, hex(rec.version))}"] += 1
        elif kind == "rtp":
            h = rtp.parse_rtp(pl)
            assert h is not None
            rtp_pts[str(h.payload_type)] += 1
            ssrcs.add(h.ssrc)
        elif kind == "rtcp":
            c = rtp.parse_rtcp(pl)
            assert c is not None
            rtcp_types[str(c.packet_type)] += 1
    return {
        "tls_sni": dict(sorted(sni.items())),
        "tls_alpn": dict(sorted(alpn.items())),
        "quic_sni": dict(sorted(quic_sni.items())),
        "http_hosts": dict(sorted(http_hosts.items())),
        "dns_messages": dict(sorted(dns_msgs.items())),
        "dns_answers": sorted(f"{n} {a}" for n, a in dns_answers),
        "udp_demux": dict(sorted(demux.items())),
        "stun": dict(sorted(stun_msgs.items())),
        "stun_vendor_attributes": dict(sorted(stun_vendors.items())),
        "stun_software": dict(sorted(stun_software.items())),
        "dtls": dict(sorted(dtls_types.items())),
        "rtp_payload_types": dict(sorted(rtp_pts.items())),
        "rtp_ssrc_count": len(ssrcs),
        "rtcp_packet_types": dict(sorted(rtcp_types.items())),
        "zoom": dict(sorted(zoom_kinds.items())),
        "discord_ip_discovery": dict(sorted(discord_ip.items())),
    }


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_dissectors_match_golden(path: Path) -> None:
    got = summarise(path)
    golden = GOLDEN / f"{path.name}.json"
    if REGEN or not golden.exists():
        if not REGEN:
            pytest.fail(f"no golden file {golden}; run with EGRESSAUDIT_REGEN_GOLDEN=1 and review it")
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text())


@pytest.mark.parametrize("path", [p for p in _captures() if p.parent.name == "ndpi"], ids=lambda p: p.name)
def test_sni_agrees_with_ndpi(path: Path) -> None:
    """Every TLS/QUIC/HTTP server name nDPI reports for a capture is one our dissectors read too."""
    expected = parse(NDPI / "expected" / f"{path.name}.out")
    ndpi_names = {f.sni for f in expected if f.sni and {"TLS", "QUIC", "HTTP"} & set(f.names)}
    got = summarise(path)
    ours = set(got["tls_sni"]) | {k.split(" alpn=")[0] for k in got["quic_sni"]} | set(got["http_hosts"])
    ours = {n.split(":")[0] for n in ours}
    missing = ndpi_names - ours
    assert not missing, f"{path.name}: nDPI read server names we did not: {sorted(missing)}"
