"""The report's HTTP numbers: pure pandas functions on the ``http`` and ``fields`` tables.

*HTTP egress* is what the audited client sent through the proxy: the
``bytes_out`` (request head plus body as sent, compressed) of the rows whose
``direction`` is ``"out"`` (every HTTP exchange, and WebSocket messages from
the client).  These are bytes at the HTTP layer, after TLS was removed; they
are not IP bytes, so they are never added to the flows' egress.  Responses
(``bytes_in``) are carried along for context only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from egressaudit.http.query import redact_query
from egressaudit.report.measures import (
    CATEGORY_ORDER,
    DATA_CLASS_ORDER,
    NONE,
    PARTY_ORDER,
    FieldCounts,
    Recipients,
    Redactor,
    field_counts,
    field_table,
    joined,
    label,
    order,
    recipients,
    share,
)
from egressaudit.taxonomy import Category, DataClass, Party

#: Distinct clear-text values shown per key path, when values are shown at all.
MAX_VALUES = 3
#: Clear-text values are cut to this many characters.
MAX_VALUE_CHARS = 60

COUNT_COLUMNS = ("exchanges", "ws_messages", "bytes_out", "bytes_in", "fields", "identifier_fields")


def with_out_bytes(http: pd.DataFrame) -> pd.DataFrame:
    """``http`` with ``_out``: bytes_out of outgoing rows, 0 for incoming WebSocket messages."""
    if http.empty:
        return http.assign(_out=pd.Series([], dtype="int64"))
    out = http["bytes_out"].where(http["direction"] == "out", 0).fillna(0).astype("int64")
    return http.assign(_out=out)


def _grouped(http: pd.DataFrame, keys: list[str], total: int) -> pd.DataFrame:
    cols = [*keys, *COUNT_COLUMNS, "share"]
    if http.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object if c in keys else ("float64" if c == "share" else "int64")) for c in cols})
    df = with_out_bytes(http)
    df = df.assign(
        **{k: label(df[k]) for k in keys},
        _x=(df["kind"] == "http").astype("int64"),
        _w=(df["kind"] == "websocket").astype("int64"),
        _r=df["bytes_in"].fillna(0).astype("int64"),
        _f=df["field_count"].fillna(0).astype("int64"),
        _i=df["identifier_fields"].fillna(0).astype("int64"),
    )
    g = (
        df.groupby(keys, sort=False)
        .agg(
            exchanges=("_x", "sum"),
            ws_messages=("_w", "sum"),
            bytes_out=("_out", "sum"),
            bytes_in=("_r", "sum"),
            fields=("_f", "sum"),
            identifier_fields=("_i", "sum"),
        )
        .reset_index()
    )
    for c in COUNT_COLUMNS:
        g[c] = g[c].astype("int64")
    g["share"] = g["bytes_out"] / total if total else 0.0
    return g[cols]


def total_out(http: pd.DataFrame) -> int:
    """HTTP egress: request bytes of every outgoing exchange and WebSocket message."""
    return int(with_out_bytes(http)["_out"].sum()) if not http.empty else 0


def by_data_class_category(http: pd.DataFrame) -> pd.DataFrame:
    """HTTP egress by data class and category: data_class, category, exchanges, ws_messages, request/response bytes, fields, share."""
    g = _grouped(http, ["data_class", "category"], total_out(http))
    if g.empty:
        return g
    g = g.assign(_d=order(g["data_class"], DATA_CLASS_ORDER), _c=order(g["category"], CATEGORY_ORDER))
    return g.sort_values(["_d", "bytes_out", "_c"], ascending=[True, False, True]).drop(columns=["_d", "_c"]).reset_index(drop=True)


def by_party(http: pd.DataFrame) -> pd.DataFrame:
    """HTTP egress by party: party, exchanges, ..., share."""
    g = _grouped(http, ["party"], total_out(http))
    if g.empty:
        return g
    return g.assign(_p=order(g["party"], PARTY_ORDER)).sort_values("_p").drop(columns="_p").reset_index(drop=True)


def by_host(http: pd.DataFrame) -> pd.DataFrame:
    """HTTP egress by vendor, host, party and category; largest first."""
    g = _grouped(http, ["vendor", "host", "party", "category"], total_out(http))
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "exchanges", "vendor", "host"], ascending=[False, False, True, True]).reset_index(drop=True)


def by_vendor_category(http: pd.DataFrame) -> pd.DataFrame:
    """HTTP egress by vendor and category (for the figure): vendor, category, ..., share; largest first."""
    g = _grouped(http, ["vendor", "category"], total_out(http))
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "vendor"], ascending=[False, True]).reset_index(drop=True)


def top_endpoints(http: pd.DataFrame, n: int = 20, redact: bool = True) -> pd.DataFrame:
    """The ``n`` endpoints (host, method, path) that received the most HTTP egress; query values redacted when ``redact``."""
    if not http.empty:
        http = http.assign(path=http["path"].map(lambda p: redact_query(p) if isinstance(p, str) else p) if redact else http["path"])
    g = _grouped(http, ["host", "method", "path", "category"], total_out(http))
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "exchanges", "host", "path"], ascending=[False, False, True, True]).head(n).reset_index(drop=True)


def by_client(http: pd.DataFrame) -> pd.DataFrame:
    """HTTP egress per client address as the proxy saw it: client_ip, exchanges, ..., share."""
    g = _grouped(http, ["client_ip"], total_out(http))
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "client_ip"], ascending=[False, True]).reset_index(drop=True)


def _values(s: pd.Series) -> str:
    seen: list[str] = []
    for v in s:
        if isinstance(v, str) and v not in seen:
            seen.append(v)
        if len(seen) >= MAX_VALUES:
            break
    return " | ".join(v if len(v) <= MAX_VALUE_CHARS else v[: MAX_VALUE_CHARS - 1] + "…" for v in seen)


def field_inventory(fields: pd.DataFrame, show_values: bool = False) -> pd.DataFrame:
    """Key paths whose values look like identifiers or content, per vendor, host and category.

    The fields of :func:`~egressaudit.report.measures.field_table` (the unit ``egressaudit inventory`` counts too) of
    which at least one body fired a detector.  Columns: vendor, host, category, key_path, value_type, exchanges
    (bodies holding the path), occurrences, distinct_values (distinct ``value_hash``: distinct first values across
    bodies), detectors (all, comma-separated), content (the content-leak detectors among them, left empty for
    ``content_upload`` bodies, where content is expected), and ``values`` (up to :data:`MAX_VALUES` clear-text
    values) only when ``show_values``.  Content leaks first, then by vendor, host and path.
    """
    g = field_table(fields, _values if show_values else None)
    g = g[g["detectors"].map(bool).astype(bool)]
    g = g.assign(detectors=g["detectors"].map(joined), content=g["content"].map(joined))
    g = g.assign(_leak=(g["content"] == "").astype(int))
    out: pd.DataFrame = g.sort_values(["_leak", "vendor", "host", "category", "key_path"]).drop(columns="_leak").reset_index(drop=True)
    return out


def inventory_by_host(inventory: pd.DataFrame) -> pd.DataFrame:
    """Per vendor and host: identifying key paths, content-leak key paths, the detectors that fired and the content leaks."""
    cols = ["vendor", "host", "identifying_paths", "content_paths", "detectors", "content"]
    if inventory.empty:
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c.endswith("_paths") else object) for c in cols})
    split = inventory.assign(
        _d=inventory["detectors"].map(lambda s: [x for x in s.split(", ") if x]),
        _c=inventory["content"].map(lambda s: [x for x in s.split(", ") if x]),
        _is_c=(inventory["content"] != "").astype("int64"),
    )
    g = (
        split.groupby(["vendor", "host"], sort=False)
        .agg(
            identifying_paths=("key_path", "nunique"),
            content_paths=("_is_c", "sum"),
            detectors=("_d", lambda s: joined(d for ds in s for d in ds)),
            content=("_c", lambda s: joined(d for ds in s for d in ds)),
        )
        .reset_index()
    )
    g["identifying_paths"] = g["identifying_paths"].astype("int64")
    g["content_paths"] = g["content_paths"].astype("int64")
    return g.sort_values(["content_paths", "identifying_paths", "vendor", "host"], ascending=[False, False, True, True]).reset_index(drop=True)[cols]


@dataclass(frozen=True)
class HttpHeadline:
    """The HTTP section's top numbers.  Shares are fractions of HTTP egress (request bytes out), None without any."""

    exchanges: int
    websocket_messages: int
    websocket_out: int
    bytes_out: int
    bytes_in: int
    service_generated_bytes: int
    service_generated_share: float | None
    customer_content_bytes: int
    customer_content_share: float | None
    third_party_bytes: int
    third_party_share: float | None
    hosts: int
    errors: int
    fields: int
    """Distinct fields (:func:`~egressaudit.report.measures.field_table`) in the bodies of every category inventoried."""
    identifying_paths: int
    content_paths: int
    vendors: list[str] = field(default_factory=list)
    third_party_vendors: list[str] = field(default_factory=list)
    content_hosts: list[str] = field(default_factory=list)
    telemetry: FieldCounts = FieldCounts(0, 0, 0)
    """The same counts for telemetry bodies alone: what ``egressaudit inventory`` lists by default."""
    service_generated_recipients: Recipients = Recipients(0, 0, 0, 0)
    """Who received the service-generated requests: vendors (first and third parties), hosts of no known vendor."""

    @property
    def field_counts(self) -> FieldCounts:
        """``fields``, ``identifying_paths`` and ``content_paths`` (every category inventoried)."""
        return FieldCounts(self.fields, self.identifying_paths, self.content_paths)


