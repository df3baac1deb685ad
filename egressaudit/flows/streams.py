"""What each UDP media flow carried, per second and per RTP stream: the ``streams`` table.

A WebRTC call is one bundled UDP flow: audio, video, their RTCP, the ICE checks
and the data channel share one 5-tuple, so the flows table can only say how many
bytes the whole call sent, spread over its duration.  :func:`media_streams`
reads the captures a second time, only for the flows classified ``media`` over
UDP (none: it returns None and reads nothing), and sorts every packet of those
flows by what its payload's first byte says, as RFC 7983 (updated by RFC 9443)
demultiplexes them:

======= ===========================================================================
0-3     ``stun`` (ICE checks, TURN requests; at least the 20-byte header)
20-63   DTLS: content type 23 (application data: SCTP, i.e. the data channel) is
        ``data_channel``, the others (handshake, alert, change cipher spec) and
        DTLS 1.3's encrypted records (32-63, whose type is hidden) ``dtls``
        (at least a 13-byte record header)
64-79   ``turn_channel`` (TURN ChannelData: media relayed through a TURN server,
        still wrapped; at least 4 bytes)
128-191 RTP or RTCP (RFC 5761: RTCP when the second byte's low 7 bits are 64-95,
        i.e. packet types 192-223).  ``rtp`` rows carry the payload type, the
        marker bit and the SSRC (bytes 8-11; at least the 12-byte header);
        ``rtcp`` rows the first packet's type (200 SR, 201 RR, 205/206
        feedback, ...) as ``payload_type`` and the sender's SSRC (bytes 4-7; at
        least 8 bytes)
other   anything else, or too short for the fields above: ``other``
======= ===========================================================================

Rows are per flow, one-second bin (UTC seconds since the epoch, so the bins of
every flow line up with each other and with the call-state markers), direction,
kind, SSRC and payload type: packets, IP bytes (as ``flows.bytes_out``
counts them), transport payload bytes and RTP packets with the marker bit (the
last packet of a video frame, the first of a talk spurt).  For every media flow
the rows add up to the flow's ``bytes_out``/``bytes_in``/``packets_*``/
``payload_bytes_*`` exactly: the packets are matched to flows by their 5-tuple
in either orientation and by time (one 5-tuple can have several flows separated
by idle gaps; each packet goes to the last flow of its 5-tuple that started at
or before it, the first for one before them all), from the same decoder (:func:`egressaudit.flows.columnar.decode_batch`).

What is not split, and why:

* Zoom's own media encapsulation (UDP 8801-8810) puts its header before the
  RTP: its first byte says nothing under RFC 7983, so it comes out ``other``
  (its bytes and times are still there, per second); so does any other
  proprietary framing (Discord's, QUIC-based media).
* Media over TCP (TURN over TCP/TLS, ICE-TCP, Zoom's TCP fallback) is not
  split: RTP is framed inside a byte stream that packets cut anywhere.
  Only UDP flows get rows.
* IP fragments after the first carry no UDP header and no payload start: they
  are not read, but counted (packets, bytes) with their first fragment's row,
  in their own second, as the flows table counts them with their first
  fragment's flow; fragments whose first fragment was not seen are in neither.
* Encrypted payloads stay encrypted: SRTP leaves the RTP header (payload type,
  marker, SSRC) in clear, which is what these rows read; what the data channel
  or DTLS 1.3 carries is only its size.
* RTP whose payload type is 64-95 (which RFC 5761 forbids on a port shared
  with RTCP) reads as RTCP: the two cannot be told apart by their headers.

Cost: the second pass reads and decodes the captures again (batches outside the
media flows' time span are not decoded), about 1.2-1.4 µs per packet read,
mostly the reading (2 cores, 2026-11-25: ``analyze`` of captures/janus-echo/call.pcapng
0.014 -> 0.028 s, of 20 minutes of that call 0.34 -> 0.62 s, of the benchmarks'
mixed 300k-packet capture 1.15 -> 1.52 s; the whole ``egressaudit analyze``
command takes 0.98 s and 1.52 s on the first two).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from egressaudit.capture.frames import PROTO_UDP
from egressaudit.capture.reader import ReadStats, iter_batches
from egressaudit.flows.columnar import Packets, decode_batch
from egressaudit.schema import arrow_schema

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

KINDS: tuple[str, ...] = ("rtp", "rtcp", "stun", "dtls", "data_channel", "turn_channel", "other")
"""The ``kind`` values, in the order rows are sorted."""
RTP, RTCP, STUN, DTLS, DATA_CHANNEL, TURN_CHANNEL, OTHER = range(len(KINDS))
DIRECTIONS = ("out", "in")
_HEAD = 12  # payload bytes read per packet: the RTP fixed header
_US = 1_000_000
_COMPACT_ROWS = 1 << 20  # partial aggregates kept before they are summed together
_Frags = dict[tuple[int, int, int, int, int], tuple[int, int, int, int, int, float]]
"""First IP fragments seen, by (source hi, lo, destination hi, lo, IP id): (flow in the index or -1, direction, kind,
ssrc, payload type, time)."""


@dataclass
class _Index:
    """The UDP flows of every 5-tuple that has a media flow, sorted by (key, ts_start); ``row`` is the flow's row in
    the flows table when it is a media flow, -1 for the others (their packets are matched, then left out)."""

    keys: U64  # the distinct canonical key hashes, sorted
    kidx: I64  # per flow: its key's position in ``keys``
    first: I64  # per key: its first flow
    start: I64  # per flow: ts_start, ts_end (microseconds)
    end: I64
    row: I64
    local: tuple[U64, U64, I64]  # per flow: local address (hi, lo) and port
    remote: tuple[U64, U64, I64]
    version: I64
    span: tuple[float, float]  # seconds: the media flows' first start and last end


def media_streams(inputs: Sequence[Path], flows: pa.Table, session_id: str, *, idle_timeout: float = 120.0) -> pa.Table | None:
    """The ``streams`` table (:data:`egressaudit.schema.STREAMS`) of the flows of ``flows`` whose category is media
    and transport UDP, read again from ``inputs`` (the captures ``flows`` was made from); None when there are none.

    ``idle_timeout`` is the flows' (a later IP fragment more than that after its first is not counted, as in the flows
    table).  Raises CaptureError as :func:`egressaudit.capture.reader.iter_batches` does."""
    index = _index(flows)
    if index is None:
        return None
    partials: list[pa.Table] = []
    held = 0
    frags: _Frags = {}
    skipped: Counter[str] = Counter()
    lo, hi = index.span
    for path in inputs:
        for batch in iter_batches(path, ReadStats(path=str(path))):
            if not len(batch.ts) or float(batch.ts.max()) < lo or float(batch.ts.min()) > hi:
                continue  # (a batch outside the media's time span: not even decoded)
            part = _batch(decode_batch(batch, skipped), index, frags, idle_timeout)
            if part is not None:
                partials.append(part)
                held += part.num_rows
                if held > _COMPACT_ROWS and len(partials) > 1:
                    partials = [_sum(pa.concat_tables(partials))]
                    held = partials[0].num_rows
    return _finish(partials, index, flows, session_id)


def _split(ip: str) -> tuple[int, int, int]:
    """An address as the decoder's (version, high 64 bits, low 64 bits: the whole IPv4 address)."""
    a = ipaddress.ip_address(ip)
    n = int(a)
    return (a.version, n >> 64, n & 0xFFFFFFFFFFFFFFFF) if a.version == 6 else (4, 0, n)


