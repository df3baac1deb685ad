"""Many session folders as one Parquet dataset: what ``egressaudit compare`` reads, on one machine or a cluster.

A session folder is already a handful of Parquet files (:mod:`egressaudit.session`); a dataset lays many of them out
side by side, hive-partitioned by the audited client's vendor and the session, so that any engine that reads Parquet
(DuckDB, Dask, Spark, pyarrow) reads them together::

    DATASET/
      dataset.json                                  what it is: format version, schema version, tables, sessions, links or copies
      sessions.parquet                              one row per session: session_id, client, label, path, state, versions,
                                                    and which tables it has
      client=zoom/session=zoom-1/flows.parquet      the session's own file, linked (or copied with ``copy``) ...
      client=zoom/session=zoom-1/http.parquet
      client=microsoft/session=teams-1/flows.parquet
      ...

    duckdb:  SELECT client, sum(bytes_out) FROM read_parquet('DATASET/*/*/flows.parquet', hive_partitioning = true) GROUP BY client
    dask:    dask.dataframe.read_parquet('DATASET/client=zoom/*/flows.parquet')

Every file is in this version's schema (:mod:`egressaudit.schema`): a table that an older egressaudit wrote, or
whose rows still sit in the part files of a recording, is read through :meth:`egressaudit.session.Session.table`
(migrated, part files included) and written into the dataset instead of linked.  A table a session does not have has
no file (``sessions.parquet`` says which it has).  Partition values are percent-encoded; a session whose audited client
is not known is under ``client=__HIVE_DEFAULT_PARTITION__`` (Hive's and Spark's word for null).  Every table carries
``session_id``, so the partitions are a layout, not a column the comparison needs.

Links are symbolic (absolute): a dataset costs nothing and follows a session analysed again.  ``copy`` makes real
files, for workers that see the dataset's storage but not the session folders.  The folder is built aside and put in
place at the end: a failed export leaves no folder, and an earlier dataset in the same place as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from egressaudit import __version__
from egressaudit.errors import InputError, OutputError, UsageError
from egressaudit.schema import SCHEMA_VERSION, TABLES, arrow_schema, version_of
from egressaudit.session import Session, Sessions, holds_session, now_iso, open_sessions, private_dir
from egressaudit.session.store import part_files

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "egressaudit-dataset"
FORMAT_VERSION = 1
MANIFEST = "dataset.json"
INDEX = "sessions.parquet"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"

INDEX_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("client", pa.string()),
        pa.field("label", pa.string()),
        pa.field("path", pa.string(), nullable=False),
        pa.field("directory", pa.string(), nullable=False),
        pa.field("state", pa.string()),
        pa.field("created", pa.string()),
        pa.field("schema_version", pa.string()),
        pa.field("tool_version", pa.string()),
        pa.field("signatures_version", pa.string()),
        *[pa.field(f"has_{t}", pa.bool_(), nullable=False) for t in TABLES],
    ]
)
"""``sessions.parquet``: the session's id, audited client and label, its folder (``path``, absolute) and its place in
the dataset (``directory``, relative), the versions that wrote it, and whether it has each table."""


@dataclass(frozen=True)
class Dataset:
    """A dataset folder, opened (:func:`open_dataset`) or just written (:func:`export_dataset`)."""

    root: Path
    index: pa.Table  # sessions.parquet
    info: dict[str, Any]  # dataset.json

    def __len__(self) -> int:
        return int(self.index.num_rows)

    @property
    def sessions(self) -> pd.DataFrame:
        """``sessions.parquet`` as pandas (Arrow-backed dtypes, like the session tables)."""
        from egressaudit.session import dataframe

        return dataframe(self.index)

    def files(self, table: str) -> list[str]:
        """The table's files, one per session that has it, in the index's order (absolute paths)."""
        if table not in TABLES:
            raise UsageError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
        dirs = self.index.column("directory").to_pylist()
        has = self.index.column(f"has_{table}").to_pylist()
        return [str(self.root / d / f"{table}.parquet") for d, h in zip(dirs, has, strict=True) if h]

    def session_files(self) -> list[dict[str, str]]:
        """Per session (in the index's order), its tables' files by table name (only the tables it has)."""
        rows = self.index.to_pylist()
        return [{t: str(self.root / r["directory"] / f"{t}.parquet") for t in TABLES if r[f"has_{t}"]} for r in rows]


def is_dataset(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset folder; InputError (exit 3) for a folder that is not one, or one a newer egressaudit wrote."""
    root = Path(path)
    try:
        info = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        index = pq.read_table(root / INDEX)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise InputError(f"{root}: not an egressaudit dataset ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InputError(f"{root}: not an egressaudit dataset ({MANIFEST} says otherwise)")
    if int(info.get("version", 0)) > FORMAT_VERSION or str(info.get("schema_version", "0")).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"{root}: a dataset of format {info.get('version')} / schema {info.get('schema_version')}; this egressaudit reads format "
            f"{FORMAT_VERSION} / schema {SCHEMA_VERSION}: export it again"
        )
    if index.schema.names != INDEX_SCHEMA.names:
        raise InputError(f"{root}: {INDEX} has other columns than this version's")
    return Dataset(root.absolute(), index.cast(INDEX_SCHEMA), info)


def partition(value: str | None) -> str:
    """A partition value as a folder name part: percent-encoded, null as Hive's default partition."""
    return NULL_PARTITION if value is None or value == "" else quote(value, safe="")


def _current(s: Session, table: str) -> Path | None:
    """The session's file of ``table`` when it can be used as it is (this schema version, no part files), else None."""
    path = s.path / f"{table}.parquet"
    if not path.is_file() or part_files(s.path, table):
        return None
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return None
    want = arrow_schema(table)
    if version_of(schema) != SCHEMA_VERSION or not schema.remove_metadata().equals(want.remove_metadata()):
        return None
    return path


def export_dataset(sessions: Sessions | Iterable[str | Path] | str | Path, out: str | Path, *, copy: bool = False) -> Dataset:
    """Lay the sessions out as a dataset in ``out`` (see the module docstring) and return it opened.

    ``sessions``: opened sessions (:func:`egressaudit.open_sessions`) or what that takes (paths, glob patterns).
    ``out`` is created, or replaced whole when it holds a dataset; UsageError when it holds anything else (a session
    folder, other files), or is one of the sessions; OutputError when it cannot be written."""
    opened = sessions if isinstance(sessions, Sessions) else open_sessions(sessions)
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{out}: exists and is not a folder")
        if holds_session(out):
            raise UsageError(f"{out}: holds a session; a dataset needs a folder of its own")
        if any(out.iterdir()) and not is_dataset(out):
            raise UsageError(f"{out}: not empty and not a dataset; give a new folder")
    for s in opened:
        if out.resolve() == s.path.resolve() or s.path.resolve() in out.resolve().parents:
            raise UsageError(f"{out}: is inside the session {s.path}; give a folder outside it")
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    try:
        private_dir(out.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        private_dir(tmp, narrow=True)
        rows = [_lay_out(s, tmp, copy) for s in opened]
        index = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
        pq.write_table(index, tmp / INDEX, compression="zstd")
        info = {
            "format": FORMAT, "version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION, "created": now_iso(),
            "tool": {"name": "egressaudit", "version": __version__}, "sessions": len(rows), "tables": list(TABLES),
            "files": "copies" if copy else "links", "partitioning": ["client", "session"],
        }  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        _private(tmp)
        _replace(tmp, out)
    except OSError as e:
        raise OutputError(f"{out}: cannot write the dataset: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_dataset(out)


def _lay_out(s: Session, root: Path, copy: bool) -> dict[str, Any]:
    m = s.manifest
    directory = f"client={partition(m.audited_client)}/session={partition(s.session_id)}"
    leaf = root / directory
    private_dir(leaf, narrow=True)
    has: dict[str, bool] = {}
    for t in TABLES:
        has[f"has_{t}"] = s.has(t)
        if not s.has(t):
            continue
        target = leaf / f"{t}.parquet"
        src = _current(s, t)
        if src is None:
            pq.write_table(s.table(t), target, compression="zstd")
        elif copy:
            shutil.copyfile(src, target)
        else:
            os.symlink(src.resolve(), target)
    return {
        "session_id": s.session_id, "client": m.audited_client, "label": m.label, "path": str(s.path.resolve()), "directory": directory,
        "state": m.state, "created": m.created, "schema_version": m.schema_version, "tool_version": m.tool.version,
        "signatures_version": m.signatures.version, **has,
    }  # fmt: skip


def _private(root: Path) -> None:
    """Folders 0700 and files 0600, as in a session folder (whatever the caller's umask; links are left alone)."""
    for d, _, files in os.walk(root):
        os.chmod(d, 0o700)
        for f in files:
            p = Path(d, f)
            if not p.is_symlink():
                os.chmod(p, 0o600)


def _replace(new: Path, out: Path) -> None:
    """Put the folder ``new`` where ``out`` is (an earlier dataset there removed once the new one is in place)."""
    old = out.parent / f".{out.name}.old{os.getpid()}"
    moved = False
    if out.exists():
        os.replace(out, old)
        moved = True
    try:
        os.replace(new, out)
    except OSError:
        if moved:
            os.replace(old, out)
        raise
    if moved:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)


__all__ = ["INDEX_SCHEMA", "Dataset", "export_dataset", "is_dataset", "open_dataset", "partition"]