def headline(http: pd.DataFrame, fields: pd.DataFrame, inventory: pd.DataFrame | None = None) -> HttpHeadline:
    """Exchanges, WebSocket messages, HTTP egress and how much of it was service generated, customer content, or to third parties."""
    inv = field_inventory(fields) if inventory is None else inventory
    df = with_out_bytes(http)
    total = int(df["_out"].sum()) if not df.empty else 0

    def out(mask: pd.Series) -> int:
        return int(df["_out"][mask].sum()) if not df.empty else 0

    sg = out(df["data_class"] == DataClass.service_generated.value) if not df.empty else 0
    cc = out(df["data_class"] == DataClass.customer_content.value) if not df.empty else 0
    third = df["party"] == Party.third.value if not df.empty else pd.Series([], dtype=bool)
    tp = out(third) if not df.empty else 0
    vendors = sorted({str(v) for v in df["vendor"] if isinstance(v, str) and v}) if not df.empty else []
    tpv = sorted({str(v) for v in df["vendor"][third] if isinstance(v, str) and v}) if not df.empty else []
    leak_rows = inv[inv["content"] != ""] if not inv.empty else inv
    counts = field_counts(fields)
    sent = df[(df["data_class"] == DataClass.service_generated.value) & (df["direction"] == "out")] if not df.empty else df
    host = sent["host"].astype(object).where(sent["host"].notna(), sent["remote_ip"].astype(object)) if not sent.empty else None
    rec = recipients(sent["vendor"], sent["party"], host) if host is not None else Recipients(0, 0, 0, 0)
    return HttpHeadline(
        exchanges=int((df["kind"] == "http").sum()) if not df.empty else 0,
        websocket_messages=int((df["kind"] == "websocket").sum()) if not df.empty else 0,
        websocket_out=int(((df["kind"] == "websocket") & (df["direction"] == "out")).sum()) if not df.empty else 0,
        bytes_out=total,
        bytes_in=int(df["bytes_in"].fillna(0).sum()) if not df.empty else 0,
        service_generated_bytes=sg,
        service_generated_share=share(sg, total),
        customer_content_bytes=cc,
        customer_content_share=share(cc, total),
        third_party_bytes=tp,
        third_party_share=share(tp, total),
        hosts=int(df["host"].dropna().nunique()) if not df.empty else 0,
        errors=int(df["error"].notna().sum()) if not df.empty else 0,
        fields=counts.fields,
        identifying_paths=counts.identifying,
        content_paths=counts.content,
        vendors=vendors,
        third_party_vendors=tpv,
        content_hosts=sorted({str(h) for h in leak_rows["host"]}) if not leak_rows.empty else [],
        telemetry=field_counts(fields, Category.telemetry.value),
        service_generated_recipients=rec,
    )


