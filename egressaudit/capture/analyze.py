"""Offline audit: capture files -> flows -> classified ``flows.parquet`` + ``session.json``."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import communityid
import numpy as np

from egressaudit.capture.columnar import ColumnarFlowTable, decode_batch
from egressaudit.capture.flows import Flow, ip_str
from egressaudit.capture.frames import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, SUPPORTED_LINKTYPES
from egressaudit.capture.reader import CaptureError, ReadStats, iter_batches, sha256_file
from egressaudit.classify.engine import FlowFacts, Verdict, assign_party, choose_audited_client, classify, first_party_vendors
from egressaudit.signatures import SignatureDB, default_db
from egressaudit.taxonomy import DataClass

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
    columns: dict[str, list[Any]]  # flows.parquet, column by column (schema.FLOWS)
    session: dict[str, Any]
    inputs: list[ReadStats] = field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The flows as one dict per flow (for callers that want rows; the columns are what is written)."""
        names = list(self.columns)
        return [dict(zip(names, vals, strict=True)) for vals in zip(*self.columns.values(), strict=True)]


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
        self.degree: Counter[bytes] = Counter()
        for f in flows:
            self.degree[f.a_ip] += 1
            self.degree[f.b_ip] += 1
        self._addr: dict[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._cand: dict[bytes, bool] = {}
        self._remote_local: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, bool] = {}

    def addr(self, packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        a = self._addr.get(packed)
        if a is None:
            a = self._addr[packed] = ipaddress.ip_address(packed)
        return a

    def _candidate(self, packed: bytes) -> bool:
        c = self._cand.get(packed)
        if c is None:
            a = self.addr(packed)
            if self.nets:
                c = any(a.version == n.version and a in n for n in self.nets)
            else:
                c = (a.is_private or a.is_link_local or a.is_loopback) and not _is_nonunicast(a)
            self._cand[packed] = c
        return c

    def remote_is_local(self, a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """Whether traffic to ``a`` stays on the local network (is not egress).

        With ``--local-net`` only those networks (and link-local, loopback,
        multicast addresses) are local, so a server on a private address
        outside them (a self-hosted Jitsi or Janus, a lab namespace) counts as
        egress; without it every private address is local.
        """
        c = self._remote_local.get(a)
        if c is None:
            if self.nets:
                c = any(a.version == n.version and a in n for n in self.nets) or bool(
                    a.is_link_local or a.is_loopback or a.is_multicast or a.is_unspecified or _is_nonunicast(a)
                )
            else:
                c = _is_local_range(a)
            self._remote_local[a] = c
        return c

    def a_is_local(self, f: Flow) -> bool:
        ca, cb = self._candidate(f.a_ip), self._candidate(f.b_ip)
        if ca != cb:
            return ca
        if _is_nonunicast(self.addr(f.b_ip)):
            return True
        if _is_nonunicast(self.addr(f.a_ip)):
            return False
        da, db = self.degree[f.a_ip], self.degree[f.b_ip]
        if da != db and not (ca and cb and self.nets):
            return da > db
        return f.client_is_a


def analyze(
    inputs: Sequence[Path], opts: AnalyzeOptions, db: SignatureDB | None = None, progress: Callable[[int], None] | None = None
) -> AnalyzeResult:
    """Read the captures and classify every flow.  Raises CaptureError for unreadable inputs."""
    db = db or default_db()
    finished: list[Flow] = []
    table = ColumnarFlowTable(finished.append, idle_timeout=opts.idle_timeout)
    skipped: Counter[str] = Counter()
    stats_list: list[ReadStats] = []
    linktypes: Counter[int] = Counter()
    started = time.time()
    frames = 0
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
        stats.sha256 = sha256_file(path)
        if stats.truncated:
            skipped["truncated_record"] += stats.truncated
        if stats.corrupt:
            skipped["corrupt_record"] += stats.corrupt
    table.flush()
    skipped["orphan_fragment"] += table.orphan_fragments

    orient = Orientation(finished, opts.local_nets)
    cols, verdicts = _columns(finished, orient, db)
    n = len(verdicts)
    sizes = [o + i for o, i in zip(cols["bytes_out"], cols["bytes_in"], strict=True)]
    client = opts.client or choose_audited_client(zip(verdicts, sizes, strict=True), db)
    first = first_party_vendors(client, db)
    session_id = opts.session_id or "session"
    cols["session_id"] = [session_id] * n
    cols["party"] = [assign_party(v, first).value for v in verdicts]

    local_hosts = Counter[str]()
    for ip, p_out, p_in in zip(cols["local_ip"], cols["packets_out"], cols["packets_in"], strict=True):
        local_hosts[ip] += p_out + p_in
    session = {
        "session_id": session_id,
        "audited_client": client,
        "audited_client_source": "option" if opts.client else ("auto" if client else None),
        "local_nets": list(opts.local_nets),
        "local_hosts": [ip for ip, _ in local_hosts.most_common(8)],
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
                "errors": s.errors,
                "snapped_packets": s.snapped,
                "interfaces": s.interfaces,
            }
            for s in stats_list
        ],
        "counts": {
            "packets": sum(s.frames for s in stats_list),
            "packets_in_flows": table.packets - table.orphan_fragments,
            "flows": n,
            "fragments": sum(cols["fragments"]),
            "skipped": dict(sorted(skipped.items())),
            "skipped_total": sum(skipped.values()),
            "linktypes": {SUPPORTED_LINKTYPES.get(k, str(k)): n for k, n in sorted(linktypes.items())},
            "by_data_class_bytes_out": _egress_by(cols, "data_class"),
        },
        "elapsed_s": round(time.time() - started, 3),
    }
    return AnalyzeResult(cols, session, stats_list)


