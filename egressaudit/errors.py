"""The documented exit codes, once, and the crash file a bug leaves for its report.

Every expected failure of a command is one line on stderr and one of these codes (README, "Exit codes"):

* 0 (:data:`EXIT_OK`): success
* 2 (:data:`EXIT_USAGE`): wrong usage (an unknown option, a value that cannot be used: a port that cannot be listened on)
* 3 (:data:`EXIT_INPUT`): an input cannot be used (not a capture, empty, unreadable, damaged, not a session folder)
* 4 (:data:`EXIT_OUTPUT`): the output cannot be written (read-only or full disk, a folder another process records into)
* 5 (:data:`EXIT_SIGNATURES`): a signature file is invalid
* 6 (:data:`EXIT_INCOMPLETE`): the recording is incomplete: data was lost (the message says what); what reached disk was kept
* 1 (:data:`EXIT_INTERNAL`): an internal error, i.e. a bug: one line, the traceback in a crash file (:func:`save_crash`)
* 130 (:data:`EXIT_INTERRUPTED`): interrupted (Ctrl-C) where a command does not stop cleanly by itself
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_SIGNATURES = 5
EXIT_INCOMPLETE = 6
EXIT_INTERRUPTED = 130

CRASH_DIR = Path("~/.egressaudit/crashes")


def save_crash(e: BaseException, prefix: str = "crash", version: str = "") -> Path | None:
    """The traceback of a bug in ``~/.egressaudit/crashes/<prefix>-<time>-<pid>.txt`` (0600, folders 0700), with the
    command line, for a bug report; None when it cannot be written."""
    from egressaudit.session import private_dir

    try:
        folder = CRASH_DIR.expanduser()
        private_dir(folder.parent, narrow=True)
        private_dir(folder, narrow=True)
        path = folder / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
        text = f"egressaudit {version}\nargv: {sys.argv!r}\n\n" + "".join(traceback.format_exception(e))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        return path
    except OSError:
        return None
