"""The session folder's tables: the single source of truth for their columns.

Every table of a session folder is declared here once, as a list of
:class:`Column`.  The Arrow schemas used to write Parquet, the empty
DataFrames, the documentation (``egressaudit schema --markdown``, and
``docs/schema.md`` generated from it) and the tests all derive from these
declarations.  Column names carry their direction (``_out`` is from the
audited host, ``_in`` towards it) and unit (``bytes_``, ``packets_``, ``ts_``
are UTC timestamps with microsecond resolution).

``SCHEMA_VERSION`` changes whenever a column is added, removed or changes
meaning; it is written into every Parquet file's metadata and into
``session.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = "2.2"
"""2.0: http.parquet speaks the flows' vocabulary (local/remote, out/in, ts_start/ts_end, community_id); a markers table.
2.1: which process each flow and exchange belongs to, and how that was known (:class:`egressaudit.taxonomy.Attribution`); http.flow_id, the
packet flow an exchange was carried by.  A 2.0 table reads with these columns null.
2.2: a streams table: what each UDP media flow carried per second, per RTP stream (:mod:`egressaudit.flows.streams`);
sessions written before have none (read as an empty table)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    nullable: bool = True

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


TS = pa.timestamp("us", tz="UTC")


def _attribution(what: str) -> list[Column]:
    """The columns saying which process a row belongs to (``egressaudit session start``), for flows and http alike."""
    return [
        Column("pid", pa.int32(), f"Process that owned the {what} (null when not known)."),
        Column("process", pa.string(), "That process's name."),
        Column(
            "cmdline_hash",
            pa.string(),
            "Salted SHA-256 of its command line (per session): the same program run twice joins; its arguments stay private.",
        ),
        Column(
            "attributed_by",
            pa.string(),
            f'How the {what} was tied to the process: "netns" (the client ran in a network namespace of its own, every packet '
            'there is its), "socket-table" (the socket was seen owned by the process while it was open), "none" (not known; '
            "null in sessions written before schema 2.1).",
        ),
    ]


