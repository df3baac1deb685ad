"""Recording off mitmproxy's event loop.

Decoding bodies and inventorying their fields costs a few milliseconds of
Python per exchange, about as much as mitmproxy's own work: done inside the
proxy it doubled every request's latency (benchmarks/RESULTS.md).  The addon
therefore only snapshots each finished exchange and hands it to one worker
process, which runs the :class:`Recorder` on the machine's other core.

The snapshot is what the recorder reads (:func:`snapshot`): the request,
response, error and WebSocket states plus the addresses of the two
connections, not ``flow.get_state()``, whose connection states (TLS
details, certificates) cost ten times more to build in the proxy and to
rebuild in the worker.  With ``keep_bodies`` the whole flow state goes, as
``flows.mitm`` must hold complete flows.  Snapshots are shipped in batches
(every :data:`BATCH` exchanges or :data:`SHIP_S` seconds), so the queue's
feeder thread wakes once per batch instead of once per request.

The worker records while the proxy is idle.  On a machine with few cores
(measured on 2 vCPUs) any busy second core slows the proxy's core: a spin
loop at the lowest priority (SCHED_IDLE) stretched requests by 9-15% at the
median and 19-34% at p99, and recording *while* exchanges are in flight did
the same (p99 1.33-1.53x) although none of the work was the proxy's.  The
addon stamps a shared clock at every connection, request and finished
exchange (:meth:`RecorderProcess.touch`); the worker keeps what it receives
and records it once the proxy has been quiet for :data:`IDLE_S`.  Under
traffic that never pauses it holds snapshots for at most ``max_lag`` seconds
(:data:`MAX_LAG_S`, the ``egressaudit_max_lag`` option) and
:data:`MAX_HOLD_BYTES` of bodies, then records alongside, that far behind.
During a call, whose clients talk in bursts, recording thus happens in the
gaps and perturbs the audited client's timing as little as possible.

Rows reach disk within about a second of the proxy going quiet, and within
``max_lag`` + 1 s under continuous traffic.  The worker ignores Ctrl-C,
SIGTERM and SIGHUP, which reach the whole process group (a terminal closing,
a service manager stopping the proxy): the proxy decides when it finishes and
compacts, and if the proxy dies without telling it, it records and flushes
what it holds and exits without compacting, so only SIGKILL of the worker
itself loses the rows it held.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from mitmproxy import connection, http
from mitmproxy import flow as mflow
from mitmproxy.websocket import WebSocketData

from egressaudit.http.recorder import Recorder, RecorderOptions

QUEUE_SIZE = 1_000  # batches
POLL_S = 0.2
BATCH = 64
SHIP_S = 0.05
IDLE_S = 0.05
"""The proxy counts as idle when no connection, request or exchange has started or finished for this long."""
MAX_LAG_S = 30
"""A snapshot waits for an idle proxy at most this long by default (``egressaudit_max_lag``); then it is recorded regardless."""
MAX_HOLD_BYTES = 64 << 20
"""Bodies held for an idle proxy at most (approximately: request, response and WebSocket message contents)."""
IGNORED_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
"""Signals sent to the proxy's whole process group; the worker finishes when the proxy tells it or dies, not on these
(so it is stopped with SIGKILL when it must be)."""
BUSY_POLL_S = 0.01
FLUSH_S = 1.0

Snapshot = tuple[Any, ...]


def snapshot(flow: http.HTTPFlow, messages: list[Any] | None = None) -> Snapshot:
    """What :class:`Recorder` reads of ``flow`` (``messages``: only these WebSocket messages)."""
    c, s = flow.client_conn, flow.server_conn
    ws = flow.websocket
    ws_state = None
    if ws is not None:
        with _only_messages(flow, messages):
            ws_state = ws.get_state()
    q, r = flow.request.data, flow.response.data if flow.response is not None else None
    return (
        flow.id,
        (
            q.host,
            q.port,
            q.method,
            q.scheme,
            q.authority,
            q.path,
            q.http_version,
            q.headers.fields,
            q.content,
            q.trailers.fields if q.trailers is not None else None,
            q.timestamp_start,
            q.timestamp_end,
        ),  # fmt: skip
        None
        if r is None
        else (
            r.http_version,
            r.status_code,
            r.reason,
            r.headers.fields,
            r.content,
            r.trailers.fields if r.trailers is not None else None,
            r.timestamp_start,
            r.timestamp_end,
        ),  # fmt: skip
        flow.error.get_state() if flow.error is not None else None,
        ws_state,
        (c.peername, c.sockname, c.timestamp_start),
        (s.address, s.peername, s.sockname, s.via),
    )


@contextlib.contextmanager
def _only_messages(flow: http.HTTPFlow, messages: list[Any] | None) -> Iterator[None]:
    """The flow's WebSocket conversation reduced to ``messages`` for the time of a state copy (None: left whole)."""
    ws = flow.websocket
    if ws is None or messages is None:
        yield
        return
    kept = ws.messages
    ws.messages = messages
    try:
        yield
    finally:
        ws.messages = kept


