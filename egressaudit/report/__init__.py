"""``egressaudit report``: a session folder's numbers as terminal tables (or CSV, JSON), ``report.html`` and figures.

The numbers come from :mod:`egressaudit.report.summary` (pure pandas on the
flows table) and :mod:`egressaudit.report.http_summary` (the http and fields
tables, when the session has them), the figures from :mod:`egressaudit.report.figures`, the page
from :mod:`egressaudit.report.render` (one self-contained file: the figures are in it), the terminal's tables from
:mod:`egressaudit.report.terminal`, the machine-readable tables from :mod:`egressaudit.report.export`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console

from egressaudit.errors import InputError, NotASessionError
from egressaudit.report import figures as fig
from egressaudit.report.measures import plural
from egressaudit.report.render import render_html
from egressaudit.report.summary import ReportData, summarize
from egressaudit.report.terminal import print_report
from egressaudit.session import atomic_write, open_session, private_dir
from egressaudit.session.store import SPOOL, TableUnreadable, part_files, read_rows_checked, unrecorded

__all__ = ["ReportError", "build_report", "load_report", "load_session", "load_http", "ReportData"]

#: Key of the minimal session dict made up for a folder without session.json.
INCOMPLETE = "_incomplete"
#: Key of the list of session.json keys left out because their values had the wrong type.
DROPPED = "_dropped"


class ReportError(InputError):
    """The folder is not a usable session folder; one line for the user."""


def _holds(n: int) -> str:
    return "holds" if n == 1 else "hold"


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def has_http(session_dir: Path) -> bool:
    """Whether the folder holds HTTP tables: ``http.parquet`` or part files a crashed recorder left behind."""
    return (session_dir / "http.parquet").exists() or bool(part_files(session_dir, "http"))


def _load(session_dir: Path, table: str) -> pd.DataFrame:
    """A table of the session (part files included; empty with its columns when absent); ReportError when unreadable."""
    try:
        df = read_rows_checked(session_dir, table).to_pandas()
    except TableUnreadable as e:
        raise ReportError(str(e)) from None
    assert isinstance(df, pd.DataFrame)
    return df


def load_http(session_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(http, fields) DataFrames of a session folder, part files included; ReportError when unreadable."""
    return _load(session_dir, "http"), _load(session_dir, "fields")


def load_markers(session_dir: Path) -> pd.DataFrame:
    """The session's call-state markers (empty with its columns when it has none); ReportError when unreadable."""
    return _load(session_dir, "markers")


def load_streams(session_dir: Path) -> pd.DataFrame:
    """The media flows' per-second streams (empty with its columns when the session has none: no media, or written
    before schema 2.2); ReportError when unreadable."""
    return _load(session_dir, "streams")


def load_session(session_dir: Path) -> tuple[pd.DataFrame | None, dict[str, object]]:
    """(flows DataFrame, or None when the folder only has HTTP tables; the manifest as a dict) of a session folder,
    opened with :func:`egressaudit.session.open_session`.

    A folder with HTTP tables but no session.json (a recording that did not
    finish) gets a minimal manifest.  ReportError when the folder is not a
    session folder or its flows table cannot be read; NewerSchemaError for a
    session of a newer egressaudit.
    """
    session_dir = Path(session_dir)
    if not session_dir.is_dir():
        raise ReportError(f"{session_dir}: not a folder")
    try:
        s = open_session(session_dir)
    except NotASessionError as e:
        left = unrecorded(session_dir)
        if left and not (session_dir / "session.json").exists():
            raise ReportError(
                f"{session_dir}: nothing recorded yet: {plural(left, 'spool segment')} {_holds(left)} exchanges the proxy's recorder did not record "
                f"(was it killed?); run `egressaudit proxy --out {session_dir} --add` to record them"
            ) from None
        raise ReportError(_one_line(str(e))) from None
    session: dict[str, object] = s.manifest.document()
    if not s.has_manifest:
        session[INCOMPLETE] = True
    if s.dropped_keys:
        session[DROPPED] = s.dropped_keys
    if not s.has("flows"):
        if has_http(session_dir):
            return None, session
        raise ReportError(f"{session_dir}: no flows.parquet or http.parquet (is this a session folder written by `egressaudit analyze` or `proxy`?)")
    try:
        flows = s.table("flows").to_pandas()
    except TableUnreadable as e:
        raise ReportError(_one_line(str(e))) from None
    assert isinstance(flows, pd.DataFrame)
    return flows, session


def _recovered_note(session: dict[str, object]) -> str:
    inputs = session.get("inputs")
    first = inputs[0] if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else {}
    packets, cut = first.get("packets"), first.get("truncated_records")
    return (
        "The capture did not finish (it was killed): these flows were analysed afterwards from the "
        + (f"{packets:,} packets" if isinstance(packets, int) else "packets")
        + " that reached capture.pcapng"
        + (", whose last record was cut short" if cut else "")
        + ". Packets the capture still held in memory when it died (at most about a second's worth) are missing,"
        " and the kernel's drop counts are unknown."
    )