FLOWS: list[Column] = [
    Column("session_id", pa.string(), "Identifier of the session folder; join key across tables.", False),
    Column("flow_id", pa.int64(), "Number of the flow within the session, in order of first packet.", False),
    Column("community_id", pa.string(), "Community ID v1 of the 5-tuple (joins with Zeek, Suricata, Wireshark)."),
    Column("transport", pa.string(), '"tcp", "udp", or the IP protocol number for others (e.g. "icmp").', False),
    Column("ip_version", pa.int8(), "4 or 6.", False),
    Column("local_ip", pa.string(), "Address of the audited host's end.", False),
    Column("local_port", pa.int32(), "Port on the audited host's end (0 where the transport has none).", False),
    Column("remote_ip", pa.string(), "Address of the remote end.", False),
    Column("remote_port", pa.int32(), "Port on the remote end (0 where the transport has none).", False),
    Column(
        "is_local",
        pa.bool_(),
        "Remote end is on the local network (not egress): inside --local-net, or any private address "
        "without it; link-local, multicast and loopback always.",
        False,
    ),
    Column("bytes_out", pa.int64(), "IP bytes (headers included) sent by the audited host.", False),
    Column("bytes_in", pa.int64(), "IP bytes (headers included) received by the audited host.", False),
    Column("packets_out", pa.int64(), "Packets sent by the audited host.", False),
    Column("packets_in", pa.int64(), "Packets received by the audited host.", False),
    Column("payload_bytes_out", pa.int64(), "Transport payload bytes sent by the audited host.", False),
    Column("payload_bytes_in", pa.int64(), "Transport payload bytes received by the audited host.", False),
    Column("ts_start", TS, "Time of the flow's first packet.", False),
    Column("ts_end", TS, "Time of the flow's last packet.", False),
    Column("duration_s", pa.float64(), "ts_end - ts_start in seconds.", False),
    Column("fragments", pa.int64(), "IP fragments counted in this flow (first fragments carry the ports).", False),
    Column("hostname", pa.string(), "Remote host name, from the first of: TLS or QUIC SNI, HTTP Host, DNS answer seen earlier."),
    Column(
        "hostname_source",
        pa.string(),
        '"tls_sni", "quic_sni", "http_host", "tls_cert" (the server\'s certificate, TLS 1.2 and older), "dns", or "earlier_<source>" '
        "(the name an earlier flow to the same address and port carried); null otherwise.",
    ),
    Column("alpn", pa.string(), "ALPN protocols offered in the ClientHello, comma-separated."),
    Column(
        "app_protocol",
        pa.string(),
        'What the payload was recognised as: "tls", "quic", "http", "dns", "stun", "dtls", "rtp", "rtcp", "zoom_media", ... or null.',
    ),
    Column(
        "stun_packets",
        pa.int64(),
        "STUN/TURN messages among the packets inspected (both directions; the first 96 packets of a flow, then one in 32).",
        False,
    ),
    Column(
        "rtp_packets", pa.int64(), "RTP packets among the packets inspected (both directions; the first 96 packets of a flow, then one in 32).", False
    ),
    Column(
        "rtcp_packets",
        pa.int64(),
        "RTCP packets among the packets inspected (both directions; the first 96 packets of a flow, then one in 32).",
        False,
    ),
    Column(
        "dtls_packets",
        pa.int64(),
        "DTLS records among the packets inspected (both directions; the first 96 packets of a flow, then one in 32).",
        False,
    ),
    Column("rtp_payload_types", pa.list_(pa.int16()), "Distinct RTP payload types seen."),
    Column("ssrc_count", pa.int32(), "Distinct RTP SSRCs seen.", False),
    Column("media_kinds", pa.list_(pa.string()), 'Media kinds recognised: "audio", "video", "screen_share".'),
    Column("vendor", pa.string(), 'Operator of the remote end ("zoom", "microsoft", "google", ...) or null.'),
    Column("service", pa.string(), 'Vendor service ("meetings", "teams", "meet", ...) or null.'),
    Column("party", pa.string(), '"first" or "third" relative to the audited client, or "unknown".', False),
    Column("category", pa.string(), "media, content_upload, telemetry, signaling, auth, config_update, web_asset, dns, other or unknown.", False),
    Column("data_class", pa.string(), "customer_content, service_generated, service_operation or unknown (Zoom-terms vocabulary).", False),
    Column("rule", pa.string(), 'Which signature rule ("zoom/telemetry-log") or heuristic ("heuristic/rtp") decided.', False),
    Column("evidence", pa.string(), "Why: the facts the decision rested on, as a short human-readable string.", False),
    *_attribution("flow"),
]

