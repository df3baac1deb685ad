"""What the report's flows part (:mod:`~egressaudit.report.summary`), its HTTP part
(:mod:`~egressaudit.report.http_summary`) and ``egressaudit inventory`` share: the orders, how a missing value is
labelled, how names read (:func:`words`, :func:`plural`), shares, byte, percent and duration formats, the address
redactor, and the field inventory (what one field is, and how many identify someone), so that the report and the
inventory count the same fields the same way and say them in the same words.

It imports nothing of the report, so every part can import it: the parts no longer import each other to reach it.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from egressaudit.taxonomy import Category, DataClass, Party

#: Placeholder for a missing vendor / service / hostname in tables.
NONE = "(none)"

#: Order of the data classes in tables and figures.
DATA_CLASS_ORDER: list[str] = [d.value for d in DataClass]
CATEGORY_ORDER: list[str] = [c.value for c in Category]
PARTY_ORDER: list[str] = [p.value for p in Party]

#: Detectors whose values look like customer content (a leak when found outside content uploads).
CONTENT_DETECTORS = frozenset(("meeting_title", "chat_text", "file_name", "transcript"))
#: Order in which content-leak detectors are listed.
CONTENT_ORDER: tuple[str, ...] = ("meeting_title", "chat_text", "file_name", "transcript")


def label(s: pd.Series) -> pd.Series:
    """Strings with nulls (None, NaN) and empty strings shown as :data:`NONE`."""
    out = s.astype(object).where(s.notna(), NONE)
    return out.map(lambda v: NONE if v == "" else str(v))


#: How the stored names of data classes and categories read in a report (display only: the tables keep the names).
WORDS: dict[str, str] = {
    DataClass.customer_content.value: "customer content",
    DataClass.service_generated.value: "service-generated data",
    DataClass.service_operation.value: "service operation",
    Category.content_upload.value: "content upload",
    Category.config_update.value: "config update",
    Category.web_asset.value: "web asset",
}


def words(value: Any) -> str:
    """A stored name as words: ``service_generated`` -> "service-generated data", ``content_upload`` -> "content
    upload", a detector ``meeting_title`` -> "meeting title", a list ``device_id, email`` -> "device id, email"; null
    -> ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    text = str(value)
    return WORDS.get(text) or text.replace("_", " ")


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` with its noun: "1 flow", "2 flows", "1,204 flows"; ``many`` for the irregular ("party", "parties")."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def order(values: Iterable[Any], known: list[str]) -> list[int]:
    """The rank of each value in ``known`` (values not in it after all of them)."""
    rank = {v: i for i, v in enumerate(known)}
    return [rank.get(str(v), len(known)) for v in values]


def share(part: float, total: float) -> float | None:
    """``part / total``, or None when there is nothing to divide."""
    return part / total if total else None


def human_bytes(n: float | int | None) -> str:
    """Bytes in decimal units: "0 B", "950 B", "1.2 kB", "3.4 MB", "1.0 GB"."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    v = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if unit == "B" and abs(v) < 1000:
            return f"{int(v)} B"
        if round(abs(v), 1) < 1000 or unit == "TB":
            return f"{v:.1f} {unit}"
        v /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def percent(x: float | None) -> str:
    """A share as "12.3%", or "-" when undefined."""
    return "-" if x is None else f"{100 * x:.1f}%"


def short_percent(x: float) -> str:
    """A share for a sentence: "19%", "5.1%" below 10%, never a rounded "0%" or "100%" that is not exactly so
    ("under 0.1%", "over 99.9%")."""
    if x <= 0 or x >= 1:
        return f"{100 * x:.0f}%"
    if x < 0.0005:
        return "under 0.1%"
    if x > 0.9995:
        return "over 99.9%"
    if 0.095 <= x <= 0.99:
        return f"{100 * x:.0f}%"
    return f"{100 * x:.1f}%"


def duration(seconds: float) -> str:
    """A length of time to read: "0.4 s", "42 s", "7 min 3 s", "2 h 5 min", "3 d 4 h"."""
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s".replace(".0 s", " s")
    n = int(round(s))
    if n < 60:
        return f"{n} s"
    for big, small, a, b in ((86400, 3600, "d", "h"), (3600, 60, "h", "min"), (60, 1, "min", "s")):
        if n >= big:
            hi, lo = divmod(n, big)
            lo //= small
            return f"{hi:,} {a}" + (f" {lo} {b}" if lo else "")
    raise AssertionError("unreachable")  # pragma: no cover


def duration_adjective(seconds: float) -> str:
    """A length of time before a noun: "0.4-second", "42-second", "2-minute" (from 90 s), "42-minute", "2.5-hour"
    (from 2 hours), "3-day" (from 2 days)."""
    s = max(0.0, float(seconds))
    if s < 9.95:
        return f"{s:.1f}".removesuffix(".0") + "-second"
    for unit, name, start in ((86400, "day", 2 * 86400), (3600, "hour", 2 * 3600), (60, "minute", 90)):
        if s >= start:
            n = s / unit
            if name != "minute" and n < 9.95:
                return f"{n:.1f}".removesuffix(".0") + f"-{name}"
            return f"{round(n):,}-{name}"
    return f"{round(s):,}-second"


@dataclass(frozen=True)
class Recipients:
    """Who received some bytes: the recognised vendors (parties), how many of them are first and third parties, and
    the destinations no vendor was recognised for."""

    parties: int
    first: int
    third: int
    unrecognised: int


def recipients(vendor: pd.Series, party: pd.Series, destination: pd.Series) -> Recipients:
    """The :class:`Recipients` of rows (aligned series: each row's vendor, party, and destination host or address)."""
    v = vendor.astype(object)
    known = v.map(lambda x: isinstance(x, str) and bool(x)).astype(bool)
    p = party.astype(object)

    def vendors(mask: pd.Series) -> int:
        return len(set(v[mask]))

    unrec = {str(d) for d in destination.astype(object)[~known] if isinstance(d, str) and d}
    return Recipients(vendors(known), vendors(known & (p == Party.first.value)), vendors(known & (p == Party.third.value)), len(unrec))


class Redactor:
    """Replaces the local host's addresses by stable tokens ("local-1", "local-2", ...).

    The local addresses are those of the audited host (``local_ip``), of the
    remote ends on the local network (``remote_ip`` of local flows), the
    session's ``local_hosts`` and any further ``addresses`` (the HTTP
    clients' ``client_ip``); they are numbered in the order of
    ``local_hosts`` first, then by address.  Remote addresses (the vendors'
    servers) are left as they are.  A disabled redactor changes nothing.
    """

    def __init__(self, flows: pd.DataFrame, session: dict[str, Any] | None = None, enabled: bool = True, addresses: Iterable[Any] = ()) -> None:
        self.enabled = enabled
        hosts = [str(h) for h in (session or {}).get("local_hosts") or [] if h]
        found: set[str] = {str(a) for a in addresses if isinstance(a, str) and a}
        if not flows.empty:
            found.update(str(x) for x in flows["local_ip"].dropna())
            found.update(str(x) for x in flows.loc[flows["is_local"].astype(bool), "remote_ip"].dropna())
        rest = sorted(found - set(hosts), key=_ip_sort_key)
        self.tokens: dict[str, str] = {}
        for ip in [*hosts, *rest]:
            self.tokens.setdefault(ip, f"local-{len(self.tokens) + 1}")

    def __call__(self, value: Any) -> Any:
        if self.enabled and isinstance(value, str):
            return self.tokens.get(value, value)
        return value

    def frame(self, df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
        """``df`` with the addresses in ``columns`` replaced."""
        if not self.enabled or df.empty:
            return df
        return df.assign(**{c: df[c].astype(object).map(self) for c in columns if c in df.columns})


def _ip_sort_key(s: str) -> tuple[int, int, str]:
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        return (9, 0, s)
    return (a.version, int(a), s)


# -- the field inventory: one unit for the report and `egressaudit inventory` ------------------------------------

#: What one field is: a key path of the bodies one vendor's host received in one category.
FIELD_KEYS: list[str] = ["vendor", "host", "category", "key_path"]


def detector_list(d: Any) -> list[str]:
    """A ``detectors`` cell (array, list or null) as a list of strings."""
    if d is None or (isinstance(d, float) and pd.isna(d)):
        return []
    return [str(x) for x in d if x]


def joined(values: Iterable[str], first: Iterable[str] = CONTENT_ORDER) -> str:
    """Distinct values, comma-separated: those of ``first`` in its order, then the rest sorted."""
    vs = set(values)
    head = [v for v in first if v in vs]
    return ", ".join([*head, *sorted(vs - set(head))])


def field_table(fields: pd.DataFrame, values: Callable[[pd.Series], str] | None = None) -> pd.DataFrame:
    """One row per field (:data:`FIELD_KEYS`) of the ``fields`` table, however many bodies held it.

    Columns: vendor, host, category (nulls labelled :data:`NONE`, as every table of the report), key_path,
    value_type, exchanges (bodies holding the path), occurrences, distinct_values (distinct ``value_hash``),
    detectors (list: every detector that fired at the path in any body), content (list: the content detectors among
    them, none in ``content_upload`` bodies, where content is expected), and ``values`` (``values`` of the clear-text
    values) when ``values`` is given.  In the order the fields first appear.
    """
    counts = ["exchanges", "occurrences", "distinct_values"]
    cols = [*FIELD_KEYS, "value_type", *counts, "detectors", "content", *(["values"] if values else [])]
    if fields.empty:
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c in counts else object) for c in cols})
    df = fields.assign(**{k: label(fields[k]) for k in FIELD_KEYS}, _det=fields["detectors"].map(detector_list))
    aggs: dict[str, Any] = {
        "value_type": ("value_type", lambda s: ",".join(sorted({t for v in s if isinstance(v, str) for t in v.split(",") if t}))),
        "exchanges": ("exchange_id", "nunique"),
        "occurrences": ("count", "sum"),
        "distinct_values": ("value_hash", "nunique"),
        "detectors": ("_det", lambda s: sorted({d for ds in s for d in ds})),
    }
    if values:
        aggs["values"] = ("value", values)
    g = df.groupby(FIELD_KEYS, sort=False).agg(**aggs).reset_index()
    g["content"] = [
        [] if cat == Category.content_upload.value else [d for d in ds if d in CONTENT_DETECTORS]
        for cat, ds in zip(g["category"], g["detectors"], strict=True)
    ]
    for c in counts:
        g[c] = g[c].astype("int64")
    out: pd.DataFrame = g[cols]
    return out


@dataclass(frozen=True)
class FieldCounts:
    """How many fields (:func:`field_table` rows) the bodies carried, and how many of them identify someone or carry
    content (a detector fired) or leak content (a content detector outside content uploads)."""

    fields: int
    identifying: int
    content: int


def field_counts(fields: pd.DataFrame, category: str | None = None) -> FieldCounts:
    """The :class:`FieldCounts` of the ``fields`` table, of the bodies of ``category`` only when given."""
    if category is not None and not fields.empty:
        fields = fields[fields["category"] == category]
    t = field_table(fields)
    return FieldCounts(len(t), int(t["detectors"].map(bool).sum()), int(t["content"].map(bool).sum()))


def fields_text(c: FieldCounts) -> str:
    """``7 of 14 distinct fields``: the identifying fields among all, as the report and the inventory both say it."""
    return f"{c.identifying:,} of {plural(c.fields, 'distinct field')}"


def epoch_seconds(ts: pd.Series) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Timestamps (tz-aware UTC, numpy- or Arrow-backed) as seconds since the epoch."""
    return np.asarray((pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), dtype=np.float64)
