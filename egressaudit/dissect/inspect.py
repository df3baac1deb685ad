"""Payload inspection: the evidence a flow's first packets carry, read by the dissectors of this package.

:class:`~egressaudit.dissect.evidence.Evidence` is what a flow learns from its payloads (host name, ALPN,
STUN/RTP/RTCP/DTLS counts, media kinds, vendor hints); the flow tables of
:mod:`egressaudit.flows` keep one per flow (their ``Flow`` extends it) and hand
payloads to :class:`Inspector`, which hands each to the dissectors bound to its
transport, ports and first byte in :mod:`egressaudit.dissect.registry` (the
order in which they are tried is documented there).  Nothing here counts
packets or bytes: that is the flow table's job.
"""

from __future__ import annotations

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP
from egressaudit.dissect.evidence import Evidence
from egressaudit.dissect.registry import DNS_PORTS, REGISTRY, TLS_BUFFER_MAX, ZOOM_PORTS, Dispatch, tls_more, tls_server

__all__ = ["DNS_PORTS", "TLS_BUFFER_MAX", "ZOOM_PORTS", "Evidence", "Inspector"]

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
        # the stream: the client's bytes until decided; of the server's, a TLS flow's handshake records when the client
        # sent no server name (the certificate names the server, up to TLS 1.2)
        if not from_client:
            if flow.hostname is None and flow.app_protocol == "tls" and payload[:2] == b"\x16\x03":
                tls_server(flow, payload)
            return
        if flow.tls_done:
            return
        if flow.tls_buf:
            tls_more(flow, payload)
            return
        for handler in d.anywhere[payload[0]]:
            if handler(self, flow, payload, from_client):
                return
        flow.tls_done = True
