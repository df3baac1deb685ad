"""Address memory: a name one flow carried for a remote address and port names the later flows there that carry none.

A DNS answer names an address for the flows that start after it: the flow tables keep the latest name of each
answered address (``dns_answer``) and give it to new flows (``hostname_source`` ``dns``).  A name a flow itself
carries (TLS or QUIC SNI, HTTP ``Host``, the server's certificate) says the same of its remote end, and more
narrowly: a client reconnecting to an address often sends no SNI (resumed or pooled connections, apps that pin
addresses), and several names share one address behind a CDN, so the memory is kept per address *and port*.

:class:`AddressMemory` is fed the session's flows in order of their first packet.  A flow without a name of its own
nor from DNS (or with only its server certificate's, which names a domain, often by a wildcard) gets the latest name
learnt for its remote address and port before it started, with ``hostname_source`` ``earlier_<source>``
(``earlier_tls_sni``, ``earlier_quic_sni``, ``earlier_http_host``, ``earlier_tls_cert``), and the rule that decides by
it says so (``+heuristic/address-memory``, :mod:`egressaudit.classify.engine`).  DNS answers keep precedence: they
are what the client itself resolved.
"""

from __future__ import annotations

from egressaudit.classify.engine import RECALLED_PREFIX, FlowFacts

#: where a flow's own name came from, for the names worth remembering (DNS names are the flow table's already)
LEARNT_FROM = frozenset({"tls_sni", "quic_sni", "http_host", "tls_cert"})


class AddressMemory:
    """The latest name learnt per (remote address, remote port) in one session (see the module docstring)."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[tuple[str, int], tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._names)

    def recall(self, f: FlowFacts) -> None:
        """Name ``f`` from memory when it has no name (its own or from DNS) but maybe its server certificate's (a
        certificate names a domain, often by a wildcard: less than the name a client asked for), and its remote end is
        not local."""
        if (f.hostname is not None and f.hostname_source != "tls_cert") or f.is_local or f.remote_ip is None or not self._names:
            return
        hit = self._names.get((f.remote_ip, f.remote_port))
        if hit is not None:
            f.hostname, source = hit
            f.hostname_source = RECALLED_PREFIX + source

    def learn(self, f: FlowFacts) -> None:
        """Remember the name ``f`` carried itself (SNI or HTTP Host) for its remote address and port."""
        if f.hostname is not None and f.hostname_source in LEARNT_FROM and f.remote_ip is not None and not f.is_local:
            self._names[(f.remote_ip, f.remote_port)] = (f.hostname, f.hostname_source)


__all__ = ["LEARNT_FROM", "AddressMemory"]
