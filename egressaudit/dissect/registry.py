"""Which dissector reads which payload: bindings by transport, port and first byte, as scapy's ``bind_bottom_up``.

Each binding names a transport, the ports it is bound to (either end's port;
none: any port) and the first payload bytes it can start with (none: any), and a
*handler*: a small function that calls its dissector (a module of this package)
and writes what it found into the flow's
:class:`~egressaudit.dissect.inspect.Evidence`.  A handler returns True when it
*claims* the payload (nothing after it is tried), False to let the next one try.
Adding a dissector is its module, a handler here and one line in :data:`REGISTRY`;
the flow tables, the classification and the schema are not touched as long as the
evidence it gives is evidence a flow already has (a host name, an application
protocol, vendor hints, STUN/RTP/RTCP/DTLS counts, media kinds).

Precedence, for every payload that :class:`~egressaudit.dissect.inspect.Inspector`
is given (the first packets of a flow, then a sample: see
:mod:`egressaudit.flows.table`):

1. The bindings to a port of the packet, in the order of :data:`REGISTRY`.
2. UDP: the bindings to any port, in that order.
   TCP: only the client's bytes (and, of a TLS flow whose client sent no server
   name, the server's handshake records: :func:`tls_server`), and only until the stream is *decided*
   (``Evidence.tls_done``): a ClientHello being reassembled takes the next
   bytes whatever they start with; otherwise the bindings to any port, in that
   order; when none claims the first bytes, the stream is decided with nothing
   found (the rest of it is not read).

Every candidate is confirmed by its own parser.  Where a first-byte set is the
protocol's own rule (RFC 7983's demultiplexing of a WebRTC port by first byte;
a TLS record, 22, or an HTTP method, A-Z, opening a stream) it decides what is
tried; elsewhere (Zoom, Discord) it only leaves out what the parser would refuse
anyway, so it changes nothing but the cost.  :meth:`Registry.compile` turns the bindings into a table per port and
first byte (a dict lookup and a tuple index per payload, no list walked), which
:class:`~egressaudit.dissect.inspect.Inspector` reads.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP
from egressaudit.dissect import discord as discord_d
from egressaudit.dissect import dns as dns_d
from egressaudit.dissect import dtls as dtls_d
from egressaudit.dissect import http as http_d
from egressaudit.dissect import quic as quic_d
from egressaudit.dissect import rtp as rtp_d
from egressaudit.dissect import stun as stun_d
from egressaudit.dissect import tls as tls_d
from egressaudit.dissect import webrtc
from egressaudit.dissect import zoom as zoom_d
from egressaudit.dissect.evidence import AnswerSink, Evidence

__all__ = ["DNS_PORTS", "REGISTRY", "TLS_BUFFER_MAX", "ZOOM_PORTS", "Binding", "Dispatch", "Handler", "Registry", "tls_more", "tls_server"]

TLS_BUFFER_MAX = 16384  # bytes of a TCP stream kept while its ClientHello is incomplete
DNS_PORTS = dns_d.PORTS  # (dissected: DNS in clear)
ZOOM_PORTS = range(8801, 8811)
ANY_BYTE = range(256)
#: QUIC's first bytes with the fixed bit set: short headers (64-127) and long headers (192-255), RFC 9000 section 17
QUIC_FIRST_BYTES = (*range(64, 128), *range(192, 256))

#: (the inspector, for the DNS answers it keeps; the flow's evidence; the payload; sent by the client) -> claimed
Handler = Callable[[AnswerSink, Evidence, bytes, bool], bool]
Chains = tuple[tuple[Handler, ...], ...]  # indexed by the payload's first byte


@dataclass(frozen=True, slots=True)
class Binding:
    """One dissector bound to a transport, to ports (empty: any) and to first payload bytes."""

    name: str
    transport: int
    handler: Handler
    ports: frozenset[int]
    first: frozenset[int]


@dataclass(slots=True)
class Dispatch:
    """The bindings of one transport compiled: for each bound port and for any port, the handlers by first byte.

    ``by_port[p][b]`` lists the handlers bound to port ``p`` that accept first byte ``b`` and, for UDP, then the
    handlers bound to any port (``anywhere[b]``); TCP tries ``anywhere`` separately (see the module docstring).
    """

    by_port: dict[int, Chains]
    anywhere: Chains
    bound: tuple[Binding, ...]
    chain_anywhere: bool
    pairs: dict[tuple[int, int], Chains] = field(default_factory=dict)

    def pair(self, sp: int, dp: int) -> Chains:
        """The handlers when both ports are bound: each binding once, in the registry's order (cached; few pairs exist)."""
        got = self.pairs.get((sp, dp))
        if got is None:
            got = self.pairs[(sp, dp)] = _chains([b for b in self.bound if sp in b.ports or dp in b.ports], self.anywhere, self.chain_anywhere)
        return got