def _mix(h: U64, x: U64) -> U64:
    h = (h ^ x) * np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(29))


def _canonical_hash(version: I64, a: tuple[U64, U64, I64], b: tuple[U64, U64, I64]) -> U64:
    """A hash of the UDP 5-tuple with its lower (address, port) end first, so both directions hash alike."""
    ah, al, ap = a
    bh, bl, bp = b
    d = (ah < bh) | ((ah == bh) & ((al < bl) | ((al == bl) & (ap <= bp))))
    h = np.full(len(version), 0x243F6A8885A308D3, np.uint64)
    ends = (np.where(d, ah, bh), np.where(d, al, bl), np.where(d, ap, bp), np.where(d, bh, ah), np.where(d, bl, al), np.where(d, bp, ap))
    with np.errstate(over="ignore"):
        for x in (version, *ends):
            h = _mix(h, x.astype(np.uint64))
    return h


def _index(flows: pa.Table) -> _Index | None:
    udp = pc.equal(flows.column("transport"), "udp")
    media = pc.and_(udp, pc.equal(flows.column("category"), "media"))
    if not pc.any(media).as_py():
        return None
    t = flows.filter(udp).select(["local_ip", "local_port", "remote_ip", "remote_port", "ts_start", "ts_end", "category"])
    is_media = np.asarray(pc.equal(t.column("category"), "media").to_numpy(zero_copy_only=False), np.bool_)
    rows = np.flatnonzero(np.asarray(udp.to_numpy(zero_copy_only=False), np.bool_))
    local = [_split(ip) for ip in t.column("local_ip").to_pylist()]
    remote = [_split(ip) for ip in t.column("remote_ip").to_pylist()]
    version = np.array([v for v, _, _ in local], np.int64)
    lh, ll = np.array([h for _, h, _ in local], np.uint64), np.array([lo for _, _, lo in local], np.uint64)
    rh, rl = np.array([h for _, h, _ in remote], np.uint64), np.array([lo for _, _, lo in remote], np.uint64)
    lp = t.column("local_port").to_numpy().astype(np.int64)
    rp = t.column("remote_port").to_numpy().astype(np.int64)
    start = t.column("ts_start").cast(pa.int64()).to_numpy()
    end = t.column("ts_end").cast(pa.int64()).to_numpy()
    h = _canonical_hash(version, (lh, ll, lp), (rh, rl, rp))
    keep = np.isin(h, h[is_media])  # the 5-tuples of media flows, each with all its flows (media or not)
    order = np.flatnonzero(keep)
    order = order[np.lexsort((start[order], h[order]))]
    keys, kidx = np.unique(h[order], return_inverse=True)
    first = np.flatnonzero(np.append(True, kidx[1:] != kidx[:-1]))
    m = is_media[order]
    return _Index(
        keys=keys, kidx=kidx.astype(np.int64), first=first.astype(np.int64), start=start[order], end=end[order],
        row=np.where(m, rows[order], -1), local=(lh[order], ll[order], lp[order]), remote=(rh[order], rl[order], rp[order]),
        version=version[order], span=(float(start[order][m].min()) / _US, float(end[order][m].max()) / _US),
    )  # fmt: skip


