"""What a flow learns from its payloads: :class:`Evidence`, filled by the dissectors' handlers
(:mod:`egressaudit.dissect.registry`) and carried by every flow (:class:`egressaudit.flows.table.Flow` extends it)."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any, Protocol, TypeVar

from egressaudit.dissect import quic as quic_d
from egressaudit.dissect.rtp import RtpHeader


class AnswerSink(Protocol):
    """Who keeps the names DNS answers give addresses (the flow table, through its inspector)."""

    def dns_answer(self, packed: bytes, name: str) -> None: ...


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
        self.quic: quic_d.QuicWire | None = None  # UDP 443, or once a flow is QUIC
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
