"""The self-contained ``report.html``: one file that can be sent on its own (inline CSS, the figures as inline SVG,
no link to anything), opening with the sentence that answers the report's question; every value escaped, names of
data classes and categories in words."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import PurePath
from typing import Any

import pandas as pd

from egressaudit import __version__
from egressaudit.report.http_summary import http_meta
from egressaudit.report.measures import CONTENT_ORDER, fields_text, human_bytes, percent, plural, words
from egressaudit.report.summary import ReportData

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
.headline{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:11em;background:#fafafa}
.card .v{font-size:1.5em;font-weight:600}.card .l{color:#555;font-size:.85em}
.sg{color:#b31b1b}.cc{color:#1f5f99}
figure{margin:1em 0;max-width:980px}svg.figure{display:block;width:100%;height:auto;border:1px solid #eee}
p.lead{font-size:1.2em;margin:.6em 0 .3em;max-width:60em}p.window{color:#444;margin:0 0 1em}
.note{color:#555;font-size:.9em}
.warn{color:#8a5a00;background:#fff8e1;padding:.4em .8em;border-left:3px solid #e0a800}
tr.leak td{background:#fdecea}.leak{color:#b31b1b;font-weight:600}h3{font-size:1.05em;margin-top:1.4em}
blockquote{margin:.4em 0 .4em 1em;padding-left:.8em;border-left:3px solid #ccc;color:#333}
"""

Formatter = Callable[[Any], str]


def _int(v: Any) -> str:
    return f"{int(v):,}"


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


NUMERIC = {
    "flows",
    "bytes_out",
    "bytes_in",
    "share",
    "count",
    "exchanges",
    "ws_messages",
    "fields",
    "identifier_fields",
    "occurrences",
    "distinct_values",
    "identifying_paths",
    "content_paths",
    "seconds",
    "http_exchanges",
    "customer_content",
    "service_generated",
    "service_operation",
    "unknown",
    "service_generated_per_min",
}
BYTES = {"bytes_out", "bytes_in", "customer_content", "service_generated", "service_operation", "unknown"}
FORMATS: dict[str, Formatter] = {
    **{c: _int for c in NUMERIC - BYTES - {"share"}},
    **{c: human_bytes for c in BYTES},
    "share": percent,
    "seconds": lambda v: f"{float(v):,.0f}",
    "service_generated_per_min": lambda v: f"{human_bytes(v)}/min",
    "from": lambda v: "" if v is None else pd.Timestamp(v).strftime("%H:%M:%S"),
    # names in words (the tables keep the stored names: CSV and JSON show those)
    "data_class": words,
    "category": words,
    "detectors": words,
    "content": words,
}
HEADERS: dict[str, str] = {
    "data_class": "data class",
    "bytes_out": "sent (egress)",
    "bytes_in": "received",
    "share": "share of egress",
    "local_ip": "local host",
    "ws_messages": "websocket messages",
    "identifier_fields": "identifying fields",
    "key_path": "field",
    "value_type": "type",
    "distinct_values": "distinct values",
    "detectors": "looks like",
    "content": "content leak",
    "values": "values (clear text)",
    "client_ip": "client",
    "identifying_paths": "identifying fields",
    "content_paths": "content-leak fields",
    "customer_content": "customer content",
    "service_generated": "service-generated data",
    "service_operation": "service operation",
    "service_generated_per_min": "service-generated data per minute",
    "http_exchanges": "HTTP exchanges",
    "from": "from (UTC)",
}
#: The per-state table's columns (report/states.py), in the page and the terminal alike.
STATE_COLUMNS = [
    "state", "from", "seconds", "customer_content", "service_generated", "service_operation", "unknown", "service_generated_per_min",
    "http_exchanges", "note",
]  # fmt: skip
MONO = {"destination", "local_ip", "client_ip", "host", "path", "key_path", "values"}
#: Headers of the HTTP tables, where shares are of HTTP egress.
HTTP_HEADERS: dict[str, str] = {"bytes_out": "requests sent", "bytes_in": "responses received", "share": "share of HTTP egress"}