def _flow_of(index: _Index, k: I64, t_us: I64) -> I64:
    """For packets of key positions ``k`` at times ``t_us``: the last flow of the key that started at or before the
    packet (its first flow for a packet before it: timestamps that went backwards)."""
    nf = len(index.start)
    kk = np.concatenate([index.kidx, k])
    tt = np.concatenate([index.start, t_us])
    is_pk = np.concatenate([np.zeros(nf, np.int8), np.ones(len(k), np.int8)])
    order = np.lexsort((is_pk, tt, kk))  # by key, then time, a flow before a packet of the same time
    last = np.maximum.accumulate(np.where(order < nf, order, -1))  # flows are in (key, start) order: the last one seen
    j = np.empty(len(k), np.int64)
    at = order >= nf
    j[order[at] - nf] = last[at]
    stale = (j < 0) | (index.kidx[np.maximum(j, 0)] != k)
    return np.where(stale, index.first[k], j)


def _classify(head: npt.NDArray[np.uint8], length: I64) -> tuple[I64, I64, I64, I64]:
    """Per payload (its first 12 bytes, its length): kind, SSRC (-1: none), payload type (-1: none), marker bit."""
    b0 = head[:, 0].astype(np.int64)
    b1 = head[:, 1].astype(np.int64)
    kind = np.full(len(b0), OTHER, np.int64)
    kind[(b0 <= 3) & (length >= 20)] = STUN
    dtls = (b0 >= 20) & (b0 <= 63) & (length >= 13)
    kind[dtls] = np.where(b0[dtls] == 23, DATA_CHANNEL, DTLS)
    kind[(b0 >= 64) & (b0 <= 79) & (length >= 4)] = TURN_CHANNEL
    rtp_range = (b0 >= 128) & (b0 <= 191)
    is_rtcp = rtp_range & ((b1 & 0x7F) >= 64) & ((b1 & 0x7F) <= 95) & (length >= 8)
    is_rtp = rtp_range & ~(((b1 & 0x7F) >= 64) & ((b1 & 0x7F) <= 95)) & (length >= 12)
    kind[is_rtcp] = RTCP
    kind[is_rtp] = RTP
    word = head.astype(np.int64)
    ssrc_rtp = (word[:, 8] << 24) | (word[:, 9] << 16) | (word[:, 10] << 8) | word[:, 11]
    ssrc_rtcp = (word[:, 4] << 24) | (word[:, 5] << 16) | (word[:, 6] << 8) | word[:, 7]
    ssrc = np.where(is_rtp, ssrc_rtp, np.where(is_rtcp, ssrc_rtcp, -1))
    pt = np.where(is_rtp, b1 & 0x7F, np.where(is_rtcp, b1, -1))
    marker = (is_rtp & (b1 >= 128)).astype(np.int64)
    return kind, ssrc, pt, marker


