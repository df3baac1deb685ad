"""The report's numbers: pure pandas functions on the flows table (HTTP: :mod:`egressaudit.report.http_summary`).

*Egress* is what left the audited host towards a remote network: the
``bytes_out`` of flows whose remote end is not on the local network
(``is_local`` false).  ``bytes_in`` is carried along for context only; it
never counts as egress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from egressaudit.report import states
from egressaudit.report.http_summary import HttpHeadline, HttpReport, summarize_http
from egressaudit.report.measures import (
    CATEGORY_ORDER,
    DATA_CLASS_ORDER,
    PARTY_ORDER,
    Recipients,
    Redactor,
    duration,
    duration_adjective,
    epoch_seconds,
    human_bytes,
    label,
    order,
    plural,
    recipients,
    share,
    short_percent,
)
from egressaudit.schema import to_table
from egressaudit.taxonomy import DataClass, Party

#: Candidate widths (seconds) of the bins of the over-time series.
BIN_WIDTHS_S: tuple[int, ...] = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BINS = 120


def empty_flows() -> pd.DataFrame:
    """A flows DataFrame with every column of the schema and no rows."""
    df: pd.DataFrame = to_table("flows", []).to_pandas()
    return df


def egress(flows: pd.DataFrame) -> pd.DataFrame:
    """The flows whose remote end is not local: the ones whose ``bytes_out`` is egress."""
    if flows.empty:
        return flows
    return flows[~flows["is_local"].astype(bool)]


def _grouped(df: pd.DataFrame, keys: list[str], total: int) -> pd.DataFrame:
    cols = [*keys, "flows", "bytes_out", "bytes_in", "share"]
    if df.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object if c in keys else ("float64" if c == "share" else "int64")) for c in cols})
    g = (
        df.assign(**{k: label(df[k]) for k in keys})
        .groupby(keys, sort=False)
        .agg(flows=("flow_id", "size"), bytes_out=("bytes_out", "sum"), bytes_in=("bytes_in", "sum"))
        .reset_index()
    )
    g["flows"] = g["flows"].astype("int64")
    g["bytes_out"] = g["bytes_out"].astype("int64")
    g["bytes_in"] = g["bytes_in"].astype("int64")
    g["share"] = g["bytes_out"] / total if total else 0.0
    return g[cols]


def by_data_class_category(flows: pd.DataFrame) -> pd.DataFrame:
    """Egress by data class and category: data_class, category, flows, bytes_out, bytes_in, share (of all egress)."""
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    g = _grouped(eg, ["data_class", "category"], total)
    if g.empty:
        return g
    g = g.assign(_d=order(g["data_class"], DATA_CLASS_ORDER), _c=order(g["category"], CATEGORY_ORDER))
    return g.sort_values(["_d", "bytes_out", "_c"], ascending=[True, False, True]).drop(columns=["_d", "_c"]).reset_index(drop=True)


def by_data_class(flows: pd.DataFrame) -> pd.DataFrame:
    """Egress by data class: data_class, flows, bytes_out, bytes_in, share; every data class listed, zero or not."""
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    g = _grouped(eg, ["data_class"], total).set_index("data_class")
    known = [d for d in DATA_CLASS_ORDER] + [d for d in g.index if d not in DATA_CLASS_ORDER]
    g = g.reindex(known)
    for c in ("flows", "bytes_out", "bytes_in"):
        g[c] = g[c].fillna(0).astype("int64")
    g["share"] = g["share"].astype("float64").fillna(0.0)
    return g.reset_index()


def by_vendor(flows: pd.DataFrame) -> pd.DataFrame:
    """Egress by vendor, service and party: vendor, service, party, flows, bytes_out, bytes_in, share; largest first."""
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    g = _grouped(eg, ["vendor", "service", "party"], total)
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "vendor", "service"], ascending=[False, True, True]).reset_index(drop=True)


def by_vendor_data_class(flows: pd.DataFrame) -> pd.DataFrame:
    """Egress by vendor, service, party and data class (what each vendor received, for the vendor figure): vendor,
    service, party, data_class, flows, bytes_out, bytes_in, share; the vendors that received most first."""
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    g = _grouped(eg, ["vendor", "service", "party", "data_class"], total)
    if g.empty:
        return g
    rank = g.groupby(["vendor", "service", "party"], sort=False)["bytes_out"].transform("sum")
    g = g.assign(_t=rank, _d=order(g["data_class"], DATA_CLASS_ORDER))
    return g.sort_values(["_t", "vendor", "service", "_d"], ascending=[False, True, True, True]).drop(columns=["_t", "_d"]).reset_index(drop=True)


def by_party(flows: pd.DataFrame) -> pd.DataFrame:
    """Egress by party (first, third, unknown): party, flows, bytes_out, bytes_in, share."""
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    g = _grouped(eg, ["party"], total)
    if g.empty:
        return g
    return g.assign(_p=order(g["party"], PARTY_ORDER)).sort_values("_p").drop(columns="_p").reset_index(drop=True)


def top_destinations(flows: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` remote destinations that received the most egress.

    A destination is the flow's host name, or its remote address when no name
    was seen.  Columns: destination, vendor, party, category, flows,
    bytes_out, bytes_in, share.
    """
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    eg = eg.assign(destination=destination(eg) if not eg.empty else pd.Series([], dtype=object))
    g = _grouped(eg, ["destination", "vendor", "party", "category"], total)
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "destination"], ascending=[False, True]).head(n).reset_index(drop=True)


