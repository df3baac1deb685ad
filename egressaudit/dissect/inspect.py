"""Payload inspection: the evidence a flow's first packets carry, read by the dissectors of this package.

:class:`Evidence` is what a flow learns from its payloads (host name, ALPN,
STUN/RTP/RTCP/DTLS counts, media kinds, vendor hints); the flow tables of
:mod:`egressaudit.flows` keep one per flow (their ``Flow`` extends it) and hand
payloads to :class:`Inspector`, which hands each to the dissectors bound to its
transport, ports and first byte in :mod:`egressaudit.dissect.registry` (the
order in which they are tried is documented there).  Nothing here counts
packets or bytes: that is the flow table's job.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP
from egressaudit.dissect import quic as quic_d
from egressaudit.dissect.registry import DNS_PORTS, REGISTRY, TLS_BUFFER_MAX, ZOOM_PORTS, Dispatch, tls_more
from egressaudit.dissect.rtp import RtpHeader

__all__ = ["DNS_PORTS", "TLS_BUFFER_MAX", "ZOOM_PORTS", "Evidence", "Inspector"]

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
    ``udp`` and ``tcp`` are the compiled bindings of
    :data:`~egressaudit.dissect.registry.REGISTRY` (a subclass may compile
    another :class:`~egressaudit.dissect.registry.Registry`).  Payloads are
    never empty (the flow tables inspect only packets that carry one).
    """

    udp: Dispatch = REGISTRY.compile(PROTO_UDP)
    tcp: Dispatch = REGISTRY.compile(PROTO_TCP)

    def dns_answer(self, packed: bytes, name: str) -> None:
        raise NotImplementedError

    def inspect(self, flow: Evidence, payload: bytes, sport: int, dport: int, from_client: bool) -> None:
        if not payload:
            return
        if flow.proto == PROTO_TCP:
            self._inspect_tcp(flow, payload, from_client, sport, dport)
        elif flow.proto == PROTO_UDP:
            self._inspect_udp(flow, payload, from_client, sport, dport)

    def _inspect_udp(self, flow: Evidence, payload: bytes, from_client: bool, sp: int, dp: int) -> None:
        d = self.udp
        by_port = d.by_port
        if sp in by_port:
            chains = by_port[sp] if dp not in by_port else d.pair(sp, dp)
        else:
            chains = by_port.get(dp, d.anywhere)
        for handler in chains[payload[0]]:
            if handler(self, flow, payload, from_client):
                return

    def _inspect_tcp(self, flow: Evidence, payload: bytes, from_client: bool, sp: int, dp: int) -> None:
        d = self.tcp
        by_port = d.by_port
        if sp in by_port or dp in by_port:
            if sp not in by_port:
                chains = by_port[dp]
            elif dp not in by_port:
                chains = by_port[sp]
            else:
                chains = d.pair(sp, dp)
            for handler in chains[payload[0]]:
                if handler(self, flow, payload, from_client):
                    return
        # the stream: the client's bytes until decided
        if not from_client or flow.tls_done:
            return
        if flow.tls_buf:
            tls_more(flow, payload)
            return
        for handler in d.anywhere[payload[0]]:
            if handler(self, flow, payload, from_client):
                return
        flow.tls_done = True
