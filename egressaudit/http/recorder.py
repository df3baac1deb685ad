"""From mitmproxy flows to rows of ``http.parquet`` and ``fields.parquet``.

One :class:`Recorder` per session folder.  The mitmproxy addon feeds it live
flows; ``egressaudit analyze`` feeds it flows read from saved mitmproxy files
and HAR files (:func:`read_flow_file`, record by record with mitmproxy's own
pieces), so both paths produce the same rows.  Privacy defaults: query values
are redacted, field values are only stored as salted hashes (the salt lives in
``OUT/.salt``, mode 0600, never in the tables), and no body is stored unless
``keep_bodies`` is set (then the flows, bodies included, go to ``OUT/flows.mitm``).

Hostile input costs at most what it touches.  A record of a flow file that
cannot be read is skipped and counted; broken framing ends the file there (the
flows before it are kept).  An exchange whose body, header or field cannot be
handled is still recorded with what could be read: values that do not fit
their column are fixed before they reach the writer (text that is not UTF-8 is
kept as escaped text, ``application/\\xffjson``; numbers out of range are
nulled or clamped) and counted in ``session.json`` under ``http.problems`` as
``<column>:<reason>``; what was not looked at is counted under
``http.skipped`` by reason.  Only :class:`OSError` (the disk) propagates.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from mitmproxy import flow as mflow
from mitmproxy import http, io
from mitmproxy.io import compat, tnetstring
from mitmproxy.io.har import request_to_flow
from mitmproxy.net.http.http1 import assemble

from egressaudit.capture.frames import PROTO_TCP
from egressaudit.classify.http import ExchangeFacts, classify_exchange, looks_like_events
from egressaudit.classify.party import first_party_vendors, party_of
from egressaudit.errors import InputError
from egressaudit.flows.orient import community_id_v1
from egressaudit.http import bodies
from egressaudit.http import inventory as inv
from egressaudit.http.query import query_keys, redact_query
from egressaudit.schema import HTTP, TS_MAX_US, TS_MIN_US, as_int, as_text, column_specs, escape_text, fit_row, is_utf8
from egressaudit.session import manifest, settle_party
from egressaudit.session.store import TableAppender, compact, read_rows
from egressaudit.signatures import SignatureDB
from egressaudit.taxonomy import Category, Party, data_class_of

NAME_KEYS = frozenset(("display_name", "displayname", "user_name", "username", "name", "screen_name", "full_name", "fullname", "nickname"))
HAR_MAX_BYTES = 512 << 20
"""HAR files larger than this are refused: a HAR is read whole as text (1-4 bytes a character), then entry by entry."""
STREAMED = "egressaudit_streamed"
"""``flow.metadata`` key of a flow whose body was streamed past the proxy (see :meth:`Recorder.add_flow`)."""
_CUT_WARNINGS = ("too_many_parts", "too_many_keys")


_HTTP_SPECS = column_specs("http")
_FIELD_SPECS = column_specs("fields", ("key_path", "value_type", "value", "value_hash", "detectors", "value_length", "count"))


class FlowFileError(InputError):
    """A saved flow or HAR file cannot be read; one line for the user."""


# -- text and values that fit their columns ------------------------------------------------


def _ts_us(ts: object, problems: Counter[str], name: str = "ts_start") -> int:
    """Seconds since the epoch as microseconds within the tables' range (``schema.TS_MIN_US``..``TS_MAX_US``, 1970..2262);
    anything else is clamped and counted."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        problems[f"{name}:missing" if ts is None else f"{name}:wrong_type"] += 1
        return TS_MIN_US
    if isinstance(ts, float) and math.isnan(ts):
        problems[f"{name}:not_a_number"] += 1
        return TS_MIN_US
    if ts * 1_000_000 < TS_MIN_US:
        problems[f"{name}:out_of_range"] += 1
        return TS_MIN_US
    if ts * 1_000_000 > TS_MAX_US:
        problems[f"{name}:out_of_range"] += 1
        return TS_MAX_US
    return int(ts * 1_000_000)


