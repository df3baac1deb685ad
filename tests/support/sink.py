"""A local HTTPS sink for telemetry: records every request exactly as it arrived.

``python -m tests.support.sink FOLDER [HOST PORT]`` runs one on its own (e.g.
inside a network namespace; 127.0.0.1 and a free port by default): it prints its port, serves until its stdin closes, then
prints what it received as JSON, one object per request with the body's length.
"""

from __future__ import annotations

import datetime
import json
import ssl
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    method: str
    host: str
    path: str
    headers: dict[str, str]
    body: bytes


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    c, k = folder / "sink-cert.pem", folder / "sink-key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return c, k


class HttpsServer:
    """A threaded HTTPS server on 127.0.0.1 (any free port) with a fresh self-signed certificate, serving in a thread."""

    def __init__(self, folder: Path, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        cert, key = self_signed(folder)
        self.cert = cert
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Sink(HttpsServer):
    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.received: list[Received] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                with lock:
                    received.append(Received(self.command, self.headers.get("host", ""), self.path, dict(self.headers.items()), body))
                out = json.dumps({"ok": True, "received": len(body)}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(folder, Handler, host, port)


def main() -> int:
    host, port = (sys.argv[2], int(sys.argv[3])) if len(sys.argv) > 3 else ("127.0.0.1", 0)
    sink = Sink(Path(sys.argv[1]), host, port)
    print(sink.port, flush=True)
    sys.stdin.read()  # until the caller closes our stdin
    sink.close()
    for r in sink.received:
        print(json.dumps({"method": r.method, "host": r.host, "path": r.path, "body_bytes": len(r.body)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
