"""``egressaudit analyze`` and ``egressaudit capture``: thin over :mod:`egressaudit.audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from egressaudit.cli.common import (
    Add,
    Client,
    Force,
    IdleTimeout,
    Label,
    LocalNet,
    Quiet,
    Signatures,
    console,
    fail,
    handled,
    say,
    signature_files,
    warn,
)
from egressaudit.errors import EXIT_OUTPUT

app = typer.Typer()


@app.command()
def analyze(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Capture files (pcap, pcapng), saved mitmproxy flows (.mitm, .flows) or HAR files (.har); or one recorded session folder.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder to write (created; refused if it holds a session, see --force, --add).")],
    local_net: LocalNet = None,
    client: Client = None,
    idle_timeout: IdleTimeout = 120.0,
    extra_signatures: Signatures = None,
    keep_values: Annotated[bool, typer.Option("--keep-values", help="HTTP inputs: store field values in clear (default: salted hashes).")] = False,
    keep_query: Annotated[bool, typer.Option("--keep-query", help="HTTP inputs: keep query-string values (default: redacted).")] = False,
    label: Label = None,
    force: Force = False,
    add: Add = False,
    quiet: Quiet = False,
) -> None:
    """Read captures (pcap, pcapng) and saved HTTP flows (mitmproxy files, HAR); write the session tables.

    Captures give OUT/flows.parquet; mitmproxy flow files (.mitm, .flows) and HAR files (.har) give
    OUT/http.parquet and OUT/fields.parquet. OUT/session.json records inputs, versions and skipped counts.

    A recorded session folder (session start, lab) is analysed again into OUT: its captures with this version and the
    signature files it kept, its HTTP rows, fields and markers as recorded.
    """
    from egressaudit.audit.files import analyze_files

    files = signature_files(extra_signatures)
    kw: dict[str, Any] = dict(
        client=client, local_nets=local_net or (), idle_timeout=idle_timeout, keep_values=keep_values, keep_query=keep_query, label=label,
        signature_files=files, force=force, add=add,
    )  # fmt: skip
    with handled(out):
        if quiet:
            done = analyze_files(inputs, out, **kw)
        else:
            with console.status("reading captures...") as status:
                done = analyze_files(inputs, out, progress=lambda n: status.update(f"reading captures... {n:,} packets"), **kw)
    if quiet:
        return
    if done.flows is not None:
        _print_flows_summary(done.flows.session, done.manifest.audited_client, out)
    if done.http is not None:
        st = done.http.stats
        skipped = ", ".join(f"{k}: {v:,}" for k, v in sorted(st.skipped.items())) or "none"
        fixed = ", ".join(f"{k}: {v:,}" for k, v in sorted(st.problems.items()))
        say(
            f"http: {st.exchanges:,} exchanges, {st.websocket_messages:,} websocket messages, {st.fields:,} fields inventoried; "
            f"skipped: {skipped}" + (f"; values fixed to fit their column: {fixed}" if fixed else "")
        )
        for line in st.errors:
            warn(line)
        say(f"next: egressaudit inventory {out}")
    if done.flows is not None:
        say(f"next: egressaudit report {out}")


def _print_flows_summary(session: dict[str, Any], client: str | None, out: Path) -> None:
    from egressaudit.report.measures import words

    counts = session["counts"]
    t = Table(title=Text(f"egressaudit analyze -> {out}"), show_header=False)
    t.add_row("packets", f"{counts['packets']:,}")
    t.add_row("flows", f"{counts['flows']:,}")
    t.add_row("audited client", str(client or "not detected (use --client)"))
    skipped = counts.get("skipped") or {}
    t.add_row("skipped packets", ", ".join(f"{k}: {v:,}" for k, v in skipped.items() if v) or "none")
    for k, v in (counts.get("by_data_class_bytes_out") or {}).items():
        t.add_row(f"egress: {words(k)}", f"{v:,} B")
    console.print(t)


@app.command()
def capture(
    iface: Annotated[str, typer.Option("--iface", "-i", help="Interface to capture on (e.g. lo, eth0, a veth of a test namespace).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder: capture.pcapng, flows.parquet, session.json.")],
    duration: Annotated[float | None, typer.Option("--duration", min=0.1, help="Seconds to capture. Default: until Ctrl-C.")] = None,
    bpf: Annotated[str | None, typer.Option("--filter", help="BPF capture filter (tcpdump syntax).")] = None,
    local_net: LocalNet = None,
    client: Client = None,
    idle_timeout: IdleTimeout = 120.0,
    extra_signatures: Signatures = None,
    label: Label = None,
    force: Force = False,
    add: Add = False,
    quiet: Quiet = False,
) -> None:
    """Capture live traffic to OUT/capture.pcapng (needs root or CAP_NET_RAW), then analyse it like `analyze`."""
    from egressaudit.audit.live import capture_session
    from egressaudit.capture.live import CaptureWriteError, LiveStats

    files = signature_files(extra_signatures)

    def captured(s: LiveStats) -> None:
        if s.stopped_by == "interface_error":
            warn(f"the capture stopped early: {s.error}")
        if not quiet:
            say(f"captured {s.frames:,} packets ({s.kernel_drops:,} dropped by the kernel) -> {s.path}")

    kw: dict[str, Any] = dict(
        duration=duration, bpf=bpf, client=client, local_nets=local_net or (), idle_timeout=idle_timeout, label=label,
        signature_files=files, force=force, add=add, on_captured=captured,
    )  # fmt: skip
    with handled(out):
        try:
            if quiet:
                capture_session(iface, out, **kw)
            else:
                with console.status(f"capturing on {iface}... (Ctrl-C to stop)") as st:

                    def progress(s: LiveStats) -> None:
                        st.update(f"capturing on {iface}: {s.frames:,} packets, {s.flows_live:,} live flows, {s.kernel_drops:,} dropped")

                    capture_session(iface, out, on_progress=progress, **kw)
        except CaptureWriteError as e:
            # (a full disk would refuse flows.parquet too: the folder stays "capturing", and `report` analyses it later)
            raise fail(f"{out}: cannot write: {e.strerror}; `egressaudit report {out}` analyses it once there is space", EXIT_OUTPUT) from None
