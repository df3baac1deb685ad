"""The errors a user can meet, as one tree, each branch with its documented exit code; the crash file a bug leaves.

Every expected failure of a command is one line on stderr and one exit code (README, "Exit codes").  The package
raises the exceptions below; the CLI prints ``str(e)`` and exits with ``e.exit_code``, and a program calling the
package catches them like any exception::

    EgressAuditError                  any expected failure; str(e) is the one line for the user
     ├── UsageError                   2  wrong usage: a value that cannot be used, a folder that already holds a session
     │    ├── SessionExistsError         OUT holds a session and neither --force nor --add was given
     │    └── PolicyError                a policy file that is missing or invalid (the message names file and rule)
     ├── InputError                   3  an input cannot be used
     │    ├── CaptureError               not a capture, empty, unreadable, damaged beyond its first records
     │    ├── FlowFileError              a mitmproxy flow file or HAR that cannot be read at all
     │    ├── CaptureSetupError          an interface or a BPF filter that cannot be captured on
     │    │    └── NetnsError               the client's network namespace cannot be set up (--netns)
     │    │         └── LabError               the lab cannot be built (a missing package, a server that does not start)
     │    ├── NotASessionError           a folder that is not a session folder (no session.json, no table)
     │    ├── NewerSchemaError           a session written by a newer egressaudit (a schema this version cannot read)
     │    ├── TableUnreadable            a session table that exists but cannot be read
     │    ├── ReportError                a folder the report cannot be made from (no table to report)
     │    ├── InventoryError             a folder without HTTP tables to inventory
     │    └── HarError                   a session whose exchanges cannot be exported (bodies asked, none kept)
     ├── OutputError                  4  the output cannot be written: read-only or full disk, a folder another
     │    │                              process records into
     │    ├── SessionError               the session folder cannot be created, written or locked
     │    ├── ProxyError                 the proxy's CA cannot be set up
     │    └── CaptureWriteError          the capture file cannot be written (also an OSError, with its errno)
     ├── SignatureError               5  a signature file is missing or invalid
     ├── IncompleteError              6  the recording is incomplete: data was lost (the message says what); what
     │                                   reached disk was kept
     └── PolicyViolation              7  a session breaks a policy (egressaudit check): the violations were printed

Not errors of the tree: 0 (:data:`EXIT_OK`), success; 1 (:data:`EXIT_INTERNAL`), a bug: one line, the traceback in a
crash file (:func:`save_crash`); 130 (:data:`EXIT_INTERRUPTED`), interrupted (Ctrl-C) where a command does not stop
cleanly by itself.  The subclasses are defined beside the code that raises them (``CaptureError`` in
:mod:`egressaudit.capture.reader`, ...) and re-exported by :mod:`egressaudit`.
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
EXIT_VIOLATION = 7
EXIT_INTERRUPTED = 130


class EgressAuditError(Exception):
    """An expected failure: ``str(e)`` is one line for the user, ``exit_code`` the command's documented exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(EgressAuditError):
    """Wrong usage: a value that cannot be used (exit 2)."""

    exit_code = EXIT_USAGE


class SessionExistsError(UsageError):
    """The output folder already holds a session, and the command was not told to replace it or add to it."""


class InputError(EgressAuditError):
    """An input cannot be used (exit 3)."""

    exit_code = EXIT_INPUT


class NotASessionError(InputError):
    """A folder that is not a session folder."""


class NewerSchemaError(InputError):
    """A session folder written by a newer egressaudit, with a schema this version cannot read."""


class OutputError(EgressAuditError):
    """The output cannot be written (exit 4)."""

    exit_code = EXIT_OUTPUT


class IncompleteError(EgressAuditError):
    """The recording is incomplete: data was lost; what reached disk was kept (exit 6)."""

    exit_code = EXIT_INCOMPLETE


class PolicyViolation(EgressAuditError):
    """A session breaks a policy (``egressaudit check``); the violations were printed with their evidence (exit 7)."""

    exit_code = EXIT_VIOLATION


CRASH_DIR = Path("~/.egressaudit/crashes")


def save_crash(e: BaseException, prefix: str = "crash", version: str = "") -> Path | None:
    """The traceback of a bug in ``~/.egressaudit/crashes/<prefix>-<time>-<pid>.txt`` (0600, folders 0700), with the
    command line, for a bug report; None when it cannot be written."""
    try:
        folder = CRASH_DIR.expanduser()
        for d in (folder.parent, folder):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        path = folder / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
        text = f"egressaudit {version}\nargv: {sys.argv!r}\n\n" + "".join(traceback.format_exception(e))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        return path
    except OSError:
        return None
