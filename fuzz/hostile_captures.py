"""Hostile captures: structure-aware mutations of real captures, each run through the real ``egressaudit analyze``.

Seeds are the public captures in ``../shared/captures/public/ndpi/`` (pcap and
pcapng), falling back to ``captures/janus-echo/call.pcapng`` and small scapy-built
captures (``tests/factories.py``) when that folder is absent; each seed is cut to
its first :data:`SEED_RECORDS` records so that a case costs a fraction of a second.
A case applies one to three mutations that know the formats: pcap and pcapng
header and block fields (lengths, block types, interface ids, ``if_tsresol`` and
``if_tsoffset`` options, EPB timestamp words, captured lengths), truncations at
and around every block boundary, blocks too short for their type, section
headers with a bad byte-order magic, byte changes in the link, IP, UDP and TCP
headers of packets and in their payloads (what the dissectors read), and gzip wrapping with damaged deflate streams.

Each case runs ``egressaudit analyze CASE --out DIR --quiet`` in-process (typer's
CliRunner: the real command, its writes included) and every
``subprocess_every``-th case also as a real subprocess (``python -m egressaudit``),
which is the honest measure: its exit code must agree and its stderr must be one
line for a failure, never a traceback.  A traceback (or exit 1, the code for a
bug) is counted by cause (``ExceptionType at file:line``) and the case is kept in
``WORK/crashes/`` to be reproduced.

    python fuzz/hostile_captures.py --cases 3200 --seed 0 --work /tmp/hostile   # prints the summary as JSON
    python fuzz/hostile_captures.py --case 17 --seed 0 --work /tmp/hostile      # one case again, kept in WORK/

Deterministic for a given seed: case ``i`` is made from ``Random(seed * 1_000_003 + i)``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "captures" / "public" / "ndpi"
SAMPLE = ROOT / "captures" / "janus-echo" / "call.pcapng"
if str(ROOT) not in sys.path:  # (run as a script or loaded from its path: the fuzz folder is then not a package)
    sys.path.insert(0, str(ROOT))
from fuzz.outcome import Outcome, invoke, message, run_command  # noqa: E402

SEED_RECORDS = 300
SHB = 0x0A0D0D0A
EPB, IDB, PB, SPB, ISB = 6, 1, 2, 3, 5


# -- parsed captures -----------------------------------------------------------------------------------------
@dataclass
class PcapNg:
    """A pcapng file as its blocks (each one's whole bytes, framing included) and the byte order of its section."""

    order: str
    blocks: list[bytearray]

    def to_bytes(self) -> bytes:
        return b"".join(self.blocks)


@dataclass
class Pcap:
    """A pcap file as its 24-byte header and its records (16-byte record header + data each)."""

    order: str
    header: bytearray
    records: list[bytearray]

    def to_bytes(self) -> bytes:
        return bytes(self.header) + b"".join(self.records)


def parse(raw: bytes, max_records: int = SEED_RECORDS) -> PcapNg | Pcap:
    """A well-formed seed capture, cut to its first ``max_records`` packet records (pcapng: every non-packet block before them)."""
    if raw[:4] == b"\x0a\x0d\x0d\x0a":
        order = "<" if raw[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        blocks: list[bytearray] = []
        pos = packets = 0
        while pos + 12 <= len(raw) and packets < max_records:
            btype, blen = struct.unpack_from(order + "II", raw, pos)
            blocks.append(bytearray(raw[pos : pos + blen]))
            packets += btype in (EPB, PB, SPB)
            pos += blen
        return PcapNg(order, blocks)
    order = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records: list[bytearray] = []
    pos = 24
    while pos + 16 <= len(raw) and len(records) < max_records:
        caplen = struct.unpack_from(order + "I", raw, pos + 8)[0]
        records.append(bytearray(raw[pos : pos + 16 + caplen]))
        pos += 16 + caplen
    return Pcap(order, bytearray(raw[:24]), records)


def block(order: str, btype: int, body: bytes) -> bytearray:
    """A pcapng block: type, total length, body (padded to 32 bits), total length again."""
    body = body + b"\x00" * (-len(body) % 4)
    total = 12 + len(body)
    return bytearray(struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total))


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def idb(order: str, linktype: int = 1, snaplen: int = 262144, options: bytes = b"") -> bytearray:
    """An Interface Description Block; ``options`` as made by :func:`option` (the end-of-options is added)."""
    opts = options + option(order, 0, b"") if options else b""
    return block(order, IDB, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb_fields(pn: PcapNg, b: bytearray) -> tuple[int, int, int, int, int]:
    """(interface, ts high, ts low, captured length, wire length) of an EPB."""
    iface, hi, lo, caplen, wirelen = struct.unpack_from(pn.order + "IIIII", b, 8)
    return iface, hi, lo, caplen, wirelen


def set_epb(pn: PcapNg, b: bytearray, **fields: int) -> None:
    names = ("iface", "hi", "lo", "caplen", "wirelen")
    values = dict(zip(names, epb_fields(pn, b), strict=True)) | fields
    struct.pack_into(pn.order + "IIIII", b, 8, *(values[n] for n in names))


def _blocks_of(pn: PcapNg, btype: int, min_len: int) -> list[int]:
    """The blocks of a type long enough for its fields (earlier mutations may have left others)."""
    return [i for i, b in enumerate(pn.blocks) if len(b) >= min_len and struct.unpack_from(pn.order + "I", b)[0] == btype]


def packet_blocks(pn: PcapNg) -> list[int]:
    return _blocks_of(pn, EPB, 32)


def idb_indexes(pn: PcapNg) -> list[int]:
    return _blocks_of(pn, IDB, 20)


# -- seeds ---------------------------------------------------------------------------------------------------
def seed_files(work: Path) -> list[Path]:
    """The public captures when present; otherwise the README's sample call and two scapy-built captures."""
    found = sorted(p for p in SHARED.glob("*") if p.suffix in (".pcap", ".pcapng")) if SHARED.is_dir() else []
    if found:
        return found
    out = [SAMPLE] if SAMPLE.is_file() else []
    sys.path.insert(0, str(ROOT))
    from tests.factories import sample_call

    work.mkdir(parents=True, exist_ok=True)
    out.append(sample_call(work / "seed-scapy.pcap"))
    out.append(sample_call(work / "seed-scapy.pcapng", ng=True))
    return out


# -- mutations -----------------------------------------------------------------------------------------------
LENGTHS = (0, 4, 8, 11, 12, 13, 16, 20, 24, 28, 31, 32, 0x7FFFFFFF, 0xFFFFFFFF, (64 << 20) + 4, 1 << 30)
TSRESOL = (0x00, 0x01, 0x02, 0x03, 0x06, 0x09, 0x13, 0x7F, 0x80, 0x81, 0x82, 0x9F, 0xBF, 0xFF)
TSOFFSET = ((1 << 63) - 1, -(1 << 63), 1 << 62, -(1 << 40), -1, 10**12, 4_000_000_000)
BLOCK_TYPES = (0, EPB, IDB, PB, SPB, ISB, 4, 9, 0xBAD, 0x0BAD, SHB, 0x40000BAD, 0xFFFFFFFF)
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147, 0xFFFF, 105, 127)


def _pick(rng: random.Random, values: tuple[int, ...]) -> int:
    return rng.choice(values) if rng.random() < 0.8 else rng.getrandbits(32)


def ng_block_length(rng: random.Random, pn: PcapNg) -> str:
    i = rng.randrange(len(pn.blocks))
    b = pn.blocks[i]
    value = _pick(rng, LENGTHS) if rng.random() < 0.7 else max(0, len(b) + rng.choice((-8, -4, -1, 1, 4, 8, 4096)))
    where = rng.choice(("head", "tail", "both"))
    if where in ("head", "both"):
        struct.pack_into(pn.order + "I", b, 4, value & 0xFFFFFFFF)
    if where in ("tail", "both"):
        struct.pack_into(pn.order + "I", b, len(b) - 4, value & 0xFFFFFFFF)
    return "block_length"


def ng_tsresol(rng: random.Random, pn: PcapNg) -> str:
    """Every interface (or one) gets an ``if_tsresol`` (and sometimes an ``if_tsoffset``) from the edges of the format."""
    for i in idb_indexes(pn):
        if rng.random() < 0.3 and len(idb_indexes(pn)) > 1:
            continue
        lt, _, snap = struct.unpack_from(pn.order + "HHI", pn.blocks[i], 8)
        opts = option(pn.order, 9, bytes([_pick(rng, TSRESOL) & 0xFF]))
        if rng.random() < 0.3:
            opts += option(pn.order, 14, struct.pack(pn.order + "q", rng.choice(TSOFFSET)))
        pn.blocks[i] = idb(pn.order, lt, snap, opts)
    return "if_tsresol"


def ng_tsoffset(rng: random.Random, pn: PcapNg) -> str:
    for i in idb_indexes(pn):
        lt, _, snap = struct.unpack_from(pn.order + "HHI", pn.blocks[i], 8)
        value = rng.choice(TSOFFSET) if rng.random() < 0.8 else rng.randrange(-(1 << 63), 1 << 63)
        pn.blocks[i] = idb(pn.order, lt, snap, option(pn.order, 14, struct.pack(pn.order + "q", value)))
    return "if_tsoffset"


def ng_epb_timestamp(rng: random.Random, pn: PcapNg) -> str:
    idx = packet_blocks(pn)
    if not idx:
        return "epb_timestamp(none)"
    chosen = idx if rng.random() < 0.3 else rng.sample(idx, min(len(idx), rng.randint(1, 4)))
    for i in chosen:
        hi = rng.choice((0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0, rng.getrandbits(32)))
        set_epb(pn, pn.blocks[i], hi=hi, lo=rng.getrandbits(32))
    return "epb_timestamp"


def ng_interface_id(rng: random.Random, pn: PcapNg) -> str:
    idx = packet_blocks(pn)
    for i in rng.sample(idx, min(len(idx), rng.randint(1, 3))):
        set_epb(pn, pn.blocks[i], iface=_pick(rng, (1, 2, 7, 0xFFFF, 0x10000, 0xFFFFFFFF)))
    return "interface_id"


def ng_caplen(rng: random.Random, pn: PcapNg) -> str:
    idx = packet_blocks(pn)
    for i in rng.sample(idx, min(len(idx), rng.randint(1, 3))):
        b = pn.blocks[i]
        if rng.random() < 0.7:
            set_epb(pn, b, caplen=_pick(rng, (0, 1, len(b) - 32, len(b) - 31, len(b), 0xFFFFFFFF, 262145)) & 0xFFFFFFFF)
        else:
            set_epb(pn, b, wirelen=_pick(rng, (0, 1, 0xFFFFFFFF)))
    return "caplen"


def ng_block_type(rng: random.Random, pn: PcapNg) -> str:
    i = rng.randrange(len(pn.blocks))
    struct.pack_into(pn.order + "I", pn.blocks[i], 0, _pick(rng, BLOCK_TYPES) & 0xFFFFFFFF)
    return "block_type"


def ng_short_block(rng: random.Random, pn: PcapNg) -> str:
    """A block whose length is sane but too short for its type (the 12-byte EPB/IDB/PB that crashed the reader)."""
    btype = rng.choice((EPB, IDB, PB, SPB, SHB, ISB))
    size = rng.choice((12, 12, 16, 20, 24, 28))
    b = bytearray(struct.pack(pn.order + "II", btype, size) + bytes(size - 12) + struct.pack(pn.order + "I", size))
    if btype == SHB and size >= 16:
        b[8:12] = struct.pack(pn.order + "I", 0x1A2B3C4D)  # a good byte-order magic, then nothing of the rest
    if rng.random() < 0.5:
        pn.blocks.append(b)
    else:
        pn.blocks.insert(rng.randrange(1, len(pn.blocks) + 1), b)
    return f"short_block({btype:#x},{size})"


def ng_bad_shb(rng: random.Random, pn: PcapNg) -> str:
    magic = struct.pack("<I", rng.getrandbits(32))
    if rng.random() < 0.4:
        pn.blocks[0][8:12] = magic
        return "bad_shb_first"
    shb = bytearray(pn.blocks[0])
    shb[8:12] = magic
    pn.blocks.insert(rng.randrange(1, len(pn.blocks) + 1), shb)
    return "bad_shb_later"


def ng_new_section(rng: random.Random, pn: PcapNg) -> str:
    """A second section header mid-file (interfaces start over: later packets name interfaces that do not exist)."""
    at = rng.randrange(1, len(pn.blocks) + 1)
    pn.blocks.insert(at, bytearray(pn.blocks[0]))
    if rng.random() < 0.5:
        pn.blocks.insert(at + 1, idb(pn.order, _pick(rng, LINKTYPES) & 0xFFFF, rng.choice((0, 65535, 262144, 0xFFFFFFFF))))
    return "new_section"


def ng_idb_options(rng: random.Random, pn: PcapNg) -> str:
    """Interfaces with odd options: lengths past the block, a name that is not UTF-8, odd link types and snap lengths."""
    for i in idb_indexes(pn):
        lt, _, snap = struct.unpack_from(pn.order + "HHI", pn.blocks[i], 8)
        if rng.random() < 0.5:
            lt = _pick(rng, LINKTYPES) & 0xFFFF
        if rng.random() < 0.3:
            snap = rng.choice((0, 1, 14, 0xFFFFFFFF))
        opts = option(pn.order, 2, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))))
        b = idb(pn.order, lt, snap, opts)
        if rng.random() < 0.5:  # an option that claims more than its block holds
            struct.pack_into(pn.order + "H", b, 18, rng.choice((8, 0xFFFF, len(b))))
        pn.blocks[i] = b
    return "idb_options"


