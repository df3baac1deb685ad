"""The ``egressaudit`` command.

Thin commands over the package's functions.  Every expected failure is one line on stderr and a documented exit
code (:mod:`egressaudit.errors`, and the README); :func:`run` is the last resort for bugs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from egressaudit import __version__
from egressaudit.errors import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT,
    EXIT_SIGNATURES,
    EXIT_USAGE,
    save_crash,
)

# Arrow's default allocator (mimalloc) keeps memory it has freed; with the system's, the flows table of
# `analyze` reuses what the flows leave as they become rows: peak RSS 346 -> 311 MB on 117k flows
# (benchmarks/RESULTS.md).  Read by pyarrow when it is first imported, which the commands do later;
# a value set by the user wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

if TYPE_CHECKING:
    from egressaudit.audit.analyze import AnalyzeOptions
    from egressaudit.signatures import SignatureDB

FLOW_FILE_SUFFIXES = (".mitm", ".flows", ".har")

app = typer.Typer(
    name="egressaudit",
    help="Measure what a video-conferencing client sends, to whom, and of what kind (customer content or service-generated data).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def _fail(msg: str, code: int) -> typer.Exit:
    # (a Text: a path or value in msg, such as "[x]" or ":x:", is printed as it is, never read as markup or an emoji)
    err.print(Text.assemble(("error:", "bold red"), " ", msg), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"egressaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """egressaudit: network egress privacy auditor for video-conferencing clients."""
    from egressaudit.session import private_umask

    private_umask()  # every file a command writes (session tables, reports, exports) is 0600, folders 0700


def run() -> None:
    """The ``egressaudit`` command: the typer app, with a last resort for bugs.

    Every expected failure is one line and a documented exit code (the commands
    handle them).  An exception that still escapes is a bug: it is reported in
    one line, its traceback saved to ``~/.egressaudit/crashes/`` (0600) for a bug
    report, and the exit code is 1.  Ctrl-C outside a command that handles it
    exits 130 without a traceback.
    """
    try:
        app(prog_name="egressaudit")
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        where = save_crash(e, version=__version__)
        msg = " ".join(str(e).split())[:300]
        err.print(
            Text.assemble(
                ("internal error:", "bold red"),
                f" {type(e).__name__}: {msg} -- a bug in egressaudit; "
                + (f"details in {where}, please include them in a report" if where else "please report it"),
            ),
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL)


def _check_cidr(values: list[str] | None) -> list[str] | None:
    for v in values or ():
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError as e:
            raise typer.BadParameter(f"{v!r} is not a network (CIDR), e.g. 192.168.1.0/24") from e
    return values


@app.command()
def analyze(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Capture files (pcap, pcapng), saved mitmproxy flows (.mitm, .flows) or HAR files (.har).", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder to write (created if missing).")],
    local_net: Annotated[
        list[str] | None,
        typer.Option("--local-net", help="Network(s) of the audited host, e.g. 192.168.1.0/24; repeatable. Default: detected.", callback=_check_cidr),
    ] = None,
    client: Annotated[
        str | None, typer.Option("--client", help="Vendor of the audited client (zoom, microsoft, google, ...). Default: detected.")
    ] = None,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=1.0, help="Seconds without a packet after which a flow ends.")] = 120.0,
    extra_signatures: Annotated[
        list[Path] | None,
        typer.Option("--signatures", help="Extra vendor signature files (.yaml) or folders of them, added to the packaged ones; repeatable."),
    ] = None,
    keep_values: Annotated[bool, typer.Option("--keep-values", help="HTTP inputs: store field values in clear (default: salted hashes).")] = False,
    keep_query: Annotated[bool, typer.Option("--keep-query", help="HTTP inputs: keep query-string values (default: redacted).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Read captures (pcap, pcapng) and saved HTTP flows (mitmproxy files, HAR); write the session tables.

    Captures give OUT/flows.parquet; mitmproxy flow files (.mitm, .flows) and HAR files (.har) give
    OUT/http.parquet and OUT/fields.parquet. OUT/session.json records inputs, versions and skipped counts.
    """

    db = _load_db(_signature_files(extra_signatures), client)
    for p in inputs:
        if not p.exists():
            raise _fail(f"{p}: no such file", EXIT_INPUT)
        if p.is_dir():
            raise _fail(f"{p}: is a folder, not a capture file", EXIT_INPUT)
    with _session_folder(out):
        _analyze_inputs(inputs, out, db, local_net, client, idle_timeout, keep_values, keep_query, quiet)


