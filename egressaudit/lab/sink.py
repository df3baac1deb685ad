"""The lab's one HTTPS server (port 443, any name): the conference page, the telemetry sinks and the upload endpoint.

Run inside the cloud namespace by :class:`egressaudit.lab.world.World` as ``python -m egressaudit.lab.sink``.  The
same listener serves every name the lab's DNS answers (the certificate names them all; SNI only picks nothing):

* ``GET`` of anything else than the endpoints below: a file of the page folder (``meet.lab.test``);
* ``POST /api/<project>/envelope/``: a Sentry envelope (errors, sessions), answered ``{"id": ...}``;
* ``POST /2/httpapi`` or ``/batch``: an Amplitude batch, answered as Amplitude does (``{"code": 200, ...}``);
* a WebSocket upgrade (any path, e.g. ``wss://telemetry.lab.test/rtcstats``): rtcstats' getStats stream, each
  message counted;
* ``POST /upload``: a multipart file upload (``upload.lab.test``);
* ``POST /lab/state``: a page's own report of its state (for checks without a debugger).

Every request is written as one JSON line to ``--records`` when it has been read entirely (host, method, path with
the query's values left out (the page's URL carries the planted identifiers, and this file goes into the session),
kind, body bytes, for WebSockets the messages and their bytes at close; for the page's state the JSON itself), so
that checks read what really arrived.  CORS is allowed from any origin.  Nothing here opens a connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import mimetypes
import re
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage

MAX_BODY = 64 * 1024 * 1024
MAX_HEAD = 64 * 1024


def redact_query(target: str) -> str:
    """``target`` with each query value replaced by an ellipsis (``/?room=…&email=…``), keys kept."""
    bare, sep, query = target.partition("?")
    if not sep:
        return bare
    return bare + "?" + "&".join(f"{k.partition('=')[0]}=…" if "=" in k else k for k in query.split("&"))


def kind_of(method: str, path: str) -> str:
    """What a request is, by its method and path (the record's ``kind``)."""
    bare = path.split("?", 1)[0]
    if method == "POST":
        if re.fullmatch(r"/api/\d+/(envelope|store)/?", bare):
            return "sentry"
        if bare in ("/2/httpapi", "/batch"):
            return "amplitude"
        if bare == "/upload":
            return "upload"
        if bare == "/lab/state":
            return "state"
        return "post"
    if method == "OPTIONS":
        return "preflight"
    return "page"


class Sink:
    def __init__(self, root: Path, records: Path) -> None:
        self.root = root.resolve()
        self.out = records.open("a", encoding="utf-8", buffering=1)

    def record(self, **fields: Any) -> None:
        if isinstance(fields.get("path"), str):
            fields["path"] = redact_query(fields["path"])
        self.out.write(json.dumps({"t": round(time.time(), 3), **fields}, separators=(",", ":")) + "\n")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        sni = getattr(sslobj, "lab_sni", None) if sslobj is not None else None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _ = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                host = headers.get("host", sni or "").split(":")[0]
                if headers.get("upgrade", "").lower() == "websocket":
                    await self.websocket(head, host, target, reader, writer)
                    return
                length = int(headers.get("content-length") or 0)
                if length > MAX_BODY:
                    return
                body = await reader.readexactly(length) if length else b""
                await self.respond(method, target, host, headers, body, writer)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def respond(self, method: str, target: str, host: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> None:
        kind = kind_of(method, target)
        fields: dict[str, Any] = {"host": host, "method": method, "path": target, "kind": kind, "body_bytes": len(body)}
        if headers.get("content-encoding", "").lower() == "gzip":  # (Amplitude's SDK compresses what it sends to amplitude.com)
            fields["encoding"] = "gzip"
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, ValueError):
                fields["bad_gzip"] = True
        code, ctype, payload = 200, "application/json", b"{}"
        if kind == "sentry":
            payload = json.dumps({"id": uuid.uuid4().hex}).encode()
            fields["items"] = [json.loads(ln).get("type") for ln in body.split(b"\n")[1:] if ln.startswith(b'{"type"')]
        elif kind == "amplitude":
            try:
                fields["events"] = len(json.loads(body).get("events", []))
            except (ValueError, AttributeError):
                fields["events"] = 0
            answer = {"code": 200, "events_ingested": fields["events"], "payload_size_bytes": len(body)}
            answer["server_upload_time"] = int(time.time() * 1000)
            payload = json.dumps(answer).encode()
        elif kind == "upload":
            m = re.search(rb'filename="([^"]*)"', body[:4096])
            fields["filename"] = m.group(1).decode("utf-8", "replace") if m else None
            payload = json.dumps({"ok": True, "bytes": len(body)}).encode()
        elif kind == "state":
            try:
                fields["state"] = json.loads(body)
            except ValueError:
                fields["state"] = None
        elif kind == "page":
            code, ctype, payload = self.file(target)
            fields["status"] = code
        elif kind == "preflight":
            code, payload = 204, b""
        self.record(**fields)
        origin = headers.get("origin") or "*"
        out = [
            f"HTTP/1.1 {code} {'OK' if code < 300 else 'Not Found'}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(payload)}",
            "Cache-Control: no-store",
            f"Access-Control-Allow-Origin: {origin}",
            "Access-Control-Allow-Credentials: true",
            "Access-Control-Allow-Methods: GET, POST, OPTIONS",
            "Access-Control-Allow-Headers: " + (headers.get("access-control-request-headers") or "content-type"),
            "Access-Control-Max-Age: 600",
            "Vary: Origin",
        ]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    def file(self, target: str) -> tuple[int, str, bytes]:
        rel = target.split("?", 1)[0].lstrip("/") or "index.html"
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return 404, "text/plain", b"not found\n"
        return 200, mimetypes.guess_type(path.name)[0] or "application/octet-stream", path.read_bytes()

    async def websocket(self, head: bytes, host: str, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(head)
        messages = total = 0
        opened = time.time()
        try:
            while True:
                for event in ws.events():
                    if isinstance(event, Request):
                        writer.write(ws.send(AcceptConnection(subprotocol=event.subprotocols[0] if event.subprotocols else None)))
                    elif isinstance(event, (TextMessage, BytesMessage)):
                        total += len(event.data.encode() if isinstance(event.data, str) else event.data)
                        if event.message_finished:
                            messages += 1
                    elif isinstance(event, Ping):
                        writer.write(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        writer.write(ws.send(event.response()))
                        await writer.drain()
                        return
                await writer.drain()
                data = await reader.read(65536)
                if not data:
                    return
                ws.receive_data(data)
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            seconds = round(time.time() - opened, 3)
            self.record(host=host, method="GET", path=target, kind="websocket", messages=messages, body_bytes=total, seconds=seconds)


async def main_async(args: argparse.Namespace) -> None:
    sink = Sink(args.root, args.records)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    server = await asyncio.start_server(sink.serve, args.bind, args.port, ssl=ctx, limit=MAX_HEAD)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--cert", required=True, type=Path)
    ap.add_argument("--key", required=True, type=Path)
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--records", required=True, type=Path)
    args = ap.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
