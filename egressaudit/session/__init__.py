"""The session folder: typed Parquet tables plus ``session.json``.

Writes go to a temporary file in the same folder and are renamed into place,
so a crash never leaves a half-written table behind, and a write that fails
(a full disk) removes its temporary file.

Privacy: a session holds its users' most sensitive traffic (real addresses,
host names, hashes of what telemetry carried).  Session folders are made
mode 0700, and the commands run with umask 077 (:func:`private_umask`), so
every file in them is 0600.

A process recording into a folder (``capture``, the proxy's recorder) holds
:class:`RecordingLock` on ``OUT/.recording.lock`` while it runs: other
commands can tell a session still being recorded from one whose recorder
died (:func:`recording_pid`), and two recorders never write one folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable
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


STATE_CAPTURING = "capturing"
"""``session.json`` ``state`` while ``egressaudit capture`` runs; a folder left in it was killed before analysing."""
STATE_COMPLETE = "complete"
STATE_RECOVERED = "recovered"
"""Analysed afterwards from what a killed capture left on disk."""
PRIVATE_UMASK = 0o077
LOCK_FILE = ".recording.lock"


def private_umask() -> int:
    """Make every file and folder this process creates private to its user (umask 077); returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path, narrow: bool = False) -> None:
    """Create ``path`` (and parents) if needed and make it 0700.  An existing folder is narrowed when ``narrow`` (a
    folder egressaudit owns, such as ``~/.egressaudit``), or when it is empty or already a session folder; a user's
    ``--out .`` or ``--out /tmp`` keeps its mode."""
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if narrow or created or not any(path.iterdir()) or (path / "session.json").exists() or (path / LOCK_FILE).exists():
        os.chmod(path, 0o700)


def prepare(out: Path) -> None:
    """Make ``out`` a writable, private session folder; SessionError with one line when it cannot be."""
    try:
        private_dir(out)
    except OSError as e:
        raise SessionError(f"{out}: cannot create the session folder: {e.strerror or e}") from e
    if not os.access(out, os.W_OK):
        raise SessionError(f"{out}: the session folder is not writable")
    probe = out / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SessionError(f"{out}: cannot write in the session folder: {e.strerror or e}") from e


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``path``; a failed write leaves neither a temporary file nor a partial ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_table(out: Path, table: str, rows: list[dict[str, Any]] | dict[str, list[Any]] | pa.Table) -> Path:
    """Write a table (an Arrow table, rows or columns: see :func:`egressaudit.schema.to_table`) as Parquet, atomically."""
    data = rows if isinstance(rows, pa.Table) else to_table(table, rows)
    return atomic_write(out / f"{table}.parquet", lambda tmp: pq.write_table(data, tmp, compression="zstd"))


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    text = json.dumps(doc, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_session_json(out: Path, session: dict[str, Any], signatures: dict[str, Any]) -> Path:
    """Write ``session.json`` whole: the session's keys after the tool's; ``state`` is "complete" unless given."""
    doc = {
        "session_id": session.get("session_id"),
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "egressaudit", "version": __version__},
        "signatures": signatures,
        "created": now_iso(),
        "state": STATE_COMPLETE,
        **{k: v for k, v in session.items() if k != "session_id"},
    }
    return _write_json(out / "session.json", doc)


class RecordingLock:
    """An exclusive lock on ``OUT/.recording.lock`` held while a process records into ``OUT`` (the kernel drops it when
    the process dies, however it dies).  The file holds the holder's pid, for messages."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; SessionError naming the holder when another process records into the folder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = recording_pid(self.path.parent)
            raise SessionError(f"{self.path.parent}: another process{f' (pid {pid})' if pid else ''} is recording into this folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def fileno(self) -> int:
        """The lock file's descriptor (a process started with it inherits the lock: the kernel drops it only when every
        holder has ended)."""
        if self._fd is None:
            raise ValueError("the recording lock is not held")
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (the file stays: unlinking it would race with a new holder)
            self._fd = None

    def __enter__(self) -> RecordingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def recording_pid(out: Path) -> int | None:
    """The pid of the process recording into ``out`` now (0 when it cannot be read), or None when nothing holds the
    folder's recording lock."""
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def update_session_json(out: Path, key: str, value: Any) -> Path:
    """Set one top-level key of ``session.json`` (atomically), keeping the rest."""
    path = out / "session.json"
    doc = read_session_json(out) if path.exists() else {}
    doc[key] = value
    return _write_json(path, doc)


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
