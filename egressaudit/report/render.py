"""The self-contained ``report.html``: inline CSS, figures as relative ``figures/*.png`` links, every value escaped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import PurePath
from typing import Any

import pandas as pd

from egressaudit import __version__
from egressaudit.report.summary import ReportData, human_bytes, percent

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
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em}blockquote{margin:.4em 0 .4em 1em;padding-left:.8em;border-left:3px solid #ccc;color:#333}
"""

Formatter = Callable[[Any], str]


def _int(v: Any) -> str:
    return f"{int(v):,}"


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


NUMERIC = {"flows", "bytes_out", "bytes_in", "share", "count"}
FORMATS: dict[str, Formatter] = {"flows": _int, "bytes_out": human_bytes, "bytes_in": human_bytes, "share": percent, "count": _int}
HEADERS: dict[str, str] = {
    "data_class": "data class",
    "bytes_out": "sent (egress)",
    "bytes_in": "received",
    "share": "share of egress",
    "local_ip": "local host",
}


def table(df: pd.DataFrame, columns: Sequence[str], empty: str = "none") -> str:
    """An HTML table of ``columns`` of ``df``, values formatted and escaped."""
    head = "".join(f"<th>{escape(HEADERS.get(c, c))}</th>" for c in columns)
    if df.empty:
        return f'<table><tr>{head}</tr><tr><td colspan="{len(columns)}" class="note">{escape(empty)}</td></tr></table>'
    rows = []
    for rec in df.to_dict("records"):
        cells = []
        for c in columns:
            v = rec.get(c)
            text = FORMATS.get(c, _text)(v)
            title = f' title="{int(v):,} bytes"' if c in ("bytes_out", "bytes_in") and v is not None else ""
            cls = ' class="num"' if c in NUMERIC else (' class="mono"' if c in ("destination", "local_ip") else "")
            cells.append(f"<td{cls}{title}>{escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_text(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _card(value: str, label: str, cls: str = "") -> str:
    c = f" {cls}" if cls else ""
    return f'<div class="card"><div class="v{c}">{escape(value)}</div><div class="l">{escape(label)}</div></div>'


def metadata_rows(data: ReportData) -> list[tuple[str, Any]]:
    """Session metadata as (label, value) pairs, local addresses redacted."""
    s = data.session
    red = data.redactor
    tool = s.get("tool") if isinstance(s.get("tool"), dict) else {}
    sigs = s.get("signatures") if isinstance(s.get("signatures"), dict) else {}
    counts = s.get("counts") if isinstance(s.get("counts"), dict) else {}
    assert isinstance(tool, dict) and isinstance(sigs, dict) and isinstance(counts, dict)
    client = s.get("audited_client") or "not detected"
    if s.get("audited_client_source"):
        client = f"{client} ({s['audited_client_source']})"
    nets = s.get("local_nets") or []
    hosts = s.get("local_hosts") or []
    sig_text = str(sigs.get("version") or "unknown")
    if sigs.get("vendors") is not None or sigs.get("rules") is not None:
        sig_text += f" ({sigs.get('vendors', '?')} vendors, {sigs.get('rules', '?')} rules)"
    rows: list[tuple[str, Any]] = [
        ("session", s.get("session_id")),
        ("analysed", s.get("created")),
        ("analysed with", f"{tool.get('name', 'egressaudit')} {tool.get('version', '?')}"),
        ("signature database", sig_text),
        ("schema version", s.get("schema_version")),
        ("report written by", f"egressaudit {__version__}"),
        ("audited client", client),
        ("local networks", "(redacted)" if data.redacted and nets else (", ".join(map(str, nets)) or "detected")),
        ("local hosts", ", ".join(str(red(str(h))) for h in hosts) or "-"),
        ("packets", f"{int(counts['packets']):,}" if isinstance(counts.get("packets"), int) else "-"),
        ("flows", f"{data.headline.flows:,}"),
        ("idle timeout", f"{s['idle_timeout_s']} s" if s.get("idle_timeout_s") is not None else "-"),
        ("local addresses", "redacted (local-N tokens); remote addresses shown" if data.redacted else "shown (--no-redact)"),
    ]
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
<dt><b class="sg">service generated data</b></dt>
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


def render_html(data: ReportData) -> str:
    """The whole report page."""
    h = data.headline
    sid = _text(data.session.get("session_id")) or "session"
    cards = [
        _card(human_bytes(h.egress_bytes), f"sent to remote networks ({h.egress_flows:,} of {h.flows:,} flows)"),
        _card(human_bytes(h.service_generated_bytes), f"service generated data: {percent(h.service_generated_share)} of egress", "sg"),
        _card(human_bytes(h.customer_content_bytes), f"customer content: {percent(h.customer_content_share)} of egress", "cc"),
        _card(human_bytes(h.third_party_bytes), f"to third parties: {percent(h.third_party_share)} of egress"),
        _card(human_bytes(h.ingress_bytes), "received from remote networks"),
        _card(f"{len(h.vendors)}", "vendors: " + (", ".join(h.vendors) or "none recognised")),
    ]
    skipped_total = sum(data.skipped.values())
    figs = "".join(
        f'<figure><img src="{escape(src)}" alt="{escape(alt)}"><figcaption class="note">{escape(alt)}</figcaption></figure>'
        for alt, src in data.figures.items()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>egressaudit report: {escape(sid)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>egressaudit report: {escape(sid)}</h1>",
        '<p class="note">What the audited host sent, to whom, and of what kind: customer content or service generated data.</p>',
        '<h2 id="headline">Headline</h2>',
        f'<div class="headline">{"".join(cards)}</div>',
        f'<p class="note">Local traffic (not egress, left out of the totals): {h.local_flows:,} flows, {escape(human_bytes(h.local_bytes_out))} sent.'
        + (f" Third-party vendors: {escape(', '.join(h.third_party_vendors))}." if h.third_party_vendors else "")
        + "</p>",
        '<h2 id="data-class">Egress by data class</h2>',
        table(data.by_data_class, ["data_class", "flows", "bytes_out", "bytes_in", "share"]),
        table(data.by_data_class_category, ["data_class", "category", "flows", "bytes_out", "bytes_in", "share"], "no egress"),
        '<h2 id="figures">Figures</h2>',
        figs or '<p class="note">no figures</p>',
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
        '<h2 id="session">Session</h2>',
        _kv(metadata_rows(data)),
        table(inputs_frame(data), ["file", "format", "size", "packets", "sha256"], "no inputs recorded"),
        '<h2 id="definitions">Definitions</h2>',
        DEFINITIONS,
        f'<p class="note">egressaudit {escape(__version__)}</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