HTTP: list[Column] = [
    Column("session_id", pa.string(), "Identifier of the session folder; join key across tables.", False),
    Column("exchange_id", pa.string(), "Identifier of the exchange (mitmproxy flow id, plus the message number for WebSocket messages).", False),
    Column("kind", pa.string(), '"http" for a request-response, "websocket" for one WebSocket message.', False),
    Column("ts_start", TS, "When the request (or WebSocket message) was sent.", False),
    Column("ts_end", TS, "When the response ended (the message's time for WebSocket messages; ts_start when there was no response).", False),
    Column(
        "community_id",
        pa.string(),
        "Community ID v1 of the TCP connection that carried the exchange out of the host (local_ip/local_port to "
        "remote_ip/remote_port): equal to flows.community_id of that connection's flow.",
    ),
    Column("local_ip", pa.string(), "Address of the audited host's end of that connection (the proxy's side when it connected upstream)."),
    Column("local_port", pa.int32(), "Port of the audited host's end of that connection."),
    Column("remote_ip", pa.string(), "Address of the remote end: the server (or the upstream proxy the exchange went through)."),
    Column("remote_port", pa.int32(), "Port of the remote end (the request's port when the proxy never connected, remote_ip then null)."),
    Column("client_ip", pa.string(), "Address of the client's connection to the proxy (the audited client's end, for attributing the exchange)."),
    Column("client_port", pa.int32(), "Source port of the client's connection to the proxy."),
    Column("host", pa.string(), "Host name of the request (Host / :authority / SNI)."),
    Column("scheme", pa.string(), '"http", "https", "ws" or "wss".'),
    Column("http_version", pa.string(), '"HTTP/1.1", "HTTP/2.0", ...'),
    Column("method", pa.string(), "Request method (null for WebSocket messages)."),
    Column("path", pa.string(), 'Request path; query values are redacted ("?k=…") unless the session keeps them.'),
    Column("status", pa.int32(), "Response status code, null when there was no response."),
    Column("direction", pa.string(), '"out" (client to server) or "in" for WebSocket messages; "out" for HTTP exchanges.', False),
    Column("content_type_out", pa.string(), "Content-Type of the request body (parameters dropped)."),
    Column("content_type_in", pa.string(), "Content-Type of the response body (parameters dropped)."),
    Column("encoding_out", pa.string(), "Content-Encoding of the request body (gzip, br, zstd, deflate) or null."),
    Column("bytes_out", pa.int64(), "Bytes sent: the request's head plus its body as sent (compressed); a WebSocket message from the client.", False),
    Column("body_bytes_out", pa.int64(), "Request body as sent (compressed size when encoded).", False),
    Column("decoded_bytes_out", pa.int64(), "Request body after removing the content encoding."),
    Column("bytes_in", pa.int64(), "Bytes received: the response's head plus its body as received; a WebSocket message from the server.", False),
    Column("body_bytes_in", pa.int64(), "Response body as received (compressed size when encoded).", False),
    Column("decoded_bytes_in", pa.int64(), "Response body after removing the content encoding."),
    Column(
        "body_format",
        pa.string(),
        "What the request (or message) body was decoded as: json, ndjson, form, multipart, protobuf, bond, "
        "sentry_envelope, text, binary:<type>, empty, or error:<reason>.",
    ),
    Column("body_sha256", pa.string(), "SHA-256 of the decoded request body (salted per session unless values are kept)."),
    Column("field_count", pa.int32(), "Leaf fields inventoried from the body (rows in fields.parquet).", False),
    Column("identifier_fields", pa.int32(), "Of those, fields whose values look like identifiers or personal data.", False),
    Column("vendor", pa.string(), "Operator of the server, from the same signature files as flows."),
    Column("service", pa.string(), "Vendor service."),
    Column("party", pa.string(), '"first", "third" or "unknown" relative to the audited client.', False),
    Column("category", pa.string(), "Same categories as flows.category.", False),
    Column("data_class", pa.string(), "Same data classes as flows.data_class.", False),
    Column("rule", pa.string(), "Signature rule or heuristic that decided.", False),
    Column("evidence", pa.string(), "Why, as a short human-readable string.", False),
    Column("error", pa.string(), "Connection or protocol error reported by the proxy, if any."),
    Column(
        "flow_id",
        pa.int64(),
        "flows.flow_id of the packet flow that carried the exchange, in a session with both (matched by community_id, or "
        "by the client's port and the time when the proxy was transparent); null when none was captured.",
    ),
    *_attribution("exchange's client connection"),
]