def ng_to_spb_or_pb(rng: random.Random, pn: PcapNg) -> str:
    idx = packet_blocks(pn)
    for i in rng.sample(idx, min(len(idx), rng.randint(1, 10))):
        iface, hi, lo, caplen, wirelen = epb_fields(pn, pn.blocks[i])
        data = bytes(pn.blocks[i][28 : 28 + caplen])
        if rng.random() < 0.5:
            pn.blocks[i] = block(pn.order, SPB, struct.pack(pn.order + "I", rng.choice((wirelen, 0, 0xFFFFFFFF))) + data)
        else:
            pn.blocks[i] = block(pn.order, PB, struct.pack(pn.order + "HHIIII", iface & 0xFFFF, 0, hi, lo, caplen, wirelen) + data)
    return "spb_pb"


HEADER_FIELDS = (0, 12, 13, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 26, 34, 35, 36, 37, 38, 39, 46, 47, 54)


def _flip_packet(rng: random.Random, data: bytearray) -> None:
    """Change a few bytes where the link, IP and transport headers are (Ethernet-like offsets, and the first 60 bytes)."""
    if not data:
        return
    for _ in range(rng.randint(1, 4)):
        at = rng.choice(HEADER_FIELDS) if rng.random() < 0.5 else rng.randrange(min(len(data), 64))
        if at < len(data):
            data[at] = rng.choice((0x00, 0xFF, 0x45, 0x4F, 0x60, 0x06, 0x11, 0x29, 0x2C, 0x04, 0x2B, 0x81, 0x88, rng.getrandbits(8)))


