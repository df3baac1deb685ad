"""Reading nDPI's per-flow verdicts (``ndpiReader`` test output) for cross-checks."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "captures" / "public"
NDPI = SHARED / "ndpi"
SKIP_REASON = "real captures not present: ../shared/captures/public (a plain clone has no ../shared; see tests/README.md)"

_LINE = re.compile(r"^\s*\d+\s+(?P<transport>TCP|UDP|ICMP|ICMPV6|\S+)\s+(?P<a>\S+)\s+(?P<dir><->|->)\s+(?P<b>\S+)\s+(?P<rest>.*)$")
_PROTO = re.compile(r"\[proto: (?:(?P<outer>[A-Za-z]+):)?[\d.]+/(?P<names>[^\]]+)\]")
_BYTES = re.compile(r"\[(?P<pa>\d+) pkts/(?P<ba>\d+) bytes (?:<->|->) (?P<pb>\d+) pkts/(?P<bb>\d+) bytes\]")
_SNI = re.compile(r"\[Hostname/SNI: (?P<sni>[^\]]+)\]")

#: nDPI application names -> egressaudit vendor ids (operators of the remote end)
VENDOR_OF = {
    "Zoom": "zoom",
    "Teams": "microsoft",
    "Skype_Teams": "microsoft",
    "Skype_TeamsCall": "microsoft",
    "Microsoft": "microsoft",
    "Microsoft365": "microsoft",
    "Webex": "cisco",
    "Discord": "discord",
    "Google": "google",
    "GoogleServices": "google",
    "GoogleMeet": "google",
    "GoogleChat": "google",
    "GoogleCall": "google",
}
MEDIA_PROTOCOLS = {"STUN", "DTLS", "RTP", "RTCP", "SRTP", "Skype_TeamsCall", "GoogleCall", "FacebookVoip"}


@dataclass(frozen=True)
class NdpiFlow:
    transport: str
    a: tuple[str, int]
    b: tuple[str, int]
    names: tuple[str, ...]
    bytes_total: int
    packets_total: int
    sni: str | None

    @property
    def key(self) -> tuple[str, frozenset[tuple[str, int]]]:
        return (self.transport.lower(), frozenset({self.a, self.b}))

    @property
    def vendor(self) -> str | None:
        for n in reversed(self.names):
            if n in VENDOR_OF:
                return VENDOR_OF[n]
        return None

    @property
    def is_media(self) -> bool:
        if any(n in MEDIA_PROTOCOLS for n in self.names):
            return True
        # Zoom's UDP media (8801-8810, P2P) and Discord's voice are UDP flows labelled with the app alone
        return self.transport == "UDP" and self.names[-1] in ("Zoom", "Discord") and len(self.names) == 1


def _endpoint(s: str) -> tuple[str, int]:
    if s.startswith("["):
        host, _, port = s[1:].rpartition("]:")
    else:
        host, _, port = s.rpartition(":")
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass  # nDPI sometimes prints IPv6 addresses it shortened wrongly; such a flow just will not match
    return host, int(port)


def parse(path: Path) -> list[NdpiFlow]:
    flows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.match(line)
        if not m or m["transport"] not in ("TCP", "UDP"):
            continue
        pm, bm = _PROTO.search(m["rest"]), _BYTES.search(m["rest"])
        if not pm or not bm:
            continue
        sm = _SNI.search(m["rest"])
        flows.append(
            NdpiFlow(
                m["transport"],
                _endpoint(m["a"]),
                _endpoint(m["b"]),
                tuple(pm["names"].split(".")),
                int(bm["ba"]) + int(bm["bb"]),
                int(bm["pa"]) + int(bm["pb"]),
                sm["sni"] if sm else None,
            )
        )
    return flows