def destination(flows: pd.DataFrame) -> pd.Series:
    """Each flow's destination: its host name, or its remote address when no name was seen."""
    host = flows["hostname"].astype(object)
    has = host.notna() & (host != "")
    return host.where(has, flows["remote_ip"].astype(object))


def by_local_host(flows: pd.DataFrame) -> pd.DataFrame:
    """Egress per address of the audited host: local_ip, flows, bytes_out, bytes_in, share."""
    eg = egress(flows)
    total = int(eg["bytes_out"].sum()) if not eg.empty else 0
    g = _grouped(eg, ["local_ip"], total)
    if g.empty:
        return g
    return g.sort_values(["bytes_out", "local_ip"], ascending=[False, True]).reset_index(drop=True)


@dataclass(frozen=True)
class Headline:
    """The few numbers at the top of the report.  Shares are fractions of egress, None without egress."""

    egress_bytes: int
    ingress_bytes: int
    service_generated_bytes: int
    service_generated_share: float | None
    customer_content_bytes: int
    customer_content_share: float | None
    third_party_bytes: int
    third_party_share: float | None
    flows: int
    egress_flows: int
    local_flows: int
    local_bytes_out: int
    vendors: list[str] = field(default_factory=list)
    third_party_vendors: list[str] = field(default_factory=list)
    service_generated_recipients: Recipients = Recipients(0, 0, 0, 0)
    """Who received the service-generated data: vendors (first and third parties), unrecognised destinations."""


def headline(flows: pd.DataFrame) -> Headline:
    """Total egress, and how much of it was service-generated data, customer content, and sent to third parties."""
    eg = egress(flows)
    local = flows[flows["is_local"].astype(bool)] if not flows.empty else flows

    def out(mask: pd.Series | None = None) -> int:
        if eg.empty:
            return 0
        return int(eg["bytes_out"][mask].sum()) if mask is not None else int(eg["bytes_out"].sum())

    total = out()
    sg = out(eg["data_class"] == DataClass.service_generated.value) if not eg.empty else 0
    cc = out(eg["data_class"] == DataClass.customer_content.value) if not eg.empty else 0
    third_mask = eg["party"] == Party.third.value if not eg.empty else None
    tp = out(third_mask) if third_mask is not None else 0
    vendors = sorted({str(v) for v in eg["vendor"] if isinstance(v, str) and v}) if not eg.empty else []
    tpv = sorted({str(v) for v in eg["vendor"][third_mask] if isinstance(v, str) and v}) if third_mask is not None else []
    sg_rows = eg[eg["data_class"] == DataClass.service_generated.value] if not eg.empty else eg
    rec = recipients(sg_rows["vendor"], sg_rows["party"], destination(sg_rows)) if not sg_rows.empty else Recipients(0, 0, 0, 0)
    return Headline(
        egress_bytes=total,
        ingress_bytes=int(eg["bytes_in"].sum()) if not eg.empty else 0,
        service_generated_bytes=sg,
        service_generated_share=share(sg, total),
        customer_content_bytes=cc,
        customer_content_share=share(cc, total),
        third_party_bytes=tp,
        third_party_share=share(tp, total),
        flows=len(flows),
        egress_flows=len(eg),
        local_flows=len(local),
        local_bytes_out=int(local["bytes_out"].sum()) if not local.empty else 0,
        vendors=vendors,
        third_party_vendors=tpv,
        service_generated_recipients=rec,
    )