def _flip_payload(rng: random.Random, data: bytearray) -> None:
    """Change a few bytes past the headers: what the dissectors read (TLS and QUIC ClientHellos, DNS, STUN, RTP...)."""
    if len(data) > 42:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(42, len(data))] = rng.getrandbits(8)


def ng_flip_payload(rng: random.Random, pn: PcapNg) -> str:
    idx = packet_blocks(pn)
    for i in rng.sample(idx, min(len(idx), rng.randint(1, 40))):
        b = pn.blocks[i]
        caplen = epb_fields(pn, b)[3]
        data = bytearray(b[28 : 28 + caplen])
        _flip_payload(rng, data)
        b[28 : 28 + caplen] = data
    return "flip_payload"


def ng_flip_headers(rng: random.Random, pn: PcapNg) -> str:
    idx = packet_blocks(pn)
    for i in rng.sample(idx, min(len(idx), rng.randint(1, 20))):
        b = pn.blocks[i]
        caplen = epb_fields(pn, b)[3]
        data = bytearray(b[28 : 28 + caplen])
        _flip_packet(rng, data)
        b[28 : 28 + caplen] = data
    return "flip_headers"


def ng_truncate(rng: random.Random, pn: PcapNg) -> str:
    """Cut the file at a block boundary, or a few bytes off one (the file then ends inside a block)."""
    at = rng.randrange(1, len(pn.blocks) + 1)
    cut = rng.choice((0, 1, 4, 8, 11, 12, 13, 20, 28, 31))
    tail = pn.blocks[at:]
    del pn.blocks[at:]
    if cut and tail:
        pn.blocks.append(bytearray(tail[0][:cut]))
    return "truncate"


