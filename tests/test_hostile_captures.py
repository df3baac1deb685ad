"""Hostile captures through the real ``egressaudit analyze``: every cause of a traceback found on c21c1a1, rebuilt byte by byte.

Each reproducer starts from the README's sample call (a real capture, cut to its
first packets) and changes what the hostile user changed: pcapng timestamps
beyond any clock (``if_tsresol`` 10^1, 2^0, 2^1; a huge ``if_tsoffset``; an EPB
high word of 0xFFFFFFFF), a last block of 12 bytes (EPB, IDB, PB), gzip with a
damaged first deflate block; and around them the other damage the reader must
count and go past.  Each runs through the analyze command: exit 0 with the
damage counted in session.json, or exit 3 with one line on stderr; never exit 1,
never a traceback.  The clamped capture is then analysed and reported on by
subprocesses, as a user would, end to end.  A bounded run of
``fuzz/hostile_captures.py`` (with a subprocess sample) closes the file.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egressaudit.capture.reader import TS_MAX_S, TS_MIN_S
from egressaudit.cli import app
from fuzz import hostile_captures as hc
from tests.factories import sample_call

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo" / "call.pcapng"
PACKETS = 40  # the sample's first packets: enough for flows on both sides of every damage, small enough to be quick


def base() -> hc.PcapNg:
    cap = hc.parse(SAMPLE.read_bytes(), PACKETS)
    assert isinstance(cap, hc.PcapNg) and len(hc.packet_blocks(cap)) == PACKETS
    return cap


def with_idb_options(pn: hc.PcapNg, opts: bytes) -> hc.PcapNg:
    (i,) = hc.idb_indexes(pn)
    lt, _, snap = struct.unpack_from(pn.order + "HHI", pn.blocks[i], 8)
    pn.blocks[i] = hc.idb(pn.order, lt, snap, opts)
    return pn


def tsresol(value: int) -> bytes:
    return with_idb_options(base(), hc.option("<", 9, bytes([value]))).to_bytes()


def tsoffset(seconds: int) -> bytes:
    return with_idb_options(base(), hc.option("<", 14, struct.pack("<q", seconds))).to_bytes()


def epb_high_word() -> bytes:
    pn = base()
    hc.set_epb(pn, pn.blocks[hc.packet_blocks(pn)[7]], hi=0xFFFFFFFF)
    return pn.to_bytes()


def short_block(btype: int, where: str = "last") -> bytes:
    pn = base()
    b = bytearray(struct.pack("<II", btype, 12) + struct.pack("<I", 12))
    if where == "last":
        pn.blocks.append(b)
    else:
        pn.blocks.insert(hc.packet_blocks(pn)[PACKETS // 2], b)
    return pn.to_bytes()


def epb_field(**fields: int) -> bytes:
    pn = base()
    hc.set_epb(pn, pn.blocks[hc.packet_blocks(pn)[PACKETS // 2]], **fields)
    return pn.to_bytes()


def option_past_its_block() -> bytes:
    pn = with_idb_options(base(), hc.option("<", 2, b"lo"))
    (i,) = hc.idb_indexes(pn)
    struct.pack_into("<H", pn.blocks[i], 18, 0xFFFF)  # the name option claims 65535 bytes
    return pn.to_bytes()


def bad_section_magic(first: bool) -> bytes:
    pn = base()
    if first:
        pn.blocks[0][8:12] = b"\xde\xad\xbe\xef"
    else:
        shb = bytearray(pn.blocks[0])
        shb[8:12] = b"\xde\xad\xbe\xef"
        pn.blocks.insert(hc.packet_blocks(pn)[PACKETS // 2], shb)
    return pn.to_bytes()


def block_length_mid(value: int) -> bytes:
    pn = base()
    struct.pack_into("<I", pn.blocks[hc.packet_blocks(pn)[PACKETS // 2]], 4, value)
    return pn.to_bytes()


def gz(data: bytes, damage: Callable[[bytearray], None]) -> bytes:
    b = bytearray(gzip.compress(data, mtime=0))
    damage(b)
    return bytes(b)


def bad_first_deflate_block(b: bytearray) -> None:
    b[10] |= 0x06  # BTYPE 11: a reserved block type, in the first block header


def bad_crc(b: bytearray) -> None:
    b[-8] ^= 0xFF


def cut_in_half(b: bytearray) -> None:
    del b[len(b) // 2 :]


def pcap_huge_record() -> bytes:
    """A pcap whose header allows any length (snaplen 0xFFFFFFFF) and whose 3rd record claims 3 GB (read: 3 GB in memory)."""
    with tempfile.TemporaryDirectory() as d:
        pc = hc.parse(sample_call(Path(d) / "s.pcap").read_bytes())
    assert isinstance(pc, hc.Pcap)
    struct.pack_into("<I", pc.header, 16, 0xFFFFFFFF)
    struct.pack_into("<I", pc.records[2], 8, 3_000_000_000)
    return pc.to_bytes()


@dataclass
class Case:
    make: Callable[[], bytes]
    exit_code: int = 0
    packets: int | None = PACKETS  # packets read (None: not checked)
    skipped: dict[str, int] = field(default_factory=dict)  # counts.skipped that must be there
    clamped: int = 0  # counts.timestamps_clamped
    message: str = ""  # in the one line on stderr (exit 3)


CASES = {
    # timestamps beyond the int64 microsecond range: OverflowError in analyze.py on c21c1a1
    "if_tsresol 10^1": Case(lambda: tsresol(0x01), clamped=PACKETS),
    "if_tsresol 2^0": Case(lambda: tsresol(0x80), clamped=PACKETS),
    "if_tsresol 2^1": Case(lambda: tsresol(0x81), clamped=PACKETS),
    "if_tsoffset 2^62": Case(lambda: tsoffset(1 << 62), clamped=PACKETS),
    "if_tsoffset -2^62": Case(lambda: tsoffset(-(1 << 62)), clamped=PACKETS),
    "EPB high word 0xFFFFFFFF": Case(epb_high_word, clamped=1),
    # a last block of 12 bytes: struct.error in the reader on c21c1a1
    "12-byte EPB last": Case(lambda: short_block(6), skipped={"pcapng_block_too_short": 1}),
    "12-byte IDB last": Case(lambda: short_block(1), skipped={"pcapng_block_too_short": 1}),
    "12-byte PB last": Case(lambda: short_block(2), skipped={"pcapng_block_too_short": 1}),
    "12-byte SPB mid-file": Case(lambda: short_block(3, "mid"), skipped={"pcapng_block_too_short": 1}),
    # gzip with a bad first deflate block: zlib.error out of open_capture on c21c1a1
    "gzip bad first deflate block": Case(lambda: gz(base().to_bytes(), bad_first_deflate_block), 3, None, message="not a readable capture (gzip:"),
    # damage the reader goes past, the packets around it counted
    "EPB longer than its block": Case(lambda: epb_field(caplen=4000), packets=PACKETS - 1, skipped={"pcapng_caplen_beyond_block": 1}),
    "EPB on an unknown interface": Case(lambda: epb_field(iface=7), packets=PACKETS - 1, skipped={"pcapng_unknown_interface": 1}),
    "IDB option past its block": Case(option_past_its_block),
    "gzip with a bad CRC": Case(lambda: gz(base().to_bytes(), bad_crc), skipped={"truncated_record": 1}),
    "gzip cut in half": Case(lambda: gz(base().to_bytes(), cut_in_half), packets=None, skipped={"truncated_record": 1}),
    # damage that stops the file there (counted), or makes it unusable (one line)
    "block length 0xFFFFFFFF mid-file": Case(lambda: block_length_mid(0xFFFFFFFF), packets=PACKETS // 2, skipped={"corrupt_record": 1}),
    "section header with a bad magic mid-file": Case(lambda: bad_section_magic(False), packets=PACKETS // 2, skipped={"corrupt_record": 1}),
    "first section header with a bad magic": Case(lambda: bad_section_magic(True), 3, None, message="bad byte-order magic"),
    "file ends inside its section header": Case(lambda: base().to_bytes()[:40], 3, None, message="ends inside its section header"),
    "pcap record of 3 GB, snaplen 0xFFFFFFFF": Case(pcap_huge_record, packets=2, skipped={"corrupt_record": 1}),
}


def egressaudit(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "egressaudit", *args], capture_output=True, text=True, env=env, timeout=300)


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode != 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_capture_is_counted_or_one_line(tmp_path: Path, name: str) -> None:
    """The analyze command in-process (typer's runner: its exceptions are not caught by the last-resort handler);
    the subprocess runs are the report test below and the fuzz run's sample."""
    case = CASES[name]
    path = tmp_path / "hostile.pcapng"
    path.write_bytes(case.make())
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["analyze", str(path), "--out", str(out), "--quiet"])
    assert r.exception is None or isinstance(r.exception, SystemExit), "".join(traceback.format_exception(r.exception))
    assert "Traceback" not in r.output
    assert r.exit_code == case.exit_code, r.output
    if case.exit_code:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and case.message in lines[0], r.stderr
        return
    session = json.loads((out / "session.json").read_text())
    counts = session["counts"]
    if case.packets is not None:
        assert counts["packets"] == case.packets
    else:
        assert 0 < counts["packets"] < PACKETS
    for reason, n in case.skipped.items():
        assert counts["skipped"].get(reason) == n, counts["skipped"]
    assert counts["timestamps_clamped"] == case.clamped
    assert counts["timestamp_range"] == ["1970-01-01T00:00:00Z", "2262-01-01T00:00:00Z"]
    flows = pq.read_table(out / "flows.parquet").to_pandas()
    assert len(flows) == counts["flows"] > 0
    lo, hi = flows["ts_start"].min().timestamp(), flows["ts_end"].max().timestamp()
    assert TS_MIN_S <= lo <= hi <= TS_MAX_S