@contextlib.contextmanager
def _session_folder(out: Path) -> Iterator[None]:
    """``out`` made a private, writable session folder and held (its recording lock) for the time of the block; exit 4
    with one line when it cannot be.  A folder the block created and left empty (the command failed before writing
    anything) is removed again."""
    from egressaudit import session as sess

    undo = _undoer(out)
    try:
        sess.prepare(out)
        lock = sess.RecordingLock(out)
        lock.acquire()
    except (sess.SessionError, OSError) as e:
        undo()
        raise _fail(str(e) if isinstance(e, sess.SessionError) else f"{out}: {e.strerror or e}", EXIT_OUTPUT) from None
    ok = False
    try:
        yield
        ok = True
    except typer.Exit as e:
        ok = not e.exit_code
        raise
    finally:
        lock.release()
        if not ok:
            undo()


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def _undoer(out: Path) -> Callable[[], None]:
    """What undoes a failed command's folder ``out`` (:func:`_remove_empty_session`), decided before the command writes:
    nothing when ``out`` held something already."""
    top = _first_new(out)
    if top is None and not _is_empty_dir(out):
        return lambda: None
    return lambda: _remove_empty_session(out, top)


def _first_new(out: Path) -> Path | None:
    """The first folder of ``out``'s path that does not exist yet (what a command creating ``out`` creates), or None."""
    if out.exists():
        return None
    top = out.absolute()
    while not top.parent.exists():
        top = top.parent
    return top


def _remove_empty_session(out: Path, top: Path | None) -> None:
    """Undo a failed command's folder: when ``out`` holds nothing recorded (no flows table, no capture, no HTTP row: only
    the lock, the salt, empty tables or the session.json of a command that then failed), remove it and the parents made
    for it up to ``top``, the first folder of its path the command created (``--out new/s`` creates ``new`` too); with
    ``top`` None (``out`` was there, empty, before the command) only empty it.  A session that holds rows (earlier inputs
    of a command whose later input failed) is kept."""
    import shutil

    from egressaudit.session import LOCK_FILE
    from egressaudit.session.store import PARTS, read_rows

    bookkeeping = {LOCK_FILE, ".salt", "session.json", PARTS, "http.parquet", "fields.parquet"}
    with contextlib.suppress(OSError):
        if not {p.name for p in out.iterdir()} <= bookkeeping:
            return
        try:
            if any(read_rows(out, table).num_rows for table in ("http", "fields")):
                return
        except Exception:  # noqa: BLE001 - a table that cannot be read may hold something: keep the folder
            return
        if top is None:
            for p in out.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            return
        shutil.rmtree(out)
        for parent in out.absolute().parents:  # the parents made for it (mkdir -p), while empty
            if not parent.is_relative_to(top):
                break
            parent.rmdir()