NG_OPS: dict[str, Callable[[random.Random, PcapNg], str]] = {
    "block_length": ng_block_length, "if_tsresol": ng_tsresol, "if_tsoffset": ng_tsoffset, "epb_timestamp": ng_epb_timestamp,
    "interface_id": ng_interface_id, "caplen": ng_caplen, "block_type": ng_block_type, "short_block": ng_short_block,
    "bad_shb": ng_bad_shb, "new_section": ng_new_section, "idb_options": ng_idb_options, "spb_pb": ng_to_spb_or_pb,
    "flip_headers": ng_flip_headers, "flip_payload": ng_flip_payload, "truncate": ng_truncate,
}  # fmt: skip


def pcap_header(rng: random.Random, pc: Pcap) -> str:
    kind = rng.choice(("snaplen", "linktype", "version", "nano"))
    if kind == "snaplen":
        struct.pack_into(pc.order + "I", pc.header, 16, rng.choice((0, 1, 14, 60, 0xFFFFFFFF, 0x7FFFFFFF)))
    elif kind == "linktype":
        struct.pack_into(pc.order + "I", pc.header, 20, _pick(rng, LINKTYPES) | rng.choice((0, 0, 0x10000000, 0xF0000000)))
    elif kind == "version":
        struct.pack_into(pc.order + "HH", pc.header, 4, rng.getrandbits(16), rng.getrandbits(16))
    else:  # the nanosecond magic: every fraction is read as nanoseconds
        pc.header[0:4] = b"\x4d\x3c\xb2\xa1" if pc.order == "<" else b"\xa1\xb2\x3c\x4d"
    return f"pcap_header({kind})"


