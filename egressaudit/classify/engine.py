"""Classification of a flow: signatures first, then evidence-based heuristics.

Every verdict records the ``rule`` that decided it (``zoom/telemetry-log`` for
a signature rule, ``heuristic/rtp`` for a heuristic) and an ``evidence``
string listing the facts it rested on, so that a user can ask "why is this
telemetry?" and get an answer.

Media is recognised without any signature too: STUN/TURN, DTLS, RTP/RTCP and
Zoom's media encapsulation seen in the payload, or the flow's shape
(sustained UDP at audio/video packet rates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from egressaudit.dissect import dns
from egressaudit.signatures import Match, SignatureDB
from egressaudit.taxonomy import Category, DataClass, Party, data_class_of

#: payloads that belong to a real-time media path (set-up included: STUN, Zoom P2P hole punching, Discord IP discovery)
MEDIA_PROTOCOLS = frozenset({"stun", "turn", "dtls", "rtp", "rtcp", "zoom_media", "zoom_p2p", "discord_voice"})
#: categories that media evidence may override (a telemetry host stays telemetry)
OVERRIDABLE_BY_MEDIA = frozenset({None, Category.signaling, Category.other, Category.unknown, Category.media})
#: name resolution, in clear or encrypted (a flow to these is DNS traffic even when it cannot be read)
DNS_PORTS = dns.PORTS | dns.ENCRYPTED_PORTS

# Flow shape of real-time media: sustained UDP at audio/video packet rates.
SHAPE_MIN_PACKETS = 50
SHAPE_MIN_RATE_PPS = 8.0
SHAPE_MIN_DURATION_S = 1.0
SHAPE_MEAN_PAYLOAD = (40, 1400)


@dataclass
class FlowFacts:
    """What the classifier needs to know about a flow (packet path) or an exchange."""

    transport: str
    remote_ip: str | None
    remote_port: int
    local_port: int = 0
    hostname: str | None = None
    hostname_source: str | None = None
    app_protocol: str | None = None
    packets: int = 0
    payload_bytes: int = 0
    duration_s: float = 0.0
    packets_out: int = 0
    packets_in: int = 0
    stun: int = 0
    rtp: int = 0
    rtcp: int = 0
    dtls: int = 0
    media_kinds: tuple[str, ...] = ()
    vendor_hints: tuple[str, ...] = ()
    is_local: bool = False
    alpn: tuple[str, ...] = ()


@dataclass
class Verdict:
    vendor: str | None
    service: str | None
    category: Category
    rule: str
    evidence: str
    vendor_kind: str | None = None
    party: Party = Party.unknown
    notes: list[str] = field(default_factory=list)

    @property
    def data_class(self) -> DataClass:
        return data_class_of(self.category)


def media_evidence(f: FlowFacts) -> tuple[str, str] | None:
    """(heuristic rule, evidence) when the flow carries real-time media, else None."""
    if f.media_kinds:
        return "heuristic/zoom-media", f"zoom media encapsulation ({', '.join(sorted(f.media_kinds))})"
    if f.rtp >= 2 or f.rtcp >= 2:
        return "heuristic/rtp", f"rtp={f.rtp} rtcp={f.rtcp}"
    if f.dtls and (f.stun or f.rtp or f.transport == "udp"):
        return "heuristic/dtls", f"dtls={f.dtls} stun={f.stun}"
    if f.stun:
        return "heuristic/stun", f"stun/turn={f.stun}"
    if f.app_protocol in MEDIA_PROTOCOLS:
        return f"heuristic/{f.app_protocol}", f"payload recognised as {f.app_protocol}"
    if shape_is_media(f):
        rate = f.packets / f.duration_s
        return "heuristic/udp-shape", f"sustained UDP: {f.packets} packets at {rate:.0f}/s, mean payload {f.payload_bytes // max(f.packets, 1)} B"
    return None


def shape_is_media(f: FlowFacts) -> bool:
    if f.transport != "udp" or f.app_protocol in ("dns", "quic") or f.remote_port in DNS_PORTS:
        return False
    if f.packets < SHAPE_MIN_PACKETS or f.duration_s < SHAPE_MIN_DURATION_S:
        return False
    if f.packets / f.duration_s < SHAPE_MIN_RATE_PPS:
        return False
    # bidirectional: each way carries at least a fifth of the rate threshold (a call both sends and receives)
    if min(f.packets_out, f.packets_in) / f.duration_s < SHAPE_MIN_RATE_PPS / 5:
        return False
    mean = f.payload_bytes / max(f.packets, 1)
    return SHAPE_MEAN_PAYLOAD[0] <= mean <= SHAPE_MEAN_PAYLOAD[1]


def classify(f: FlowFacts, db: SignatureDB) -> Verdict:
    """Vendor, service, category, rule and evidence of one flow (party is decided per session: :mod:`egressaudit.classify.party`)."""
    ev: list[str] = []
    if f.hostname:
        ev.append(f"{f.hostname_source or 'host'}={f.hostname}")
    if f.alpn:
        ev.append(f"alpn={','.join(f.alpn)}")

    if f.app_protocol == "dns" or (f.transport == "udp" and (f.remote_port in DNS_PORTS or f.local_port in (5353, 5355))):
        dm = db.match(None, f.remote_ip, f.remote_port, f.transport)
        return Verdict(
            dm.vendor if dm else None,
            dm.service if dm else None,
            Category.dns,
            "heuristic/dns",
            "; ".join(ev + [f"dns on port {f.remote_port}"]),
            dm.kind if dm else None,
        )

    if f.transport not in ("tcp", "udp"):
        am = db.match(None, f.remote_ip, None, None)
        ev.append(f"{f.transport} (no ports, no payload evidence)")
        return Verdict(
            am.vendor if am else None, am.service if am else None, Category.other, f"heuristic/{f.transport}", "; ".join(ev), am.kind if am else None
        )

    m: Match | None = db.match(f.hostname, f.remote_ip, f.remote_port, f.transport)
    if f.hostname:
        # A rule naming the address and the port/transport describes this traffic more closely than a
        # host-name rule without ports, above all when the name only came from DNS (several names can share an address).
        pm = db.match(None, f.remote_ip, f.remote_port, f.transport)
        if (
            pm is not None
            and m is not None
            and pm.vendor == m.vendor
            and "port" in _rule_conditions(db, pm)
            and "port" not in _rule_conditions(db, m)
        ):
            m = pm
    media = media_evidence(f)
    if m is not None:
        ev.append(f"{m.reason} [{m.rule_id}: {m.source}]")
        category = m.category
        rule = m.rule_id
        if media is not None and category in OVERRIDABLE_BY_MEDIA:
            if category != Category.media:
                rule = f"{m.rule_id}+{media[0]}"
            category = Category.media
            ev.append(media[1])
        if category is None:
            category = _fallback_category(f)
            rule = f"{m.rule_id}+heuristic/{category.value}"
        return Verdict(m.vendor, m.service, category, rule, "; ".join(ev), m.kind)

    if media is not None:
        ev.append(media[1])
        vendor = None
        kind = None
        if len(f.vendor_hints) == 1:
            vendor = f.vendor_hints[0]
            kind = db.vendor_kind(vendor)
            ev.append(f"vendor from protocol attributes: {vendor}")
        return Verdict(vendor, None, Category.media, media[0], "; ".join(ev), kind)
    category = _fallback_category(f)
    ev.append("no signature matched")
    return Verdict(None, None, category, f"heuristic/{category.value}", "; ".join(ev))


def _rule_conditions(db: SignatureDB, m: Match) -> set[str]:
    vendor, _, rid = m.rule_id.partition("/")
    vf = db.vendors.get(vendor)
    rule = next((r for r in vf.rules if r.id == rid), None) if vf else None
    if rule is None:
        return set()
    return {name for name, val in (("port", rule.ports), ("cidr", rule.cidrs), ("domain", rule.domains or rule.patterns)) if val}


def _fallback_category(f: FlowFacts) -> Category:
    if f.transport not in ("tcp", "udp"):
        return Category.other
    if f.is_local and f.transport == "udp" and f.packets_in == 0:
        return Category.other  # local broadcast/discovery chatter
    return Category.unknown


__all__ = ["FlowFacts", "Verdict", "classify", "media_evidence", "shape_is_media"]