def _heads(pk: Packets, rows: I64) -> npt.NDArray[np.uint8]:
    """The first :data:`_HEAD` payload bytes of the packets ``rows`` (zeros past a payload's end; lengths are checked by
    the caller)."""
    mem = np.frombuffer(pk.buf, np.uint8)
    off = pk.pay_off[rows]
    idx = off[:, None] + np.arange(_HEAD, dtype=np.int64)
    np.clip(idx, 0, max(len(mem) - 1, 0), out=idx)
    head = mem[idx] if len(mem) else np.zeros(idx.shape, np.uint8)
    for i in np.flatnonzero(off < 0).tolist():  # payloads the per-frame decoder gave (tunnels, fragments, ...): few
        p = pk.side.get(int(rows[i]), b"")[:_HEAD]
        head[i] = np.frombuffer(p.ljust(_HEAD, b"\0"), np.uint8)
    return head


def _batch(pk: Packets, index: _Index, frags: _Frags, idle_timeout: float) -> pa.Table | None:
    """One batch's packets of media flows, summed per (row, second, direction, kind, ssrc, payload type)."""
    udp = pk.proto == PROTO_UDP
    whole = np.flatnonzero(udp & (pk.frag != 2))
    later = np.flatnonzero(udp & (pk.frag == 2))
    src = (pk.src_hi[whole], pk.src_lo[whole], pk.sport[whole])
    dst = (pk.dst_hi[whole], pk.dst_lo[whole], pk.dport[whole])
    h = _canonical_hash(pk.version[whole], src, dst)
    pos = np.minimum(np.searchsorted(index.keys, h), len(index.keys) - 1)
    hit = index.keys[pos] == h
    rows = whole[hit]
    src = (src[0][hit], src[1][hit], src[2][hit])
    dst = (dst[0][hit], dst[1][hit], dst[2][hit])
    t_us = np.round(pk.ts[rows] * _US).astype(np.int64)
    j = _flow_of(index, pos[hit], t_us)
    lh, ll, lp = (a[j] for a in index.local)
    rh, rl, rp = (a[j] for a in index.remote)
    out = (src[0] == lh) & (src[1] == ll) & (src[2] == lp) & (dst[0] == rh) & (dst[1] == rl) & (dst[2] == rp)
    back = (src[0] == rh) & (src[1] == rl) & (src[2] == rp) & (dst[0] == lh) & (dst[1] == ll) & (dst[2] == lp)
    # (a hash collision, or a packet after its flow's end: a flows table made from other captures)
    take = (out | back) & (pk.version[rows] == index.version[j]) & (t_us <= index.end[j]) & (index.row[j] >= 0)
    kind, ssrc, pt, marker = _classify(_heads(pk, rows), pk.pay_len[rows])
    cols = {
        "row": index.row[j][take], "sec": t_us[take] // _US, "dir": (~out[take]).astype(np.int64), "kind": kind[take],
        "ssrc": ssrc[take], "pt": pt[take], "packets": np.ones(int(take.sum()), np.int64),
        "bytes": pk.ip_len[rows][take], "payload_bytes": pk.pay_len[rows][take], "marker_packets": marker[take],
    }  # fmt: skip
    if len(later) or (pk.frag[whole] == 1).any():
        firsts = whole[pk.frag[whole] == 1]  # every first fragment, so that one of another flow replaces an older one's IP id
        info = np.full((len(whole), 5), -1, np.int64)  # per row of ``whole``: flow in the index, direction, kind, ssrc, pt
        sel = np.flatnonzero(hit)[take]
        info[sel] = np.stack([j[take], (~out[take]).astype(np.int64), kind[take], ssrc[take], pt[take]], axis=1)
        extra = _fragments(pk, firsts, info[pk.frag[whole] == 1], later, frags, index, idle_timeout)
        if extra is not None:
            cols = {name: np.concatenate([cols[name], extra[name]]) for name in cols}
    if not len(cols["row"]):
        return None
    return _sum(pa.table({**cols, "dir": cols["dir"].astype(np.int8), "kind": cols["kind"].astype(np.int8), "pt": cols["pt"].astype(np.int16)}))