def _analyze_inputs(
    inputs: list[Path], out: Path, db: SignatureDB, local_net: list[str] | None, client: str | None, idle_timeout: float,
    keep_values: bool, keep_query: bool, quiet: bool,
) -> None:  # fmt: skip
    from egressaudit import session as sess
    from egressaudit.audit.analyze import AnalyzeOptions

    flow_files = [p for p in inputs if p.suffix.lower() in FLOW_FILE_SUFFIXES]
    captures = [p for p in inputs if p not in flow_files]
    session_id = sess.session_id_for(out)
    if captures:
        _analyze_captures(
            captures, out, db, AnalyzeOptions(local_nets=local_net or (), client=client, idle_timeout=idle_timeout, session_id=session_id), quiet
        )
    if flow_files:
        from egressaudit.http.recorder import FlowFileError, RecorderOptions, record_files
        from egressaudit.session.store import TableUnreadable, read_rows_checked

        ropts = RecorderOptions(session_id=session_id, client=client, keep_values=keep_values, keep_query=keep_query)
        try:  # the tables already in the folder, which the new rows join: a damaged one is refused before anything is added
            for table in ("http", "fields"):
                read_rows_checked(out, table)
        except TableUnreadable as e:
            raise _fail(f"{e}; use another --out", EXIT_INPUT) from None
        try:
            rec = record_files(flow_files, out, db, ropts)
        except FlowFileError as e:
            raise _fail(str(e), EXIT_INPUT) from None
        except OSError as e:
            raise _fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None
        if not quiet:
            st = rec.stats
            skipped = ", ".join(f"{k}: {v:,}" for k, v in sorted(st.skipped.items())) or "none"
            fixed = ", ".join(f"{k}: {v:,}" for k, v in sorted(st.problems.items()))
            console.print(
                f"http: {st.exchanges:,} exchanges, {st.websocket_messages:,} websocket messages, {st.fields:,} fields inventoried; "
                f"skipped: {skipped}" + (f"; values fixed to fit their column: {fixed}" if fixed else ""),
                highlight=False,
                markup=False,
            )
            for line in st.errors:
                err.print(f"warning: {line}", highlight=False, soft_wrap=True, markup=False)
            console.print(f"next: egressaudit inventory {out}", markup=False, highlight=False)


def _signature_files(extra_signatures: list[Path] | None) -> list[Path]:
    """The extra signature files named by ``--signatures`` (folders expanded), as absolute paths; exit 5 for a missing one."""
    from egressaudit.signatures import SignatureError, expand

    try:
        return expand(extra_signatures or ())
    except SignatureError as e:
        raise _fail(str(e), EXIT_SIGNATURES) from None


def _load_db(extra_files: list[Path], client: str | None) -> SignatureDB:
    """The database with the user's own files (from :func:`_signature_files`); exit 2 for an unknown ``client``."""
    db = _signature_db(extra_files)
    if client is not None and client not in db.vendors:
        raise typer.BadParameter(f"unknown vendor {client!r}; known: {', '.join(sorted(db.vendors))}", param_hint="--client")
    return db


def _signature_db(extra_files: list[Path]) -> SignatureDB:
    """The packaged signatures plus ``extra_files``; exit 5 with one line when one is invalid."""
    from egressaudit.signatures import SignatureError, database

    try:
        return database(extra_files)
    except SignatureError as e:
        raise _fail(str(e), EXIT_SIGNATURES) from None


def _analyze_captures(captures: list[Path], out: Path, db: SignatureDB, opts: AnalyzeOptions, quiet: bool) -> None:
    from egressaudit import session as sess
    from egressaudit.audit.analyze import analyze as run
    from egressaudit.capture.reader import CaptureError

    try:
        if quiet:
            result = run(captures, opts, db)
        else:
            with console.status("reading captures...") as status:
                result = run(captures, opts, db, progress=lambda n: status.update(f"reading captures... {n:,} packets"))
    except CaptureError as e:
        raise _fail(str(e), EXIT_INPUT) from None
    try:
        sess.write_table(out, "flows", result.table)
        sess.write_session_json(out, result.session, {"version": db.version, "vendors": len(db.vendors), "rules": len(db)})
    except OSError as e:
        raise _fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None
    if not quiet:
        _print_analyze_summary(result.session, out)