def test_a_clamped_capture_is_reported_end_to_end(tmp_path: Path) -> None:
    """Timestamps clamped to the end of the range (2262), beside packets of today: analyze, then report, both exit 0."""
    pn = base()
    for i in hc.packet_blocks(pn)[::3]:  # a third of the packets in the year 584,554 (2^64 microseconds)
        hc.set_epb(pn, pn.blocks[i], hi=0xFFFFFFFF, lo=0xFFFFFFFF)
    path = tmp_path / "clamped.pcapng"
    path.write_bytes(pn.to_bytes())
    out = tmp_path / "out"
    r = egressaudit("analyze", str(path), "--out", str(out), "--quiet", home=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    session = json.loads((out / "session.json").read_text())
    assert session["counts"]["timestamps_clamped"] == len(hc.packet_blocks(pn)[::3])
    assert any("clamped" in e for e in session["inputs"][0]["errors"])
    flows = pq.read_table(out / "flows.parquet").to_pandas()
    assert flows["ts_end"].max().year == 2262 and flows["ts_start"].min().year < 2100
    r = egressaudit("report", str(out), home=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").stat().st_size > 0
    assert all(p.stat().st_size > 0 for p in (out / "figures").glob("*.png"))


def test_bounded_fuzz_run_finds_no_traceback(tmp_path: Path) -> None:
    """200 structure-aware mutations (every 50th also as a subprocess): no traceback, every failure one line."""
    s = hc.run(tmp_path, cases=200, seed=11, subprocess_every=50)
    assert s["inputs"] == 200
    assert s["tracebacks"] == 0, s["reproducers"]
    assert set(s["exit_codes"]) <= {"0", "3"}, s["exit_codes"]
    assert s["subprocess"]["cases"] == 4 and s["subprocess"]["tracebacks"] == 0
    assert s["subprocess"]["exit_code_differs_from_in_process"] == 0 and s["subprocess"]["failures_not_one_line"] == 0
    assert s["exit_codes"].get("0", 0) > 100 and s["packets_read"] > 0  # most mutations leave something to read
    assert s["timestamps_clamped"] > 0 and any(k.startswith("pcapng_") for k in s["skipped"])
