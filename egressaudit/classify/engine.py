"""Classification of a flow: signatures first, then evidence-based heuristics.

Every verdict records the ``rule`` that decided it (``zoom/telemetry-log`` for
a signature rule, ``heuristic/rtp`` for a heuristic) and an ``evidence``
string listing the facts it rested on, so that a user can ask "why is this
telemetry?" and get an answer.

Media is recognised without any signature too: STUN/TURN, DTLS, RTP/RTCP and
Zoom's media encapsulation seen in the payload, or the flow's shape
(sustained, two-way UDP at audio/video packet rates).

Media is decided on evidence (issue 16, point 3):

- The shape alone never makes media of QUIC (recognised from its headers, on
  any port), of anything on UDP 443, of a one-sided flow or of TCP
  (:func:`shape_veto` says why, and the flow's evidence repeats it).
- A signature rule that says ``media`` decides only where the transport can
  carry media: a host-name rule never makes a TCP flow media (Discord's voice
  WebSocket to ``*.discord.media`` on TCP 443 is signalling), and no rule makes
  a QUIC flow media unless its vendor is known to carry calls over QUIC
  (:data:`MEDIA_OVER_QUIC`).  Media evidence in the payload (RTP/RTCP over TCP
  or multiplexed with QUIC, STUN/TURN) still makes such a flow media.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from egressaudit.dissect import dns
from egressaudit.signatures import Match, SignatureDB
from egressaudit.taxonomy import Category, DataClass, Party, data_class_of

#: Vendor hints that name the software of the client rather than who runs the other end.  Google's GOOG-* STUN
#: attributes are libwebrtc's, in Chrome and in the many apps built on it (Discord, Slack, Signal, Jitsi, Janus's
#: pages ...): they made every browser call's media "google", and Google the audited client of sessions that never
#: spoke to Google (the shipped lab call, a self-hosted Janus echo; issue 16, point 5).  Microsoft's MS-TURN and Zoom's
#: attributes are their servers' protocol extensions, and still name the vendor.
CLIENT_STACK_HINTS = {
    "google": "STUN attributes of libwebrtc (Google's WebRTC stack, in Chrome and many apps) name the client's software",
}
#: ``hostname_source`` of a name recalled from an earlier flow to the same address and port (:mod:`egressaudit.classify.memory`)
RECALLED_PREFIX = "earlier_"
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
#: The smaller direction's least share of a flow's payload bytes for its shape to be media.  In a call each side
#: sends its own audio and usually video, so the two directions stay within a factor of a few (a group call receives
#: a few streams for the one it sends: 1:3 to 1:5).  A bulk transfer's return direction carries only
#: acknowledgements: a few per cent (the YouTube download over QUIC in ../shared/captures/calls: 7% of the payload
#: bytes; the browser's HTTP/3 download of issue 16: 7%).  0.15 (at most about 1:5.7) keeps both apart.  What falls
#: below it, receive-only media (a webinar, a participant who only listens) and one-way relays (Telegram sends and
#: receives a call through different reflectors), is left to payload evidence (RTP headers stay in clear under SRTP;
#: STUN, DTLS) and to vendor rules, never to the shape.
SHAPE_MIN_BYTE_SHARE = 0.15
#: HTTP/3's port (RFC 9114 section 3.1).  Real-time media there shows its STUN/DTLS/RTP headers, which the dissectors
#: count; without them, sustained UDP on 443 is QUIC the dissector could not name (greased bits, empty connection
#: IDs), so the shape is not enough (the port alone says little either way: draft-ietf-quic-manageability, "UDP 443").
QUIC_PORT = 443
#: Vendors known to carry call media over QUIC, with the source that says so: a QUIC flow that their signature rules
#: call media is media.  Snapchat multiplexes RTP/RTCP with QUIC: Google QUIC Q046 without a server name (nDPI pull
#: request 1147, 2021: "AFAIK Snapchat is the first application using QUIC this way"), then QUIC v1 to *.addlive.io
#: (nDPI pull request 1858, 2023; nDPI quic.c eval_extra_processing).  No other calling vendor was found doing so in
#: the sources read (2026-11-25): Zoom's web client carries media over WebSockets and WebRTC data channels
#: (webrtcHacks, "How Zoom's web client avoids using WebRTC"); Meet, Teams, Webex, WhatsApp and Discord use RTP over
#: UDP (their signature files' sources).
MEDIA_OVER_QUIC: dict[str, str] = {
    "snap": "Snapchat calls multiplex RTP/RTCP with QUIC (nDPI pull requests 1147 and 1858, https://github.com/ntop/nDPI/pull/1858)",
}


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
    payload_bytes_out: int = 0
    payload_bytes_in: int = 0
    stun: int = 0
    rtp: int = 0
    rtcp: int = 0
    dtls: int = 0
    media_kinds: tuple[str, ...] = ()
    vendor_hints: tuple[str, ...] = ()
    is_local: bool = False
    alpn: tuple[str, ...] = ()
    quic: str | None = None  # how the flow was recognised as QUIC ("long header v1", "short headers (...)")


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
    if f.app_protocol == "quic":
        # the QUIC dissector claims the flow's QUIC packets: what is left is RTP/RTCP multiplexed with it (Snapchat)
        if f.rtp >= 2 or f.rtcp >= 2:
            return "heuristic/rtp-in-quic", f"rtp={f.rtp} rtcp={f.rtcp} multiplexed with QUIC"
        return None
    if f.media_kinds and f.rtp + f.rtcp >= 2:
        # (two packets at least: one random datagram in about 1,500 parses as Zoom's peer-to-peer media)
        return "heuristic/zoom-media", f"zoom media encapsulation ({', '.join(sorted(f.media_kinds))})"
    if f.rtp >= 2 or f.rtcp >= 2:
        return "heuristic/rtp", f"rtp={f.rtp} rtcp={f.rtcp}"
    if f.dtls and (f.stun or f.rtp or f.transport == "udp"):
        return "heuristic/dtls", f"dtls={f.dtls} stun={f.stun}"
    if f.stun:
        return "heuristic/stun", f"stun/turn={f.stun}"
    if f.app_protocol in MEDIA_PROTOCOLS and not (f.transport == "tcp" and f.app_protocol in ("rtp", "rtcp")):
        # (one RTP-looking segment of a TCP stream is too little: RTP over TCP needs two, above)
        return f"heuristic/{f.app_protocol}", f"payload recognised as {f.app_protocol}"
    if shape_is_media(f):
        return "heuristic/udp-shape", f"sustained two-way UDP: {_shape_text(f)}"
    return None


def _shape_text(f: FlowFacts) -> str:
    rate = f.packets / f.duration_s if f.duration_s > 0 else 0.0
    text = f"{f.packets} packets at {rate:.0f}/s, mean payload {f.payload_bytes // max(f.packets, 1)} B"
    if f.payload_bytes_out + f.payload_bytes_in:
        text += f", {_smaller_share(f):.0%} of the payload bytes the smaller way"
    return text


def _smaller_share(f: FlowFacts) -> float:
    total = f.payload_bytes_out + f.payload_bytes_in
    return min(f.payload_bytes_out, f.payload_bytes_in) / total if total else 0.0


def shape_matches(f: FlowFacts) -> bool:
    """The flow has the shape of real-time media: sustained UDP at audio/video packet rates, packets both ways."""
    if f.transport != "udp" or f.app_protocol == "dns" or f.remote_port in DNS_PORTS:
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


def shape_veto(f: FlowFacts) -> str | None:
    """Why the flow's shape alone cannot make it media (see the module docstring), or None."""
    if f.transport != "udp":
        return f"{f.transport}: the shape is a UDP rule"
    if f.app_protocol == "quic":
        return f"QUIC ({f.quic or 'recognised'}) carries media only with RTP/RTCP in it"
    if QUIC_PORT in (f.remote_port, f.local_port):
        return f"UDP {QUIC_PORT} (HTTP/3's port) without media headers in the payload"
    if f.payload_bytes_out + f.payload_bytes_in and _smaller_share(f) < SHAPE_MIN_BYTE_SHARE:
        return f"one-sided: {_smaller_share(f):.0%} of the payload bytes the smaller way, under {SHAPE_MIN_BYTE_SHARE:.0%}"
    return None


