"""Driving a headless Chromium's page over the DevTools protocol on pipes (``--remote-debugging-pipe``).

Chromium reads protocol messages from its file descriptor 3 and writes to 4, each a JSON object ended by a NUL
byte.  Pipes cross network namespaces (a browser in a participant's namespace is driven from the host with no
socket at all) and need no WebSocket client.  :class:`Browser` starts the browser with the pipes, attaches to its
page (``Target.attachToTarget`` with ``flatten``: one connection, commands carry the page's ``sessionId``) and
evaluates expressions there, awaiting promises: ``browser.evaluate("lab.mute()")``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The pair moved above 9, so that bash's ``3<&N 4>&M`` never closes or overwrites one of them."""
    out = []
    for fd in fds:
        out.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return out[0], out[1]


class CdpError(RuntimeError):
    """The browser answered a command with an error, exited, or did not answer in time."""


class Browser:
    """A Chromium started with ``args`` (``--remote-debugging-pipe`` is added) and its first page, attached."""

    def __init__(self, args: Sequence[str], *, prefix: Sequence[str] = (), env: dict[str, str] | None = None, log: Any = None) -> None:
        to_chrome_r, self._w = _high(os.pipe())  # we write commands, Chromium reads them on its fd 3
        self._r, from_chrome_w = _high(os.pipe())  # Chromium writes answers on its fd 4
        # (bash puts the pipes on 3 and 4 for the browser, whatever their numbers here: no preexec_fn, which is
        # unsafe once threads run)
        cmd = ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-', "bash",
               *prefix, *args, "--remote-debugging-pipe"]  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                cmd, pass_fds=(to_chrome_r, from_chrome_w), env=env, stdout=subprocess.DEVNULL,
                stderr=log if log is not None else subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(to_chrome_r)
            os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.session: str | None = None

    # -- the protocol -------------------------------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """One command and its result (events that arrive meanwhile are dropped)."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        if self._w < 0:
            raise CdpError(f"{method}: the browser was closed")
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except OSError as e:
            raise CdpError(f"{method}: the browser is gone ({e.strerror})") from None
        deadline = time.monotonic() + timeout
        while True:
            for raw in self._messages(deadline, method):
                answer = json.loads(raw)
                if answer.get("id") == self._next:
                    if "error" in answer:
                        raise CdpError(f"{method}: {answer['error'].get('message')}")
                    return dict(answer.get("result") or {})

    def _messages(self, deadline: float, what: str) -> list[bytes]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{what}: no answer from the browser in time")
            ready, _, _ = select.select([self._r], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise CdpError(f"{what}: the browser exited ({self.proc.returncode})")
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise CdpError(f"{what}: the browser closed its pipe (exit {self.proc.poll()})")
            self._buf += chunk
        *done, self._buf = self._buf.split(b"\0")
        return done

    # -- the page -----------------------------------------------------------------------------------------------------

    def attach(self, timeout: float = 30.0) -> str:
        """Attach to the browser's page (the one it opened with its URL) and return the session id."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.send("Target.getTargets", timeout=timeout)["targetInfos"]
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise CdpError("no page to attach to")
            time.sleep(0.1)
        self.session = str(self.send("Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True})["sessionId"])
        return self.session

    def evaluate(self, expression: str, *, timeout: float = 60.0) -> Any:
        """The value of ``expression`` in the page (a promise is awaited); CdpError with the page's message if it threw."""
        if self.session is None:
            self.attach()
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": int(timeout * 1000)},
            session=self.session,
            timeout=timeout + 5,
        )
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            text = (d.get("exception") or {}).get("description") or d.get("text") or "exception"
            raise CdpError(f"{expression}: {text.splitlines()[0]}")
        return (result.get("result") or {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 60.0) -> Any:
        """Evaluate ``expression`` until it is truthy (the page loaded, a hook defined); its value.  CdpError after
        ``timeout``, with the last error the page gave."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, timeout=max(1.0, deadline - time.monotonic()))
                if value:
                    return value
            except CdpError as e:
                last = f" ({e})"
            time.sleep(0.1)
        raise CdpError(f"{expression}: not true after {timeout:g} s{last}")

    def close(self, grace: float = 5.0) -> None:
        """Ask the browser to close, then end its process group (a second call does nothing: the pipes' descriptor
        numbers may belong to other files by then)."""
        if self._r < 0:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(CdpError, OSError):
                self.send("Browser.close", timeout=grace)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._r = self._w = -1

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
