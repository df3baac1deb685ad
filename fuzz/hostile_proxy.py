"""Hostile requests through a real ``egressaudit proxy``: every one the upstream answered must end as a row, with no traceback.

One ``egressaudit proxy`` (mitmdump, the addon, its recorder process) runs for the whole run, with the tests'
redirect addon as a guard (any upstream connection to anything but loopback is refused).  Clients written here
talk to it on 127.0.0.1 the way hostile clients would, through CONNECT and TLS with the proxy's CA, to a local
HTTPS upstream (also here) that answers every request, tags its answers (``x-sink: 1``) and sends hostile
answers when asked:

- HTTP/1.1 over raw sockets: bytes that are not UTF-8 in the path, the query, the method and in every header
  (names and values, ``Content-Type: application/\\xffjson`` among them), huge header values and hundreds of
  headers, bodies of every decoder's hostile shapes (gzip/deflate/br/zstd bombs, chains of encodings in the
  wrong order or naming unknown ones, JSON nested 100,000 deep, 100,000-part multipart bodies, forms with
  100,000 keys, NDJSON with broken lines, lying Sentry envelopes, random bytes called JSON or protobuf, bodies
  above the streaming threshold), bodies cut short (a Content-Length that lies, a chunked body without its last
  chunk) and chunked bodies with broken chunk sizes;
- hostile answers: bombs and broken encodings, a non-UTF-8 Content-Type, huge headers, a body above the
  streaming threshold, chunked and close-delimited bodies;
- HTTP/2 (the ``h2`` library with its own header checks off): several streams per connection with the same
  hostile headers and bodies, with and without ``content-length``;
- WebSocket: upgrades followed by text (deep JSON, telemetry-shaped, invalid UTF-8), binary and fragmented
  messages, some of several MiB.

At the end the proxy gets SIGTERM.  The summary counts requests and how they were answered (by the upstream,
by the proxy itself with an error, not at all), rows recorded for them (matched by the request's id in its path),
WebSocket messages sent and recorded, the proxy's exit code, whether session.json was written (with its
``http.recording``), and the tracebacks on the proxy's stderr by cause.  Requests the upstream answered without
a row are listed as reproducers (case number and what it sent).

    python fuzz/hostile_proxy.py --cases 1200 --seed 0 --work /tmp/hostile-proxy   # prints the summary as JSON

Deterministic for a given seed: case ``i`` is made from ``Random(seed * 1_000_003 + i)`` (cases run on a few
client threads at once, so their order on the wire varies).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from wsproto.utilities import generate_accept_token

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # (run as a script or loaded from its path: the fuzz folder is then not a package)
    sys.path.insert(0, str(ROOT))
from fuzz.outcome import traceback_causes  # noqa: E402

CLIENTS = 4
TIMEOUT_S = 30.0
CUT_WAIT_S = 3.0
"""How long a client that sent a request cut short waits for an answer before it hangs up (which the proxy sees)."""
STREAM_ABOVE = 4 << 20  # the addon's default (egressaudit_stream_large_bodies=4m)


# -- hostile pieces --------------------------------------------------------------------------------------------
@cache
def bombs() -> dict[str, bytes]:
    """Encoded bodies that decode to 256 MiB of zeros, one per content encoding."""
    import brotli
    import zstandard

    zeros = bytes(256 << 20)
    return {
        "gzip": gzip.compress(zeros, 9),
        "deflate": zlib.compress(zeros, 9),
        "br": brotli.compress(zeros, quality=5),
        "zstd": zstandard.ZstdCompressor(level=3).compress(zeros),
    }


def _enc(name: str, data: bytes) -> bytes:
    import brotli
    import zstandard

    if name == "gzip":
        return gzip.compress(data)
    if name == "deflate":
        return zlib.compress(data)
    if name == "br":
        return bytes(brotli.compress(data))
    if name == "zstd":
        return bytes(zstandard.ZstdCompressor().compress(data))
    return data


HOSTILE_TEXT = [
    b"\xff", b"\xfe\xff", b"\x80\x81", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"caf\xe9", b"\x00", b"\x1b[31m",
    "\u202e".encode(), "\U0001f600".encode(), b"%ff%fe", b"%00", b"\\xff", b"\r", b"\t\t",
]  # fmt: skip
CTYPES = [
    b"application/json", b"application/\xffjson", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=b",
    b"multipart/form-data; boundary=\xff\xfe", b"multipart/form-data", b"application/x-ndjson", b"application/x-protobuf",
    b"application/x-sentry-envelope", b"text/plain; charset=\xff", b"application/json; charset=utf-16", b"\xff/\xff", b"", b";;;",
]  # fmt: skip
ENCODINGS = [
    b"gzip",
    b"deflate",
    b"br",
    b"zstd",
    b"gzip, br",
    b"br, gzip",
    b"gzip, gzip, gzip",
    b"identity",
    b"x-unknown",
    b"gz\xffip",
    b"zstd, deflate",
]


def hostile_bytes(rng: random.Random, n: int = 3) -> bytes:
    return b"".join(rng.choice(HOSTILE_TEXT) + rng.choice([b"a", b"=", b"/", b"-", b" ", b""]) for _ in range(rng.randint(1, n)))


def body_for(rng: random.Random) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    """(what, body, headers it needs) of one hostile body shape."""
    kind = rng.choice(
        ["bomb", "chain", "bad_chain", "deep_json", "multipart_100k", "multipart_bad", "form_100k", "ndjson", "sentry", "random_json",
         "protobuf", "large", "large_gz_claim", "telemetry", "empty"]
    )  # fmt: skip
    if kind == "bomb":
        enc = rng.choice(list(bombs()))
        return f"bomb:{enc}", bombs()[enc], [(b"content-type", b"application/json"), (b"content-encoding", enc.encode())]
    if kind == "chain":
        data = json.dumps({"events": [{"device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "n": i} for i in range(50)]}).encode()
        names = rng.sample(["gzip", "deflate", "br", "zstd"], rng.randint(2, 4))
        for name in names:
            data = _enc(name, data)
        return f"chain:{'+'.join(names)}", data, [(b"content-type", b"application/json"), (b"content-encoding", ", ".join(names).encode())]
    if kind == "bad_chain":
        data = _enc(rng.choice(["gzip", "br"]), b'{"a": 1}')
        return "bad_chain", data[: rng.randint(1, len(data))], [(b"content-type", b"application/json"), (b"content-encoding", rng.choice(ENCODINGS))]
    if kind == "deep_json":
        depth = rng.choice([1000, 10_000, 100_000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return f"deep_json:{depth}", opener * depth + b"1" + closer * depth, [(b"content-type", b"application/json")]
    if kind == "multipart_100k":
        n = rng.choice([60_000, 100_000])
        body = b"".join(b'--b\r\nContent-Disposition: form-data; name="k%d"\r\n\r\nv\r\n' % i for i in range(n)) + b"--b--\r\n"
        return f"multipart:{n}", body, [(b"content-type", b"multipart/form-data; boundary=b")]
    if kind == "multipart_bad":
        body = b'--b\r\nContent-Disposition: form-data; name="\xff"; filename="\xfe.pdf"\r\n\r\n' + rng.randbytes(rng.randint(0, 5000))
        return "multipart_bad", body, [(b"content-type", rng.choice([b"multipart/form-data; boundary=b", b"multipart/form-data; boundary="]))]
    if kind == "form_100k":
        return (
            "form:100k",
            b"&".join(b"k%d=%s" % (i, hostile_bytes(rng, 1)) for i in range(100_000)),
            [(b"content-type", b"application/x-www-form-urlencoded")],
        )
    if kind == "ndjson":
        lines = [json.dumps({"n": i}).encode() for i in range(200)] + [b"{broken", hostile_bytes(rng), b"[" * 5000]
        rng.shuffle(lines)
        return "ndjson", b"\n".join(lines), [(b"content-type", b"application/x-ndjson")]
    if kind == "sentry":
        body = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\n{"type":"event","length":999999}\n{"message":"x"}\n' + hostile_bytes(rng)
        return "sentry", body, [(b"content-type", b"application/x-sentry-envelope")]
    if kind == "random_json":
        return "random_json", rng.randbytes(rng.randint(1, 20000)), [(b"content-type", rng.choice(CTYPES))]
    if kind == "protobuf":
        return "protobuf", bytes([0x0A, 0xFF, 0xFF, 0xFF, 0x0F]) + rng.randbytes(rng.randint(0, 3000)), [(b"content-type", b"application/x-protobuf")]
    if kind == "large":
        n = rng.randint(STREAM_ABOVE + 1, 3 * STREAM_ABOVE)
        return f"large:{n}", rng.randbytes(n), [(b"content-type", b"application/octet-stream")]
    if kind == "large_gz_claim":
        n = rng.randint(STREAM_ABOVE + 1, 2 * STREAM_ABOVE)
        return f"large_gz_claim:{n}", rng.randbytes(n), [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    if kind == "telemetry":
        body = json.dumps({"events": [{"event": "qos", "email": "eve@example.org", "jitter_ms": i % 7} for i in range(rng.randint(1, 300))]}).encode()
        return "telemetry", body, [(b"content-type", b"application/json")]
    return "empty", b"", []


RESPONSES = ["plain", "plain", "plain", "gzip_bomb", "br_bomb", "bad_gzip", "hostile_ctype", "huge_header", "big", "chunked", "close"]


# -- the upstream ------------------------------------------------------------------------------------------------
def sink_handler(ws_received: Counter[str]) -> type[BaseHTTPRequestHandler]:
    """The upstream's handler; ``ws_received`` counts the WebSocket messages it got, by request id."""
    from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def end_headers(self) -> None:
            self.send_header("x-sink", "1")
            super().end_headers()

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                out = bytearray()
                while True:
                    line = self.rfile.readline(65537)
                    try:
                        size = int(line.split(b";")[0].strip() or b"x", 16)
                    except ValueError:
                        self.close_connection = True
                        return bytes(out)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline(65537)
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n > 0 else b""

        def _any(self) -> None:
            if (self.headers.get("upgrade") or "").lower() == "websocket":
                self._websocket(FrameProtocol, Opcode, CloseReason)
                return
            self._body()
            kind = self.headers.get("x-fuzz-response") or "plain"
            body = b'{"ok": true}'
            headers: list[tuple[str, str]] = [("content-type", "application/json")]
            if kind == "gzip_bomb":
                body, headers = bombs()["gzip"], [("content-type", "application/json"), ("content-encoding", "gzip")]
            elif kind == "br_bomb":
                body, headers = bombs()["br"], [("content-type", "text/html"), ("content-encoding", "br")]
            elif kind == "bad_gzip":
                body, headers = b"\x1f\x8b\x08\x00broken", [("content-type", "application/json"), ("content-encoding", "gzip")]
            elif kind == "hostile_ctype":
                headers = [("content-type", "application/\udcffjson".encode("utf-8", "surrogateescape").decode("latin-1"))]
            elif kind == "huge_header":
                headers.append(("x-huge", "h" * 40_000))
            elif kind == "big":
                body = os.urandom(STREAM_ABOVE + 12345)
            self.send_response(200)
            for k, v in headers:
                self.send_header(k, v)
            if kind == "chunked":
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for part in (b'{"a":', b"1", b"}"):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            if kind == "close":
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any

        def _websocket(self, frame_protocol: Any, opcode: Any, close_reason: Any) -> None:
            key = self.headers.get("sec-websocket-key", "")
            accept = generate_accept_token(key.encode()).decode()  # (RFC 6455, by wsproto, which mitmproxy uses)
            self.send_response(101)
            self.send_header("upgrade", "websocket")
            self.send_header("connection", "Upgrade")
            self.send_header("sec-websocket-accept", accept)
            self.end_headers()
            self.close_connection = True
            proto = frame_protocol(client=False, extensions=[])
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    return
                proto.receive_bytes(data)
                try:
                    for frame in proto.received_frames():
                        if frame.opcode is opcode.CLOSE:
                            self.wfile.write(proto.close(close_reason.NORMAL_CLOSURE))
                            return
                        if frame.opcode in (opcode.TEXT, opcode.BINARY, opcode.CONTINUATION) and frame.message_finished:
                            m = re.match(r"/(c\d+r\d+)-", self.path)
                            with lock:
                                ws_received[m.group(1) if m else "?"] += 1
                            self.wfile.write(proto.send_data(json.dumps({"ack": 1})))
                except Exception:  # noqa: BLE001 - a broken frame: end the conversation
                    return

        def log_message(self, *args: object) -> None:
            pass

        def log_error(self, *args: object) -> None:
            pass

    return Handler


