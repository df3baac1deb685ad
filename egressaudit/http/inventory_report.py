"""``egressaudit inventory``: the fields telemetry carries, and which identify someone or leak content.

A field, its vendor label and the counts are the report's (:func:`egressaudit.report.measures.field_table`,
:func:`~egressaudit.report.measures.field_counts`): the two commands agree on a session, the inventory showing the
bodies of one category (telemetry by default) and saying how many fields every inventoried body carried, which is
what the report counts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from egressaudit.errors import InputError
from egressaudit.report.measures import CONTENT_DETECTORS, field_counts, field_table, fields_text, joined, label
from egressaudit.session.store import TableUnreadable, read_rows_checked


class InventoryError(InputError):
    """The folder has no HTTP tables; one line for the user."""


def _tables(session_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not session_dir.is_dir():
        raise InventoryError(f"{session_dir}: not a folder")
    if not (session_dir / "http.parquet").exists() and not (session_dir / ".parts" / "http").is_dir():
        raise InventoryError(f"{session_dir}: no http.parquet (record with `egressaudit proxy` or analyze .mitm/.har files)")
    try:
        http = read_rows_checked(session_dir, "http").to_pandas()
        fields = read_rows_checked(session_dir, "fields").to_pandas()
    except TableUnreadable as e:
        raise InventoryError(str(e)) from None
    return http, fields


def _per_field(fields: pd.DataFrame) -> pd.DataFrame:
    t = field_table(fields)
    t = t.assign(detectors=t["detectors"].map(joined), content=t["content"].map(joined))
    return t.sort_values(["vendor", "host", "category", "key_path"]).reset_index(drop=True)


def _per_host(http: pd.DataFrame) -> pd.DataFrame:
    cols = ["vendor", "host", "exchanges", "ws_messages", "bytes_out", "fields"]
    if http.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object if c in ("vendor", "host") else "int64") for c in cols})
    df = http.assign(
        vendor=label(http["vendor"]),
        host=label(http["host"]),
        _x=(http["kind"] == "http").astype("int64"),
        _w=(http["kind"] == "websocket").astype("int64"),
        _o=http["bytes_out"].where(http["direction"] == "out", 0).fillna(0).astype("int64"),
        _f=http["field_count"].fillna(0).astype("int64"),
    )
    g = (
        df.groupby(["vendor", "host"], sort=False)
        .agg(exchanges=("_x", "sum"), ws_messages=("_w", "sum"), bytes_out=("_o", "sum"), fields=("_f", "sum"))
        .reset_index()
    )
    out: pd.DataFrame = g.sort_values(["bytes_out", "vendor", "host"], ascending=[False, True, True]).reset_index(drop=True)[cols]
    return out


def _of(df: pd.DataFrame, category: str | None) -> pd.DataFrame:
    return df[df["category"] == category] if category and not df.empty else df


def load_inventory(session_dir: Path, category: str | None = "telemetry") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-field summary, per-host summary) of a session's exchanges of ``category`` (None: all)."""
    http, fields = _tables(session_dir)
    return _per_field(_of(fields, category)), _per_host(_of(http, category))


def print_inventory(session_dir: Path, console: Console, *, all_fields: bool = False, category: str | None = "telemetry") -> None:
    http, fields = _tables(session_dir)
    scoped = _of(fields, category)
    per_field, per_host = _per_field(scoped), _per_host(_of(http, category))
    what = category or "all"
    t = Table(title=f"{what} exchanges by destination")
    ws = bool(per_host["ws_messages"].sum()) if not per_host.empty else False  # (a column only when there are any)
    for c in ("vendor", "host", "exchanges", *(["websocket messages"] if ws else []), "bytes out", "fields"):
        t.add_column(c, justify="left" if c in ("vendor", "host") else "right")
    for r in per_host.itertuples():
        counts = [f"{r.exchanges:,}", *([f"{r.ws_messages:,}"] if ws else []), f"{r.bytes_out:,}", f"{r.fields:,}"]
        t.add_row(str(r.vendor), str(r.host), *counts)
    console.print(t)
    shown = per_field if all_fields else per_field[per_field["detectors"] != ""]
    t = Table(title=f"fields in {what} bodies" + ("" if all_fields else " that identify someone or carry content (--all for every field)"))
    cols = ["vendor", "host", *([] if category else ["category"]), "field", "type", "exchanges", "distinct values", "looks like"]
    for c in cols:
        t.add_column(c)
    for r in shown.itertuples():
        dets = str(r.detectors)
        style = "bold red" if set(dets.split(", ")) & CONTENT_DETECTORS else ("yellow" if dets else "")
        cells = [str(r.vendor), str(r.host), *([] if category else [str(r.category)]), str(r.key_path), str(r.value_type)]
        t.add_row(*cells, f"{r.exchanges:,}", f"{r.distinct_values:,}", dets or "-", style=style)
    console.print(t)
    mine, every = field_counts(scoped), field_counts(fields)
    line = f"identifying fields: {fields_text(mine)} in {what} bodies"
    if category:
        line += f"; {fields_text(every)} in every inventoried body (as `egressaudit report` counts them; --category any lists them)"
    console.print(line, markup=False, highlight=False)
    console.print("values are salted hashes unless recorded with --keep-values", markup=False, highlight=False)
