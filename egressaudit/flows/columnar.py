"""Columnar offline ingest: whole read-ahead buffers of frames decoded and metered with numpy.

:class:`~egressaudit.flows.table.FlowTable` meters one packet at a time, which
live capture needs; offline, the same flows come out about three times faster
when each buffer of frames (:class:`~egressaudit.capture.reader.FrameBatch`) is
handled as arrays:

1. :func:`decode_batch` reads the link, IP and transport headers of every frame
   at once.  Frames it cannot read with certainty (tunnels, IPv6 extension
   headers, fragments, PPPoE, QinQ, TSO lengths, damage) go through the
   per-frame :func:`~egressaudit.capture.frames.decode`, so the result, skip
   reasons included, is the same.
2. :class:`ColumnarFlowTable` sorts a batch by flow key, finds where flows end
   (idle gaps, a TCP SYN after FIN/RST) with prefix sums, adds up the counters
   per flow with ``reduceat`` and carries the flows still open into the next
   batch.  Only the packets that the per-packet table would inspect reach the
   Python dissectors (:class:`~egressaudit.dissect.inspect.Inspector`, shared).

The flows are the per-packet table's, field for field (tests compare both on
every real capture and on a synthetic one built to hit the batch edges).  One
difference is left: the per-packet table ends flows at most once a second from
the newest timestamp, this table once a batch; on captures whose timestamps go
backwards by more than the idle timeout the two can end a flow at different
packets.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from egressaudit.capture.frames import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_PPPOE_SESSION,
    ETH_VLAN,
    GTPU_PORT,
    IPV6_EXT_HEADERS,
    IPV6_FRAGMENT,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPE_RAW_12,
    LINKTYPE_RAW_14,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    SKIP_MALFORMED_LINK,
    SKIP_NOT_IP,
    SKIP_UNSUPPORTED_LINKTYPE,
    SUPPORTED_LINKTYPES,
    decode,
)
from egressaudit.capture.reader import FrameBatch
from egressaudit.dissect.inspect import Inspector
from egressaudit.flows.table import INSPECT_PACKETS, SAMPLE_EVERY, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Flow

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

_RAW_LINKTYPES = (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14, LINKTYPE_IPV4, LINKTYPE_IPV6)
_LINKTYPES = sorted(SUPPORTED_LINKTYPES)
_LINK_W = 24  # link header bytes read per frame (Ethernet/SLL/SLL2 + one VLAN tag)
_IP_W = 40  # IP header bytes read (IPv4 options are skipped by offset, IPv6 up to the addresses)
_TP_W = 14  # transport header bytes read (TCP up to the flags)


@dataclass
class Packets:
    """Decoded IP packets of one batch, in capture order (the frames that decoded; skipped ones are counted)."""

    ts: F64
    version: I64
    proto: I64
    src_hi: U64  # IPv6: first 8 address bytes; IPv4: 0
    src_lo: U64  # IPv6: last 8 bytes; IPv4: the address
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    ip_len: I64
    pay_off: I64  # offset of the transport payload in ``buf``; -1: the payload is in ``side``
    pay_len: I64
    flags: I64
    frag: I64
    frag_id: I64
    vlan: I64
    buf: bytes
    side: dict[int, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)


def _gather(arr: npt.NDArray[np.uint8], start: I64, width: int) -> npt.NDArray[np.uint8]:
    """``width`` bytes from each start (bytes past the buffer read as its last byte; callers check lengths)."""
    idx = start[:, None] + np.arange(width, dtype=np.int64)
    np.clip(idx, 0, max(len(arr) - 1, 0), out=idx)
    return arr[idx] if len(arr) else np.zeros(idx.shape, np.uint8)


def _be16(m: npt.NDArray[np.uint8], j: int) -> I64:
    return (m[:, j].astype(np.int64) << 8) | m[:, j + 1]


def _be(m: npt.NDArray[np.uint8], j: int, size: int) -> U64:
    return np.ascontiguousarray(m[:, j : j + size]).view(f">u{size}").ravel().astype(np.uint64)


def _split_addr(a: bytes) -> tuple[int, int]:
    return (int.from_bytes(a[:8], "big"), int.from_bytes(a[8:], "big")) if len(a) == 16 else (0, int.from_bytes(a, "big"))


def decode_batch(batch: FrameBatch, skipped: Counter[str]) -> Packets:
    """Decode every frame of a batch; count the frames that are not IP packets in ``skipped`` (by reason)."""
    buf = batch.buf
    mem = np.frombuffer(buf, np.uint8)
    off, cap, lt = batch.off, batch.caplen, batch.linktype
    n = len(off)

    # -- link layer: Ethernet, Linux cooked v1/v2 (one VLAN tag at most), raw IP
    lk = _gather(mem, off, _LINK_W)
    eth, sll, sll2 = lt == LINKTYPE_ETHERNET, lt == LINKTYPE_LINUX_SLL, lt == LINKTYPE_LINUX_SLL2
    raw = np.isin(lt, _RAW_LINKTYPES)
    et = np.where(eth, _be16(lk, 12), np.where(sll, _be16(lk, 14), np.where(sll2, _be16(lk, 0), 0)))
    link = np.where(eth, 14, np.where(sll, 16, np.where(sll2, 20, 0)))
    ok = raw | ((eth | sll | sll2) & (cap >= link))
    tagged = ~raw & np.isin(et, list(ETH_VLAN))
    rows = np.arange(n)
    tag_at = np.minimum(link, _LINK_W - 4)
    vlan_id = np.where(tagged, ((lk[rows, tag_at].astype(np.int64) << 8) | lk[rows, tag_at + 1]) & 0x0FFF, -1)
    inner_et = (lk[rows, tag_at + 2].astype(np.int64) << 8) | lk[rows, tag_at + 3]
    ok &= ~tagged | (cap >= link + 4)
    et = np.where(tagged, inner_et, et)
    link = np.where(tagged, link + 4, link)
    # ARP, LLDP and the like: not IP, as decode() says (tags and PPPoE sessions are left to it)
    not_ip = ok & ~raw & ~np.isin(et, [ETH_IPV4, ETH_IPV6, ETH_PPPOE_SESSION, *ETH_VLAN])
    ok &= raw | (et == ETH_IPV4) | (et == ETH_IPV6)

    # -- IP
    ip = _gather(mem, off + link, _IP_W)
    room = cap - link  # captured bytes from the IP header on
    ver = (ip[:, 0] >> 4).astype(np.int64)
    v4, v6 = ver == 4, ver == 6
    ihl = (ip[:, 0] & 0x0F).astype(np.int64) * 4
    total4 = _be16(ip, 2)
    plen6 = _be16(ip, 4)
    ok &= (v4 & (room >= 20) & (ihl >= 20) & (room >= ihl) & (total4 >= ihl) & ((_be16(ip, 6) & 0x3FFF) == 0)) | (v6 & (room >= 40) & (plen6 > 0))
    proto = np.where(v4, ip[:, 9], ip[:, 6]).astype(np.int64)
    ok &= ~(v6 & np.isin(proto, [*IPV6_EXT_HEADERS, IPV6_FRAGMENT]))
    total = np.where(v4, total4, 40 + plen6)
    t = np.where(v4, ihl, 40)  # transport header, from the IP header on
    end = np.minimum(room, total)
    ok &= t <= end
    src_hi = np.where(v6, _be(ip, 8, 8), np.uint64(0))
    src_lo = np.where(v6, _be(ip, 16, 8), _be(ip, 12, 4))
    dst_hi = np.where(v6, _be(ip, 24, 8), np.uint64(0))
    dst_lo = np.where(v6, _be(ip, 32, 8), _be(ip, 16, 4))

    # -- transport
    tp = _gather(mem, off + link + t, _TP_W)
    tcp, udp = proto == PROTO_TCP, proto == PROTO_UDP
    sport, dport = _be16(tp, 0), _be16(tp, 2)
    doff = (tp[:, 12] >> 4).astype(np.int64) * 4
    ok &= ~tcp | ((t + 20 <= end) & (doff >= 20))
    ok &= ~udp | ((t + 8 <= end) & (sport != GTPU_PORT) & (dport != GTPU_PORT))
    ok &= ~np.isin(proto, [4, 41])  # IP-in-IP, 6in4: the per-frame decoder follows the tunnel
    icmp = (proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)
    pstart = np.where(tcp, t + doff, np.where(udp, t + 8, t))
    pay_len = np.where(tcp | udp | icmp, np.maximum(end - pstart, 0), 0)
    has_ports = tcp | udp
    sport = np.where(has_ports, sport, 0)
    dport = np.where(has_ports, dport, 0)
    flags = np.where(tcp, tp[:, 13], 0).astype(np.int64)

    pk = Packets(
        ts=batch.ts,
        version=ver,
        proto=proto,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        sport=sport,
        dport=dport,
        ip_len=total,
        pay_off=off + link + pstart,
        pay_len=pay_len,
        flags=flags,
        frag=np.zeros(n, np.int64),
        frag_id=np.where(v4, _be16(ip, 4), 0),  # the IPv4 identification, as decode() gives it
        vlan=vlan_id,
        buf=buf,
    )
    keep = ok.copy()
    if not_ip.any():
        skipped[SKIP_NOT_IP] += int(not_ip.sum())
    # frames decode() would skip at once (shorter than their link header, a link type it does not know): counted here,
    # so that a capture of nothing else (hostile, or a gzip bomb of zeros) costs no Python call per frame
    short = (eth & (cap < 14)) | (sll & (cap < 16)) | (sll2 & (cap < 20))
    unknown = ~np.isin(lt, _LINKTYPES)
    if short.any():
        skipped[SKIP_MALFORMED_LINK] += int(short.sum())
    if unknown.any():
        skipped[SKIP_UNSUPPORTED_LINKTYPE] += int(unknown.sum())
    # the rest, one frame at a time, through the decoder that knows every case
    for i in np.flatnonzero(~ok & ~not_ip & ~short & ~unknown).tolist():
        o, c = int(off[i]), int(cap[i])
        r = decode(int(lt[i]), buf[o : o + c])
        if isinstance(r, str):
            skipped[r] += 1
            continue
        keep[i] = True
        pk.version[i], pk.proto[i], pk.sport[i], pk.dport[i] = r.version, r.proto, r.sport, r.dport
        (pk.src_hi[i], pk.src_lo[i]), (pk.dst_hi[i], pk.dst_lo[i]) = _split_addr(r.src), _split_addr(r.dst)
        pk.ip_len[i], pk.pay_off[i], pk.pay_len[i], pk.flags[i] = r.ip_len, -1, len(r.payload), r.tcp_flags
        pk.frag[i], pk.frag_id[i], pk.vlan[i] = r.frag, r.frag_id, r.vlan
        pk.side[i] = r.payload
    if not keep.all():
        sel = np.flatnonzero(keep)
        pk = Packets(**{k: getattr(pk, k)[sel] for k in _ARRAYS}, buf=buf, side=_renumber(pk.side, sel))
    return pk


_ARRAYS = (
    "ts", "version", "proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "ip_len", "pay_off", "pay_len",
    "flags", "frag", "frag_id", "vlan",
)  # fmt: skip


def _renumber(side: dict[int, bytes], sel: I64) -> dict[int, bytes]:
    """``side`` keyed by the new row numbers after keeping the rows ``sel`` (sorted); rows dropped are dropped."""
    if not side or not len(sel):
        return {}
    old = np.fromiter(side, np.int64, len(side))
    new = np.searchsorted(sel, old)
    hit = (new < len(sel)) & (sel[np.minimum(new, len(sel) - 1)] == old)
    return {int(n): side[int(o)] for o, n, h in zip(old, new, hit, strict=True) if h}


def _starts_tls_handshake(pk: Packets, order: I64) -> BOOL:
    """Per packet (in ``order``): the payload may start a TLS handshake record (0x16 0x03), as the per-packet path
    (:meth:`~egressaudit.dissect.inspect.Inspector.inspect`) checks for a server's bytes; payloads kept aside (decoded
    frame by frame) are left to it."""
    off, size = pk.pay_off[order], pk.pay_len[order]
    mem = np.frombuffer(pk.buf, np.uint8)
    aside: BOOL = off < 0
    if not len(mem):
        return aside
    first = mem[np.clip(off, 0, len(mem) - 1)]
    second = mem[np.clip(off + 1, 0, len(mem) - 1)]
    out: BOOL = aside | ((size >= 2) & (first == 0x16) & (second == 0x03))
    return out


def _packed(version: int, hi: int, lo: int) -> bytes:
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big") if version == 6 else lo.to_bytes(4, "big")


def _mix(h: U64, x: U64) -> U64:
    """One round of a 64-bit multiplicative hash (wraps around, as unsigned arithmetic does)."""
    h = (h ^ x) * np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(29))


class ColumnarFlowTable(Inspector):
    """The flows of :class:`~egressaudit.flows.table.FlowTable`, metered a batch at a time (see the module docstring)."""

    def __init__(self, on_flow: Callable[[Flow], None], idle_timeout: float = 120.0) -> None:
        self.on_flow = on_flow
        self.idle_timeout = idle_timeout
        self.open: OrderedDict[int, Flow] = OrderedDict()  # key hash -> the key's open flow, least recently seen first
        self.keys: dict[int, int] = {}  # key hash -> a second, independent hash of the key (open flows only)
        self.dns_map: dict[bytes, str] = {}
        self.frag_map: dict[tuple[int, int, int, int, int, int], tuple[int, int, int, int, int, float]] = {}  # (... first fragment's time)
        self.orphan_fragments = 0
        self.packets = 0
        self._events: list[tuple[int, bytes, str]] = []
        self._pos = 0
        self._tcp_ports = sorted(self.tcp.by_port)  # TCP ports with dissectors of their own: all their payloads are read

    def dns_answer(self, packed: bytes, name: str) -> None:
        self._events.append((self._pos, packed, name))

    def flush(self) -> None:
        """End every open flow (end of input)."""
        for flow in self.open.values():
            self.on_flow(flow)
        self.open.clear()
        self.keys.clear()

    # -- one batch ---------------------------------------------------------------------
    def add_batch(self, pk: Packets) -> None:  # noqa: C901, PLR0915 - one pass of array steps, kept together
        n = len(pk)
        if n == 0:
            return
        pos = np.arange(self.packets + 1, self.packets + n + 1, dtype=np.int64)  # FlowTable's packet numbers
        self.packets += n

        # canonical key: the lower (address, port) end first
        sh, sl, dh, dl, sp, dp = pk.src_hi, pk.src_lo, pk.dst_hi, pk.dst_lo, pk.sport, pk.dport
        d = (sh < dh) | ((sh == dh) & ((sl < dl) | ((sl == dl) & (sp <= dp))))  # the source is the lower end
        ah, al, ap = np.where(d, sh, dh), np.where(d, sl, dl), np.where(d, sp, dp)
        bh, bl, bp = np.where(d, dh, sh), np.where(d, dl, sl), np.where(d, dp, sp)
        h = np.full(n, 0x243F6A8885A308D3, np.uint64)
        h2 = np.full(n, 0x13198A2E03707344, np.uint64)  # checks, across batches, that a hash names one key
        for x in (pk.proto * 8 + pk.version, ah, al, ap, bh, bl, bp):
            h = _mix(h, x.astype(np.uint64))
            h2 = _mix(h2, x.astype(np.uint64) ^ np.uint64(0xA4093822299F31D0))
        keep = np.ones(n, np.bool_)
        f2_lo = np.zeros(n, np.bool_)  # later fragments: sent by the key's lower end / its upper end (by address)
        f2_hi = np.zeros(n, np.bool_)
        if pk.frag.any():
            self._fragments(pk, h, (ah, al, bh, bl), keep, f2_lo, f2_hi)
        if not keep.all():
            sel = np.flatnonzero(keep)
            pos, d, ap, bp, f2_lo, f2_hi = pos[sel], d[sel], ap[sel], bp[sel], f2_lo[sel], f2_hi[sel]
            ah, al, bh, bl, h, h2 = ah[sel], al[sel], bh[sel], bl[sel], h[sel], h2[sel]
            pk = Packets(**{k: getattr(pk, k)[sel] for k in _ARRAYS}, buf=pk.buf, side=_renumber(pk.side, sel))
            n = len(pk)
            if n == 0:
                return

        uniq, codes = np.unique(h, return_inverse=True)
        order = np.argsort(codes, kind="stable")
        g = codes[order]
        n_groups = len(uniq)
        gfirst = np.ones(n, np.bool_)
        gfirst[1:] = g[1:] != g[:-1]
        gstart = np.flatnonzero(gfirst)
        gs_row = np.repeat(gstart, np.diff(np.append(gstart, n)))

        ts = pk.ts[order]
        proto, flags, frag = pk.proto[order], pk.flags[order], pk.frag[order]
        ds = d[order]
        nf2 = frag != 2
        key_cols = [pk.proto[order], pk.version[order], ah[order], al[order], ap[order], bh[order], bl[order], bp[order]]

        # what the open flows carry into this batch
        uh = uniq.tolist()
        carried = [self.open.get(k) for k in uh]
        has_c = np.fromiter((c is not None for c in carried), np.bool_, n_groups)
        init_ts = np.fromiter((c.ts_last if c is not None else -np.inf for c in carried), np.float64, n_groups)
        c_closed = np.fromiter((c is not None and c.closed for c in carried), np.bool_, n_groups)
        h2s = h2[order]
        self._check_keys(key_cols, g, nf2, uh, has_c, h2s)

        # where flows end: an idle gap, or a pure SYN after a FIN/RST of the same flow
        rank = np.empty(n, np.int64)  # the running maximum of ts within each group, on ranks (exact, unlike offsets on floats)
        by_ts = np.argsort(ts, kind="stable")
        rank[by_ts] = np.arange(n)
        run = np.maximum.accumulate(g * n + rank) - g * n
        cm = ts[by_ts[run]]
        cm = np.maximum(cm, init_ts[g])
        prev = np.empty(n)
        prev[1:] = cm[:-1]
        prev[gfirst] = init_ts[g[gfirst]]
        gap = ((ts - prev) > self.idle_timeout) & nf2
        tcp = proto == PROTO_TCP
        fin = tcp & ((flags & (TCP_FIN | TCP_RST)) != 0)
        psyn = tcp & ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
        idx = np.arange(n)
        marks = np.maximum.accumulate(np.where(psyn | gap, idx, -1))
        lm = np.empty(n, np.int64)  # the last marker (pure SYN or gap) before each row
        lm[0] = -1
        lm[1:] = marks[:-1]
        cfb = np.zeros(n + 1, np.int64)  # FIN/RST rows before each row
        np.cumsum(fin, out=cfb[1:])
        in_group = lm >= gs_row
        fins = np.where(in_group, cfb[idx] - cfb[np.maximum(lm, 0)], cfb[idx] - cfb[gs_row] + c_closed[g])
        bnd = gap | (psyn & (fins > 0))
        starts_seg = bnd | gfirst
        sstart = np.flatnonzero(starts_seg)
        seg = np.cumsum(starts_seg) - 1
        n_seg = len(sstart)
        sg = g[sstart]
        cont = ~bnd[sstart] & has_c[sg]  # the segment goes on with a carried flow
        # carried flows whose key starts a new flow here are finished
        for gi in np.flatnonzero(has_c & bnd[gstart]).tolist():
            k = uh[gi]
            self.on_flow(self.open.pop(k))
            del self.keys[k]
            carried[gi] = None

        # direction and counters
        a_lo = ds[sstart].copy()
        cont_idx = np.flatnonzero(cont)
        for s in cont_idx.tolist():
            c = carried[sg[s]]
            assert c is not None
            a_lo[s] = (c.a_ip, c.a_port) <= (c.b_ip, c.b_port)
        from_a = np.where(nf2, ds == a_lo[seg], np.where(a_lo[seg], f2_lo[order], f2_hi[order]))
        fa = from_a.astype(np.int64)
        ip_len, pay_len = pk.ip_len[order], pk.pay_len[order]
        n_pk = np.diff(np.append(sstart, n))
        pk_ab = np.add.reduceat(fa, sstart)
        by_ab = np.add.reduceat(ip_len * fa, sstart)
        by_all = np.add.reduceat(ip_len, sstart)
        py_ab = np.add.reduceat(pay_len * fa, sstart)
        py_all = np.add.reduceat(pay_len, sstart)
        frags = np.add.reduceat((frag != 0).astype(np.int64), sstart)
        ts_max = np.maximum.reduceat(ts, sstart)
        closed = np.add.reduceat(fin.astype(np.int64), sstart) > 0
        c_seen = np.zeros(n_seg, np.int64)
        c_sfb = np.zeros(n_seg, np.bool_)
        for s in cont_idx.tolist():
            c = carried[sg[s]]
            assert c is not None
            c_seen[s], c_sfb[s] = c.seen, c.syn_from_b
        nf2_cum = np.cumsum(nf2)
        seen = nf2_cum - (nf2_cum[sstart] - nf2[sstart])[seg] + c_seen[seg]
        n_seen = np.add.reduceat(nf2.astype(np.int64), sstart)
        # who sent the SYN (the client), as known at each packet
        synack_first = tcp[sstart] & ((flags[sstart] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) & ~cont
        base_sfb = np.where(cont, c_sfb, synack_first)
        last_syn = np.maximum.accumulate(np.where(psyn, idx, -1))
        syn_in_seg = last_syn >= sstart[seg]
        sfb = np.where(syn_in_seg, ~from_a[np.maximum(last_syn, 0)], base_sfb[seg])
        send = np.append(sstart[1:], n) - 1
        inspect = (pay_len > 0) & nf2 & ((seen <= INSPECT_PACKETS * 2) | (seen % SAMPLE_EVERY == 0))

        # the flows
        sp_s, dp_s, pos_s = pk.sport[order], pk.dport[order], pos[order]
        at = sstart
        cols = zip(
            cont.tolist(), sg.tolist(), pk_ab.tolist(), n_pk.tolist(), by_ab.tolist(), by_all.tolist(), py_ab.tolist(),
            py_all.tolist(), frags.tolist(), ts_max.tolist(), closed.tolist(), n_seen.tolist(), sfb[send].tolist(),
            proto[at].tolist(), pk.version[order][at].tolist(), pk.src_hi[order][at].tolist(), pk.src_lo[order][at].tolist(),
            sp_s[at].tolist(), pk.dst_hi[order][at].tolist(), pk.dst_lo[order][at].tolist(), dp_s[at].tolist(), ts[at].tolist(),
            pk.vlan[order][at].tolist(), pos_s[at].tolist(), strict=True,
        )  # fmt: skip
        flows: list[Flow] = []
        new: list[int] = []
        for s, row in enumerate(cols):
            is_cont, gi, pab, npk, bab, ball, yab, yall, fr, tmax, cl, nseen, sfb_end, pr, v, sh_, sl_, spt, dh_, dl_, dpt, t0, vl, p0 = row
            if is_cont:
                f = carried[gi]
                assert f is not None
            else:
                f = Flow(pr, v, _packed(v, sh_, sl_), spt, _packed(v, dh_, dl_), dpt, t0, vl, p0)
                new.append(s)
            f.pkts_ab += pab
            f.pkts_ba += npk - pab
            f.bytes_ab += bab
            f.bytes_ba += ball - bab
            f.pay_ab += yab
            f.pay_ba += yall - yab
            f.fragments += fr
            if tmax > f.ts_last:
                f.ts_last = tmax
            f.closed = f.closed or cl
            f.seen += nseen
            f.syn_from_b = sfb_end
            flows.append(f)

        # payload inspection, flow by flow, packet by packet; rows that cannot add evidence are left out here
        client = from_a == ~sfb
        bound = self._tcp_ports
        tcp_plain = tcp & ~(np.isin(sp_s, bound) | np.isin(dp_s, bound))  # a stream's first bytes: read from the client only, until decided
        server = inspect & tcp_plain & ~client
        if server.any():  # ... and the server's TLS handshake records (its certificate, when the client sent no SNI)
            server &= ~_starts_tls_handshake(pk, order)
        rows = np.flatnonzero(inspect & (tcp | (proto == PROTO_UDP)) & ~server)
        if len(rows):
            buf, side = pk.buf, pk.side
            on_tcp, on_udp = self._inspect_tcp, self._inspect_udp
            cols = zip(
                seg[rows].tolist(), order[rows].tolist(), pk.pay_off[order][rows].tolist(), pay_len[rows].tolist(), sp_s[rows].tolist(),
                dp_s[rows].tolist(), client[rows].tolist(), pos_s[rows].tolist(), tcp[rows].tolist(), tcp_plain[rows].tolist(), strict=True,
            )  # fmt: skip
            for s, o, po, pl, spt, dpt, fc, p, is_tcp, plain in cols:
                f = flows[s]
                if plain and fc and f.tls_done:
                    continue
                self._pos = p
                payload = buf[po : po + pl] if po >= 0 else side[o]
                if is_tcp:
                    on_tcp(f, payload, fc, spt, dpt)
                else:
                    on_udp(f, payload, fc, spt, dpt)
        self._names(flows, new, pos_s[sstart])

        # the last flow of each key stays open; the others are finished
        last_seg = seg[np.append(gstart[1:], n) - 1]
        is_last = np.zeros(n_seg, np.bool_)
        is_last[last_seg] = True
        for s in np.flatnonzero(~is_last).tolist():
            self.on_flow(flows[s])
        last_pos = pos_s[np.append(gstart[1:], n) - 1]
        for gi in np.argsort(last_pos, kind="stable").tolist():
            k = uh[gi]
            s = int(last_seg[gi])
            self.open[k] = flows[s]
            self.open.move_to_end(k)
            st = int(gstart[gi])
            if k not in self.keys and nf2[st]:  # a group starts with a later fragment only when its flow was open already
                self.keys[k] = int(h2s[st])
        now = float(ts.max())
        while self.open:
            k, f = next(iter(self.open.items()))
            if now - f.ts_last <= self.idle_timeout:
                break
            del self.open[k]
            del self.keys[k]
            self.on_flow(f)

    # -- helpers ------------------------------------------------------------------------
    def _fragments(self, pk: Packets, h: U64, ends: tuple[U64, U64, U64, U64], keep: BOOL, f2_lo: BOOL, f2_hi: BOOL) -> None:
        """Later fragments join the flow of their first fragment (by IP id), as in FlowTable; orphans are counted."""
        ah, al, bh, bl = ends
        live: set[int] = set()
        for i in np.flatnonzero(pk.frag).tolist():
            fk = (int(pk.src_hi[i]), int(pk.src_lo[i]), int(pk.dst_hi[i]), int(pk.dst_lo[i]), int(pk.proto[i]), int(pk.frag_id[i]))
            if pk.frag[i] == 1:
                if len(self.frag_map) > 65536:
                    self.frag_map.clear()
                self.frag_map[fk] = (int(h[i]), int(ah[i]), int(al[i]), int(bh[i]), int(bl[i]), float(pk.ts[i]))
                live.add(int(h[i]))
                continue
            hit = self.frag_map.get(fk)
            if hit is None or (hit[0] not in live and hit[0] not in self.open) or pk.ts[i] - hit[5] > self.idle_timeout:
                self.orphan_fragments += 1
                keep[i] = False
                continue
            h[i] = hit[0]
            # FlowTable counts a later fragment by address only: from the flow's first sender if the source is that address
            f2_lo[i] = (fk[0], fk[1]) == (hit[1], hit[2])
            f2_hi[i] = (fk[0], fk[1]) == (hit[3], hit[4])

    def _check_keys(self, key_cols: list[I64 | U64], g: I64, nf2: BOOL, uh: list[int], has_c: BOOL, h2: U64) -> None:
        """Every packet of a hash group has the group's key: a 64-bit hash collision would merge two flows.

        (Later fragments carry no ports: they are left out.)
        """
        rows = np.flatnonzero(nf2)
        if not len(rows):
            return
        gr = g[rows]
        same = gr[1:] == gr[:-1]
        bad = any(((c[rows][1:] != c[rows][:-1]) & same).any() for c in key_cols)
        firsts = rows[np.flatnonzero(np.append(True, ~same))]
        for st in firsts[has_c[g[firsts]]].tolist():
            bad = bad or self.keys[uh[g[st]]] != int(h2[st])
        if bad:
            raise RuntimeError("flow key hash collision; please report it (the per-packet FlowTable does not hash)")

    def _names(self, flows: list[Flow], new: list[int], first_pos: I64) -> None:
        """DNS names for the flows that started in this batch: the answers seen before each flow's first packet."""
        events = self._events
        if not events and not self.dns_map:
            return
        events.sort(key=lambda e: e[0])
        dns_map = self.dns_map
        fp = first_pos.tolist()
        j = 0
        for s in sorted(new, key=fp.__getitem__):
            p = fp[s]
            while j < len(events) and events[j][0] < p:
                dns_map[events[j][1]] = events[j][2]
                j += 1
            if dns_map:
                f = flows[s]
                f.dns_name = dns_map.get(f.b_ip) or dns_map.get(f.a_ip)
        for _, packed, name in events[j:]:
            dns_map[packed] = name
        events.clear()
