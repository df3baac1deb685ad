"""The session folder itself: creating it private, writing its files atomically, holding it while recording.

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
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from egressaudit.errors import OutputError, SessionExistsError, UsageError
from egressaudit.schema import TABLES, to_table


class SessionError(OutputError):
    """A session folder cannot be created, written or locked; one line for the user."""


def session_id_for(out: Path) -> str:
    """A session id derived from the folder name (letters, digits, ``-_.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", out.resolve().name).strip("-") or "session"


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

    def adopt(self, fd: int) -> None:
        """Share a lock this process inherited as descriptor ``fd`` (its starter holds it): SessionError when ``fd`` is
        not this folder's lock file or holds no lock."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            same = False
        if not same or recording_pid(self.path.parent) is None:
            raise SessionError(f"{self.path.parent}: descriptor {fd} is not this folder's recording lock, held")
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


# -- which folders hold a session, and a command's claim on one ------------------------------------------------------

MANIFEST = "session.json"
"""The manifest (:mod:`egressaudit.session.manifest` reads and writes it)."""
MANIFEST_LOCK = ".session.lock"
SIGNATURES_DIR = "signatures"
"""The extra signature files a session was analysed with, copied (``egressaudit.audit.files.keep_signatures``)."""
BOOKKEEPING = frozenset({LOCK_FILE, MANIFEST_LOCK, ".salt"})
"""Files a command makes before it records anything: a folder holding only these holds no session."""


def session_files(folder: Path) -> list[str]:
    """The names in ``folder`` that belong to a session (the manifest, tables, part files, capture, spools, report)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    tables = {f"{t}.parquet" for t in TABLES}
    known = {MANIFEST, ".parts", ".spool", "capture.pcapng", "flows.mitm", "report.html", "figures", "sockets.jsonl", "proxy.log"}
    known |= {"lab-sink.jsonl", SIGNATURES_DIR} | tables
    return sorted(n for n in names if n in known or n.startswith(("capture-", ".spool")))


def holds_session(folder: Path) -> bool:
    return bool(session_files(folder))


class Claim:
    """A command's hold on its output folder: a new folder, a session it replaces (``force``) or one it adds to
    (``add``).  :meth:`rollback` undoes the command (a new folder is removed with the parents made for it, a replaced
    session comes back, one added to is as it was: its files are hard-linked aside first, and every writer replaces
    files by renaming, so the links keep the old contents); :meth:`commit` makes it final."""

    def __init__(self, out: Path, *, force: bool = False, add: bool = False) -> None:
        self.out = out
        self.force, self.add = force, add
        self.created: Path | None = None  # the first folder of out's path this claim made
        self.aside: Path | None = None  # the replaced session, or the links of the one added to
        self.was_empty = False
        self.lock: RecordingLock | None = None  # held by :func:`claimed` for the block

    def take(self) -> Claim:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: exists and is not a folder")
        if out.exists():
            pid = recording_pid(out)
            if pid is not None:  # (whatever the options: a folder being recorded into is neither replaced nor added to)
                raise SessionError(f"{out}: another process{f' (pid {pid})' if pid else ''} is recording into this folder")
            found = session_files(out)
            if found:
                if not (self.force or self.add):
                    raise SessionExistsError(
                        f"{out} already holds a session ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}); "
                        "--force replaces it, --add adds to it, or choose another --out"
                    )
                if self.force:
                    self._move_aside()
                else:
                    self._link_aside()
            elif set(_names(out)) - BOOKKEEPING:
                raise UsageError(f"{out}: holds files that are not a session's; choose a new or an empty folder")
            else:
                self.was_empty = True
        else:
            top = out.absolute()
            while not top.parent.exists():
                top = top.parent
            self.created = top
        prepare(out)
        return self

    def _aside_path(self, kind: str) -> Path:
        return self.out.absolute().parent / f".{self.out.absolute().name}.{kind}-{os.getpid()}"

    def _move_aside(self) -> None:
        aside = self._aside_path("replaced")
        try:
            os.rename(self.out, aside)
        except OSError as e:
            raise SessionError(f"{self.out}: cannot replace the session: {e.strerror or e}") from None
        self.aside = aside

    def _link_aside(self) -> None:
        aside = self._aside_path("before")
        try:
            aside.mkdir(mode=0o700)
            for p in self.out.rglob("*"):
                rel = p.relative_to(self.out)
                if p.is_dir() and not p.is_symlink():
                    (aside / rel).mkdir(mode=0o700, exist_ok=True)
                else:
                    (aside / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.link(p, aside / rel, follow_symlinks=False)
        except OSError as e:
            _rmtree(aside)
            raise SessionError(f"{self.out}: cannot keep a copy of the session to add to: {e.strerror or e}") from None
        self.aside = aside

    def keep(self) -> None:
        """From here on the folder holds a recording that must stay whatever happens: commit now, and let a later
        rollback leave the folder as it is."""
        self.commit()
        self.created = None
        self.was_empty = False

    def commit(self) -> None:
        """The command succeeded (or recorded something that must be kept): drop what was set aside."""
        if self.aside is not None:
            _rmtree(self.aside)
            self.aside = None

    def rollback(self) -> None:
        """The command failed: leave no folder it created, and the session it replaced or added to as it was."""
        out = self.out
        if self.created is not None:
            _rmtree(out)
            for parent in out.absolute().parents:  # the parents made for it (mkdir -p), while empty
                if not parent.is_relative_to(self.created):
                    break
                with contextlib.suppress(OSError):
                    parent.rmdir()
        elif self.was_empty:
            for p in list(_paths(out)):
                _rmtree(p) if p.is_dir() and not p.is_symlink() else _unlink(p)
        if self.aside is not None:
            if self.force:
                _rmtree(out)
                with contextlib.suppress(OSError):
                    os.rename(self.aside, out)
            else:  # added to: every file back as it was, files the command made removed
                for p in sorted(_walk(out), reverse=True):
                    rel = p.relative_to(out)
                    if not (self.aside / rel).exists():
                        _rmtree(p) if p.is_dir() and not p.is_symlink() else _unlink(p)
                for p in _walk(self.aside):
                    rel = p.relative_to(self.aside)
                    if not p.is_dir():
                        with contextlib.suppress(OSError):
                            os.replace(p, out / rel)
                _rmtree(self.aside)
            self.aside = None


def _names(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir()]
    except OSError:
        return []


def _paths(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _walk(folder: Path) -> list[Path]:
    try:
        return list(folder.rglob("*"))
    except OSError:
        return []


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def claimed(out: Path, *, force: bool = False, add: bool = False, lock: bool = True) -> Iterator[Claim]:
    """``out`` claimed (:class:`Claim`) and, with ``lock``, held (:class:`RecordingLock`) for the block; committed when
    the block ends normally, rolled back when it raises."""
    claim = Claim(out, force=force, add=add).take()
    held: RecordingLock | None = None
    try:
        if lock:
            held = RecordingLock(out)
            held.acquire()
            claim.lock = held
        yield claim
    except BaseException:
        if held is not None:
            held.release()
            held = None
        claim.rollback()
        raise
    finally:
        if held is not None:
            held.release()
    claim.commit()
