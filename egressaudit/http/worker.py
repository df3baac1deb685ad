"""Recording off mitmproxy's event loop, in a worker process that may fail without losing the session.

Decoding bodies and inventorying their fields costs a few milliseconds of
Python per exchange, about as much as mitmproxy's own work: done inside the
proxy it doubled every request's latency (benchmarks/RESULTS.md).  The addon
therefore only snapshots each finished exchange and hands it to one worker
process, which runs the :class:`Recorder` on the machine's other core.

The snapshot is what the recorder reads (:func:`snapshot`): the request,
response, error and WebSocket states, the addresses of the two connections
and the flow's ``egressaudit_streamed`` metadata (a body streamed through the
proxy: its size and hash, with only its first bytes as content), not
``flow.get_state()``, whose connection states (TLS details, certificates)
cost ten times more to build in the proxy and to rebuild in the worker.
With ``keep_bodies`` the whole flow state goes, as ``flows.mitm`` must hold
complete flows.

**Handing over.**  Every exchange (or WebSocket message) gets a sequence
number.  Snapshots are shipped in batches (every :data:`BATCH` exchanges,
:data:`BATCH_BYTES` or :data:`SHIP_S` seconds) to a sender thread, which
pickles each batch and appends it to the *spool*, ``OUT/.spool/<id>-<n>.seg``
(0600, segments of :data:`SEGMENT_BYTES`), then wakes the worker through a
pipe.  The proxy's event loop never waits for the worker: shipping only
appends to the sender's backlog, and a backlog past :data:`MAX_BACKLOG_BYTES`
(a worker that cannot keep up, a disk slower than the traffic) drops the
newest batches, counted and said on stderr.  When the spool cannot be written
(a full disk) or is switched off (``egressaudit_spool``), batches go through
the pipe instead and the worker keeps them in memory.

**Recording while the proxy is idle.**  On a machine with few cores
(measured on 2 vCPUs) any busy second core slows the proxy's core: a spin
loop at the lowest priority (SCHED_IDLE) stretched requests by 9-15% at the
median and 19-34% at p99, and recording *while* exchanges are in flight did
the same (p99 1.33-1.53x) although none of the work was the proxy's.  The
addon stamps a shared clock at every connection, request and finished
exchange (:meth:`RecorderProcess.touch`); the worker holds what it receives
and records it once the proxy has been quiet for :data:`IDLE_S`.  Under
traffic that never pauses it holds batches for at most ``max_lag`` seconds
(:data:`MAX_LAG_S`, the ``egressaudit_max_lag`` option) and
:data:`MAX_HOLD_BYTES` of bodies, then records alongside, that far behind.
Rows reach disk within about a second of the proxy going quiet, and within
``max_lag`` + 1 s under continuous traffic.

**Commits.**  The worker writes rows as part files once a second
(:mod:`egressaudit.session.store`), each carrying a *commit*: the sequence number
of the last exchange whose rows it holds, and running counts.  A spool
segment is deleted once every exchange in it is committed; the whole spool
when the session is closed.

**Faults, and what they cost.**

* An exception while recording one exchange costs that exchange's detail: it
  is recorded as a row with what could be read (host, method, path, status,
  the error) and counted by reason (``http.recording`` in session.json).
* A full disk: rows stay buffered and are retried every second (not more
  often: exchanges of another spool wait meanwhile); the worker says so on
  stderr once.  A session finished on a disk that stays full ends with exit
  code 4; what reached disk stays readable, and exchanges not yet on disk stay
  in the spool (when it could be written) for the next run.
* The worker dies (SIGKILL, the OOM killer, a crash): the proxy notices at its
  next batch or within a second, says so on stderr in one line and starts a
  successor, which reads the commits on disk and records everything after the
  last one from the spool: **nothing handed over is lost**, except what went
  through the pipe instead (spool off or unwritable: up to ``max_lag``
  seconds / :data:`MAX_HOLD_BYTES` of exchanges, plus the pipe's 64 KiB).
  The exchange it was recording when it died is skipped (counted) if the
  successor dies on it too.  After :data:`MAX_RESTARTS` deaths recording
  stops, counted.
* A stuck worker: closing waits as long as the worker makes progress (a
  heartbeat in shared memory), and stops it only after :data:`CLOSE_STALL_S`
  without progress; a successor then finishes the job, skipping the exchange
  the stuck one was on (counted).
* The proxy (mitmdump) dies: the worker notices (the pipe closes), records
  everything in the spool, compacts and writes session.json saying the
  recording is incomplete.  Lost: exchanges the proxy had not yet shipped
  (its last :data:`SHIP_S` seconds), not counted.
* A spool left by a run whose proxy and worker both died is recorded by the
  next recorder that opens the folder (its commits say where to resume).
  Segments are loaded as plain data only (:func:`_loads`: no class or
  function), so a ``.seg`` file someone else put there runs no code: a record
  that is damaged or refused costs its exchanges, counted (an earlier run's
  under ``lost_from_earlier_runs``).
* A table in the folder that cannot be read (a damaged ``http.parquet``): the
  rows of this run stay as parts, uncompacted; one line, exit code 6.

Every exchange is either recorded or counted as lost: session.json's
``http.recording`` says how many were handed over, recorded and lost, by
reason, and how often the worker was restarted; the worker's exit code is 0,
4 (output could not be written) or 6 (exchanges were lost).

The worker ignores Ctrl-C, SIGTERM and SIGHUP, which reach the whole process
group (a terminal closing, a service manager stopping the proxy): the proxy
decides when it finishes and compacts.  It shares the proxy's recording lock
(``OUT/.recording.lock``, :class:`egressaudit.session.RecordingLock`), so the
lock is held until the last process writing the folder has ended.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import io
import math
import multiprocessing
import os
import pickle
import re
import secrets
import signal
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from mitmproxy import connection, http
from mitmproxy import flow as mflow
from mitmproxy.websocket import WebSocketData

from egressaudit.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_OUTPUT, save_crash
from egressaudit.http.query import redact_query
from egressaudit.http.recorder import Recorder, RecorderOptions
from egressaudit.schema import escape_text
from egressaudit.session.store import PARTS, SPOOL, spool_commits

BATCH = 64
BATCH_BYTES = 4 << 20
SHIP_S = 0.05
POLL_S = 0.2
IDLE_S = 0.05
"""The proxy counts as idle when no connection, request or exchange has started or finished for this long."""
MAX_LAG_S = 30
"""A snapshot waits for an idle proxy at most this long by default (``egressaudit_max_lag``); then it is recorded regardless."""
MAX_HOLD_BYTES = 64 << 20
"""Bodies held for an idle proxy at most (approximately: request, response and WebSocket message contents)."""
MAX_BACKLOG_BYTES = 256 << 20
"""Snapshots waiting in the proxy for the sender thread at most (it writes them to the page cache far faster than
mitmproxy receives them: this bounds the proxy's memory when the disk stalls, or, without the spool, when the worker
does not read); past it new batches are dropped (counted)."""
SEGMENT_BYTES = 16 << 20
MAX_RESTARTS = 10
CLOSE_STALL_S = 120.0
"""Closing stops a worker that made no progress for this long."""
MAX_PENDING_ROWS = 200_000
"""Rows kept in memory while the disk is full at most; past it, recording pauses (exchanges wait) until the disk takes them."""
IGNORED_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
"""Signals sent to the proxy's whole process group; the worker finishes when the proxy tells it or dies, not on these
(so it is stopped with SIGKILL when it must be)."""
BUSY_POLL_S = 0.01
FLUSH_S = 1.0
FINISH_TICK_S = 600.0
"""The worker's exit codes, the same as the command's: recorded, output could not be written, exchanges lost."""

_STOPPED = "recording had stopped (the recorder process kept dying)"
_HEADER = struct.Struct("<4sQIII")  # magic, first sequence number, count, payload length, payload crc32
_MAGIC = b"EAS1"
# shared counters (RecorderProcess.shared)
_WAKE, _HEARTBEAT, _CUR_SPOOL, _CUR_SEQ, _DONE, _DISK_FULL, _FINISHED, _DISK_SAID = range(8)
_SHARED = 8
_SPOOL_ID = re.compile(r"[0-9a-f]{12}")  # RecorderProcess.spool_id
MAX_RECORD_ITEMS = 1 << 16
"""A spool record holding more exchanges than this is damaged (a batch holds at most BATCH)."""

Snapshot = tuple[Any, ...]
Item = tuple[str, Any, int]  # (kind, snapshot or flow state, WebSocket message number)


def say(msg: str) -> None:
    """One line on stderr, at once (mitmproxy's own log goes to stdout and is silenced by -q)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"egressaudit: {msg}", file=sys.stderr, flush=True)


def why(e: BaseException) -> str:
    """An OSError in a few words (pyarrow's carry the errno only in their text: "[errno 28] ...")."""
    if isinstance(e, OSError):
        if e.strerror:
            return str(e.strerror)
        m = re.search(r"\[errno (\d+)\]", str(e), re.IGNORECASE)
        if m:
            return os.strerror(int(m.group(1)))
    return " ".join(str(e).split())[:200] or type(e).__name__


class _NotPlain(Exception):
    pass


class _PlainPickler(pickle.Pickler):
    """Refuses what is not plain data (pickle calls ``reducer_override`` for everything but None, bools and exact
    int, float, str, bytes, tuple, list, dict, set and frozenset)."""

    def reducer_override(self, obj: Any) -> Any:
        raise _NotPlain


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain data only: anything naming a class or function (a spool segment someone else wrote) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"not plain data: {module}.{name}")