@dataclass(frozen=True)
class CaptureWindow:
    """When the session's traffic was seen: its first and last packet (or HTTP exchange), UTC."""

    first: pd.Timestamp
    last: pd.Timestamp
    of: str
    """What the ends are: "packet", "HTTP exchange" or "packet or HTTP exchange"."""

    @property
    def seconds(self) -> float:
        return max(0.0, (self.last - self.first).total_seconds())

    def text(self) -> str:
        """``2026-11-25 01:56:36.7 to 01:57:18.1 UTC (41 s)``: tenths of seconds (so that the ends and the length
        agree), the date once when both ends share it."""
        a, b = (t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-5] for t in (self.first, self.last))
        if a[:10] == b[:10]:
            b = b[11:]
        return f"{a} to {b} UTC ({duration(self.seconds)})"


def _ends(df: pd.DataFrame | None) -> list[pd.Timestamp]:
    if df is None or df.empty:
        return []
    ts = pd.concat([pd.to_datetime(df["ts_start"], utc=True), pd.to_datetime(df["ts_end"], utc=True)]).dropna()
    return [ts.min(), ts.max()] if len(ts) else []


def capture_window(flows: pd.DataFrame | None, http: pd.DataFrame | None = None) -> CaptureWindow | None:
    """From the first to the last packet of the flows (local ones too) and HTTP exchange; None without either."""
    f, h = _ends(flows), _ends(http)
    ends = f + h
    if not ends:
        return None
    of = "packet or HTTP exchange" if f and h else ("packet" if f else "HTTP exchange")
    return CaptureWindow(min(ends), max(ends), of)


def _to_whom(r: Recipients) -> str:
    """Who received it, to end the sentence: ``, sent to 3 parties, 2 of them third parties`` (and unrecognised
    destinations), or nothing when no one did."""
    if not r.parties:
        return f", sent to {plural(r.unrecognised, 'unrecognised destination')}" if r.unrecognised else ""
    text = f", sent to {plural(r.parties, 'party', 'parties')}"
    if r.parties == 1:
        text += ", a third party" if r.third else (", the first party" if r.first else "")
    elif r.third == r.parties:
        text += ", all of them third parties"
    elif r.third == 0:
        text += ", none of them a third party"
    else:
        text += f", {r.third:,} of them " + ("a third party" if r.third == 1 else "third parties")
    if r.unrecognised:
        text += f", and to {plural(r.unrecognised, 'unrecognised destination')}"
    return text


