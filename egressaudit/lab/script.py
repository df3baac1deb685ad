"""Scripted calls: a YAML timeline of what each participant does, played through the page's hooks, with a marker
for every change of the audited participant's state (the markers are ground truth: written when the page says the
change happened, not when it was asked for).

A script::

    name: mute
    participants: 2          # default; `egressaudit lab --participants` overrides it
    duration: 60             # seconds from the start until everyone leaves (default: the last step + 5)
    steps:
      - {at: 0, who: all, do: join}
      - {at: 15, who: audited, do: mute}
      - {at: 30, who: audited, do: unmute}
      - {at: 35, who: 2, do: chat, text: "hello from participant 2"}
      - {at: 40, who: audited, do: upload, bytes: 200000}

``who`` is ``all``, ``audited``, ``others``, a participant number (1 is the audited one) or a list of numbers.
``do`` is one of :data:`ACTIONS`; each calls the page's hook of the same meaning (``lab.mute()``, ...).  Shipped
scripts: ``default``, ``mute``, ``screenshare`` (``egressaudit/lab/scripts/*.yaml``); a path to a file works too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from egressaudit.errors import UsageError
from egressaudit.taxonomy import CallState

Action = Literal[
    "join", "talk", "mute", "unmute", "camera-off", "camera-on", "screen-share-start", "screen-share-stop", "chat", "upload", "idle", "leave"
]
ACTIONS: dict[str, tuple[str, CallState]] = {
    "join": ("lab.join()", CallState.talking),
    "talk": ("lab.unmute()", CallState.talking),
    "mute": ("lab.mute()", CallState.muted),
    "unmute": ("lab.unmute()", CallState.unmuted),
    "camera-off": ("lab.cameraOff()", CallState.camera_off),
    "camera-on": ("lab.cameraOn()", CallState.camera_on),
    "screen-share-start": ("lab.shareStart()", CallState.screen_share_start),
    "screen-share-stop": ("lab.shareStop()", CallState.screen_share_stop),
    "chat": ("lab.chat({text})", CallState.chat),
    "upload": ("lab.upload({bytes})", CallState.upload),
    "idle": ("lab.idle()", CallState.idle),
    "leave": ("lab.leave()", CallState.left),
}
"""Each action: the page hook it calls, and the state the audited participant is in once it returns."""
SHIPPED = ("default", "mute", "screenshare")
AUDITED = 1
"""The audited participant's number."""


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: float = Field(ge=0, description="Seconds from the script's start.")
    who: str | int | list[int] = "all"
    do: Action
    text: str = "hello from the lab"
    bytes: int = Field(default=200_000, ge=1, le=100_000_000)

    @field_validator("who")
    @classmethod
    def _who(cls, v: str | int | list[int]) -> str | int | list[int]:
        if isinstance(v, str) and v not in ("all", "audited", "others"):
            raise ValueError("who: all, audited, others, a participant number or a list of them")
        return v

    def targets(self, participants: int) -> list[int]:
        if self.who == "all":
            return list(range(1, participants + 1))
        if self.who == "audited":
            return [AUDITED]
        if self.who == "others":
            return list(range(2, participants + 1))
        numbers: list[int] = [self.who] if isinstance(self.who, int) else [int(n) for n in self.who]
        return [n for n in numbers if 1 <= n <= participants]

    def expression(self) -> str:
        hook, _ = ACTIONS[self.do]
        return hook.format(text=json.dumps(self.text), bytes=self.bytes)


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    participants: int = Field(default=2, ge=2, le=8)
    duration: float | None = Field(default=None, gt=0)
    steps: list[Step] = Field(min_length=1)

    @property
    def length(self) -> float:
        """Seconds from start until everyone has left."""
        return self.duration if self.duration is not None else max(s.at for s in self.steps) + 5.0


def load(name_or_path: str | Path) -> Script:
    """A shipped script by name, or a YAML file; UsageError (one line) for one that cannot be used."""
    text: str
    if str(name_or_path) in SHIPPED:
        text = resources.files("egressaudit.lab").joinpath("scripts").joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
        where = f"script {name_or_path}"
    else:
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as e:
            raise UsageError(f"--script {path}: cannot read it ({getattr(e, 'strerror', None) or e}); shipped: {', '.join(SHIPPED)}") from None
        where = str(path)
    try:
        data = yaml.safe_load(text)
        return Script.model_validate(data)
    except yaml.YAMLError as e:
        raise UsageError(f"{where}: not YAML ({str(e).splitlines()[0]})") from None
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"{where}: {loc}: {first['msg']}") from None


class Page(Protocol):
    """What the runner needs of a participant's page (:class:`egressaudit.lab.cdp.Browser`)."""

    def evaluate(self, expression: str, *, timeout: float = 60.0) -> Any: ...


def play(
    script: Script,
    pages: Mapping[int, Page],
    *,
    mark: Callable[[str, datetime, str], object],
    start: float | None = None,
    say: Callable[[str], None] = lambda s: None,
    step_timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Play ``script`` on ``pages`` (participant number -> page), each step at its time from ``start`` (epoch s; now
    by default), a step's participants at once.  ``mark(state, when, note)`` is called for every state change of the
    audited participant, with the time its page finished the change (``join`` also marks ``joining`` before).  The
    log of what was done: one entry per participant and step, with the times asked and done and any error."""
    t0 = time.time() if start is None else start
    log: list[dict[str, Any]] = []
    lock = threading.Lock()
    for step in sorted(script.steps, key=lambda s: s.at):
        delay = t0 + step.at - time.time()
        if delay > 0:
            time.sleep(delay)
        targets = [n for n in step.targets(len(pages)) if n in pages]
        if step.do == "join" and AUDITED in targets:
            mark(CallState.joining.value, datetime.now(UTC), "lab: join asked")

        def one(n: int, step: Step = step) -> None:
            asked = time.time()
            entry: dict[str, Any] = {"participant": n, "do": step.do, "at": step.at, "asked": asked}
            try:
                entry["result"] = pages[n].evaluate(step.expression(), timeout=step_timeout)
                entry["done"] = time.time()
                if n == AUDITED:
                    _, state = ACTIONS[step.do]
                    mark(state.value, datetime.fromtimestamp(entry["done"], UTC), f"lab: {step.do}")
            except Exception as e:  # noqa: BLE001 - a step that failed is logged and said; the call goes on
                entry["error"] = f"{type(e).__name__}: {e}"
                say(f"participant {n}: {step.do} at {step.at:g} s failed: {e}")
            with lock:
                log.append(entry)

        threads = [threading.Thread(target=one, args=(n,), name=f"lab-step-{n}") for n in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rest = t0 + script.length - time.time()
    if rest > 0:
        time.sleep(rest)
    return log
