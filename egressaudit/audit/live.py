"""The live audit as functions: capture an interface into a session folder and analyse it; recover a killed capture.

:func:`capture_session` is what ``egressaudit capture`` runs.  The manifest is written first, in state
``capturing`` with the options, so a capture that is killed leaves a folder saying what it was doing:
:func:`recover` (run by ``egressaudit report``) analyses what reached ``capture.pcapng`` with those options and marks
the session ``recovered``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.audit.files import packet_section, signature_info
from egressaudit.capture.live import CAPTURE_FILE, CaptureSetupError, LiveStats
from egressaudit.errors import InputError, UsageError
from egressaudit.session import Manifest, claimed, manifest, now_iso, recording_pid, session_id_for, settle_party, write_table
from egressaudit.signatures import SignatureDB, database


@dataclass
class Captured:
    stats: LiveStats
    manifest: Manifest


def capture_session(
    iface: str,
    out: str | Path,
    *,
    duration: float | None = None,
    bpf: str | None = None,
    db: SignatureDB | None = None,
    client: str | None = None,
    local_nets: Sequence[str] = (),
    idle_timeout: float = 120.0,
    label: str | None = None,
    signature_files: Sequence[Path] = (),
    force: bool = False,
    add: bool = False,
    on_progress: Callable[[LiveStats], None] | None = None,
    on_captured: Callable[[LiveStats], None] | None = None,
) -> Captured:
    """Capture on ``iface`` into ``out`` until ``duration`` ends or a signal stops it, then analyse the capture there.

    Errors: CaptureSetupError (exit 3: an interface or filter that cannot be captured on; nothing is left behind),
    CaptureWriteError (exit 4: the folder is kept, ``capturing``, for :func:`recover` once there is space), the rest
    of :mod:`egressaudit.errors`.  ``on_captured`` is called between the capture and its analysis."""
    from egressaudit.capture.live import capture

    out = Path(out)
    db = db or database(list(signature_files))
    if client is not None and client not in db.vendors:
        raise UsageError(f"--client: unknown vendor {client!r}; known: {', '.join(sorted(db.vendors))}")
    session_id = session_id_for(out)
    opts = AnalyzeOptions(local_nets=local_nets, client=client, idle_timeout=idle_timeout, session_id=session_id)
    with claimed(out, force=force, add=add) as claim:
        if add and (out / "flows.parquet").exists():
            raise UsageError(f"{out}: already has packet flows (flows.parquet); use --force to replace it")

        def started(m: Manifest) -> None:
            m.state = "capturing"
            m.label = label if label is not None else m.label
            m.signatures = manifest.Signatures(**signature_info(db))
            m.signature_files = [str(f) for f in signature_files]
            m.local_nets = list(local_nets)
            m.idle_timeout_s = idle_timeout
            m.audited_client, m.audited_client_source = (client, "option") if client else (m.audited_client, m.audited_client_source)
            m.capture = {"iface": iface, "filter": bpf, "started": now_iso()}

        manifest.update(out, started, session_id=session_id)
        try:
            stats = capture(iface, out, duration, bpf=bpf, idle_timeout=idle_timeout, on_progress=on_progress)
        except CaptureSetupError:
            raise  # nothing was captured: the folder goes (or is as it was)
        except BaseException:
            if (out / CAPTURE_FILE).exists():
                claim.keep()  # a disk that filled up, a signal: what reached capture.pcapng stays, for `report` to recover
            raise
        claim.keep()  # packets were recorded: whatever happens now, they stay
        if on_captured is not None:
            on_captured(stats)
        result = analyze([Path(stats.path)], opts, db)
        write_table(out, "flows", result.table)
        if result.streams is not None:
            write_table(out, "streams", result.streams)

        def finished(m: Manifest) -> None:
            packet_section(m, result.session)
            m.state = "complete"
            m.capture = {**(m.capture or {}), **capture_section(stats, bpf)}

        manifest.update(out, finished)
        settle_party(out, db, client)
        m, _ = manifest.read(out)
    return Captured(stats, m)


def capture_section(stats: LiveStats, bpf: str | None) -> dict[str, Any]:
    """The manifest's ``capture`` section from a capture's counters (``capture`` and ``session start``)."""
    return {
        "iface": stats.iface, "elapsed_s": round(stats.elapsed, 3), "frames": stats.frames, "kernel_packets": stats.kernel_packets,
        "kernel_drops": stats.kernel_drops, "decode_skips": stats.decode_skips, "stopped_by": stats.stopped_by, "filter": bpf,
        "rcvbuf": stats.rcvbuf, "mode": stats.mode, "flow_updates_skipped": stats.flow_updates_skipped, "ring_freezes": stats.ring_freezes,
        "files": [p.name for p in stats.files], "error": stats.error or None,
    }  # fmt: skip


def needs_recovery(folder: Path) -> bool:
    """Whether the folder holds a capture that was killed before it analysed (its manifest still says ``capturing``)."""
    try:
        m, _ = manifest.read(folder)
    except InputError:
        return False
    return m.state == "capturing"


def recovery_inputs(folder: Path, m: Manifest) -> tuple[SignatureDB, str | None]:
    """The signature database and the ``--client`` a killed recording was started with, to finish it as it would have
    finished; InputError (one line) when a signature file is gone or no longer defines that client."""
    files = [Path(n) for n in m.signature_files]
    for f in files:
        if not f.is_file():
            raise InputError(f"{folder}: the recording was started with the signature file {f}, which is gone; restore it to finish it")
    db = database(files)
    client = m.audited_client if m.audited_client_source == "option" else None
    if client and client not in db.vendors:
        raise InputError(f"{folder}: the recording was started with --client {client}, which no signature file defines now")
    return db, client


def recover(folder: Path, announce: Callable[[str], None] | None = None) -> Manifest | None:
    """A folder whose capture was killed before it analysed: analyse what reached capture.pcapng now, with the options
    the capture was started with, and mark the session ``recovered``; None when there is nothing to recover.
    InputError (one line) when it cannot be: the capture still runs, wrote no packet, or its signature files are gone."""
    if not needs_recovery(folder):
        return None
    m, _ = manifest.read(folder)
    pid = recording_pid(folder)
    if pid is not None:
        raise InputError(f"{folder}: a capture is still running into this folder{f' (pid {pid})' if pid else ''}; stop it first")
    pcap = folder / CAPTURE_FILE
    if not pcap.exists() or pcap.stat().st_size == 0:
        raise InputError(f"{folder}: the capture was stopped before it wrote any packet (no {CAPTURE_FILE})")
    db, client = recovery_inputs(folder, m)
    if announce is not None:
        announce(f"{folder}: the capture did not finish (killed?); analysing what reached {CAPTURE_FILE}")
    started = dict(m.capture or {})
    opts = AnalyzeOptions(local_nets=m.local_nets, client=client, idle_timeout=m.idle_timeout_s or 120.0, session_id=session_id_for(folder))
    with claimed(folder, add=True):
        result = analyze([pcap], opts, db)
        write_table(folder, "flows", result.table)
        if result.streams is not None:
            write_table(folder, "streams", result.streams)

        def recovered(m: Manifest) -> None:
            packet_section(m, result.session)
            m.state = "recovered"
            m.capture = {**started, "stopped_by": "killed", "recovered": now_iso()}

        manifest.update(folder, recovered)
        settle_party(folder, db, client)
        m, _ = manifest.read(folder)
    return m