def _print_analyze_summary(session: dict[str, object], out: Path) -> None:
    counts = session["counts"]
    assert isinstance(counts, dict)
    t = Table(title=Text(f"egressaudit analyze -> {out}"), show_header=False)
    t.add_row("packets", f"{counts['packets']:,}")
    t.add_row("flows", f"{counts['flows']:,}")
    t.add_row("audited client", str(session.get("audited_client") or "not detected (use --client)"))
    skipped = counts.get("skipped") or {}
    assert isinstance(skipped, dict)
    t.add_row("skipped packets", ", ".join(f"{k}: {v:,}" for k, v in skipped.items() if v) or "none")
    by = counts.get("by_data_class_bytes_out") or {}
    assert isinstance(by, dict)
    for k, v in by.items():
        t.add_row(f"egress {k}", f"{v:,} B")
    console.print(t)
    console.print(f"next: egressaudit report {out}", markup=False, highlight=False)


@app.command()
def capture(
    iface: Annotated[str, typer.Option("--iface", "-i", help="Interface to capture on (e.g. lo, eth0, a veth of a test namespace).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder: capture.pcapng, flows.parquet, session.json.")],
    duration: Annotated[float | None, typer.Option("--duration", min=0.1, help="Seconds to capture. Default: until Ctrl-C.")] = None,
    bpf: Annotated[str | None, typer.Option("--filter", help="BPF capture filter (tcpdump syntax).")] = None,
    local_net: Annotated[
        list[str] | None, typer.Option("--local-net", help="Network(s) of the audited host; repeatable. Default: detected.", callback=_check_cidr)
    ] = None,
    client: Annotated[str | None, typer.Option("--client", help="Vendor of the audited client. Default: detected.")] = None,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=1.0, help="Seconds without a packet after which a flow ends.")] = 120.0,
    extra_signatures: Annotated[list[Path] | None, typer.Option("--signatures", help="Extra vendor signature files or folders; repeatable.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
) -> None:
    """Capture live traffic to OUT/capture.pcapng (needs root or CAP_NET_RAW), then analyse it like `analyze`."""
    from egressaudit import session as sess
    from egressaudit.audit.analyze import AnalyzeOptions
    from egressaudit.capture.live import CaptureSetupError, CaptureWriteError, LiveStats
    from egressaudit.capture.live import capture as live_capture

    signature_files = _signature_files(extra_signatures)  # (stored in session.json, for a recovery to use the same)
    db = _load_db(signature_files, client)
    opts = AnalyzeOptions(local_nets=local_net or (), client=client, idle_timeout=idle_timeout, session_id=sess.session_id_for(out))
    with _session_folder(out):
        # written first, so that a capture that is killed leaves a folder saying what it was doing and with which options:
        # `egressaudit report` then analyses what reached capture.pcapng (see _recover_capture)
        try:
            sess.write_session_json(
                out,
                {"session_id": opts.session_id, "state": sess.STATE_CAPTURING, "local_nets": list(opts.local_nets), "audited_client": client,
                 "idle_timeout_s": idle_timeout, "signature_files": [str(f) for f in signature_files],
                 "capture": {"iface": iface, "filter": bpf, "started": sess.now_iso()}},
                {"version": db.version, "vendors": len(db.vendors), "rules": len(db)},
            )  # fmt: skip
        except OSError as e:
            raise _fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None
        try:
            if quiet:
                stats = live_capture(iface, out, duration, bpf=bpf, idle_timeout=idle_timeout)
            else:
                with console.status(f"capturing on {iface}... (Ctrl-C to stop)") as st:

                    def progress(s: LiveStats) -> None:
                        st.update(f"capturing on {iface}: {s.frames:,} packets, {s.flows_live:,} live flows, {s.kernel_drops:,} dropped")

                    stats = live_capture(iface, out, duration, bpf=bpf, idle_timeout=idle_timeout, on_progress=progress)
        except CaptureSetupError as e:
            _remove_quietly(out / "session.json")
            raise _fail(str(e), EXIT_INPUT) from None
        except CaptureWriteError as e:
            # (a full disk would refuse flows.parquet too: the folder stays "capturing", and `report` analyses it later)
            raise _fail(f"{out}: cannot write: {e.strerror}; `egressaudit report {out}` analyses it once there is space", EXIT_OUTPUT) from None
        except OSError as e:
            raise _fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None
        if stats.stopped_by == "interface_error":
            err.print(f"warning: the capture stopped early: {stats.error}", highlight=False, soft_wrap=True, markup=False)
        if not quiet:
            line = f"captured {stats.frames:,} packets ({stats.kernel_drops:,} dropped by the kernel) -> {stats.path}"
            console.print(line, markup=False, highlight=False)
        _analyze_captures([Path(stats.path)], out, db, opts, quiet)
        try:
            sess.update_session_json(
                out,
                "capture",
                {
                    "iface": stats.iface, "elapsed_s": round(stats.elapsed, 3), "frames": stats.frames, "kernel_packets": stats.kernel_packets,
                    "kernel_drops": stats.kernel_drops, "decode_skips": stats.decode_skips, "stopped_by": stats.stopped_by, "filter": bpf,
                    "rcvbuf": stats.rcvbuf,
                    "mode": stats.mode,
                    "flow_updates_skipped": stats.flow_updates_skipped,
                    "ring_freezes": stats.ring_freezes,
                },
            )  # fmt: skip
        except OSError as e:
            raise _fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None


def _recover_capture(folder: Path) -> None:
    """A folder whose ``capture`` was killed before it analysed (session.json still says "capturing"): analyse what
    reached capture.pcapng now, with the options the capture was started with, and mark the session "recovered"."""
    from egressaudit import session as sess
    from egressaudit.audit.analyze import AnalyzeOptions
    from egressaudit.capture.live import CAPTURE_FILE

    try:
        doc = sess.read_session_json(folder)
    except sess.SessionError:
        return
    if doc.get("state") != sess.STATE_CAPTURING:
        return
    pid = sess.recording_pid(folder)
    if pid is not None:
        raise _fail(f"{folder}: a capture is still running into this folder{f' (pid {pid})' if pid else ''}; stop it first", EXIT_INPUT)
    pcap = folder / CAPTURE_FILE
    if not pcap.exists() or pcap.stat().st_size == 0:
        raise _fail(f"{folder}: the capture was stopped before it wrote any packet (no {CAPTURE_FILE})", EXIT_INPUT)
    started = doc.get("capture") if isinstance(doc.get("capture"), dict) else {}
    client = doc.get("audited_client") if isinstance(doc.get("audited_client"), str) else None
    names = doc.get("signature_files") or []
    files = [Path(n) for n in names if isinstance(n, str)] if isinstance(names, list) else []
    for f in files:
        if not f.is_file():
            raise _fail(f"{folder}: the capture was started with the signature file {f}, which is gone; restore it to analyse", EXIT_INPUT)
    db = _signature_db(files)
    if client and client not in db.vendors:
        raise _fail(f"{folder}: the capture was started with --client {client}, which no signature file defines now", EXIT_INPUT)
    err.print(f"{folder}: the capture did not finish (killed?); analysing what reached {CAPTURE_FILE}", highlight=False, soft_wrap=True, markup=False)
    nets = [n for n in doc.get("local_nets") or [] if isinstance(n, str)]
    idle = doc.get("idle_timeout_s")
    opts = AnalyzeOptions(
        local_nets=nets, client=client, idle_timeout=float(idle) if isinstance(idle, int | float) else 120.0, session_id=sess.session_id_for(folder)
    )
    with _session_folder(folder):
        _analyze_captures([pcap], folder, db, opts, quiet=True)
        try:
            sess.update_session_json(folder, "state", sess.STATE_RECOVERED)
            sess.update_session_json(folder, "capture", {**(started or {}), "stopped_by": "killed", "recovered": sess.now_iso()})
        except OSError as e:
            raise _fail(f"{folder}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@app.command()
def report(
    session_dir: Annotated[Path, typer.Argument(help="Session folder written by `egressaudit analyze`.", show_default=False)],
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Show local addresses instead of redacted tokens.")] = False,
) -> None:
    """Print the audit's tables and write SESSION_DIR/report.html with PNG figures."""
    from egressaudit.report import ReportError, build_report

    if not session_dir.is_dir():
        raise _fail(f"{session_dir}: not a folder", EXIT_INPUT)
    _recover_capture(session_dir)
    try:
        path = build_report(session_dir, console=console, redact=not no_redact)
    except ReportError as e:
        raise _fail(str(e), EXIT_INPUT) from None
    except OSError as e:
        raise _fail(f"{session_dir}: cannot write the report: {e.strerror or e}", EXIT_OUTPUT) from None
    console.print(f"report: {path}", markup=False, highlight=False)


@app.command()
def schema(
    table: Annotated[str | None, typer.Argument(help="Only this table (e.g. flows).")] = None,
) -> None:
    """Print the session tables' columns as Markdown (generated from the schema definition)."""
    from egressaudit.schema import TABLES, markdown

    if table is not None and table not in TABLES:
        raise typer.BadParameter(f"unknown table {table!r}; known: {', '.join(TABLES)}")
    typer.echo(markdown(table))


@app.command()
def signatures(
    check: Annotated[
        list[Path] | None, typer.Option("--check", help="Validate these vendor YAML files instead of listing the packaged ones.")
    ] = None,
) -> None:
    """List the vendor signature database (or validate vendor files)."""
    from egressaudit.signatures import SignatureError, load

    try:
        db = load(check) if check else load()
    except SignatureError as e:
        raise _fail(str(e), EXIT_SIGNATURES) from None
    t = Table(title=f"signature database {db.version}: {len(db.vendors)} vendors, {len(db)} rules")
    t.add_column("vendor")
    t.add_column("kind")
    t.add_column("rules", justify="right")
    t.add_column("name")
    for v in sorted(db.vendors.values(), key=lambda v: v.vendor):
        t.add_row(v.vendor, v.kind, str(len(v.rules)), v.display_name)
    console.print(t)


@app.command()
def proxy(
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder to write http.parquet and fields.parquet into.")],
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port to listen on.")] = 8080,
    listen_host: Annotated[str, typer.Option("--listen-host", help="Address to listen on. Default: loopback only.")] = "127.0.0.1",
    mode: Annotated[
        list[str] | None,
        typer.Option("--mode", "-m", help="mitmproxy mode: regular (default), upstream:URL, reverse:URL, transparent, wireguard; repeatable."),
    ] = None,
    client: Annotated[str | None, typer.Option("--client", help="Vendor of the audited client. Default: detected.")] = None,
    keep_values: Annotated[bool, typer.Option("--keep-values", help="Store field values in clear (default: salted hashes).")] = False,
    keep_query: Annotated[bool, typer.Option("--keep-query", help="Keep query-string values (default: redacted).")] = False,
    keep_bodies: Annotated[bool, typer.Option("--keep-bodies", help="Also save complete flows with bodies to OUT/flows.mitm.")] = False,
    confdir: Annotated[
        Path | None, typer.Option("--confdir", help="mitmproxy configuration folder holding the CA (default: ~/.egressaudit/mitmproxy, mode 0700).")
    ] = None,
    extra: Annotated[list[str] | None, typer.Argument(help="Further mitmdump arguments, after --.", show_default=False)] = None,
) -> None:
    """Run mitmproxy (mitmdump) with the egressaudit addon, recording every HTTP exchange into OUT."""
    from mitmproxy.proxy.mode_specs import ProxyMode

    from egressaudit import session as sess
    from egressaudit.http.proxy import ProxyError, ca_instructions, ensure_ca, run_mitmdump

    modes = mode or ["regular"]
    for m in modes:
        try:
            ProxyMode.parse(m)
        except ValueError as e:
            raise _fail(f"--mode {m}: {e}", EXIT_USAGE) from None
    # (wireguard and local listen elsewhere, MODE@PORT on its own port, "" on every address: mitmdump checks those)
    if listen_host and not any(m.startswith(("wireguard", "local")) or "@" in m for m in modes):
        _check_listen(listen_host, port)
    undo = _undoer(out)
    try:
        sess.prepare(out)
    except sess.SessionError as e:
        raise _fail(str(e), EXIT_OUTPUT) from None
    try:
        conf = ensure_ca(confdir)
    except ProxyError as e:
        undo()
        raise _fail(str(e), EXIT_OUTPUT) from None
    err.print(ca_instructions(conf, listen_host, port), highlight=False, soft_wrap=True, markup=False)
    code = run_mitmdump(
        out, conf, port=port, listen_host=listen_host, modes=modes, client=client, keep_values=keep_values,
        keep_query=keep_query, keep_bodies=keep_bodies, extra=extra or [],
    )  # fmt: skip
    if code == EXIT_INTERNAL and _is_empty_dir(out):
        # mitmdump refused its arguments (the line above says which) before the addon started: a usage error
        code = EXIT_USAGE
    if code:
        undo()
    raise typer.Exit(code)


def _check_listen(host: str, port: int) -> None:
    """Exit 2 with one line when the proxy could not listen on host:port (mitmdump would exit 1 with its own message)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise _fail(f"--listen-host: cannot listen on {host}: {e.strerror or e}", EXIT_USAGE) from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mitmproxy's server does
        try:
            s.bind(addr)
        except OSError as e:
            raise _fail(f"--port: cannot listen on {host}:{port}: {e.strerror or e}", EXIT_USAGE) from None


@app.command()
def inventory(
    session_dir: Annotated[Path, typer.Argument(help="Session folder with http.parquet / fields.parquet.", show_default=False)],
    all_fields: Annotated[bool, typer.Option("--all", help="List every field, not only those that look like identifiers or content.")] = False,
    category: Annotated[str, typer.Option("--category", help="Only fields of exchanges of this category ('any' for all).")] = "telemetry",
) -> None:
    """Which fields the telemetry carries, and which of them identify someone or leak content."""
    from egressaudit.http.inventory_report import InventoryError, print_inventory

    try:
        print_inventory(session_dir, console, all_fields=all_fields, category=None if category == "any" else category)
    except InventoryError as e:
        raise _fail(str(e), EXIT_INPUT) from None
    _warn_incomplete(session_dir)


def _warn_incomplete(session_dir: Path) -> None:
    """One warning line per thing the session says it lost (the same notes the report shows)."""
    from egressaudit.report import recording_notes
    from egressaudit.session import SessionError, read_session_json

    try:
        session = read_session_json(session_dir)
    except SessionError:
        session = {}
    for note in recording_notes(session_dir, session):
        err.print(f"warning: {note}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def har(
    session_dir: Annotated[Path, typer.Argument(help="Session folder recorded by the proxy or from flow files.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="HAR file to write.")],
    bodies: Annotated[bool, typer.Option("--bodies", help="Include bodies (needs a session recorded with --keep-bodies).")] = False,
) -> None:
    """Export the session's HTTP exchanges as a HAR 1.2 file (no bodies unless --bodies)."""
    from egressaudit.http.har import HarError, export_har

    try:
        n = export_har(session_dir, out, bodies=bodies)
    except HarError as e:
        raise _fail(str(e), EXIT_INPUT) from None
    except OSError as e:
        raise _fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None
    console.print(f"{n:,} entries -> {out}", markup=False, highlight=False)
    _warn_incomplete(session_dir)


if __name__ == "__main__":  # pragma: no cover
    app()
