"""A local HTTPS + WebSocket sink for browser tests: serves the test page, records requests and WebSocket messages.

Like :class:`tests.support.sink.Sink` it records every request exactly as it
arrived, and it also

* serves the test page (``GET /`` or any room path on the page host) and the
  bundled SDKs (``GET /bundle.js``) from ``tests/support/browser/dist``;
* answers CORS preflights, so a page may POST JSON to the vendors' hosts;
* accepts WebSocket upgrades (RFC 6455, no extensions; the first offered
  subprotocol is echoed), records each message with its direction and sends
  one text message back for every message it receives.

Framing is wsproto's (a dependency of mitmproxy).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode
from wsproto.utilities import generate_accept_token

from tests.support.sink import HttpsServer, Received

BROWSER = Path(__file__).resolve().parent / "browser"


@dataclass
class WsMessage:
    host: str
    path: str
    from_client: bool
    is_text: bool
    content: bytes


@dataclass
class WebSinkState:
    received: list[Received] = field(default_factory=list)
    ws: list[WsMessage] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    report: dict[str, object] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def page_html(title: str = "meeting") -> bytes:
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{title}</title></head><body><p>test client</p>"
        '<script src="/bundle.js"></script></body></html>'
    ).encode()


class WebSink(HttpsServer):
    def __init__(self, folder: Path, page_host: str) -> None:
        self.state = WebSinkState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.send_header("access-control-allow-origin", self.headers.get("origin") or "*")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> bytes:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                with state.lock:
                    state.received.append(Received(self.command, self.headers.get("host", ""), self.path, dict(self.headers.items()), body))
                return body

            def do_OPTIONS(self) -> None:
                self._record()
                self.send_response(204)
                self.send_header("access-control-allow-origin", self.headers.get("origin") or "*")
                self.send_header("access-control-allow-methods", "GET, POST, PUT, OPTIONS")
                self.send_header("access-control-allow-headers", self.headers.get("access-control-request-headers") or "*")
                self.send_header("access-control-max-age", "600")
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if (self.headers.get("upgrade") or "").lower() == "websocket":
                    self._websocket()
                    return
                self._record()
                host = (self.headers.get("host") or "").split(":")[0]
                path = self.path.split("?")[0]
                if host == page_host and path == "/bundle.js":
                    self._send(200, (BROWSER / "dist" / "bundle.js").read_bytes(), "application/javascript")
                elif host == page_host and path != "/favicon.ico":
                    self._send(200, page_html(), "text/html; charset=utf-8")
                else:
                    self._send(404, b'{"error":"not found"}', "application/json")

            def do_POST(self) -> None:
                body = self._record()
                host = (self.headers.get("host") or "").split(":")[0]
                if host == page_host and self.path == "/done":
                    with state.lock:
                        state.report.update(json.loads(body))
                    state.done.set()
                # what Amplitude's HTTP V2 API answers; other SDKs only look at the status
                out = json.dumps({"code": 200, "events_ingested": 1, "payload_size_bytes": len(body), "server_upload_time": 0}).encode()
                self._send(200, out, "application/json")

            do_PUT = do_POST

            def _websocket(self) -> None:
                self._record()
                key = self.headers.get("sec-websocket-key", "")
                accept = generate_accept_token(key.encode()).decode()  # (RFC 6455, by wsproto, which mitmproxy uses)
                self.send_response(101)
                self.send_header("upgrade", "websocket")
                self.send_header("connection", "Upgrade")
                self.send_header("sec-websocket-accept", accept)
                offered = [p.strip() for p in (self.headers.get("sec-websocket-protocol") or "").split(",") if p.strip()]
                if offered:
                    self.send_header("sec-websocket-protocol", offered[0])
                self.end_headers()
                self.close_connection = True
                host = (self.headers.get("host") or "").split(":")[0]
                proto = FrameProtocol(client=False, extensions=[])
                parts: list[bytes] = []
                text = False
                while True:
                    data = self.rfile.read1(65536)
                    if not data:
                        return
                    proto.receive_bytes(data)
                    for frame in proto.received_frames():
                        if frame.opcode is Opcode.PING:
                            self.wfile.write(proto.pong(bytes(frame.payload) if isinstance(frame.payload, (bytes, bytearray)) else b""))
                        elif frame.opcode is Opcode.CLOSE:
                            code = frame.payload[0] if isinstance(frame.payload, tuple) else CloseReason.NORMAL_CLOSURE
                            self.wfile.write(proto.close(code))
                            return
                        elif frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                            if frame.opcode is not Opcode.CONTINUATION:
                                text = frame.opcode is Opcode.TEXT
                            p = frame.payload
                            parts.append(p.encode() if isinstance(p, str) else bytes(p) if isinstance(p, (bytes, bytearray)) else b"")
                            if frame.message_finished:
                                content = b"".join(parts)
                                parts = []
                                reply = json.dumps({"ack": len(content)}).encode()
                                with state.lock:
                                    state.ws.append(WsMessage(host, self.path, True, text, content))
                                    state.ws.append(WsMessage(host, self.path, False, True, reply))
                                self.wfile.write(proto.send_data(reply.decode()))

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(folder, Handler)

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    @property
    def ws(self) -> list[WsMessage]:
        with self.state.lock:
            return list(self.state.ws)