def lead_sentence(head: Headline | None, http: HttpHeadline | None, window: CaptureWindow | None, local_flows: int = 0) -> str:
    """The one sentence the report opens with, answering its question from the session's numbers: how much of what
    left the host was service-generated data, and to whom.  From the flows when the session has them (``head``),
    else from the HTTP requests (``http``)."""
    timed = window is not None and window.seconds >= 0.05  # (a single packet's session has no length to speak of)
    when = f"In this {duration_adjective(window.seconds)} session, " if timed and window is not None else "In this session, "
    if head is not None:
        total, sg, to = head.egress_bytes, head.service_generated_bytes, head.service_generated_recipients
        what = f"the {human_bytes(total)} that left the host"
        if not total:
            if not head.flows:
                return when + "nothing left the host: the session holds no flows."
            return (
                when + "nothing left the host for a remote network" + (f" ({plural(local_flows, 'local flow')}, not egress)." if local_flows else ".")
            )
    elif http is not None:
        total, sg, to = http.bytes_out, http.service_generated_bytes, http.service_generated_recipients
        what = f"the {human_bytes(total)} the client sent in HTTP requests"
        if not total:
            return when + "the proxy recorded no HTTP request the client sent."
    else:
        return when + "nothing was recorded."
    if not sg:
        return f"{when}none of {what} was service-generated data."
    amount = "all" if sg >= total else short_percent(sg / total)
    return f"{when}{amount} of {what} was service-generated data{_to_whom(to)}."


def choose_bin_width(span_s: float, max_bins: int = MAX_BINS) -> int:
    """The smallest of :data:`BIN_WIDTHS_S` giving at most ``max_bins`` bins over ``span_s`` seconds."""
    for w in BIN_WIDTHS_S:
        if span_s / w <= max_bins:
            return w
    return int(math.ceil(span_s / max_bins / 86400.0)) * 86400