FIELDS: list[Column] = [
    Column("session_id", pa.string(), "Identifier of the session folder.", False),
    Column("exchange_id", pa.string(), "The exchange (http.exchange_id) whose body held the field.", False),
    Column("host", pa.string(), "Host the body was sent to."),
    Column("vendor", pa.string(), "Vendor of that host."),
    Column("category", pa.string(), "Category of the exchange.", False),
    Column(
        "key_path",
        pa.string(),
        'Path of the field in the body, list indexes folded: "events[].device.model", "#3.1" for protobuf field numbers.',
        False,
    ),
    Column("value_type", pa.string(), "string, int, float, bool, null, bytes, varint, fixed32, fixed64, ...", False),
    Column("count", pa.int32(), "How many times the path occurs in this body.", False),
    Column(
        "detectors",
        pa.list_(pa.string()),
        'What the values look like: "email", "phone", "ipv4", "ipv6", "mac", "uuid", "device_id", "serial", '
        '"meeting_id", "seen_name", and content leaks "meeting_title", "chat_text", "file_name", "transcript".',
    ),
    Column("value_hash", pa.string(), "Salted SHA-256 (per session) of the first value: equal values join across exchanges without being stored."),
    Column("value", pa.string(), "The first value in clear, only with --keep-values."),
    Column(
        "value_length",
        pa.int32(),
        "Length of the first value's text.",
    ),
]

MARKERS: list[Column] = [
    Column("session_id", pa.string(), "Identifier of the session folder.", False),
    Column("ts", TS, "When the state began.", False),
    Column(
        "state",
        pa.string(),
        "Call state from then on: joining, lobby, talking, muted, unmuted, camera-on, camera-off, screen-share-start, "
        "screen-share-stop, chat, upload, idle, left, or the user's own word.",
        False,
    ),
    Column("note", pa.string(), "Free text the user gave with the marker."),
    Column("source", pa.string(), 'Who set it: "cli" (egressaudit session mark), "live" (a key in the live view), "lab" (a scripted call).', False),
]

STREAMS: list[Column] = [
    Column("session_id", pa.string(), "Identifier of the session folder; join key across tables.", False),
    Column("flow_id", pa.int64(), "flows.flow_id of the UDP media flow the packets belong to.", False),
    Column("ts", TS, "Start of the one-second bin (whole UTC seconds) the packets fall in.", False),
    Column("direction", pa.string(), '"out" (sent by the audited host) or "in" (received by it).', False),
    Column(
        "kind",
        pa.string(),
        'What the payloads were, by their first byte (RFC 7983): "rtp", "rtcp", "stun", "dtls" (handshake, alert), '
        '"data_channel" (DTLS application data: SCTP), "turn_channel" (TURN ChannelData), "other" (anything else, '
        "Zoom's encapsulated media included, or too short to read).",
        False,
    ),
    Column("ssrc", pa.int64(), "RTP SSRC (rtp rows), the sender's SSRC (rtcp rows); null for the other kinds."),
    Column("payload_type", pa.int16(), "RTP payload type (rtp rows), the first RTCP packet's type (rtcp rows: 200 SR, 201 RR, ...); null otherwise."),
    Column("packets", pa.int64(), "Packets in the bin (IP fragments after the first counted with their first fragment's row).", False),
    Column("bytes", pa.int64(), "IP bytes (headers included), as flows.bytes_out/bytes_in count them.", False),
    Column("payload_bytes", pa.int64(), "UDP payload bytes, as flows.payload_bytes_out/_in count them.", False),
    Column("marker_packets", pa.int64(), "RTP packets with the marker bit set (a video frame's last packet, a talk spurt's first).", False),
]
"""Per UDP media flow, one-second bin, direction and stream: sums that add up to the flow's counters."""

TABLES: dict[str, list[Column]] = {"flows": FLOWS, "http": HTTP, "fields": FIELDS, "markers": MARKERS, "streams": STREAMS}