def pcap_record_length(rng: random.Random, pc: Pcap) -> str:
    for r in rng.sample(pc.records, min(len(pc.records), rng.randint(1, 2))):
        field_at = 8 if rng.random() < 0.7 else 12
        struct.pack_into(pc.order + "I", r, field_at, _pick(rng, (0, 1, 13, 65535, 262144, 262145, 0x7FFFFFFF, 0xFFFFFFFF)))
    return "pcap_record_length"


def pcap_timestamp(rng: random.Random, pc: Pcap) -> str:
    for r in rng.sample(pc.records, min(len(pc.records), rng.randint(1, 5))):
        struct.pack_into(pc.order + "II", r, 0, rng.choice((0, 0xFFFFFFFF, 0x80000000)), rng.choice((0, 999_999, 0xFFFFFFFF)))
    return "pcap_timestamp"


def pcap_flip_headers(rng: random.Random, pc: Pcap) -> str:
    for r in rng.sample(pc.records, min(len(pc.records), rng.randint(1, 20))):
        data = bytearray(r[16:])
        _flip_packet(rng, data)
        r[16:] = data
    return "flip_headers"


def pcap_flip_payload(rng: random.Random, pc: Pcap) -> str:
    for r in rng.sample(pc.records, min(len(pc.records), rng.randint(1, 40))):
        data = bytearray(r[16:])
        _flip_payload(rng, data)
        r[16:] = data
    return "flip_payload"


def pcap_truncate(rng: random.Random, pc: Pcap) -> str:
    at = rng.randrange(0, len(pc.records) + 1)
    cut = rng.choice((0, 1, 8, 15, 16, 17, 30))
    tail = pc.records[at:]
    del pc.records[at:]
    if cut and tail:
        pc.records.append(bytearray(tail[0][:cut]))
    return "truncate"


