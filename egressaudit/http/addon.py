"""The mitmproxy addon: every HTTP exchange and WebSocket message into the session folder.

Loaded by ``mitmdump -s addons/egressaudit_addon.py --set egressaudit_dir=DIR``
or run by ``egressaudit proxy``.  Works in any proxy mode (regular, upstream,
reverse, transparent, wireguard): it only looks at finished exchanges, which a
worker process records while the proxy is quiet (:mod:`egressaudit.http.worker`).
Rows reach disk about a second after the proxy goes quiet and at most
``egressaudit_max_lag`` + 1 s behind under continuous traffic (see
:mod:`egressaudit.session.store`), and the tables are compacted when mitmproxy
shuts down.

**Large bodies** (a ``Content-Length`` above ``egressaudit_stream_large_bodies``,
4 MiB by default) are streamed through the proxy instead of being buffered in
it: a tap counts their bytes, hashes them (sha256 of the body as sent; the
recorder salts it like its other hashes) and keeps their first :data:`HEAD_BYTES` (still content-encoded) as the
flow's content; ``flow.metadata["egressaudit_streamed"]`` then says, per side
streamed, ``{"bytes": total on the wire, "sha256": hex or None}`` (None: the
stream was cut short).  So an upload of any size costs the proxy and the
recorder about 1 MiB.  Bodies of unknown length (chunked, HTTP/2 without a
length) are buffered as mitmproxy does by default.  Other addons see a streamed
body in ``requestheaders``/``responseheaders`` only, as with mitmproxy's
``stream_large_bodies``.

**Exit code.**  mitmdump exits 0 after a clean shutdown whatever happened to
the recording; this addon puts a small addon at the end of mitmproxy's chain
(:class:`ExitStatus`) whose ``done`` runs after every other addon's and ends
mitmdump with the recording's code: 0 recorded, 4 the session folder could
not be written (full disk, read-only), 6 exchanges were lost (stderr says
how many and why; session.json's ``http.recording`` too).  At start, an
unusable folder exits 4, a bad signature file 5, a bad option value 2, each in
one line.

**Recording lock.**  The addon holds ``OUT/.recording.lock``
(:class:`egressaudit.session.RecordingLock`) while it records, shared with its
recorder process: a second recorder into the same folder is refused at start,
and the lock is free again only once the last process writing the folder has
ended (a recorder finishing after a killed mitmdump keeps it).  Started by
``egressaudit session start``, which holds the lock for the whole session, it
shares that one instead (``egressaudit_lock_fd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.utils import human

from egressaudit import session as sess
from egressaudit.errors import EXIT_INCOMPLETE, EXIT_OUTPUT, EXIT_SIGNATURES, EXIT_USAGE
from egressaudit.http.recorder import Recorder, RecorderOptions
from egressaudit.http.worker import CLOSE_STALL_S, MAX_LAG_S, RecorderProcess, RecorderStartError, exit_text, say, why
from egressaudit.signatures import SignatureError, database, expand

log = logging.getLogger(__name__)

HEAD_BYTES = 1 << 20
"""Of a streamed body, this much is kept as the flow's content (and so reaches the recorder)."""
STREAM_DEFAULT = "4m"


class _StartError(Exception):
    def __init__(self, msg: str, code: int) -> None:
        super().__init__(msg)
        self.code = code


class ExitStatus:
    """The last addon of mitmproxy's chain: its ``done`` runs after every other addon's (saving flows, HAR files),
    then ends mitmdump with the recording's exit code (SystemExit passes through mitmproxy's hook calls, which catch
    only Exception)."""

    name = "egressaudit_exit_status"

    def __init__(self) -> None:
        self.code = 0

    def done(self) -> None:
        if self.code:
            raise SystemExit(self.code)


