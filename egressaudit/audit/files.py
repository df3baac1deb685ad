"""The offline audit as one function: capture files and saved HTTP flows in, a session folder out.

:func:`analyze_files` is what ``egressaudit analyze`` runs and what a program calls::

    from egressaudit.audit.files import analyze_files
    done = analyze_files(["call.pcapng", "proxy.mitm"], "audits/call-1", client="zoom")

Captures (pcap, pcapng) give ``flows.parquet``; mitmproxy flow files (.mitm, .flows) and HAR files (.har) give
``http.parquet`` and ``fields.parquet``, each exchange joined to the flow that carried it when both are there.  A
recorded session folder (``egressaudit session start``, ``egressaudit lab``) is an input too: its capture files are
analysed again, with this version and its signature files (kept in ``SESSION/signatures/``), into a new folder that
takes over its HTTP rows, fields, markers and call record as they were recorded (a shipped sample, a session
analysed again after the signatures were updated).  The manifest records inputs, versions and what was skipped, and the audited
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

import pyarrow as pa

from egressaudit import schema as schema_mod
from egressaudit.audit.analyze import AnalyzeOptions, AnalyzeResult, analyze
from egressaudit.errors import InputError, UsageError
from egressaudit.session import Manifest, claimed, manifest, session_id_for, settle_party, write_table
from egressaudit.session.folder import MANIFEST, SIGNATURES_DIR
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
    """InputError (one line) for an input that does not exist or is a folder (other than one recorded session)."""
    if not inputs:
        raise InputError("no input files")
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file")
        if p.is_dir():
            if not (p / MANIFEST).is_file():
                raise InputError(f"{p}: is a folder, not a capture file nor a session folder (no {MANIFEST})")
            if len(inputs) > 1:
                raise InputError(f"{p}: a session folder is analysed alone (its own captures and HTTP rows), not with other inputs")


def keep_signatures(out: Path, files: Sequence[Path]) -> list[Path]:
    """Copies of the extra signature files a session was analysed with, in ``OUT/signatures/`` (0600), so that the
    folder can be analysed again as it was (:func:`analyze_files` with the folder as input); their paths."""
    if not files:
        return []
    folder = out / SIGNATURES_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    kept: list[Path] = []
    for i, src in enumerate(files):
        dst = folder / src.name
        if dst in kept:  # two files of one name from different folders
            dst = folder / f"{i}-{src.name}"
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
            dst.chmod(0o600)
        kept.append(dst)
    return kept


@dataclass
class Recorded:
    """A recorded session given to :func:`analyze_files` as its input: what the new folder takes from it."""

    folder: Path
    manifest: Manifest
    captures: list[Path]
    signature_files: list[Path]

    @classmethod
    def read(cls, folder: Path) -> Recorded:
        from egressaudit.capture.live import capture_files

        m, _ = manifest.read(folder)
        if m.state not in ("complete", "recovered"):
            raise InputError(f"{folder}: the session is {m.state}, not finished (egressaudit session recover {folder})")
        caps = [p for p in capture_files(folder) if p.stat().st_size > 0]
        sigs = sorted((folder / SIGNATURES_DIR).glob("*.yaml"))
        return cls(folder, m, caps, sigs)

    def take_over(self, out: Path, session_id: str, flows: pa.Table | None) -> None:
        """The recorded HTTP rows (joined to the new flows), fields and markers, under the new session id."""
        from egressaudit.session.store import read_rows

        for name in ("http", "fields", "markers"):
            t = read_rows(self.folder, name)
            if t is None or t.num_rows == 0:
                continue
            i = t.schema.get_field_index("session_id")
            t = t.set_column(i, t.schema.field(i), pa.array([session_id] * t.num_rows, t.schema.field(i).type))
            if name == "http" and flows is not None:
                t = join_http_to_flows(t, flows)
            write_table(out, name, t)


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
    recorded = Recorded.read(paths[0]) if paths[0].is_dir() else None
    if recorded is not None:
        if out.resolve() == recorded.folder.resolve():
            raise UsageError(f"{out}: is the session being analysed; give another --out")
        paths = recorded.captures
        m0 = recorded.manifest
        kept = recorded.signature_files or [Path(p) for p in m0.signature_files if Path(p).is_file()]
        if m0.signature_files and not kept and not sig_files:
            names = ", ".join(Path(p).name for p in m0.signature_files)
            raise InputError(f"{recorded.folder}: was analysed with signature files it did not keep ({names}); give them with --signatures")
        sig_files = [*kept, *sig_files]
        local_nets = local_nets or m0.local_nets
        client = client or (m0.audited_client if m0.audited_client_source == "option" else None)
        label = label if label is not None else m0.label
        if m0.idle_timeout_s and idle_timeout == 120.0:
            idle_timeout = m0.idle_timeout_s
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
        keep_signatures(out, sig_files)
        flows: pa.Table | None = None
        if captures:
            opts = AnalyzeOptions(local_nets=local_nets, client=client, idle_timeout=idle_timeout, session_id=session_id)
            done.flows = result = analyze(captures, opts, db, progress)
            flows = result.table
            if recorded is not None and (recorded.manifest.call or {}).get("netns"):
                # every packet in the recorded namespace was the client's (egressaudit session start --netns)
                flows = schema_mod.with_attribution("flows", flows.drop_columns(list(schema_mod.ATTRIBUTION_COLUMNS)), "netns")
                flows = flows.select(schema_mod.column_names("flows"))
            write_table(out, "flows", flows)
            if result.streams is not None:
                write_table(out, "streams", result.streams)
            manifest.update(out, lambda m: packet_section(m, result.session))
        if flow_files:
            from egressaudit.http.recorder import RecorderOptions, record_files

            ropts = RecorderOptions(session_id=session_id, client=client, keep_values=keep_values, keep_query=keep_query)
            done.http = record_files(flow_files, out, db, ropts)
            if flows is not None:
                from egressaudit.session.store import read_rows

                http = read_rows(out, "http")
                if http is not None and http.num_rows:
                    write_table(out, "http", join_http_to_flows(http, flows))
        if recorded is not None:
            recorded.take_over(out, session_id, flows)
            source = {"session_id": recorded.manifest.session_id, "path": str(recorded.folder), "created": recorded.manifest.created}

            def carried(m: Manifest) -> None:
                m.call = {**(recorded.manifest.call or {}), "analysed_from": source}
                m.capture = recorded.manifest.capture
                m.http = recorded.manifest.http

            manifest.update(out, carried)
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


SLACK_S = 2.0
"""Seconds an exchange's time may lie outside its flow's (the proxy's and the capture's clocks are one, but a flow's
first packet can follow the request's time by the connection set-up)."""


def join_http_to_flows(http: pa.Table, flows: pa.Table) -> pa.Table:
    """``http.flow_id``: the flow that carried each exchange.  By Community ID when the capture saw the proxy's
    upstream connection; otherwise (a transparent proxy: the capture sees the client's side) by the client's address
    and port with the time of the exchange inside the flow's."""
    import pandas as pd

    SLACK = pd.Timedelta(seconds=SLACK_S)  # noqa: N806
    f = flows.select(["flow_id", "community_id", "local_ip", "local_port", "transport", "ts_start", "ts_end"]).to_pandas()
    f = f.rename(columns={"ts_start": "f_start", "ts_end": "f_end"})
    h = http.select(["community_id", "client_ip", "client_port", "ts_start"]).to_pandas()
    h["row"] = range(len(h))
    ids = pd.Series([pd.NA] * len(h), dtype="Int64")
    # by Community ID: the latest flow of that 5-tuple that began before the exchange (a port reused later is another flow)
    m = h.dropna(subset=["community_id"]).merge(f.dropna(subset=["community_id"]), on="community_id")
    m = m[m["f_start"] <= m["ts_start"] + SLACK]
    m = m.sort_values("f_start").drop_duplicates("row", keep="last")
    ids.iloc[m["row"].to_numpy()] = m["flow_id"].to_numpy()
    # by the client's end: its port on the captured side, the exchange inside the flow's time
    rest = h[ids.isna().to_numpy()].dropna(subset=["client_ip", "client_port"])
    if len(rest):
        tcp = f[f["transport"] == "tcp"]
        m = rest.merge(tcp, left_on=["client_ip", "client_port"], right_on=["local_ip", "local_port"])
        m = m[(m["ts_start"] >= m["f_start"] - SLACK) & (m["ts_start"] <= m["f_end"] + SLACK)]
        m = m.sort_values("f_start").drop_duplicates("row", keep="last")
        ids.iloc[m["row"].to_numpy()] = m["flow_id"].to_numpy()
    i = http.schema.get_field_index("flow_id")
    return http.set_column(i, http.schema.field("flow_id"), pa.array(ids.astype("object").where(ids.notna(), None).tolist(), pa.int64()))
