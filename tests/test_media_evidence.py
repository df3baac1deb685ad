"""Media decided on evidence (issue 16, point 3).

The shape heuristic (sustained two-way UDP) never makes media of QUIC, of UDP 443, of a one-sided flow or of TCP; a
host-name rule never makes a TCP flow media; a QUIC flow is media only with RTP/RTCP multiplexed in it or when its
vendor is known to carry calls over QUIC (Snapchat's ``*.addlive.io``).  Each decision names its evidence.  Synthetic
flows built with scapy, then the real captures that motivated it (a YouTube download over QUIC, a Snapchat call).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.classify.engine import SHAPE_MIN_BYTE_SHARE, FlowFacts, classify, shape_matches, shape_veto
from egressaudit.dissect import quic
from egressaudit.signatures import default_db
from tests import factories
from tests.ndpi_expected import SHARED

CALLS = SHARED.parent / "calls"
SERVER = "198.51.100.80"


def _rows(tmp_path: Path, pkts: list[Packet]) -> list[dict[str, Any]]:
    cap = factories.write_pcap(tmp_path / "c.pcap", pkts)
    return analyze([cap], AnalyzeOptions()).rows


def _udp(src: str, dst: str, sport: int, dport: int, payload: bytes, t: float) -> Packet:
    p = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)
    p.time = t
    return p


def _exchange(sport: int, dport: int, seconds: float, pps: int, up: Any, down: Any, server: str = SERVER) -> list[Packet]:
    """``pps`` datagrams a second from the client (``up(i)``) and as many back (``down(i)``)."""
    pkts = []
    for i in range(int(seconds * pps)):
        t = i / pps
        pkts.append(_udp(factories.CLIENT, server, sport, dport, up(i), t))
        pkts.append(_udp(server, factories.CLIENT, dport, sport, down(i), t + 0.002))
    return pkts


SERVER_CID = bytes.fromhex("5a5a11223344556677")[:8]
CLIENT_CID = bytes.fromhex("c1c2c3c4c5c6c7c8")


def _short(cid: bytes, size: int) -> bytes:
    """An IETF QUIC short-header packet (fixed bit set, spin and key-phase bits varied) of ``size`` bytes."""
    return bytes([0x40 | (size & 0x27)]) + cid + os.urandom(size - 1 - len(cid))


def _download_mid_flow(port: int = 443) -> list[Packet]:
    """A browser's HTTP/3 download caught mid-flow, as issue 16 saw it: short headers only, no SNI, ~93% inbound,
    ~100 packets/s of ~940 B (the download), ACKs back."""
    pkts = []
    for i in range(400):
        t = i / 100
        pkts.append(_udp(SERVER, factories.CLIENT, port, 51000, _short(CLIENT_CID, 940 + i % 3), t))
        if i % 2 == 0:
            pkts.append(_udp(factories.CLIENT, SERVER, 51000, port, _short(SERVER_CID, 70), t + 0.001))
    return pkts


def test_a_quic_download_caught_mid_flow_is_quic_not_media(tmp_path: Path) -> None:
    (r,) = _rows(tmp_path, _download_mid_flow())
    assert r["app_protocol"] == "quic"
    assert r["category"] != "media" and r["rule"] != "heuristic/udp-shape"
    assert "short headers" in r["evidence"] and "not media by its shape" in r["evidence"], r["evidence"]


def test_a_two_way_quic_flow_on_another_port_is_not_media_by_its_shape(tmp_path: Path) -> None:
    """A long header of QUIC v1 says QUIC on any port; the flow's balanced shape then does not make it media."""
    long_v1 = b"\xc3" + struct.pack("!I", quic.VERSION_1) + b"\x08" + SERVER_CID + b"\x00" + os.urandom(300)
    pkts = _exchange(51000, 4433, 4.0, 50, lambda i: long_v1 if i == 0 else _short(SERVER_CID, 160), lambda i: _short(CLIENT_CID, 140))
    (r,) = _rows(tmp_path, pkts)
    assert (r["app_protocol"], r["category"]) == ("quic", "unknown"), r
    assert "quic: long header v1" in r["evidence"] and "QUIC" in r["evidence"]