RowClass = Callable[[Mapping[Any, Any]], str]


def table(
    df: pd.DataFrame,
    columns: Sequence[str],
    empty: str = "none",
    *,
    headers: dict[str, str] | None = None,
    row_class: RowClass | None = None,
    cell_class: dict[str, str] | None = None,
) -> str:
    """An HTML table of ``columns`` of ``df``, values formatted and escaped.

    ``row_class`` gives a CSS class for a row (a record), ``cell_class`` one per column.
    """
    names = {**HEADERS, **(headers or {})}
    head = "".join(f"<th>{escape(names.get(c, c))}</th>" for c in columns)
    if df.empty:
        return f'<table><tr>{head}</tr><tr><td colspan="{len(columns)}" class="note">{escape(empty)}</td></tr></table>'
    rows = []
    for rec in df.to_dict("records"):
        cells = []
        for c in columns:
            v = rec.get(c)
            text = FORMATS.get(c, _text)(v)
            title = f' title="{int(v):,} bytes"' if c in BYTES and v is not None else ""
            classes = ["num" if c in NUMERIC else ("mono" if c in MONO else "")]
            if cell_class and c in cell_class and text:
                classes.append(cell_class[c])
            cls = " ".join(x for x in classes if x)
            attr = f' class="{escape(cls)}"' if cls else ""
            cells.append(f"<td{attr}{title}>{escape(text)}</td>")
        rc = row_class(rec) if row_class else ""
        rows.append((f'<tr class="{escape(rc)}">' if rc else "<tr>") + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _count(n: Any, noun: str) -> str:
    """``3 vendors`` / ``1 vendor``, or ``? vendors`` when the number is missing."""
    return plural(n, noun) if isinstance(n, int) else f"? {noun}s"


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_text(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _card(value: str, label: str, cls: str = "") -> str:
    c = f" {cls}" if cls else ""
    return f'<div class="card"><div class="v{c}">{escape(value)}</div><div class="l">{escape(label)}</div></div>'


def window_text(data: ReportData) -> str:
    """``2026-11-25 01:56:36 to 01:57:18 UTC (42 s), first to last packet``, or "none" for a session without traffic."""
    w = data.window
    return "none (no traffic recorded)" if w is None else f"{w.text()}, first to last {w.of}"


def metadata_rows(data: ReportData) -> list[tuple[str, Any]]:
    """Session metadata as (label, value) pairs, local addresses redacted."""
    s = data.session
    red = data.redactor
    tool = s.get("tool") if isinstance(s.get("tool"), dict) else {}
    sigs = s.get("signatures") if isinstance(s.get("signatures"), dict) else {}
    counts = s.get("counts") if isinstance(s.get("counts"), dict) else {}
    assert isinstance(tool, dict) and isinstance(sigs, dict) and isinstance(counts, dict)
    hm = http_meta(s)
    client = s.get("audited_client") or hm.get("audited_client") or "not detected"
    if s.get("audited_client") and s.get("audited_client_source"):
        client = f"{client} ({s['audited_client_source']})"
    nets = s.get("local_nets") or []
    hosts = s.get("local_hosts") or []
    sig_text = str(sigs.get("version") or "unknown")
    if sigs.get("vendors") is not None or sigs.get("rules") is not None:
        sig_text += f" ({_count(sigs.get('vendors'), 'vendor')}, {_count(sigs.get('rules'), 'rule')})"
    rows: list[tuple[str, Any]] = [
        ("session", s.get("session_id")),
        *([("label", s["label"])] if s.get("label") else []),
        ("capture window", window_text(data)),
        ("analysed", s.get("created")),
        ("analysed with", f"{tool.get('name', 'egressaudit')} {tool.get('version', '?')}"),
        ("signature database", sig_text),
        ("schema version", s.get("schema_version")),
        ("report written by", f"egressaudit {__version__}"),
        ("audited client", client),
        ("local networks", "(redacted)" if data.redacted and nets else (", ".join(map(str, nets)) or "detected")),
        ("local hosts", ", ".join(str(red(str(h))) for h in hosts) or "-"),
    ]
    if data.has_flows:
        rows += [
            ("packets", f"{int(counts['packets']):,}" if isinstance(counts.get("packets"), int) else "-"),
            ("flows", f"{data.headline.flows:,}"),
            ("idle timeout", f"{s['idle_timeout_s']} s" if s.get("idle_timeout_s") is not None else "-"),
        ]
    if data.http is not None:
        hh = data.http.headline
        mode = hm.get("mode")
        listen = hm.get("listen_host")
        if isinstance(listen, str) and listen != "*" and data.redacted:
            listen = "(redacted)"
        if data.http.values_shown:
            values = "kept in clear (--keep-values) and shown (--no-redact)"
        elif data.http.keep_values:
            values = "kept in clear (--keep-values), not shown in a redacted report"
        else:
            values = "salted hashes only"
        rows += [
            ("HTTP recorded", hm.get("updated") or ("unfinished (no session.json)" if s.get("_incomplete") else "-")),
            (
                "HTTP exchanges",
                f"{plural(hh.exchanges, 'exchange')}, {plural(hh.websocket_messages, 'WebSocket message')}, "
                f"{plural(hh.fields, 'distinct field')} inventoried",
            ),
        ]
        if mode:
            rows.append(("proxy mode", ", ".join(map(str, mode)) if isinstance(mode, list) else str(mode)))
        if listen:
            rows.append(("proxy listening on", listen))
        rows += [
            ("field values", values),
            ("query values", "kept (--keep-query)" + (", redacted in this report" if data.redacted else "") if hm.get("keep_query") else "redacted"),
        ]
    rows.append(
        (
            "local addresses",
            ("redacted (local-N tokens" + (", HTTP client addresses included" if data.http is not None else "") + "); remote addresses shown")
            if data.redacted
            else "shown (--no-redact)",
        )
    )
    return rows


def inputs_frame(data: ReportData) -> pd.DataFrame:
    """The session's inputs: file (name only when redacting), format, size, packets, sha256."""
    recs = []
    for i in data.session.get("inputs") or []:
        if not isinstance(i, dict):
            continue
        path = str(i.get("path") or "")
        recs.append(
            {
                "file": PurePath(path).name if data.redacted else path,
                "format": i.get("format"),
                "size": human_bytes(i["bytes"]) if isinstance(i.get("bytes"), int) else "",
                "packets": f"{int(i['packets']):,}" if isinstance(i.get("packets"), int) else "",
                "sha256": i.get("sha256"),
            }
        )
    for i in http_meta(data.session).get("inputs") or []:
        if not isinstance(i, dict):
            continue
        path = str(i.get("path") or "")
        recs.append(
            {
                "file": PurePath(path).name if data.redacted else path,
                "format": PurePath(path).suffix.lstrip(".").lower() or None,
                "size": human_bytes(i["size"]) if isinstance(i.get("size"), int) else "",
                "packets": "",
                "sha256": None,
            }
        )
    return pd.DataFrame(recs, columns=["file", "format", "size", "packets", "sha256"])


def skipped_frame(data: ReportData) -> pd.DataFrame:
    return pd.DataFrame([{"reason": k, "count": v} for k, v in data.skipped.items()], columns=["reason", "count"])


DEFINITIONS = """
<dl>
<dt><b>egress</b></dt>
<dd>IP bytes (headers included) sent by the audited host to a remote network: the <code>bytes_out</code> of every flow whose remote end
is not on the local network. Traffic between local hosts is not egress and is left out of every total; received bytes are shown for context.</dd>
<dt><b class="cc">customer content</b></dt>
<dd>What users put into the service: audio, video and screen share (category <code>media</code>) and chat, files, whiteboards and other
uploads (<code>content_upload</code>). This follows <i>Customer Content</i> in Zoom's terms of service (2023), defined in section 10.1 and the
subject of section 10.4, which names audio, video, chat, screen sharing, attachments and other communications-like Customer Content such as
poll results, whiteboards and reactions.</dd>
<dt><b class="sg">service-generated data</b></dt>
<dd>What the service produces about its use (category <code>telemetry</code>). Section 10.2 of Zoom's terms of service (2023) defines it:
<blockquote>Customer Content does not include any telemetry data, product usage data, diagnostic data, and similar content or data
that Zoom collects or generates in connection with your or your End Users' use of the Services or Software
(&ldquo;Service Generated Data&rdquo;).</blockquote></dd>
<dt><b>service operation</b></dt>
<dd>egressaudit's name (not a term of Zoom's) for what is needed to run the service: signalling, authentication, configuration,
DNS and web assets.</dd>
<dt><b>unknown</b></dt>
<dd>Traffic no signature or heuristic recognised.</dd>
<dt><b>party</b></dt>
<dd><i>first</i>: operated by the vendor of the audited client or an affiliate the signature database names; <i>third</i>: any other
recognised vendor, such as analytics, error-reporting or advertising services; <i>unknown</i>: not recognised.</dd>
</dl>
<p class="note">The data class of a flow follows from its category, decided by the vendor signature database (or a heuristic) named in the
<code>rule</code> column of <code>flows.parquet</code>, with the facts it rested on in <code>evidence</code>. Encrypted payloads are not read:
a telemetry flow's size is measured, not its contents.</p>
"""


HTTP_DEFINITIONS = """
<dl>
<dt><b>HTTP egress</b></dt>
<dd>What the audited client sent through the proxy: request head plus body as sent (compressed) of every HTTP exchange, and the
WebSocket messages the client sent (<code>bytes_out</code> of <code>http.parquet</code>). These are HTTP-layer bytes,
decrypted; they travelled inside the TLS flows counted above (when the session has flows) and are never added to the flows' egress.</dd>
<dt><b>identifying fields</b></dt>
<dd>Key paths of request bodies whose names or values look like identifiers or personal data (email, phone, IP or MAC address, UUID,
device id, serial number, meeting id, a name seen elsewhere in the session). <i>Distinct values</i> counts the distinct salted hashes
of the first value at the path in each body: equal values join across exchanges without being stored.</dd>
<dt><b class="sg">content leaks</b></dt>
<dd>Fields whose values look like customer content (meeting titles, chat text, file names, transcripts) found in bodies that are not
content uploads, such as telemetry: customer content travelling as service-generated data.</dd>
</dl>
"""


def _figures(figures: dict[str, str]) -> str:
    """The figures, {title: inline SVG markup (:func:`egressaudit.report.figures.inline_svg`, escaped there)}."""
    return "".join(f'<figure>{svg}<figcaption class="note">{escape(title)}</figcaption></figure>' for title, svg in figures.items())


def _leak_row(rec: Mapping[Any, Any]) -> str:
    return "leak" if rec.get("content") else ""


def http_sections(data: ReportData) -> list[str]:
    """The HTTP part of the page: headline, tables, figure, field inventory, endpoints and clients."""
    hr = data.http
    if hr is None:
        return []
    h = hr.headline
    hd = HTTP_HEADERS
    ws = f"{h.websocket_messages:,} ({h.websocket_out:,} sent by the client)"
    cards = [
        _card(
            f"{h.exchanges:,}",
            f"HTTP {'exchange' if h.exchanges == 1 else 'exchanges'} with {plural(h.hosts, 'host')}"
            + (f" ({h.errors:,} with errors)" if h.errors else ""),
        ),
        _card(ws, "WebSocket message" if h.websocket_messages == 1 else "WebSocket messages"),
        _card(human_bytes(h.bytes_out), "HTTP requests sent (HTTP egress)"),
        _card(human_bytes(h.service_generated_bytes), f"service-generated data: {percent(h.service_generated_share)} of HTTP egress", "sg"),
        _card(human_bytes(h.customer_content_bytes), f"customer content: {percent(h.customer_content_share)} of HTTP egress", "cc"),
        _card(human_bytes(h.third_party_bytes), f"to third parties: {percent(h.third_party_share)} of HTTP egress"),
        _card(
            f"{h.identifying_paths:,}",
            f"identifying {'field' if h.identifying_paths == 1 else 'fields'} in request bodies, of {plural(h.fields, 'distinct field')} "
            f"inventoried (telemetry: {fields_text(h.telemetry)})",
        ),
        _card(
            f"{h.content_paths:,}",
            ("content-leak field" if h.content_paths == 1 else "content-leak fields")
            + (f": {', '.join(h.content_hosts)}" if h.content_hosts else ""),
            "sg" if h.content_paths else "",
        ),
    ]
    inv_cols = ["vendor", "host", "category", "key_path", "value_type", "exchanges", "occurrences", "distinct_values", "detectors", "content"]
    if hr.values_shown:
        inv_cols.append("values")
        values_note = "Values are shown in clear: the session was recorded with --keep-values and this report was written with --no-redact."
    elif hr.keep_values:
        values_note = "The session kept values in clear (--keep-values); they are not shown in a redacted report (write it with --no-redact)."
    else:
        values_note = "Values are not shown: only their salted hashes, counted as distinct values."
    skipped = pd.DataFrame([{"reason": k, "count": v} for k, v in hr.skipped.items()], columns=["reason", "count"])
    return [
        '<h2 id="http">HTTP exchanges</h2>',
        '<p class="note">Requests and WebSocket messages recorded by the HTTP proxy (or read from .mitm/.har files), decrypted: what the '
        "client sent, to which host, and which fields its request bodies carried.</p>",
        f'<div class="headline">{"".join(cards)}</div>',
        (f'<p class="note">Third-party vendors: {escape(", ".join(h.third_party_vendors))}.</p>' if h.third_party_vendors else ""),
        '<h3 id="http-data-class">HTTP egress by data class and category</h3>',
        table(
            hr.by_data_class_category,
            ["data_class", "category", "exchanges", "ws_messages", "bytes_out", "bytes_in", "share"],
            "no HTTP requests",
            headers=hd,
        ),
        table(hr.by_party, ["party", "exchanges", "ws_messages", "bytes_out", "bytes_in", "share"], "no HTTP requests", headers=hd),
        _figures(hr.figures),
        '<h3 id="http-hosts">HTTP egress by vendor and host</h3>',
        table(
            hr.by_host,
            ["vendor", "host", "party", "category", "exchanges", "ws_messages", "bytes_out", "fields", "identifier_fields", "share"],
            "no HTTP requests",
            headers=hd,
        ),
        '<h3 id="field-inventory">Field inventory: identifiers and content in request bodies</h3>',
        '<p class="note">Per host, the fields whose names or values look like identifiers or personal data; '
        f'rows in <span class="leak">red</span> carry content-leak detectors ({escape(", ".join(map(words, CONTENT_ORDER)))}). '
        f"{escape(values_note)}</p>",
        table(
            hr.inventory_by_host,
            ["vendor", "host", "identifying_paths", "content_paths", "detectors", "content"],
            "no identifying fields",
            row_class=_leak_row,
            cell_class={"content": "leak"},
        ),
        table(hr.inventory, inv_cols, "no identifying fields", row_class=_leak_row, cell_class={"content": "leak"}),
        '<h3 id="http-endpoints">Top endpoints</h3>',
        '<p class="note">Paths as recorded, query values redacted (<code>?k=…</code>).</p>',
        table(
            hr.top_endpoints,
            ["host", "method", "path", "category", "exchanges", "ws_messages", "bytes_out", "share"],
            "no HTTP requests",
            headers=hd,
        ),
        '<h3 id="http-clients">Clients</h3>',
        '<p class="note">Client addresses as the proxy saw them.</p>',
        table(hr.clients, ["client_ip", "exchanges", "ws_messages", "bytes_out", "share"], "no HTTP requests", headers=hd),
        '<h3 id="http-skipped">Undecodable bodies</h3>',
        table(skipped, ["reason", "count"], "none: every body was decoded"),
    ]


def flow_sections(data: ReportData) -> list[str]:
    """The flows part of the page: headline, egress by data class, figures, vendors, destinations, local hosts, skipped packets."""
    h = data.headline
    cards = [
        _card(human_bytes(h.egress_bytes), f"sent to remote networks ({h.egress_flows:,} of {plural(h.flows, 'flow')})"),
        _card(human_bytes(h.service_generated_bytes), f"service-generated data: {percent(h.service_generated_share)} of egress", "sg"),
        _card(human_bytes(h.customer_content_bytes), f"customer content: {percent(h.customer_content_share)} of egress", "cc"),
        _card(human_bytes(h.third_party_bytes), f"to third parties: {percent(h.third_party_share)} of egress"),
        _card(human_bytes(h.ingress_bytes), "received from remote networks"),
        _card(f"{len(h.vendors)}", ("vendor: " if len(h.vendors) == 1 else "vendors: ") + (", ".join(h.vendors) or "none recognised")),
    ]
    skipped_total = sum(data.skipped.values())
    return [
        '<h2 id="headline">Headline</h2>',
        f'<div class="headline">{"".join(cards)}</div>',
        f'<p class="note">Local traffic (not egress, left out of the totals): {plural(h.local_flows, "flow")}, '
        f"{escape(human_bytes(h.local_bytes_out))} sent."
        + (f" Third-party vendors: {escape(', '.join(h.third_party_vendors))}." if h.third_party_vendors else "")
        + "</p>",
        '<h2 id="data-class">Egress by data class</h2>',
        table(data.by_data_class, ["data_class", "flows", "bytes_out", "bytes_in", "share"]),
        table(data.by_data_class_category, ["data_class", "category", "flows", "bytes_out", "bytes_in", "share"], "no egress"),
        '<h2 id="figures">Figures</h2>',
        _figures(data.figures) or '<p class="note">no figures</p>',
        *(
            [
                '<h2 id="states">Egress by call state</h2>',
                '<p class="note">Bytes sent to remote networks while each marked state lasted (from its marker to the next; '
                "a flow's bytes spread evenly over its duration), by data class.</p>",
                table(data.by_state, STATE_COLUMNS, "no markers"),
            ]
            if not data.by_state.empty
            else []
        ),
        '<h2 id="vendors">Egress by vendor</h2>',
        table(data.by_party, ["party", "flows", "bytes_out", "bytes_in", "share"], "no egress"),
        table(data.by_vendor, ["vendor", "service", "party", "flows", "bytes_out", "bytes_in", "share"], "no egress"),
        '<h2 id="destinations">Top destinations</h2>',
        '<p class="note">Host name (TLS/QUIC SNI, HTTP Host or DNS) where one was seen, else the remote address.</p>',
        table(data.top_destinations, ["destination", "vendor", "party", "category", "flows", "bytes_out", "bytes_in", "share"], "no egress"),
        '<h2 id="local-hosts">Audited host addresses</h2>',
        table(data.local_hosts, ["local_ip", "flows", "bytes_out", "bytes_in", "share"], "no egress"),
        '<h2 id="skipped">Skipped packets</h2>',
        f'<p class="note">Packets that could not be analysed and are not in any flow: {skipped_total:,} in all, by reason.</p>',
        table(skipped_frame(data), ["reason", "count"], "none: every packet was analysed"),
    ]


def render_html(data: ReportData) -> str:
    """The whole report page: the flows part, the HTTP part, or both."""
    sid = _text(data.session.get("session_id")) or "session"
    notes = "".join(f'<p class="warn">{escape(n)}</p>' for n in data.notes)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>egressaudit report: {escape(sid)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>egressaudit report: {escape(sid)}</h1>",
        f'<p class="lead">{escape(data.sentence)}</p>',
        f'<p class="window">Capture window: {escape(window_text(data))}.</p>',
        notes,
        *(flow_sections(data) if data.has_flows else []),
        *http_sections(data),
        '<h2 id="session">Session</h2>',
        _kv(metadata_rows(data)),
        table(inputs_frame(data), ["file", "format", "size", "packets", "sha256"], "no inputs recorded"),
        '<h2 id="definitions">Definitions</h2>',
        DEFINITIONS,
        HTTP_DEFINITIONS if data.http is not None else "",
        f'<p class="note">egressaudit {escape(__version__)}</p>',
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