# -- clients -----------------------------------------------------------------------------------------------------
@dataclass
class Req:
    """One request of a case: its id (in its path), what it carried, how it was answered."""

    rid: str
    what: str
    answer: str = "none"  # "upstream" (x-sink), "proxy" (an answer without it), "none"
    status: int = 0
    ws_sent: int = 0


@dataclass
class Env:
    proxy_port: int
    sink_port: int
    ca: Path
    errors: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)


def tls(env: Env, alpn: str) -> ssl.SSLSocket:
    """A TLS connection to the upstream through the proxy's CONNECT."""
    s = socket.create_connection(("127.0.0.1", env.proxy_port), timeout=TIMEOUT_S)
    target = f"127.0.0.1:{env.sink_port}".encode()
    s.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("CONNECT refused")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode("latin-1"))
    ctx = ssl.create_default_context(cafile=str(env.ca))
    ctx.check_hostname = False
    ctx.set_alpn_protocols([alpn])
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")


def read_response(f: Any, head_only: bool = False) -> tuple[int, dict[bytes, bytes]]:
    """Status and headers of an HTTP/1.1 answer; its body read and thrown away."""
    line = f.readline(65537)
    if not line:
        return 0, {}
    status = int(line.split()[1])
    headers: dict[bytes, bytes] = {}
    while True:
        h = f.readline(1 << 20)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if head_only or status in (101, 204, 304):
        return status, headers
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        while True:
            size = int(f.readline(65537).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                f.readline(65537)
                break
            f.read(size)
            f.readline(65537)
    elif b"content-length" in headers:
        left = int(headers[b"content-length"])
        while left > 0:
            got = f.read(min(left, 1 << 20))
            if not got:
                break
            left -= len(got)
    else:
        while f.read(1 << 20):
            pass
    return status, headers


def client_h1(env: Env, r: Req, rng: random.Random) -> None:
    """One HTTP/1.1 request over raw bytes, hostile in its line, its headers or its body."""
    what, body, headers = body_for(rng)
    method = rng.choice([b"POST", b"POST", b"PUT", b"PATCH", b"GET"])
    path = b"/" + r.rid.encode() + b"-"
    shape = rng.choice(["headers", "path", "huge_headers", "many_headers", "body", "body", "cut_length", "cut_chunked", "bad_chunks", "chunked"])
    extra: list[tuple[bytes, bytes]] = [(b"host", f"127.0.0.1:{env.sink_port}".encode())]
    if shape == "path":
        path += hostile_bytes(rng) + b"?" + hostile_bytes(rng) + b"=" + hostile_bytes(rng) + b"&token=" + hostile_bytes(rng)
    if shape == "headers":
        for _ in range(rng.randint(1, 8)):
            name = rng.choice(
                [b"x-" + hostile_bytes(rng, 1).strip().replace(b":", b"") or b"x-a", b"user-agent", b"cookie", b"referer", b"x-device-id"]
            )
            extra.append((name, hostile_bytes(rng)))
        headers = [(b"content-type", rng.choice(CTYPES)), *([(b"content-encoding", rng.choice(ENCODINGS))] if rng.random() < 0.3 else [])]
    if shape == "huge_headers":
        extra.append((b"x-huge", b"v" * rng.choice([8_000, 60_000, 200_000])))
    if shape == "many_headers":
        extra += [(b"x-h%d" % i, hostile_bytes(rng, 1)) for i in range(rng.choice([100, 500, 2000]))]
    resp = rng.choice(RESPONSES)
    extra.append((b"x-fuzz-response", resp.encode()))
    r.what = f"h1 {method.decode()} {shape} body={what} response={resp}"
    chunked = shape in ("chunked", "cut_chunked", "bad_chunks")
    lines = [method + b" " + path + b" HTTP/1.1"] + [k + b": " + v for k, v in extra + headers]
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    elif method != b"GET" or body:
        declared = len(body) + (rng.randint(1, 5000) if shape == "cut_length" else 0)
        lines.append(b"content-length: %d" % declared)
    wire = b"\r\n".join(lines) + b"\r\n\r\n"
    with tls(env, "http/1.1") as s:
        s.sendall(wire)
        if chunked:
            step = max(1, len(body) // rng.randint(1, 5)) if body else 1
            for i in range(0, len(body), step):
                part = body[i : i + step]
                size = b"%x" % len(part) if shape != "bad_chunks" else rng.choice([b"zz", b"-1", b"%x" % (len(part) + 7), b"ffffffffffffffffff"])
                s.sendall(size + b"\r\n" + part + b"\r\n")
            if shape != "cut_chunked":
                s.sendall(b"0\r\n\r\n")
        else:
            s.sendall(body)
        if shape in ("cut_length", "cut_chunked", "bad_chunks"):
            s.settimeout(CUT_WAIT_S)  # the body ends short (or its framing lies): the proxy has no whole request to forward
        f = s.makefile("rb")
        try:
            status, hdrs = read_response(f)
        except TimeoutError:
            status, hdrs = 0, {}
        finally:
            f.close()
    r.status = status
    r.answer = "upstream" if hdrs.get(b"x-sink") == b"1" else ("proxy" if status else "none")


def client_h2(env: Env, reqs: list[Req], rng: random.Random) -> None:
    """Several HTTP/2 streams on one connection, hostile as in :func:`client_h1`."""
    import h2.config
    import h2.connection
    import h2.events

    cfg = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False, validate_inbound_headers=False
    )
    conn = h2.connection.H2Connection(cfg)
    with tls(env, "h2") as s:
        if s.selected_alpn_protocol() != "h2":
            for r in reqs:
                r.what = "h2 (not negotiated)"
            return
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        streams: dict[int, Req] = {}
        for r in reqs:
            what, body, headers = body_for(rng)
            if len(body) > (1 << 20):  # (flow control below keeps up to this)
                body = body[: 1 << 20]
            path = b"/" + r.rid.encode() + b"-" + (hostile_bytes(rng) if rng.random() < 0.4 else b"")
            hdrs = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", f"127.0.0.1:{env.sink_port}".encode()), (b":path", path)]
            hdrs += headers
            if rng.random() < 0.5:
                hdrs.append((b"x-" + hostile_bytes(rng, 1).strip().lower().replace(b":", b""), hostile_bytes(rng)))
            if rng.random() < 0.5:
                hdrs.append((b"content-length", str(len(body)).encode()))
            resp = rng.choice(RESPONSES[:8])
            hdrs.append((b"x-fuzz-response", resp.encode()))
            r.what = f"h2 body={what} response={resp}"
            sid = conn.get_next_available_stream_id()
            streams[sid] = r
            try:
                conn.send_headers(sid, hdrs, end_stream=not body)
                s.sendall(conn.data_to_send())
                view = memoryview(body)
                while view:
                    window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if window <= 0:
                        _h2_events(s, conn, streams)
                        continue
                    conn.send_data(sid, bytes(view[:window]), end_stream=len(view) <= window)
                    view = view[window:]
                    s.sendall(conn.data_to_send())
            except Exception as e:  # noqa: BLE001 - the proxy reset the stream or the connection
                env.errors[f"h2 send: {type(e).__name__}"] += 1
        deadline = time.monotonic() + TIMEOUT_S
        while any(r.answer == "none" and not getattr(r, "_ended", False) for r in streams.values()) and time.monotonic() < deadline:
            if not _h2_events(s, conn, streams):
                break


def _h2_events(s: ssl.SSLSocket, conn: Any, streams: dict[int, Req]) -> bool:
    import h2.events

    data = s.recv(65536)
    if not data:
        return False
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived):
            r = streams.get(ev.stream_id)
            if r is not None:
                hdrs = dict(ev.headers)
                r.status = int(hdrs.get(b":status", b"0"))
                r.answer = "upstream" if hdrs.get(b"x-sink") == b"1" else "proxy"
        elif isinstance(ev, h2.events.DataReceived):
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
            r = streams.get(ev.stream_id)
            if r is not None:
                r._ended = True  # type: ignore[attr-defined]
        elif isinstance(ev, h2.events.ConnectionTerminated):
            return False
    s.sendall(conn.data_to_send())
    return True


