"""Crash-safe appending of rows to a session table.

A long-running writer (the mitmproxy addon) cannot rewrite one Parquet file
per event, and a Parquet file is unreadable until it is closed.  So rows are
buffered and, at least once a second while rows come in, written as a small *part* file
``OUT/.parts/<table>/<n>.parquet`` (written to a temporary name and renamed,
so a part is either complete or absent).  A killed process loses at most the
rows of the last second.  :meth:`TableAppender.compact` merges the parts into
``OUT/<table>.parquet`` at the end; :func:`read_rows` reads the table and any
parts a crash left behind, so nothing recorded is lost either way.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from egressaudit.schema import arrow_schema, to_table

PARTS = ".parts"


def _parts_dir(out: Path, table: str) -> Path:
    return out / PARTS / table


def part_files(out: Path, table: str) -> list[Path]:
    d = _parts_dir(out, table)
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.parquet"))


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

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> int:
        """Write the buffered rows as one part file; returns how many rows were written."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._last_flush = time.monotonic()
            if not rows:
                return 0
            seq = self._seq
            self._seq += 1
        path = self._dir / f"{seq:08d}.parquet"
        tmp = self._dir / f".{seq:08d}.tmp"
        pq.write_table(to_table(self.table, rows), tmp, compression="zstd")
        os.replace(tmp, path)
        self.rows_written += len(rows)
        return len(rows)

    def compact(self) -> Path:
        """Flush, then merge the table and every part into ``OUT/<table>.parquet``."""
        self.flush()
        return compact(self.out, self.table)


def compact(out: Path, table: str) -> Path:
    """Merge ``OUT/<table>.parquet`` and its part files into one file; remove the parts."""
    parts = part_files(out, table)
    path = out / f"{table}.parquet"
    tables = [pq.read_table(path)] if path.exists() else []
    tables += [pq.read_table(p) for p in parts]
    schema = arrow_schema(table)
    merged = pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()
    tmp = out / f".{table}.parquet.tmp"
    pq.write_table(merged, tmp, compression="zstd")
    os.replace(tmp, path)
    for p in parts:
        p.unlink()
    return path


def read_rows(out: Path, table: str) -> pa.Table:
    """The table as recorded: the compacted file plus any parts not yet compacted."""
    path = out / f"{table}.parquet"
    schema = arrow_schema(table)
    tables = [pq.read_table(path)] if path.exists() else []
    tables += [pq.read_table(p) for p in part_files(out, table)]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables])