def shape_is_media(f: FlowFacts) -> bool:
    return shape_matches(f) and shape_veto(f) is None


def _media_rule_veto(f: FlowFacts, db: SignatureDB, m: Match) -> str | None:
    """Why a signature rule that says media cannot make this flow media without payload evidence, or None."""
    if f.app_protocol == "quic":
        if m.vendor in MEDIA_OVER_QUIC:
            return None
        return f"QUIC ({f.quic or 'recognised'}), and {m.vendor} is not known to carry calls over QUIC: no media without RTP/RTCP in it"
    if f.transport == "tcp" and "domain" in _rule_conditions(db, m):
        return "a host-name rule makes no TCP flow media: media over TCP needs RTP/RTCP or STUN/TURN in the payload"
    return None


def classify(f: FlowFacts, db: SignatureDB) -> Verdict:
    """Vendor, service, category, rule and evidence of one flow (party is decided per session: :mod:`egressaudit.classify.party`)."""
    ev: list[str] = []
    recalled = f.hostname_source is not None and f.hostname_source.startswith(RECALLED_PREFIX)
    if f.hostname and recalled:
        ev.append(f"{f.hostname_source}={f.hostname} (the name an earlier flow to {f.remote_ip}:{f.remote_port} carried)")
    elif f.hostname:
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
    if f.app_protocol == "quic" and f.quic:
        ev.append(f"quic: {f.quic}")
    if m is not None:
        ev.append(f"{m.reason} [{m.rule_id}: {m.source}]")
        category = m.category
        # a host-name rule that matched a name recalled from an earlier flow says so
        base = f"{m.rule_id}+heuristic/address-memory" if recalled and m.reason.startswith("host ") else m.rule_id
        rule = base
        if media is not None and category in OVERRIDABLE_BY_MEDIA:
            if category != Category.media:
                rule = f"{base}+{media[0]}"
            category = Category.media
            ev.append(media[1])
        elif category == Category.media and media is None:
            veto = _media_rule_veto(f, db, m)
            if veto is not None:
                category = Category.signaling
                rule = f"{base}+heuristic/signaling"
                ev.append(veto)
            elif f.app_protocol == "quic":
                ev.append(f"media over QUIC: {MEDIA_OVER_QUIC[m.vendor]}")
        if category is None:
            category = _fallback_category(f)
            rule = f"{base}+heuristic/{category.value}"
            _note_not_media(f, ev)
        return Verdict(m.vendor, m.service, category, rule, "; ".join(ev), m.kind)

    if media is not None:
        ev.append(media[1])
        vendor = None
        kind = None
        if len(f.vendor_hints) == 1 and f.vendor_hints[0] in CLIENT_STACK_HINTS:
            ev.append(f"{CLIENT_STACK_HINTS[f.vendor_hints[0]]}: no vendor from them")
        elif len(f.vendor_hints) == 1:
            vendor = f.vendor_hints[0]
            kind = db.vendor_kind(vendor)
            ev.append(f"vendor from protocol attributes: {vendor}")
        return Verdict(vendor, None, Category.media, media[0], "; ".join(ev), kind)
    category = _fallback_category(f)
    ev.append("no signature matched")
    _note_not_media(f, ev)
    return Verdict(None, None, category, f"heuristic/{category.value}", "; ".join(ev))


def _note_not_media(f: FlowFacts, ev: list[str]) -> None:
    """Say why a flow that looks a little like media is not called media (a user asks "why is this not media?")."""
    if f.transport == "tcp" and f.app_protocol in ("rtp", "rtcp"):
        ev.append(f"rtp={f.rtp} rtcp={f.rtcp} over TCP: one RTP-looking segment is not media evidence")
    if shape_matches(f):
        veto = shape_veto(f)
        if veto is not None:
            ev.append(f"shaped like media ({_shape_text(f)}) but not media by its shape: {veto}")


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


__all__ = [
    "CLIENT_STACK_HINTS", "MEDIA_OVER_QUIC", "RECALLED_PREFIX", "FlowFacts", "Verdict", "classify", "media_evidence",
    "shape_is_media", "shape_matches", "shape_veto",
]  # fmt: skip