PCAP_OPS: dict[str, Callable[[random.Random, Pcap], str]] = {
    "pcap_header": pcap_header, "pcap_record_length": pcap_record_length, "pcap_timestamp": pcap_timestamp,
    "flip_headers": pcap_flip_headers, "flip_payload": pcap_flip_payload, "truncate": pcap_truncate,
}  # fmt: skip


def damaged_gzip(rng: random.Random, raw: bytes) -> tuple[bytes, str]:
    """``raw`` gzip-compressed, often with its deflate stream damaged (in its first block, later, or cut short)."""
    gz = bytearray(gzip.compress(raw, compresslevel=rng.choice((1, 6, 9)), mtime=0))
    kind = rng.choice(("intact", "first_block", "first_block", "later", "cut", "trailer", "header"))
    if kind == "first_block":  # the deflate stream starts after the 10-byte header
        for _ in range(rng.randint(1, 3)):
            gz[rng.randrange(10, min(len(gz) - 8, 40))] ^= 1 << rng.randrange(8)
        gz[10] = rng.choice((gz[10], 0x07, 0xFF, 0x06))  # BTYPE 11 (reserved) in the first block header
    elif kind == "later":
        for _ in range(rng.randint(1, 3)):
            gz[rng.randrange(10, len(gz) - 8)] ^= 1 << rng.randrange(8)
    elif kind == "cut":
        del gz[rng.randrange(10, len(gz)) :]
    elif kind == "trailer":
        gz[-8] ^= 0xFF  # a CRC that does not match
    elif kind == "header":
        gz[3] = rng.choice((0x04, 0x08, 0x10, 0xFF))  # FEXTRA/FNAME/FCOMMENT flags whose fields are not there
    return bytes(gz), f"gzip({kind})"


def mutate(rng: random.Random, seeds: list[tuple[str, bytes]]) -> tuple[bytes, str, list[str]]:
    """One hostile case: (bytes, the seed's name, the mutations applied)."""
    name, raw = rng.choice(seeds)
    cap = parse(raw, rng.choice((SEED_RECORDS, 40, 5)))
    ops: list[str] = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        table: dict[str, Callable[[random.Random, Any], str]] = NG_OPS if isinstance(cap, PcapNg) else PCAP_OPS
        op = rng.choice(list(table))
        try:
            ops.append(table[op](rng, cap))
        except (struct.error, IndexError, ValueError):  # an earlier mutation left nothing this one applies to
            ops.append(f"{op}(n/a)")
    out = cap.to_bytes()
    if rng.random() < 0.15:
        out, op = damaged_gzip(rng, out)
        ops.append(op)
    return out, name, ops


# -- running -------------------------------------------------------------------------------------------------
def run_inprocess(case: Path, out: Path) -> Outcome:
    o = invoke(["analyze", str(case), "--out", str(out), "--quiet"])
    _read_session(o, out)
    return o


def run_subprocess(case: Path, out: Path, home: Path) -> Outcome:
    o = run_command(["analyze", str(case), "--out", str(out), "--quiet"], home)
    _read_session(o, out)
    return o


def _read_session(o: Outcome, out: Path) -> None:
    try:
        o.session = json.loads((out / "session.json").read_text()) if o.exit_code == 0 else {}
    except (OSError, ValueError):
        o.session = {}


