#!/usr/bin/env python3
"""The two tiny web servers of the janus-echo sample (Python standard library only).

Run by ``record.sh`` inside the server network namespace:

* ``meet.selfhosted.test`` over plain HTTP (``--http-port``): serves the static
  demo page (``--web-root``), the page a participant's browser loads.
* ``stats.selfhosted.test`` over HTTPS (``--https-port``, self-signed
  certificate): the telemetry sink.  The page POSTs a JSON document built from
  ``RTCPeerConnection.getStats()`` to ``/v1/stats`` every 2 s, the way
  rtcstats/callstats-style collectors do.  That is service-generated data, not
  customer content.  Each document received is appended, one per line, to
  ``<out-dir>/stats.jsonl``.  The one marked ``"final": true`` also makes the
  sink write ``<out-dir>/done`` (holding ``ok`` or ``failed``), which tells
  ``record.sh`` that the call is over.

Nothing here opens a connection; both servers listen only on ``--bind``.
"""

from __future__ import annotations

import argparse
import functools
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 4 * 1024 * 1024


class PageHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "egressaudit-sample-web/1"

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"web   {self.address_string()} {fmt % args}\n")


class StatsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "egressaudit-sample-stats/1"
    out_dir: Path

    def _cors(self) -> None:
        origin = self.headers.get("Origin") or "*"
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Access-Control-Allow-Private-Network", "true")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Vary", "Origin")

    def _reply(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(code)
        self._cors()
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_OPTIONS(self) -> None:  # CORS pre-flight for the JSON POST
        self._reply(204)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/stats":
            self._reply(404, b'{"error":"not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._reply(413, b'{"error":"bad length"}')
            return
        raw = self.rfile.read(length)
        try:
            doc = json.loads(raw)
        except ValueError:
            self._reply(400, b'{"error":"not json"}')
            return
        with self.server.lock:  # type: ignore[attr-defined]
            with open(self.out_dir / "stats.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
            if isinstance(doc, dict) and doc.get("final"):
                (self.out_dir / "done").write_text("ok\n" if doc.get("ok") else "failed\n")
        self._reply(200, b'{"accepted":true}')

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"stats {self.address_string()} {fmt % args}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", required=True)
    ap.add_argument("--web-root", required=True, type=Path)
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--https-port", type=int, default=443)
    ap.add_argument("--cert", required=True, type=Path)
    ap.add_argument("--key", required=True, type=Path)
    ap.add_argument("--out-dir", required=True, type=Path)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    web = ThreadingHTTPServer(
        (args.bind, args.http_port),
        functools.partial(PageHandler, directory=str(args.web_root)),
    )

    handler = type("BoundStatsHandler", (StatsHandler,), {"out_dir": args.out_dir})
    stats = ThreadingHTTPServer((args.bind, args.https_port), handler)
    stats.lock = threading.Lock()  # type: ignore[attr-defined]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    stats.socket = ctx.wrap_socket(stats.socket, server_side=True)

    threading.Thread(target=web.serve_forever, daemon=True).start()
    sys.stderr.write(
        f"sink: page on http://{args.bind}:{args.http_port}/, "
        f"stats on https://{args.bind}:{args.https_port}/v1/stats\n"
    )
    sys.stderr.flush()
    try:
        stats.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
