"""egressaudit's capture reader against scapy's raw readers, frame by frame, on every real capture and on odd formats."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import RawPcapNgReader, RawPcapReader, wrpcap

from egressaudit.capture.reader import (
    MAX_BLOCK,
    MAX_INTERFACES,
    MAX_LISTED,
    SKIP_BLOCK_TOO_SHORT,
    SKIP_CAPLEN_BEYOND_BLOCK,
    SKIP_TOO_MANY_INTERFACES,
    SKIP_UNKNOWN_INTERFACE,
    TS_MAX_S,
    TS_MIN_S,
    CaptureError,
    Frame,
    ReadStats,
    iter_frames,
)
from fuzz import hostile_captures as hc
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


# -- hostile input: counted, never raised (see also tests/test_hostile_captures.py, through the command) ----------------
def _sample_ng(n: int = 30) -> hc.PcapNg:
    cap = hc.parse((ROOT / "captures" / "janus-echo" / "call.pcapng").read_bytes(), n)
    assert isinstance(cap, hc.PcapNg)
    return cap


def _read(path: Path) -> tuple[list[Frame], ReadStats]:
    stats = ReadStats(str(path))
    return list(iter_frames(path, stats)), stats


def test_gzip_keeps_every_frame_before_the_damage(tmp_path: Path) -> None:
    """A bad CRC (all data intact), a cut file, a damaged block mid-stream: every frame before the damage is read, the
    damage counted once; several members and zero padding are read whole; damage in the first block is one CaptureError."""
    raw = (ROOT / "captures" / "janus-echo" / "call.pcapng").read_bytes()  # 1.6 MB: several reads of the stream
    full = [f.data for f in _read(ROOT / "captures" / "janus-echo" / "call.pcapng")[0]]
    gz = gzip.compress(raw, mtime=0)
    p = tmp_path / "c.pcapng.gz"

    def damaged(b: bytes) -> tuple[list[bytes], ReadStats]:
        p.write_bytes(b)
        frames, stats = _read(p)
        return [f.data for f in frames], stats

    crc = bytearray(gz)
    crc[-8] ^= 0xFF
    frames, stats = damaged(bytes(crc))
    assert frames == full and stats.truncated == 1 and "incorrect data check" in stats.errors[0]
    frames, stats = damaged(gz[: len(gz) // 2])
    assert 0 < len(frames) < len(full) and frames == full[: len(frames)] and stats.truncated == 1
    assert len(frames) > len(full) // 3  # most of what the half holds: nothing is lost to read sizes
    two = gzip.compress(raw[: len(raw) // 3], mtime=0) + gzip.compress(raw[len(raw) // 3 :], mtime=0) + bytes(64)
    frames, stats = damaged(two)
    assert frames == full and stats.truncated == 0 and not stats.errors
    padded = gzip.compress(raw[:1000], mtime=0) + bytes(3 << 20) + gzip.compress(raw[1000:], mtime=0)  # padding across reads
    frames, stats = damaged(padded)
    assert frames == full and stats.truncated == 0 and not stats.errors
    first = bytearray(gz)
    first[10] |= 0x06  # a reserved block type in the first deflate block header
    with pytest.raises(CaptureError, match="not a readable capture \\(gzip: .*invalid block type"):
        damaged(bytes(first))
    small = tmp_path / "small.pcap.gz"  # a file smaller than any read, whose only fault is its CRC
    wrpcap(str(tmp_path / "s.pcap"), _pkts(5))
    b = bytearray(gzip.compress((tmp_path / "s.pcap").read_bytes(), mtime=0))
    b[-8] ^= 0xFF
    small.write_bytes(bytes(b))
    frames_s, stats = _read(small)
    assert len(frames_s) == 5 and stats.truncated == 1
    assert stats.sha256 == hashlib.sha256(bytes(b)).hexdigest()  # the file's hash, as stored


@pytest.mark.parametrize("btype", [6, 1, 2, 3, 0x0A0D0D0A, 5])
@pytest.mark.parametrize("where", ["middle", "last"])
def test_pcapng_block_too_short_for_its_type_is_skipped(tmp_path: Path, btype: int, where: str) -> None:
    pn = _sample_ng()
    good = [f.data for f in _read(_write(tmp_path / "good.pcapng", pn.to_bytes()))[0]]
    short = bytearray(struct.pack("<II", btype, 12) + struct.pack("<I", 12))
    if btype == 0x0A0D0D0A:
        short = bytearray(struct.pack("<II", btype, 12) + b"\x4d\x3c\x2b\x1a")  # a good byte-order magic, and nothing else
    pn.blocks.insert(len(pn.blocks) if where == "last" else 15, short)
    frames, stats = _read(_write(tmp_path / "short.pcapng", pn.to_bytes()))
    assert [f.data for f in frames] == good  # every packet around it
    if btype == 5:
        assert stats.skipped == {}  # a statistics block is not read: nothing to skip
    else:
        assert stats.skipped == {SKIP_BLOCK_TOO_SHORT: 1}
    assert stats.truncated == stats.corrupt == 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_pcapng_packets_that_do_not_fit_their_block_or_interface_are_skipped(tmp_path: Path) -> None:
    pn = _sample_ng()
    idx = hc.packet_blocks(pn)
    hc.set_epb(pn, pn.blocks[idx[3]], caplen=10_000)
    hc.set_epb(pn, pn.blocks[idx[4]], iface=1)
    hc.set_epb(pn, pn.blocks[idx[5]], iface=0xFFFFFFFF)
    frames, stats = _read(_write(tmp_path / "x.pcapng", pn.to_bytes()))
    assert len(frames) == 27 and stats.frames == 27
    assert stats.skipped == {SKIP_CAPLEN_BEYOND_BLOCK: 1, SKIP_UNKNOWN_INTERFACE: 2}
    assert stats.corrupt == stats.truncated == 0


def test_timestamps_out_of_range_are_clamped_and_counted(tmp_path: Path) -> None:
    pn = _sample_ng()
    idx = hc.packet_blocks(pn)
    hc.set_epb(pn, pn.blocks[idx[0]], hi=0xFFFFFFFF)  # 2^64 microseconds: the year 584,554
    frames, stats = _read(_write(tmp_path / "hi.pcapng", pn.to_bytes()))
    assert frames[0].ts == TS_MAX_S and stats.timestamps_clamped == 1
    assert all(TS_MIN_S < f.ts < TS_MAX_S for f in frames[1:])
    (i,) = hc.idb_indexes(pn)
    lt, _, snap = struct.unpack_from("<HHI", pn.blocks[i], 8)
    pn.blocks[i] = hc.idb("<", lt, snap, hc.option("<", 14, struct.pack("<q", -(1 << 62))))  # offset: 146 billion years ago
    frames, stats = _read(_write(tmp_path / "lo.pcapng", pn.to_bytes()))
    assert [f.ts for f in frames] == [TS_MIN_S] * 30 and stats.timestamps_clamped == 30  # (the first: 2^64 µs - 2^62 s)
    pn.blocks[i] = hc.idb("<", lt, snap, hc.option("<", 9, b"\x80"))  # if_tsresol 2^0: whole seconds, 1.7e15 of them
    frames, stats = _read(_write(tmp_path / "res.pcapng", pn.to_bytes()))
    assert all(f.ts == TS_MAX_S for f in frames) and stats.timestamps_clamped == 30


def test_idb_option_longer_than_its_block_stops_the_option_walk(tmp_path: Path) -> None:
    pn = _sample_ng()
    (i,) = hc.idb_indexes(pn)
    lt, _, snap = struct.unpack_from("<HHI", pn.blocks[i], 8)
    b = hc.idb("<", lt, snap, hc.option("<", 9, b"\x06") + hc.option("<", 14, struct.pack("<q", 0)))
    struct.pack_into("<H", b, 26, 0xFFFF)  # the offset option (code 14) claims 65535 bytes: it would read the next blocks
    pn.blocks[i] = b
    frames, stats = _read(_write(tmp_path / "x.pcapng", pn.to_bytes()))
    assert len(frames) == 30 and stats.interfaces[0]["linktype"] == lt and not stats.skipped


def test_first_block_unreadable_is_one_capture_error(tmp_path: Path) -> None:
    pn = _sample_ng()
    raw = pn.to_bytes()
    bad_magic = bytearray(raw)
    bad_magic[8:12] = b"\xde\xad\xbe\xef"
    bad_length = bytearray(raw)
    struct.pack_into("<I", bad_length, 4, 0xFFFFFFF0)
    for data, message in ((bytes(bad_magic), "bad byte-order magic"), (bytes(bad_length), "first block claims"), (raw[:10], "ends inside")):
        with pytest.raises(CaptureError, match=message):
            _read(_write(tmp_path / "x.pcapng", data))


def test_pcap_record_length_is_capped_whatever_the_snaplen_says(tmp_path: Path) -> None:
    """snaplen 0xFFFFFFFF and a record claiming 1 GB: counted as corrupt (reading stops), not read into memory."""
    p = tmp_path / "x.pcap"
    wrpcap(str(p), _pkts(5))
    raw = bytearray(p.read_bytes())
    struct.pack_into("<I", raw, 16, 0xFFFFFFFF)
    first_len = struct.unpack_from("<I", raw, 24 + 8)[0]
    struct.pack_into("<I", raw, 24 + 16 + first_len + 8, 1 << 30)
    p.write_bytes(bytes(raw) + bytes(MAX_BLOCK // 64))  # (enough bytes after it that a reader would try)
    frames, stats = _read(p)
    assert len(frames) == 1 and stats.corrupt == 1 and stats.truncated == 0 and "claims 1073741824 bytes" in stats.errors[0]


def test_interfaces_and_errors_kept_are_capped() -> None:
    stats = ReadStats("x")
    for i in range(MAX_LISTED + 36):
        stats.error(f"error {i}")
        stats.interface(1, 65535, f"if{i}")
    assert len(stats.errors) == MAX_LISTED + 1 and stats.errors[-1] == "36 more errors"
    assert len(stats.interfaces) == MAX_LISTED and stats.interface_count == MAX_LISTED + 36


def test_many_interfaces_in_a_section_are_capped(tmp_path: Path) -> None:
    pn = _sample_ng(3)
    extra = hc.idb("<", 1, 65535)
    (i,) = hc.idb_indexes(pn)
    pn.blocks[i + 1 : i + 1] = [extra] * (MAX_INTERFACES + 5)
    frames, stats = _read(_write(tmp_path / "x.pcapng", pn.to_bytes()))
    assert len(frames) == 3 and stats.interface_count == MAX_INTERFACES and stats.skipped == {SKIP_TOO_MANY_INTERFACES: 6}
