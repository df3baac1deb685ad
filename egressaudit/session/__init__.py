"""The session folder: the unit every command writes and every reader opens.

A session folder holds::

    session.json        the manifest (:mod:`egressaudit.session.manifest`): what was recorded, how, by which version
    flows.parquet       packet flows (packet path: ``analyze`` of captures, ``capture``)
    http.parquet        HTTP exchanges and WebSocket messages (HTTP path: the proxy, flow files, HAR)
    fields.parquet      the fields the HTTP bodies carried (hashed values unless kept)
    markers.parquet     call states over time (written by audited sessions)
    streams.parquet     what each UDP media flow carried, per second and per RTP stream (packet path; none without media)
    capture.pcapng      the packets of ``egressaudit capture``
    flows.mitm          complete HTTP flows with bodies (only with ``--keep-bodies``)
    report.html, figures/

Every table's columns are declared once in :mod:`egressaudit.schema` and every table carries ``session_id``; the
packet and HTTP tables share one vocabulary (``local``/``remote``, ``_out``/``_in``, ``ts_start``/``ts_end``,
``community_id``) so they join.  This package owns the folder: :mod:`~egressaudit.session.folder` creates it (0700,
files 0600), claims it for a command (a new folder, ``--force`` to replace a session whole, ``--add`` to add to one;
a command that fails leaves no folder and an existing session as it was) and writes files atomically;
:mod:`~egressaudit.session.store` appends rows crash-safely and reads tables (older schemas migrated);
:mod:`~egressaudit.session.manifest` is the one writer of ``session.json``.

Reading is :func:`open_session` / :func:`open_sessions`, the public API (``egressaudit.open_session``)::

    s = open_session("audits/zoom-call")
    s.flows, s.http, s.fields, s.markers, s.streams   # DataFrames, one column per schema column, Arrow-backed dtypes
    s.manifest.audited_client
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from egressaudit.errors import NotASessionError, UsageError
from egressaudit.schema import TABLES, arrow_schema
from egressaudit.session import manifest
from egressaudit.session.folder import (
    LOCK_FILE,
    PRIVATE_UMASK,
    Claim,
    RecordingLock,
    SessionError,
    atomic_write,
    claimed,
    holds_session,
    prepare,
    private_dir,
    private_umask,
    recording_pid,
    session_files,
    session_id_for,
    write_table,
)
from egressaudit.session.manifest import Manifest, now_iso
from egressaudit.session.store import part_files, read_rows, read_rows_checked

if TYPE_CHECKING:
    import pandas as pd

    from egressaudit.signatures import SignatureDB

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)


def dataframe(table: pa.Table) -> pd.DataFrame:
    """A session table as pandas, every column with the Arrow-backed dtype of its schema type
    (``pd.ArrowDtype(pa.int64())``, ``pd.ArrowDtype(pa.timestamp("us", tz="UTC"))``, ...): nulls stay nulls in
    integer columns, and an empty table keeps its columns and dtypes.  (pandas is imported here, when a table is first
    read as a DataFrame: the commands that only write sessions do without it.)"""
    import pandas as pd

    df = table.to_pandas(types_mapper=pd.ArrowDtype)
    assert isinstance(df, pd.DataFrame)
    return df


class _Tables:
    """The tables as DataFrame attributes, for one session or many: each is ``frame(<table name>)``."""

    def frame(self, name: str) -> pd.DataFrame:
        raise NotImplementedError

    @property
    def flows(self) -> pd.DataFrame:
        return self.frame("flows")

    @property
    def http(self) -> pd.DataFrame:
        return self.frame("http")

    @property
    def fields(self) -> pd.DataFrame:
        return self.frame("fields")

    @property
    def markers(self) -> pd.DataFrame:
        return self.frame("markers")

    @property
    def streams(self) -> pd.DataFrame:
        return self.frame("streams")


class Session(_Tables):
    """One session folder, opened for reading (:func:`open_session`).

    ``flows``, ``http``, ``fields``, ``markers`` and ``streams`` are DataFrames (see :func:`dataframe`), read when
    first used; a table the session does not have (``streams`` in a session written before schema 2.2, or without
    media) is empty with its columns.  ``manifest`` is ``session.json``
    (:class:`~egressaudit.session.manifest.Manifest`); ``dropped_keys`` names its keys left out because their values
    had the wrong type, and ``has_manifest`` is False for a recording that never wrote one (a killed proxy).
    """

    def __init__(self, path: Path, manifest_: Manifest, dropped_keys: list[str], has_manifest: bool = True) -> None:
        self.path = path
        self.manifest = manifest_
        self.dropped_keys = dropped_keys
        self.has_manifest = has_manifest
        self._tables: dict[str, pa.Table] = {}
        self._frames: dict[str, pd.DataFrame] = {}

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, client={self.manifest.audited_client!r}, tables={[t for t in TABLE_NAMES if self.has(t)]})"

    @property
    def session_id(self) -> str:
        return self.manifest.session_id

    def has(self, table: str) -> bool:
        """Whether the folder holds the table (its file, or part files a recording left)."""
        return (self.path / f"{table}.parquet").exists() or (self.path / ".parts" / table).is_dir()

    def table(self, name: str) -> pa.Table:
        """The table as Arrow, in this version's schema (older ones migrated; part files included); TableUnreadable
        (exit 3) when it cannot be read, NewerSchemaError when a newer egressaudit wrote it."""
        if name not in TABLES:
            raise UsageError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        if name not in self._tables:
            self._tables[name] = read_rows_checked(self.path, name) if self.has(name) else arrow_schema(name).empty_table()
        return self._tables[name]

    def frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            self._frames[name] = dataframe(self.table(name))
        return self._frames[name]


def open_session(path: str | Path) -> Session:
    """Open a session folder for reading.

    NotASessionError (an :class:`~egressaudit.errors.InputError`, exit 3 in the CLI) for a path that is not a
    session folder; NewerSchemaError for one written by a newer egressaudit.  A folder whose recording never wrote
    ``session.json`` (a proxy that was killed) opens with a minimal manifest (``has_manifest`` False) when it holds
    rows."""
    folder = Path(path)
    if not folder.is_dir():
        raise NotASessionError(f"{folder}: not a session folder ({'no such folder' if not folder.exists() else 'not a folder'})")
    try:
        m, dropped = manifest.read(folder)
    except NotASessionError:
        recorded = any((folder / f"{t}.parquet").exists() or part_files(folder, t) for t in TABLES)
        if (folder / manifest.MANIFEST).exists() or not recorded:
            raise  # (a damaged manifest is said, not papered over)
        return Session(folder, Manifest(session_id=session_id_for(folder), state="recording"), [], has_manifest=False)
    return Session(folder, m, dropped)


@dataclass
class Sessions(_Tables):
    """Many sessions' tables together (:func:`open_sessions`): each table has the columns of one session's plus
    ``client`` (the session's audited client) and ``label`` after ``session_id``.  ``manifests`` is one row per
    session (session_id, path, client, label, state, created, schema_version, tool_version)."""

    sessions: list[Session]
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[Session]:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)

    def frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            parts = []
            for s in self.sessions:
                t = s.table(name)
                n = t.num_rows
                t = t.add_column(1, pa.field("client", pa.string()), pa.array([s.manifest.audited_client] * n, pa.string()))
                t = t.add_column(2, pa.field("label", pa.string()), pa.array([s.manifest.label] * n, pa.string()))
                parts.append(t)
            self._frames[name] = dataframe(pa.concat_tables(parts))
        return self._frames[name]

    @property
    def manifests(self) -> pd.DataFrame:
        """One row per session, with Arrow-backed dtypes like the tables."""
        rows: list[dict[str, Any]] = [
            {
                "session_id": s.session_id, "path": str(s.path), "client": s.manifest.audited_client, "label": s.manifest.label,
                "state": s.manifest.state, "created": s.manifest.created, "schema_version": s.manifest.schema_version,
                "tool_version": s.manifest.tool.version,
            }
            for s in self.sessions
        ]  # fmt: skip
        return dataframe(pa.Table.from_pylist(rows, schema=MANIFEST_COLUMNS))


MANIFEST_COLUMNS = pa.schema(
    [pa.field(n, pa.string()) for n in ("session_id", "path", "client", "label", "state", "created", "schema_version", "tool_version")]
)


def open_sessions(paths: str | Path | Iterable[str | Path]) -> Sessions:
    """Open many session folders: paths or glob patterns (``"audits/*"``).  A pattern's matches that are not session
    folders are passed over; a path named outright must be one.  NotASessionError when nothing matches, UsageError
    when two sessions share a session_id (their rows could not be told apart)."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    found: list[Session] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            for match in sorted(glob.glob(text)):
                p = Path(match)
                if p.is_dir() and (p / manifest.MANIFEST).is_file():
                    found.append(open_session(p))
        else:
            found.append(open_session(item))
    if not found:
        raise NotASessionError(f"no session folder in {', '.join(map(str, items)) or 'nothing'}")
    seen: dict[str, Path] = {}
    for s in found:
        if s.session_id in seen and seen[s.session_id].resolve() != s.path.resolve():
            raise UsageError(f"two sessions share the session_id {s.session_id!r}: {seen[s.session_id]} and {s.path}; rename one folder")
        seen[s.session_id] = s.path
    unique = {s.path.resolve(): s for s in found}
    return Sessions(list(unique.values()))


# -- for tests and tools that build a session by hand -----------------------------------------------------------


def write_session_json(out: Path, session: dict[str, Any], signatures: dict[str, Any]) -> Path:
    """Write a whole manifest from a dict (tests and tools that build a session by hand): through the one writer."""
    m, _ = manifest.parse({"signatures": signatures, **session}, str(out / manifest.MANIFEST), session_id_for(out))
    return manifest.write(out, m)


# -- the audited client, once per session ------------------------------------------------------------------------


def settle_party(folder: Path, db: SignatureDB, client: str | None = None) -> str | None:
    """Decide the session's audited client from all its tables (:mod:`egressaudit.classify.party`) and make every
    table's ``party`` column and the manifest agree with it; the client.  ``client`` is the user's choice
    (``--client``), which wins; without it a client the manifest records as the user's is kept.

    Runs under the manifest lock, and rewrites a table only if no other process replaced it meanwhile (a capture and a
    proxy finishing into one folder at the same time each settle; the later one sees both tables).  Reads only the
    columns the decision needs, and a whole table only when its party column changes."""
    from egressaudit.classify.party import decide_audited_client, first_party_vendors, party_array

    with manifest.locked(folder):
        m, _ = manifest.read(folder) if (folder / manifest.MANIFEST).exists() else (None, [])
        source = "option" if client else None
        reason = "named by the user (--client)" if client else None
        if client is None and m is not None and m.audited_client_source == "option":
            client, source, reason = m.audited_client, "option", m.audited_client_reason or "named by the user (--client)"
        # (a table still in part files is being recorded: its recorder settles the party when it compacts them)
        names = [t for t in ("flows", "http") if (folder / f"{t}.parquet").exists() and not part_files(folder, t)]
        stamps = {t: _stamp(folder / f"{t}.parquet") for t in names}
        parts = {t: _columns(folder, t, ("vendor", "category", "bytes_out", "bytes_in", "party")) for t in names}
        if client is None:
            usage: list[tuple[str | None, str, int]] = []
            for t in parts.values():
                sums = t.group_by(["vendor", "category"]).aggregate([("bytes_out", "sum"), ("bytes_in", "sum")])
                usage += zip(
                    sums.column("vendor").to_pylist(),
                    sums.column("category").to_pylist(),
                    pc.add(sums.column("bytes_out_sum"), sums.column("bytes_in_sum")).to_pylist(),
                    strict=True,
                )
            choice = decide_audited_client(usage, db)
            client, reason = choice.vendor, choice.reason
            source = "auto" if client else None
        first = first_party_vendors(client, db)
        for name, t in parts.items():
            party = party_array(t.column("vendor"), first)
            if t.num_rows and not pc.all(pc.equal(party, t.column("party"))).as_py() and _stamp(folder / f"{name}.parquet") == stamps[name]:
                whole = read_rows_checked(folder, name)
                idx = whole.schema.get_field_index("party")
                write_table(folder, name, whole.set_column(idx, whole.schema.field("party"), party))

        def record(m: Manifest) -> None:
            m.audited_client, m.audited_client_source = client, source  # type: ignore[assignment]
            m.audited_client_reason = reason

        manifest.update(folder, record, lock=False)
    return client


def _columns(folder: Path, table: str, names: tuple[str, ...]) -> pa.Table:
    """Some columns of a table file, in this version's schema (a file of an older schema is read whole and migrated)."""
    import pyarrow.parquet as pq

    from egressaudit.schema import SCHEMA_VERSION, version_of

    path = folder / f"{table}.parquet"
    try:
        same = version_of(pq.read_schema(path)).split(".")[0] == SCHEMA_VERSION.split(".")[0]
        if same:
            t = pq.read_table(path, columns=list(names))
            return t.cast(pa.schema([arrow_schema(table).field(n) for n in names]))
    except (OSError, ValueError, pa.ArrowException, KeyError):
        pass  # (read whole below: the error, if any, named by the store)
    return read_rows_checked(folder, table).select(list(names))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


__all__ = [
    "LOCK_FILE", "PRIVATE_UMASK", "TABLE_NAMES", "Claim", "Manifest", "RecordingLock", "Session", "SessionError", "Sessions",
    "atomic_write", "claimed", "dataframe", "holds_session", "manifest", "now_iso", "open_session", "open_sessions", "prepare",
    "private_dir", "private_umask", "read_rows", "read_rows_checked", "recording_pid", "session_files", "session_id_for",
    "settle_party", "write_session_json", "write_table",
]  # fmt: skip
