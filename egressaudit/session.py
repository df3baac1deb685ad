"""The session folder: typed Parquet tables plus ``session.json``.

Writes go to a temporary file in the same folder and are renamed into place,
so a crash never leaves a half-written table behind.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from egressaudit import __version__
from egressaudit.schema import SCHEMA_VERSION, to_table


class SessionError(Exception):
    """A session folder cannot be written or read; one line for the user."""


def session_id_for(out: Path) -> str:
    """A session id derived from the folder name (letters, digits, ``-_.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", out.resolve().name).strip("-") or "session"


def prepare(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SessionError(f"{out}: cannot create the session folder: {e.strerror or e}") from e
    if not os.access(out, os.W_OK):
        raise SessionError(f"{out}: the session folder is not writable")


def write_table(out: Path, table: str, rows: list[dict[str, Any]] | dict[str, list[Any]] | pa.Table) -> Path:
    """Write a table (an Arrow table, rows or columns: see :func:`egressaudit.schema.to_table`) as Parquet, atomically."""
    path = out / f"{table}.parquet"
    tmp = out / f".{table}.parquet.tmp"
    pq.write_table(rows if isinstance(rows, pa.Table) else to_table(table, rows), tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def write_session_json(out: Path, session: dict[str, Any], signatures: dict[str, Any]) -> Path:
    doc = {
        "session_id": session.get("session_id"),
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "egressaudit", "version": __version__},
        "signatures": signatures,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in session.items() if k != "session_id"},
    }
    path = out / "session.json"
    tmp = out / ".session.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def update_session_json(out: Path, key: str, value: Any) -> Path:
    """Set one top-level key of ``session.json`` (atomically), keeping the rest."""
    path = out / "session.json"
    doc = read_session_json(out) if path.exists() else {}
    doc[key] = value
    tmp = out / ".session.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_session_json(folder: Path) -> dict[str, Any]:
    path = folder / "session.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise SessionError(f"{folder}: no session.json (is this a session folder written by `egressaudit analyze`?)") from e
    except (OSError, ValueError) as e:
        raise SessionError(f"{path}: unreadable: {e}") from e
    if not isinstance(data, dict):
        raise SessionError(f"{path}: not a JSON object")
    return data


def read_table(folder: Path, table: str) -> Any:
    path = folder / f"{table}.parquet"
    try:
        return pq.read_table(path)
    except FileNotFoundError as e:
        raise SessionError(f"{folder}: no {table}.parquet (is this a session folder written by `egressaudit analyze`?)") from e
    except (OSError, ValueError) as e:
        raise SessionError(f"{path}: unreadable: {e}") from e
