"""Recording off mitmproxy's event loop.

Decoding bodies and inventorying their fields costs a few milliseconds of
Python per exchange, about as much as mitmproxy's own work: done inside the
proxy it doubled every request's latency (benchmarks/RESULTS.md).  The addon
therefore only snapshots each finished exchange (``flow.get_state()``) and
hands it to one worker process, which runs the :class:`Recorder` on the
machine's other core.  The worker flushes at least once a second; it ignores
Ctrl-C (the proxy tells it when to finish and compact), and if the proxy
dies without telling it, it flushes what it has and exits without compacting,
like a killed recorder would.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

from mitmproxy import http

from egressaudit.http.recorder import Recorder, RecorderOptions

QUEUE_SIZE = 50_000
POLL_S = 0.2


class RecorderProcess:
    """The worker process and the queue into it."""

    def __init__(self, out: Path, opts: RecorderOptions, signature_files: list[str] | None) -> None:
        mp = multiprocessing.get_context("spawn")
        self.queue: Any = mp.Queue(QUEUE_SIZE)
        self.process = mp.Process(
            target=_run, args=(str(out), opts, signature_files, self.queue, os.getpid()), name="egressaudit-recorder", daemon=False
        )
        # Ctrl-C reaches the whole process group, and the worker takes a second to import: start it with SIGINT
        # ignored (kept across exec), so an early Ctrl-C cannot kill it before it can finish and compact.
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: cannot change signal handling here
            self.process.start()
            return
        try:
            self.process.start()
        finally:
            signal.signal(signal.SIGINT, previous)

    def submit_flow(self, flow: http.HTTPFlow, kind: str = "flow") -> None:
        self.queue.put((kind, flow.get_state(), -1))

    def submit_websocket_message(self, flow: http.HTTPFlow) -> None:
        """The flow's newest WebSocket message, without copying the whole conversation each time."""
        ws = flow.websocket
        assert ws is not None
        messages = ws.messages
        number = len(messages) - 1
        ws.messages = messages[-1:]
        try:
            state = flow.get_state()
        finally:
            ws.messages = messages
        self.queue.put(("ws", state, number))

    def close(self, extra: dict[str, Any], timeout: float = 120.0) -> int | None:
        """Tell the worker to finish (flush, compact, write session.json) and wait for it."""
        self.queue.put(("close", extra, -1))
        self.queue.close()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        return self.process.exitcode


def _run(out: str, opts: RecorderOptions, signature_files: list[str] | None, q: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the proxy decides when we stop
    from egressaudit.signatures import default_db, load

    db = load([Path(p) for p in signature_files]) if signature_files else default_db()
    rec = Recorder(Path(out), db, opts)
    last_flush = time.monotonic()
    while True:
        try:
            kind, payload, number = q.get(timeout=POLL_S)
        except queue.Empty:
            kind = None
        if kind == "close":
            rec.close(payload)
            return
        if kind is not None:
            flow: http.HTTPFlow = http.HTTPFlow.from_state(payload)  # type: ignore[assignment]
            if kind == "flow":
                rec.add_flow(flow)
            elif kind == "handshake":
                rec.add_handshake(flow)
            elif kind == "ws":
                rec.add_websocket_message(flow, 0, number)
        now = time.monotonic()
        if now - last_flush >= 1.0:
            rec.flush()
            last_flush = now
        if kind is None and os.getppid() != parent:  # the proxy died without closing us: keep what we have
            rec.flush()
            return
