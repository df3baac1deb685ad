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

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    nullable: bool = True

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


TS = pa.timestamp("us", tz="UTC")

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
    Column("is_local", pa.bool_(), "Remote end is on the local network (not egress): inside --local-net, or any private address "
        "without it; link-local, multicast and loopback always.", False),
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
    Column("hostname_source", pa.string(), '"tls_sni", "quic_sni", "http_host", "dns" or null.'),
    Column("alpn", pa.string(), "ALPN protocols offered in the ClientHello, comma-separated."),
    Column(
        "app_protocol",
        pa.string(),
        'What the payload was recognised as: "tls", "quic", "http", "dns", "stun", "dtls", "rtp", "rtcp", "zoom_media", ... or null.',
    ),
    Column("stun_packets", pa.int64(), "STUN/TURN messages seen (both directions).", False),
    Column("rtp_packets", pa.int64(), "RTP packets seen (both directions).", False),
    Column("rtcp_packets", pa.int64(), "RTCP packets seen (both directions).", False),
    Column("dtls_packets", pa.int64(), "DTLS records seen (both directions).", False),
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
]

TABLES: dict[str, list[Column]] = {"flows": FLOWS}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table, with the schema version in its metadata."""
    cols = TABLES[table]
    return pa.schema(
        [c.field() for c in cols], metadata={b"egressaudit.schema_version": SCHEMA_VERSION.encode(), b"egressaudit.table": table.encode()}
    )


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]


def to_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column name) as a typed Arrow table; missing keys are null."""
    schema = arrow_schema(table)
    columns = {c.name: [r.get(c.name) for r in rows] for c in TABLES[table]}
    return pa.Table.from_pydict(columns, schema=schema)


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