HTTP_1_0_NAMES: dict[str, str] = {
    "ts": "ts_start",
    "server_ip": "remote_ip",
    "server_port": "remote_port",
    "request_content_type": "content_type_out",
    "response_content_type": "content_type_in",
    "request_encoding": "encoding_out",
    "request_wire_bytes": "bytes_out",
    "request_body_bytes": "body_bytes_out",
    "request_decoded_bytes": "decoded_bytes_out",
    "response_wire_bytes": "bytes_in",
    "response_body_bytes": "body_bytes_in",
    "response_decoded_bytes": "decoded_bytes_in",
}
"""http.parquet's columns in schema 1.0 that have another name in 2.0 (the rest kept theirs; 2.0 added ``ts_end``,
``community_id``, ``local_ip`` and ``local_port``): what :func:`egressaudit.session.migrate` reads old folders with."""


ATTRIBUTION_COLUMNS = ("pid", "process", "cmdline_hash", "attributed_by")


def with_attribution(table: str, t: pa.Table, attributed_by: str = "none") -> pa.Table:
    """``t`` with the attribution columns a writer that knows no process fills: no pid, ``attributed_by`` as given."""
    for f in arrow_schema(table):
        if f.name in ATTRIBUTION_COLUMNS and f.name not in t.column_names:
            value = attributed_by if f.name == "attributed_by" else None
            t = t.append_column(f, pa.array([value] * t.num_rows, f.type))
    return t


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table, with the schema version in its metadata."""
    cols = TABLES[table]
    return pa.schema(
        [c.field() for c in cols], metadata={b"egressaudit.schema_version": SCHEMA_VERSION.encode(), b"egressaudit.table": table.encode()}
    )


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]


def to_table(table: str, rows: list[dict[str, Any]] | dict[str, list[Any]], problems: Counter[str] | None = None) -> pa.Table:
    """Rows (dicts keyed by column name), or columns (lists keyed by name), as a typed Arrow table; missing ones are null.

    Values that the column cannot hold never reach the writer: when Arrow refuses
    the columns as given (or accepts what a reader could not use: nulls in a
    non-nullable column, timestamps out of range), every row is fitted with
    :func:`fit_row` and each change counted in ``problems`` as
    ``"<table>.<column>:<reason>"``.  Valid rows cost nothing more.
    """
    if isinstance(rows, dict):
        n = len(next(iter(rows.values()), []))
        columns = {c.name: rows.get(c.name, [None] * n) for c in TABLES[table]}
    else:
        columns = {c.name: [r.get(c.name) for r in rows] for c in TABLES[table]}
    schema = arrow_schema(table)
    try:
        t = pa.Table.from_pydict(columns, schema=schema)
        if _holds(t):
            return t
    except (pa.ArrowException, UnicodeError, OverflowError, TypeError, ValueError):
        pass
    counts: Counter[str] = Counter()
    names = list(columns)
    fitted = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    specs = column_specs(table)
    for row in fitted:
        fit_row(row, specs, counts)
    if problems is not None:
        problems.update({f"{table}.{k}": n for k, n in counts.items()})
    return pa.Table.from_pydict({name: [r[name] for r in fitted] for name in names}, schema=schema)


def _holds(t: pa.Table) -> bool:
    """What Arrow accepted but a reader could not use: nulls in non-nullable columns, timestamps out of range."""
    for i, f in enumerate(t.schema):
        col = t.column(i)
        if not f.nullable and col.null_count:
            return False
        if pa.types.is_timestamp(f.type) and len(col) > col.null_count:
            lo, hi = pc.min_max(col.cast(pa.int64())).values()
            if lo.as_py() < TS_MIN_US or hi.as_py() > TS_MAX_US:
                return False
    return True


TS_MIN_US = 0
"""Earliest timestamp a table holds (1970-01-01T00:00:00Z, in microseconds since the epoch); earlier ones are clamped."""
TS_MAX_US = 9214646400_000000
"""Latest timestamp a table holds (2262-01-01T00:00:00Z), inside the range of pandas' nanosecond timestamps, which
reports and notebooks use; later ones are clamped.  Every path that writes a timestamp clamps to this range."""
_INT_RANGES = {8: (-(1 << 7), (1 << 7) - 1), 16: (-(1 << 15), (1 << 15) - 1), 32: (-(1 << 31), (1 << 31) - 1), 64: (-(1 << 63), (1 << 63) - 1)}


def escape_text(value: str) -> str:
    """Text that UTF-8 cannot encode (bytes kept as surrogate escapes, lone surrogates) as escaped text: ``\\xff``, ``\\udc80``."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8(value: str) -> bool:
    """Whether Arrow can write ``value`` (no surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeError:
        return False
    return True


def as_text(v: object) -> str:
    """Any value as text a string column holds (bytes decoded with escapes, at most 4 KiB of a foreign value)."""
    if isinstance(v, str):
        return escape_text(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)[:4096].decode("utf-8", "backslashreplace")
    try:
        text = repr(v) if not isinstance(v, int | float) else str(v)
    except Exception:  # a repr that fails: say what it was
        text = f"<{type(v).__name__}>"
    return escape_text(text[:4096])


def as_int(v: object) -> int | None:
    """An integer for ``v`` (bools, finite floats, datetimes as microseconds since the epoch), or None."""
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    if isinstance(v, datetime):
        try:
            return int(v.timestamp() * 1_000_000)
        except (OverflowError, ValueError, OSError):
            return None
    return None


@dataclass(frozen=True)
class ColumnSpec:
    """What :func:`fit_row` checks of one column."""

    name: str
    kind: str  # str, int, ts, float, bool, str_list, int_list, other
    lo: int
    hi: int
    nullable: bool


def _spec(c: Column) -> ColumnSpec:
    t = c.type
    if pa.types.is_string(t):
        return ColumnSpec(c.name, "str", 0, 0, c.nullable)
    if pa.types.is_timestamp(t):
        return ColumnSpec(c.name, "ts", TS_MIN_US, TS_MAX_US, c.nullable)
    if pa.types.is_integer(t):
        return ColumnSpec(c.name, "int", *_INT_RANGES[t.bit_width], c.nullable)
    if pa.types.is_floating(t):
        return ColumnSpec(c.name, "float", 0, 0, c.nullable)
    if pa.types.is_boolean(t):
        return ColumnSpec(c.name, "bool", 0, 0, c.nullable)
    if pa.types.is_list(t) and pa.types.is_string(t.value_type):
        return ColumnSpec(c.name, "str_list", 0, 0, c.nullable)
    if pa.types.is_list(t) and pa.types.is_integer(t.value_type):
        return ColumnSpec(c.name, "int_list", *_INT_RANGES[t.value_type.bit_width], c.nullable)
    return ColumnSpec(c.name, "other", 0, 0, c.nullable)


def column_specs(table: str, names: tuple[str, ...] | None = None) -> tuple[ColumnSpec, ...]:
    """The checks of a table's columns (all, or those named), for :func:`fit_row`."""
    return tuple(_spec(c) for c in TABLES[table] if names is None or c.name in names)


