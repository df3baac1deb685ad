"""egressaudit's capture reader against scapy's raw readers, frame by frame, on every real capture and on odd formats."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import RawPcapNgReader, RawPcapReader, wrpcap

from egressaudit.capture.reader import CaptureError, ReadStats, iter_frames
from tests.ndpi_expected import SHARED

ROOT = Path(__file__).resolve().parents[1]


def _real() -> list[Path]:
    out = [ROOT / "captures" / "janus-echo" / "call.pcapng"]
    if SHARED.is_dir():
        out += sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    return out


def _scapy_frames(path: Path) -> list[tuple[float, int, bytes, int]]:
    with RawPcapReader(str(path)) as r:
        out = []
        for data, meta in r:
            if isinstance(r, RawPcapNgReader):
                out.append(((meta.tshigh << 32 | meta.tslow) / meta.tsresol, int(meta.linktype), data, meta.wirelen))
            else:
                out.append((meta.sec + meta.usec / (1e9 if r.nano else 1e6), int(r.linktype), data, meta.wirelen))
        return out


@pytest.mark.parametrize("path", _real(), ids=lambda p: p.name)
def test_same_frames_as_scapy(path: Path) -> None:
    stats = ReadStats(str(path))
    ours = [(f.ts, f.linktype, f.data, f.wirelen) for f in iter_frames(path, stats)]
    theirs = _scapy_frames(path)
    assert [o[1:] for o in ours] == [t[1:] for t in theirs]
    assert max((abs(o[0] - t[0]) for o, t in zip(ours, theirs, strict=True)), default=0.0) < 2e-6  # float rounding only
    assert stats.frames == len(ours) and stats.truncated == stats.corrupt == 0


def _pkts(n: int = 5) -> list[Ether]:
    pkts = []
    for i in range(n):
        p = Ether() / IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=1000 + i, dport=53) / Raw(b"x" * 10)
        p.time = 1_700_000_000 + i / 1000
        pkts.append(p)
    return pkts


def test_nanosecond_big_endian_and_gzip(tmp_path: Path) -> None:
    ns = tmp_path / "ns.pcap"
    wrpcap(str(ns), _pkts(), nano=True)
    frames = list(iter_frames(ns, ReadStats("ns")))
    assert [round(f.ts, 3) for f in frames] == [1_700_000_000 + i / 1000 for i in range(5)]
    # big-endian copy of the same file
    raw = ns.read_bytes()
    hdr = struct.unpack("<IHHiIII", raw[:24])
    be = struct.pack(">IHHiIII", *hdr)
    off = 24
    while off < len(raw):
        sec, frac, cap, wire = struct.unpack_from("<IIII", raw, off)
        be += struct.pack(">IIII", sec, frac, cap, wire) + raw[off + 16 : off + 16 + cap]
        off += 16 + cap
    bep = tmp_path / "be.pcap"
    bep.write_bytes(be)
    assert [f.data for f in iter_frames(bep, ReadStats("be"))] == [f.data for f in frames]
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(raw))
    assert [f.data for f in iter_frames(gz, ReadStats("gz"))] == [f.data for f in frames]


def test_damaged_record_length_stops_with_a_count(tmp_path: Path) -> None:
    p = tmp_path / "bad.pcap"
    wrpcap(str(p), _pkts())
    raw = bytearray(p.read_bytes())
    first_len = struct.unpack_from("<I", raw, 24 + 8)[0]
    second = 24 + 16 + first_len
    struct.pack_into("<I", raw, second + 8, 10_000_000)  # an impossible caplen in record 2
    p.write_bytes(bytes(raw))
    stats = ReadStats("bad")
    frames = list(iter_frames(p, stats))
    assert len(frames) == 1 and stats.corrupt == 1 and stats.errors


def test_broken_gzip_is_counted_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    pkts = _pkts(3000)
    for pk in pkts:
        pk[Raw].load = os.urandom(200)  # incompressible, so the .gz spans several read chunks
    wrpcap(str(p), pkts)
    gz = gzip.compress(p.read_bytes())
    broken = tmp_path / "broken.pcap.gz"
    broken.write_bytes(gz[: len(gz) // 2])
    stats = ReadStats("broken")
    frames = list(iter_frames(broken, stats))
    assert 0 < len(frames) < 3000 and stats.truncated >= 1 and stats.errors


def test_not_a_capture(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CaptureError, match="not a pcap or pcapng capture"):
        list(iter_frames(p, ReadStats("x")))
