"""Offline audit: capture files -> flows -> classified ``flows.parquet`` + ``session.json``; then the media flows'
per-second, per-stream split (``streams.parquet``, :mod:`egressaudit.flows.streams`), from a second pass over the
captures that only sessions with UDP media flows pay for."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from egressaudit import schema as schema_mod
from egressaudit.capture.frames import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, SUPPORTED_LINKTYPES
from egressaudit.capture.reader import TS_MAX_S, TS_MIN_S, CaptureError, ReadStats, iter_batches
from egressaudit.classify.engine import FlowFacts, classify
from egressaudit.classify.memory import AddressMemory
from egressaudit.classify.party import decide_audited_client, first_party_vendors, party_array
from egressaudit.flows.columnar import ColumnarFlowTable, decode_batch
from egressaudit.flows.orient import Orientation, Sides, community_id, sides
from egressaudit.flows.streams import media_streams
from egressaudit.flows.table import Flow, ip_str
from egressaudit.signatures import SignatureDB, default_db
from egressaudit.taxonomy import Category, DataClass

TRANSPORT_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmp6"}


@dataclass
class AnalyzeOptions:
    local_nets: Sequence[str] = ()
    client: str | None = None
    idle_timeout: float = 120.0
    session_id: str | None = None


@dataclass
class AnalyzeResult:
    table: pa.Table  # flows.parquet (schema.FLOWS)
    session: dict[str, Any]
    inputs: list[ReadStats] = field(default_factory=list)
    streams: pa.Table | None = None  # streams.parquet (schema.STREAMS); None when no flow is UDP media

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The flows as one dict per flow (timestamps as microseconds since the epoch, as they are built)."""
        t = self.table
        plain = [t.column(i).cast(pa.int64()) if pa.types.is_timestamp(f.type) else t.column(i) for i, f in enumerate(t.schema)]
        return pa.table(plain, names=t.column_names).to_pylist()  # type: ignore[no-any-return]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def analyze(
    inputs: Sequence[Path], opts: AnalyzeOptions, db: SignatureDB | None = None, progress: Callable[[int], None] | None = None
) -> AnalyzeResult:
    """Read the captures and classify every flow.  Raises CaptureError for unreadable inputs."""
    # Flows, rows and verdicts hold no reference cycles; the cyclic collector would walk every live flow
    # again and again as they pile up (a fifth of the time on a capture with 100k flows).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _analyze(inputs, opts, db or default_db(), progress)
    finally:
        if was_enabled:
            gc.enable()