_EMPTY: dict[str, Any] = {"str": "", "int": 0, "ts": TS_MIN_US, "float": 0.0, "bool": False, "str_list": [], "int_list": []}


def fit_row(row: dict[str, Any], specs: tuple[ColumnSpec, ...], problems: Counter[str]) -> None:
    """Make every value of ``row`` one its column holds, in place, counting each change as ``<column>:<reason>``
    (missing, not_utf8, wrong_type, out_of_range): text that is not UTF-8 becomes escaped text, integers out of range
    become null (clamped where the column has no null, and timestamps always), wrong types are converted or nulled."""
    for s in specs:
        v = row.get(s.name)
        if v is None:
            if not s.nullable:
                problems[f"{s.name}:missing"] += 1
                row[s.name] = _EMPTY.get(s.kind)
            continue
        kind = s.kind
        if kind == "str":
            if type(v) is str:
                if not is_utf8(v):
                    problems[f"{s.name}:not_utf8"] += 1
                    row[s.name] = escape_text(v)
                continue
            problems[f"{s.name}:wrong_type"] += 1
            row[s.name] = as_text(v)
        elif kind in ("int", "ts"):
            if type(v) is not int:
                problems[f"{s.name}:wrong_type"] += 1
                v = as_int(v)
                if v is None:
                    row[s.name] = None if s.nullable and kind == "int" else _EMPTY[kind]
                    continue
            if not s.lo <= v <= s.hi:
                problems[f"{s.name}:out_of_range"] += 1
                v = None if s.nullable and kind == "int" else min(max(v, s.lo), s.hi)
            row[s.name] = v
        elif kind == "float":
            if not isinstance(v, int | float) or isinstance(v, bool):
                problems[f"{s.name}:wrong_type"] += 1
                row[s.name] = None if s.nullable else 0.0
        elif kind == "bool":
            if not isinstance(v, bool):
                problems[f"{s.name}:wrong_type"] += 1
                row[s.name] = bool(v) if isinstance(v, int | float | str) else (None if s.nullable else False)
        elif kind == "str_list":
            if not isinstance(v, list | tuple):
                problems[f"{s.name}:wrong_type"] += 1
                row[s.name] = None if s.nullable else []
            elif not all(type(x) is str and is_utf8(x) for x in v):
                problems[f"{s.name}:not_utf8"] += 1
                row[s.name] = [as_text(x) for x in v]
        elif kind == "int_list":
            if not isinstance(v, list | tuple):
                problems[f"{s.name}:wrong_type"] += 1
                row[s.name] = None if s.nullable else []
            elif not all(type(x) is int and s.lo <= x <= s.hi for x in v):
                problems[f"{s.name}:out_of_range"] += 1
                row[s.name] = [x for x in (as_int(y) for y in v) if x is not None and s.lo <= x <= s.hi]


