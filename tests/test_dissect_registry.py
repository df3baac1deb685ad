"""The dissector registry: bindings by transport, port and first byte, their order, and the seam it gives.

A first-byte set is either the protocol's rule (RFC 7983's demultiplexing, as
``webrtc.demux`` applies it) or only saves time (Zoom, Discord): such a binding
must refuse (return False, evidence untouched) every payload whose first byte is
outside its set.  Both are checked on the fuzz corpus's real payloads of every
kind, each tried with every first byte.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP, IPPacket
from egressaudit.dissect import __doc__ as package_doc
from egressaudit.dissect import webrtc
from egressaudit.dissect.evidence import Evidence
from egressaudit.dissect.inspect import Inspector
from egressaudit.dissect.registry import ANY_BYTE, REGISTRY, Registry
from egressaudit.flows.table import Flow, FlowTable

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
KINDS = ("dns_udp", "dns_tcp", "dtls", "discord", "http_request", "quic_initial", "rtp_rtcp", "stun", "tls_client_hello", "zoom")
BUILT = [
    b"\x10\x00\x00\x01ZRTP" + bytes(20),  # ZRTP
    b"\x40\x01\x00\x08" + bytes(8),  # TURN ChannelData
    b"\xff\x10\x00\x18" + bytes(8) + bytes.fromhex("000100002112a442") + bytes(12),  # MS-TURN framing
    b"\x1f\x01" + bytes.fromhex("0100080001000400") + bytes(14),  # Zoom P2P set-up
    (14).to_bytes(2, "big") + b"\x80\x60" + bytes(12),  # RTP over TCP (RFC 4571)
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
]
WEBRTC = {"stun": "stun", "zrtp": "zrtp", "dtls": "dtls", "turn_channel": "turn_channel", "rtp_rtcp": "rtp", "ms_turn": "stun"}
SAVES_TIME = {"zoom_sfu", "zoom_p2p_media", "zoom_p2p_control", "discord_ip_discovery"}


class Recorder(Inspector):
    def __init__(self) -> None:
        self.answers: list[tuple[bytes, str]] = []

    def dns_answer(self, packed: bytes, name: str) -> None:
        self.answers.append((packed, name))


def _state(ev: Evidence) -> tuple[Any, ...]:
    return tuple(getattr(ev, k) for k in Evidence.__slots__ if k != "quic") + (ev.quic is None,)


def _samples(per_kind: int = 12) -> list[bytes]:
    out = list(BUILT)
    for kind in KINDS:
        files = sorted((CORPUS / kind).glob("seed-*"))[:per_kind]
        out += [data for f in files if (data := f.read_bytes())]
    out += [data[8:] for data in out if data[0] == 5 and len(data) > 9]  # Zoom SFU media without the SFU header: peer-to-peer media
    return out


def test_the_package_docstring_lists_the_bindings_in_order() -> None:
    assert package_doc is not None
    rows = re.findall(r"^([a-z_0-9]+)\s+(UDP|TCP)\s", package_doc, re.M)
    names = {PROTO_UDP: "UDP", PROTO_TCP: "TCP"}
    assert rows == [(b.name, names[b.transport]) for b in REGISTRY.bindings]


def test_the_webrtc_bindings_demultiplex_as_webrtc_demux() -> None:
    bindings = [b for b in REGISTRY.bindings if b.name in WEBRTC]
    assert [b.name for b in bindings] == list(WEBRTC)
    for data in _samples():
        for x in ANY_BYTE:
            payload = bytes([x]) + data[1:]
            got = next((b.name for b in bindings if x in b.first and b.handler(Recorder(), Evidence(PROTO_UDP), payload, True)), None)
            want = webrtc.demux(payload)
            assert (WEBRTC[got] if got else None) == ("rtp" if want == "rtcp" else want), (x, data[:16])


def test_a_first_byte_set_that_saves_time_leaves_out_only_what_its_dissector_refuses() -> None:
    samples = _samples()
    claimed: dict[str, int] = {}
    for b in REGISTRY.bindings:
        if b.name not in SAVES_TIME:
            continue
        outside = [x for x in ANY_BYTE if x not in b.first]
        for data in samples:
            ev = Evidence(b.transport)
            if data[0] in b.first and b.handler(Recorder(), ev, data, True):
                claimed[b.name] = claimed.get(b.name, 0) + 1
            for x in outside:
                ev = Evidence(b.transport)
                before = _state(ev)
                ins = Recorder()
                assert not b.handler(ins, ev, bytes([x]) + data[1:], True), (b.name, x, data[:16])
                assert _state(ev) == before and not ins.answers, (b.name, x)
    assert set(claimed) == SAVES_TIME, claimed  # each found something in its own set


def _udp_packet(sport: int, dport: int, payload: bytes, src: bytes = b"\x0a\x00\x00\x01", dst: bytes = b"\x0a\x00\x00\x02") -> IPPacket:
    return IPPacket(4, src, dst, PROTO_UDP, sport, dport, 28 + len(payload), payload, 0, 0, 0, -1)


def test_a_new_dissector_is_one_binding() -> None:
    """A registry with one more binding, compiled into a flow table: the new evidence, and the old bindings still in place."""

    def toy(insp: Inspector, flow: Evidence, payload: bytes, from_client: bool) -> bool:
        if payload[1:4] != b"TOY":
            return False
        flow.app_protocol = "toy"
        return True

    reg = Registry()
    reg.bindings = list(REGISTRY.bindings)
    reg.bind("toy", PROTO_UDP, toy, ports=[7777], first=[0x42])

    class ToyTable(FlowTable):
        udp = reg.compile(PROTO_UDP)

    done: list[Flow] = []
    table = ToyTable(done.append)
    table.add(_udp_packet(40000, 7777, b"BTOY" + bytes(20)), 0.0)
    rtp = b"\x80\x60\x00\x01" + bytes(4) + b"\x00\x00\x00\x07" + bytes(20)
    table.add(_udp_packet(40001, 7777, rtp), 0.0)  # RTP on the toy's port: still RTP (the toy refuses its first byte)
    table.flush()
    assert sorted((f.a_port, f.app_protocol, f.rtp) for f in done) == [(40000, "toy", 0), (40001, "rtp", 1)]
    plain: list[Flow] = []
    table2 = FlowTable(plain.append)
    table2.add(_udp_packet(40000, 7777, b"BTOY" + bytes(20)), 0.0)
    table2.flush()
    assert plain[0].app_protocol is None


def test_a_binding_to_both_ports_runs_once_and_in_order() -> None:
    calls: list[str] = []

    def first(insp: Inspector, flow: Evidence, payload: bytes, from_client: bool) -> bool:
        calls.append("first")
        return False

    def second(insp: Inspector, flow: Evidence, payload: bytes, from_client: bool) -> bool:
        calls.append("second")
        return False

    def anywhere(insp: Inspector, flow: Evidence, payload: bytes, from_client: bool) -> bool:
        calls.append("anywhere")
        return True

    reg = Registry()
    reg.bind("first", PROTO_UDP, first, ports=[53, 5353])
    reg.bind("second", PROTO_UDP, second, ports=[5353])
    reg.bind("anywhere", PROTO_UDP, anywhere)

    class T(Recorder):
        udp = reg.compile(PROTO_UDP)

    for sp, dp, want in [(53, 5353, ["first", "second", "anywhere"]), (53, 53, ["first", "anywhere"]), (5353, 9, ["first", "second", "anywhere"]),
                         (9, 9, ["anywhere"])]:  # fmt: skip
        calls.clear()
        T().inspect(Evidence(PROTO_UDP), b"x", sp, dp, True)
        assert calls == want, (sp, dp)


def test_dns_on_tcp_reads_both_directions_and_other_streams_only_the_client_until_decided() -> None:
    ins = Recorder()
    ev = Evidence(PROTO_TCP)
    ins.inspect(ev, b"\x16\x03\x01\x02\x00\x01", 40000, 443, True)  # a ClientHello's first bytes: buffered
    assert (ev.app_protocol, ev.tls_done, len(ev.tls_buf)) == ("tls", False, 6)
    ins.inspect(ev, b"GET / HTTP/1.1\r\n\r\n", 443, 40000, False)  # the server's bytes: not read
    assert (ev.app_protocol, ev.http_host, len(ev.tls_buf)) == ("tls", None, 6)
    ev = Evidence(PROTO_TCP)
    ins.inspect(ev, b"\xf0" * 40, 40000, 8080, True)  # nothing known: the stream is decided with nothing
    assert (ev.app_protocol, ev.tls_done) == (None, True)
    ins.inspect(ev, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", 40000, 8080, True)
    assert ev.app_protocol is None