def _egress_by(cols: dict[str, list[Any]], key: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for local, k, b in zip(cols["is_local"], cols[key], cols["bytes_out"], strict=True):
        if not local:
            out[k] += b
    return {k: out.get(k, 0) for k in [d.value for d in DataClass]}


def _columns(flows: list[Flow], orient: Orientation, db: SignatureDB) -> tuple[dict[str, list[Any]], list[Verdict]]:
    """The flows table column by column, and a verdict per flow, in order of first packet.  Empties ``flows`` (to free memory as it goes)."""
    cid = communityid.CommunityID()
    cols: dict[str, list[Any]] = {name: [] for name in _FLOW_COLUMNS}
    verdicts: list[Verdict] = []
    add = [cols[name].append for name in _FLOW_COLUMNS]
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
        remote_addr = orient.addr(rip)
        remote_ip = str(remote_addr)
        is_local = orient.remote_is_local(remote_addr)
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
        verdicts.append(v)
        try:
            if f.proto in (PROTO_TCP, PROTO_UDP):
                community = community_id_v1(f.proto, f.a_ip, f.b_ip, f.a_port, f.b_port)
            else:  # ICMP's type/code pairing and the rest: the reference implementation
                community = cid.calc(communityid.FlowTuple(f.proto, f.a_ip, f.b_ip, f.a_port or None, f.b_port or None))
        except (communityid.FlowTupleError, ValueError, TypeError):
            community = None
        values = (
            i, community, transport, f.version, ip_str(lip), lport, remote_ip, rport, is_local, b_out, b_in, p_out, p_in, pl_out, pl_in,
            round(f.ts_first * 1e6), round(f.ts_last * 1e6), round(f.ts_last - f.ts_first, 6), f.fragments, hostname, hsource,
            ",".join(f.alpn) or None, f.app_protocol, f.stun, f.rtp, f.rtcp, f.dtls, sorted(f.pts) or None, len(f.ssrcs),
            media_kinds or None, v.vendor, v.service, v.category.value, v.data_class.value, v.rule, v.evidence,
        )  # fmt: skip
        for append, value in zip(add, values, strict=True):
            append(value)
    return cols, verdicts


# the columns _columns fills, in the order of its ``values``
_FLOW_COLUMNS = (
    "flow_id", "community_id", "transport", "ip_version", "local_ip", "local_port", "remote_ip", "remote_port", "is_local",
    "bytes_out", "bytes_in", "packets_out", "packets_in", "payload_bytes_out", "payload_bytes_in", "ts_start", "ts_end",
    "duration_s", "fragments", "hostname", "hostname_source", "alpn", "app_protocol", "stun_packets", "rtp_packets",
    "rtcp_packets", "dtls_packets", "rtp_payload_types", "ssrc_count", "media_kinds", "vendor", "service", "category",
    "data_class", "rule", "evidence",
)  # fmt: skip


__all__ = ["AnalyzeOptions", "AnalyzeResult", "CaptureError", "analyze"]