def test_short_headers_on_another_port_are_not_enough_to_say_quic(tmp_path: Path) -> None:
    """Elsewhere than 443 only a long header of a known version starts QUIC; balanced short-header-like UDP is still
    media by its shape (the shape rule's own case: an unknown client's encrypted call)."""
    pkts = _exchange(51000, 9999, 4.0, 50, lambda i: _short(SERVER_CID, 160), lambda i: _short(CLIENT_CID, 140))
    (r,) = _rows(tmp_path, pkts)
    assert r["app_protocol"] is None and (r["category"], r["rule"]) == ("media", "heuristic/udp-shape"), r
    assert "of the payload bytes the smaller way" in r["evidence"]


def test_udp_443_without_media_headers_is_never_media_by_its_shape(tmp_path: Path) -> None:
    noise = lambda i: b"\x0a" + os.urandom(150)  # noqa: E731 - neither QUIC nor STUN/DTLS/RTP nor Zoom
    (r,) = _rows(tmp_path, _exchange(51000, 443, 4.0, 50, noise, noise))
    assert r["category"] != "media" and "UDP 443" in r["evidence"], r


def test_a_one_sided_udp_flow_is_not_media_by_its_shape(tmp_path: Path) -> None:
    """Packets both ways at call rates, but 95% of the bytes one way: a transfer and its acknowledgements."""
    pkts = _exchange(51000, 9999, 4.0, 50, lambda i: b"\xf0" + os.urandom(900), lambda i: b"\xf0" + os.urandom(40))
    (r,) = _rows(tmp_path, pkts)
    assert r["category"] != "media" and "one-sided" in r["evidence"], r


@pytest.mark.parametrize(("down", "media"), [(200, True), (20, False)])
def test_the_byte_balance_bound(down: int, media: bool) -> None:
    f = FlowFacts(
        "udp", SERVER, 9999, 51000, packets=400, payload_bytes=200 * (1000 + down), duration_s=4.0, packets_out=200, packets_in=200,
        payload_bytes_out=200 * 1000, payload_bytes_in=200 * down,
    )  # fmt: skip
    assert shape_matches(f)
    share = down / (1000 + down)
    assert (share >= SHAPE_MIN_BYTE_SHARE) is media
    assert (shape_veto(f) is None) is media


def _rtcp_rr(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def _q046(cid: bytes, size: int, long: bool) -> bytes:
    if long:
        return b"\xc3Q046\x50" + cid + os.urandom(size - 14)
    return b"\x40" + cid + os.urandom(size - 9)


def test_rtp_multiplexed_with_quic_is_media_and_says_so(tmp_path: Path) -> None:
    """Snapchat's calls: Google QUIC Q046 without a server name, then RTCP on the same flow (nDPI pull request 1147)."""

    def up(i: int) -> bytes:
        return _q046(SERVER_CID, 1350, True) if i == 0 else (_rtcp_rr(0x8728A61E) if i % 2 else _q046(SERVER_CID, 40, False))

    (r,) = _rows(tmp_path, _exchange(42083, 443, 3.0, 10, up, lambda i: _rtcp_rr(0x72973DB0)))
    assert (r["app_protocol"], r["category"], r["rule"]) == ("quic", "media", "heuristic/rtp-in-quic"), r
    assert "multiplexed with QUIC" in r["evidence"] and "quic: long header Q046" in r["evidence"]
    assert r["rtcp_packets"] >= 2


def _seal_initial(frames: bytes, dcid: bytes) -> bytes:
    """A client Initial of QUIC v1 carrying ``frames``, protected as RFC 9001 section 5 says."""
    keys = quic.initial_keys(dcid, quic.VERSION_1)
    assert keys is not None
    key, iv, hp = keys
    frames = frames.ljust(1162, b"\x00")  # PADDING: a client's Initial datagram is at least 1200 bytes
    head = b"\xc1" + struct.pack("!I", quic.VERSION_1) + bytes([len(dcid)]) + dcid + b"\x00\x00" + struct.pack("!H", 0x4000 | (2 + len(frames) + 16))
    pn = b"\x00\x00"
    sealed = AESGCM(key).encrypt(iv, frames, head + pn)
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sealed[2:18]) + enc.finalize()
    return bytes([head[0] ^ (mask[0] & 0x0F)]) + head[1:] + bytes(b ^ mask[1 + i] for i, b in enumerate(pn)) + sealed


