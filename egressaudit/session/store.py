"""Crash-safe appending of rows to a session table.

A long-running writer (the mitmproxy addon) cannot rewrite one Parquet file
per event, and a Parquet file is unreadable until it is closed.  So rows are
buffered and, at least once a second while rows come in, written as a small *part* file
``OUT/.parts/<table>/<n>.parquet`` (written to a temporary name and renamed,
so a part is either complete or absent).  A killed process loses at most the
rows of the last second.  :meth:`TableAppender.compact` merges the parts into
``OUT/<table>.parquet`` at the end; :func:`read_rows` reads the table and any
parts a crash left behind, so nothing recorded is lost either way.

A write that fails (a full disk, a folder made read-only) raises ``OSError``
and keeps the rows buffered, so the next flush writes them; nothing half
written is left behind.  A row that the table cannot hold at all never blocks
the others: it is dropped and counted (:attr:`TableAppender.dropped`).

A part can carry a *commit* (:func:`commit_of`): how far the proxy's recorder
had got in its spool when it wrote the part (see :mod:`egressaudit.http.worker`),
so that a recorder that replaces a killed one knows exactly which exchanges
are on disk.  Compaction keeps the latest commit of each spool in the merged
file's metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from egressaudit.errors import InputError, NewerSchemaError
from egressaudit.schema import SCHEMA_VERSION, arrow_schema, to_table, upgrade, version_of
from egressaudit.session.folder import atomic_write

PARTS = ".parts"
SPOOL = ".spool"
"""Exchanges handed to the proxy's recorder and not yet recorded (:mod:`egressaudit.http.worker`), bodies included."""
COMMIT_KEY = b"egressaudit.spool_commit"
"""Part metadata: one JSON commit ``{"spool": id, "through": seq, ...}``."""
COMMITS_KEY = b"egressaudit.spool_commits"
"""Compacted-table metadata: ``{spool id: commit}``, the latest commit of each spool whose parts were merged."""


def _parts_dir(out: Path, table: str) -> Path:
    return out / PARTS / table


def part_files(out: Path, table: str) -> list[Path]:
    d = _parts_dir(out, table)
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.parquet"))


