"""Children that meet signals as a command started in a terminal does, however the suite itself was started."""

from __future__ import annotations

import signal


def as_in_a_terminal() -> None:
    """``preexec_fn`` (or the child side of a fork): SIGHUP and SIGINT at their defaults.

    A suite run under ``nohup`` ignores SIGHUP, and one run as a background job of a script ignores SIGINT; a child
    inherits an ignored signal, and egressaudit rightly keeps ignoring it (as nohup asks).  A test of what a closed
    terminal or Ctrl-C does would then test nohup instead, and hang."""
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