def _quic_call(sni: str, server: str = SERVER, sport: int = 40000) -> list[Packet]:
    hello = factories.client_hello(sni)[5:]  # the handshake message, without its TLS record header
    initial = _seal_initial(b"\x06\x00" + struct.pack("!H", 0x4000 | len(hello)) + hello, CLIENT_CID)
    # upload-heavy, ~50 packets/s (issue 16): QUIC datagrams, no RTP visible
    up = lambda i: initial if i == 0 else _short(SERVER_CID, 700)  # noqa: E731
    return _exchange(sport, 443, 4.0, 50, up, lambda i: _short(CLIENT_CID, 200), server)


def test_media_over_quic_to_snapchats_call_servers_is_media(tmp_path: Path) -> None:
    (r,) = _rows(tmp_path, _quic_call("sfu-eu.addlive.io"))
    assert (r["hostname"], r["hostname_source"], r["app_protocol"]) == ("sfu-eu.addlive.io", "quic_sni", "quic")
    assert (r["vendor"], r["category"], r["rule"]) == ("snap", "media", "snap/call-media"), r
    assert "media over QUIC: Snapchat" in r["evidence"]


def test_quic_to_another_vendors_media_host_is_signalling(tmp_path: Path) -> None:
    """discord.media names Discord's voice servers; a QUIC flow there carries no call (Discord's voice is RTP on UDP)."""
    (r,) = _rows(tmp_path, _quic_call("eu-west.discord.media"))
    assert (r["vendor"], r["category"], r["rule"]) == ("discord", "signaling", "discord/voice-by-name+heuristic/signaling"), r
    assert "not known to carry calls over QUIC" in r["evidence"]


def test_discords_voice_websocket_on_tcp_is_signalling(tmp_path: Path) -> None:
    (r,) = _rows(tmp_path, factories.tls_flow("162.159.130.234", "gateway-eu.discord.media", 40123, 0.0))
    assert (r["vendor"], r["category"], r["data_class"]) == ("discord", "signaling", "service_operation"), r
    assert r["rule"] == "discord/voice-by-name+heuristic/signaling"
    assert "host-name rule makes no TCP flow media" in r["evidence"]


def _rtp_over_tcp(segments: int) -> list[Packet]:
    """RTP framed by RFC 4571 on TCP, ``segments`` of them from the client."""
    c2s = Ether() / IP(src=factories.CLIENT, dst=SERVER)
    s2c = Ether() / IP(src=SERVER, dst=factories.CLIENT)
    pkts: list[Packet] = [c2s / TCP(sport=40500, dport=5000, flags="S"), s2c / TCP(sport=5000, dport=40500, flags="SA")]
    pkts.append(c2s / TCP(sport=40500, dport=5000, flags="A"))
    for i in range(segments):
        rtp = struct.pack("!BBHII", 0x80, 96, i, i * 3000, 0xABCD) + os.urandom(160)
        pkts.append(c2s / TCP(sport=40500, dport=5000, flags="PA") / Raw(struct.pack("!H", len(rtp)) + rtp))
    pkts.append(c2s / TCP(sport=40500, dport=5000, flags="PA") / Raw(os.urandom(100)))
    for i, p in enumerate(pkts):
        p.time = i * 0.02
    return pkts


def test_a_websocket_message_to_a_voice_gateway_is_signalling() -> None:
    from egressaudit.classify.http import ExchangeFacts, classify_exchange

    f = ExchangeFacts("gateway-eu.discord.media", "162.159.130.234", 443, "GET", "/?v=4", None, "json", 120, websocket=True)
    v = classify_exchange(f, default_db())
    assert (v.vendor, v.category, v.rule) == ("discord", "signaling", "discord/voice-by-name+heuristic/signaling")
    assert "not real-time media" in v.evidence


