"""What one hostile input did to a real egressaudit command: its exit code, its output, and the cause of a traceback.

Shared by the hostile-input runners (hostile_captures.py, hostile_http.py, hostile_proxy.py).  A *traceback* is any
Python traceback printed, or exit code 1 (the CLI's last-resort handler, which saves the traceback under
``$HOME/.egressaudit/crashes/``); its cause is ``ExceptionType at file:line`` of the innermost egressaudit frame.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    exit_code: int
    output: str = ""
    traceback: str | None = None  # "ExceptionType at file:line" when the command crashed
    session: dict[str, Any] = field(default_factory=dict)


def cause(exc: BaseException) -> str:
    """``ExceptionType at file:line`` of an exception raised in this process."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "egressaudit" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name} at {where}"


def cause_from_text(text: str) -> str:
    """The cause of the last traceback printed in ``text`` (its last line and its innermost egressaudit frame)."""
    lines = text.splitlines()
    where = "?"
    for ln in lines:
        s = ln.strip()
        if s.startswith('File "') and "egressaudit" in s:
            path, _, rest = s[6:].partition('", line ')
            where = f"{Path(path).name}:{rest.split(',')[0]}"
    last = next((ln for ln in reversed(lines) if ln.strip() and not ln.startswith(" ")), "?")
    return f"{last.split(':')[0]} at {where}"


def traceback_causes(text: str) -> Counter[str]:
    """The cause of each traceback in ``text`` (a log with many)."""
    causes: Counter[str] = Counter()
    for block in text.split("Traceback (most recent call last):")[1:]:
        frames = re.findall(r'File "([^"]+)", line (\d+)', block)
        exc = re.search(r"^(\w+(?:\.\w+)*):?", block.split("\n\n")[0].strip().splitlines()[-1])
        where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "?"
        causes[f"{exc.group(1) if exc else '?'} at {where}"] += 1
    return causes


def invoke(args: list[str]) -> Outcome:
    """``egressaudit ARGS`` in this process (typer's CliRunner): fast, for most cases."""
    from typer.testing import CliRunner

    from egressaudit.cli import app

    r = CliRunner().invoke(app, args)
    o = Outcome(r.exit_code, output=r.output)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        o.traceback = cause(r.exception)
    elif r.exit_code == 1 or "Traceback" in r.output:
        o.traceback = cause_from_text(r.output) if "Traceback" in r.output else "exit 1 at ?"
    return o


def run_command(args: list[str], home: Path, timeout: float = 600) -> Outcome:
    """``egressaudit ARGS`` as a user runs it (a process of its own, HOME=``home``): the honest measure."""
    env = {**os.environ, "HOME": str(home), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "egressaudit", *args], capture_output=True, text=True, env=env, timeout=timeout)
    o = Outcome(p.returncode, output=p.stderr)
    if "Traceback" in p.stderr or "Traceback" in p.stdout:
        o.traceback = cause_from_text(p.stderr + p.stdout)
    elif p.returncode == 1:  # the last-resort handler: one line, the traceback saved under HOME
        crashes = sorted((home / ".egressaudit" / "crashes").glob("crash-*.txt"))
        o.traceback = cause_from_text(crashes[-1].read_text()) if crashes else "exit 1 at ?"
    return o


def message(output: str, case: Path) -> str:
    """A failure's line, with the case's path and numbers taken out (so that like messages are counted together)."""
    line = next((ln.strip() for ln in output.splitlines() if ln.strip()), "")
    line = line.replace(str(case), "CASE")
    return "".join("N" if ch.isdigit() else ch for ch in line)[:160]
