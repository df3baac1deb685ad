"""Address memory (issue 16, point 4): a name one flow carried (TLS or QUIC SNI, HTTP Host) names the later flows to
the same remote address and port that carry none, with ``hostname_source`` ``earlier_<source>`` and the rule
``...+heuristic/address-memory``; DNS answers keep precedence; nothing is carried to another port, to earlier flows or
from local addresses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.classify.engine import FlowFacts
from egressaudit.classify.memory import AddressMemory
from egressaudit.dissect.tls import server_certificate_name
from tests import factories
from tests.ndpi_expected import NDPI
from tests.test_media_evidence import _quic_call

SERVER = "93.184.216.34"  # public, in no vendor's published range: only a name can name it


def _rows(tmp_path: Path, pkts: list[Packet]) -> list[dict[str, Any]]:
    cap = factories.write_pcap(tmp_path / "c.pcap", pkts)
    return sorted(analyze([cap], AnalyzeOptions()).rows, key=lambda r: r["ts_start"])


def _plain_tcp(server: str, sport: int, dport: int, t: float, first: bytes) -> list[Packet]:
    c2s = Ether() / IP(src=factories.CLIENT, dst=server)
    s2c = Ether() / IP(src=server, dst=factories.CLIENT)
    pkts: list[Packet] = [c2s / TCP(sport=sport, dport=dport, flags="S"), s2c / TCP(sport=dport, dport=sport, flags="SA")]
    pkts += [c2s / TCP(sport=sport, dport=dport, flags="PA") / Raw(first), s2c / TCP(sport=dport, dport=sport, flags="PA") / Raw(os.urandom(300))]
    pkts += [c2s / TCP(sport=sport, dport=dport, flags="FA"), s2c / TCP(sport=dport, dport=sport, flags="FA")]
    for i, p in enumerate(pkts):
        p.time = t + i * 0.01
    return pkts


def test_an_sni_names_a_later_flow_to_the_same_address_and_port(tmp_path: Path) -> None:
    pkts = factories.tls_flow(SERVER, "radcom.webex.com", 40001, 0.0) + factories.tls_flow(SERVER, None, 40002, 5.0)
    named, later = _rows(tmp_path, pkts)
    assert (named["hostname"], named["hostname_source"], named["rule"]) == ("radcom.webex.com", "tls_sni", "cisco/web")
    assert (later["hostname"], later["hostname_source"]) == ("radcom.webex.com", "earlier_tls_sni")
    assert (later["vendor"], later["category"], later["rule"]) == ("cisco", "signaling", "cisco/web+heuristic/address-memory")
    assert f"the name an earlier flow to {SERVER}:443 carried" in later["evidence"], later["evidence"]


def test_not_an_earlier_flow_nor_another_port_nor_a_local_address(tmp_path: Path) -> None:
    pkts = factories.tls_flow(SERVER, None, 40001, 0.0)  # before the name was seen
    pkts += factories.tls_flow(SERVER, "radcom.webex.com", 40002, 1.0)
    pkts += _plain_tcp(SERVER, 40003, 8443, 2.0, os.urandom(200))  # another port
    pkts += factories.tls_flow("192.168.50.20", "printer.local.example", 40004, 3.0)
    pkts += factories.tls_flow("192.168.50.20", None, 40005, 4.0)  # a local address: nothing remembered
    rows = _rows(tmp_path, pkts)
    assert [(r["remote_port"], r["hostname_source"]) for r in rows] == [(443, None), (443, "tls_sni"), (8443, None), (443, "tls_sni"), (443, None)]


def test_a_dns_answer_keeps_precedence_and_the_latest_name_wins(tmp_path: Path) -> None:
    pkts = factories.tls_flow(SERVER, "one.example.org", 40001, 0.0)
    pkts += factories.tls_flow(SERVER, "two.example.org", 40002, 1.0)
    pkts += factories.tls_flow(SERVER, None, 40003, 2.0)
    pkts += factories.dns_exchange("resolved.example.net", SERVER, 53001, 3.0)
    pkts += factories.tls_flow(SERVER, None, 40004, 4.0)
    rows = [r for r in _rows(tmp_path, pkts) if r["remote_port"] == 443]
    assert [(r["hostname"], r["hostname_source"]) for r in rows] == [
        ("one.example.org", "tls_sni"),
        ("two.example.org", "tls_sni"),
        ("two.example.org", "earlier_tls_sni"),
        ("resolved.example.net", "dns"),
    ]
    assert rows[2]["rule"] == "heuristic/unknown"  # no rule matched the name: nothing to say about the rule


def test_an_http_host_names_a_later_flow(tmp_path: Path) -> None:
    pkts = _plain_tcp(SERVER, 40001, 80, 0.0, b"GET /v1/ping HTTP/1.1\r\nHost: log.zoom.us\r\n\r\n")
    pkts += _plain_tcp(SERVER, 40002, 80, 1.0, os.urandom(120))
    first, later = _rows(tmp_path, pkts)
    assert (first["hostname_source"], later["hostname_source"], later["hostname"]) == ("http_host", "earlier_http_host", "log.zoom.us")
    assert (later["vendor"], later["category"], later["rule"]) == ("zoom", "telemetry", "zoom/telemetry-log+heuristic/address-memory")


def test_a_quic_sni_names_a_later_quic_flow_caught_without_its_handshake(tmp_path: Path) -> None:
    resumed = _quic_call("x.example", SERVER, 40444)[2:]  # the same exchange without its Initial (and its answer)
    for p in resumed:
        p.time = float(p.time) + 10
    rows = _rows(tmp_path, _quic_call("sfu-eu.addlive.io", SERVER) + resumed)
    assert [(r["hostname"], r["hostname_source"], r["app_protocol"]) for r in rows] == [
        ("sfu-eu.addlive.io", "quic_sni", "quic"),
        ("sfu-eu.addlive.io", "earlier_quic_sni", "quic"),
    ]
    assert rows[1]["rule"] == "snap/call-media+heuristic/address-memory" and rows[1]["category"] == "media"


def _certificate(cn: str) -> bytes:
    """A self-signed DER certificate for ``cn``, with a subjectAltName after the subject (as real ones have)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Calls"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(7)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False).sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.DER)


