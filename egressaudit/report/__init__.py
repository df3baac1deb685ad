"""``egressaudit report``: a session folder's numbers as terminal tables, ``report.html`` and PNG figures.

The numbers come from :mod:`egressaudit.report.summary` (pure pandas on the
flows table), the figures from :mod:`egressaudit.report.figures`, the page
from :mod:`egressaudit.report.render`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from rich.console import Console

from egressaudit.report import figures as fig
from egressaudit.report.render import render_html
from egressaudit.report.summary import ReportData, check_columns, summarize
from egressaudit.report.terminal import print_report
from egressaudit.session import SessionError, read_session_json, read_table

__all__ = ["ReportError", "build_report", "load_session", "ReportData"]


class ReportError(Exception):
    """The folder is not a usable session folder; one line for the user."""


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def load_session(session_dir: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """(flows DataFrame, session.json) of a session folder; ReportError when it is not one."""
    session_dir = Path(session_dir)
    if not session_dir.is_dir():
        raise ReportError(f"{session_dir}: not a folder")
    try:
        session = read_session_json(session_dir)
    except SessionError as e:
        raise ReportError(_one_line(str(e))) from None
    if not (session_dir / "flows.parquet").exists() and (session_dir / "http.parquet").exists():
        raise ReportError(f"{session_dir}: no flows.parquet, only HTTP tables (see `egressaudit inventory {session_dir}`)")
    try:
        flows = read_table(session_dir, "flows").to_pandas()
    except SessionError as e:
        raise ReportError(_one_line(str(e))) from None
    assert isinstance(flows, pd.DataFrame)
    missing = check_columns(flows)
    if missing:
        raise ReportError(f"{session_dir / 'flows.parquet'}: not a flows table of this egressaudit version (missing columns: {', '.join(missing)})")
    return flows, session


def build_report(session_dir: Path, console: Console | None = None, redact: bool = True) -> Path:
    """Write ``session_dir/report.html`` and ``session_dir/figures/*.png``; print the tables to ``console`` (when given).

    Local addresses are replaced by ``local-N`` tokens unless ``redact`` is false.
    Returns the page's path.  Raises ReportError when the folder is not a
    session folder, OSError when the report cannot be written.
    """
    session_dir = Path(session_dir)
    flows, session = load_session(session_dir)
    data = summarize(flows, session, redact=redact)
    figdir = session_dir / "figures"
    figdir.mkdir(exist_ok=True)
    made = {
        "Egress by data class and category": fig.data_class_figure(data.by_data_class_category, figdir / "data_class.png"),
        "Egress by vendor and service, coloured by party": fig.vendor_figure(data.by_vendor, figdir / "vendors.png"),
        "Egress over time by data class": fig.over_time_figure(data.over_time, data.bin_s, figdir / "over_time.png"),
    }
    data.figures = {alt: p.relative_to(session_dir).as_posix() for alt, p in made.items()}
    path = session_dir / "report.html"
    tmp = session_dir / ".report.html.tmp"
    tmp.write_text(render_html(data), encoding="utf-8")
    os.replace(tmp, path)
    if console is not None:
        print_report(data, console)
    return path
