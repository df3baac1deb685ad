"""The report's tables for the terminal, with rich.

Nothing is ever cut: a cell too wide for its column wraps (host names and addresses fold onto the next line), so
every name and number reads in full in any terminal; a console as wide as the tables (``report --wide``) keeps each
row on one line.  Data classes and categories read in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from egressaudit.report.measures import fields_text, human_bytes, percent, plural
from egressaudit.report.render import FORMATS, HEADERS, HTTP_HEADERS, NUMERIC, _text, metadata_rows, window_text
from egressaudit.report.summary import ReportData

STATE_SHORT = {"customer_content": "customer content", "service_generated": "service-\ngenerated", "service_generated_per_min": "per min"}
#: Shorter headers than the page's, so that more of a row fits in 80 columns (the table titles say what is shared).
SHORT: dict[str, str] = {"bytes_out": "sent", "bytes_in": "received", "share": "share", "ws_messages": "websocket msgs"}
#: Columns of names that may fold anywhere (host names, addresses, key paths): at least this wide when folded.
NAME_MIN = 12
NAMES = frozenset(("destination", "host", "key_path", "local_ip", "client_ip", "values", "path", "state", "note"))
#: Columns left out first when a table cannot fit the terminal even with its names folded (1 first; others stay).
OPTIONAL: dict[str, int] = {
    "fields": 1, "ws_messages": 2, "distinct_values": 3, "bytes_in": 4, "identifier_fields": 5, "exchanges": 6, "content": 7,
    "flows": 8, "party": 9, "category": 10, "service": 11,
}  # fmt: skip


@dataclass(frozen=True)
class Col:
    """A terminal column: its header, how its cells may break (``name``: anywhere, ``words``: between words,
    ``whole``: never, ``number``: never, and right-aligned), and when it is left out of a terminal too narrow for the
    table (0: never)."""

    header: str
    kind: str = "words"
    drop: int = 0

    @property
    def numeric(self) -> bool:
        return self.kind == "number"


def _widest(texts: Sequence[str]) -> int:
    return max((cell_len(line) for t in texts for line in t.split("\n")), default=0)


def _minimum(col: Col, cells: Sequence[str]) -> int:
    head = _widest(col.header.split())
    if col.kind in ("number", "whole"):
        body = _widest(cells)
    elif col.kind == "name":
        body = min(_widest(cells), NAME_MIN)
    else:
        body = _widest([w for c in cells for w in c.split()])
    return max(head, body, 1)


def layout(width: int, cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> tuple[list[int], list[int] | None]:
    """Which columns to show (their indexes) and how wide to make them (None: as wide as they need) in ``width``
    terminal columns, so that no cell is cut: names fold, words wrap between words, numbers stay whole; columns are
    left out (``Col.drop``, 1 first) only when the rest cannot fit even so.  In a terminal too narrow for any of
    that, everything folds."""

    def overhead(n: int) -> int:  # rich's default box: a line before each column and after the last, a space each side
        return 3 * n + 1

    cells = [[r[i] for r in rows] for i in range(len(cols))]
    natural = [max(_widest(cells[i]), _widest([c.header]) if not cells[i] else _minimum(c, []), 1) for i, c in enumerate(cols)]
    kept = list(range(len(cols)))
    if sum(natural) + overhead(len(kept)) <= width:
        return kept, None
    least = {i: _minimum(c, cells[i]) for i, c in enumerate(cols)}
    for i in sorted((i for i, c in enumerate(cols) if c.drop), key=lambda i: cols[i].drop):
        if sum(least[k] for k in kept) + overhead(len(kept)) <= width:
            break
        kept.remove(i)
    room = max(len(kept), width - overhead(len(kept)))
    mins = [least[i] for i in kept]
    if sum(mins) > room:  # (too narrow for whole words and numbers: share it out, everything folds)
        widths = [max(1, m * room // sum(mins)) for m in mins]
        return kept, widths
    widths = list(mins)
    want = [max(0, natural[i] - least[i]) for i in kept]
    spare, total = room - sum(widths), sum(want)
    if total:
        for j, w in enumerate(want):
            widths[j] += min(w, spare * w // total)
        for j in sorted(range(len(kept)), key=lambda j: want[j] - (widths[j] - mins[j]), reverse=True):  # (what rounding left)
            if room - sum(widths) <= 0:
                break
            widths[j] += min(room - sum(widths), want[j] - (widths[j] - mins[j]))
    return kept, widths


def fitted_table(
    console: Console, title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[str]], styles: Sequence[str | None] = (), **kw: object
) -> tuple[Table, list[str]]:
    """A table of ``rows`` (text cells, shown as text, never markup) that fits the console without cutting a cell
    (:func:`layout`); and the headers of the columns it left out."""
    kept, widths = layout(console.width, cols, rows)
    t = Table(title=title, title_justify="left", **kw)  # type: ignore[arg-type]
    for j, i in enumerate(kept):
        c = cols[i]
        t.add_column(c.header, justify="right" if c.numeric else "left", overflow="fold", width=None if widths is None else widths[j])
    for k, r in enumerate(rows):
        t.add_row(*(Text(r[i]) for i in kept), style=styles[k] if k < len(styles) else None)
    return t, [cols[i].header for i in range(len(cols)) if i not in kept]


def print_fitted(console: Console, title: str, cols: Sequence[Col], rows: Sequence[Sequence[str]], styles: Sequence[str | None] = ()) -> None:
    """:func:`fitted_table`, printed, with a line naming the columns it left out."""
    t, left_out = fitted_table(console, title, cols, rows, styles)
    console.print(t)
    if left_out:
        console.print(Text(f"(left out at this width: {', '.join(left_out)}; --wide shows every column)", style="dim"))


def _table(
    console: Console,
    title: str,
    df: pd.DataFrame,
    columns: Sequence[str],
    empty: str = "none",
    headers: dict[str, str] | None = None,
    leak_style: bool = False,
) -> None:
    names = {**HEADERS, **SHORT, **(headers or {})}
    cols = [Col(names.get(c, c), "number" if c in NUMERIC else ("name" if c in NAMES else "words"), OPTIONAL.get(c, 0)) for c in columns]
    recs = df.to_dict("records")
    rows = [[FORMATS.get(c, _text)(rec.get(c)) for c in columns] for rec in recs] or [[empty, *[""] * (len(columns) - 1)]]
    styles = [("bold red" if leak_style and rec.get("content") else None) for rec in recs]
    print_fitted(console, title, cols, rows, styles)


def _kv(rows: list[list[str]], key: str, value: str) -> None:
    rows.append([key, value])


def print_report(data: ReportData, console: Console) -> None:
    """The sentence that answers the question, the capture window, the headline, and the tables: the flows part
    (egress by call state, data class, vendor and party, top destinations, skipped counts) and the HTTP part."""
    meta = dict(metadata_rows(data))
    console.print(Text(f"egressaudit report: {meta.get('session') or 'session'}", style="bold"))
    console.print(Text(data.sentence))
    console.print(Text(f"capture window: {window_text(data)}", style="dim"))
    head: list[list[str]] = []
    if data.has_flows:
        h = data.headline
        _kv(head, "egress (sent to remote networks)", f"{human_bytes(h.egress_bytes)} in {h.egress_flows:,} of {plural(h.flows, 'flow')}")
        _kv(head, "service-generated data", f"{human_bytes(h.service_generated_bytes)} ({percent(h.service_generated_share)} of egress)")
        _kv(head, "customer content", f"{human_bytes(h.customer_content_bytes)} ({percent(h.customer_content_share)} of egress)")
        _kv(head, "to third parties", f"{human_bytes(h.third_party_bytes)} ({percent(h.third_party_share)} of egress)")
        _kv(head, "received from remote networks", human_bytes(h.ingress_bytes))
        _kv(head, "local traffic (not egress)", f"{plural(h.local_flows, 'flow')}, {human_bytes(h.local_bytes_out)} sent")
        _kv(head, "vendors", ", ".join(h.vendors) or "none recognised")
        if h.third_party_vendors:
            _kv(head, "third-party vendors", ", ".join(h.third_party_vendors))
    if data.http is not None:
        hh = data.http.headline
        _kv(
            head,
            "HTTP exchanges",
            f"{hh.exchanges:,} with {plural(hh.hosts, 'host')}; {plural(hh.websocket_messages, 'WebSocket message')} ({hh.websocket_out:,} sent)",
        )
        _kv(head, "HTTP requests sent (HTTP egress)", human_bytes(hh.bytes_out))
        _kv(head, "HTTP service-generated data", f"{human_bytes(hh.service_generated_bytes)} ({percent(hh.service_generated_share)} of HTTP egress)")
        _kv(head, "HTTP customer content", f"{human_bytes(hh.customer_content_bytes)} ({percent(hh.customer_content_share)} of HTTP egress)")
        _kv(head, "HTTP to third parties", f"{human_bytes(hh.third_party_bytes)} ({percent(hh.third_party_share)} of HTTP egress)")
        _kv(head, "identifying fields", f"{fields_text(hh.field_counts)} (telemetry: {fields_text(hh.telemetry)})")
        _kv(head, "content-leak fields", f"{hh.content_paths:,}" + (f" ({', '.join(hh.content_hosts)})" if hh.content_hosts else ""))
    for k in ("audited client", "analysed with", "signature database", "schema version", "local hosts", "field values"):
        if k in meta:
            _kv(head, k, _text(meta.get(k)))
    t, _ = fitted_table(console, None, [Col("", "whole"), Col("", "name")], head, show_header=False)
    t.columns[0].style = "bold"
    console.print(t)
    for note in data.notes:
        console.print(f"[yellow]{escape(note)}[/yellow]")
    if not data.by_state.empty:
        cols = ["state", "from", "seconds", "customer_content", "service_generated", "service_generated_per_min"]  # (the page has them all)
        _table(console, "egress by call state (from each marker to the next)", data.by_state, cols, "no markers", STATE_SHORT)
    if data.has_flows:
        _table(
            console,
            "egress by data class and category (share: of all egress)",
            data.by_data_class_category,
            ["data_class", "category", "flows", "bytes_out", "bytes_in", "share"],
            "no egress",
        )
        _table(
            console,
            "egress by vendor, service and party",
            data.by_vendor,
            ["vendor", "service", "party", "flows", "bytes_out", "bytes_in", "share"],
            "no egress",
        )
        cols = ["destination", "vendor", "party", "category", "flows", "bytes_out", "share"]
        _table(console, "top destinations", data.top_destinations, cols, "no egress")
        skipped = pd.DataFrame([{"reason": k, "count": v} for k, v in data.skipped.items()], columns=["reason", "count"])
        _table(console, f"skipped packets ({sum(data.skipped.values()):,})", skipped, ["reason", "count"], "none")
    if data.http is not None:
        print_http(data, console)


def print_http(data: ReportData, console: Console) -> None:
    """HTTP egress by data class and category, by vendor and host, and the field inventory (content leaks in bold red)."""
    hr = data.http
    assert hr is not None
    short = {**HTTP_HEADERS, **SHORT, "bytes_out": "requests sent", "identifier_fields": "identifying"}
    _table(
        console,
        "HTTP egress by data class and category (share: of HTTP egress)",
        hr.by_data_class_category,
        ["data_class", "category", "exchanges", "ws_messages", "bytes_out", "share"],
        "no HTTP requests",
        short,
    )
    _table(
        console,
        "HTTP egress by vendor and host (fields: in request bodies, identifying: of them)",
        hr.by_host,
        ["vendor", "host", "party", "category", "exchanges", "ws_messages", "bytes_out", "fields", "identifier_fields", "share"],
        "no HTTP requests",
        short,
    )
    cols = ["vendor", "host", "category", "key_path", "exchanges", "distinct_values", "detectors", "content"]
    if hr.values_shown:
        cols.append("values")
    _table(console, "identifying fields in request bodies (content leaks in red)", hr.inventory, cols, "none", leak_style=True)
