"""The mitmproxy addon: every HTTP exchange and WebSocket message into the session folder.

Loaded by ``mitmdump -s addons/egressaudit_addon.py --set egressaudit_dir=DIR``
or run by ``egressaudit proxy``.  Works in any proxy mode (regular, upstream,
reverse, transparent, wireguard): it only looks at finished exchanges, which a
worker process records while the proxy is quiet (:mod:`egressaudit.http.worker`).
Rows reach disk about a second after the proxy goes quiet and at most
``egressaudit_max_lag`` + 1 s behind under continuous traffic (see
:mod:`egressaudit.http.store`), and the tables are compacted when mitmproxy
shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from egressaudit.http.recorder import Recorder, RecorderOptions
from egressaudit.http.worker import MAX_LAG_S, RecorderProcess, RecorderStartError
from egressaudit.session import session_id_for
from egressaudit.signatures import SignatureError, data_dir, default_db, load

log = logging.getLogger(__name__)


class EgressAudit:
    def __init__(self) -> None:
        self.recorder: Recorder | None = None  # inline mode (egressaudit_inline)
        self.worker: RecorderProcess | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._ws_seen: dict[str, int] = {}

    def load(self, loader: Any) -> None:
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

    def configure(self, updated: set[str]) -> None:
        if not any(k.startswith("egressaudit_") for k in updated):
            return
        opts = ctx.options
        if not opts.egressaudit_dir:
            if self.recorder is None and self.worker is None:
                log.warning("egressaudit: set egressaudit_dir=DIR to record (nothing is recorded now)")
            return
        self._close({})
        try:
            self._start(opts)
        except (ValueError, SignatureError, OSError, RecorderStartError) as e:
            # one line, no traceback; an error logged at start-up makes mitmproxy exit before it proxies anything
            log.error(f"egressaudit: {e}")

    def _start(self, opts: Any) -> None:
        out = Path(opts.egressaudit_dir)
        files = self._signature_files(opts.egressaudit_signatures)
        db = load(files) if files else default_db()  # validated here, so a bad file stops the proxy at start
        client = opts.egressaudit_client or None
        if client is not None and client not in db.vendors:
            raise ValueError(f"egressaudit_client: unknown vendor {client!r}")
        ropts = RecorderOptions(
            session_id=session_id_for(out),
            client=client,
            keep_values=opts.egressaudit_keep_values,
            keep_query=opts.egressaudit_keep_query,
            keep_bodies=opts.egressaudit_keep_bodies,
        )
        if opts.egressaudit_inline:
            self.recorder = Recorder(out, db, ropts)
        else:
            out.mkdir(parents=True, exist_ok=True)
            worker = RecorderProcess(out, ropts, [str(f) for f in files] if files else None, max_lag=opts.egressaudit_max_lag)
            worker.wait_ready()
            self.worker = worker
        log.info(f"egressaudit: recording to {out}")

    def _close(self, extra: dict[str, Any]) -> None:
        if self.recorder is not None:
            self.recorder.close(extra)
            self.recorder = None
        if self.worker is not None:
            code = self.worker.close(extra)
            if code != 0:
                log.error(f"egressaudit: the recorder process ended with exit code {code}")
            self.worker = None

    @staticmethod
    def _signature_files(extra: str) -> list[Path]:
        if not extra:
            return []
        p = Path(extra)
        if not p.exists():
            raise ValueError(f"egressaudit_signatures: {p}: no such file or folder")
        files = list(data_dir().glob("*.yaml")) + (sorted(p.glob("*.yaml")) if p.is_dir() else [p])
        try:
            load(files)
        except SignatureError as e:
            raise ValueError(str(e)) from None
        return files

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush_every_second())
        # a terminal closing sends SIGHUP, which would kill mitmdump before it compacts and writes session.json: shut
        # down as on SIGTERM instead (unless the user chose to ignore it, as nohup does)
        hup = getattr(signal, "SIGHUP", None)  # (none on Windows)
        if hup is not None and signal.getsignal(hup) is signal.SIG_DFL:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signal handling in this loop or thread
                loop.add_signal_handler(hup, ctx.master.shutdown)

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
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

    def response(self, flow: http.HTTPFlow) -> None:
        kind = "handshake" if flow.websocket is not None else "flow"
        if self.worker is not None:
            self.worker.submit_flow(flow, kind)
        elif self.recorder is not None:
            (self.recorder.add_handshake if kind == "handshake" else self.recorder.add_flow)(flow)

    def error(self, flow: http.HTTPFlow) -> None:
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
        self._close({"mode": [str(m) for m in ctx.options.mode], "listen_host": ctx.options.listen_host or "*"})
