"""``session.json``: the one manifest of a session folder, as a typed model with a version.

Every writer goes through :func:`update` (a read-modify-write under the folder's manifest lock, written atomically),
so the packet path (``analyze``, ``capture``) and the HTTP path (the proxy's recorder, flow files) each fill their own
section without dropping the other's: ``counts``/``inputs``/``capture`` for packets, ``http`` for exchanges.  The
audited client is one field for the whole session (:mod:`egressaudit.classify.party` decides it from all tables).

Versions: ``schema_version`` is the session's schema (:data:`egressaudit.schema.SCHEMA_VERSION`).  A 1.0 manifest is
migrated on read (:func:`migrate`); one whose major version is newer than this egressaudit's is refused with
:class:`~egressaudit.errors.NewerSchemaError`.  Keys this version does not know are kept (``extra="allow"``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from egressaudit import __version__
from egressaudit.errors import NewerSchemaError, NotASessionError
from egressaudit.schema import SCHEMA_VERSION
from egressaudit.session.folder import MANIFEST, MANIFEST_LOCK, atomic_write, session_id_for

State = Literal["capturing", "recording", "complete", "recovered"]
"""``capturing``: ``egressaudit capture`` runs (a folder left in it was killed before analysing); ``recording``: the
proxy runs; ``complete``: written by a command that finished; ``recovered``: analysed afterwards from what a killed
capture left on disk."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "egressaudit"
    version: str = __version__


class Signatures(BaseModel):
    """The signature database the verdicts came from."""

    model_config = ConfigDict(extra="allow")
    version: str | None = None
    vendors: int | None = None
    rules: int | None = None


class Manifest(BaseModel):
    """What ``session.json`` holds.  The sections written by one path are free-form dictionaries documented where they
    are written (``counts`` and ``inputs`` by :mod:`egressaudit.audit.analyze`, ``capture`` by ``egressaudit capture``,
    ``http`` by the HTTP recorder)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    schema_version: str = SCHEMA_VERSION
    session_id: str
    label: str | None = None
    created: str = Field(default_factory=now_iso)
    state: State = "complete"
    tool: Tool = Field(default_factory=Tool)
    signatures: Signatures = Field(default_factory=Signatures)
    signature_files: list[str] = Field(default_factory=list)
    """Files given with --signatures (a killed capture is analysed later with the same)."""
    audited_client: str | None = None
    """The vendor of the client under audit, for the whole session."""
    audited_client_source: Literal["option", "auto"] | None = None
    audited_client_reason: str | None = None
    """Why that client (or none): the user named it, or which vendor's media and signalling the session carries."""
    local_nets: list[str] = Field(default_factory=list)
    local_hosts: list[str] = Field(default_factory=list)
    idle_timeout_s: float | None = None
    inputs: list[dict[str, Any]] = Field(default_factory=list)
    counts: dict[str, Any] | None = None
    capture: dict[str, Any] | None = None
    call: dict[str, Any] | None = None
    """``egressaudit session start``: the client command and version, the namespace or attribution used, the proxy,
    the host, how it ended, how many rows were attributed how (:mod:`egressaudit.audit.call`)."""
    http: dict[str, Any] | None = None
    elapsed_s: float | None = None

    def document(self) -> dict[str, Any]:
        """The manifest as the JSON object written to disk (unset sections left out)."""
        doc = self.model_dump(mode="json", exclude_none=False)
        return {k: v for k, v in doc.items() if v is not None or k in ("audited_client", "audited_client_source")}


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """A manifest of an older schema as this version's.  1.0 -> 2.0: the audited client that only the HTTP section
    named (a proxy session) becomes the session's."""
    doc = dict(doc)
    if str(doc.get("schema_version", "1.0")).startswith("1."):
        http = doc.get("http")
        if not doc.get("audited_client") and isinstance(http, dict) and isinstance(http.get("audited_client"), str):
            doc["audited_client"] = http["audited_client"]
            doc["audited_client_source"] = "auto"
        doc["migrated_from"] = str(doc.get("schema_version", "1.0"))
        doc["schema_version"] = SCHEMA_VERSION
    return doc


def parse(doc: dict[str, Any], where: str, fallback_id: str) -> tuple[Manifest, list[str]]:
    """The manifest in ``doc`` (migrated), and the keys left out because their values had the wrong type (a damaged
    or hand-edited file: the rest is still used).  NewerSchemaError for a newer major schema."""
    version = doc.get("schema_version")
    if isinstance(version, str) and _major(version) > _major(SCHEMA_VERSION):
        raise NewerSchemaError(
            f"{where}: written by a newer egressaudit (schema {version}; this is egressaudit {__version__}, "
            f"schema {SCHEMA_VERSION}); upgrade to read it"
        )
    doc = migrate(doc)
    doc.setdefault("session_id", fallback_id)
    dropped: list[str] = []
    for _ in range(len(doc) + 1):
        try:
            return Manifest.model_validate(doc), sorted(dropped)
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            if not bad or not bad <= set(doc):
                break
            dropped += bad
            doc = {k: v for k, v in doc.items() if k not in bad}
            if "session_id" in bad:
                doc["session_id"] = fallback_id
    return Manifest(session_id=fallback_id), sorted(set(dropped) | set(doc))


def read(folder: Path) -> tuple[Manifest, list[str]]:
    """The folder's manifest and the keys dropped as damaged (see :func:`parse`); NotASessionError without one."""
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotASessionError(
            f"{folder}: not a session folder (no {MANIFEST}; sessions are written by `egressaudit analyze`, `capture` or `proxy`)"
        ) from None
    except (OSError, ValueError) as e:
        raise NotASessionError(f"{path}: unreadable: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(doc, dict):
        raise NotASessionError(f"{path}: not a JSON object")
    return parse(doc, str(path), session_id_for(folder))


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """The folder's manifest lock, held for a read-modify-write (two processes, such as a capture and the proxy's
    recorder, never lose each other's section)."""
    fd = os.open(folder / MANIFEST_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write(folder: Path, manifest: Manifest) -> Path:
    text = json.dumps(manifest.document(), indent=2, default=str) + "\n"
    return atomic_write(folder / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def update(folder: Path, change: Callable[[Manifest], None], *, session_id: str | None = None, lock: bool = True) -> Manifest:
    """Read the manifest (a new one when there is none or it cannot be read), apply ``change`` to it, write it back
    atomically, under the folder's manifest lock (``lock`` False: the caller holds it already); the manifest written."""
    with locked(folder) if lock else contextlib.nullcontext():
        try:
            m, _ = read(folder)
        except NotASessionError:
            m = Manifest(session_id=session_id or session_id_for(folder))
        change(m)
        write(folder, m)
        return m


__all__ = [
    "MANIFEST", "MANIFEST_LOCK", "Manifest", "Signatures", "State", "Tool", "locked", "migrate", "now_iso", "parse", "read", "update", "write",
]  # fmt: skip
