"""Classification of one HTTP exchange or WebSocket message.

Order of decisions, first that applies wins:

1. a vendor's HTTP rule (host and path pattern) from the signature files;
2. the vendor's host rule when it names a category of telemetry (a Sentry or
   Amplitude host is telemetry whatever the body looks like);
3. content heuristics: multipart bodies, large PUT/POST bodies, and paths of
   chat, file, whiteboard, poll, recording and transcript endpoints are
   ``content_upload``;
4. telemetry heuristics: body shapes of analytics and crash SDKs (Sentry
   envelopes, Bond-encoded Aria events, ``events``/``batch`` arrays of event
   objects) and telemetry-ish paths (``/collect``, ``/track``, ``/log``,
   ``/metrics``, ``/stats`` ...);
5. the host rule's category otherwise (``signaling`` where it says ``media``: an
   HTTP exchange carries no real-time media); then ``unknown``.

Vendor and service always come from the signature files (host, then
address); the party is assigned like flows, relative to the audited client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from egressaudit.classify.engine import Verdict
from egressaudit.signatures import SignatureDB
from egressaudit.taxonomy import Category

#: Request bodies at least this large sent with PUT/POST are content uploads unless a rule says otherwise.
LARGE_UPLOAD = 256 * 1024
CONTENT_PATH = re.compile(
    r"/(upload|uploads|files?|attachments?|chat|messages?|whiteboards?|polls?|recordings?|transcripts?|captions?|share|drive|media/upload)(/|$|\?|[._-])",
    re.IGNORECASE,
)
TELEMETRY_PATH = re.compile(
    r"/(collect|track|batch|log|logs|logging|telemetry|metrics|stats|events?|analytics|beacon|ping|envelope|store|crash(es)?|"
    r"diagnostics?|usage|rtcstats|i/v\d|2/httpapi|v\d/(t|i|batch|track|identify|page|stats))(/|$|\?)",
    re.IGNORECASE,
)
EVENT_KEYS = frozenset(("events", "batch", "event_type", "event", "eventName", "event_name", "data", "records"))
TELEMETRY_FORMATS = ("sentry_envelope", "bond")


@dataclass(frozen=True)
class ExchangeFacts:
    host: str | None
    remote_ip: str | None
    port: int | None
    method: str | None
    path: str | None
    content_type_out: str | None
    body_format: str
    body_bytes: int
    multipart_files: int = 0
    event_shaped: bool = False
    websocket: bool = False


def looks_like_events(tree: object) -> bool:
    """JSON bodies of analytics SDKs: a dict with an events/batch list of dicts, or a list of event dicts."""
    if isinstance(tree, dict):
        for k in ("events", "batch", "e", "records", "data"):
            v = tree.get(k)
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v[:5]):
                return True
        return any(k in tree for k in ("event_type", "eventName", "event_name", "event")) and len(tree) > 2
    if isinstance(tree, list) and tree and all(isinstance(x, dict) for x in tree[:5]):
        return any(k in x for x in tree[:5] if isinstance(x, dict) for k in ("event", "event_type", "eventName", "event_name", "type"))
    return False


def classify_exchange(f: ExchangeFacts, db: SignatureDB) -> Verdict:
    ev: list[str] = []
    path = (f.path or "").split("?", 1)[0]
    m = db.match_http(f.host, f.remote_ip, f.port, f.method, path)
    vendor, service, kind = (m.vendor, m.service, m.kind) if m else (None, None, None)
    if m is not None:
        ev.append(m.reason)
    if m is not None and m.category is not None and "path" in m.reason:
        return Verdict(vendor, service, m.category, m.rule_id, "; ".join(ev), kind)
    if m is not None and m.category == Category.telemetry:
        return Verdict(vendor, service, Category.telemetry, m.rule_id, "; ".join(ev), kind)
    upload = f.method in ("PUT", "POST", "PATCH") or f.websocket
    if upload and (f.body_format == "multipart" and f.multipart_files > 0):
        return Verdict(
            vendor,
            service,
            Category.content_upload,
            "heuristic/multipart-upload",
            "; ".join([*ev, f"multipart with {f.multipart_files} file(s)"]),
            kind,
        )
    if upload and f.body_bytes >= LARGE_UPLOAD and f.body_format not in TELEMETRY_FORMATS and not f.event_shaped:
        return Verdict(
            vendor, service, Category.content_upload, "heuristic/large-upload", "; ".join([*ev, f"{f.method} body {f.body_bytes} B"]), kind
        )
    if upload and f.body_bytes > 0 and CONTENT_PATH.search(path) and not TELEMETRY_PATH.search(path):
        return Verdict(vendor, service, Category.content_upload, "heuristic/content-path", "; ".join([*ev, f"path {path}"]), kind)
    if f.body_format in TELEMETRY_FORMATS:
        return Verdict(vendor, service, Category.telemetry, f"heuristic/{f.body_format}", "; ".join([*ev, f"body is {f.body_format}"]), kind)
    if upload and f.body_bytes > 0 and f.event_shaped:
        return Verdict(vendor, service, Category.telemetry, "heuristic/event-batch", "; ".join([*ev, "body is a batch of events"]), kind)
    if upload and f.body_bytes > 0 and TELEMETRY_PATH.search(path):
        return Verdict(vendor, service, Category.telemetry, "heuristic/telemetry-path", "; ".join([*ev, f"path {path}"]), kind)
    if m is not None and m.category == Category.media:
        # a host-name rule's "media" speaks of the host's UDP flows: an HTTP exchange (a WebSocket to a voice gateway
        # such as *.discord.media) carries no real-time media (issue 16, point 3)
        why = "an HTTP exchange is not real-time media: the rule's media means the host's UDP flows"
        return Verdict(vendor, service, Category.signaling, f"{m.rule_id}+heuristic/signaling", "; ".join([*ev, why]), kind)
    if m is not None and m.category is not None:
        return Verdict(vendor, service, m.category, m.rule_id, "; ".join(ev), kind)
    if f.websocket:
        return Verdict(vendor, service, Category.signaling, "heuristic/websocket", "; ".join([*ev, "websocket message"]), kind)
    if f.method == "GET" and re.search(r"\.(js|css|png|jpe?g|gif|svg|woff2?|ico|webp)$", path, re.IGNORECASE):
        return Verdict(vendor, service, Category.web_asset, "heuristic/static-asset", "; ".join([*ev, f"GET {path}"]), kind)
    return Verdict(vendor, service, Category.unknown, m.rule_id if m else "none", "; ".join(ev) or "no rule matched", kind)
