"""The offline audit as one function: capture files and saved HTTP flows in, a session folder out.

:func:`analyze_files` is what ``egressaudit analyze`` runs and what a program calls::

    from egressaudit.audit.files import analyze_files
    done = analyze_files(["call.pcapng", "proxy.mitm"], "audits/call-1", client="zoom")

Captures (pcap, pcapng) give ``flows.parquet``; mitmproxy flow files (.mitm, .flows) and HAR files (.har) give
``http.parquet`` and ``fields.parquet``; the manifest records inputs, versions and what was skipped, and the audited
client is decided once for the whole session (:func:`egressaudit.session.settle_party`).  The output folder is
claimed as a whole (:class:`egressaudit.session.Claim`): a folder holding a session is refused unless ``force``
(replace it) or ``add`` (add tables it does not have yet: a capture to a proxy's session); when anything fails,
nothing is left behind and a session that was there is as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egressaudit.audit.analyze import AnalyzeOptions, AnalyzeResult, analyze
from egressaudit.errors import InputError, UsageError
from egressaudit.session import Manifest, claimed, manifest, session_id_for, settle_party, write_table
from egressaudit.signatures import SignatureDB

FLOW_FILE_SUFFIXES = (".mitm", ".flows", ".har")
"""Inputs read as saved HTTP flows; every other input is read as a capture."""

STALE = ("report.html", "figures")
"""What a report left in a session: it describes the tables it was made from, so it goes when tables are added."""


@dataclass
class Done:
    """What :func:`analyze_files` wrote."""

    out: Path
    manifest: Manifest
    flows: AnalyzeResult | None = None
    http: Any = None  # egressaudit.http.recorder.Recorder, when flow files were given
    warnings: list[str] = field(default_factory=list)


def signature_info(db: SignatureDB) -> dict[str, Any]:
    return {"version": db.version, "vendors": len(db.vendors), "rules": len(db)}


def check_inputs(inputs: Sequence[Path]) -> None:
    """InputError (one line) for an input that does not exist or is a folder."""
    if not inputs:
        raise InputError("no input files")
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file")
        if p.is_dir():
            raise InputError(f"{p}: is a folder, not a capture file")


def analyze_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    db: SignatureDB | None = None,
    client: str | None = None,
    local_nets: Sequence[str] = (),
    idle_timeout: float = 120.0,
    keep_values: bool = False,
    keep_query: bool = False,
    label: str | None = None,
    signature_files: Sequence[str | Path] = (),
    force: bool = False,
    add: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Done:
    """Analyse ``inputs`` into the session folder ``out`` (see the module docstring).  Raises the errors of
    :mod:`egressaudit.errors`: InputError for an unusable input, UsageError (SessionExistsError) for a folder holding a
    session without ``force``/``add``, OutputError when the folder cannot be written, SignatureError."""
    from egressaudit.signatures import database

    paths = [Path(p) for p in inputs]
    sig_files = [Path(f).absolute() for f in signature_files]
    out = Path(out)
    check_inputs(paths)
    db = db or database(sig_files)
    if client is not None and client not in db.vendors:
        raise UsageError(f"--client: unknown vendor {client!r}; known: {', '.join(sorted(db.vendors))}")
    flow_files = [p for p in paths if p.suffix.lower() in FLOW_FILE_SUFFIXES]
    captures = [p for p in paths if p not in flow_files]
    with claimed(out, force=force, add=add):
        if add:
            _check_add(out, captures, flow_files)
        session_id = session_id_for(out)
        done = Done(out, Manifest(session_id=session_id))

        def common(m: Manifest) -> None:
            m.session_id = m.session_id or session_id
            m.state = "complete"
            m.signatures = manifest.Signatures(**signature_info(db))
            m.signature_files = [str(f) for f in sig_files] or m.signature_files
            if label is not None:
                m.label = label

        manifest.update(out, common, session_id=session_id)
        if captures:
            opts = AnalyzeOptions(local_nets=local_nets, client=client, idle_timeout=idle_timeout, session_id=session_id)
            done.flows = result = analyze(captures, opts, db, progress)
            write_table(out, "flows", result.table)
            manifest.update(out, lambda m: packet_section(m, result.session))
        if flow_files:
            from egressaudit.http.recorder import RecorderOptions, record_files

            ropts = RecorderOptions(session_id=session_id, client=client, keep_values=keep_values, keep_query=keep_query)
            done.http = record_files(flow_files, out, db, ropts)
        settle_party(out, db, client)
        done.manifest, _ = manifest.read(out)
    return done


def _check_add(out: Path, captures: list[Path], flow_files: list[Path]) -> None:
    """Adding to a session: only tables it does not have yet (two captures in one flows table would be two sessions'
    traffic mixed); the report it had describes the old tables, so it goes."""
    if captures and (out / "flows.parquet").exists():
        raise UsageError(f"{out}: already has packet flows (flows.parquet); --add only adds what a session lacks; use --force to replace it")
    if flow_files and ((out / "http.parquet").exists() or (out / ".parts" / "http").is_dir()):
        raise UsageError(f"{out}: already has HTTP exchanges (http.parquet); --add only adds what a session lacks; use --force to replace it")
    for name in STALE:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def packet_section(m: Manifest, session: dict[str, Any]) -> None:
    """The packet path's part of the manifest, from :func:`egressaudit.audit.analyze.analyze`'s result."""
    m.local_nets = list(session.get("local_nets") or [])
    m.local_hosts = list(session.get("local_hosts") or [])
    m.idle_timeout_s = session.get("idle_timeout_s")
    m.inputs = list(session.get("inputs") or [])
    m.counts = session.get("counts")
    m.elapsed_s = session.get("elapsed_s")
