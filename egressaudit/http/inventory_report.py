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

from egressaudit.errors import InputError
from egressaudit.report.measures import CONTENT_DETECTORS, field_counts, field_table, fields_text, joined, label, words
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


def inventory_tables(session_dir: Path, *, all_fields: bool = False, category: str | None = "telemetry") -> dict[str, pd.DataFrame]:
    """The inventory's two tables, as the terminal shows them: ``hosts`` (the exchanges of ``category`` per vendor
    and host) and ``fields`` (their fields; only those a detector fired on unless ``all_fields``), stored names kept."""
    per_field, per_host = load_inventory(session_dir, category)
    shown = per_field if all_fields else per_field[per_field["detectors"] != ""].reset_index(drop=True)
    return {"hosts": per_host, "fields": shown}


def inventory_document(session_dir: Path, tables: dict[str, pd.DataFrame], *, category: str | None = "telemetry") -> dict[str, object]:
    """What ``inventory --format json`` writes: the scope, the field counts (of the scope and of every inventoried
    body, as ``egressaudit report`` counts them) and the tables ({name: [row, ...]})."""
    from egressaudit.report.export import records

    _, fields = _tables(session_dir)
    return {
        "category": category,
        "field_counts": field_counts(_of(fields, category)),
        "field_counts_every_body": field_counts(fields),
        "values": "salted hashes unless recorded with --keep-values",
        "tables": {name: records(df) for name, df in tables.items()},
    }


def print_inventory(session_dir: Path, console: Console, *, all_fields: bool = False, category: str | None = "telemetry") -> None:
    """The inventory's tables in the terminal (cells wrap, never cut; names of categories and detectors in words)."""
    from egressaudit.report.terminal import Col, print_fitted

    http, fields = _tables(session_dir)
    scoped = _of(fields, category)
    per_field, per_host = _per_field(scoped), _per_host(_of(http, category))
    what = words(category) if category else "all"
    ws = bool(per_host["ws_messages"].sum()) if not per_host.empty else False  # (a column only when there are any)
    cols = [Col("vendor"), Col("host", "name"), Col("exchanges", "number", 2), *([Col("websocket messages", "number", 1)] if ws else [])]
    cols += [Col("bytes out", "number"), Col("fields", "number", 3)]
    rows = [
        [str(r.vendor), str(r.host), f"{r.exchanges:,}", *([f"{r.ws_messages:,}"] if ws else []), f"{r.bytes_out:,}", f"{r.fields:,}"]
        for r in per_host.itertuples()
    ]
    print_fitted(console, f"{what} exchanges by destination", cols, rows)
    shown = per_field if all_fields else per_field[per_field["detectors"] != ""]
    title = f"fields in {what} bodies" + ("" if all_fields else " that identify someone or carry content (--all for every field)")
    cols = [Col("vendor"), Col("host", "name"), *([] if category else [Col("category", drop=4)]), Col("field", "name")]
    cols += [Col("type", drop=1), Col("exchanges", "number", 3), Col("distinct values", "number", 2), Col("looks like")]
    rows, styles = [], []
    for r in shown.itertuples():
        dets = str(r.detectors)
        styles.append("bold red" if set(dets.split(", ")) & CONTENT_DETECTORS else ("yellow" if dets else None))
        cells = [str(r.vendor), str(r.host), *([] if category else [words(r.category)]), str(r.key_path), str(r.value_type)]
        rows.append([*cells, f"{r.exchanges:,}", f"{r.distinct_values:,}", words(dets) or "-"])
    print_fitted(console, title, cols, rows, styles)
    mine, every = field_counts(scoped), field_counts(fields)
    line = f"identifying fields: {fields_text(mine)} in {what} bodies"
    if category:
        line += f"; {fields_text(every)} in every inventoried body (as `egressaudit report` counts them; --category any lists them)"
    console.print(line, markup=False, highlight=False)
    console.print("values are salted hashes unless recorded with --keep-values", markup=False, highlight=False)
