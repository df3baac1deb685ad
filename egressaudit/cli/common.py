"""What every command shares: the consoles, one-line failures with their exit codes, the options that mean the same
everywhere."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from egressaudit.errors import EXIT_OUTPUT, EgressAuditError

console = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def fail(msg: str, code: int) -> typer.Exit:
    """Print ``error: msg`` on stderr; the typer.Exit to raise with ``code``."""
    # (a Text: a path or value in msg, such as "[x]" or ":x:", is printed as it is, never read as markup or an emoji)
    err.print(Text.assemble(("error:", "bold red"), " ", msg), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def say(msg: str) -> None:
    console.print(msg, markup=False, highlight=False, soft_wrap=True)


def warn(msg: str) -> None:
    err.print(f"warning: {msg}", highlight=False, soft_wrap=True, markup=False)


@contextlib.contextmanager
def handled(out: Path | None = None) -> Iterator[None]:
    """The package's errors (:mod:`egressaudit.errors`) as one line and their exit code; an OSError from writing
    ``out`` as exit 4."""
    try:
        yield
    except EgressAuditError as e:
        raise fail(str(e), e.exit_code) from None
    except OSError as e:
        if out is None:
            raise
        raise fail(f"{out}: cannot write: {e.strerror or e}", EXIT_OUTPUT) from None


def check_cidr(values: list[str] | None) -> list[str] | None:
    for v in values or ():
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError as e:
            raise typer.BadParameter(f"{v!r} is not a network (CIDR), e.g. 192.168.1.0/24") from e
    return values


def signature_files(extra: list[Path] | None) -> list[Path]:
    """The files named by ``--signatures`` (folders expanded), absolute; exit 5 for a missing one."""
    from egressaudit.signatures import expand

    with handled():
        return expand(extra or ())


# -- options that mean the same in every command -----------------------------------------------------------------

Force = Annotated[bool, typer.Option("--force", help="Replace the session OUT already holds, whole (no stale table, report or figure survives).")]
Add = Annotated[bool, typer.Option("--add", help="Add to the session OUT holds: tables it does not have yet (a capture to a proxy's session).")]
Label = Annotated[str | None, typer.Option("--label", help="A label for the session (shown in reports and comparisons).")]
Client = Annotated[
    str | None, typer.Option("--client", help="Vendor of the audited client (zoom, microsoft, google, ...). Default: detected.")
]
LocalNet = Annotated[
    list[str] | None,
    typer.Option("--local-net", help="Network(s) of the audited host, e.g. 192.168.1.0/24; repeatable. Default: detected.", callback=check_cidr),
]
IdleTimeout = Annotated[float, typer.Option("--idle-timeout", min=1.0, help="Seconds without a packet after which a flow ends.")]
Signatures = Annotated[
    list[Path] | None,
    typer.Option("--signatures", help="Extra vendor signature files (.yaml) or folders of them, added to the packaged ones; repeatable."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
