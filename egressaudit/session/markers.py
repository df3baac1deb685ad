"""Call-state markers: time-stamped rows of a session's ``markers`` table (``egressaudit session mark muted``).

A marker says what was happening in the call from its time on, until the next marker: the report splits its
measures by these intervals.  States are the words of :class:`egressaudit.taxonomy.CallState` or a user's own (one
short word or phrase).  Markers are few and may come from another process while a session is recorded, so each is
added by rewriting the small table atomically under the session's manifest lock: two marks never lose each other.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from egressaudit.errors import NotASessionError, UsageError
from egressaudit.schema import arrow_schema
from egressaudit.session import manifest
from egressaudit.session.folder import LOCK_FILE, session_id_for, write_table
from egressaudit.session.store import read_rows_checked
from egressaudit.taxonomy import CallState

SOURCES = ("cli", "live", "lab")
MAX_STATE = 64
MAX_NOTE = 1000


def check_state(state: str) -> str:
    """The state as stored: a known one (``camera_off`` and ``Camera Off`` read as ``camera-off``), or the user's own
    word; UsageError for an empty or over-long one."""
    text = " ".join(state.split())
    if not text:
        raise UsageError("a marker needs a state, e.g. muted, camera-off, screen-share-start, or a word of your own")
    if len(text) > MAX_STATE:
        raise UsageError(f"a marker's state is at most {MAX_STATE} characters (put the rest in --note)")
    known = re.sub(r"[\s_]+", "-", text.lower())
    return known if known in {s.value for s in CallState} else text


def add_marker(folder: str | Path, state: str, *, note: str | None = None, source: str = "cli", ts: datetime | None = None) -> dict[str, object]:
    """Add a marker to the session in ``folder`` (a finished session, or one being recorded); the row added.
    NotASessionError when the folder is neither; UsageError for a state or source that cannot be used."""
    folder = Path(folder)
    if source not in SOURCES:
        raise UsageError(f"unknown marker source {source!r}; known: {', '.join(SOURCES)}")
    state = check_state(state)
    if note is not None and len(note) > MAX_NOTE:
        raise UsageError(f"a marker's note is at most {MAX_NOTE} characters")
    if not folder.is_dir() or not ((folder / manifest.MANIFEST).exists() or (folder / LOCK_FILE).exists()):
        raise NotASessionError(f"{folder}: not a session folder (give --session DIR, or set EGRESSAUDIT_SESSION)")
    when = (ts or datetime.now(UTC)).astimezone(UTC)
    with manifest.locked(folder):
        sid = session_id_for(folder)
        if (folder / manifest.MANIFEST).exists():
            sid = manifest.read(folder)[0].session_id
        row = {"session_id": sid, "ts": when, "state": state, "note": note, "source": source}
        old = read_rows_checked(folder, "markers") if (folder / "markers.parquet").exists() else arrow_schema("markers").empty_table()
        new = pa.Table.from_pylist([row], schema=arrow_schema("markers"))
        both = pa.concat_tables([old, new]).sort_by([("ts", "ascending")])
        write_table(folder, "markers", both)
    return row