def _analyze(inputs: Sequence[Path], opts: AnalyzeOptions, db: SignatureDB, progress: Callable[[int], None] | None) -> AnalyzeResult:
    finished: list[Flow] = []
    table = ColumnarFlowTable(finished.append, idle_timeout=opts.idle_timeout)
    skipped: Counter[str] = Counter()
    stats_list: list[ReadStats] = []
    linktypes: Counter[int] = Counter()
    started = time.time()
    frames = n_batches = 0
    for path in inputs:
        stats = ReadStats(path=str(path))
        stats_list.append(stats)
        for batch in iter_batches(path, stats):
            kinds, counts = np.unique(batch.linktype, return_counts=True)
            linktypes.update(dict(zip(kinds.tolist(), counts.tolist(), strict=True)))
            table.add_batch(decode_batch(batch, skipped))
            frames += batch.frames
            if progress is not None:
                progress(frames)
            n_batches += 1
            if n_batches % 8 == 0:
                _release_memory()  # the batches' arrays, freed: about a third of the peak otherwise
        if stats.truncated:
            skipped["truncated_record"] += stats.truncated
        if stats.corrupt:
            skipped["corrupt_record"] += stats.corrupt
        skipped.update(stats.skipped)
        if stats.timestamps_clamped:
            stats.error(
                f"{path}: {stats.timestamps_clamped:,} packet timestamps outside {_iso(TS_MIN_S)}..{_iso(TS_MAX_S)} were clamped to that range"
            )
    table.flush()
    skipped["orphan_fragment"] += table.orphan_fragments

    orient = Orientation(finished, opts.local_nets)
    flows_table, tally = _flow_table(finished, orient, db)
    _release_memory()
    choice = decide_audited_client(tally.by_vendor, db)
    client = opts.client or choice.vendor
    first = first_party_vendors(client, db)
    session_id = opts.session_id or "session"
    n = flows_table.num_rows
    flows_table = flows_table.append_column(pa.field("session_id", pa.string(), nullable=False), pa.array([session_id] * n, pa.string()))
    flows_table = flows_table.append_column(pa.field("party", pa.string(), nullable=False), party_array(flows_table.column("vendor"), first))
    flows_table = schema_mod.with_attribution("flows", flows_table)  # a capture file does not say which process sent what
    flows_table = flows_table.select(schema_mod.column_names("flows")).cast(schema_mod.arrow_schema("flows"))
    streams = media_streams(inputs, flows_table, session_id, idle_timeout=opts.idle_timeout)
    session = {
        "session_id": session_id,
        "audited_client": client,
        "audited_client_source": "option" if opts.client else ("auto" if client else None),
        "audited_client_reason": "named with --client" if opts.client else choice.reason,
        "local_nets": list(opts.local_nets),
        "local_hosts": [ip for ip, _ in tally.local_hosts.most_common(8)],
        "idle_timeout_s": opts.idle_timeout,
        "inputs": [
            {
                "path": s.path,
                "sha256": s.sha256,
                "bytes": s.file_bytes,
                "format": s.format,
                "packets": s.frames,
                "truncated_records": s.truncated,
                "corrupt_records": s.corrupt,
                "skipped_blocks": dict(sorted(s.skipped.items())),
                "timestamps_clamped": s.timestamps_clamped,
                "errors": s.errors,
                "snapped_packets": s.snapped,
                "interfaces": s.interfaces,
                "interface_count": s.interface_count,
            }
            for s in stats_list
        ],
        "counts": {
            "packets": sum(s.frames for s in stats_list),
            "packets_in_flows": table.packets - table.orphan_fragments,
            "flows": n,
            "fragments": tally.fragments,
            "skipped": dict(sorted(skipped.items())),
            "skipped_total": sum(skipped.values()),
            "timestamps_clamped": sum(s.timestamps_clamped for s in stats_list),
            "timestamp_range": [_iso(TS_MIN_S), _iso(TS_MAX_S)],
            "linktypes": {SUPPORTED_LINKTYPES.get(k, str(k)): n for k, n in sorted(linktypes.items())},
            "by_data_class_bytes_out": {d.value: tally.egress_by_class.get(d.value, 0) for d in DataClass},
        },
        "elapsed_s": round(time.time() - started, 3),
    }
    return AnalyzeResult(flows_table, session, stats_list, streams)


@dataclass
class _Tally:
    """What session.json needs from the flows, summed while they become rows."""

    by_vendor: list[tuple[str | None, Category, int]] = field(default_factory=list)  # per flow: vendor, category, bytes
    local_hosts: Counter[str] = field(default_factory=Counter)
    egress_by_class: Counter[str] = field(default_factory=Counter)
    fragments: int = 0


def _release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise): peak RSS is what users of big captures meet."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


class FlowRow(NamedTuple):
    """One row of flows.parquet as ``_flow_table`` builds it (the columns besides ``session_id`` and ``party``, which
    are decided for the whole session afterwards); named, so that a value cannot land in its neighbour's column."""

    flow_id: int
    community_id: str | None
    transport: str
    ip_version: int
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    is_local: bool
    bytes_out: int
    bytes_in: int
    packets_out: int
    packets_in: int
    payload_bytes_out: int
    payload_bytes_in: int
    ts_start: int
    ts_end: int
    duration_s: float
    fragments: int
    hostname: str | None
    hostname_source: str | None
    alpn: str | None
    app_protocol: str | None
    stun_packets: int
    rtp_packets: int
    rtcp_packets: int
    dtls_packets: int
    rtp_payload_types: list[int] | None
    ssrc_count: int
    media_kinds: list[str] | None
    vendor: str | None
    service: str | None
    category: str
    data_class: str
    rule: str
    evidence: str


