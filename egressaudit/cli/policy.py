"""``egressaudit check``: sessions against policy files (:mod:`egressaudit.policy`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from egressaudit.cli.common import handled
from egressaudit.errors import PolicyViolation

app = typer.Typer()


@app.command()
def check(
    sessions: Annotated[list[Path], typer.Argument(help="Session folders to check.", show_default=False)],
    policy: Annotated[
        list[Path], typer.Option("--policy", "-p", help="A policy file (YAML), or a folder of them (policies/); repeatable.", show_default=False)
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, json, or junit (JUnit XML, for an organisation's CI).")] = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file instead of stdout.")] = None,
) -> None:
    """Check sessions against policies: each violation with its evidence (flows, requests, field paths).

    Exit 7 when a rule is broken, 0 when every rule holds or could not be checked on a session (said, e.g. a rule about
    call states on a session without markers); a policy file that cannot be used is one line naming file and rule
    (exit 2).
    """
    from egressaudit.policy import check_policies, policy_files
    from egressaudit.policy.output import FORMATS, counts, render

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r}: one of {', '.join(FORMATS)}", param_hint="--format")
    with handled(output):
        files = policy_files(policy)
        results = check_policies(sessions, files)
        text = render(results, fmt, [str(f) for f in files])
        if output is not None:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        c = counts(results)
        if c["fail"]:
            where = f" (see {output})" if output is not None else ""
            raise PolicyViolation(f"{c['fail']} of {c['rules']} rule checks failed, {c['violations']} violations{where}")