def _mime(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def unmapped(ip: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, as mitmproxy reports a dual-stack socket's peers) as the
    IPv4 address a packet capture sees; any other text as it is."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    return str(a.ipv4_mapped) if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None else ip


def tcp_community_id(local: tuple[str | None, int | None], remote: tuple[str | None, int | None]) -> str | None:
    """Community ID v1 of the TCP connection between two (address, port) ends, as ``flows.community_id`` gives it
    for that connection's flow; None when an end is unknown or is not an IP address (a HAR names no local end)."""
    (lip, lport), (rip, rport) = local, remote
    if lip is None or rip is None or lport is None or rport is None or not (0 <= lport < 65536 and 0 <= rport < 65536):
        return None
    try:
        a, b = ipaddress.ip_address(unmapped(lip)), ipaddress.ip_address(unmapped(rip))
    except ValueError:
        return None
    if a.version != b.version:
        return None
    return community_id_v1(PROTO_TCP, a.packed, b.packed, lport, rport)


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
    """What was not recorded or not looked at, by reason: unreadable records, undecodable bodies, streamed bodies, cut keys."""
    problems: Counter[str] = field(default_factory=Counter)
    """Values fixed so that their column holds them, as ``<column>:<reason>`` (not_utf8, out_of_range, wrong_type, ...)."""
    errors: list[str] = field(default_factory=list)
    """One line per input file that could not be read to its end."""


T = TypeVar("T")
_Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]


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
        """An HTTP exchange (and the WebSocket messages it carried, when it has ended).

        Never raises because of the flow's content (only OSError, from the disk): what cannot be read costs that
        exchange's detail, counted in ``stats``.  A side whose body was streamed past the proxy carries
        ``flow.metadata["egressaudit_streamed"] = {"request": {"bytes": <total on the wire>, "sha256": <hex or None>},
        "response": {...}}`` (only the streamed sides); its content then holds only the body's first bytes (still
        content-encoded): the sizes come from the metadata, the decoded size is null, only the head is sniffed and
        parsed, and the body hash is the salted hash of the metadata's (the body as sent, not decoded).
        """
        rows, fields = self._safe(lambda: self._exchange_rows(flow), flow)
        ws = self._get(lambda: flow.websocket, None, "websocket")
        if ws is not None:
            messages: list[Any] = self._get(lambda: list(ws.messages), [], "websocket")
            for i, msg in enumerate(messages):
                r, f = self._safe(lambda i=i, msg=msg: self._ws_rows(flow, msg, i), flow, i)  # type: ignore[misc]
                rows += r
                fields += f
        self._emit(rows, fields)
        self._save(flow)

    def add_websocket_message(self, flow: http.HTTPFlow, index: int, number: int | None = None) -> None:
        """Message ``index`` of the flow's list; ``number`` is its position in the whole conversation (default: index)."""
        n = index if number is None else number
        msg = self._get(lambda: flow.websocket.messages[index], None, "websocket")  # type: ignore[union-attr]
        if msg is None:
            self.stats.skipped["websocket_message_missing"] += 1
            return
        rows, fields = self._safe(lambda: self._ws_rows(flow, msg, n), flow, n)
        self._emit(rows, fields)

    def add_handshake(self, flow: http.HTTPFlow) -> None:
        """The WebSocket upgrade exchange alone (its messages are added one by one)."""
        rows, fields = self._safe(lambda: self._exchange_rows(flow), flow)
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

    def _save(self, flow: http.HTTPFlow) -> None:
        if self._writer is None:
            return
        with self._lock:
            try:
                self._writer.add(flow)
            except OSError:
                raise
            except (Exception, RecursionError):  # a flow mitmproxy cannot serialise: the rows are kept, the body is not
                self.stats.skipped["flows_mitm_unwritable"] += 1
            self._mitm_file.flush()

    def flush(self) -> None:
        self.http.flush()
        self.fields.flush()

    # -- reading a flow without trusting it -----------------------------------
    def _safe(self, build: Callable[[], _Rows], flow: http.HTTPFlow, index: int | None = None) -> _Rows:
        """``build()``, or, when it fails on something nothing else caught, one row of what is certain (counted)."""
        try:
            return build()
        except OSError:
            raise
        except (Exception, RecursionError, MemoryError) as e:
            self.stats.skipped[f"recorder_error:{type(e).__name__}"] += 1
            return [self._fallback_row(flow, e, index)], []

    def _get(self, fn: Callable[[], T], default: T, name: str) -> T:
        try:
            return fn()
        except (Exception, RecursionError):
            self.stats.problems[f"{name}:unreadable"] += 1
            return default

    def _text(self, fn: Callable[[], object], name: str) -> str | None:
        """A text attribute of the flow: str as is, text UTF-8 cannot hold escaped, anything else as text (counted)."""
        v = self._get(fn, None, name)
        if v is None:
            return None
        if type(v) is str:
            if is_utf8(v):
                return v
            self.stats.problems[f"{name}:not_utf8"] += 1
            return escape_text(v)
        self.stats.problems[f"{name}:wrong_type"] += 1
        return as_text(v)  # (bytes: decoded with escapes)

    def _int(self, fn: Callable[[], object], name: str) -> int | None:
        v = self._get(fn, None, name)
        if v is None or type(v) is int:
            return v
        self.stats.problems[f"{name}:wrong_type"] += 1
        return as_int(v)

    def _bytes(self, fn: Callable[[], object], name: str) -> bytes:
        v = self._get(fn, None, name)
        if v is None or type(v) is bytes:
            return v or b""
        if isinstance(v, bytearray | memoryview):
            return bytes(v)
        self.stats.problems[f"{name}:wrong_type"] += 1
        return b""

    def _flow_id(self, flow: http.HTTPFlow) -> str:
        fid = self._get(lambda: flow.id, None, "exchange_id")
        if type(fid) is str and fid:
            return fid if is_utf8(fid) else escape_text(fid)
        self.stats.problems["exchange_id:wrong_type"] += 1
        return as_text(fid) if fid not in (None, "") else f"no-id-{secrets.token_hex(8)}"

    def _addr(self, addr: object, name: str) -> tuple[str | None, int | None]:
        if not addr:
            return None, None
        try:
            host, port = addr[0], addr[1]  # type: ignore[index]
        except Exception:
            self.stats.problems[f"{name}:wrong_type"] += 1
            return None, None
        if type(host) is not str:
            self.stats.problems[f"{name}:wrong_type"] += 1
            host = as_text(host)
        elif not is_utf8(host):
            self.stats.problems[f"{name}:not_utf8"] += 1
            host = escape_text(host)
        host = unmapped(host)
        if type(port) is not int:
            self.stats.problems[f"{name}:wrong_type"] += 1
            port = as_int(port)
        return host, port

    def _client(self, conn: Any) -> tuple[str | None, int | None]:
        """The client's end of its connection to the proxy (as the proxy's socket saw it)."""
        return self._addr(self._get(lambda: getattr(conn, "peername", None) or getattr(conn, "address", None), None, "client_ip"), "client_ip")

    def _local(self, conn: Any) -> tuple[str | None, int | None]:
        """The audited host's end of the connection that carried the exchange out: the proxy's socket when it
        connected upstream (``sockname``); unknown when it did not, or the input does not say (a HAR)."""
        return self._addr(self._get(lambda: getattr(conn, "sockname", None), None, "local_ip"), "local_ip")

    def _remote(self, conn: Any) -> tuple[str | None, int | None]:
        """The address the proxy actually connected to: the server, or the next proxy in upstream mode.

        Never a host name: in upstream mode mitmproxy keeps the target name in ``address`` and leaves
        ``peername`` empty, and the connection went to ``via`` instead.
        """
        peer = self._get(lambda: getattr(conn, "peername", None), None, "remote_ip")
        if peer:
            return self._addr(peer, "remote_ip")
        via = self._get(lambda: getattr(conn, "via", None), None, "remote_ip")  # (scheme, (host, port)) of the upstream proxy
        if via:
            return self._addr(self._get(lambda: via[1], None, "remote_ip"), "remote_ip")
        addr = self._get(lambda: getattr(conn, "address", None), None, "remote_ip")
        if addr:
            host, port = self._addr(addr, "remote_ip")
            try:
                ipaddress.ip_address(str(host))
            except ValueError:
                return None, None
            return host, port
        return None, None

    def _streamed(self, flow: http.HTTPFlow, side: str, head: int) -> tuple[int, str | None] | None:
        """(bytes on the wire, sha256 hex or None) of a side the proxy streamed (see :meth:`add_flow`), else None."""
        meta = self._get(lambda: flow.metadata.get(STREAMED), None, "streamed_metadata")
        if meta is None:
            return None
        if not isinstance(meta, dict):
            self.stats.problems["streamed_metadata:wrong_type"] += 1
            return None
        info = meta.get(side)
        if info is None:
            return None
        if not isinstance(info, dict):
            self.stats.problems["streamed_metadata:wrong_type"] += 1
            return None
        total, sha = info.get("bytes"), info.get("sha256")
        if type(total) is not int or not head <= total < 1 << 63:
            self.stats.problems["streamed_metadata:bad_bytes"] += 1
            total = head
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)):
            self.stats.problems["streamed_metadata:bad_sha256"] += 1
            sha = None
        self.stats.skipped["streamed_body"] += 1
        return total, sha

    # -- rows ------------------------------------------------------------------
    def _body(self, raw: bytes, encoding: str | None, content_type: str | None, host: str | None, streamed: bool) -> tuple[str, int | None, Any, Any]:
        """(format, decoded size, parsed body, decoded bytes); of a streamed body's head only the format and the tree."""
        if not raw:
            return ("error:streamed", None, None, None) if streamed else ("empty", 0, None, b"")
        decoded, err = bodies.decode_content(raw, encoding, self.opts.body_limit, partial=streamed)
        if decoded is None:
            self.stats.skipped[(err or "error:decode").removeprefix("error:")] += 1
            return err or "error:decode", None, None, None
        parsed = bodies.parse_body(decoded, content_type, host)
        if parsed.warning in _CUT_WARNINGS:
            self.stats.skipped[parsed.warning] += 1
        if streamed:  # a head: what it shows, never its (cut) size
            return (parsed.format if not parsed.format.startswith("error:") else "error:streamed"), None, parsed, None
        if parsed.format.startswith("error:"):
            self.stats.skipped[parsed.format.removeprefix("error:")] += 1
        return parsed.format, len(decoded), parsed, decoded

    def _hash(self, data: bytes | None) -> str | None:
        if data is None:
            return None
        if self.opts.keep_values:
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha256(self.salt + data).hexdigest()

    def _hash_digest(self, sha: str | None) -> str | None:
        """The body hash of a streamed body: its sha256 as the proxy computed it, salted like the rest unless values are kept."""
        if sha is None:
            return None
        if self.opts.keep_values:
            return sha.lower()
        return hashlib.sha256(self.salt + bytes.fromhex(sha)).hexdigest()

    def _verdict_row(self, facts: ExchangeFacts) -> dict[str, Any]:
        v = classify_exchange(facts, self.db)
        party = (
            party_of(v.vendor, self.first)
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

    def _fields(self, exchange_id: str, host: str | None, row: dict[str, Any], tree: Any, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        trees: list[tuple[str, Any]] = []
        if tree is not None:
            trees.append(("", tree))
        q: dict[str, Any] = {}
        for k, val in query:
            q.setdefault(k, val)
        if q:
            trees.append(("?", q))
        problems = self.stats.problems
        for prefix, t in trees:
            try:
                found = inv.inventory(t, salt=self.salt, keep_values=self.opts.keep_values, seen_names=self.seen_names, cuts=self.stats.skipped)
            except (Exception, RecursionError):  # a tree the inventory cannot walk: the exchange is kept without its fields
                self.stats.skipped["inventory_error"] += 1
                continue
            for f in found:
                f = dict(f)
                if prefix:
                    f["key_path"] = prefix + f["key_path"]
                fit_row(f, _FIELD_SPECS, problems)
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

    def _exchange_rows(self, flow: http.HTTPFlow) -> _Rows:
        req = flow.request
        if not isinstance(req, http.Request):
            raise TypeError("the flow has no request")
        resp = self._get(lambda: flow.response, None, "response")
        if resp is not None and not isinstance(resp, http.Response):
            self.stats.problems["response:wrong_type"] += 1
            resp = None
        host = self._text(lambda: req.pretty_host or req.host, "host")
        ctype = _mime(self._text(lambda: req.headers.get("content-type"), "content_type_out"))
        encoding = self._text(lambda: req.headers.get("content-encoding"), "encoding_out")
        raw = self._bytes(lambda: req.raw_content, "request_body")
        streamed = self._streamed(flow, "request", len(raw))
        fmt, decoded_len, parsed, decoded = self._body(raw, encoding, ctype, host, streamed is not None)
        tree = getattr(parsed, "tree", None)
        if parsed is not None and parsed.format == "multipart":
            files = parsed.file_count
        else:
            files = sum(1 for p in getattr(parsed, "parts", None) or [] if getattr(p, "filename", None))
        body_bytes = streamed[0] if streamed else len(raw)
        path = self._text(lambda: req.path, "path") or ""
        method = self._text(lambda: req.method, "method")
        port = self._int(lambda: req.port, "remote_port")
        remote = self._remote(flow.server_conn)
        facts = ExchangeFacts(
            host=host,
            remote_ip=remote[0],
            port=port,
            method=method,
            path=path,
            content_type_out=ctype,
            body_format=fmt,
            body_bytes=decoded_len or body_bytes,
            multipart_files=files,
            event_shaped=looks_like_events(tree),
        )
        verdict = self._verdict_row(facts)
        req_head = self._get(lambda: len(assemble.assemble_request_head(req)), 0, "request_head")
        resp_head = resp_body = 0
        resp_decoded: int | None = None
        status: int | None = None
        resp_ctype: str | None = None
        ts_start = _ts_us(self._get(lambda: req.timestamp_start, None, "ts_start"), self.stats.problems)
        ts_end = ts_start
        if resp is not None:
            end = self._get(lambda: resp.timestamp_end, None, "ts_end")
            if end is not None:
                ts_end = max(ts_start, _ts_us(end, self.stats.problems, "ts_end"))
            resp_head = self._get(lambda: len(assemble.assemble_response_head(resp)), 0, "response_head")
            rraw = self._bytes(lambda: resp.raw_content, "response_body")
            rstreamed = self._streamed(flow, "response", len(rraw))
            resp_body = rstreamed[0] if rstreamed else len(rraw)
            if rstreamed:
                resp_decoded = None
            elif rraw:
                renc = self._text(lambda: resp.headers.get("content-encoding"), "response_encoding")
                d, _ = bodies.decode_content(rraw, renc, self.opts.body_limit)
                resp_decoded = len(d) if d is not None else None
            else:
                resp_decoded = 0
            status = self._int(lambda: resp.status_code, "status")
            resp_ctype = _mime(self._text(lambda: resp.headers.get("content-type"), "content_type_in"))
        exchange_id = self._flow_id(flow)
        query: list[tuple[str, str]] = []
        if "?" in path:
            query, cut = query_keys(path.partition("?")[2])
            if cut:
                self.stats.skipped["query_keys_cut"] += 1
        if tree is not None and verdict["category"] != Category.telemetry:
            self._collect_names(tree)
        fields = self._fields(exchange_id, host, verdict, tree, query) if verdict["category"] in ("telemetry", "unknown", "content_upload") else []
        client = self._client(flow.client_conn)
        local = self._local(flow.server_conn)
        row = {
            "session_id": self.opts.session_id,
            "exchange_id": exchange_id,
            "kind": "http",
            "ts_start": ts_start,
            "ts_end": ts_end,
            "community_id": tcp_community_id(local, remote),
            "local_ip": local[0],
            "local_port": local[1],
            "remote_ip": remote[0],
            "remote_port": remote[1] or port,
            "client_ip": client[0],
            "client_port": client[1],
            "host": host,
            "scheme": self._text(lambda: req.scheme, "scheme"),
            "http_version": self._text(lambda: req.http_version, "http_version"),
            "method": method,
            "path": redact_query(path, self.opts.keep_query),
            "status": status,
            "direction": "out",
            "content_type_out": ctype,
            "content_type_in": resp_ctype,
            "encoding_out": encoding or None,
            "bytes_out": req_head + body_bytes,
            "body_bytes_out": body_bytes,
            "decoded_bytes_out": decoded_len,
            "bytes_in": resp_head + resp_body,
            "body_bytes_in": resp_body,
            "decoded_bytes_in": resp_decoded,
            "body_format": fmt,
            "body_sha256": self._hash_digest(streamed[1]) if streamed else (self._hash(decoded) if decoded else None),
            "field_count": len(fields),
            "identifier_fields": sum(1 for f in fields if f.get("detectors")),
            "error": self._text(lambda: flow.error.msg if flow.error else None, "error"),
            "attributed_by": "none",  # (egressaudit session start attributes the rows when it finishes)
            **verdict,
        }
        fit_row(row, _HTTP_SPECS, self.stats.problems)
        return [row], fields

    def _ws_rows(self, flow: http.HTTPFlow, msg: Any, index: int) -> _Rows:
        req = flow.request
        host = self._text(lambda: req.pretty_host or req.host, "host")
        content = self._bytes(lambda: msg.content, "websocket_message")
        from_client = bool(self._get(lambda: msg.from_client, True, "direction"))
        is_text = bool(self._get(lambda: msg.is_text, False, "websocket_message"))
        parsed = bodies.parse_body(content, "application/json" if is_text and content[:1] in (b"{", b"[") else None) if content else None
        if parsed is not None and parsed.warning in _CUT_WARNINGS:
            self.stats.skipped[parsed.warning] += 1
        fmt = parsed.format if parsed else "empty"
        tree = parsed.tree if parsed else None
        path = self._text(lambda: req.path, "path") or ""
        port = self._int(lambda: req.port, "remote_port")
        remote = self._remote(flow.server_conn)
        facts = ExchangeFacts(
            host=host,
            remote_ip=remote[0],
            port=port,
            method=None,
            path=path,
            content_type_out=None,
            body_format=fmt,
            body_bytes=len(content) if from_client else 0,
            event_shaped=looks_like_events(tree),
            websocket=True,
        )
        verdict = self._verdict_row(facts)
        exchange_id = f"{self._flow_id(flow)}:{index}"
        fields = []
        if from_client and verdict["category"] in ("telemetry", "unknown", "content_upload") and tree is not None:
            fields = self._fields(exchange_id, host, verdict, tree, [])
        client = self._client(flow.client_conn)
        local = self._local(flow.server_conn)
        scheme = self._text(lambda: req.scheme, "scheme")
        ts = _ts_us(self._get(lambda: msg.timestamp, None, "ts_start"), self.stats.problems)
        n = len(content)
        row = {
            "session_id": self.opts.session_id,
            "exchange_id": exchange_id,
            "kind": "websocket",
            "ts_start": ts,
            "ts_end": ts,
            "community_id": tcp_community_id(local, remote),
            "local_ip": local[0],
            "local_port": local[1],
            "remote_ip": remote[0],
            "remote_port": remote[1] or port,
            "client_ip": client[0],
            "client_port": client[1],
            "host": host,
            "scheme": "wss" if scheme == "https" else "ws",
            "http_version": self._text(lambda: req.http_version, "http_version"),
            "method": None,
            "path": redact_query(path, self.opts.keep_query),
            "status": None,
            "direction": "out" if from_client else "in",
            "content_type_out": None,
            "content_type_in": None,
            "encoding_out": None,
            "bytes_out": n if from_client else 0,
            "body_bytes_out": n if from_client else 0,
            "decoded_bytes_out": n if from_client else 0,
            "bytes_in": 0 if from_client else n,
            "body_bytes_in": 0 if from_client else n,
            "decoded_bytes_in": 0 if from_client else n,
            "body_format": fmt,
            "body_sha256": self._hash(content) if content else None,
            "field_count": len(fields),
            "identifier_fields": sum(1 for f in fields if f.get("detectors")),
            "error": None,
            "attributed_by": "none",
            **verdict,
        }
        fit_row(row, _HTTP_SPECS, self.stats.problems)
        return [row], fields

    def _fallback_row(self, flow: http.HTTPFlow, e: BaseException, index: int | None) -> dict[str, Any]:
        """The row of an exchange the recorder failed on: what is certain (id, time), nothing classified."""
        fid = self._flow_id(flow)
        ts = _ts_us(self._get(lambda: flow.request.timestamp_start, None, "ts_start"), self.stats.problems)
        row: dict[str, Any] = {c.name: None for c in HTTP}
        row.update(
            session_id=self.opts.session_id,
            exchange_id=fid if index is None else f"{fid}:{index}",
            kind="http" if index is None else "websocket",
            ts_start=ts,
            ts_end=ts,
            direction="out",
            bytes_out=0,
            body_bytes_out=0,
            bytes_in=0,
            body_bytes_in=0,
            body_format="error:recorder",
            field_count=0,
            identifier_fields=0,
            party=Party.unknown.value,
            category=Category.unknown.value,
            data_class=data_class_of(Category.unknown).value,
            rule="none",
            evidence=f"not classified: the recorder could not read this exchange ({type(e).__name__})",
        )
        fit_row(row, _HTTP_SPECS, self.stats.problems)
        return row

    # -- end -------------------------------------------------------------------
    def close(self, extra: dict[str, Any] | None = None) -> None:
        """Flush, compact the tables, record the run in the manifest's ``http`` section, and settle the session's audited
        client and every table's party column (:func:`egressaudit.session.settle_party`: one policy over all tables)."""
        self.http.flush()
        self.fields.flush()
        compact(self.out, "http")
        compact(self.out, "fields")
        if self._writer is not None:
            self._mitm_file.close()
            self._writer = None
        self._write_session(extra or {})
        self.client = settle_party(self.out, self.db, self.opts.client)

    def _write_session(self, extra: dict[str, Any]) -> None:
        """The manifest's ``http`` section: what this recorder recorded (counted from the tables on disk, part files
        included), skipped and fixed, and its options; written through the session's one manifest writer."""
        unreadable = None
        try:
            http_rows = read_rows(self.out, "http")
            exchanges = int(pc.sum(pc.equal(http_rows.column("kind"), "http")).as_py() or 0)
            ws_messages = int(pc.sum(pc.equal(http_rows.column("kind"), "websocket")).as_py() or 0)
            n_fields = read_rows(self.out, "fields").num_rows
        except (pa.ArrowException, ValueError) as e:  # a damaged table: what this recorder counted instead
            exchanges, ws_messages, n_fields = self.stats.exchanges, self.stats.websocket_messages, self.stats.fields
            unreadable = " ".join(str(e).split())[:300]
        problems = self.stats.problems + self.http.problems + self.fields.problems  # (the tables' keys: "<table>.<column>:<reason>")
        section = {
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "exchanges": exchanges,
            "websocket_messages": ws_messages,
            "fields": n_fields,
            "keep_values": self.opts.keep_values,
            "keep_query": self.opts.keep_query,
            "keep_bodies": self.opts.keep_bodies,
            "skipped": dict(self.stats.skipped),
            "problems": dict(problems),
            **({"errors": list(self.stats.errors)} if self.stats.errors else {}),
            **({"tables_unreadable": unreadable} if unreadable else {}),
            **extra,
        }

        def record(m: manifest.Manifest) -> None:
            m.http = section
            if m.signatures.version is None:
                m.signatures = manifest.Signatures(version=self.db.version, vendors=len(self.db.vendors), rules=len(self.db))
            if self.opts.client and not m.audited_client:
                m.audited_client, m.audited_client_source = self.opts.client, "option"

        manifest.update(self.out, record, session_id=self.opts.session_id)


def record_files(paths: Iterable[Path], out: Path, db: SignatureDB, opts: RecorderOptions) -> Recorder:
    """Record the HTTP flows of saved mitmproxy and HAR files into ``out``; skips and problems go to ``session.json``.

    FlowFileError (one line) when a file cannot be used at all; the session is closed first, with what the files
    before it gave and the error among ``http.errors``.
    """
    rec = Recorder(out, db, opts)
    inputs: list[dict[str, Any]] = []
    try:
        for p in paths:
            rep = ReadReport(p)
            try:
                for fl in read_flow_file(p, report=rep):
                    rec.add_flow(fl)
            finally:
                inputs.append(rep.summary())
                rec.stats.skipped.update(rep.skipped)
                rec.stats.problems.update(rep.problems)
                if rep.error:
                    rec.stats.errors.append(rep.error)
    except FlowFileError as e:
        rec.stats.errors.append(str(e))
        rec.close({"inputs": inputs})
        raise
    rec.close({"inputs": inputs})
    return rec


# -- reading flow files, record by record ------------------------------------------------


@dataclass
class ReadReport:
    """What reading one flow file gave: HTTP flows, records skipped by reason, values fixed, where it stopped early."""

    path: Path
    size: int = 0
    flows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    """One line: the framing broke here, and the rest of the file was not read."""
    stop: str | None = None
    """Why reading stopped early (the error without the file's name)."""

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": str(self.path), "size": self.size, "flows": self.flows}
        if self.skipped:
            doc["skipped"] = dict(self.skipped)
        if self.error:
            doc["error"] = self.error
        return doc


class _Bounded:
    """A file whose ``read(n)`` never allocates more than what is left of it.

    mitmproxy's tnetstring reader calls ``read(n)`` with the length a record declares, and a buffered file allocates
    ``n`` bytes before reading: an 11-digit length in a 16-byte file was a MemoryError.  Regular files are cut to their
    size; other files (pipes) are read in chunks, so memory grows only with what arrives.
    """

    CHUNK = 1 << 20

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        try:
            st = os.fstat(f.fileno())
            self.size: int | None = st.st_size if stat.S_ISREG(st.st_mode) else None
        except (OSError, ValueError, AttributeError):
            self.size = None
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            data = self.f.read()
        elif self.size is not None:
            data = self.f.read(max(0, min(n, self.size - self.pos)))
        else:
            chunks: list[bytes] = []
            got = 0
            while got < n:
                c = self.f.read(min(n - got, self.CHUNK))
                if not c:
                    break
                chunks.append(c)
                got += len(c)
            data = b"".join(chunks)
        self.pos += len(data)
        return data


_TN_TYPES = frozenset(b",;#^!~]}")


class _Corrupt(Exception):
    pass


def _frame(src: _Bounded) -> tuple[int, bytes] | None:
    """The next top-level tnetstring as (type tag, payload); None at a clean end of file; _Corrupt when framing breaks."""
    c = src.read(1)
    if not c:
        return None
    digits = b""
    while c.isdigit():
        digits += c
        if len(digits) > 12:
            raise _Corrupt("absurdly large length prefix")
        c = src.read(1)
    if c != b":" or not digits:
        raise _Corrupt("no length prefix where a record should start")
    n = int(digits)
    data = src.read(n)
    if len(data) < n:
        raise _Corrupt(f"record declares {n:,} bytes, the file holds {len(data):,} more")
    tag = src.read(1)
    if not tag:
        raise _Corrupt("record cut before its type tag")
    if tag[0] not in _TN_TYPES:
        raise _Corrupt(f"unknown type tag {tag!r}")
    return tag[0], data


def _record_reason(e: BaseException, stage: str) -> str:
    if isinstance(e, RecursionError):
        return "record_too_deep"
    if isinstance(e, MemoryError):
        return "record_too_large"
    return f"bad_{stage}"


def _read_mitm(src: _Bounded, path: Path, rep: ReadReport) -> Iterator[http.HTTPFlow]:
    """mitmproxy's ``FlowReader.stream`` loop, one record at a time: a bad record costs that record."""
    while True:
        start = src.pos
        try:
            framed = _frame(src)
        except _Corrupt as e:
            rep.skipped["corrupt_record"] += 1
            left = (src.size - start) if src.size is not None else None
            rep.stop = f"corrupt record at byte {start:,} ({e})"
            rep.error = f"{path}: {rep.stop}; {rep.flows:,} flows before it were read, " + (
                f"the last {left:,} bytes were not" if left is not None else "the rest was not"
            )
            return
        if framed is None:
            return
        tag, data = framed
        if tag != ord("}"):
            rep.skipped["not_a_flow"] += 1
            continue
        stage = "tnetstring"
        try:
            state = tnetstring.parse(tag, memoryview(data))
            del data
            stage = "flow_version"
            if not isinstance(state, dict):
                raise TypeError("not a dict")
            state = compat.migrate_flow(state)
            stage = "flow_state"
            fl = mflow.Flow.from_state(state)
        except (Exception, RecursionError, MemoryError) as e:  # mitmproxy's code on hostile content: any exception
            rep.skipped[_record_reason(e, stage)] += 1
            continue
        if not isinstance(fl, http.HTTPFlow):
            rep.skipped["not_http"] += 1
            continue
        rep.flows += 1
        yield fl


def _clean_har(entry: object, problems: Counter[str]) -> None:
    """Strings of a HAR entry that UTF-8 cannot encode (``\\udcff`` escapes, bytes the file had wrong) as escaped text, in place."""
    stack = [entry]
    while stack:
        node = stack.pop()
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for k, v in items:
            if isinstance(v, str):
                if not is_utf8(v):
                    node[k] = escape_text(v)
                    problems["har:not_utf8"] += 1
            elif isinstance(v, dict | list):
                stack.append(v)
            if isinstance(node, dict) and isinstance(k, str) and not is_utf8(k):
                node[escape_text(k)] = node.pop(k)
                problems["har:not_utf8"] += 1


_JSON_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DECODER = json.JSONDecoder()


class _NotHar(Exception):
    pass


def _ws(text: str, pos: int) -> int:
    m = _JSON_WS.match(text, pos)
    return m.end() if m else pos


def _value_of(text: str, pos: int, key: str) -> int:
    """Where the value of ``key`` starts in the JSON object at ``pos``; other members are skipped (decoded and dropped)."""
    if text[pos : pos + 1] != "{":
        raise _NotHar
    pos = _ws(text, pos + 1)
    while text[pos : pos + 1] == '"':
        k, pos = _DECODER.raw_decode(text, pos)
        pos = _ws(text, pos)
        if text[pos : pos + 1] != ":":
            raise _NotHar
        pos = _ws(text, pos + 1)
        if k == key:
            return pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _ws(text, pos)
        if text[pos : pos + 1] != ",":
            break
        pos = _ws(text, pos + 1)
    raise _NotHar


def _har_entries(text: str, rep: ReadReport) -> Iterator[object]:
    """The items of ``log.entries``, each decoded on its own (``json.loads`` of the whole file held every entry's objects
    at once: a 20 MB HAR took 1.5 GB).  A HAR cut short keeps the entries before the cut (``corrupt_record``)."""
    try:
        pos = _value_of(text, _value_of(text, _ws(text, 0), "log"), "entries")
    except (_NotHar, ValueError, RecursionError) as e:
        raise _NotHar from e
    if text[pos : pos + 1] != "[":
        raise _NotHar
    pos = _ws(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return
    while True:
        start = pos
        try:
            entry, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            rep.skipped["corrupt_record"] += 1
            rep.stop = f"entry at character {start:,} is not JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            rep.error = f"{rep.path}: {rep.stop}; {rep.flows:,} flows before it were read, the rest was not"
            return
        yield entry
        pos = _ws(text, pos)
        if text[pos : pos + 1] != ",":
            return  # "]" or whatever follows: the entries end here
        pos = _ws(text, pos + 1)


def _read_har(src: _Bounded, path: Path, rep: ReadReport) -> Iterator[http.HTTPFlow]:
    """Entries of a HAR file through mitmproxy's ``request_to_flow``, one at a time: a bad entry costs that entry.

    Memory: the file's text (1 to 4 bytes a character) plus one entry's objects at a time, under :data:`HAR_MAX_BYTES`.
    """
    raw = src.read(HAR_MAX_BYTES + 1)  # (a pipe has no size to check first)
    if rep.size > HAR_MAX_BYTES or len(raw) > HAR_MAX_BYTES:
        raise FlowFileError(f"{path}: a HAR file over the {HAR_MAX_BYTES:,}-byte cap (split it into smaller ones)")
    try:
        text = raw.decode("utf-8-sig")
        surrogates = _SURROGATE_ESCAPE.search(text) is not None  # JSON's "\udcff" is a lone surrogate too
    except UnicodeDecodeError:  # bytes the file had wrong: kept as surrogate escapes, written as escaped text
        text = raw.decode("utf-8-sig", "surrogateescape")
        surrogates = True
    del raw
    entries = _har_entries(text, rep)
    while True:
        try:
            entry = next(entries)
        except StopIteration:
            return
        except _NotHar:
            raise FlowFileError(f"{path}: not a mitmproxy flow file or HAR file (no JSON object with log.entries)") from None
        try:
            if not isinstance(entry, dict):
                raise TypeError("entry is not an object")
            if surrogates:
                _clean_har(entry, rep.problems)
            fl = request_to_flow(entry)
        except KeyError:
            rep.skipped["har_entry_missing_field"] += 1
            continue
        except (TypeError, AttributeError):
            rep.skipped["har_entry_wrong_type"] += 1
            continue
        except (Exception, RecursionError, MemoryError):  # mitmproxy's code on hostile content: any exception
            rep.skipped["bad_har_entry"] += 1
            continue
        finally:
            del entry
        rep.flows += 1
        yield fl


def read_flow_file(path: Path, *, report: ReadReport | None = None) -> Iterator[http.HTTPFlow]:
    """HTTP flows of a saved mitmproxy file or a HAR file.

    Records that cannot be read are skipped and counted in ``report`` (by reason); broken framing ends a mitmproxy
    file there (``report.error`` says where; the flows before it are yielded).  FlowFileError, with one line, when
    the file cannot be opened, is neither format, is empty, or holds no readable HTTP flow at all.
    """
    rep = report if report is not None else ReadReport(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as e:
        raise FlowFileError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        src = _Bounded(f)
        rep.size = src.size or 0
        try:
            head = f.peek(64)[:64] if hasattr(f, "peek") else b""
        except OSError as e:
            raise FlowFileError(f"{path}: cannot read: {e.strerror or e}") from e
        first = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1]
        if not head:
            raise FlowFileError(f"{path}: empty file")
        if first == b"{":
            reader = _read_har(src, path, rep)
        elif first.isdigit():
            reader = _read_mitm(src, path, rep)
        else:
            raise FlowFileError(f"{path}: not a mitmproxy flow file or HAR file")
        try:
            yield from reader
        except OSError as e:
            raise FlowFileError(f"{path}: cannot read: {e.strerror or e}") from e
    finally:
        f.close()
    if rep.flows == 0:
        why = rep.stop or ", ".join(f"{k}: {v:,}" for k, v in sorted(rep.skipped.items())) or "the file holds no flows"
        raise FlowFileError(f"{path}: no readable HTTP flow ({why})")