def _server_flight(cn: str) -> bytes:
    """TLS 1.2 ServerHello and Certificate in one record."""
    hello = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    der = _certificate(cn)
    certs = len(der).to_bytes(3, "big") + der
    body = b"\x02" + len(hello).to_bytes(3, "big") + hello + b"\x0b" + (len(certs) + 3).to_bytes(3, "big") + len(certs).to_bytes(3, "big") + certs
    return b"\x16\x03\x03" + len(body).to_bytes(2, "big") + body


def _tls_without_sni(server: str, sport: int, t: float, cn: str | None) -> list[Packet]:
    """A TLS connection whose ClientHello has no SNI; the server answers with its certificate when ``cn`` is given."""
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS

    pkts = factories.tls_flow(server, None, sport, t)
    pkts[3][Raw].load = bytes(TLS(msg=[TLSClientHello(ciphers=[0x1301, 0xC02F])]))
    if cn is not None:
        reply = pkts[-3].copy()  # a server segment: its payload becomes the handshake flight
        reply[Raw].load = _server_flight(cn)
        reply.time = float(pkts[3].time) + 0.005
        pkts.insert(4, reply)
    return pkts


def test_a_server_certificate_names_an_sni_less_flow_and_later_ones(tmp_path: Path) -> None:
    pkts = _tls_without_sni(SERVER, 40001, 0.0, "*.webex.com") + _tls_without_sni(SERVER, 40002, 5.0, None)
    first, later = _rows(tmp_path, pkts)
    assert (first["hostname"], first["hostname_source"], first["vendor"], first["rule"]) == ("webex.com", "tls_cert", "cisco", "cisco/web")
    assert (later["hostname"], later["hostname_source"], later["rule"]) == ("webex.com", "earlier_tls_cert", "cisco/web+heuristic/address-memory")


def test_a_certificate_gives_way_to_dns_and_to_an_earlier_sni(tmp_path: Path) -> None:
    pkts = factories.tls_flow(SERVER, "meetings.example.org", 40001, 0.0)
    pkts += _tls_without_sni(SERVER, 40002, 1.0, "*.example.org")  # the earlier SNI is more specific than the wildcard
    pkts += factories.dns_exchange("resolved.example.net", SERVER, 53001, 2.0)
    pkts += _tls_without_sni(SERVER, 40003, 3.0, "*.example.org")  # what the client resolved comes first
    rows = [r for r in _rows(tmp_path, pkts) if r["remote_port"] == 443]
    assert [(r["hostname"], r["hostname_source"]) for r in rows] == [
        ("meetings.example.org", "tls_sni"), ("meetings.example.org", "earlier_tls_sni"), ("resolved.example.net", "dns"),
    ]  # fmt: skip


def test_the_certificate_reader_never_raises() -> None:
    flight = _server_flight("calls.example.com")
    assert server_certificate_name(flight) == "calls.example.com"
    rnd = __import__("random").Random(7)
    for _ in range(3000):
        data = bytearray(flight[: rnd.randrange(1, len(flight) + 1)])
        for _ in range(rnd.randrange(0, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        name = server_certificate_name(bytes(data))
        assert name is None or isinstance(name, str)


def test_the_memory_alone() -> None:
    mem = AddressMemory()
    named = FlowFacts("tcp", SERVER, 443, hostname="a.example", hostname_source="tls_sni")
    dns_named = FlowFacts("tcp", "198.51.100.1", 443, hostname="b.example", hostname_source="dns")
    mem.learn(named)
    mem.learn(dns_named)  # DNS names are the flow table's: not kept here
    assert len(mem) == 1
    bare = FlowFacts("udp", SERVER, 443)
    mem.recall(bare)
    assert (bare.hostname, bare.hostname_source) == ("a.example", "earlier_tls_sni")
    other = FlowFacts("tcp", "198.51.100.1", 443)
    mem.recall(other)
    assert other.hostname is None


@pytest.mark.skipif(not NDPI.is_dir(), reason="real captures not present: ../shared/captures/public")
def test_webex_no_sni_flows_get_the_name_an_earlier_flow_carried() -> None:
    rows = [r for r in analyze([NDPI / "webex.pcap"], AnalyzeOptions()).rows if r["remote_ip"] == "64.68.105.103" and r["remote_port"] == 443]
    recalled = [r for r in rows if r["hostname_source"] == "earlier_tls_sni"]
    assert len(recalled) == 5 and {r["hostname"] for r in recalled} == {"radcom.webex.com"}
    assert all(r["rule"] == "cisco/web+heuristic/address-memory" and r["vendor"] == "cisco" for r in recalled)
    first = min(r["ts_start"] for r in rows if r["hostname_source"] == "tls_sni")
    assert all(r["ts_start"] > first for r in recalled)
