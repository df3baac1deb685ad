"""``egressaudit lab``: a scripted call in the local conference lab, recorded as an audited session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from egressaudit.cli.common import Force, handled, say, warn

app = typer.Typer()


@app.command()
def lab(
    out: Annotated[Path, typer.Option("--out", "-o", help="Session folder to write (created; see --force).")],
    script: Annotated[str, typer.Option("--script", help="default, mute, screenshare, or a YAML file.")] = "default",
    participants: Annotated[int | None, typer.Option("--participants", min=2, max=8, help="How many join (default: the script's).")] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=5, help="Seconds until everyone leaves (default: the script's).")] = None,
    force: Force = False,
) -> None:
    """Run a scripted call in a local conference lab (Janus, DNS, telemetry sinks in network namespaces; headless
    Chromium participants), the first participant recorded as an audited session with call-state markers."""
    from egressaudit.audit.lab import run_lab

    with handled(out):
        run = run_lab(out, script=script, participants=participants, duration=duration, force=force, say=say)
    for e in run.errors:
        warn(e)
    say(f"next: egressaudit report {out}")