class BodyTap:
    """mitmproxy's ``stream`` callable for one streamed body: passes each chunk on unchanged, counting, hashing and
    keeping the head; at the end the head becomes the message's (raw) content."""

    def __init__(self, flow: http.HTTPFlow, side: str, msg: http.Message, hasher: Any) -> None:
        self.msg = msg
        self.hash = hasher
        self.head = bytearray()
        self.entry: dict[str, Any] = {"bytes": 0, "sha256": None}
        self.finished = False
        flow.metadata.setdefault("egressaudit_streamed", {})[side] = self.entry

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        if data:
            self.entry["bytes"] += len(data)
            self.hash.update(data)
            room = HEAD_BYTES - len(self.head)
            if room > 0:
                self.head += data[:room]
            return data
        self.finish(complete=True)
        return []

    def finish(self, complete: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if complete:
            self.entry["sha256"] = self.hash.hexdigest()
        self.msg.data.content = bytes(self.head)


class EgressAudit:
    def __init__(self) -> None:
        self.recorder: Recorder | None = None  # inline mode (egressaudit_inline)
        self.worker: RecorderProcess | None = None
        self.lock: sess.RecordingLock | None = None
        self.out: Path | None = None
        self.status = ExitStatus()
        self.stream_above: int | None = None
        self.close_timeout = CLOSE_STALL_S
        self._running = False
        self._flusher: asyncio.Task[None] | None = None

    def load(self, loader: Any) -> None:
        self._shut_down_on_hup()  # (before `configure` starts the recorder: see there)
        loader.add_option("egressaudit_dir", str, "", "Session folder to write http.parquet and fields.parquet into (required).")
        loader.add_option("egressaudit_client", str, "", "Vendor of the audited client (zoom, microsoft, ...); default: detected at the end.")
        loader.add_option("egressaudit_signatures", str, "", "Extra vendor signature file or folder, added to the packaged ones.")
        loader.add_option("egressaudit_keep_values", bool, False, "Store field values in clear in fields.parquet (default: salted hashes only).")
        loader.add_option("egressaudit_keep_query", bool, False, "Keep query-string values in paths (default: redacted).")
        loader.add_option(
            "egressaudit_keep_bodies", bool, False, "Also save complete flows, bodies included, to DIR/flows.mitm (default: no bodies kept)."
        )
        loader.add_option(
            "egressaudit_max_lag",
            int,
            MAX_LAG_S,
            "Seconds an exchange may wait for a quiet proxy before the worker records it anyway (0: at once; it waits while the proxy is busy).",
        )
        loader.add_option(
            "egressaudit_inline", bool, False, "Decode and inventory inside the proxy process (default: in a worker process, off the proxy's path)."
        )
        loader.add_option(
            "egressaudit_stream_large_bodies",
            str,
            STREAM_DEFAULT,
            "Stream bodies whose Content-Length is larger than this (k/m/g suffixes) through the proxy instead of buffering them: the "
            "recorder gets their size, a hash and their first MiB. 0: buffer every body.",
        )
        loader.add_option(
            "egressaudit_spool",
            bool,
            True,
            "Keep exchanges waiting for the recorder process in DIR/.spool (0600, deleted once recorded), so that a recorder that dies "
            "loses none of them; false keeps them in its memory only (nothing of the bodies on disk).",
        )
        loader.add_option(
            "egressaudit_lock_fd",
            int,
            -1,
            "A descriptor of DIR/.recording.lock inherited from the process that started mitmdump and holds the lock for the whole "
            "session (egressaudit session start); default: take the lock here.",
        )
        loader.add_option(
            "egressaudit_close_timeout",
            int,
            int(CLOSE_STALL_S),
            "Seconds without progress after which a recorder that is finishing is stopped (and replaced, skipping the exchange it was on).",
        )

    def configure(self, updated: set[str]) -> None:
        if not any(k.startswith("egressaudit_") for k in updated):
            return
        opts = ctx.options
        try:
            size = human.parse_size(opts.egressaudit_stream_large_bodies or "0")
        except ValueError:
            self._fail(f"egressaudit_stream_large_bodies: not a size: {opts.egressaudit_stream_large_bodies!r}", EXIT_USAGE)
            return
        self.stream_above = size or None
        self.close_timeout = max(1, int(opts.egressaudit_close_timeout))
        if not opts.egressaudit_dir:
            if self.recorder is None and self.worker is None:
                log.warning("egressaudit: set egressaudit_dir=DIR to record (nothing is recorded now)")
            return
        self._close({})
        try:
            self._start(opts)
        except _StartError as e:
            self._fail(str(e), e.code)

    def _fail(self, msg: str, code: int) -> None:
        """One line; at start mitmdump then exits with ``code`` before it proxies anything."""
        say(msg)
        if not self._running:
            raise SystemExit(code)
        log.error(f"egressaudit: {msg}")

    def _start(self, opts: Any) -> None:
        out = Path(opts.egressaudit_dir)
        try:
            files = expand([Path(opts.egressaudit_signatures)]) if opts.egressaudit_signatures else []
            db = database(files)  # validated here, so a bad file stops the proxy at start
        except SignatureError as e:
            raise _StartError(str(e), EXIT_SIGNATURES) from None
        except ValueError as e:
            raise _StartError(str(e), EXIT_USAGE) from None
        client = opts.egressaudit_client or None
        if client is not None and client not in db.vendors:
            raise _StartError(f"egressaudit_client: unknown vendor {client!r}", EXIT_USAGE)
        if not opts.egressaudit_max_lag >= 0:
            raise _StartError(f"egressaudit_max_lag: must be 0 or more seconds, not {opts.egressaudit_max_lag}", EXIT_USAGE)
        ropts = RecorderOptions(
            session_id=sess.session_id_for(out),
            client=client,
            keep_values=opts.egressaudit_keep_values,
            keep_query=opts.egressaudit_keep_query,
            keep_bodies=opts.egressaudit_keep_bodies,
        )
        sess.private_umask()  # (mitmdump run by hand: the session, its spool and the recorder's files 0600, as with egressaudit proxy)
        lock = sess.RecordingLock(out)
        try:
            sess.prepare(out)
            if opts.egressaudit_lock_fd >= 0:
                lock.adopt(opts.egressaudit_lock_fd)
            else:
                lock.acquire()
        except sess.SessionError as e:
            raise _StartError(str(e), EXIT_OUTPUT) from None
        except OSError as e:
            raise _StartError(f"{out}: cannot write in the session folder: {why(e)}", EXIT_OUTPUT) from None
        try:
            if opts.egressaudit_inline:
                self.recorder = Recorder(out, db, ropts)
            else:
                worker = RecorderProcess(
                    out, ropts, [str(f) for f in files] if files else None, max_lag=opts.egressaudit_max_lag, lock_fd=lock.fileno(),
                    spool=opts.egressaudit_spool,
                )  # fmt: skip
                worker.wait_ready()
                self.worker = worker
        except RecorderStartError as e:
            lock.release()
            raise _StartError(str(e), e.code if e.code in (EXIT_OUTPUT,) else 1) from None
        except OSError as e:
            lock.release()
            raise _StartError(f"{out}: cannot write in the session folder: {why(e)}", EXIT_OUTPUT) from None
        self.lock, self.out = lock, out
        log.info(f"egressaudit: recording to {out}")

    def _close(self, extra: dict[str, Any]) -> int:
        """Finish the recording; the exit code it deserves (0, 4, 6), said in one line unless 0."""
        code = 0
        if self.recorder is not None:
            try:
                self.recorder.close(extra)
            except OSError as e:
                say(f"{self.out}: cannot finish the session ({why(e)}): what reached disk stays readable")
                code = EXIT_OUTPUT
            self.recorder = None
        if self.worker is not None:
            worker, self.worker = self.worker, None
            rc = worker.close(extra, timeout=self.close_timeout)
            if rc == EXIT_OUTPUT:
                code = EXIT_OUTPUT  # (the worker said what could not be written)
            elif rc == EXIT_INCOMPLETE:
                code = EXIT_INCOMPLETE
                summary = self._lost_summary()
                if summary:  # (empty: nothing lost, the worker said what went wrong)
                    say(f"recording incomplete: {summary}; what reached disk is in {self.out}")
            elif rc != 0:
                code = EXIT_INCOMPLETE
                say(
                    f"recording incomplete: the recorder process could not finish ({_exit_text(rc)}): {self.out} holds what reached disk, "
                    "session.json may not say what is missing"
                )
            elif worker.restarts:
                say(f"the recorder process was restarted {worker.restarts} time(s); no exchange was lost")
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        return code

    def _lost_summary(self) -> str:
        try:
            rec = json.loads((Path(self.out or ".") / "session.json").read_text(encoding="utf-8"))["http"]["recording"]
            said = []
            if rec["lost"]:
                reasons = "; ".join(f"{k}: {v:,}" for k, v in rec["lost_by_reason"].items())
                said.append(f"{rec['lost']:,} of {rec['handed_over']:,} exchanges lost ({reasons})")
            if rec.get("lost_from_earlier_runs"):
                reasons = "; ".join(f"{k}: {v:,}" for k, v in rec["lost_from_earlier_runs_by_reason"].items())
                said.append(f"{rec['lost_from_earlier_runs']:,} exchanges left in the spool by an earlier run lost ({reasons})")
            return "; ".join(said)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "exchanges were lost (see session.json)"

    def running(self) -> None:
        self._running = True
        status = ctx.master.addons.get(ExitStatus.name)
        if status is None:
            ctx.master.addons.add(self.status)  # the end of the chain: its `done` comes after every other addon's
        else:  # (this script was reloaded)
            self.status = status
        loop = asyncio.get_running_loop()
        if self._flusher is None:
            self._flusher = loop.create_task(self._every_second())
        self._shut_down_on_hup()

    @staticmethod
    def _shut_down_on_hup() -> None:
        """A terminal closing sends SIGHUP, which would kill mitmdump before it compacts and writes session.json: shut
        down as on SIGTERM instead (unless the user chose to ignore it, as nohup does).

        Done in `load` already, not only in `running`: on Python 3.12+ (mitmproxy's loop runs eager tasks) mitmdump
        binds its port before it loads this script, and calls `running` only after the recorder has started, about a
        second later; a SIGHUP meanwhile killed it without a session (on 3.11 that second came before the port opened)."""
        hup = getattr(signal, "SIGHUP", None)  # (none on Windows)
        if hup is not None and signal.getsignal(hup) is signal.SIG_DFL:
            # (RuntimeError: no running loop; others: no signal handling in this loop or thread)
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(hup, ctx.master.shutdown)

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.worker is not None:
                self.worker.check()  # a worker that died while the proxy is idle is noticed (and replaced) within a second
            if self.recorder is not None:  # inline mode; the worker flushes on its own
                try:
                    self.recorder.flush()
                except OSError as e:
                    log.error(f"egressaudit: cannot write: {e}")

    # the worker records while the proxy is quiet (see egressaudit.http.worker): tell it when the proxy gets busy
    def client_connected(self, client: Any) -> None:
        if self.worker is not None:
            self.worker.touch()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.worker is not None:
            self.worker.touch()
        if self.stream_above is not None:
            self._tap(flow, "request", flow.request)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if self.stream_above is not None and response is not None:
            status = response.data.status_code
            if status < 200 or status in (204, 304) or flow.request.data.method == b"HEAD":
                return  # (a Content-Length without a body)
            self._tap(flow, "response", response)

    def _tap(self, flow: http.HTTPFlow, side: str, msg: http.Message) -> None:
        """Stream ``msg``'s body through a BodyTap when its Content-Length is above the threshold.

        This runs for every request and response: one pass over the raw header fields (mitmproxy's ``headers.get``
        costs several times more)."""
        if self.worker is None and self.recorder is None:
            return
        length = None
        for name, value in msg.data.headers.fields:
            if len(name) == 14 and name.lower() == b"content-length":
                length = value
            elif len(name) == 17 and name.lower() == b"transfer-encoding":
                return  # (chunked: a Content-Length beside it does not count)
        if length is None or len(length) < 4:
            return  # (no length, or under 1,000 bytes)
        try:
            n = int(length)
        except ValueError:  # a malformed length: mitmproxy decides what to do with it
            return
        assert self.stream_above is not None
        if n <= self.stream_above or callable(msg.stream) or flow.websocket is not None:
            return  # (small; tapped by another addon; a WebSocket)
        msg.stream = BodyTap(flow, side, msg, hashlib.sha256())

    @staticmethod
    def _end_taps(flow: http.HTTPFlow, complete: bool) -> None:
        for msg in (flow.request, flow.response):
            if msg is not None and isinstance(msg.stream, BodyTap):
                msg.stream.finish(complete)

    def response(self, flow: http.HTTPFlow) -> None:
        self._end_taps(flow, complete=True)  # (finished already; a body cut short stays without a hash)
        kind = "handshake" if flow.websocket is not None else "flow"
        if self.worker is not None:
            self.worker.submit_flow(flow, kind)
        elif self.recorder is not None:
            (self.recorder.add_handshake if kind == "handshake" else self.recorder.add_flow)(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._end_taps(flow, complete=False)
        if flow.response is not None:
            return
        if self.worker is not None:
            self.worker.submit_flow(flow)
        elif self.recorder is not None:
            self.recorder.add_flow(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            return
        if self.worker is not None:
            self.worker.submit_websocket_message(flow)
        elif self.recorder is not None:
            self.recorder.add_websocket_message(flow, len(flow.websocket.messages) - 1)

    def done(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.status.code = self._close({"mode": [str(m) for m in ctx.options.mode], "listen_host": ctx.options.listen_host or "*"})


def _exit_text(code: int | None) -> str:
    return "it could not start again" if code is None else exit_text(code)
