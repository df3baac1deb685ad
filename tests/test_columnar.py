"""The columnar offline table (what `egressaudit analyze` uses) gives the per-packet FlowTable's flows, field for field.

FlowTable is the reference: it is the simple one, and live capture uses it.  The
comparisons run on every real capture, on seeded random traffic built to hit
the batch edges (tiny read-ahead buffers, short idle timeouts, TCP port reuse,
fragments, VLAN tags, IPv6, truncated and garbage frames), and frame by frame
for the decoder.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapWriter

from egressaudit.capture import reader
from egressaudit.capture.frames import decode
from egressaudit.capture.reader import FrameBatch, ReadStats, iter_batches, iter_frames
from egressaudit.flows.columnar import ColumnarFlowTable, decode_batch
from egressaudit.flows.table import Flow, FlowTable
from tests import factories
from tests.ndpi_expected import SHARED, SKIP_REASON

ETH = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # set, so that scapy never resolves (or asks for) a MAC
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo" / "call.pcapng"
REAL = sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng")) if SHARED.exists() else []
_STATE = {"quic", "tls_buf"}  # parser state, not results
FIELDS = [s for s in Flow.__slots__ if s not in _STATE]


def _snapshot(flows: list[Flow]) -> list[tuple[Any, ...]]:
    return sorted(tuple(sorted(v) if isinstance(v, set | frozenset) else v for v in (getattr(f, k) for k in FIELDS)) for f in flows)


def _per_packet(paths: list[Path], idle: float) -> tuple[list[Flow], Counter[str], int, int]:
    out: list[Flow] = []
    table = FlowTable(out.append, idle)
    skipped: Counter[str] = Counter()
    for p in paths:
        for fr in iter_frames(p, ReadStats(path=str(p))):
            pkt = decode(fr.linktype, fr.data)
            if isinstance(pkt, str):
                skipped[pkt] += 1
            else:
                table.add(pkt, fr.ts)
    table.flush()
    return out, skipped, table.orphan_fragments, table.packets


def _columnar(paths: list[Path], idle: float) -> tuple[list[Flow], Counter[str], int, int]:
    out: list[Flow] = []
    table = ColumnarFlowTable(out.append, idle)
    skipped: Counter[str] = Counter()
    for p in paths:
        for b in iter_batches(p, ReadStats(path=str(p))):
            table.add_batch(decode_batch(b, skipped))
    table.flush()
    return out, skipped, table.orphan_fragments, table.packets


def _assert_same(paths: list[Path], idle: float) -> int:
    ref, sk_ref, orphans_ref, n_ref = _per_packet(paths, idle)
    got, sk_got, orphans_got, n_got = _columnar(paths, idle)
    assert (sk_got, orphans_got, n_got) == (sk_ref, orphans_ref, n_ref)
    a, b = _snapshot(ref), _snapshot(got)
    if a != b:
        only_ref = [x for x in a if x not in b][:2]
        only_got = [x for x in b if x not in a][:2]
        pytest.fail(f"{len(ref)} flows per packet, {len(got)} columnar; per packet only {only_ref}; columnar only {only_got}; fields {FIELDS}")
    return len(ref)


@pytest.mark.parametrize("chunk", [reader.CHUNK, 4096], ids=["8MiB-buffers", "4KiB-buffers"])
@pytest.mark.parametrize("path", [SAMPLE, *REAL], ids=lambda p: p.name)
def test_same_flows_on_real_captures(path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "CHUNK", chunk)
    assert _assert_same([path], 120.0) > 0


@pytest.mark.skipif(not REAL, reason=SKIP_REASON)
def test_same_flows_on_all_real_captures_in_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several inputs in one table (their times overlap and go backwards between files), short idle timeout."""
    monkeypatch.setattr(reader, "CHUNK", 8192)
    paths = [p for p in REAL if p.suffix == ".pcap"]
    assert _assert_same(paths, 1.0) > 100


# -- seeded random traffic ---------------------------------------------------------------
HOSTS4 = ["192.168.1.10", "192.168.1.11", "198.51.100.7", "203.0.113.9"]
HOSTS6 = ["fd00::10", "2001:db8::7"]


