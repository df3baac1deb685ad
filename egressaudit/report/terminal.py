"""The report's tables for the terminal, with rich."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from egressaudit.report.measures import fields_text, human_bytes, percent
from egressaudit.report.render import FORMATS, HEADERS, HTTP_HEADERS, NUMERIC, _text, metadata_rows
from egressaudit.report.summary import ReportData

STATE_SHORT = {"customer_content": "content", "service_generated": "service gen.", "service_generated_per_min": "per min"}


def _table(
    title: str, df: pd.DataFrame, columns: Sequence[str], empty: str = "none", headers: dict[str, str] | None = None, leak_style: bool = False
) -> Table:
    names = {**HEADERS, **(headers or {})}
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(names.get(c, c), justify="right" if c in NUMERIC else "left")
    if df.empty:
        t.add_row(empty, *[""] * (len(columns) - 1))
    for rec in df.to_dict("records"):
        style = "bold red" if leak_style and rec.get("content") else None
        t.add_row(*(Text(FORMATS.get(c, _text)(rec.get(c))) for c in columns), style=style)  # Text: no markup in the data
    return t


def print_report(data: ReportData, console: Console) -> None:
    """The flows part (headline, egress by data class, by vendor and party, top destinations, skipped counts) and the HTTP part."""
    meta = dict(metadata_rows(data))
    head = Table(title=f"egressaudit report: {meta.get('session') or 'session'}", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    if data.has_flows:
        h = data.headline
        head.add_row("egress (sent to remote networks)", f"{human_bytes(h.egress_bytes)} in {h.egress_flows:,} of {h.flows:,} flows")
        head.add_row("service generated data", f"{human_bytes(h.service_generated_bytes)} ({percent(h.service_generated_share)} of egress)")
        head.add_row("customer content", f"{human_bytes(h.customer_content_bytes)} ({percent(h.customer_content_share)} of egress)")
        head.add_row("to third parties", f"{human_bytes(h.third_party_bytes)} ({percent(h.third_party_share)} of egress)")
        head.add_row("received from remote networks", human_bytes(h.ingress_bytes))
        head.add_row("local traffic (not egress)", f"{h.local_flows:,} flows, {human_bytes(h.local_bytes_out)} sent")
        head.add_row("vendors", Text(", ".join(h.vendors) or "none recognised"))
        if h.third_party_vendors:
            head.add_row("third-party vendors", Text(", ".join(h.third_party_vendors)))
    if data.http is not None:
        hh = data.http.headline
        head.add_row(
            "HTTP exchanges", f"{hh.exchanges:,} with {hh.hosts:,} hosts; {hh.websocket_messages:,} WebSocket messages ({hh.websocket_out:,} sent)"
        )
        head.add_row("HTTP requests sent (HTTP egress)", human_bytes(hh.bytes_out))
        head.add_row(
            "HTTP service generated data", f"{human_bytes(hh.service_generated_bytes)} ({percent(hh.service_generated_share)} of HTTP egress)"
        )
        head.add_row("HTTP customer content", f"{human_bytes(hh.customer_content_bytes)} ({percent(hh.customer_content_share)} of HTTP egress)")
        head.add_row("HTTP to third parties", f"{human_bytes(hh.third_party_bytes)} ({percent(hh.third_party_share)} of HTTP egress)")
        head.add_row("identifying fields", f"{fields_text(hh.field_counts)} (telemetry: {fields_text(hh.telemetry)})")
        head.add_row("content-leak fields", Text(f"{hh.content_paths:,}" + (f" ({', '.join(hh.content_hosts)})" if hh.content_hosts else "")))
    for k in ("audited client", "analysed with", "signature database", "schema version", "local hosts", "field values"):
        if k in meta:
            head.add_row(k, Text(_text(meta.get(k))))
    console.print(head)
    for note in data.notes:
        console.print(f"[yellow]{escape(note)}[/yellow]")
    if not data.by_state.empty:
        cols = ["state", "from", "seconds", "customer_content", "service_generated", "service_generated_per_min"]  # (the page has them all)
        console.print(_table("egress by call state (from each marker to the next)", data.by_state, cols, "no markers", headers=STATE_SHORT))
    if data.has_flows:
        console.print(
            _table(
                "egress by data class and category",
                data.by_data_class_category,
                ["data_class", "category", "flows", "bytes_out", "bytes_in", "share"],
                "no egress",
            )
        )
        console.print(
            _table(
                "egress by vendor, service and party",
                data.by_vendor,
                ["vendor", "service", "party", "flows", "bytes_out", "bytes_in", "share"],
                "no egress",
            )
        )
        console.print(
            _table(
                "top destinations", data.top_destinations, ["destination", "vendor", "party", "category", "flows", "bytes_out", "share"], "no egress"
            )
        )
        skipped = pd.DataFrame([{"reason": k, "count": v} for k, v in data.skipped.items()], columns=["reason", "count"])
        console.print(_table(f"skipped packets ({sum(data.skipped.values()):,})", skipped, ["reason", "count"], "none"))
    if data.http is not None:
        print_http(data, console)


def print_http(data: ReportData, console: Console) -> None:
    """HTTP egress by data class and category, by vendor and host, and the field inventory (content leaks in bold red)."""
    hr = data.http
    assert hr is not None
    console.print(
        _table(
            "HTTP egress by data class and category",
            hr.by_data_class_category,
            ["data_class", "category", "exchanges", "ws_messages", "bytes_out", "share"],
            "no HTTP requests",
            HTTP_HEADERS,
        )
    )
    console.print(
        _table(
            "HTTP egress by vendor and host",
            hr.by_host,
            ["vendor", "host", "party", "category", "exchanges", "ws_messages", "bytes_out", "fields", "identifier_fields", "share"],
            "no HTTP requests",
            HTTP_HEADERS,
        )
    )
    cols = ["vendor", "host", "category", "key_path", "exchanges", "distinct_values", "detectors", "content"]
    if hr.values_shown:
        cols.append("values")
    console.print(_table("identifying fields in request bodies (content leaks in red)", hr.inventory, cols, "none", leak_style=True))
