"""``egressaudit inventory``: the fields telemetry carries, and which identify someone or leak content."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from egressaudit.report.measures import CONTENT_DETECTORS
from egressaudit.session.store import TableUnreadable, read_rows_checked


class InventoryError(Exception):
    """The folder has no HTTP tables; one line for the user."""


def load_inventory(session_dir: Path, category: str | None = "telemetry") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-field summary, per-host summary) of a session's fields table."""
    if not session_dir.is_dir():
        raise InventoryError(f"{session_dir}: not a folder")
    if not (session_dir / "http.parquet").exists() and not (session_dir / ".parts" / "http").is_dir():
        raise InventoryError(f"{session_dir}: no http.parquet (record with `egressaudit proxy` or analyze .mitm/.har files)")
    try:
        http = read_rows_checked(session_dir, "http").to_pandas()
        fields = read_rows_checked(session_dir, "fields").to_pandas()
    except TableUnreadable as e:
        raise InventoryError(str(e)) from None
    if category:
        http = http[http["category"] == category]
        fields = fields[fields["category"] == category]
    if fields.empty:
        per_field = pd.DataFrame(columns=["vendor", "host", "key_path", "value_type", "exchanges", "occurrences", "detectors", "distinct_values"])
    else:
        fields = fields.assign(det=fields["detectors"].map(lambda d: ",".join(sorted(d)) if d is not None and len(d) else ""))
        per_field = (
            fields.groupby(["vendor", "host", "key_path"], dropna=False)
            .agg(
                value_type=("value_type", lambda s: ",".join(sorted(set(s)))),
                exchanges=("exchange_id", "nunique"),
                occurrences=("count", "sum"),
                detectors=("det", lambda s: ",".join(sorted({x for v in s for x in v.split(",") if x}))),
                distinct_values=("value_hash", "nunique"),
            )
            .reset_index()
            .sort_values(["vendor", "host", "key_path"], na_position="last")
        )
    per_host = (
        http.groupby(["vendor", "host"], dropna=False)
        .agg(exchanges=("exchange_id", "count"), bytes_out=("bytes_out", "sum"), fields=("field_count", "sum"))
        .reset_index()
        .sort_values("bytes_out", ascending=False)
    )
    return per_field, per_host


def print_inventory(session_dir: Path, console: Console, *, all_fields: bool = False, category: str | None = "telemetry") -> None:
    per_field, per_host = load_inventory(session_dir, category)
    what = category or "all"
    t = Table(title=f"{what} exchanges by destination")
    for c in ("vendor", "host", "exchanges", "bytes out", "fields"):
        t.add_column(c, justify="right" if c in ("exchanges", "bytes out", "fields") else "left")
    for r in per_host.itertuples():
        t.add_row(str(r.vendor or "-"), str(r.host or "-"), f"{r.exchanges:,}", f"{r.bytes_out:,}", f"{r.fields:,}")
    console.print(t)
    shown = per_field if all_fields else per_field[per_field["detectors"] != ""]
    t = Table(title=f"fields in {what} bodies" + ("" if all_fields else " that identify someone or carry content (--all for every field)"))
    for c in ("vendor", "host", "field", "type", "exchanges", "distinct values", "looks like"):
        t.add_column(c)
    for r in shown.itertuples():
        dets = str(r.detectors)
        style = "bold red" if set(dets.split(",")) & CONTENT_DETECTORS else ("yellow" if dets else "")
        t.add_row(
            str(r.vendor or "-"), str(r.host or "-"), str(r.key_path), str(r.value_type), f"{r.exchanges:,}", f"{r.distinct_values:,}", dets or "-",
            style=style,
        )  # fmt: skip
    console.print(t)
    n_ident = int((per_field["detectors"] != "").sum()) if not per_field.empty else 0
    console.print(
        f"{len(per_field):,} distinct fields, {n_ident:,} of them identifying or content; values are salted hashes unless recorded with --keep-values"
    )