def markdown(table: str | None = None) -> str:
    """Documentation of the tables, generated from the declarations above."""
    out = [f"# Session folder tables (schema version {SCHEMA_VERSION})", ""]
    for name, cols in TABLES.items():
        if table and name != table:
            continue
        out += [f"## `{name}.parquet`", "", "| column | type | nullable | meaning |", "| --- | --- | --- | --- |"]
        for c in cols:
            out.append(f"| `{c.name}` | `{c.type}` | {'yes' if c.nullable else 'no'} | {c.doc} |")
        out.append("")
    return "\n".join(out)


def version_of(t: pa.Table | pa.Schema) -> str:
    """The schema version a table was written with (its Parquet metadata; "1.0" for files that do not say)."""
    meta = (t.schema if isinstance(t, pa.Table) else t).metadata or {}
    return (meta.get(b"egressaudit.schema_version") or b"1.0").decode("ascii", "replace")


def upgrade(table: str, t: pa.Table) -> pa.Table:
    """A table written with an older schema, with this version's columns: renamed (:data:`HTTP_1_0_NAMES`), the new
    ones added (``ts_end`` from ``ts_start``, the rest null), in order and cast.  Tables of this version pass through
    as they are; ValueError when a column cannot be made."""
    if version_of(t).split(".")[0] == SCHEMA_VERSION.split(".")[0]:
        missing = [f for f in arrow_schema(table) if f.name not in t.column_names]
        if not missing:
            return t
        for f in missing:  # a minor version added them (2.1: attribution): null where the writer did not know
            t = t.append_column(f, pa.nulls(t.num_rows, f.type))
        return t.select(column_names(table)).cast(arrow_schema(table))
    if table == "http":
        t = t.rename_columns([HTTP_1_0_NAMES.get(n, n) for n in t.column_names])
        if "ts_end" not in t.column_names and "ts_start" in t.column_names:
            t = t.append_column("ts_end", t.column("ts_start"))
    schema = arrow_schema(table)
    cols = [t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)