def _plain(v: Any, depth: int = 0) -> Any:
    """``v`` as plain data: a subclass of a built-in type (a NamedTuple, an IntEnum) as that type, bytearray and
    memoryview as bytes, anything else as its repr."""
    if v is None or type(v) in (bool, int, float, str, bytes):
        return v
    if depth > 64:
        return "..."
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, tuple):
        return tuple(_plain(x, depth + 1) for x in v)
    if isinstance(v, list):
        return [_plain(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {_plain(k, depth + 1): _plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, set | frozenset):
        return frozenset(_plain(x, depth + 1) for x in v)
    try:
        return repr(v)[:1000]
    except Exception:  # noqa: BLE001
        return f"<{type(v).__name__}>"


def _dumps(items: list[Item]) -> bytes:
    """A batch pickled as plain data, which :func:`_loads` reads back."""
    buf = io.BytesIO()
    try:
        _PlainPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(items)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - _NotPlain, or what pickle cannot take (a flow's metadata holds anything)
        return pickle.dumps(_plain(items), protocol=pickle.HIGHEST_PROTOCOL)


def _loads(payload: bytes) -> Any:
    """A pickle of plain data (None, bool, int, float, str, bytes, tuple, list, dict, set); UnpicklingError for any other."""
    return _PlainUnpickler(io.BytesIO(payload)).load()


def _is_item(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 3 and item[0] in ("flow", "handshake", "ws") and type(item[2]) is int


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
        flow.metadata.get("egressaudit_streamed"),
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
    fid, req, resp, err, ws, (cpeer, csock, cts), (addr, speer, ssock, via), *rest = snap
    client = connection.Client(peername=cpeer, sockname=csock, timestamp_start=cts)
    server = connection.Server(address=addr, peername=speer, sockname=ssock, via=via)
    f = http.HTTPFlow(client, server)
    f.id = fid
    f.request = http.Request(*req)
    f.response = http.Response(*resp) if resp is not None else None
    f.error = mflow.Error.from_state(err) if err is not None else None
    f.websocket = WebSocketData.from_state(ws) if ws is not None else None
    if rest and rest[0] is not None:
        f.metadata["egressaudit_streamed"] = rest[0]
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
    """The recorder process could not start; one line for the user, and the exit code that fits (4: the output)."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code


class _InheritedFd:
    """A file descriptor handed to the spawned worker under the same number (the recording lock: its flock is shared
    with the proxy's, so the folder stays locked until both have ended)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return (_fd_from, (reduction.DupFd(self.fd),))


def _fd_from(dup: Any) -> int:
    return int(dup.detach())


def exit_text(code: int | None) -> str:
    """How a process ended, for a message: "exit code 4", "killed by SIGKILL"."""
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclasses.dataclass
class _Batch:
    first: int
    items: list[Item]
    nbytes: int
    payload: bytes | None = None
    in_spool: bool = False


@dataclasses.dataclass
class _Close:
    extra: dict[str, Any]
    info: dict[str, Any]
    nbytes: int = 0


class _SpoolWriter:
    """Appends pickled batches to segment files ``<spool>-<first seq>.seg``; a failed append leaves the segment as it was."""

    def __init__(self, folder: Path, spool: str) -> None:
        self.folder, self.spool = folder, spool
        self.fd = -1
        self.size = 0

    def append(self, first: int, count: int, payload: bytes) -> None:
        if self.fd < 0 or self.size >= SEGMENT_BYTES:
            self._rotate(first)
        header = _HEADER.pack(_MAGIC, first, count, len(payload), zlib.crc32(payload))
        try:
            n = os.writev(self.fd, [header, payload])  # (no copy of the payload)
            rest = memoryview(header + payload)[n:] if n < len(header) + len(payload) else memoryview(b"")
            while rest:
                n = os.write(self.fd, rest)
                rest = rest[n:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(header) + len(payload)

    def _rotate(self, first: int) -> None:
        self.close()
        self.folder.mkdir(exist_ok=True)
        self.fd = os.open(self.folder / f"{self.spool}-{first:012d}.seg", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = 0

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class RecorderProcess:
    """The worker process, its successors, and the spool and pipe into them."""

    def __init__(
        self, out: Path, opts: RecorderOptions, signature_files: list[str] | None, max_lag: float = MAX_LAG_S,
        max_hold_bytes: int = MAX_HOLD_BYTES, *, lock_fd: int | None = None, spool: bool = True,
    ) -> None:  # fmt: skip
        if not max_lag >= 0:
            raise ValueError(f"egressaudit_max_lag: must be 0 or more seconds, not {max_lag}")
        self.out = out
        self.opts = opts
        self.signature_files = signature_files
        self.max_lag = max_lag
        self.max_hold_bytes = max_hold_bytes
        self.lock_fd = lock_fd
        self.full_state = opts.keep_bodies  # flows.mitm needs whole flows, TLS details included
        self.spool_id = secrets.token_hex(6)
        self.pending: list[Item] = []
        self.pending_bytes = 0
        self.seq = 0  # sequence number of the last exchange submitted
        self.not_handed: Counter[str] = Counter()  # exchanges never handed over, by reason (counted as lost)
        self.restarts = 0
        self.deaths: list[str] = []
        self.skip: set[tuple[int, int]] = set()
        self._died_on: Counter[tuple[int, int]] = Counter()
        self.gave_up = False
        self._said: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._mp = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._backlog: collections.deque[_Batch | _Close] = collections.deque()
        self._backlog_bytes = 0
        self._generation = 0
        self._conn: Any = None
        self._stale_conns: list[Any] = []  # pipes to dead workers, closed by the sender thread (it may be writing to one)
        self._stop = False
        self._spool: _SpoolWriter | None = _SpoolWriter(out / SPOOL, self.spool_id) if spool else None
        self._spool_off = not spool
        # Ctrl-C (and SIGTERM, SIGHUP) reach the whole process group, and the worker takes a second to import: start it
        # with them blocked (it ignores them, then unblocks them), so that an early one cannot kill it before it can
        # finish and compact.
        with _signals_blocked():
            self.activity: Any = self._mp.RawValue("d", time.monotonic())  # when the proxy last did something (CLOCK_MONOTONIC)
            self.shared: Any = self._mp.RawArray("q", _SHARED)
            self._start_worker()
            self._sender = threading.Thread(target=self._send_loop, name="egressaudit-sender", daemon=True)
            self._sender.start()
        # The worker is not a daemon (it must finish and compact), so multiprocessing joins it when this process exits:
        # if the proxy exits without closing it (mitmdump stops when its port is taken, without calling `done`), both
        # would wait forever.  Close it first (atexit runs the latest registered first, before multiprocessing's join).
        atexit.register(self._close_at_exit)

    # -- the worker process --------------------------------------------------
    def _start_worker(self) -> None:
        conn_r, conn_w = self._mp.Pipe(duplex=False)
        ready_r, ready_w = self._mp.Pipe(duplex=False)
        lock = _InheritedFd(self.lock_fd) if self.lock_fd is not None else None
        args: tuple[Any, ...] = (str(self.out), self.opts, self.signature_files, conn_r, os.getpid(), ready_w, self.activity, self.shared)
        args += (self.max_lag, self.max_hold_bytes, self.spool_id, sorted(self.skip), lock)
        process = self._mp.Process(target=_run, args=args, name="egressaudit-recorder", daemon=False)
        with _signals_blocked():
            process.start()
        conn_r.close()  # only the worker reads: a dead worker makes writes fail (EPIPE) instead of filling the pipe forever
        ready_w.close()
        with self._cond:
            if self._conn is not None:
                self._stale_conns.append(self._conn)
            self.process = process
            self._conn = conn_w
            self._ready = ready_r
            self._ready_seen = False
            self._generation += 1
            self._cond.notify_all()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the worker has loaded everything it needs (about a second of imports), so that its start-up
        neither competes with the first exchanges for CPU nor hides a problem (bad signature file, unwritable folder)
        until later: raises RecorderStartError with the worker's one-line reason."""
        deadline = time.monotonic() + timeout
        while not self._ready.poll(0.05):
            if not self.process.is_alive():
                self._stop_sender()
                raise RecorderStartError(f"the recorder process ended at start ({exit_text(self.process.exitcode)})")
            if time.monotonic() > deadline:
                self.process.kill()  # not left running behind a proxy that will not use it (it ignores SIGTERM)
                self.process.join(5)
                self._stop_sender()
                raise RecorderStartError(f"the recorder process was not ready after {timeout:.0f} s")
        msg = self._ready_message()
        if msg != "ready":
            self.process.join(5)
            self._stop_sender()
            code = msg[1] if isinstance(msg, tuple) else 1
            raise RecorderStartError(str(msg[0] if isinstance(msg, tuple) else msg), code)

    def _ready_message(self) -> Any:
        try:
            msg = self._ready.recv()
        except (EOFError, OSError):
            msg = "the recorder process ended at start"
        self._ready_seen = True
        return msg

    def check(self) -> None:
        """Cheap: is the worker alive?  If it died, say so and start its successor (called per batch and every second)."""
        if self._closing:
            return
        if not self._ready_seen and self._ready.poll(0):  # a successor that could not start says why
            msg = self._ready_message()
            if isinstance(msg, tuple):
                self._say_once(f"start:{self.restarts}", f"the new recorder process could not start: {msg[0]}")
        if not self.process.is_alive():
            self._on_death()

    def _on_death(self, stalled: bool = False) -> None:
        code = self.process.exitcode
        why = "stopped after making no progress" if stalled else exit_text(code)
        cur = (int(self.shared[_CUR_SPOOL]), int(self.shared[_CUR_SEQ]))
        if cur[1]:
            self._died_on[cur] += 1
            if stalled or self._died_on[cur] >= 2:  # it dies (or hangs) on this exchange: the successor skips it
                self.skip.add(cur)
        self.deaths.append(why)
        # (its pipe is not closed here: the sender thread may be writing to it, and a closed Connection raised TypeError
        # there, which ended the thread: the successors never got the close)
        if self.restarts >= MAX_RESTARTS:
            if not self.gave_up:
                self.gave_up = True
                say(f"the recorder process died again ({why}) after {self.restarts} restarts: recording stopped; what follows is counted as lost")
                with self._cond:
                    self._stop = True
                    self._cond.notify_all()
            return
        self.restarts += 1
        kept = "what it was handed waits in the spool" if self._spool is not None else "what it held in memory is lost (counted)"
        say(f"the recorder process died ({why}); restarting it ({self.restarts} of {MAX_RESTARTS}): {kept}")
        self._start_worker()

    # -- the proxy side --------------------------------------------------------
    def touch(self) -> None:
        """The proxy is busy now: the worker holds back until it has been quiet for IDLE_S."""
        self.activity.value = time.monotonic()

    def submit_flow(self, flow: http.HTTPFlow, kind: str = "flow") -> None:
        try:
            state = self._state(flow)
        except Exception as e:  # noqa: BLE001 - a flow mitmproxy itself cannot copy: counted, never the proxy's problem
            self._unshippable(e)
            return
        self._submit(kind, state, -1)

    def submit_websocket_message(self, flow: http.HTTPFlow) -> None:
        """The flow's newest WebSocket message, without copying the whole conversation each time."""
        try:
            assert flow.websocket is not None
            messages = flow.websocket.messages
            state, number = self._state(flow, messages[-1:]), len(messages) - 1
        except Exception as e:  # noqa: BLE001
            self._unshippable(e)
            return
        self._submit("ws", state, number)

    def _unshippable(self, e: Exception) -> None:
        self.seq += 1
        self.not_handed[f"the proxy could not copy it ({type(e).__name__})"] += 1
        why = f"{type(e).__name__}: {str(e)[:200]}"
        self._say_once(f"copy:{type(e).__name__}", f"an exchange could not be copied for the recorder ({why}): counted as lost")

    def _state(self, flow: http.HTTPFlow, messages: list[Any] | None = None) -> Any:
        if not self.full_state:
            return snapshot(flow, messages)
        with _only_messages(flow, messages):
            return flow.get_state()

    def _submit(self, kind: str, state: Any, number: int) -> None:
        self.touch()
        self.seq += 1
        if self.gave_up:
            self.not_handed[_STOPPED] += 1
            return
        self.pending.append((kind, state, number))
        self.pending_bytes += _held(state, self.full_state)
        if len(self.pending) >= BATCH or self.pending_bytes >= BATCH_BYTES:
            self.ship()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(SHIP_S, self.ship)
            except RuntimeError:  # no event loop (called from a plain thread): no batching
                self.ship()

    def ship(self) -> None:
        """Hand the pending snapshots to the sender thread (it pickles and spools them); never waits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.check()
        if not self.pending:
            return
        batch = _Batch(self.seq - len(self.pending) + 1, self.pending, self.pending_bytes)
        self.pending, self.pending_bytes = [], 0
        if self.gave_up:
            self.not_handed[_STOPPED] += len(batch.items)
            return
        with self._cond:
            if self._backlog_bytes + batch.nbytes > MAX_BACKLOG_BYTES and self._backlog:
                self.not_handed[f"the recorder was more than {MAX_BACKLOG_BYTES >> 20} MiB behind"] += len(batch.items)
                full = True
            else:
                self._backlog.append(batch)
                self._backlog_bytes += batch.nbytes
                self._cond.notify_all()
                full = False
        if full:
            self._say_once("backlog", f"the recorder is {MAX_BACKLOG_BYTES >> 20} MiB behind: dropping exchanges (counted) until it catches up")

    def _say_once(self, key: str, msg: str) -> None:
        if key not in self._said:
            self._said.add(key)
            say(msg)

    # -- the sender thread -----------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            self._close_stale()
            with self._cond:
                while not self._backlog and not self._stop:
                    self._cond.wait()
                if self._stop and not self._backlog:
                    return
                if self._stop and self.gave_up:
                    for m in self._backlog:
                        if isinstance(m, _Batch):
                            self.not_handed[_STOPPED] += len(m.items)
                    self._backlog.clear()
                    return
                msg, conn, gen = self._backlog[0], self._conn, self._generation
            if self._deliver(msg, conn):
                with self._cond:
                    if self._backlog and self._backlog[0] is msg:
                        self._backlog.popleft()
                        self._backlog_bytes -= msg.nbytes
                    self._cond.notify_all()
                continue
            with self._cond:  # the worker is gone: wait for its successor (started from the event loop) or the end
                while self._generation == gen and not self._stop:
                    self._cond.wait(0.5)

    def _deliver(self, msg: _Batch | _Close, conn: Any) -> bool:
        if isinstance(msg, _Close):
            try:
                conn.send(("close", msg.extra, msg.info))
            except (OSError, ValueError):
                return False
            return True
        if msg.payload is None:
            msg.payload = _dumps(msg.items)
        if self._spool is not None and not msg.in_spool:
            try:
                self._spool.append(msg.first, len(msg.items), msg.payload)
                msg.in_spool = True
            except OSError as e:
                self._spool.close()
                self._spool = None
                if not self.shared[_DISK_SAID]:  # (one line for a full disk, whichever process meets it first)
                    self.shared[_DISK_SAID] = 1
                    say(f"{self.out}: cannot write ({why(e)}): exchanges wait in the recorder's memory, rows are retried every second")
        if msg.in_spool:
            if not self.shared[_WAKE]:
                self.shared[_WAKE] = 1
                with contextlib.suppress(OSError, ValueError):
                    conn.send(("wake",))
            return True  # (a dead worker's successor finds it in the spool)
        try:
            conn.send(("batch", msg.first, len(msg.items), msg.payload))
        except (OSError, ValueError):
            return False
        return True

    def _stop_sender(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._sender.join(5)
        if not self._sender.is_alive():
            self._close_stale()
        if self._spool is not None:
            self._spool.close()

    def _close_stale(self) -> None:
        """Close the pipes to dead workers; only where the sender thread is not writing (in it, or once it has ended)."""
        with self._cond:
            stale, self._stale_conns = self._stale_conns, []
        for c in stale:
            with contextlib.suppress(OSError):
                c.close()

    # -- the end ---------------------------------------------------------------
    def _close_at_exit(self) -> None:
        if not self.process.is_alive():
            self._stop_sender()
            return
        self.close({})

    def close(self, extra: dict[str, Any], timeout: float = CLOSE_STALL_S) -> int | None:
        """Tell the worker to finish (record everything, compact, write session.json) and wait for it while it makes
        progress; a worker that dies meanwhile is replaced, one that makes no progress for ``timeout`` seconds is
        stopped and replaced (skipping the exchange it was stuck on).  Returns the last worker's exit code (0, 4, 6),
        or None when none could finish."""
        atexit.unregister(self._close_at_exit)
        self.ship()
        self._closing = True
        if self.gave_up:
            self._stop_sender()
            return None
        self._enqueue_close(extra)
        beat, since = int(self.shared[_HEARTBEAT]), time.monotonic()
        while True:
            self.process.join(0.1)
            if not self.process.is_alive():
                code = self.process.exitcode
                if code in (EXIT_OK, EXIT_OUTPUT, EXIT_INCOMPLETE) or self.restarts >= MAX_RESTARTS:
                    break
                self._on_death()  # a successor finishes the job
                self._enqueue_close(extra)
                beat, since = int(self.shared[_HEARTBEAT]), time.monotonic()
                continue
            if not self._ready_seen and self._ready.poll(0):
                self._ready_message()  # (an error: it exits, and is replaced above)
                since = time.monotonic()
            now_beat = int(self.shared[_HEARTBEAT])
            if self.shared[_FINISHED]:  # the session is written: it is only exiting
                self.process.join(60)
                if self.process.is_alive():
                    self.process.kill()
                    self.process.join(5)
                break
            if now_beat != beat or (not self._ready_seen and time.monotonic() - since < max(timeout, 120.0)):
                beat, since = now_beat, time.monotonic()  # progress (a successor still starting has longer)
            elif time.monotonic() - since > timeout:
                say(f"the recorder process made no progress for {timeout:g} s while finishing: stopping it")
                self.process.kill()  # (it ignores SIGTERM)
                self.process.join(5)
                self._on_death(stalled=True)
                self._enqueue_close(extra)
                beat, since = int(self.shared[_HEARTBEAT]), time.monotonic()
        self._stop_sender()
        if self.shared[_FINISHED]:
            return int(self.shared[_FINISHED]) - 1
        if not self._ready_seen and self._ready.poll(0):  # the last one could not even start
            msg = self._ready_message()
            if isinstance(msg, tuple):
                say(f"the recorder process could not finish: {msg[0]}")
                return None
        return self.process.exitcode

    def _enqueue_close(self, extra: dict[str, Any]) -> None:
        spool = "disk" if self._spool is not None else ("off" if self._spool_off else "memory (the spool could not be written)")
        info = {"handed_over": self.seq, "not_handed": dict(self.not_handed), "restarts": self.restarts, "deaths": list(self.deaths), "spool": spool}
        with self._cond:
            self._backlog = collections.deque(m for m in self._backlog if not isinstance(m, _Close))
            self._backlog.append(_Close(extra, info))
            self._cond.notify_all()


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


# -- the worker process ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    """A batch the worker holds: in the spool (``seg``, ``offset``, ``length``, ``crc``) or in memory (``items``)."""

    received: float
    spool: str
    first: int
    count: int
    size: int
    seg: Path | None = None
    offset: int = 0
    length: int = 0
    crc: int = 0
    items: list[Item] | None = None
    pos: int = 0  # items of it already recorded


@dataclasses.dataclass
class _Commit:
    """How far a spool is on disk: every exchange up to ``through`` is recorded (``rows``) or lost (``lost``, by reason)."""

    spool: str
    through: int = 0
    done: int = 0
    rows: int = 0
    lost: Counter[str] = dataclasses.field(default_factory=Counter)

    def doc(self) -> dict[str, Any]:
        return {"spool": self.spool, "through": self.through, "done": self.done, "rows": self.rows, "lost": dict(self.lost)}

    @classmethod
    def of(cls, spool: str, doc: dict[str, Any] | None) -> _Commit:
        if not doc:
            return cls(spool)
        lost = doc.get("lost")
        counts = Counter({str(k): int(v) for k, v in lost.items()}) if isinstance(lost, dict) else Counter()
        return cls(spool, int(doc.get("through", 0)), int(doc.get("done", 0)), int(doc.get("rows", 0)), counts)


class _SpoolReader:
    """Follows one spool's segments in order, yielding complete records as :class:`_Entry` index entries."""

    def __init__(self, folder: Path, spool: str) -> None:
        self.folder, self.spool = folder, spool
        self.cur: Path | None = None
        self.fd = -1
        self.offset = 0
        self.last_name = ""
        self.finished: list[tuple[Path, int]] = []  # (segment, last sequence number in it), read to the end
        self.last_seq = 0
        self.damaged = 0

    def segments(self) -> list[Path]:
        try:
            return sorted(self.folder.glob(f"{self.spool}-*.seg"))
        except OSError:
            return []

    def poll(self, final: bool, now: float) -> list[_Entry]:
        """New complete records; ``final``: the writer has ended, so a segment's end is its end."""
        found: list[_Entry] = []
        while True:
            if self.cur is None:
                nxt = [s for s in self.segments() if s.name > self.last_name]
                if not nxt:
                    return found
                self.cur, self.offset, self.last_name = nxt[0], 0, nxt[0].name
                try:
                    self.fd = os.open(self.cur, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    self.cur = None
                    continue
            size = os.fstat(self.fd).st_size
            self._read(size, found, now)
            newer = any(s.name > self.cur.name for s in self.segments())
            if not (newer or final):
                return found
            size = os.fstat(self.fd).st_size  # (written to before the writer moved on)
            self._read(size, found, now)
            if self.offset < size:
                self.damaged += 1  # a record cut short (a writer killed mid-write) or garbage: the rest of this segment
            self.finished.append((self.cur, self.last_seq))
            os.close(self.fd)
            self.fd, self.cur = -1, None

    def _read(self, size: int, found: list[_Entry], now: float) -> None:
        assert self.cur is not None
        while self.offset + _HEADER.size <= size:
            magic, first, count, length, crc = _HEADER.unpack(os.pread(self.fd, _HEADER.size, self.offset))
            if magic != _MAGIC or self.offset + _HEADER.size + length > size:
                return
            if not (0 < count <= MAX_RECORD_ITEMS and 0 < first < 1 << 62):
                return  # (garbage: the rest of the segment is damaged)
            found.append(_Entry(now, self.spool, first, count, length, self.cur, self.offset + _HEADER.size, length, crc))
            self.offset += _HEADER.size + length
            self.last_seq = first + count - 1

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd, self.cur = -1, None


class _Worker:
    def __init__(
        self, out: Path, opts: RecorderOptions, rec: Recorder, conn: Any, parent: int, activity: Any, shared: Any,
        max_lag: float, max_hold_bytes: int, spool: str, skip: set[tuple[int, int]], lock_fd: int | None = None,
    ) -> None:  # fmt: skip
        self.out, self.opts, self.rec, self.conn, self.parent = out, opts, rec, conn, parent
        self.activity, self.shared = activity, shared
        self.max_lag, self.max_hold_bytes = max_lag, max_hold_bytes
        self.spool, self.skip = spool, skip
        self.lock_fd = lock_fd
        self.folder = out / SPOOL
        self.waiting: collections.deque[_Entry] = collections.deque()
        self.held = 0
        self.head: list[Item] | None = None  # the items of waiting[0], once loaded
        self.commits: dict[str, _Commit] = {}
        self.dirty: str | None = None  # the spool whose rows are buffered, not yet committed
        self.readers: list[_SpoolReader] = []
        self.resumed_rows: dict[str, int] = {}
        self.resumed_lost: dict[str, Counter[str]] = {}
        self.recovered = 0
        self.disk_error: str | None = None
        self.last_flush = time.monotonic()
        self.forced = False
        self.parent_gone = False
        self.close_msg: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._resume()

    # -- start: where the spools stand on disk -----------------------------------
    def _resume(self) -> None:
        """Commits from the tables on disk; spools left by earlier recorders (of this proxy, or of a run that died)."""
        http_commits = spool_commits(self.out, "http")
        for spool, (c, _) in http_commits.items():
            self.commits[spool] = _Commit.of(spool, c)
        # a fields part committed past the http table's commit (a worker killed between the two writes): its rows would
        # be written again
        for spool, (c, part) in spool_commits(self.out, "fields").items():
            if part is not None and int(c.get("through", 0)) > self.commits.get(spool, _Commit(spool)).through:
                with contextlib.suppress(OSError):
                    part.unlink()
        names = {p.name.rsplit("-", 1)[0] for p in self.folder.glob("*.seg")} if self.folder.is_dir() else set()
        spools = sorted(n for n in names if _SPOOL_ID.fullmatch(n))  # (another name is no spool of ours: left alone)
        for spool in [s for s in spools if s != self.spool] + [self.spool]:
            self.commits.setdefault(spool, _Commit(spool))
            self.readers.append(_SpoolReader(self.folder, spool))
        self.resumed_rows = {s: c.rows for s, c in self.commits.items()}
        self.resumed_lost = {s: Counter(c.lost) for s, c in self.commits.items()}

    # -- receiving ---------------------------------------------------------------
    def receive(self, timeout: float) -> None:
        """Messages from the proxy (waiting at most ``timeout``), then what the spools hold that is new."""
        try:
            ready = self.conn.poll(timeout)
            while ready:
                msg = self.conn.recv()
                if msg[0] == "batch":  # (the spool could not be written): after what was spooled before it
                    self._poll_spools(False)
                    _, first, count, payload = msg
                    try:
                        items = _loads(payload)
                    except Exception:  # noqa: BLE001 - its exchanges are counted as damaged
                        items = []
                    self._hold(_Entry(time.monotonic(), self.spool, first, count, len(payload), items=items))
                elif msg[0] == "close":
                    self.close_msg = (msg[1], msg[2])
                ready = self.conn.poll(0)
        except (EOFError, OSError):  # the proxy has gone without closing us
            self._orphaned()
        if not self.parent_gone and os.getppid() != self.parent:
            self._orphaned()
        self.shared[_WAKE] = 0  # (before reading the spool: a batch spooled after this wakes us again)
        self._poll_spools(self.finishing)

    def _orphaned(self) -> None:
        """The proxy died: from now on the recording lock is ours alone, and its file names us (for other commands)."""
        if not self.parent_gone and self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.lock_fd, 0)
                os.pwrite(self.lock_fd, f"{os.getpid()}\n".encode(), 0)
        self.parent_gone = True

    def _poll_spools(self, final: bool) -> None:
        """Hold what the spools hold that is new (``final``: the proxy writes no more); earlier runs' spools are due now."""
        now = time.monotonic()
        for r in self.readers:
            own = r.spool == self.spool
            for e in r.poll(final or not own, now if own else 0.0):
                self._hold(e)

    def _hold(self, e: _Entry) -> None:
        c = self.commits.setdefault(e.spool, _Commit(e.spool))
        if e.first + e.count - 1 <= c.through:  # already on disk (recorded by the worker we replace)
            return
        self.waiting.append(e)
        self.held += e.size

    @property
    def finishing(self) -> bool:
        return self.close_msg is not None or self.parent_gone

    # -- recording ---------------------------------------------------------------
    def due(self, now: float) -> bool:
        """Is the oldest held batch to be recorded now (the proxy is quiet, it waited max_lag, or too much is held)?"""
        if not self.waiting:
            return False
        if self.disk_error and self.rec.http.pending >= MAX_PENDING_ROWS:
            return self.finishing  # nothing more in memory until the disk takes what it holds
        quiet = now - self.activity.value >= IDLE_S
        return self.finishing or quiet or now - self.waiting[0].received >= self.max_lag or self.held > self.max_hold_bytes

    def record_next(self, now: float) -> bool:
        """Record the next exchange of the oldest batch; False when it waits for the disk (a part holds the rows of one
        spool, and those of the previous spool could not be written: retried once per FLUSH_S)."""
        e = self.waiting[0]
        if self.dirty is not None and self.dirty != e.spool:
            if self.disk_error is not None and now - self.last_flush < FLUSH_S:
                return False
            if not self.flush():
                return False
        if self.head is None:
            self.head = self._load(e)
        c = self.commits[e.spool]
        seq = e.first + e.pos
        item = self.head[e.pos] if e.pos < len(self.head) else None
        e.pos += 1
        if seq > c.through:
            self.forced = self.forced or now - self.activity.value < IDLE_S  # recording while the proxy is busy: written out soon too
            self._record_one(c, int(e.spool, 16), seq, item)
        if e.pos >= e.count:
            self.waiting.popleft()
            self.held -= e.size
            self.head = None
        return True

    def _load(self, e: _Entry) -> list[Item]:
        if e.items is not None:
            return e.items
        assert e.seg is not None
        try:
            fd = os.open(e.seg, os.O_RDONLY | os.O_CLOEXEC)
            try:
                payload = os.pread(fd, e.length, e.offset)
            finally:
                os.close(fd)
            if len(payload) == e.length and zlib.crc32(payload) == e.crc:
                items = _loads(payload)  # (plain data only: a segment may have been put there by anyone)
                if isinstance(items, list):
                    return items
        except Exception:  # noqa: BLE001 - a damaged or refused record costs its exchanges, counted
            pass
        return []

    def _record_one(self, c: _Commit, spool_no: int, seq: int, item: Item | None) -> None:
        self.shared[_CUR_SPOOL], self.shared[_CUR_SEQ] = spool_no, seq
        if not _is_item(item):
            c.lost["spool record damaged"] += 1
        elif (spool_no, seq) in self.skip:
            c.lost["the recorder process died on it twice (or hung on it)"] += 1
        else:
            assert item is not None
            kind, state, number = item
            try:
                _record(self.rec, kind, state, number, self.opts.keep_bodies)
                c.rows += 1
            except Exception as e:  # noqa: BLE001 - one exchange must not cost the session
                if _record_fallback(self.rec, self.opts, kind, state, number, e):
                    c.rows += 1
                    self.rec.stats.skipped[f"recorder:{type(e).__name__}"] += 1
                else:
                    c.lost[f"recorder error: {type(e).__name__}"] += 1
        c.through, c.done = seq, c.done + 1
        self.dirty = c.spool
        self.shared[_CUR_SEQ] = 0
        self.shared[_HEARTBEAT] += 1
        if c.spool == self.spool:
            self.shared[_DONE] = c.done

    # -- writing -----------------------------------------------------------------
    def flush(self) -> bool:
        """Write the buffered rows as parts carrying the commit (fields first, so a part of http with a commit means its
        fields are on disk too); False when the disk refused (the rows stay buffered, the commit is not advanced)."""
        self.last_flush = time.monotonic()
        commit = self.commits[self.dirty].doc() if self.dirty is not None else None
        try:
            self.rec.fields.flush(commit)
            self.rec.http.flush(commit)
        except OSError as e:
            if self.disk_error is None and not self.shared[_DISK_SAID]:
                self.shared[_DISK_SAID] = 1
                say(f"{self.out}: cannot write ({why(e)}): {self.rec.http.pending:,} rows kept in memory, retried every second")
            self.disk_error = why(e)
            self.shared[_DISK_FULL] = 1
            return False
        if self.disk_error is not None:
            say(f"{self.out}: writing again")
            self.shared[_DISK_SAID] = 0
            self.disk_error = None
            self.shared[_DISK_FULL] = 0
        self.dirty = None
        self.forced = False
        self.shared[_HEARTBEAT] += 1
        self._drop_recorded_segments()
        return True

    def _drop_recorded_segments(self) -> None:
        for r in self.readers:
            c = self.commits[r.spool]
            keep = []
            for seg, last in r.finished:
                if last <= c.through:
                    with contextlib.suppress(OSError):
                        seg.unlink()
                else:
                    keep.append((seg, last))
            r.finished = keep

    def finish(self) -> int:
        """Everything is recorded: write it out, compact, write session.json; the exit code.

        Compacting a long session takes a while without any exchange to count: a thread ticks the heartbeat meanwhile
        (for at most :data:`FINISH_TICK_S`), so that the proxy waits for work that is bounded and not about content."""
        done = threading.Event()

        def tick() -> None:
            end = time.monotonic() + FINISH_TICK_S
            while not done.wait(0.5) and time.monotonic() < end:
                self.shared[_HEARTBEAT] += 1

        ticker = threading.Thread(target=tick, name="egressaudit-finishing", daemon=True)
        ticker.start()
        try:
            return self._finish()
        finally:
            done.set()
            ticker.join(2)

    def _finish(self) -> int:
        flushed = self.flush()
        self.shared[_HEARTBEAT] += 1
        for r in self.readers:
            r.close()
        own = self.commits.setdefault(self.spool, _Commit(self.spool))
        info = self.close_msg[1] if self.close_msg is not None else {}
        extra = dict(self.close_msg[0]) if self.close_msg is not None else {}
        handed = int(info.get("handed_over", own.through))
        lost = Counter(own.lost)
        lost.update({str(k): int(v) for k, v in (info.get("not_handed") or {}).items()})
        left, in_memory = self._unrecorded()  # (when the disk stayed full while finishing)
        if in_memory:
            lost["not recorded: the disk was full"] += in_memory
        unknown = handed - own.rows - sum(lost.values()) - left[self.spool]
        if unknown > 0:
            lost["held in memory by a recorder process that died"] += unknown
        recovered = {s: c.rows - self.resumed_rows.get(s, 0) for s, c in self.commits.items() if s != self.spool}
        recovered = {s: n for s, n in recovered.items() if n}
        earlier: Counter[str] = Counter()  # exchanges of earlier runs' spools lost now (damaged or refused records)
        for s, c in self.commits.items():
            if s != self.spool:
                earlier.update(c.lost - self.resumed_lost.get(s, Counter()))
        recording: dict[str, Any] = {
            "complete": not lost and not earlier and not left and flushed and not self.parent_gone,
            "handed_over": handed,
            "recorded": own.rows,
            "lost": sum(lost.values()),
            "lost_by_reason": dict(lost),
            "recorder_restarts": int(info.get("restarts", 0)),
            "recorder_deaths": list(info.get("deaths", [])),
            "spool": info.get("spool", "disk"),
        }
        if recovered:
            recording["recovered_from_earlier_runs"] = sum(recovered.values())
        if earlier:
            recording["lost_from_earlier_runs"] = sum(earlier.values())
            recording["lost_from_earlier_runs_by_reason"] = dict(earlier)
        if left:
            recording["left_in_spool"] = sum(left.values())
        if self.parent_gone:
            recording["stopped_by"] = "the proxy ended without closing the recorder (killed?): exchanges it had not yet handed over are not counted"
        if not flushed:
            recording["unwritten_rows"] = self.rec.http.pending
            recording["complete"] = False
        dropped_rows = sum(self.rec.http.dropped.values()) + sum(self.rec.fields.dropped.values())
        if dropped_rows:
            recording["rows_the_tables_refused"] = dropped_rows
        extra["recording"] = recording
        written = False
        unfinished = EXIT_OK  # compacting failed: EXIT_OUTPUT (the disk), EXIT_INCOMPLETE (a table there cannot be read)
        if flushed:
            try:
                self.rec.close(extra)
                written = True
            except OSError as e:
                unfinished, recording["not_compacted"] = EXIT_OUTPUT, why(e)
                say(f"{self.out}: cannot finish the session ({why(e)}): what reached disk stays readable")
            except (pa.ArrowException, ValueError) as e:  # (a damaged http.parquet, fields.parquet or part)
                unfinished, recording["not_compacted"] = EXIT_INCOMPLETE, why(e)
                recording["complete"] = False
                say(f"{self.out}: cannot compact the tables ({why(e)}): the rows of this run stay in {PARTS}")
        if not written:
            try:
                self.rec._write_session(extra)  # what is on disk, uncompacted, and what was not written
                written = True
            except Exception as e:  # noqa: BLE001 - the line below says it
                with contextlib.suppress(OSError):
                    (self.out / ".session.json.tmp").unlink()  # (the recorder's half-written one)
                say(f"{self.out}: session.json could not be written ({why(e)})")
        self.shared[_HEARTBEAT] += 1
        if written and flushed and not left:
            self._drop_spools()
        if not (written and flushed) or left:
            code = EXIT_OUTPUT
        elif unfinished:
            code = unfinished
        else:
            code = EXIT_INCOMPLETE if recording["lost"] or earlier else EXIT_OK
        self.shared[_FINISHED] = code + 1
        return code

    def _unrecorded(self) -> tuple[Counter[str], int]:
        """Exchanges still waiting: those in spool files by spool (the next run records them), and those in memory."""
        left: Counter[str] = Counter()
        in_memory = 0
        for e in self.waiting:
            through = self.commits[e.spool].through if e.spool in self.commits else 0
            n = max(0, e.first + e.count - 1 - max(through, e.first + e.pos - 1))
            if e.seg is not None:
                left[e.spool] += n
            else:
                in_memory += n
        return left, in_memory

    def _drop_spools(self) -> None:
        """Every exchange is on disk: the spools' segments go (bodies are not kept)."""
        for r in self.readers:
            for seg in r.segments():
                with contextlib.suppress(OSError):
                    seg.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()

    def run(self) -> int:
        blocked = False  # the next exchange waits for the disk
        while True:
            if blocked:
                timeout = min(max(self.last_flush + FLUSH_S - time.monotonic(), BUSY_POLL_S), POLL_S)
            elif self.waiting:
                # wake when the proxy could have been quiet long enough, or the oldest could be due (or a batch comes)
                due = min(self.activity.value + IDLE_S, self.waiting[0].received + self.max_lag) - time.monotonic()
                timeout = min(max(due, BUSY_POLL_S), POLL_S)
            else:
                timeout = POLL_S
            self.receive(timeout)
            now = time.monotonic()
            blocked = False
            while self.due(now):
                if not self.record_next(now):
                    blocked = True
                    self.shared[_HEARTBEAT] += 1  # alive, waiting for the disk
                    break
                now = time.monotonic()
                if now - self.last_flush >= FLUSH_S:  # a long backlog (at close, after a long busy spell) reaches disk as it goes
                    self.flush()
            if self.finishing and blocked:
                blocked = not self.flush()  # one more try; then what still waits stays in the spool (exit 4)
            if self.finishing and (not self.waiting or blocked):
                return self.finish()
            if now - self.last_flush >= FLUSH_S and (
                self.disk_error or (self.dirty is not None and (self.forced or now - self.activity.value >= IDLE_S))
            ):
                self.flush()


def _run(
    out: str, opts: RecorderOptions, signature_files: list[str] | None, conn: Any, parent: int, ready: Any, activity: Any,
    shared: Any, max_lag: float, max_hold_bytes: int, spool: str, skip: list[tuple[int, int]], lock: int | None,
) -> None:  # fmt: skip
    for sig in IGNORED_SIGNALS:  # they reach the whole process group; the proxy decides when we stop
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED_SIGNALS)  # (blocked while we were started)
    try:
        from egressaudit.signatures import database

        db = database([Path(p) for p in signature_files or ()])
        # the worker writes parts itself, each with its commit (flush_interval: never on its own)
        rec = Recorder(Path(out), db, dataclasses.replace(opts, flush_interval=math.inf))
        # (lock: an open descriptor, sharing the proxy's flock on the recording lock, held until we exit)
        worker = _Worker(Path(out), opts, rec, conn, parent, activity, shared, max_lag, max_hold_bytes, spool, set(skip), lock)
        pa.array([0])  # pyarrow imports pandas on its first conversion of Python objects: now, not at the first flush
    except Exception as e:  # reported by the proxy at start, in one line
        code = EXIT_OUTPUT if isinstance(e, OSError) else 1
        with contextlib.suppress(OSError):
            ready.send((f"cannot start the recorder: {type(e).__name__}: {e}", code))
        raise SystemExit(code) from None
    with contextlib.suppress(OSError):
        ready.send("ready")
        ready.close()
    try:
        code = worker.run()
    except Exception as e:  # a bug: one line and the traceback in a file; the proxy starts a successor
        where = save_crash(e, prefix="recorder")
        say(
            f"the recorder process failed: {type(e).__name__}: {' '.join(str(e).split())[:200]} -- a bug in egressaudit; "
            + (f"details in {where}" if where else "please report it")
        )
        code = 1
    raise SystemExit(code)


def _record(rec: Recorder, kind: str, state: Any, number: int, full_state: bool) -> None:
    flow: http.HTTPFlow = http.HTTPFlow.from_state(state) if full_state else restore(state)  # type: ignore[assignment]
    if kind == "flow":
        rec.add_flow(flow)
    elif kind == "handshake":
        rec.add_handshake(flow)
    elif kind == "ws":
        rec.add_websocket_message(flow, 0, number)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "backslashreplace")
    return escape_text(str(v))


def _record_fallback(rec: Recorder, opts: RecorderOptions, kind: str, state: Any, number: int, error: BaseException) -> bool:
    """The row of an exchange the recorder failed on, with what can be read of it; False when even that fails."""
    try:
        if opts.keep_bodies:
            req, resp, err = state["request"], state.get("response"), state.get("error")
            host, port, method, scheme, path, version, ts = (
                req["host"], req["port"], req["method"], req["scheme"], req["path"], req["http_version"], req["timestamp_start"],
            )  # fmt: skip
            status = resp["status_code"] if resp else None
            emsg = err["msg"] if err else None
            fid = state["id"]
        else:
            fid, req, resp, err = state[0], state[1], state[2], state[3]
            host, port, method, scheme, path, version, ts = req[0], req[1], req[2], req[3], req[5], req[6], req[10]
            status = resp[1] if resp else None
            emsg = err.get("msg") if isinstance(err, dict) else None
        path_s = _text(path) or ""
        ws = kind == "ws"
        ts_us = int(ts * 1_000_000) if isinstance(ts, int | float) and math.isfinite(ts) and ts > 0 else 0
        row = {
            "session_id": opts.session_id,
            "exchange_id": f"{fid}:{number}" if ws else str(fid),
            "kind": "websocket" if ws else "http",
            "ts_start": ts_us,
            "ts_end": ts_us,
            "host": _text(host),
            "remote_port": int(port) if isinstance(port, int) and 0 <= port < 65536 else None,
            "scheme": _text(scheme),
            "http_version": _text(version),
            "method": None if ws else _text(method),
            "path": redact_query(path_s, opts.keep_query),
            "status": None if ws or not isinstance(status, int) else status,
            "direction": "out",
            "bytes_out": 0,
            "body_bytes_out": 0,
            "bytes_in": 0,
            "body_bytes_in": 0,
            "body_format": "error:recorder",
            "field_count": 0,
            "identifier_fields": 0,
            "party": "unknown",
            "category": "unknown",
            "data_class": "unknown",
            "rule": "none",
            "evidence": f"not recorded in full: the recorder failed on it ({type(error).__name__})",
            "error": _text(emsg),
            "attributed_by": "none",
        }
        rec.http.append([row])
        return True
    except Exception:  # noqa: BLE001
        return False


def spool_folder(out: Path) -> Path:
    return out / SPOOL