def recording_notes(session_dir: Path, session: dict[str, object]) -> list[str]:
    """What the proxy's recording says it lost (session.json ``http.recording``), and exchanges it left unrecorded."""
    notes = []
    http = session.get("http")
    rec = http.get("recording") if isinstance(http, dict) else None
    if isinstance(rec, dict) and rec.get("complete") is False:
        lost, handed = rec.get("lost"), rec.get("handed_over")
        reasons = rec.get("lost_by_reason") if isinstance(rec.get("lost_by_reason"), dict) else {}
        text = "The HTTP recording is incomplete"
        if isinstance(lost, int) and isinstance(handed, int):
            text += f": {lost:,} of the {plural(handed, 'exchange')} handed to the recorder {'was' if lost == 1 else 'were'} lost"
        if reasons:
            text += " (" + "; ".join(f"{k}: {v}" for k, v in reasons.items()) + ")"
        if isinstance(rec.get("stopped_by"), str):
            text += f"; {rec['stopped_by']}"
        if isinstance(rec.get("unwritten_rows"), int) and rec["unwritten_rows"]:
            text += f"; {plural(rec['unwritten_rows'], 'row')} could not be written to disk"
        earlier = rec.get("lost_from_earlier_runs")
        if isinstance(earlier, int) and earlier:
            by = rec.get("lost_from_earlier_runs_by_reason")
            text += f"; {plural(earlier, 'exchange')} an earlier run left in the spool {'was' if earlier == 1 else 'were'} lost" + (
                " (" + "; ".join(f"{k}: {v}" for k, v in by.items()) + ")" if isinstance(by, dict) and by else ""
            )
        if isinstance(rec.get("not_compacted"), str):
            text += f"; the tables were not compacted ({rec['not_compacted']}): their rows stay in part files"
        notes.append(text + ".")
    left = unrecorded(session_dir)
    if left:
        notes.append(
            f"{plural(left, 'spool segment')} in {session_dir / SPOOL} {_holds(left)} exchanges (bodies included) the recorder did not record: "
            f"run `egressaudit proxy --out {session_dir} --add` to record them, or delete that folder."
        )
    return notes


def load_report(session_dir: Path, redact: bool = True, top: int = 20) -> ReportData:
    """The report's numbers of a session folder (:class:`ReportData`, the ``top`` destinations and endpoints), with
    the notes on what the session lost, and nothing written.  Raises ReportError when the folder is not a session
    folder."""
    session_dir = Path(session_dir)
    flows, session = load_session(session_dir)
    http, fields = load_http(session_dir) if has_http(session_dir) else (None, None)
    markers = load_markers(session_dir)
    streams = load_streams(session_dir) if flows is not None else None
    data = summarize(flows, session, redact=redact, top=top, http=http, fields=fields, markers=markers, streams=streams)
    if session.get("state") == "recovered":
        data.notes.append(_recovered_note(session))
    if session.get(DROPPED):
        data.notes.append(f"session.json is damaged: left out {', '.join(map(str, session[DROPPED]))} (values of the wrong type).")  # type: ignore[call-overload]
    data.notes += recording_notes(session_dir, session)
    if session.get(INCOMPLETE):
        data.notes.append("No session.json: the recording did not finish. Rows were read from the part files it left behind.")
    if part_files(session_dir, "http") or part_files(session_dir, "fields"):
        data.notes.append("Some HTTP rows come from part files not yet merged (the recorder was stopped before it compacted its tables).")
    return data


def report_figures(data: ReportData) -> dict[str, tuple[str, Figure]]:
    """The report's figures, drawn: {name: (title, matplotlib Figure)}, what the page shows and a notebook displays."""
    drawn: dict[str, tuple[str, Figure]] = {}
    if data.has_flows:
        drawn["data_class"] = ("Egress by data class and category", fig.data_class_figure(data.by_data_class_category))
        drawn["vendors"] = ("Egress by vendor and service, by data class", fig.vendor_figure(data.by_vendor_data_class))
        drawn["over_time"] = ("Egress over time by data class", fig.over_time_figure(data.over_time, data.bin_s, data.by_state))
    if data.http is not None:
        drawn["http_vendors"] = ("HTTP request bytes sent per vendor, by category", fig.http_vendor_figure(data.http.by_vendor_category))
    return drawn


def _figures(figdir: Path, drawn: list[tuple[str, str, Figure]]) -> dict[str, str]:
    """Each figure written to ``figdir/NAME.png``; {its title: its inline SVG} for the page."""
    out = {}
    for name, title, figure in drawn:
        fig.write_png(figure, figdir / f"{name}.png")
        out[title] = fig.inline_svg(figure, f"fig-{name.replace('_', '-')}", title)
    return out


def build_report(session_dir: Path, console: Console | None = None, redact: bool = True) -> Path:
    """Write ``session_dir/report.html`` (figures embedded) and ``session_dir/figures/*.png``; print the tables to
    ``console`` (when given).

    The session may hold flows, HTTP tables (http.parquet, fields.parquet, or
    the part files of a recording that did not finish), or both.  Local
    addresses (HTTP client addresses included) are replaced by ``local-N``
    tokens, and field values are never shown, unless ``redact`` is false.
    Returns the page's path.  Raises ReportError when the folder is not a
    session folder, OSError when the report cannot be written.
    """
    session_dir = Path(session_dir)
    data = load_report(session_dir, redact)
    private_dir(session_dir)  # (a session folder written by an older version, or copied with a permissive umask)
    figdir = session_dir / "figures"
    private_dir(figdir)
    drawn = [(name, title, figure) for name, (title, figure) in report_figures(data).items()]
    if data.has_flows:
        data.figures = _figures(figdir, [d for d in drawn if d[0] != "http_vendors"])
    if data.http is not None:
        data.http.figures = _figures(figdir, [d for d in drawn if d[0] == "http_vendors"])
    page = render_html(data)
    path = atomic_write(session_dir / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    if console is not None:
        print_report(data, console)
    return path