def _chains(bindings: list[Binding], tail: Chains | None, chain_tail: bool) -> Chains:
    return tuple(tuple(b.handler for b in bindings if byte in b.first) + (tail[byte] if tail is not None and chain_tail else ()) for byte in ANY_BYTE)


class Registry:
    """Bindings in order of precedence; :meth:`compile` makes the lookup tables."""

    def __init__(self) -> None:
        self.bindings: list[Binding] = []

    def bind(self, name: str, transport: int, handler: Handler, ports: Iterable[int] = (), first: Iterable[int] = ANY_BYTE) -> None:
        """Bind ``handler`` to ``transport`` (PROTO_TCP/PROTO_UDP), to ``ports`` (either end; none: any) and ``first`` bytes."""
        if transport not in (PROTO_TCP, PROTO_UDP):
            raise ValueError(f"{name}: transport must be TCP or UDP, not {transport}")
        self.bindings.append(Binding(name, transport, handler, frozenset(ports), frozenset(first)))

    def compile(self, transport: int) -> Dispatch:
        bound = tuple(b for b in self.bindings if b.transport == transport and b.ports)
        anywhere = _chains([b for b in self.bindings if b.transport == transport and not b.ports], None, False)
        chain = transport == PROTO_UDP
        ports = sorted({p for b in bound for p in b.ports})
        by_port = {p: _chains([b for b in bound if p in b.ports], anywhere, chain) for p in ports}
        return Dispatch(by_port, anywhere, bound, chain)


# -- handlers: what each dissector's result adds to the evidence ------------------------------------------------


def _note_dns(insp: AnswerSink, flow: Evidence, msg: dns_d.DnsMessage) -> None:
    flow.app_protocol = "dns"
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
        insp.dns_answer(packed, name or owner.lower().rstrip("."))