def unrecorded(out: Path) -> int:
    """Spool segments a recorder left in ``out`` (exchanges not yet recorded, or not known to be)."""
    folder = out / SPOOL
    return len(list(folder.glob("*.seg"))) if folder.is_dir() else 0


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class TableAppender:
    """Buffers rows of one table and writes them out as part files; thread-safe."""

    def __init__(self, out: Path, table: str, flush_interval: float = 1.0) -> None:
        self.out = out
        self.table = table
        self.flush_interval = flush_interval
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._dir = _parts_dir(out, table)
        self._dir.mkdir(parents=True, exist_ok=True)
        existing = part_files(out, table)
        self._seq = int(existing[-1].stem) + 1 if existing else 0
        self.rows_written = 0
        self.dropped: Counter[str] = Counter()
        """Rows the table could not hold at all, by reason (each was dropped, the rest written)."""
        self.problems: Counter[str] = Counter()
        """Values the schema had to fix (escaped text, out-of-range numbers), as ``<table>.<column>:<reason>``; rows are
        counted when written."""

    @property
    def pending(self) -> int:
        """Rows buffered, not yet on disk."""
        return len(self._rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self, commit: dict[str, Any] | None = None) -> int:
        """Write the buffered rows as one part file (carrying ``commit``); returns how many rows were written.

        OSError (full disk, read-only folder): the rows stay buffered for the next flush, and the error is raised."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._last_flush = time.monotonic()
            if not rows:
                return 0
            seq = self._seq
            self._seq += 1
        path = self._dir / f"{seq:08d}.parquet"
        tmp = self._dir / f".{seq:08d}.tmp"
        problems: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        try:
            table = self._table(rows, problems, dropped)
            if commit is not None:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), COMMIT_KEY: json.dumps(commit).encode()})
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
        except OSError:
            _unlink_quietly(tmp)
            with self._lock:  # kept, in order, for the next flush
                self._rows[:0] = rows
                if self._seq == seq + 1:
                    self._seq = seq
            raise
        # counted once the rows are on disk (a failed flush fits them again next time)
        self.problems.update(problems)
        self.dropped.update(dropped)
        n: int = table.num_rows
        self.rows_written += n
        return n

    def _table(self, rows: list[dict[str, Any]], problems: Counter[str], dropped: Counter[str]) -> pa.Table:
        """The rows as a table; a row the schema refuses even after fixing its values is dropped and counted."""
        whole: Counter[str] = Counter()
        try:
            t = to_table(self.table, rows, whole)
            problems.update(whole)
            return t
        except Exception:  # noqa: BLE001 - one bad row must not keep the others from disk
            pass
        good: list[pa.Table] = []
        for row in rows:
            try:
                good.append(to_table(self.table, [row], problems))
            except Exception as e:  # noqa: BLE001
                dropped[f"{type(e).__name__}"] += 1
        return pa.concat_tables(good) if good else arrow_schema(self.table).empty_table()

    def compact(self) -> Path:
        """Flush, then merge the table and every part into ``OUT/<table>.parquet``."""
        self.flush()
        return compact(self.out, self.table)


def commit_of(path: Path) -> dict[str, Any] | None:
    """The commit a part file carries, or None."""
    try:
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(COMMIT_KEY)
        doc = json.loads(raw) if raw else None
    except (OSError, ValueError, pa.ArrowException):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("spool"), str) else None


def _compacted_commits(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = (pq.read_schema(path).metadata or {}).get(COMMITS_KEY)
        doc = json.loads(raw) if raw else {}
    except (OSError, ValueError, pa.ArrowException):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}


def spool_commits(out: Path, table: str) -> dict[str, tuple[dict[str, Any], Path | None]]:
    """The latest commit of each spool in the table (its compacted file and its parts): ``{spool: (commit, part or None)}``
    (None: the commit is in the compacted file)."""
    found: dict[str, tuple[dict[str, Any], Path | None]] = {}
    path = out / f"{table}.parquet"
    if path.exists():
        for spool, c in _compacted_commits(path).items():
            found[spool] = (c, None)
    for p in part_files(out, table):
        pc = commit_of(p)
        if pc is None:
            continue
        before = found.get(pc["spool"])
        if before is None or int(pc.get("through", -1)) >= int(before[0].get("through", -1)):
            found[pc["spool"]] = (pc, p)
    return found


def compact(out: Path, table: str) -> Path:
    """Merge ``OUT/<table>.parquet`` and its part files into one file; remove the parts.

    OSError (full disk), or a file that cannot be read (pyarrow's ArrowException, ValueError): nothing changes (the
    parts stay, readable by :func:`read_rows` once the table can be read), and the error is raised."""
    parts = part_files(out, table)
    path = out / f"{table}.parquet"
    commits = {k: c for k, (c, _) in spool_commits(out, table).items()}
    tables = [pq.read_table(path)] if path.exists() else []
    tables += [pq.read_table(p) for p in parts]
    schema = arrow_schema(table)
    merged = pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()
    if commits:
        merged = merged.replace_schema_metadata({**(merged.schema.metadata or {}), COMMITS_KEY: json.dumps(commits).encode()})
    atomic_write(path, lambda tmp: pq.write_table(merged, tmp, compression="zstd"))
    for p in parts:
        p.unlink()
    return path


class TableUnreadable(InputError):
    """A table file of the session cannot be read (damaged, cut, not Parquet); one line for the user."""


def read_rows_checked(out: Path, table: str) -> pa.Table:
    """:func:`read_rows`, with a file that cannot be read raised as :class:`TableUnreadable` (one line, naming the file)."""
    try:
        return read_rows(out, table)
    except (OSError, ValueError, pa.ArrowException) as e:  # (NewerSchemaError is none of these: it passes as it is)
        raise TableUnreadable(" ".join(str(e).split())[:400]) from None


def read_rows(out: Path, table: str) -> pa.Table:
    """The table as recorded: the compacted file plus any parts not yet compacted, in this version's schema (older
    schemas migrated).  NewerSchemaError for a file of a newer egressaudit; ValueError (naming the file and what is
    wrong) for one that cannot be read or made to fit."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return _read_rows(out, table)
        except _Vanished:
            if attempt == READ_ATTEMPTS - 1:
                raise ValueError(f"{out}: {table}'s files kept changing while they were read (a recorder compacting); try again") from None
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


READ_ATTEMPTS = 5


class _Vanished(Exception):
    """A part file listed a moment ago is gone: the recorder compacted it into the table meanwhile."""


def _read_rows(out: Path, table: str) -> pa.Table:
    path = out / f"{table}.parquet"
    schema = arrow_schema(table)
    files = ([path] if path.exists() else []) + part_files(out, table)
    tables = []
    for f in files:
        try:
            t = pq.read_table(f)
        except FileNotFoundError:
            raise _Vanished from None
        except (OSError, pa.ArrowException) as e:
            if not f.exists():  # (pyarrow's own error for a file that went away: read again, the table has its rows now)
                raise _Vanished from None
            raise ValueError(f"{f}: unreadable: {e}") from None
        version = version_of(t)
        if _major(version) > _major(SCHEMA_VERSION):
            raise NewerSchemaError(f"{f}: written by a newer egressaudit (schema {version}, this one reads {SCHEMA_VERSION}); upgrade to read it")
        try:
            tables.append(_conform(table, upgrade(table, t), schema))
        except ValueError as e:
            raise ValueError(f"{f}: {e}") from None
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def _conform(table: str, t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` in ``schema``; ValueError saying what is wrong when it cannot be (a file of another tool or version, or
    damaged): missing columns, columns of the wrong type, empty values where every row has one."""
    missing = [n for n in schema.names if n not in t.column_names]
    if missing:
        raise ValueError(f"not a {table} table of this egressaudit version (missing columns: {', '.join(missing)})")
    try:
        t = t.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError) as e:
        raise ValueError(f"columns of the wrong type for this egressaudit version: {e}") from None
    bad = [f.name for f, col in zip(schema, t.columns, strict=True) if not f.nullable and col.null_count]
    if bad:
        raise ValueError(f"damaged: empty values in {', '.join(bad)}, which every row has")
    return t
