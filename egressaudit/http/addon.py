"""The mitmproxy addon: every HTTP exchange and WebSocket message into the session folder.

Loaded by ``mitmdump -s addons/egressaudit_addon.py --set egressaudit_dir=DIR``
or run by ``egressaudit proxy``.  Works in any proxy mode (regular, upstream,
reverse, transparent, wireguard): it only looks at finished exchanges.  Rows
reach disk at least once a second (see :mod:`egressaudit.http.store`), and the
tables are compacted when mitmproxy shuts down.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from egressaudit.http.recorder import Recorder, RecorderOptions
from egressaudit.session import session_id_for
from egressaudit.signatures import SignatureDB, SignatureError, data_dir, default_db, load

log = logging.getLogger(__name__)


class EgressAudit:
    def __init__(self) -> None:
        self.recorder: Recorder | None = None
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

    def configure(self, updated: set[str]) -> None:
        if not any(k.startswith("egressaudit_") for k in updated):
            return
        opts = ctx.options
        if not opts.egressaudit_dir:
            if self.recorder is None:
                log.warning("egressaudit: set egressaudit_dir=DIR to record (nothing is recorded now)")
            return
        if self.recorder is not None:
            self.recorder.close()
        out = Path(opts.egressaudit_dir)
        db = self._db(opts.egressaudit_signatures)
        client = opts.egressaudit_client or None
        if client is not None and client not in db.vendors:
            raise ValueError(f"egressaudit_client: unknown vendor {client!r}")
        self.recorder = Recorder(
            out,
            db,
            RecorderOptions(
                session_id=session_id_for(out),
                client=client,
                keep_values=opts.egressaudit_keep_values,
                keep_query=opts.egressaudit_keep_query,
                keep_bodies=opts.egressaudit_keep_bodies,
            ),
        )
        log.info(f"egressaudit: recording to {out}")

    @staticmethod
    def _db(extra: str) -> SignatureDB:
        try:
            if not extra:
                return default_db()
            p = Path(extra)
            files = list(data_dir().glob("*.yaml")) + (sorted(p.glob("*.yaml")) if p.is_dir() else [p])
            return load(files)
        except SignatureError as e:
            raise ValueError(str(e)) from None

    def running(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every_second())

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.recorder is not None:
                try:
                    self.recorder.flush()
                except OSError as e:
                    log.error(f"egressaudit: cannot write: {e}")

    def response(self, flow: http.HTTPFlow) -> None:
        if self.recorder is None:
            return
        if flow.websocket is not None:
            self.recorder.add_handshake(flow)
            return
        self.recorder.add_flow(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if self.recorder is not None and flow.response is None:
            self.recorder.add_flow(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if self.recorder is None or flow.websocket is None:
            return
        self.recorder.add_websocket_message(flow, len(flow.websocket.messages) - 1)

    def done(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self.recorder is not None:
            self.recorder.close({"mode": [str(m) for m in ctx.options.mode], "listen_host": ctx.options.listen_host or "*"})
            self.recorder = None
