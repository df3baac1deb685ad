"""``egressaudit compare``: vendors side by side over many sessions; ``egressaudit dataset``: sessions as one Parquet
dataset (what compare reads; any engine reads it too)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from egressaudit.cli.common import console, fail, handled, say
from egressaudit.errors import EXIT_OUTPUT

app = typer.Typer()


class EngineChoice(StrEnum):
    duckdb = "duckdb"
    dask = "dask"


class FormatChoice(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class TableChoice(StrEnum):
    measures = "measures"
    sessions = "sessions"
    states = "states"
    data_classes = "data_classes"
    third_parties = "third_parties"
    endpoints = "endpoints"
    identifiers = "identifiers"
    destinations = "destinations"
    timeline = "timeline"


@app.command()
def compare(
    sessions: Annotated[
        list[str],
        typer.Argument(
            metavar="SESSIONS...",
            help="Session folders or glob patterns (quoted: 'audits/zoom-*'), or one dataset folder (egressaudit dataset).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the tables (CSV, Parquet), figures (SVG), compare.html and compare.json.")
    ] = None,
    engine: Annotated[EngineChoice, typer.Option("--engine", help="duckdb: this machine; dask: dask.dataframe (a cluster with --scheduler).")] = (
        EngineChoice.duckdb
    ),
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="--engine dask: address of a distributed scheduler (tcp://host:8786).")] = None,
    fmt: Annotated[FormatChoice, typer.Option("--format", help="What goes to stdout: terminal tables, one table as CSV (--table), or JSON.")] = (
        FormatChoice.table
    ),
    table: Annotated[TableChoice, typer.Option("--table", help="--format csv: which table.")] = TableChoice.measures,
) -> None:
    """Compare vendors side by side: what their clients sent, per minute and per participant, over many sessions."""
    from egressaudit.report.compare import compare as run_compare
    from egressaudit.report.compare_render import check_out, print_output, write_comparison

    if scheduler and engine != EngineChoice.dask:
        raise typer.BadParameter("--scheduler needs --engine dask")
    if out is not None:
        with handled():
            check_out(out)
    with handled():
        c = run_compare(sessions, engine="dask" if engine == EngineChoice.dask else "duckdb", scheduler=scheduler)
    if out is not None:
        try:
            with handled(out):
                page = write_comparison(c, out)
        except OSError as e:
            raise fail(f"{out}: cannot write the comparison: {e.strerror or e}", EXIT_OUTPUT) from None
    print_output(c, fmt.value, console, table.value, write=sys.stdout.write)
    if out is not None and fmt == FormatChoice.table:
        say(f"comparison: {page}")


@app.command()
def dataset(
    sessions: Annotated[list[str], typer.Argument(help="Session folders or glob patterns (quoted: 'audits/*').", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder (created, or replaced when it holds a dataset).")],
    copy: Annotated[bool, typer.Option("--copy", help="Copy the tables instead of linking them (for workers that cannot see the sessions).")] = False,
) -> None:
    """Lay sessions out as one Parquet dataset, hive-partitioned by client vendor and session (for compare, DuckDB, Dask)."""
    from egressaudit.dataset import export_dataset
    from egressaudit.report.measures import plural

    with handled(out):
        ds = export_dataset(sessions, out, copy=copy)
    say(f"{plural(len(ds), 'session')} -> {ds.root} ({'copies' if copy else 'links'})")
