"""The commands that read a session: ``report``, ``inventory``, ``har``; and ``schema``, ``signatures``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from egressaudit.cli.common import console, err, fail, handled, say, warn
from egressaudit.errors import EXIT_INPUT, EXIT_OUTPUT

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer()


def _recover(folder: Path) -> None:
    """A folder whose ``capture`` or ``session start`` was killed before it finished: finish it from what reached
    disk first (``egressaudit session recover`` does the same on its own)."""
    from egressaudit.audit import call, live

    def announce(line: str) -> None:
        err.print(line, highlight=False, soft_wrap=True, markup=False)

    with handled(folder):
        if call.needs_recovery(folder):
            call.recover(folder, announce)
        else:
            live.recover(folder, announce)


class Format(StrEnum):
    """How ``report`` and ``inventory`` write their tables."""

    table = "table"
    csv = "csv"
    json = "json"


#: ``--format``: the report's tables in the terminal (and report.html), or machine-readable on stdout.
FormatOption = Annotated[
    Format,
    typer.Option(
        "--format",
        help="table: the tables in the terminal; csv: one table (--table) on stdout; json: every table and the headline on stdout.",
        case_sensitive=False,
    ),
]
TableOption = Annotated[str | None, typer.Option("--table", help="The table --format csv writes (the only one JSON holds); a wrong name lists them.")]
WideOption = Annotated[bool, typer.Option("--wide", help="Never wrap a table row, however wide (for `less -S` or a file).")]
#: How wide a console is that never wraps (``--wide``).
WIDE = 100_000


def _console(wide: bool) -> Console:
    return Console(emoji=False, width=WIDE) if wide else console


def _write(fmt: Format, doc: Callable[[], dict[str, Any]], tables: dict[str, pd.DataFrame], table: str | None, default: str) -> None:
    """Write ``tables`` to stdout as CSV (``table``, else ``default``) or as the JSON document ``doc()``."""
    from egressaudit.report.export import write_csv, write_json

    if table is not None and table not in tables:
        raise typer.BadParameter(f"no table {table!r} in this session; its tables: {', '.join(tables)}", param_hint="--table")
    if fmt is Format.csv:
        write_csv(tables[table or default], sys.stdout)
    else:
        write_json(doc(), sys.stdout)
    sys.stdout.flush()


@app.command()
def report(
    session_dir: Annotated[Path, typer.Argument(help="Session folder written by `egressaudit analyze`.", show_default=False)],
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Show local addresses instead of redacted tokens.")] = False,
    fmt: FormatOption = Format.table,
    table: TableOption = None,
    wide: WideOption = False,
) -> None:
    """Print the audit's tables and write SESSION_DIR/report.html (one self-contained page) and figures/*.png.

    With --format csv or json, write the report's tables to stdout instead (nothing is written into the folder)."""
    from egressaudit.report import build_report, load_report

    if table is not None and fmt is Format.table:
        raise typer.BadParameter("goes with --format csv or json", param_hint="--table")
    if not session_dir.is_dir():
        raise fail(f"{session_dir}: not a folder", EXIT_INPUT)
    _recover(session_dir)
    if fmt is not Format.table:
        from egressaudit.report.export import default_table, report_document, report_tables

        with handled():
            data = load_report(session_dir, redact=not no_redact, top=sys.maxsize)
        tables = report_tables(data)
        _write(fmt, lambda: report_document(data, {table: tables[table]} if table else tables), tables, table, default_table(data))
        for note in data.notes:
            warn(note)
        return
    try:
        with handled():
            path = build_report(session_dir, console=_console(wide), redact=not no_redact)
    except OSError as e:
        raise fail(f"{session_dir}: cannot write the report: {e.strerror or e}", EXIT_OUTPUT) from None
    say(f"report: {path}")


@app.command()
def inventory(
    session_dir: Annotated[Path, typer.Argument(help="Session folder with http.parquet / fields.parquet.", show_default=False)],
    all_fields: Annotated[bool, typer.Option("--all", help="List every field, not only those that look like identifiers or content.")] = False,
    category: Annotated[str, typer.Option("--category", help="Only fields of exchanges of this category ('any' for all).")] = "telemetry",
    fmt: FormatOption = Format.table,
    table: TableOption = None,
    wide: WideOption = False,
) -> None:
    """Which fields the telemetry carries, and which of them identify someone or leak content."""
    from egressaudit.http.inventory_report import inventory_document, inventory_tables, print_inventory

    if table is not None and fmt is Format.table:
        raise typer.BadParameter("goes with --format csv or json", param_hint="--table")
    scope = None if category == "any" else category
    if fmt is Format.table:
        with handled():
            print_inventory(session_dir, _console(wide), all_fields=all_fields, category=scope)
    else:
        with handled():
            tables = inventory_tables(session_dir, all_fields=all_fields, category=scope)
        _write(fmt, lambda: inventory_document(session_dir, tables, category=scope), tables, table, "fields")
    _warn_incomplete(session_dir)


def _warn_incomplete(session_dir: Path) -> None:
    """One warning line per thing the session says it lost (the same notes the report shows)."""
    from egressaudit.errors import InputError
    from egressaudit.report import recording_notes
    from egressaudit.session import manifest

    try:
        doc = manifest.read(session_dir)[0].document()
    except InputError:
        doc = {}
    for note in recording_notes(session_dir, doc):
        warn(note)


@app.command()
def har(
    session_dir: Annotated[Path, typer.Argument(help="Session folder recorded by the proxy or from flow files.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="HAR file to write.")],
    bodies: Annotated[bool, typer.Option("--bodies", help="Include bodies (needs a session recorded with --keep-bodies).")] = False,
) -> None:
    """Export the session's HTTP exchanges as a HAR 1.2 file (no bodies unless --bodies)."""
    from egressaudit.http.har import export_har

    with handled(out):
        n = export_har(session_dir, out, bodies=bodies)
    say(f"{n:,} entries -> {out}")
    _warn_incomplete(session_dir)


@app.command()
def schema(
    table: Annotated[str | None, typer.Argument(help="Only this table (e.g. flows).")] = None,
) -> None:
    """Print the session tables' columns as Markdown (generated from the schema definition)."""
    from egressaudit.schema import TABLES, markdown

    if table is not None and table not in TABLES:
        raise typer.BadParameter(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    typer.echo(markdown(table))


@app.command()
def signatures(
    check: Annotated[
        list[Path] | None, typer.Option("--check", help="Validate these vendor YAML files instead of listing the packaged ones.")
    ] = None,
) -> None:
    """List the vendor signature database (or validate vendor files)."""
    from egressaudit.signatures import load

    with handled():
        db = load(check) if check else load()
    t = Table(title=f"signature database {db.version}: {len(db.vendors)} vendors, {len(db)} rules")
    t.add_column("vendor")
    t.add_column("kind")
    t.add_column("rules", justify="right")
    t.add_column("name")
    for v in sorted(db.vendors.values(), key=lambda v: v.vendor):
        t.add_row(v.vendor, v.kind, str(len(v.rules)), v.display_name)
    console.print(t)
