"""From mitmproxy flows to rows of ``http.parquet`` and ``fields.parquet``.

One :class:`Recorder` per session folder.  The mitmproxy addon feeds it live
flows; ``egressaudit analyze`` feeds it flows read from saved mitmproxy files
and HAR files (mitmproxy's own reader handles both), so both paths produce the
same rows.  Privacy defaults: query values are redacted, field values are only
stored as salted hashes (the salt lives in ``OUT/.salt``, mode 0600, never in
the tables), and no body is stored unless ``keep_bodies`` is set (then the
flows, bodies included, go to ``OUT/flows.mitm``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from mitmproxy import exceptions, http, io
from mitmproxy.net.http.http1 import assemble

from egressaudit.classify.engine import assign_party, first_party_vendors
from egressaudit.classify.http import ExchangeFacts, classify_exchange, looks_like_events
from egressaudit.http import bodies
from egressaudit.http import inventory as inv
from egressaudit.http.store import TableAppender, compact, read_rows
from egressaudit.signatures import SignatureDB
from egressaudit.taxonomy import Category, Party, data_class_of

NAME_KEYS = frozenset(("display_name", "displayname", "user_name", "username", "name", "screen_name", "full_name", "fullname", "nickname"))


class FlowFileError(Exception):
    """A saved flow or HAR file cannot be read; one line for the user."""


def redact_query(path: str, keep: bool = False) -> str:
    """``/a?x=1&y=2`` -> ``/a?x=…&y=…`` (keys stay: they say what kind of value was sent)."""
    if keep or "?" not in path:
        return path
    base, _, query = path.partition("?")
    keys = [quote(k, safe="") for k, _ in parse_qsl(query, keep_blank_values=True)]
    return base + "?" + "&".join(f"{k}=…" for k in keys) if keys else base + "?…"


def _mime(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def load_salt(out: Path) -> bytes:
    """The per-session salt: created once (0600), reused when the session is appended to."""
    path = out / ".salt"
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    salt = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(salt)
    return salt


@dataclass
class RecorderOptions:
    session_id: str
    client: str | None = None
    keep_values: bool = False
    keep_query: bool = False
    keep_bodies: bool = False
    flush_interval: float = 1.0
    body_limit: int = 64 << 20


@dataclass
class RecorderStats:
    exchanges: int = 0
    websocket_messages: int = 0
    fields: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class Recorder:
    def __init__(self, out: Path, db: SignatureDB, opts: RecorderOptions) -> None:
        self.out = out
        self.db = db
        self.opts = opts
        out.mkdir(parents=True, exist_ok=True)
        self.salt = load_salt(out)
        self.http = TableAppender(out, "http", opts.flush_interval)
        self.fields = TableAppender(out, "fields", opts.flush_interval)
        self.stats = RecorderStats()
        self.seen_names: set[str] = set()
        self.first = first_party_vendors(opts.client, db)
        self._lock = threading.Lock()
        self._writer: io.FlowWriter | None = None
        self._mitm_file: Any = None
        if opts.keep_bodies:
            self._mitm_file = open(out / "flows.mitm", "ab")  # noqa: SIM115 - closed in close()
            os.chmod(out / "flows.mitm", 0o600)
            self._writer = io.FlowWriter(self._mitm_file)

    # -- input -----------------------------------------------------------------
    def add_flow(self, flow: http.HTTPFlow) -> None:
        """An HTTP exchange (and the WebSocket messages it carried, when it has ended)."""
        rows, fields = self._exchange_rows(flow)
        if flow.websocket is not None:
            for i, msg in enumerate(flow.websocket.messages):
                r, f = self._ws_rows(flow, msg, i)
                rows.append(r)
                fields += f
        self._emit(rows, fields)
        if self._writer is not None:
            with self._lock:
                self._writer.add(flow)
                self._mitm_file.flush()

    def add_websocket_message(self, flow: http.HTTPFlow, index: int, number: int | None = None) -> None:
        """Message ``index`` of the flow's list; ``number`` is its position in the whole conversation (default: index)."""
        assert flow.websocket is not None
        r, f = self._ws_rows(flow, flow.websocket.messages[index], index if number is None else number)
        self._emit([r], f)

    def add_handshake(self, flow: http.HTTPFlow) -> None:
        """The WebSocket upgrade exchange alone (its messages are added one by one)."""
        rows, fields = self._exchange_rows(flow)
        self._emit(rows, fields)

    def _emit(self, rows: list[dict[str, Any]], fields: list[dict[str, Any]]) -> None:
        with self._lock:
            self.stats.fields += len(fields)
            for r in rows:
                if r["kind"] == "websocket":
                    self.stats.websocket_messages += 1
                else:
                    self.stats.exchanges += 1
        if fields:
            self.fields.append(fields)
        self.http.append(rows)

    def flush(self) -> None:
        self.http.flush()
        self.fields.flush()

    # -- rows ------------------------------------------------------------------
    def _body(self, raw: bytes | None, encoding: str | None, content_type: str | None, host: str | None) -> tuple[str, int | None, Any, Any]:
        """(format, decoded size, parsed body, decoded bytes)"""
        if not raw:
            return "empty", 0, None, b""
        decoded, err = bodies.decode_content(raw, encoding, self.opts.body_limit)
        if decoded is None:
            self.stats.skipped[(err or "error:decode").removeprefix("error:")] += 1
            return err or "error:decode", None, None, None
        parsed = bodies.parse_body(decoded, content_type, host)
        if parsed.format.startswith("error:"):
            self.stats.skipped[parsed.format.removeprefix("error:")] += 1
        return parsed.format, len(decoded), parsed, decoded

    def _hash(self, data: bytes | None) -> str | None:
        if data is None:
            return None
        if self.opts.keep_values:
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha256(self.salt + data).hexdigest()

    def _verdict_row(self, facts: ExchangeFacts) -> dict[str, Any]:
        v = classify_exchange(facts, self.db)
        party = (
            assign_party(v, self.first)
            if self.first
            else (Party.third if v.vendor and self.db.vendor_kind(v.vendor) != "conferencing" else Party.unknown)
        )
        return {
            "vendor": v.vendor,
            "service": v.service,
            "party": party.value,
            "category": v.category.value,
            "data_class": data_class_of(v.category).value,
            "rule": v.rule,
            "evidence": v.evidence,
        }

    def _fields(self, exchange_id: str, host: str | None, row: dict[str, Any], tree: Any, query: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        trees: list[tuple[str, Any]] = []
        if tree is not None:
            trees.append(("", tree))
        if query:
            q: dict[str, Any] = {}
            for k, val in parse_qsl(query, keep_blank_values=True):
                q.setdefault(k, val)
            if q:
                trees.append(("?", q))
        for prefix, t in trees:
            for f in inv.inventory(t, salt=self.salt, keep_values=self.opts.keep_values, seen_names=self.seen_names):
                f = dict(f)
                if prefix:
                    f["key_path"] = prefix + f["key_path"]
                f.update(session_id=self.opts.session_id, exchange_id=exchange_id, host=host, vendor=row["vendor"], category=row["category"])
                out.append(f)
        return out

    def _collect_names(self, tree: Any, depth: int = 0) -> None:
        if depth > 12:
            return
        if isinstance(tree, dict):
            for k, v in tree.items():
                if isinstance(v, str) and str(k).lower() in NAME_KEYS and 2 <= len(v) <= 80:
                    self.seen_names.add(v)
                else:
                    self._collect_names(v, depth + 1)
        elif isinstance(tree, list):
            for v in tree[:200]:
                self._collect_names(v, depth + 1)

    def _exchange_rows(self, flow: http.HTTPFlow) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        req, resp = flow.request, flow.response
        host = req.pretty_host or req.host
        ctype = _mime(req.headers.get("content-type"))
        fmt, decoded_len, parsed, decoded = self._body(req.raw_content, req.headers.get("content-encoding"), ctype, host)
        tree = getattr(parsed, "tree", None)
        parts = getattr(parsed, "parts", None) or []
        files = sum(1 for p in parts if getattr(p, "filename", None))
        facts = ExchangeFacts(
            host=host,
            server_ip=_server_peer(flow.server_conn)[0],
            port=req.port,
            method=req.method,
            path=req.path,
            request_content_type=ctype,
            body_format=fmt,
            body_bytes=decoded_len or len(req.raw_content or b""),
            multipart_files=files,
            event_shaped=looks_like_events(tree),
        )
        verdict = self._verdict_row(facts)
        try:
            req_head = len(assemble.assemble_request_head(req))
        except Exception:  # a request mitmproxy could not fully parse
            req_head = 0
        resp_head = resp_body = 0
        resp_decoded: int | None = None
        if resp is not None:
            try:
                resp_head = len(assemble.assemble_response_head(resp))
            except Exception:
                resp_head = 0
            resp_body = len(resp.raw_content or b"")
            if resp.raw_content:
                d, _ = bodies.decode_content(resp.raw_content, resp.headers.get("content-encoding"), self.opts.body_limit)
                resp_decoded = len(d) if d is not None else None
            else:
                resp_decoded = 0
        exchange_id = flow.id
        query = req.path.partition("?")[2] if "?" in req.path else None
        if tree is not None and verdict["category"] != Category.telemetry:
            self._collect_names(tree)
        fields = self._fields(exchange_id, host, verdict, tree, query) if verdict["category"] in ("telemetry", "unknown", "content_upload") else []
        client = _peer(flow.client_conn)
        server = _server_peer(flow.server_conn)
        row = {
            "session_id": self.opts.session_id,
            "exchange_id": exchange_id,
            "kind": "http",
            "ts": _us(req.timestamp_start),
            "client_ip": client[0],
            "client_port": client[1],
            "server_ip": server[0],
            "server_port": server[1] or req.port,
            "host": host,
            "scheme": req.scheme,
            "http_version": req.http_version,
            "method": req.method,
            "path": redact_query(req.path, self.opts.keep_query),
            "status": resp.status_code if resp is not None else None,
            "direction": "out",
            "request_content_type": ctype,
            "response_content_type": _mime(resp.headers.get("content-type")) if resp is not None else None,
            "request_encoding": (req.headers.get("content-encoding") or None),
            "request_wire_bytes": req_head + len(req.raw_content or b""),
            "request_body_bytes": len(req.raw_content or b""),
            "request_decoded_bytes": decoded_len,
            "response_wire_bytes": resp_head + resp_body,
            "response_body_bytes": resp_body,
            "response_decoded_bytes": resp_decoded,
            "body_format": fmt,
            "body_sha256": self._hash(decoded) if decoded else None,
            "field_count": len(fields),
            "identifier_fields": sum(1 for f in fields if f.get("detectors")),
            "error": flow.error.msg if flow.error else None,
            **verdict,
        }
        return [row], fields

    def _ws_rows(self, flow: http.HTTPFlow, msg: Any, index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        req = flow.request
        host = req.pretty_host or req.host
        content: bytes = msg.content or b""
        parsed = bodies.parse_body(content, "application/json" if msg.is_text and content[:1] in (b"{", b"[") else None) if content else None
        fmt = parsed.format if parsed else "empty"
        tree = parsed.tree if parsed else None
        facts = ExchangeFacts(
            host=host,
            server_ip=_server_peer(flow.server_conn)[0],
            port=req.port,
            method=None,
            path=req.path,
            request_content_type=None,
            body_format=fmt,
            body_bytes=len(content) if msg.from_client else 0,
            event_shaped=looks_like_events(tree),
            websocket=True,
        )
        verdict = self._verdict_row(facts)
        fields = []
        if msg.from_client and verdict["category"] in ("telemetry", "unknown", "content_upload") and tree is not None:
            fields = self._fields(f"{flow.id}:{index}", host, verdict, tree, None)
        client, server = _peer(flow.client_conn), _server_peer(flow.server_conn)
        row = {
            "session_id": self.opts.session_id,
            "exchange_id": f"{flow.id}:{index}",
            "kind": "websocket",
            "ts": _us(msg.timestamp),
            "client_ip": client[0],
            "client_port": client[1],
            "server_ip": server[0],
            "server_port": server[1] or req.port,
            "host": host,
            "scheme": "wss" if req.scheme == "https" else "ws",
            "http_version": req.http_version,
            "method": None,
            "path": redact_query(req.path, self.opts.keep_query),
            "status": None,
            "direction": "out" if msg.from_client else "in",
            "request_content_type": None,
            "response_content_type": None,
            "request_encoding": None,
            "request_wire_bytes": len(content) if msg.from_client else 0,
            "request_body_bytes": len(content) if msg.from_client else 0,
            "request_decoded_bytes": len(content) if msg.from_client else 0,
            "response_wire_bytes": 0 if msg.from_client else len(content),
            "response_body_bytes": 0 if msg.from_client else len(content),
            "response_decoded_bytes": 0 if msg.from_client else len(content),
            "body_format": fmt,
            "body_sha256": self._hash(content) if content else None,
            "field_count": len(fields),
            "identifier_fields": sum(1 for f in fields if f.get("detectors")),
            "error": None,
            **verdict,
        }
        return row, fields

    # -- end -------------------------------------------------------------------
    def close(self, extra: dict[str, Any] | None = None) -> None:
        """Flush, compact the tables, settle the party column, and record the run in session.json."""
        self.http.flush()
        self.fields.flush()
        compact(self.out, "http")
        compact(self.out, "fields")
        self._settle_party()
        if self._writer is not None:
            self._mitm_file.close()
            self._writer = None
        self._write_session(extra or {})

    def _settle_party(self) -> None:
        """Without --client, the audited client is the conferencing vendor with most exchanges; recompute party."""
        if self.opts.client:
            return
        path = self.out / "http.parquet"
        table = pq.read_table(path)
        if table.num_rows == 0:
            return
        counts: Counter[str] = Counter()
        for vendor in table.column("vendor").to_pylist():
            if vendor and self.db.vendor_kind(vendor) == "conferencing":
                counts[vendor] += 1
        if not counts:
            return
        client = counts.most_common(1)[0][0]
        first = first_party_vendors(client, self.db)
        vendors = table.column("vendor").to_pylist()
        party = [Party.unknown.value if v is None else (Party.first.value if v in first else Party.third.value) for v in vendors]
        idx = table.schema.get_field_index("party")
        table = table.set_column(idx, table.schema.field("party"), pa.array(party, pa.string()))
        tmp = self.out / ".http.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        self.client = client

    def _write_session(self, extra: dict[str, Any]) -> None:
        path = self.out / "session.json"
        doc: dict[str, Any] = {}
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                doc = {}
        from egressaudit import __version__
        from egressaudit.schema import SCHEMA_VERSION

        doc.setdefault("session_id", self.opts.session_id)
        doc.setdefault("schema_version", SCHEMA_VERSION)
        doc.setdefault("tool", {"name": "egressaudit", "version": __version__})
        doc.setdefault("signatures", {"version": self.db.version, "vendors": len(self.db.vendors), "rules": len(self.db)})
        http_rows = read_rows(self.out, "http")
        doc["http"] = {
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "exchanges": int(pc.sum(pc.equal(http_rows.column("kind"), "http")).as_py() or 0),
            "websocket_messages": int(pc.sum(pc.equal(http_rows.column("kind"), "websocket")).as_py() or 0),
            "fields": read_rows(self.out, "fields").num_rows,
            "audited_client": self.opts.client or getattr(self, "client", None),
            "keep_values": self.opts.keep_values,
            "keep_query": self.opts.keep_query,
            "keep_bodies": self.opts.keep_bodies,
            "skipped": dict(self.stats.skipped),
            **extra,
        }
        tmp = self.out / ".session.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _peer(conn: Any) -> tuple[str | None, int | None]:
    """The client's address (as the proxy's socket saw it)."""
    return _addr(getattr(conn, "peername", None) or getattr(conn, "address", None))


def _server_peer(conn: Any) -> tuple[str | None, int | None]:
    """The address the proxy actually connected to: the server, or the next proxy in upstream mode.

    Never a host name: in upstream mode mitmproxy keeps the target name in ``address`` and leaves
    ``peername`` empty, and the connection went to ``via`` instead.
    """
    peer = getattr(conn, "peername", None)
    if peer:
        return _addr(peer)
    via = getattr(conn, "via", None)  # (scheme, (host, port)) of the upstream proxy
    if via:
        return _addr(via[1])
    addr = getattr(conn, "address", None)
    if addr:
        try:
            ipaddress.ip_address(str(addr[0]))
        except ValueError:
            return None, None
        return _addr(addr)
    return None, None


def _addr(addr: Any) -> tuple[str | None, int | None]:
    if not addr:
        return None, None
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(addr[1])


def _us(ts: float | None) -> int:
    return int((ts or 0.0) * 1_000_000)


def read_flow_file(path: Path) -> Iterator[http.HTTPFlow]:
    """HTTP flows of a saved mitmproxy file or a HAR file; FlowFileError with one line otherwise."""
    try:
        with open(path, "rb") as f:
            reader = io.FlowReader(f)
            for fl in reader.stream():
                if isinstance(fl, http.HTTPFlow):
                    yield fl
    except OSError as e:
        raise FlowFileError(f"{path}: cannot read: {e.strerror or e}") from e
    except (ValueError, KeyError, TypeError, exceptions.FlowReadException) as e:
        raise FlowFileError(f"{path}: not a mitmproxy flow file or HAR file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def record_files(paths: Iterable[Path], out: Path, db: SignatureDB, opts: RecorderOptions) -> Recorder:
    rec = Recorder(out, db, opts)
    for p in paths:
        for fl in read_flow_file(p):
            rec.add_flow(fl)
    rec.close({"inputs": [{"path": str(p), "size": p.stat().st_size} for p in paths]})
    return rec