def test_rtp_over_tcp_is_media_on_two_packets_not_on_one(tmp_path: Path) -> None:
    (r,) = _rows(tmp_path, _rtp_over_tcp(5))
    assert (r["category"], r["rule"]) == ("media", "heuristic/rtp"), r
    (r,) = _rows(tmp_path, _rtp_over_tcp(1))
    assert r["category"] != "media" and "one RTP-looking segment is not media evidence" in r["evidence"], r


def test_a_host_name_rule_still_makes_udp_media() -> None:
    f = FlowFacts("udp", "66.22.196.10", 50004, 40000, hostname="eu.discord.media", hostname_source="dns", packets=10, duration_s=1.0)
    v = classify(f, default_db())
    assert (v.vendor, v.category, v.rule) == ("discord", "media", "discord/voice-by-name")


def test_the_registry_leaves_rtp_on_a_quic_flow_to_the_rtp_dissector() -> None:
    from egressaudit.capture.frames import PROTO_UDP
    from egressaudit.dissect.evidence import Evidence
    from egressaudit.dissect.inspect import Inspector

    class Quiet(Inspector):
        def dns_answer(self, packed: bytes, name: str) -> None:
            pass

    ev, ins = Evidence(PROTO_UDP), Quiet()
    ins.inspect(ev, _q046(SERVER_CID, 1350, True), 42083, 443, True)
    ins.inspect(ev, b"\x80Q046" + os.urandom(40), 42083, 443, True)  # a long header of the flow's version, fixed bit greased
    rtp = struct.pack("!BBHII", 0x80, 111, 7, 960, 0x1234) + os.urandom(60)
    ins.inspect(ev, rtp, 42083, 443, True)
    ins.inspect(ev, _rtcp_rr(0x1234), 443, 42083, False)
    assert (ev.app_protocol, ev.rtp, ev.rtcp) == ("quic", 1, 1)
    assert ev.quic is not None and ev.quic.form == "long header Q046"


@pytest.mark.parametrize(
    ("datagram", "form"),
    [
        (b"\xc3Q046\x50" + bytes(20), "long header Q046"),
        (bytes.fromhex("0d9370e15e7c446d08") + b"Q035" + bytes(20), "public header Q035"),
        (b"\xc0" + struct.pack("!I", 0xFF00001D) + b"\x08" + bytes(8) + b"\x00" + bytes(20), "long header draft-29"),
        (b"\xc0" + struct.pack("!I", 0xFACEB002) + b"\x08" + bytes(8) + b"\x00" + bytes(20), "long header mvfst 0xfaceb002"),
    ],
)
def test_quic_versions_are_named(datagram: bytes, form: str) -> None:
    w = quic.QuicWire()
    assert w.see(datagram, True, short_headers=False) and w.form == form


def test_random_long_headers_are_not_quic() -> None:
    hits = sum(quic.long_header_version(b"\xf0" + os.urandom(200)) is not None for _ in range(20000))
    assert hits == 0


needs_calls = pytest.mark.skipif(not CALLS.is_dir(), reason="real captures not present: ../shared/captures/calls")


@needs_calls
def test_youtube_over_quic_is_not_media() -> None:
    rows = analyze([CALLS / "youtube_quic.pcap"], AnalyzeOptions()).rows
    assert rows and all(r["app_protocol"] == "quic" for r in rows)
    assert not [r for r in rows if r["category"] == "media"]
    big = max(rows, key=lambda r: r["bytes_in"])
    assert "public header Q035" in big["evidence"] and "not media by its shape" in big["evidence"], big["evidence"]


@needs_calls
def test_the_snapchat_call_is_media() -> None:
    (r,) = analyze([CALLS / "snapchat_call.pcapng"], AnalyzeOptions()).rows
    assert (r["category"], r["rule"], r["app_protocol"]) == ("media", "heuristic/rtp-in-quic", "quic"), r


@needs_calls
def test_no_tcp_flow_of_the_calling_apps_is_media_without_evidence() -> None:
    for cap in sorted(CALLS.glob("*.pcap*")):
        for r in analyze([cap], AnalyzeOptions()).rows:
            if r["transport"] == "tcp" and r["category"] == "media":
                assert r["rtp_packets"] + r["rtcp_packets"] >= 2 or r["stun_packets"], (cap.name, r)