def dns_udp(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    msg = dns_d.parse_dns(payload)
    if msg is None:
        return False
    _note_dns(insp, flow, msg)
    return True


def dns_tcp(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """DNS over TCP: the whole stream is the DNS port's, in both directions (claims every payload)."""
    msg = dns_d.parse_dns_tcp(payload)
    if msg is not None:
        _note_dns(insp, flow, msg)
    return True


def _quic(flow: Evidence, payload: bytes, from_client: bool, on_443: bool) -> bool:
    """Recognise QUIC (:class:`~egressaudit.dissect.quic.QuicWire`), then claim the flow's QUIC packets and read the
    client's ClientHello from its Initials.  RTP and RTCP multiplexed with QUIC (first byte 128-191 that is not a
    long header of the flow's version: Snapchat's calls) are left to the next bindings."""
    w = flow.quic
    if flow.app_protocol != "quic":
        if flow.app_protocol is not None:
            return False
        if w is None:
            if not on_443 and quic_d.long_header_version(payload) is None:
                return False  # elsewhere only a long header of a known version starts QUIC: no state kept for others
            w = flow.quic = quic_d.QuicWire()
        if not w.see(payload, from_client, short_headers=on_443, any_long_header=on_443):
            return False
        flow.app_protocol = "quic"
    elif w is not None and 0x80 <= payload[0] < 0xC0 and not quic_d.names_version(payload, w.version):
        return False
    if w is not None and w.hello is not None and from_client and flow.hostname is None:
        ch = w.hello.feed(payload)
        if ch is not None:
            flow.set_hostname(ch.sni, "quic_sni")
            flow.alpn = ch.alpn
    return True


def quic_443(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """QUIC on UDP 443 (HTTP/3's port): long headers, Google QUIC's public header, or runs of short headers."""
    return _quic(flow, payload, from_client, on_443=True)


def quic_any(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """QUIC on any other port: a long header of a known version starts it; the flow's short headers are then claimed
    before TURN ChannelData (64-79) could misread one."""
    return _quic(flow, payload, from_client, on_443=False)


def _note_zoom(flow: Evidence, zp: zoom_d.ZoomPacket) -> None:
    flow.app_protocol = "zoom_media"
    if zp.kind in ("audio", "video", "screen_share"):
        flow.media_kind(zp.kind)
    if zp.rtp is not None:
        flow.note_rtp(zp.rtp)
    elif zp.kind == "rtcp":
        flow.rtcp += 1
    flow.hint("zoom")


def zoom_server(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    zp = zoom_d.parse_zoom(payload, server_side=True)
    if zp is None:
        return False
    _note_zoom(flow, zp)
    return True


def _webrtc_protocol(flow: Evidence, kind: str) -> None:
    if flow.app_protocol is None or flow.app_protocol == "stun":
        flow.app_protocol = kind


def _note_stun(flow: Evidence, st: stun_d.StunMessage) -> None:
    flow.stun += 1
    if st.vendor_hint:
        flow.hint(st.vendor_hint)
    _webrtc_protocol(flow, "stun")


def stun_udp(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    st = webrtc.stun_datagram(payload)
    if st is None:
        return False
    _note_stun(flow, st)
    return True


def ms_turn(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    st = webrtc.ms_turn_datagram(payload)
    if st is None:
        return False
    _note_stun(flow, st)
    return True


def zrtp(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    if not webrtc.is_zrtp(payload):
        return False
    _webrtc_protocol(flow, "zrtp")
    return True


def dtls(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    if dtls_d.parse_dtls(payload) is None:
        return False
    flow.dtls += 1
    _webrtc_protocol(flow, "dtls")
    return True


def turn_channel(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    if not stun_d.is_channel_data(payload):
        return False
    flow.stun += 1
    _webrtc_protocol(flow, "turn")
    return True


def rtp_rtcp(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """RTP or RTCP, told apart by the second byte (RFC 5761)."""
    if len(payload) < webrtc.MIN_SIZE:
        return False
    if rtp_d.is_rtcp_type(payload[1]):
        if rtp_d.parse_rtcp(payload) is None:
            return False
        flow.rtcp += 1
        _webrtc_protocol(flow, "rtcp")
        return True
    h = rtp_d.parse_rtp(payload)
    if h is None:
        return False
    flow.note_rtp(h)
    _webrtc_protocol(flow, "rtp")
    return True


def zoom_p2p_media(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """Zoom's media encapsulation without the SFU header (peer-to-peer calls): media only."""
    zp = zoom_d.parse_zoom(payload, server_side=False)
    if zp is None or zp.kind not in ("audio", "video", "screen_share"):
        return False
    _note_zoom(flow, zp)
    return True


def zoom_p2p_control(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    if not zoom_d.is_p2p_control(payload):
        return False
    flow.hint("zoom")
    flow.app_protocol = flow.app_protocol or "zoom_p2p"
    return True


def discord_ip_discovery(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    if discord_d.parse_ip_discovery(payload) is None:
        return False
    flow.hint("discord")
    flow.app_protocol = flow.app_protocol or "discord_voice"
    return True


def tls_more(flow: Evidence, payload: bytes) -> None:
    """The client's next bytes towards a TLS ClientHello (kept up to :data:`TLS_BUFFER_MAX` while it is incomplete)."""
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


def tls_server(flow: Evidence, payload: bytes) -> None:
    """The server's handshake records of a TLS flow without SNI: the certificate's subject names the server."""
    flow.set_hostname(tls_d.server_certificate_name(payload), "tls_cert")


def tls(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """A TLS handshake record (0x16): the ClientHello, reassembled over segments if need be (claims the stream)."""
    flow.app_protocol = "tls"
    tls_more(flow, payload)
    return True


def http_request(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    """An HTTP/1.x request line (a method in capitals): the Host header; the stream is decided either way."""
    req = http_d.parse_request(payload)
    flow.tls_done = True
    if req is not None:
        flow.app_protocol = "http"
        flow.http_host = req.host
        flow.set_hostname(_strip_port(req.host), "http_host")
    return True


def stun_tcp(insp: AnswerSink, flow: Evidence, payload: bytes, from_client: bool) -> bool:
    st = stun_d.parse_stun_tcp(payload)
    if st is None:
        return False
    flow.app_protocol = "stun"
    flow.stun += 1
    if st.vendor_hint:
        flow.hint(st.vendor_hint)
    return True


def rtp_tcp(insp: AnswerSink, flow: Evidence, data: bytes, from_client: bool) -> bool:
    """RTP or RTCP framed by a 2-byte length on TCP (RFC 4571), as RTSP and some SFUs send it."""
    size = int.from_bytes(data[:2], "big")
    if len(data) < 14 or size < 12 or data[2] >> 6 != 2:
        return False
    framed = data[2 : 2 + size]
    found = webrtc.demux_parsed(framed)
    kind = found[0] if found is not None else None
    if found is not None and isinstance(found[1], rtp_d.RtpHeader):
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


# -- the bindings, in order of precedence -------------------------------------------------------------------------

UDP, TCP = PROTO_UDP, PROTO_TCP
REGISTRY = Registry()
_ = REGISTRY.bind
# bound to ports: tried first
_("dns", UDP, dns_udp, ports=DNS_PORTS)
_("quic", UDP, quic_443, ports=[443])
_("zoom_sfu", UDP, zoom_server, ports=ZOOM_PORTS, first=zoom_d.SFU_TYPES)
_("dns_tcp", TCP, dns_tcp, ports=DNS_PORTS)
# UDP on any port: WebRTC's demultiplexing by first byte (RFC 7983), then what the first bytes of other media name
_("stun", UDP, stun_udp, first=webrtc.FIRST_BYTES["stun"])
_("zrtp", UDP, zrtp, first=webrtc.FIRST_BYTES["zrtp"])
_("dtls", UDP, dtls, first=webrtc.FIRST_BYTES["dtls"])
_("quic_any", UDP, quic_any, first=QUIC_FIRST_BYTES)
_("turn_channel", UDP, turn_channel, first=webrtc.FIRST_BYTES["turn_channel"])
_("rtp_rtcp", UDP, rtp_rtcp, first=webrtc.FIRST_BYTES["rtp"])
_("ms_turn", UDP, ms_turn, first=webrtc.FIRST_BYTES["ms_turn"])
_("zoom_p2p_media", UDP, zoom_p2p_media, first=zoom_d.MEDIA_TYPES)
_("zoom_p2p_control", UDP, zoom_p2p_control, first=[zoom_d.P2P_CONTROL])
_("discord_ip_discovery", UDP, discord_ip_discovery, first=[discord_d.FIRST_BYTE])
# TCP on any port: the client's first bytes (see the module docstring)
_("tls", TCP, tls, first=[tls_d.CONTENT_HANDSHAKE])
_("http", TCP, http_request, first=http_d.FIRST_BYTES)
_("stun_tcp", TCP, stun_tcp)
_("rtp_tcp", TCP, rtp_tcp)
del _