def client_ws(env: Env, r: Req, rng: random.Random) -> None:
    """An upgrade, then messages of every shape, then a close."""
    from wsproto.frame_protocol import CloseReason, FrameProtocol

    key = base64.b64encode(rng.randbytes(16))
    path = b"/" + r.rid.encode() + b"-ws" + (hostile_bytes(rng) if rng.random() < 0.3 else b"")
    head = (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(env.sink_port).encode() + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    kinds: list[str] = []
    with tls(env, "http/1.1") as s:
        s.sendall(head)
        f = s.makefile("rb")
        try:
            status, hdrs = read_response(f, head_only=True)
            r.status = status
            r.answer = "upstream" if hdrs.get(b"x-sink") == b"1" else ("proxy" if status else "none")
            if status != 101:
                return
            proto = FrameProtocol(client=True, extensions=[])
            for _ in range(rng.randint(1, 6)):
                kind = rng.choice(["json", "deep", "binary", "fragmented", "big", "bad_utf8"])
                kinds.append(kind)
                if kind == "json":
                    s.sendall(
                        proto.send_data(json.dumps({"type": "getstats", "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "n": rng.random()}))
                    )
                elif kind == "deep":
                    s.sendall(proto.send_data("[" * 50_000 + "]" * 50_000))
                elif kind == "binary":
                    s.sendall(proto.send_data(rng.randbytes(rng.randint(1, 70_000))))
                elif kind == "fragmented":
                    s.sendall(proto.send_data('{"part": ', fin=False) + proto.send_data('"two"}', fin=True))
                elif kind == "big":
                    s.sendall(proto.send_data(rng.randbytes(rng.randint(1 << 20, 6 << 20))))
                else:  # a text frame whose payload is not UTF-8 (the proxy must refuse it, and end the conversation)
                    payload = b'{"x": "\xff\xfe"}'
                    s.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload)
                    r.ws_sent += 1
                    break
                r.ws_sent += 1
            s.sendall(proto.close(CloseReason.NORMAL_CLOSURE))
            s.settimeout(5)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
        finally:
            f.close()
            r.what = f"websocket messages={'+'.join(kinds)}"


# -- a run ---------------------------------------------------------------------------------------------------------
def run_case(env: Env, i: int, seed: int) -> list[Req]:
    """Case ``i``: an HTTP/1.1 request, one to four HTTP/2 streams, or a WebSocket conversation."""
    rng = random.Random(seed * 1_000_003 + i)
    kind = rng.choices(["h1", "h2", "ws"], weights=[70, 18, 12])[0]
    reqs = [Req(f"c{i}r{k}", kind) for k in range(rng.randint(1, 4) if kind == "h2" else 1)]
    try:
        if kind == "h1":
            client_h1(env, reqs[0], rng)
        elif kind == "h2":
            client_h2(env, reqs, rng)
        else:
            client_ws(env, reqs[0], rng)
    except (OSError, ConnectionError, ValueError, IndexError) as e:  # the proxy refused or cut the connection: counted, not a failure
        env.errors[f"{kind}: {type(e).__name__}"] += 1
        if len(env.details) < 20:
            env.details.append(f"case {i} ({reqs[0].what}): {type(e).__name__}: {str(e)[:200]}")
    return reqs


def _shape(what: str) -> str:
    """The client and request shape of a request's description (``h1 POST headers``, ``h2``, ``websocket``)."""
    words = what.split(" ")
    return " ".join(words[:3] if words[0] == "h1" else words[:1])


def run(work_dir: Path, cases: int, seed: int, clients: int = CLIENTS) -> dict[str, Any]:
    """``cases`` hostile cases (HTTP/1.1, HTTP/2, WebSocket) through one real ``egressaudit proxy``; a JSON-able summary."""
    import pyarrow.parquet as pq

    from egressaudit.session.store import read_rows
    from tests.support.proxy import REDIRECT, free_port, wait_listening
    from tests.support.sink import HttpsServer

    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bombs()  # (built before the clock of the first case)
    run_dir = Path(tempfile.mkdtemp(dir=work_dir, prefix="run-"))
    ws_received: Counter[str] = Counter()
    sink = HttpsServer(run_dir, sink_handler(ws_received))
    sink.server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # (clients that hang up: not ours to report)
    port, out, conf = free_port(), run_dir / "audit", run_dir / "ca"
    cmd = [sys.executable, "-m", "egressaudit", "proxy", "--out", str(out), "--port", str(port), "--confdir", str(conf)]
    cmd += ["--", "-s", str(REDIRECT), "--set", f"sink=127.0.0.1:{sink.port}", "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true"]
    errfile = run_dir / "proxy.err"
    env_vars = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env = Env(port, sink.port, conf / "mitmproxy-ca-cert.pem")
    results: list[Req] = []
    code: int | None = None
    with open(errfile, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env_vars, start_new_session=True)
    try:
        wait_listening("127.0.0.1", port, proc, lambda: errfile.read_text()[-3000:], timeout=60)
        with ThreadPoolExecutor(clients) as pool:
            results = [r for rs in pool.map(lambda i: run_case(env, i, seed), range(cases)) for r in rs]
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(900)
        except subprocess.TimeoutExpired:
            env.errors["proxy did not exit within 900 s of SIGTERM"] += 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        sink.close()
    stderr = errfile.read_text(errors="replace")
    try:
        rows = read_rows(out, "http").to_pylist()
    except Exception as e:  # noqa: BLE001 - said in the summary
        rows, stderr = [], stderr + f"\n(reading the session: {type(e).__name__}: {e})"
    session = out / "session.json"
    try:
        recording = json.loads(session.read_text())["http"].get("recording")
    except (OSError, ValueError, KeyError):
        recording = None
    by_id: Counter[str] = Counter()
    ws_rows: Counter[str] = Counter()
    for row in rows:
        m = re.match(r"/(c\d+r\d+)-", row.get("path") or "")
        if m and row["kind"] != "websocket":
            by_id[m.group(1)] += 1
        elif m and row["direction"] == "out":
            ws_rows[m.group(1)] += 1
    answers = Counter(r.answer for r in results)
    missing = [r for r in results if r.answer == "upstream" and not by_id[r.rid]]
    proxy_answers_with_row = sum(1 for r in results if r.answer == "proxy" and by_id[r.rid])
    ws_sent = sum(r.ws_sent for r in results)
    ws_forwarded = sum(ws_received.values())
    ws_missing = [r for r in results if ws_rows[r.rid] < ws_received[r.rid]]
    causes = traceback_causes(stderr)
    with_pq = (out / "http.parquet").exists() and pq.read_metadata(out / "http.parquet").num_rows == len(rows)
    summary = {
        "target": "hostile_proxy",
        "inputs": len(results),
        "cases": cases,
        "seed": seed,
        "exit_codes": {str(code): 1},
        "tracebacks": sum(causes.values()),
        "causes": dict(causes.most_common()),
        "seconds": round(time.perf_counter() - t0, 1),
        "requests": len(results),
        "requests_by_client": dict(Counter(r.rid and r.what.split(" ")[0] for r in results)),
        "answered": {"by_upstream": answers["upstream"], "by_proxy": answers["proxy"], "not_answered": answers["none"]},
        "rows": len(rows),
        "answered_by_upstream_with_row": answers["upstream"] - len(missing),
        "answered_by_upstream_without_row": len(missing),
        "answered_by_proxy_with_row": proxy_answers_with_row,
        "proxy_answer_statuses": dict(sorted(Counter(str(r.status) for r in results if r.answer == "proxy").items())),
        "proxy_answers_without_row_by_shape": dict(
            Counter(_shape(r.what) for r in results if r.answer == "proxy" and not by_id[r.rid]).most_common()
        ),
        "websocket_messages": {
            "sent": ws_sent,
            "received_by_upstream": ws_forwarded,
            "recorded_of_those": ws_forwarded - sum(ws_received[r.rid] - ws_rows[r.rid] for r in ws_missing),
        },
        "proxy_exit_code": code,
        "session_json_written": session.exists(),
        "compacted": with_pq,
        "recording": recording,
        "proxy_stderr_lines": [ln for ln in stderr.splitlines() if ln.startswith("egressaudit:")][:20],
        "client_errors": dict(env.errors.most_common()),
        "client_error_examples": env.details,
        "reproducers": [f"case {r.rid}: {r.what} (status {r.status})" for r in missing[:50]]
        + [f"case {r.rid}: {r.what}: {ws_received[r.rid]} messages forwarded, {ws_rows[r.rid]} recorded" for r in ws_missing[:50]],
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None, runner: Callable[..., dict[str, Any]] = run) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--clients", type=int, default=CLIENTS, help="client threads sending cases at once")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="hostile-proxy-"))
    print(json.dumps(runner(work, a.cases, a.seed, a.clients), indent=2))


if __name__ == "__main__":
    main()
