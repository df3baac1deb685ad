"""``egressaudit session ...``: the audited session's commands (``mark`` so far)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from egressaudit.cli.common import handled, say
from egressaudit.taxonomy import CallState

app = typer.Typer(name="session", help="An audited call session: mark what is happening in the call.", no_args_is_help=True)


@app.command()
def mark(
    state: Annotated[
        str,
        typer.Argument(help=f"What is happening from now on: {', '.join(s.value for s in CallState)}, or a word of your own.", show_default=False),
    ],
    note: Annotated[str | None, typer.Option("--note", help="Free text kept with the marker.")] = None,
    session_dir: Annotated[
        Path,
        typer.Option("--session", "-s", envvar="EGRESSAUDIT_SESSION", help="Session folder (default: $EGRESSAUDIT_SESSION).", show_default=False),
    ] = Path("."),
) -> None:
    """Mark a call state in a session (a finished one, or one being recorded): the report splits its measures by them."""
    from egressaudit.session.markers import add_marker

    with handled(session_dir):
        row = add_marker(session_dir, state, note=note)
    say(f"{row['ts']:%H:%M:%S} {row['state']} -> {session_dir}")
