"""Audited-client detection (issue 16, point 5): the conferencing vendor whose call the session carries (media, counted
twice, and signalling), never a platform the app merely sends telemetry to, nor the vendor of a public STUN server or of
the client's WebRTC stack; and it says why.

No capture of Viber is among the real captures (../shared/captures: only nDPI's Viber address list mentions it), so the
case is built: a Viber call (its relay at a Viber address of nDPI's list, no Viber signature yet), with libwebrtc's
STUN attributes, a STUN probe to Google's public STUN server, and the Google SDKs such an app embeds (Firebase
Analytics, Crashlytics, static assets).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.classify.party import MIN_MEDIA_SHARE, choose_audited_client, decide_audited_client
from egressaudit.signatures import default_db
from egressaudit.taxonomy import Category
from tests import factories

VIBER_RELAY = "52.0.252.10"  # 52.0.252.0/22, Viber Media in nDPI's ndpi_content_match.c.inc (../shared/reference)
GOOGLE_STUN = "74.125.250.129"  # Google's address space; UDP 19302 is its public STUN port
GOOG_NETWORK_INFO = 0xC057  # a libwebrtc STUN attribute


def _stun_binding(attr: int | None = None) -> bytes:
    attrs = struct.pack("!HHI", attr, 4, 0x00010001) if attr is not None else b""
    return struct.pack("!HHI", 0x0001, len(attrs), 0x2112A442) + os.urandom(12) + attrs


def _udp(src: str, dst: str, sport: int, dport: int, payload: bytes, t: float) -> Packet:
    p = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)
    p.time = t
    return p


def viber_session() -> list[Packet]:
    pkts: list[Packet] = []
    # the call: ICE with libwebrtc's attributes, then RTP both ways for 10 s
    for i in range(3):
        pkts.append(_udp(factories.CLIENT, VIBER_RELAY, 50000, 3478, _stun_binding(GOOG_NETWORK_INFO), 0.1 * i))
    for i in range(500):
        t = 1 + i / 50
        out = struct.pack("!BBHII", 0x80, 111, i, i * 960, 0xA1) + os.urandom(150)
        back = struct.pack("!BBHII", 0x80, 111, i, i * 960, 0xB2) + os.urandom(150)
        pkts += [_udp(factories.CLIENT, VIBER_RELAY, 50000, 3478, out, t), _udp(VIBER_RELAY, factories.CLIENT, 3478, 50000, back, t + 0.01)]
    # a STUN probe to Google's public STUN server, answered
    pkts.append(_udp(factories.CLIENT, GOOGLE_STUN, 50001, 19302, _stun_binding(), 0.5))
    pkts.append(_udp(GOOGLE_STUN, factories.CLIENT, 19302, 50001, _stun_binding(), 0.55))
    # the Google SDKs the app embeds
    pkts += factories.tls_flow("142.250.180.10", "app-measurement.com", 41001, 2.0, body_out=30000, body_in=2000)
    pkts += factories.tls_flow("142.250.180.11", "firebase-settings.crashlytics.com", 41002, 3.0, body_out=20000, body_in=3000)
    pkts += factories.tls_flow("142.250.180.12", "www.gstatic.com", 41003, 4.0, body_out=1000, body_in=80000)
    return pkts


def test_a_viber_call_with_google_sdks_names_no_client(tmp_path: Path) -> None:
    res = analyze([factories.write_pcap(tmp_path / "viber.pcap", viber_session())], AnalyzeOptions())
    rows = res.rows
    call = [r for r in rows if r["remote_ip"] == VIBER_RELAY]
    assert call and all(r["category"] == "media" and r["vendor"] is None for r in call)
    assert "libwebrtc" in call[0]["evidence"]  # its GOOG-* STUN attributes name the client's stack, not Google
    google = {r["category"] for r in rows if r["vendor"] == "google"}
    assert google == {"telemetry", "web_asset", "media"}  # media: the STUN probe
    # the policy before issue 16 (media x2, signalling and telemetry x1, any amount) named Google
    old: dict[str, int] = {}
    for r in rows:
        w = {"media": 2, "signaling": 1, "telemetry": 1}.get(r["category"], 0)
        if r["vendor"] and w:
            old[r["vendor"]] = old.get(r["vendor"], 0) + w * (r["bytes_out"] + r["bytes_in"])
    assert max(old, key=old.__getitem__) == "google"
    s = res.session
    assert (s["audited_client"], s["audited_client_source"]) == (None, None)
    reason = s["audited_client_reason"]
    assert reason.startswith("no conferencing vendor carries the session's media or signalling"), reason
    assert "google's" in reason and "probing" in reason and "telemetry" in reason


def test_a_zoom_call_in_the_same_app_world_names_zoom(tmp_path: Path) -> None:
    pkts = viber_session()
    pkts += factories.tls_flow("170.114.10.10", "us05web.zoom.us", 42001, 0.2, body_out=5000, body_in=9000)
    res = analyze([factories.write_pcap(tmp_path / "zoom.pcap", pkts)], AnalyzeOptions())
    assert res.session["audited_client"] == "zoom" and res.session["audited_client_source"] == "auto"
    assert res.session["audited_client_reason"].startswith("zoom: the most call traffic of the conferencing vendors (")


def test_the_option_wins_and_says_so(tmp_path: Path) -> None:
    res = analyze([factories.write_pcap(tmp_path / "viber.pcap", viber_session())], AnalyzeOptions(client="google"))
    assert (res.session["audited_client"], res.session["audited_client_source"], res.session["audited_client_reason"]) == (
        "google", "option", "named with --client",
    )  # fmt: skip


def test_telemetry_alone_names_no_client() -> None:
    db = default_db()
    c = decide_audited_client([("google", Category.telemetry, 500_000), ("google", "web_asset", 900_000), (None, "unknown", 10)], db)
    assert c.vendor is None
    assert c.reason == (
        "no conferencing vendor carries the session's media or signalling; "
        "not counted: google's 500,000 B of telemetry and 900,000 B of other traffic"
    )


def test_media_under_the_share_is_probing_but_signalling_counts() -> None:
    db = default_db()
    call = (None, "media", 10_000_000)  # a peer-to-peer call: its media reaches no vendor's address
    probe = ("google", "media", int(10_000_000 * MIN_MEDIA_SHARE / 2))
    assert choose_audited_client([call, probe], db) is None
    # a Meet call that went peer to peer: Google carries its signalling
    c = decide_audited_client([call, probe, ("google", "signaling", 300_000)], db)
    assert c.vendor == "google" and c.reason.startswith("google: the most call traffic of the conferencing vendors (300,000 B of signalling)")


def test_media_outweighs_signalling_and_ties_go_to_telemetry_then_order() -> None:
    db = default_db()
    rows = [("microsoft", "signaling", 1_500_000), ("zoom", "media", 800_000), ("microsoft", "telemetry", 10)]
    c = decide_audited_client(rows, db)
    assert c.vendor == "zoom" and "next: microsoft (1,500,000 B of signalling)" in c.reason
    assert choose_audited_client([("zoom", "signaling", 10), ("cisco", "signaling", 10), ("cisco", "telemetry", 1)], db) == "cisco"
    assert choose_audited_client([("zoom", "signaling", 10), ("cisco", "signaling", 10)], db) == "zoom"


def test_analytics_vendors_are_never_the_client() -> None:
    assert choose_audited_client([("amplitude", "signaling", 10**6), ("sentry", "media", 10**6)], default_db()) is None


def test_the_manifest_says_why_that_client(tmp_path: Path) -> None:
    """session.json records the reason beside the client: decided from the session, or named with --client."""
    import egressaudit as ea
    from egressaudit.audit.files import analyze_files

    sample = Path(__file__).resolve().parents[1] / "captures" / "janus-echo"
    auto = analyze_files([sample / "call.pcapng"], tmp_path / "auto", signature_files=[sample / "selfhosted.yaml"], local_nets=["10.77.0.2/32"])
    m = ea.open_session(auto.out).manifest
    assert m.audited_client == "selfhosted" and m.audited_client_source == "auto"
    assert m.audited_client_reason and m.audited_client_reason.startswith("selfhosted: ") and "media" in m.audited_client_reason
    named = analyze_files([sample / "call.pcapng"], tmp_path / "named", client="zoom", local_nets=["10.77.0.2/32"])
    m = ea.open_session(named.out).manifest
    assert (m.audited_client, m.audited_client_source, m.audited_client_reason) == ("zoom", "option", "named by the user (--client)")
