"""Payload inspection: the evidence a flow's first packets carry, read by the dissectors of this package.

:class:`Evidence` is what a flow learns from its payloads (host name, ALPN,
STUN/RTP/RTCP/DTLS counts, media kinds, vendor hints); the flow tables of
:mod:`egressaudit.flows` keep one per flow (their ``Flow`` extends it) and hand
payloads to :class:`Inspector`, which picks the dissectors by transport, port
and first bytes.  Nothing here counts packets or bytes: that is the flow
table's job.
"""

from __future__ import annotations

import socket
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP
from egressaudit.dissect import discord as discord_d
from egressaudit.dissect import dns as dns_d
from egressaudit.dissect import http as http_d
from egressaudit.dissect import quic as quic_d
from egressaudit.dissect import stun as stun_d
from egressaudit.dissect import tls as tls_d
from egressaudit.dissect import webrtc
from egressaudit.dissect import zoom as zoom_d
from egressaudit.dissect.rtp import RtpHeader

TLS_BUFFER_MAX = 16384
DNS_PORTS = dns_d.PORTS  # (dissected: DNS in clear)
ZOOM_PORTS = range(8801, 8811)

_EMPTY: frozenset[Any] = frozenset()
T = TypeVar("T")


def _added(values: AbstractSet[T], value: T) -> AbstractSet[T]:
    """``values`` with ``value`` in it: a new set the first time (``values`` is the shared empty one), then in place.

    (A copy per new value would be quadratic: a hostile flow sends a new RTP SSRC in every packet.)
    """
    if isinstance(values, set):
        values.add(value)
        return values
    return {*values, value}


class Evidence:
    """What the payloads of one flow showed.  ``proto`` is the IP protocol the payloads came over."""

    __slots__ = (
        "proto", "hostname", "hostname_source", "dns_name", "alpn", "app_protocol",
        "stun", "rtp", "rtcp", "dtls", "pts", "ssrcs", "media_kinds", "vendor_hints",
        "tls_buf", "tls_done", "quic", "http_host", "dns_query",
    )  # fmt: skip

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.hostname: str | None = None
        self.hostname_source: str | None = None
        self.dns_name: str | None = None
        self.alpn: tuple[str, ...] = ()
        self.app_protocol: str | None = None
        self.stun = self.rtp = self.rtcp = self.dtls = 0
        # most flows carry none of these: the sets are made on first use (4 empty sets would double a flow's size)
        self.pts: AbstractSet[int] = _EMPTY
        self.ssrcs: AbstractSet[int] = _EMPTY
        self.media_kinds: AbstractSet[str] = _EMPTY
        self.vendor_hints: AbstractSet[str] = _EMPTY
        self.tls_buf = b""
        self.tls_done = False
        self.quic: quic_d.QuicClientHelloAssembler | None = None
        self.http_host: str | None = None
        self.dns_query: str | None = None

    def note_rtp(self, h: RtpHeader) -> None:
        self.rtp += 1
        if h.payload_type not in self.pts:
            self.pts = _added(self.pts, h.payload_type)
        if h.ssrc not in self.ssrcs:
            self.ssrcs = _added(self.ssrcs, h.ssrc)

    def hint(self, vendor: str) -> None:
        """A vendor named by the payload (STUN attributes, Zoom or Discord framing)."""
        if vendor not in self.vendor_hints:
            self.vendor_hints = _added(self.vendor_hints, vendor)

    def media_kind(self, kind: str) -> None:
        if kind not in self.media_kinds:
            self.media_kinds = _added(self.media_kinds, kind)

    def set_hostname(self, name: str | None, source: str) -> None:
        if name and self.hostname is None:
            self.hostname = name.lower().rstrip(".")
            self.hostname_source = source


