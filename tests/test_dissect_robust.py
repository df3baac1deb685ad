"""Every dissector takes arbitrary bytes: garbage, truncations and bit flips of real packets give None or a value, never an exception."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from scapy.layers.inet import UDP

from egressaudit.dissect import discord, dns, dtls, http, quic, rtp, stun, tls, webrtc, zoom
from tests import factories

PARSERS: dict[str, Callable[[bytes], object]] = {
    "tls.parse_client_hello": tls.parse_client_hello,
    "tls.needs_more": tls.needs_more,
    "quic.feed": lambda b: quic.QuicClientHelloAssembler().feed(b),
    "quic.is_long_header": quic.is_quic_long_header,
    "dns.parse_dns": dns.parse_dns,
    "dns.parse_dns_tcp": dns.parse_dns_tcp,
    "http.parse_request": http.parse_request,
    "stun.parse_stun": stun.parse_stun,
    "stun.parse_stun_tcp": stun.parse_stun_tcp,
    "stun.is_channel_data": stun.is_channel_data,
    "rtp.parse_rtp": rtp.parse_rtp,
    "rtp.parse_rtcp": rtp.parse_rtcp,
    "dtls.parse_dtls": dtls.parse_dtls,
    "webrtc.demux": webrtc.demux,
    "zoom.server": lambda b: zoom.parse_zoom(b, server_side=True),
    "zoom.p2p": lambda b: zoom.parse_zoom(b, server_side=False),
    "zoom.is_p2p_control": zoom.is_p2p_control,
    "discord.parse_ip_discovery": discord.parse_ip_discovery,
}


STUN_BINDING = bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("80220004") + b"test"
ZOOM_AUDIO = bytes([5, 0, 1, 0, 0, 0, 0, 0, 15]) + bytes(18) + bytes.fromhex("8070000100000001deadbeef") + bytes(40)


def _seeds() -> list[bytes]:
    """Valid payloads (built with scapy where it can), to truncate and corrupt."""
    pkts = factories.dns_exchange("zoom.us", "3.7.35.1") + factories.rtp_stream("3.7.35.1", 50000, 8801, 0.0, seconds=0.1)
    seeds = [bytes(p[UDP].payload) for p in pkts if UDP in p]
    return seeds + [factories.client_hello("zoom.us"), STUN_BINDING, ZOOM_AUDIO, b"POST /v1/stats HTTP/1.1\r\nHost: stats.example\r\n\r\n"]


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_never_raises(name: str) -> None:
    parse = PARSERS[name]
    rnd = random.Random(name)
    inputs: list[bytes] = [b"", b"\x00", b"\xff" * 3, bytes(range(256)), b"GET / HTTP/1.1\r\nHost:\r\n"]
    inputs += [rnd.randbytes(rnd.randrange(0, 1500)) for _ in range(300)]
    for seed in _seeds():
        inputs += [seed[:i] for i in range(0, len(seed), max(1, len(seed) // 16))]
        for _ in range(10):
            b = bytearray(seed)
            if b:
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            inputs.append(bytes(b))
    for data in inputs:
        parse(data)  # must not raise