def _fragments(pk: Packets, firsts: I64, info: I64, later: I64, frags: _Frags, index: _Index, idle_timeout: float) -> dict[str, I64] | None:
    """IP fragments, in capture order: first fragments remembered by (addresses, IP id) with what their packet was
    (``info``); later ones counted with theirs, as the flows table joins them (its rules: within the idle timeout, the
    map forgotten past 65,536 entries).  A Python loop over fragments only: media seldom fragments, and the flows
    table loops over them too."""
    events = sorted([(r, i) for i, r in enumerate(firsts.tolist())] + [(r, -1) for r in later.tolist()])
    names = ("row", "sec", "dir", "kind", "ssrc", "pt", "packets", "bytes", "payload_bytes", "marker_packets")
    out: dict[str, list[int]] = {n: [] for n in names}
    for r, i in events:
        key = (int(pk.src_hi[r]), int(pk.src_lo[r]), int(pk.dst_hi[r]), int(pk.dst_lo[r]), int(pk.frag_id[r]))
        ts = float(pk.ts[r])
        if i >= 0:
            if len(frags) > 65536:
                frags.clear()
            f, direction, kind, ssrc, pt = info[i].tolist()
            frags[key] = (f, direction, kind, ssrc, pt, ts)
            continue
        hit = frags.get(key)
        if hit is None or hit[0] < 0 or ts - hit[5] > idle_timeout:
            continue
        f, direction, kind, ssrc, pt, _ = hit
        t_us = round(ts * _US)
        if not index.start[f] <= t_us <= index.end[f]:
            continue
        values = (int(index.row[f]), t_us // _US, direction, kind, ssrc, pt, 1, int(pk.ip_len[r]), int(pk.pay_len[r]), 0)
        for name, v in zip(names, values, strict=True):
            out[name].append(v)
    if not out["row"]:
        return None
    return {n: np.array(v, np.int64) for n, v in out.items()}


_GROUP = ["row", "sec", "dir", "kind", "ssrc", "pt"]
_SUMS = ["packets", "bytes", "payload_bytes", "marker_packets"]


def _sum(t: pa.Table) -> pa.Table:
    g = t.group_by(_GROUP, use_threads=False).aggregate([(c, "sum") for c in _SUMS])
    return g.rename_columns([n.removesuffix("_sum") for n in g.column_names])


def _finish(partials: list[pa.Table], index: _Index, flows: pa.Table, session_id: str) -> pa.Table:
    schema = arrow_schema("streams")
    if not partials:
        return schema.empty_table()
    t = _sum(pa.concat_tables(partials)) if len(partials) > 1 else partials[0]
    t = t.sort_by([(c, "ascending") for c in _GROUP])
    row = t.column("row").to_numpy()
    flow_id = flows.column("flow_id").to_numpy()[row]
    ssrc = t.column("ssrc").to_numpy()
    pt = t.column("pt").to_numpy()
    n = t.num_rows
    cols = [
        pa.array([session_id] * n, pa.string()),
        pa.array(flow_id, pa.int64()),
        pa.array(t.column("sec").to_numpy() * _US, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.DictionaryArray.from_arrays(t.column("dir").combine_chunks(), pa.array(DIRECTIONS)).cast(pa.string()),
        pa.DictionaryArray.from_arrays(t.column("kind").combine_chunks(), pa.array(KINDS)).cast(pa.string()),
        pa.array(ssrc, pa.int64(), mask=ssrc < 0),
        pa.array(pt, pa.int16(), mask=pt < 0),
        *(t.column(c).cast(pa.int64()) for c in _SUMS),
    ]
    return pa.Table.from_arrays(cols, schema=schema)


__all__ = ["KINDS", "media_streams"]