def restore(snap: Snapshot) -> http.HTTPFlow:
    """The flow a :func:`snapshot` was taken of, as far as the recorder is concerned."""
    fid, req, resp, err, ws, (cpeer, csock, cts), (addr, speer, ssock, via) = snap
    client = connection.Client(peername=cpeer, sockname=csock, timestamp_start=cts)
    server = connection.Server(address=addr, peername=speer, sockname=ssock, via=via)
    f = http.HTTPFlow(client, server)
    f.id = fid
    f.request = http.Request(*req)
    f.response = http.Response(*resp) if resp is not None else None
    f.error = mflow.Error.from_state(err) if err is not None else None
    f.websocket = WebSocketData.from_state(ws) if ws is not None else None
    return f


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """IGNORED_SIGNALS blocked in this thread for a while, and so in the processes it starts meanwhile (a signal mask
    survives fork and exec): a signal that arrives meanwhile stays pending here or goes to another thread, not lost."""
    if not hasattr(signal, "pthread_sigmask"):  # (Windows)
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, IGNORED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class RecorderStartError(Exception):
    """The recorder process could not start; one line for the user."""


class RecorderProcess:
    """The worker process and the queue into it."""

    def __init__(
        self, out: Path, opts: RecorderOptions, signature_files: list[str] | None, max_lag: float = MAX_LAG_S, max_hold_bytes: int = MAX_HOLD_BYTES
    ) -> None:
        if not max_lag >= 0:
            raise ValueError(f"egressaudit_max_lag: must be 0 or more seconds, not {max_lag}")
        self.full_state = opts.keep_bodies  # flows.mitm needs whole flows, TLS details included
        self.pending: list[tuple[str, Any, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        mp = multiprocessing.get_context("spawn")
        # Ctrl-C (and SIGTERM, SIGHUP) reach the whole process group, and the worker takes a second to import: start it
        # with them blocked (it ignores them, then unblocks them), so that an early one cannot kill it before it can
        # finish and compact.  The queue's first semaphore starts multiprocessing's resource tracker, which must not die
        # of SIGHUP either (it ignores and unblocks SIGINT and SIGTERM itself; SIGHUP stays blocked there).
        with _signals_blocked():
            self.queue: Any = mp.Queue(QUEUE_SIZE)
            self.activity: Any = mp.RawValue("d", time.monotonic())  # when the proxy last did something (CLOCK_MONOTONIC, system-wide)
            self.closing: Any = mp.RawValue("b", 0)  # "close" without the queue (see _close_at_exit)
            self._ready, ready_w = mp.Pipe(duplex=False)
            self.process = mp.Process(
                target=_run,
                args=(str(out), opts, signature_files, self.queue, os.getpid(), ready_w, self.activity, self.closing, max_lag, max_hold_bytes),
                name="egressaudit-recorder",
                daemon=False,
            )
            self.process.start()
        # The worker is not a daemon (it must finish and compact), so multiprocessing joins it when this process exits:
        # if the proxy exits without closing it (mitmdump stops when its port is taken, without calling `done`), both
        # would wait forever.  Close it first (atexit runs the latest registered first, before multiprocessing's join).
        atexit.register(self._close_at_exit)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the worker has loaded everything it needs (about a second of imports), so that its start-up
        neither competes with the first exchanges for CPU nor hides a problem (bad signature file, unwritable folder)
        until later: raises RecorderStartError with the worker's one-line reason."""
        deadline = time.monotonic() + timeout
        while not self._ready.poll(0.05):
            if not self.process.is_alive():
                raise RecorderStartError(f"the recorder process ended at start with exit code {self.process.exitcode}")
            if time.monotonic() > deadline:
                self.process.kill()  # not left running behind a proxy that will not use it (it ignores SIGTERM)
                self.process.join(5)
                raise RecorderStartError(f"the recorder process was not ready after {timeout:.0f} s")
        try:
            msg = self._ready.recv()
        except EOFError:
            msg = "the recorder process ended at start"
        if msg != "ready":
            self.process.join(5)
            raise RecorderStartError(str(msg))

    def touch(self) -> None:
        """The proxy is busy now: the worker holds back until it has been quiet for IDLE_S."""
        self.activity.value = time.monotonic()

    def submit_flow(self, flow: http.HTTPFlow, kind: str = "flow") -> None:
        self._submit(kind, self._state(flow), -1)

    def submit_websocket_message(self, flow: http.HTTPFlow) -> None:
        """The flow's newest WebSocket message, without copying the whole conversation each time."""
        assert flow.websocket is not None
        messages = flow.websocket.messages
        self._submit("ws", self._state(flow, messages[-1:]), len(messages) - 1)

    def _state(self, flow: http.HTTPFlow, messages: list[Any] | None = None) -> Any:
        if not self.full_state:
            return snapshot(flow, messages)
        with _only_messages(flow, messages):
            return flow.get_state()

    def _submit(self, kind: str, state: Any, number: int) -> None:
        self.touch()
        self.pending.append((kind, state, number))
        if len(self.pending) >= BATCH:
            self.ship()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(SHIP_S, self.ship)
            except RuntimeError:  # no event loop (called from a plain thread): no batching
                self.ship()

    def ship(self) -> None:
        """Hand the pending snapshots to the worker (the queue pickles them on its feeder thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending:
            batch, self.pending = self.pending, []
            self.queue.put(("batch", batch))

    def _close_at_exit(self) -> None:
        if not self.process.is_alive():
            return
        try:
            self.close({})
        except RuntimeError:
            # Python 3.12+ starts no thread at shutdown, and a queue that was never used has no feeder thread yet:
            # tell the worker through shared memory instead
            self.closing.value = 1
            self.process.join(120)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)

    def close(self, extra: dict[str, Any], timeout: float = 120.0) -> int | None:
        """Tell the worker to finish (flush, compact, write session.json) and wait for it."""
        atexit.unregister(self._close_at_exit)
        self.ship()
        self.queue.put(("close", extra))
        self.queue.close()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()  # (it ignores SIGTERM)
            self.process.join(5)
        return self.process.exitcode


def _held(state: Any, full_state: bool) -> int:
    """About how many bytes a snapshot holds: its bodies and WebSocket messages, plus a little for the rest."""
    if full_state:
        parts = [state.get("request"), state.get("response")]
        n = sum(len(p.get("content") or b"") for p in parts if p)
        ws = state.get("websocket")
    else:
        n = len(state[1][8] or b"") + (len(state[2][4] or b"") if state[2] is not None else 0)
        ws = state[4]
    if ws:
        n += sum(len(m[2] or b"") for m in ws.get("messages", ()))
    return n + 1024


def _run(
    out: str, opts: RecorderOptions, signature_files: list[str] | None, q: Any, parent: int, ready: Any, activity: Any, closing: Any,
    max_lag: float, max_hold_bytes: int,
) -> None:  # fmt: skip
    for sig in IGNORED_SIGNALS:  # they reach the whole process group; the proxy decides when we stop
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED_SIGNALS)  # (blocked while we were started)
    try:
        from egressaudit.signatures import default_db, load

        db = load([Path(p) for p in signature_files]) if signature_files else default_db()
        rec = Recorder(Path(out), db, opts)
        pa.array([0])  # pyarrow imports pandas on its first conversion of Python objects: now, not at the first flush
    except Exception as e:  # reported by the proxy at start, in one line
        ready.send(f"cannot start the recorder: {type(e).__name__}: {e}")
        raise SystemExit(1) from None
    ready.send("ready")
    ready.close()
    waiting: collections.deque[tuple[float, str, Any, int, int]] = collections.deque()  # (received, kind, state, number, bytes)
    held = 0  # bytes of what waits

    def take(batch: list[tuple[str, Any, int]], now: float) -> None:
        nonlocal held
        for k, state, n in batch:
            size = _held(state, opts.keep_bodies)
            held += size
            waiting.append((now, k, state, n, size))

    last_flush = time.monotonic()
    forced = False  # rows recorded while the proxy was busy wait for a flush
    while True:
        try:
            # waiting: wake when the proxy could have been quiet long enough, or the oldest could be due (or a batch comes)
            due = min(activity.value + IDLE_S, waiting[0][0] + max_lag) - time.monotonic() if waiting else POLL_S
            kind, payload = q.get(timeout=min(max(due, BUSY_POLL_S), POLL_S))
        except queue.Empty:
            kind = None
        now = time.monotonic()
        if kind is None and closing.value:  # closed at the proxy's exit without the queue: take what it still holds
            with contextlib.suppress(queue.Empty, EOFError, OSError):
                while True:
                    k0, p0 = q.get_nowait()
                    if k0 == "batch":
                        take(p0, now)
            kind, payload = "close", {}
        if kind == "batch":
            take(payload, now)
        # finishing (told to, or the proxy died without telling us): everything left; otherwise what is due --
        # everything while the proxy is quiet, else what has waited max_lag or exceeds max_hold_bytes
        finishing = kind == "close" or (kind is None and os.getppid() != parent)
        while waiting and (finishing or now - activity.value >= IDLE_S or now - waiting[0][0] >= max_lag or held > max_hold_bytes):
            forced = forced or now - activity.value < IDLE_S  # recording while the proxy is busy: written out soon too
            _, k, state, n, size = waiting.popleft()
            held -= size
            _record(rec, k, state, n, opts.keep_bodies)
            now = time.monotonic()
            if now - last_flush >= FLUSH_S:  # a long backlog (at close, or after a long busy spell) reaches disk as it goes
                rec.flush()
                last_flush, forced = now, False
        if finishing:
            if kind == "close":
                rec.close(payload)
            else:  # the proxy died without closing us: keep what we have, uncompacted
                rec.flush()
            return
        if now - last_flush >= FLUSH_S and (forced or now - activity.value >= IDLE_S):
            rec.flush()
            last_flush, forced = now, False


def _record(rec: Recorder, kind: str, state: Any, number: int, full_state: bool) -> None:
    flow: http.HTTPFlow = http.HTTPFlow.from_state(state) if full_state else restore(state)  # type: ignore[assignment]
    if kind == "flow":
        rec.add_flow(flow)
    elif kind == "handshake":
        rec.add_handshake(flow)
    elif kind == "ws":
        rec.add_websocket_message(flow, 0, number)
