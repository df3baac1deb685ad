"""The report's tables for the terminal, with rich."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table

from egressaudit.report.render import FORMATS, HEADERS, NUMERIC, _text, metadata_rows
from egressaudit.report.summary import ReportData, human_bytes, percent


def _table(title: str, df: pd.DataFrame, columns: Sequence[str], empty: str = "none") -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(HEADERS.get(c, c), justify="right" if c in NUMERIC else "left")
    if df.empty:
        t.add_row(empty, *[""] * (len(columns) - 1))
    for rec in df.to_dict("records"):
        t.add_row(*(FORMATS.get(c, _text)(rec.get(c)) for c in columns))
    return t


def print_report(data: ReportData, console: Console) -> None:
    """Headline, egress by data class, by vendor and party, top destinations and skipped counts."""
    h = data.headline
    meta = dict(metadata_rows(data))
    head = Table(title=f"egressaudit report: {meta.get('session') or 'session'}", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("egress (sent to remote networks)", f"{human_bytes(h.egress_bytes)} in {h.egress_flows:,} of {h.flows:,} flows")
    head.add_row("service generated data", f"{human_bytes(h.service_generated_bytes)} ({percent(h.service_generated_share)} of egress)")
    head.add_row("customer content", f"{human_bytes(h.customer_content_bytes)} ({percent(h.customer_content_share)} of egress)")
    head.add_row("to third parties", f"{human_bytes(h.third_party_bytes)} ({percent(h.third_party_share)} of egress)")
    head.add_row("received from remote networks", human_bytes(h.ingress_bytes))
    head.add_row("local traffic (not egress)", f"{h.local_flows:,} flows, {human_bytes(h.local_bytes_out)} sent")
    head.add_row("vendors", ", ".join(h.vendors) or "none recognised")
    if h.third_party_vendors:
        head.add_row("third-party vendors", ", ".join(h.third_party_vendors))
    for k in ("audited client", "analysed with", "signature database", "schema version", "local hosts"):
        head.add_row(k, _text(meta.get(k)))
    console.print(head)
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
        _table("top destinations", data.top_destinations, ["destination", "vendor", "party", "category", "flows", "bytes_out", "share"], "no egress")
    )
    skipped = pd.DataFrame([{"reason": k, "count": v} for k, v in data.skipped.items()], columns=["reason", "count"])
    console.print(_table(f"skipped packets ({sum(data.skipped.values()):,})", skipped, ["reason", "count"], "none"))