def run(work_dir: Path, cases: int, seed: int, subprocess_every: int = 25, only: int | None = None) -> dict[str, Any]:
    """``cases`` hostile captures through ``egressaudit analyze``; a JSON-able summary (see the module docstring)."""
    import egressaudit.cli  # noqa: F401 - imported before the clock starts for the first case

    work_dir.mkdir(parents=True, exist_ok=True)
    seeds = [(p.name, p.read_bytes()) for p in seed_files(work_dir / "seeds")]
    crashes = work_dir / "crashes"
    home = work_dir / "home"
    home.mkdir(exist_ok=True)
    exit_codes: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    ops_count: Counter[str] = Counter()
    sub_codes: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    sub_tracebacks = sub_disagree = multi_line = clamped = cases_clamped = packets = 0
    reproducers: list[str] = []
    slowest = (0.0, "")
    t0 = time.perf_counter()
    indexes = [only] if only is not None else list(range(cases))
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="run-") as tmp:
        t = Path(tmp)
        (t / "warm-up.pcapng").write_bytes(parse(seeds[0][1], 5).to_bytes())
        run_inprocess(t / "warm-up.pcapng", t / "warm-up")  # first-use costs (signature database, ...) outside the timings
        for i in indexes:
            rng = random.Random(seed * 1_000_003 + i)
            data, seed_name, ops = mutate(rng, seeds)
            ops_count.update(op.split("(")[0] for op in ops)
            suffix = ".pcapng" if seed_name.endswith(".pcapng") else ".pcap"
            case = (work_dir if only is not None else t) / f"case-{seed}-{i}{suffix}"
            case.write_bytes(data)
            out = t / f"out-{i}"
            c0 = time.perf_counter()
            o = run_inprocess(case, out)
            took = time.perf_counter() - c0
            if took > slowest[0]:
                slowest = (took, f"case {i} ({seed_name}: {', '.join(ops)}; {len(data):,} bytes)")
            exit_codes[str(o.exit_code)] += 1
            if o.exit_code not in (0, 1):
                messages[message(o.output, case)] += 1
            if o.traceback or o.exit_code == 1:
                causes[o.traceback or "exit 1"] += 1
                crashes.mkdir(exist_ok=True)
                kept = crashes / case.name
                shutil.copyfile(case, kept)
                if len(reproducers) < 50:
                    reproducers.append(f"{kept} ({seed_name}: {', '.join(ops)}): {o.traceback}")
            counts = o.session.get("counts") or {}
            skipped.update({k: v for k, v in (counts.get("skipped") or {}).items() if isinstance(v, int)})
            packets += counts.get("packets", 0) or 0
            c = counts.get("timestamps_clamped", 0) or 0
            clamped += c
            cases_clamped += c > 0
            if subprocess_every and i % subprocess_every == 0:
                s = run_subprocess(case, t / f"sub-{i}", home)
                sub_codes[str(s.exit_code)] += 1
                if s.traceback:
                    sub_tracebacks += 1
                    causes[f"(subprocess) {s.traceback}"] += 1
                if s.exit_code != o.exit_code:
                    sub_disagree += 1
                if s.exit_code not in (0,) and len([ln for ln in s.output.splitlines() if ln.strip()]) != 1:
                    multi_line += 1
                shutil.rmtree(t / f"sub-{i}", ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            if only is None:
                case.unlink()
    tracebacks = sum(causes.values())
    return {
        "target": "hostile_captures",
        "inputs": len(indexes),
        "seed": seed,
        "seeds": [name for name, _ in seeds],
        "exit_codes": dict(sorted(exit_codes.items())),
        "tracebacks": tracebacks,
        "causes": dict(causes.most_common()),
        "failure_messages": dict(messages.most_common(20)),
        "seconds": round(time.perf_counter() - t0, 1),
        "packets_read": packets,
        "skipped": dict(sorted(skipped.items())),
        "timestamps_clamped": clamped,
        "cases_with_clamped_timestamps": cases_clamped,
        "mutations": dict(sorted(ops_count.items())),
        "slowest_case": {"seconds": round(slowest[0], 3), "case": slowest[1]},
        "subprocess": {
            "cases": sum(sub_codes.values()),
            "exit_codes": dict(sorted(sub_codes.items())),
            "tracebacks": sub_tracebacks,
            "exit_code_differs_from_in_process": sub_disagree,
            "failures_not_one_line": multi_line,
        },
        "reproducers": reproducers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=3200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--subprocess-every", type=int, default=25, help="also run every N-th case as a real subprocess (0: never)")
    ap.add_argument("--case", type=int, default=None, help="run only this case (kept in WORK)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="hostile-captures-"))
    print(json.dumps(run(work, a.cases, a.seed, a.subprocess_every, a.case), indent=2))


if __name__ == "__main__":
    main()