def _flow_table(flows: list[Flow], orient: Orientation, db: SignatureDB) -> tuple[pa.Table, _Tally]:
    """The flows table (without session_id and party), in order of first packet, and the session's sums.

    Empties ``flows`` as it goes, and turns every few thousand rows into Arrow
    arrays at once, so that the flows, the rows and the table are not all in
    memory together.
    """
    full = schema_mod.arrow_schema("flows")
    schema = pa.schema([full.field(name) for name in FlowRow._fields])
    types = schema.types
    batches: list[pa.RecordBatch] = []
    rows: list[FlowRow] = []
    tally = _Tally()
    local_text: dict[bytes, str] = {}  # the few local addresses, as text
    memory = AddressMemory()  # names flows carried, for the later flows to their address and port that carry none

    def to_arrow() -> None:
        cols = zip(*rows, strict=True)
        batches.append(pa.RecordBatch.from_arrays([pa.array(c, t) for c, t in zip(cols, types, strict=True)], schema=schema))
        rows.clear()

    # Oldest first; each flow is popped as it becomes a row, so the flows' memory is freed while the columns grow.
    flows.sort(key=lambda f: (f.ts_first, f.seq), reverse=True)
    i = -1
    while flows:
        f = flows.pop()
        i += 1
        sd = sides(f, orient.a_is_local(f))
        facts = flow_facts(f, sd, orient)
        memory.recall(facts)
        transport, is_local, hostname, hsource = facts.transport, facts.is_local, facts.hostname, facts.hostname_source
        remote_ip = facts.remote_ip or ""
        media_kinds = list(facts.media_kinds)
        v = classify(facts, db)
        memory.learn(facts)
        data_class = v.data_class.value
        tally.by_vendor.append((v.vendor, v.category, sd.bytes_out + sd.bytes_in))
        local_ip = local_text.get(sd.local_ip)
        if local_ip is None:
            local_ip = local_text[sd.local_ip] = ip_str(sd.local_ip)
        tally.local_hosts[local_ip] += sd.packets_out + sd.packets_in
        tally.fragments += f.fragments
        if not is_local:
            tally.egress_by_class[data_class] += sd.bytes_out
        rows.append(
            FlowRow(
                flow_id=i, community_id=community_id(f), transport=transport, ip_version=f.version, local_ip=local_ip,
                local_port=sd.local_port, remote_ip=remote_ip, remote_port=sd.remote_port, is_local=is_local,
                bytes_out=sd.bytes_out, bytes_in=sd.bytes_in, packets_out=sd.packets_out, packets_in=sd.packets_in,
                payload_bytes_out=sd.payload_bytes_out, payload_bytes_in=sd.payload_bytes_in,
                ts_start=round(f.ts_first * 1e6), ts_end=round(f.ts_last * 1e6), duration_s=round(f.ts_last - f.ts_first, 6),
                fragments=f.fragments, hostname=hostname, hostname_source=hsource, alpn=",".join(f.alpn) or None,
                app_protocol=f.app_protocol, stun_packets=f.stun, rtp_packets=f.rtp, rtcp_packets=f.rtcp, dtls_packets=f.dtls,
                rtp_payload_types=sorted(f.pts) or None, ssrc_count=len(f.ssrcs), media_kinds=media_kinds or None,
                vendor=v.vendor, service=v.service, category=v.category.value, data_class=data_class, rule=v.rule, evidence=v.evidence,
            )
        )  # fmt: skip
        if len(rows) >= 16384:
            to_arrow()
    if rows:
        to_arrow()
    return pa.Table.from_batches(batches, schema=schema), tally


__all__ = ["AnalyzeOptions", "AnalyzeResult", "CaptureError", "FlowRow", "analyze"]


def flow_facts(f: Flow, sd: Sides, orient: Orientation) -> FlowFacts:
    """What classification looks at for one flow, seen from its local end ``sd`` (the live view of ``session start``
    classifies flows still running with it too)."""
    transport = TRANSPORT_NAMES.get(f.proto, str(f.proto))
    rip = sd.remote_ip
    remote_ip = ip_str(rip) if len(rip) == 4 else str(orient.addr(rip))  # (ipaddress's IPv6 text, as before)
    hostname, hsource = f.hostname, f.hostname_source
    if (hostname is None or hsource == "tls_cert") and f.dns_name:  # a certificate's name is the least specific
        hostname, hsource = f.dns_name, "dns"
    return FlowFacts(
        transport=transport,
        remote_ip=remote_ip,
        remote_port=sd.remote_port,
        local_port=sd.local_port,
        hostname=hostname,
        hostname_source=hsource,
        app_protocol=f.app_protocol,
        packets=sd.packets_out + sd.packets_in,
        payload_bytes=sd.payload_bytes_out + sd.payload_bytes_in,
        duration_s=f.ts_last - f.ts_first,
        packets_out=sd.packets_out,
        packets_in=sd.packets_in,
        payload_bytes_out=sd.payload_bytes_out,
        payload_bytes_in=sd.payload_bytes_in,
        stun=f.stun,
        rtp=f.rtp,
        rtcp=f.rtcp,
        dtls=f.dtls,
        media_kinds=tuple(sorted(f.media_kinds)),
        vendor_hints=tuple(sorted(f.vendor_hints)),
        is_local=orient.remote_is_local(rip),
        alpn=f.alpn,
        quic=f.quic.form if f.quic is not None else None,
    )
