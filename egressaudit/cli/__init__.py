"""The ``egressaudit`` command: thin typer sub-apps over functions any program can call.

=================  =====================================  ==============================================
command            module                                 calls
=================  =====================================  ==============================================
analyze            :mod:`egressaudit.cli.audit`           :func:`egressaudit.audit.files.analyze_files`
capture            :mod:`egressaudit.cli.audit`           :func:`egressaudit.audit.live.capture_session`
proxy              :mod:`egressaudit.cli.proxy`           :func:`egressaudit.http.proxy.run_mitmdump`
report             :mod:`egressaudit.cli.read`            :func:`egressaudit.report.build_report`
inventory, har     :mod:`egressaudit.cli.read`            :mod:`egressaudit.http.inventory_report`, :mod:`egressaudit.http.har`
schema, signatures :mod:`egressaudit.cli.read`            :mod:`egressaudit.schema`, :mod:`egressaudit.signatures`
session start      :mod:`egressaudit.cli.session`         :func:`egressaudit.audit.call.record_call`
session mark       :mod:`egressaudit.cli.session`         :func:`egressaudit.session.markers.add_marker`
session recover    :mod:`egressaudit.cli.session`         :func:`egressaudit.audit.call.recover`
session cleanup    :mod:`egressaudit.cli.session`         :func:`egressaudit.netns.cleanup`
lab                :mod:`egressaudit.cli.lab`             :func:`egressaudit.audit.lab.run_lab`
check              :mod:`egressaudit.cli.policy`          :func:`egressaudit.policy.check_policies`
compare, dataset   :mod:`egressaudit.cli.compare`         :func:`egressaudit.report.compare.compare`, :func:`egressaudit.dataset.export_dataset`
=================  =====================================  ==============================================

Every expected failure is one line on stderr and a documented exit code (:mod:`egressaudit.errors`, and the README);
:func:`run` is the last resort for bugs.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.text import Text

from egressaudit import __version__
from egressaudit.cli import audit, compare, lab, policy, proxy, read, session
from egressaudit.cli.common import console, err
from egressaudit.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, save_crash

# Arrow's default allocator (mimalloc) keeps memory it has freed; with the system's, the flows table of
# `analyze` reuses what the flows leave as they become rows: peak RSS 346 -> 311 MB on 117k flows
# (benchmarks/RESULTS.md).  Read by pyarrow when it is first imported, which the commands do later;
# a value set by the user wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

app = typer.Typer(
    name="egressaudit",
    help="Measure what a video-conferencing client sends, to whom, and of what kind (customer content or service-generated data).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for sub in (audit.app, proxy.app, read.app, lab.app, policy.app, compare.app):
    app.add_typer(sub)
app.add_typer(session.app)


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


__all__ = ["app", "run"]
