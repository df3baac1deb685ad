"""The report's tables, machine-readable: ``--format csv`` (one table) and ``--format json`` (all of them), on stdout.

The tables are the report's (:func:`report_tables`), with their stored names and raw numbers: data classes and
categories as in the session's tables (``service_generated``), bytes as integers, shares as fractions, times in
ISO 8601 (UTC); addresses redacted as in the report unless asked otherwise.  ``egressaudit inventory`` writes its
tables the same way (:mod:`egressaudit.http.inventory_report`).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
import pandas as pd

from egressaudit.report.render import inputs_frame, metadata_rows, skipped_frame
from egressaudit.report.summary import ReportData


def report_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """Every table of the report by name, in the report's order: the flows' tables when the session has flows, the
    HTTP ones (``http_*``) when it has HTTP tables; ``states`` (empty without markers) and ``inputs`` always."""
    out: dict[str, pd.DataFrame] = {}
    if data.has_flows:
        over_time = data.over_time.reset_index()
        out |= {
            "data_class": data.by_data_class,
            "data_class_category": data.by_data_class_category,
            "party": data.by_party,
            "vendors": data.by_vendor,
            "vendor_data_class": data.by_vendor_data_class,
            "destinations": data.top_destinations,
            "local_hosts": data.local_hosts,
            "over_time": over_time.assign(bin_s=data.bin_s) if not over_time.empty else over_time.assign(bin_s=pd.Series([], dtype="int64")),
        }
    out["states"] = data.by_state
    if data.has_flows:
        out["skipped"] = skipped_frame(data)
    hr = data.http
    if hr is not None:
        out |= {
            "http_data_class_category": hr.by_data_class_category,
            "http_party": hr.by_party,
            "http_hosts": hr.by_host,
            "http_vendor_category": hr.by_vendor_category,
            "http_endpoints": hr.top_endpoints,
            "http_clients": hr.clients,
            "http_fields": hr.inventory,
            "http_fields_by_host": hr.inventory_by_host,
            "http_skipped": pd.DataFrame([{"reason": k, "count": v} for k, v in hr.skipped.items()], columns=["reason", "count"]),
        }
    out["inputs"] = inputs_frame(data)
    return out


def default_table(data: ReportData) -> str:
    """The table ``--format csv`` writes unless told: egress by data class and category (of the flows, else of HTTP)."""
    return "data_class_category" if data.has_flows else "http_data_class_category"


def value(v: Any) -> Any:
    """A cell as JSON has it: null for missing values, ISO 8601 for times, Python numbers, lists for arrays."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp | dt.datetime):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.ndarray | list | tuple):
        return [value(x) for x in v]
    return v


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as JSON-ready dicts."""
    cols = [str(c) for c in df.columns]
    return [{c: value(x) for c, x in zip(cols, row, strict=True)} for row in df.itertuples(index=False, name=None)]


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(x) for x in obj]
    return value(obj)


def write_csv(df: pd.DataFrame, out: TextIO) -> None:
    """One table as CSV: a header of its columns, a row per record; missing values empty."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow([str(c) for c in df.columns])
    for rec in records(df):
        w.writerow(["" if v is None else ("; ".join(map(str, v)) if isinstance(v, list) else v) for v in rec.values()])


def write_json(doc: Mapping[str, Any], out: TextIO) -> None:
    json.dump(_jsonable(doc), out, indent=2, ensure_ascii=False, allow_nan=False)
    out.write("\n")


def report_document(data: ReportData, tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """What ``report --format json`` writes: the sentence, the capture window, the headline numbers, the notes, the
    session's metadata (as the report shows it: redacted) and ``tables`` ({name: [row, ...]})."""
    w = data.window
    return {
        "session_id": data.session.get("session_id"),
        "sentence": data.sentence,
        "capture_window": None if w is None else {"first": w.first, "last": w.last, "seconds": w.seconds, "of": w.of},
        "headline": data.headline if data.has_flows else None,
        "http_headline": data.http.headline if data.http is not None else None,
        "notes": list(data.notes),
        "metadata": dict(metadata_rows(data)),
        "tables": {name: records(df) for name, df in tables.items()},
    }
