"""Small capture factories: real packets built with scapy, written with scapy's writers."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName, TLS_Ext_SupportedGroups
from scapy.layers.tls.handshake import TLSClientHello
from scapy.layers.tls.record import TLS
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, PcapWriter

CLIENT = "192.168.50.10"
RESOLVER = "192.168.50.1"


def client_hello(sni: str) -> bytes:
    ch = TLSClientHello(
        ciphers=[0x1301, 0xC02F], ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())]), TLS_Ext_SupportedGroups(groups=[29])]
    )
    return bytes(TLS(msg=[ch]))


def dns_exchange(name: str, addr: str, sport: int = 53000, t: float = 0.0) -> list[Packet]:
    q = Ether() / IP(src=CLIENT, dst=RESOLVER) / UDP(sport=sport, dport=53) / DNS(id=1, rd=1, qd=DNSQR(qname=name))
    r = (
        Ether()
        / IP(src=RESOLVER, dst=CLIENT)
        / UDP(sport=53, dport=sport)
        / DNS(id=1, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, type="A", rdata=addr, ttl=60))
    )
    q.time, r.time = t, t + 0.01
    return [q, r]


def tls_flow(server: str, sni: str | None, sport: int, t: float, body_out: int = 2000, body_in: int = 6000) -> list[Packet]:
    """A TCP connection: handshake, ClientHello (when sni is given), data each way, FIN."""
    c2s = Ether() / IP(src=CLIENT, dst=server)
    s2c = Ether() / IP(src=server, dst=CLIENT)
    pkts: list[Packet] = [
        c2s / TCP(sport=sport, dport=443, flags="S", seq=100),
        s2c / TCP(sport=443, dport=sport, flags="SA", seq=500, ack=101),
        c2s / TCP(sport=sport, dport=443, flags="A", seq=101, ack=501),
    ]
    hello = client_hello(sni) if sni else os.urandom(200)
    pkts.append(c2s / TCP(sport=sport, dport=443, flags="PA", seq=101, ack=501) / Raw(hello))
    for i in range(0, body_out, 1000):
        pkts.append(c2s / TCP(sport=sport, dport=443, flags="PA") / Raw(b"\x17\x03\x03" + os.urandom(min(1000, body_out - i) - 3)))
    for i in range(0, body_in, 1400):
        pkts.append(s2c / TCP(sport=443, dport=sport, flags="PA") / Raw(b"\x17\x03\x03" + os.urandom(min(1400, body_in - i) - 3)))
    pkts.append(c2s / TCP(sport=sport, dport=443, flags="FA"))
    pkts.append(s2c / TCP(sport=443, dport=sport, flags="FA"))
    for i, p in enumerate(pkts):
        p.time = t + i * 0.01
    return pkts


def rtp_stream(server: str, sport: int, dport: int, t: float, seconds: float = 3.0, pps: int = 50, ssrc: int = 0x1234) -> list[Packet]:
    """Bidirectional RTP (payload type 111, Opus-like sizes) at `pps` packets/s each way."""
    pkts: list[Packet] = []
    n = int(seconds * pps)
    for i in range(n):
        hdr = struct.pack("!BBHII", 0x80, 111, i & 0xFFFF, i * 960, ssrc)
        out = Ether() / IP(src=CLIENT, dst=server) / UDP(sport=sport, dport=dport) / Raw(hdr + os.urandom(120))
        back = (
            Ether()
            / IP(src=server, dst=CLIENT)
            / UDP(sport=dport, dport=sport)
            / Raw(struct.pack("!BBHII", 0x80, 111, i & 0xFFFF, i * 960, ssrc + 1) + os.urandom(100))
        )
        out.time = t + i / pps
        back.time = t + i / pps + 0.002
        pkts += [out, back]
    return pkts


def write_pcap(path: Path, pkts: list[Packet], ng: bool = False) -> Path:
    pkts = sorted(pkts, key=lambda p: float(p.time))
    w = PcapNgWriter(str(path)) if ng else PcapWriter(str(path), linktype=1, sync=True)
    for p in pkts:
        w.write(p)
    w.close()
    return path


def sample_call(path: Path, ng: bool = False) -> Path:
    """A small 'call': DNS, a telemetry TLS flow, a signaling TLS flow, an RTP media stream."""
    pkts: list[Packet] = []
    pkts += dns_exchange("log.zoom.us", "52.202.62.238", 53001, 0.0)
    pkts += tls_flow("52.202.62.238", None, 40001, 0.1, body_out=3000, body_in=1000)  # SNI-less: name from DNS
    pkts += tls_flow("52.202.62.236", "zoom.us", 40002, 0.2)
    pkts += rtp_stream("203.0.113.50", 50000, 3478, 0.5)
    return write_pcap(path, pkts, ng)