class Inspector:
    """Reads the evidence of a flow from the payloads of its first packets (see the module docstring).

    DNS answers are handed to :meth:`dns_answer`; the flow table keeps the
    latest name of each address and gives it to the flows that start later.
    """

    def dns_answer(self, packed: bytes, name: str) -> None:
        raise NotImplementedError

    # -- evidence ------------------------------------------------------------
    def inspect(self, flow: Evidence, payload: bytes, sport: int, dport: int, from_client: bool) -> None:
        if flow.proto == PROTO_TCP:
            self._inspect_tcp(flow, payload, from_client, sport, dport)
        elif flow.proto == PROTO_UDP:
            self._inspect_udp(flow, payload, from_client, sport, dport)

    def _inspect_tcp(self, flow: Evidence, payload: bytes, from_client: bool, sp: int, dp: int) -> None:
        if sp in DNS_PORTS or dp in DNS_PORTS:
            msg = dns_d.parse_dns_tcp(payload)
            if msg is not None:
                flow.app_protocol = "dns"
                self._note_dns(flow, msg)
            return
        if not from_client or flow.tls_done:
            return
        if not flow.tls_buf:
            first = payload[0]
            if first == 0x16:
                flow.app_protocol = "tls"
            elif 0x41 <= first <= 0x5A:
                req = http_d.parse_request(payload)
                flow.tls_done = True
                if req is not None:
                    flow.app_protocol = "http"
                    flow.http_host = req.host
                    flow.set_hostname(_strip_port(req.host), "http_host")
                return
            else:
                st = stun_d.parse_stun_tcp(payload)
                if st is not None:
                    flow.app_protocol = "stun"
                    flow.stun += 1
                    if st.vendor_hint:
                        flow.hint(st.vendor_hint)
                    return
                if _rtp_over_tcp(flow, payload):
                    return
                flow.tls_done = True
                return
        buf = flow.tls_buf + payload
        ch = tls_d.parse_client_hello(buf)
        if ch is not None:
            flow.tls_done = True
            flow.tls_buf = b""
            flow.set_hostname(ch.sni, "tls_sni")
            flow.alpn = ch.alpn
            return
        if tls_d.needs_more(buf) and len(buf) < TLS_BUFFER_MAX:
            flow.tls_buf = buf
        else:
            flow.tls_done = True
            flow.tls_buf = b""

    def _inspect_udp(self, flow: Evidence, payload: bytes, from_client: bool, sp: int, dp: int) -> None:
        if sp in DNS_PORTS or dp in DNS_PORTS:
            msg = dns_d.parse_dns(payload)
            if msg is not None:
                flow.app_protocol = "dns"
                self._note_dns(flow, msg)
                return
        if (dp == 443 or sp == 443) and flow.app_protocol in (None, "quic"):
            if flow.quic is None and from_client and quic_d.is_quic_long_header(payload):
                flow.quic = quic_d.QuicClientHelloAssembler()
                flow.app_protocol = "quic"
            if flow.quic is not None and from_client and flow.hostname is None:
                ch = flow.quic.feed(payload)
                if ch is not None:
                    flow.set_hostname(ch.sni, "quic_sni")
                    flow.alpn = ch.alpn
            if flow.app_protocol == "quic":
                return
        if sp in ZOOM_PORTS or dp in ZOOM_PORTS:
            zp = zoom_d.parse_zoom(payload, server_side=True)
            if zp is not None:
                self._note_zoom(flow, zp)
                return
        found = webrtc.demux_parsed(payload)
        if found is None:
            zp = zoom_d.parse_zoom(payload, server_side=False)
            if zp is not None and zp.kind in ("audio", "video", "screen_share"):
                self._note_zoom(flow, zp)
            elif zoom_d.is_p2p_control(payload):
                flow.hint("zoom")
                flow.app_protocol = flow.app_protocol or "zoom_p2p"
            elif discord_d.parse_ip_discovery(payload) is not None:
                flow.hint("discord")
                flow.app_protocol = flow.app_protocol or "discord_voice"
            return
        kind, parsed = found
        if isinstance(parsed, stun_d.StunMessage):
            flow.stun += 1
            if parsed.vendor_hint:
                flow.hint(parsed.vendor_hint)
        elif isinstance(parsed, RtpHeader):
            flow.note_rtp(parsed)
        elif kind == "rtcp":
            flow.rtcp += 1
        elif kind == "dtls":
            flow.dtls += 1
        elif kind == "turn_channel":
            flow.stun += 1
        if flow.app_protocol is None or flow.app_protocol == "stun":
            flow.app_protocol = "turn" if kind == "turn_channel" else kind

    @staticmethod
    def _note_zoom(flow: Evidence, zp: zoom_d.ZoomPacket) -> None:
        flow.app_protocol = "zoom_media"
        if zp.kind in ("audio", "video", "screen_share"):
            flow.media_kind(zp.kind)
        if zp.rtp is not None:
            flow.note_rtp(zp.rtp)
        elif zp.kind == "rtcp":
            flow.rtcp += 1
        flow.hint("zoom")

    def _note_dns(self, flow: Evidence, msg: dns_d.DnsMessage) -> None:
        if msg.qname and flow.dns_query is None:
            flow.dns_query = msg.qname.lower().rstrip(".")
        if not msg.is_response:
            return
        # Map each answered address to the name the client asked for (the start of the CNAME chain).
        name = (msg.qname or "").lower().rstrip(".")
        for owner, addr in msg.answers:
            try:
                packed = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
            except OSError:
                continue
            if packed in (b"\x00\x00\x00\x00",):
                continue
            self.dns_answer(packed, name or owner.lower().rstrip("."))


def _rtp_over_tcp(flow: Evidence, data: bytes) -> bool:
    """RTP or RTCP framed by a 2-byte length on TCP (RFC 4571), as RTSP and some SFUs send it."""
    size = int.from_bytes(data[:2], "big")
    if len(data) < 14 or size < 12 or data[2] >> 6 != 2:
        return False
    framed = data[2 : 2 + size]
    found = webrtc.demux_parsed(framed)
    kind = found[0] if found is not None else None
    if found is not None and isinstance(found[1], RtpHeader):
        flow.note_rtp(found[1])
    elif kind == "rtcp":
        flow.rtcp += 1
    else:
        return False
    flow.app_protocol = flow.app_protocol or kind
    return True


def _strip_port(host: str | None) -> str | None:
    if not host:
        return None
    if host.startswith("["):
        return host[1:].split("]")[0]
    if host.count(":") == 1:
        return host.split(":")[0]
    return host