def _random_traffic(seed: int) -> list[Packet]:
    """Packets among a few hosts and ports, so keys repeat: port reuse after FIN/RST, idle gaps, fragments, tags, DNS."""
    rng = random.Random(seed)
    t = 1_700_000_000.0
    pkts: list[Packet] = []
    for _ in range(260):
        t += rng.choice([0.001, 0.01, 0.2, 1.5, 3.0, 7.0])  # idle timeout in the test: 5 s
        v6 = rng.random() < 0.25
        hosts = HOSTS6 if v6 else HOSTS4
        src, dst = rng.sample(hosts, 2) if rng.random() < 0.95 else (hosts[0], hosts[0])
        sport, dport = rng.choice([(40000, 443), (443, 40000), (40001, 8801), (53, 5353), (5353, 53), (40000, 40000)])
        l3: Packet = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst, id=rng.randrange(1, 65535))
        kind = rng.random()
        payload = Raw(rng.randbytes(rng.choice([0, 0, 1, 12, 60, 200])))
        if kind < 0.45:
            flags = rng.choice(["S", "S", "SA", "A", "PA", "FA", "R", "F", "SF"])
            l4: Packet = TCP(sport=sport, dport=dport, flags=flags) / payload
        elif kind < 0.75:
            l4 = UDP(sport=sport, dport=dport) / payload
        elif kind < 0.82:
            q = DNS(id=1, qr=1, qd=DNSQR(qname=f"n{rng.randrange(4)}.example."), an=DNSRR(rrname="x.example.", rdata=rng.choice(HOSTS4)))
            l3 = IP(src="192.168.1.1", dst=HOSTS4[0])
            l4 = UDP(sport=53, dport=53000) / q
        elif kind < 0.87:
            l4 = ICMP() / payload
            if v6:
                l3 = IP(src=HOSTS4[0], dst=HOSTS4[2])
        elif kind < 0.92 and not v6:
            big = IP(src=src, dst=dst, id=rng.randrange(1, 65535)) / UDP(sport=sport, dport=dport) / Raw(rng.randbytes(3000))
            frags = fragment(big, fragsize=1200)
            if rng.random() < 0.3:
                frags = frags[1:]  # the first fragment lost: orphans
            for f in frags:
                fp = Ether(**ETH) / f
                fp.time = t
                pkts.append(fp)
                t += 0.001
            continue
        else:
            l3 = IPv6(src=HOSTS6[0], dst=HOSTS6[1]) / IPv6ExtHdrDestOpt() if rng.random() < 0.5 else l3
            l4 = UDP(sport=sport, dport=dport) / payload
        frame: Packet = Ether(**ETH) / (Dot1Q(vlan=7) / l3 / l4 if rng.random() < 0.1 else l3 / l4)
        if rng.random() < 0.03:
            frame = Ether(**ETH, type=0x0800) / Raw(rng.randbytes(rng.randrange(0, 30)))  # garbage after an IPv4 type
        frame.time = t
        pkts.append(frame)
    return pkts


@pytest.mark.parametrize("seed", range(12))
def test_same_flows_on_random_traffic(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "CHUNK", 2048)  # a few frames per batch: flows cross many batch edges
    path = tmp_path / "random.pcap"
    w = PcapWriter(str(path), linktype=1, snaplen=120 if seed % 3 == 0 else 65535)  # some seeds cut frames short
    for p in _random_traffic(seed):
        w.write(p)
    w.close()
    assert _assert_same([path], 5.0) > 10


def test_same_flows_on_the_factory_call(tmp_path: Path) -> None:
    """TLS names, DNS names and RTP evidence (what the dissectors add) agree too."""
    path = factories.sample_call(tmp_path / "call.pcap")
    ref, _, _, _ = _per_packet([path], 120.0)
    assert any(f.hostname == "zoom.us" for f in ref) and any(f.dns_name for f in ref) and any(f.rtp for f in ref)
    _assert_same([path], 120.0)


# -- the decoder, frame by frame ------------------------------------------------------------
def _frames() -> list[tuple[int, bytes]]:
    paths = [SAMPLE, *REAL]
    out: list[tuple[int, bytes]] = []
    for p in paths:
        out += [(f.linktype, f.data) for f in iter_frames(p, ReadStats(path=str(p)))]
    return out


def test_decode_batch_equals_decode_on_damaged_frames() -> None:
    """Real frames, cut short and with header bytes flipped: the same packets and the same skip reasons."""
    rng = random.Random(4)
    frames: list[tuple[int, bytes]] = []
    for lt, data in _frames():
        frames.append((lt, data))
        b = bytearray(data[: rng.randrange(0, len(data) + 1)] if rng.random() < 0.3 else data)
        for _ in range(rng.randrange(1, 4)):
            if b:
                b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
        frames.append((lt, bytes(b)))
    frames += [(lt, data) for lt in (0, 1, 101, 108, 113, 147, 276, 999, 0xFFFF) for data in (b"", b"\x45", bytes(13), bytes(19), bytes(range(60)))]
    buf = b"".join(d for _, d in frames)
    offs = np.cumsum([0] + [len(d) for _, d in frames[:-1]]).astype(np.int64)
    n = len(frames)
    batch = FrameBatch(
        buf, np.zeros(n), np.array([lt for lt, _ in frames], np.int64), offs, np.array([len(d) for _, d in frames], np.int64),
        np.array([len(d) for _, d in frames], np.int64), np.zeros(n, np.int64),
    )  # fmt: skip
    skipped: Counter[str] = Counter()
    pk = decode_batch(batch, skipped)
    ref_skipped: Counter[str] = Counter()
    ref = []
    for lt, data in frames:
        r = decode(lt, data)
        if isinstance(r, str):
            ref_skipped[r] += 1
        else:
            ref.append(r)
    assert skipped == ref_skipped and len(ref_skipped) >= 3
    assert len(pk) == len(ref) > 5000
    for i, r in enumerate(ref):
        payload = pk.buf[pk.pay_off[i] : pk.pay_off[i] + pk.pay_len[i]] if pk.pay_off[i] >= 0 else pk.side[i]
        src = (int(pk.src_hi[i]).to_bytes(8, "big") if r.version == 6 else b"") + int(pk.src_lo[i]).to_bytes(8 if r.version == 6 else 4, "big")
        dst = (int(pk.dst_hi[i]).to_bytes(8, "big") if r.version == 6 else b"") + int(pk.dst_lo[i]).to_bytes(8 if r.version == 6 else 4, "big")
        got = (pk.version[i], src, dst, pk.proto[i], pk.sport[i], pk.dport[i], pk.ip_len[i], payload)
        got += (pk.flags[i], pk.frag[i], pk.frag_id[i], pk.vlan[i])
        assert tuple(got) == tuple(r), f"frame {i}"