def egress_over_time(flows: pd.DataFrame, bin_s: int | None = None, streams: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int]:
    """Egress bytes per time bin and data class, and the bin width in seconds.

    Each flow's ``bytes_out`` is spread evenly over its duration
    (``ts_start`` to ``ts_end``); a flow of zero duration falls into the bin
    of its start.  A UDP media flow with rows in ``streams`` (the session's
    streams table) counts the bytes it sent in each second where that second
    is instead (:func:`egressaudit.report.states.pieces`, as the per-state
    table), so a mute or a camera turned off shows.  The bin width is chosen
    from the session's length unless given.  The frame is indexed by the bins'
    start times (UTC) with one column per data class; it is empty when there
    is no egress.
    """
    eg = egress(flows)
    if eg.empty:
        return pd.DataFrame({d: pd.Series([], dtype="float64") for d in DATA_CLASS_ORDER}), bin_s or BIN_WIDTHS_S[0]
    fs = epoch_seconds(eg["ts_start"])
    fe = np.maximum(epoch_seconds(eg["ts_end"]), fs)
    names = eg["data_class"].astype(str).to_numpy()
    start, end, bytes_out, piece_class = states.pieces(eg, fs, fe, names, streams)
    t0 = math.floor(float(start.min()))
    w = bin_s or choose_bin_width(float(end.max()) - t0)
    t0 = t0 - t0 % w
    nbins = int((float(end.max()) - t0) // w) + 1
    classes = [d for d in DATA_CLASS_ORDER] + sorted(set(map(str, names)) - set(DATA_CLASS_ORDER))
    cls = np.asarray([classes.index(str(d)) for d in piece_class], dtype=np.int64)
    i0 = np.minimum(((start - t0) // w).astype(np.int64), nbins - 1)
    i1 = np.minimum(((end - t0) // w).astype(np.int64), nbins - 1)
    acc = np.zeros((len(classes), nbins + 1), dtype=np.float64)
    same = i0 == i1
    np.add.at(acc, (cls[same], i0[same]), bytes_out[same])
    m = ~same
    if m.any():
        rate = bytes_out[m] / (end[m] - start[m])
        np.add.at(acc, (cls[m], i0[m]), rate * ((i0[m] + 1) * w + t0 - start[m]))
        np.add.at(acc, (cls[m], i1[m]), rate * (end[m] - t0 - i1[m] * w))
        # the whole bins in between, as a difference array summed below
        diff = np.zeros_like(acc)
        np.add.at(diff, (cls[m], i0[m] + 1), rate * w)
        np.add.at(diff, (cls[m], i1[m]), -rate * w)
        acc += np.cumsum(diff, axis=1)
    index = pd.to_datetime((t0 + np.arange(nbins) * w) * 1_000_000, unit="us", utc=True)
    out = pd.DataFrame(acc[:, :nbins].T, index=index, columns=classes)
    out.index.name = "bin_start"
    return out, w


@dataclass
class ReportData:
    """Everything the HTML page and the terminal tables show, addresses already redacted."""

    session: dict[str, Any]
    headline: Headline
    by_data_class: pd.DataFrame
    by_data_class_category: pd.DataFrame
    by_vendor: pd.DataFrame
    by_party: pd.DataFrame
    top_destinations: pd.DataFrame
    local_hosts: pd.DataFrame
    over_time: pd.DataFrame
    bin_s: int
    skipped: dict[str, int]
    redacted: bool
    redactor: Redactor
    figures: dict[str, str] = field(default_factory=dict)
    has_flows: bool = True
    http: HttpReport | None = None
    """The HTTP section (:class:`egressaudit.report.http_summary.HttpReport`), None without HTTP tables."""
    notes: list[str] = field(default_factory=list)
    by_state: pd.DataFrame = field(default_factory=lambda: states.egress_by_state(pd.DataFrame(), pd.DataFrame()))
    """Egress per call-state interval (:mod:`egressaudit.report.states`); empty without markers."""
    window: CaptureWindow | None = None
    """First and last packet (or HTTP exchange); None when the session has neither."""
    sentence: str = ""
    """The sentence the report opens with (:func:`lead_sentence`)."""
    by_vendor_data_class: pd.DataFrame = field(default_factory=lambda: by_vendor_data_class(empty_flows()))
    """Egress by vendor, service, party and data class (the vendor figure)."""


def skipped_counts(session: dict[str, Any]) -> dict[str, int]:
    """``counts.skipped`` of session.json: packets not analysed, by reason (reasons with a zero count left out)."""
    counts = session.get("counts")
    raw = counts.get("skipped") if isinstance(counts, dict) else None
    if not isinstance(raw, dict):
        return {}
    out: dict[str, int] = {}
    for k, v in raw.items():
        try:
            n = int(v)
        except (TypeError, ValueError):
            continue
        if n:
            out[str(k)] = n
    return out


def summarize(
    flows: pd.DataFrame | None,
    session: dict[str, Any],
    redact: bool = True,
    top: int = 20,
    http: pd.DataFrame | None = None,
    fields: pd.DataFrame | None = None,
    markers: pd.DataFrame | None = None,
    streams: pd.DataFrame | None = None,
) -> ReportData:
    """All the report's tables from the flows and/or http (with fields) DataFrames and the session's metadata.

    ``flows`` None: a session without a flows table (recorded by the proxy);
    ``http`` None: a session without HTTP tables; ``streams`` (the media flows' seconds) places media in time in
    the per-state table and the time figure.
    """
    has_flows = flows is not None
    if flows is None:
        flows = empty_flows()
    clients = [] if http is None or http.empty else list(http["client_ip"].dropna().unique())
    red = Redactor(flows, session, enabled=redact, addresses=clients)
    series, bin_s = egress_over_time(flows, streams=streams)
    http_report = None
    if http is not None:
        if fields is None:
            fields = to_table("fields", []).to_pandas()
        http_report = summarize_http(http, fields, session, red, top)
    head = headline(flows)
    window = capture_window(flows if has_flows else None, http)
    sentence = lead_sentence(head if has_flows else None, http_report.headline if http_report else None, window, head.local_flows)
    return ReportData(
        has_flows=has_flows,
        http=http_report,
        session=session,
        headline=head,
        window=window,
        sentence=sentence,
        by_vendor_data_class=by_vendor_data_class(flows),
        by_data_class=by_data_class(flows),
        by_data_class_category=by_data_class_category(flows),
        by_vendor=by_vendor(flows),
        by_party=by_party(flows),
        top_destinations=red.frame(top_destinations(flows, top), ["destination"]),
        local_hosts=red.frame(by_local_host(flows), ["local_ip"]),
        over_time=series,
        bin_s=bin_s,
        skipped=skipped_counts(session),
        redacted=redact,
        redactor=red,
        by_state=states.egress_by_state(egress(flows), markers if markers is not None else pd.DataFrame(), http, streams),
    )