@dataclass
class HttpReport:
    """The HTTP section: every table the page and the terminal show, client addresses already redacted."""

    headline: HttpHeadline
    by_data_class_category: pd.DataFrame
    by_party: pd.DataFrame
    by_host: pd.DataFrame
    by_vendor_category: pd.DataFrame
    top_endpoints: pd.DataFrame
    clients: pd.DataFrame
    inventory: pd.DataFrame
    inventory_by_host: pd.DataFrame
    values_shown: bool
    keep_values: bool
    skipped: dict[str, int]
    figures: dict[str, str] = field(default_factory=dict)


def http_meta(session: dict[str, Any]) -> dict[str, Any]:
    """The ``http`` section of session.json, or an empty dict."""
    h = session.get("http")
    return h if isinstance(h, dict) else {}


def summarize_http(http: pd.DataFrame, fields: pd.DataFrame, session: dict[str, Any], red: Redactor, top: int = 20) -> HttpReport:
    """The HTTP section from the http and fields tables.

    Field values are shown only when the session was recorded with
    ``keep_values`` and the report is not redacted.
    """
    meta = http_meta(session)
    keep_values = meta.get("keep_values") is True
    show = keep_values and not red.enabled
    inv = field_inventory(fields, show_values=show)
    skipped: dict[str, int] = {}
    raw = meta.get("skipped")
    if isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(v, int) and v:
                skipped[str(k)] = v
    return HttpReport(
        headline=headline(http, fields, inv),
        by_data_class_category=by_data_class_category(http),
        by_party=by_party(http),
        by_host=by_host(http),
        by_vendor_category=by_vendor_category(http),
        top_endpoints=top_endpoints(http, top, redact=red.enabled),
        clients=red.frame(by_client(http), ["client_ip"]),
        inventory=inv,
        inventory_by_host=inventory_by_host(inv),
        values_shown=show,
        keep_values=keep_values,
        skipped=skipped,
    )


__all__ = ["NONE", "HttpHeadline", "HttpReport", "field_inventory", "headline", "summarize_http"]
