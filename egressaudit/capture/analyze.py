"""Offline audit: capture files -> flows -> classified ``flows.parquet`` + ``session.json``."""

from __future__ import annotations

import base64
import bisect
import ctypes
import ctypes.util
import gc
import hashlib
import ipaddress
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import communityid
import numpy as np
import pyarrow as pa

from egressaudit import schema as schema_mod
from egressaudit.capture.columnar import ColumnarFlowTable, decode_batch
from egressaudit.capture.flows import Flow, ip_str
from egressaudit.capture.frames import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, SUPPORTED_LINKTYPES
from egressaudit.capture.reader import TS_MAX_S, TS_MIN_S, CaptureError, ReadStats, iter_batches
from egressaudit.classify.engine import FlowFacts, choose_audited_client, classify, first_party_vendors, party_of
from egressaudit.signatures import SignatureDB, default_db
from egressaudit.taxonomy import Category, DataClass

TRANSPORT_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmp6"}
_NETS = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The flows as one dict per flow (timestamps as microseconds since the epoch, as they are built)."""
        t = self.table
        plain = [t.column(i).cast(pa.int64()) if pa.types.is_timestamp(f.type) else t.column(i) for i, f in enumerate(t.schema)]
        return pa.table(plain, names=t.column_names).to_pylist()  # type: ignore[no-any-return]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_nonunicast(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.is_multicast or addr.is_unspecified:
        return True
    if addr.version == 4 and (int(addr) == 0xFFFFFFFF or (int(addr) & 0xFF) == 0xFF):
        return True  # limited or (likely) directed broadcast
    return False


def _is_local_range(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return bool(addr.is_private or addr.is_link_local or addr.is_loopback or addr.is_multicast or addr.is_unspecified or _is_nonunicast(addr))


def community_id_v1(proto: int, a_ip: bytes, b_ip: bytes, a_port: int, b_port: int, seed: int = 0) -> str:
    """Community ID v1 of a TCP or UDP flow (https://github.com/corelight/community-id-spec).

    The same hash as the ``communityid`` package, which is used for every other
    protocol and checked against this in tests; computed inline here because
    building its FlowTuple objects cost ~45 µs a flow, a fifth of ingest time on
    captures with many short flows.
    """
    if (a_ip, a_port) > (b_ip, b_port):
        a_ip, b_ip, a_port, b_port = b_ip, a_ip, b_port, a_port
    digest = hashlib.sha1(_CID_HEAD.pack(seed) + a_ip + b_ip + _CID_TAIL.pack(proto, 0, a_port, b_port)).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")


_CID_HEAD = struct.Struct("!H")
_CID_TAIL = struct.Struct("!BBHH")


def _special_ranges() -> dict[int, tuple[list[int], list[int]]] | None:
    """Merged integer ranges (starts, ends per IP version) holding every address for which one of ipaddress's
    is_private, is_link_local, is_loopback, is_multicast or is_unspecified can be true.

    Outside them all five are false, which spares building an address object
    and walking ipaddress's network lists for each of the many public
    addresses of a capture.  Read from this Python's ipaddress module itself;
    None (every address takes the slow path) where it does not expose them.
    tests/test_flows.py checks both paths agree.
    """
    try:
        c4, c6 = ipaddress._IPv4Constants, ipaddress._IPv6Constants  # type: ignore[attr-defined]
        nets = [*c4._private_networks, c4._linklocal_network, c4._loopback_network, c4._multicast_network]
        nets += [*c6._private_networks, c6._linklocal_network, c6._multicast_network]
        # IPv6 loopback and unspecified are tested by value; IPv4-mapped addresses may be judged as the IPv4 address
        nets += [ipaddress.ip_network(n) for n in ("::1/128", "::/128", "0.0.0.0/32", "::ffff:0:0/96")]
    except AttributeError:
        return None
    out: dict[int, tuple[list[int], list[int]]] = {}
    for version in (4, 6):
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version)
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in spans:
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        out[version] = (starts, ends)
    return out


_SPECIAL = _special_ranges()


def maybe_special(packed: bytes) -> bool:
    """False only when the address is in none of ipaddress's private, link-local, loopback, multicast or unspecified ranges."""
    if _SPECIAL is None:
        return True
    starts, ends = _SPECIAL[4 if len(packed) == 4 else 6]
    a = int.from_bytes(packed, "big")
    i = bisect.bisect_right(starts, a) - 1
    return i >= 0 and a <= ends[i]


class Orientation:
    """Decides which end of each flow is the audited host.

    With ``--local-net`` the ends inside those networks are local.  Otherwise
    the audited hosts are the private (RFC 1918 / ULA / link-local) unicast
    addresses; when both or neither end is private, the end seen in more flows
    (the capturing host is in nearly all of them) is local, then the client
    (the TCP SYN's sender or the first packet's sender).
    """

    def __init__(self, flows: Sequence[Flow], local_nets: Sequence[str]) -> None:
        self.nets: list[_NETS] = [ipaddress.ip_network(n, strict=False) for n in local_nets]
        self._net_ranges = [(n.version, int(n.network_address), int(n.broadcast_address)) for n in self.nets]
        self.degree: Counter[bytes] = Counter()
        for f in flows:
            self.degree[f.a_ip] += 1
            self.degree[f.b_ip] += 1
        self._addr: dict[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._facts: dict[bytes, tuple[bool, bool, bool]] = {}

    def addr(self, packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        a = self._addr.get(packed)
        if a is None:
            a = self._addr[packed] = ipaddress.ip_address(packed)
        return a

    def facts(self, packed: bytes) -> tuple[bool, bool, bool]:
        """(a candidate for the audited host, not unicast, traffic to it stays local) for one address; cached."""
        r = self._facts.get(packed)
        if r is not None:
            return r
        version, value = (4 if len(packed) == 4 else 6), int.from_bytes(packed, "big")
        in_nets = any(v == version and lo <= value <= hi for v, lo, hi in self._net_ranges)
        if not maybe_special(packed):
            nonunicast = version == 4 and packed[3] == 0xFF  # (likely) directed broadcast
            r = (in_nets, nonunicast, in_nets or nonunicast)
        else:
            a = self.addr(packed)
            nonunicast = _is_nonunicast(a)
            if self.nets:
                cand = in_nets
                local = in_nets or bool(a.is_link_local or a.is_loopback or a.is_multicast or a.is_unspecified or nonunicast)
            else:
                cand = bool(a.is_private or a.is_link_local or a.is_loopback) and not nonunicast
                local = _is_local_range(a)
            r = (cand, nonunicast, local)
        self._facts[packed] = r
        return r

    def remote_is_local(self, packed: bytes) -> bool:
        """Whether traffic to the address stays on the local network (is not egress).

        With ``--local-net`` only those networks (and link-local, loopback,
        multicast addresses) are local, so a server on a private address
        outside them (a self-hosted Jitsi or Janus, a lab namespace) counts as
        egress; without it every private address is local.
        """
        return self.facts(packed)[2]

    def a_is_local(self, f: Flow) -> bool:
        ca, nonuni_a, _ = self.facts(f.a_ip)
        cb, nonuni_b, _ = self.facts(f.b_ip)
        if ca != cb:
            return ca
        if nonuni_b:
            return True
        if nonuni_a:
            return False
        da, db = self.degree[f.a_ip], self.degree[f.b_ip]
        if da != db and not (ca and cb and self.nets):
            return da > db
        return f.client_is_a


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
    client = opts.client or choose_audited_client(tally.by_vendor, db)
    first = first_party_vendors(client, db)
    session_id = opts.session_id or "session"
    n = flows_table.num_rows
    vendors = flows_table.column("vendor").to_pylist()
    flows_table = flows_table.append_column(pa.field("session_id", pa.string(), nullable=False), pa.array([session_id] * n, pa.string()))
    flows_table = flows_table.append_column(
        pa.field("party", pa.string(), nullable=False), pa.array([party_of(v, first).value for v in vendors], pa.string())
    )
    flows_table = flows_table.select(schema_mod.column_names("flows")).cast(schema_mod.arrow_schema("flows"))
    session = {
        "session_id": session_id,
        "audited_client": client,
        "audited_client_source": "option" if opts.client else ("auto" if client else None),
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
    return AnalyzeResult(flows_table, session, stats_list)


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


def _flow_table(flows: list[Flow], orient: Orientation, db: SignatureDB) -> tuple[pa.Table, _Tally]:
    """The flows table (without session_id and party), in order of first packet, and the session's sums.

    Empties ``flows`` as it goes, and turns every few thousand rows into Arrow
    arrays at once, so that the flows, the rows and the table are not all in
    memory together.
    """
    cid = communityid.CommunityID()
    full = schema_mod.arrow_schema("flows")
    schema = pa.schema([full.field(name) for name in _FLOW_COLUMNS])  # the row tuples' order
    types = schema.types
    batches: list[pa.RecordBatch] = []
    rows: list[tuple[Any, ...]] = []
    tally = _Tally()
    local_text: dict[bytes, str] = {}  # the few local addresses, as text

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
        a_local = orient.a_is_local(f)
        if a_local:
            lip, lport, rip, rport = f.a_ip, f.a_port, f.b_ip, f.b_port
            p_out, p_in, b_out, b_in, pl_out, pl_in = f.pkts_ab, f.pkts_ba, f.bytes_ab, f.bytes_ba, f.pay_ab, f.pay_ba
        else:
            lip, lport, rip, rport = f.b_ip, f.b_port, f.a_ip, f.a_port
            p_out, p_in, b_out, b_in, pl_out, pl_in = f.pkts_ba, f.pkts_ab, f.bytes_ba, f.bytes_ab, f.pay_ba, f.pay_ab
        transport = TRANSPORT_NAMES.get(f.proto, str(f.proto))
        remote_ip = ip_str(rip) if len(rip) == 4 else str(orient.addr(rip))  # (ipaddress's IPv6 text, as before)
        is_local = orient.remote_is_local(rip)
        hostname, hsource = f.hostname, f.hostname_source
        if hostname is None and f.dns_name:
            hostname, hsource = f.dns_name, "dns"
        media_kinds = sorted(f.media_kinds)
        facts = FlowFacts(
            transport=transport,
            remote_ip=remote_ip,
            remote_port=rport,
            local_port=lport,
            hostname=hostname,
            hostname_source=hsource,
            app_protocol=f.app_protocol,
            packets=p_out + p_in,
            payload_bytes=pl_out + pl_in,
            duration_s=f.ts_last - f.ts_first,
            packets_out=p_out,
            packets_in=p_in,
            stun=f.stun,
            rtp=f.rtp,
            rtcp=f.rtcp,
            dtls=f.dtls,
            media_kinds=tuple(media_kinds),
            vendor_hints=tuple(sorted(f.vendor_hints)),
            is_local=is_local,
            alpn=f.alpn,
        )
        v = classify(facts, db)
        data_class = v.data_class.value
        tally.by_vendor.append((v.vendor, v.category, b_out + b_in))
        local_ip = local_text.get(lip)
        if local_ip is None:
            local_ip = local_text[lip] = ip_str(lip)
        tally.local_hosts[local_ip] += p_out + p_in
        tally.fragments += f.fragments
        if not is_local:
            tally.egress_by_class[data_class] += b_out
        try:
            if f.proto in (PROTO_TCP, PROTO_UDP):
                community = community_id_v1(f.proto, f.a_ip, f.b_ip, f.a_port, f.b_port)
            else:  # ICMP's type/code pairing and the rest: the reference implementation
                community = cid.calc(communityid.FlowTuple(f.proto, f.a_ip, f.b_ip, f.a_port or None, f.b_port or None))
        except (communityid.FlowTupleError, ValueError, TypeError):
            community = None
        rows.append((
            i, community, transport, f.version, local_ip, lport, remote_ip, rport, is_local, b_out, b_in, p_out, p_in, pl_out, pl_in,
            round(f.ts_first * 1e6), round(f.ts_last * 1e6), round(f.ts_last - f.ts_first, 6), f.fragments, hostname, hsource,
            ",".join(f.alpn) or None, f.app_protocol, f.stun, f.rtp, f.rtcp, f.dtls, sorted(f.pts) or None, len(f.ssrcs),
            media_kinds or None, v.vendor, v.service, v.category.value, data_class, v.rule, v.evidence,
        ))  # fmt: skip
        if len(rows) >= 16384:
            to_arrow()
    if rows:
        to_arrow()
    return pa.Table.from_batches(batches, schema=schema), tally


# the columns _flow_table fills, in the order of its row tuples
_FLOW_COLUMNS = (
    "flow_id", "community_id", "transport", "ip_version", "local_ip", "local_port", "remote_ip", "remote_port", "is_local",
    "bytes_out", "bytes_in", "packets_out", "packets_in", "payload_bytes_out", "payload_bytes_in", "ts_start", "ts_end",
    "duration_s", "fragments", "hostname", "hostname_source", "alpn", "app_protocol", "stun_packets", "rtp_packets",
    "rtcp_packets", "dtls_packets", "rtp_payload_types", "ssrc_count", "media_kinds", "vendor", "service", "category",
    "data_class", "rule", "evidence",
)  # fmt: skip


__all__ = ["AnalyzeOptions", "AnalyzeResult", "CaptureError", "analyze"]
