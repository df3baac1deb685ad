"""Streaming reads of pcap and pcapng files (optionally gzip-compressed), without dissection.

:func:`iter_batches` yields the frames of each read-ahead buffer (8 MiB) as a
:class:`FrameBatch` (offsets into the buffer, for columnar decoding);
:func:`iter_frames` yields them one :class:`Frame` at a time.  Memory does not
grow with the number of packets.  pcapng files with several sections
and interfaces of different link types and timestamp resolutions are handled
per packet (EPB, SPB and the obsolete PB).  Problems are reported, never
raised mid-stream: a file that ends inside a record is counted in
``ReadStats.truncated``; a record with an impossible length in
``ReadStats.corrupt`` (reading that file stops there: nothing after it can be
trusted).

scapy's ``RawPcapReader``/``RawPcapNgReader`` did this job first; they read
about 300k records/s here and lose the difference between a truncated and a
damaged file, this reader about 1M/s (benchmarks/).  The tests compare both
on every real capture.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt

SNAP_MAX = 262144


class CaptureError(Exception):
    """The input is not a readable capture; the message is one line for the user."""


class Frame(NamedTuple):
    ts: float  # seconds since the epoch
    linktype: int
    data: bytes
    wirelen: int
    iface: int


class FrameBatch(NamedTuple):
    """The frames found in one read-ahead buffer: frame ``i`` is ``buf[off[i] : off[i] + caplen[i]]``."""

    buf: bytes
    ts: npt.NDArray[np.float64]
    linktype: npt.NDArray[np.int64]
    off: npt.NDArray[np.int64]
    caplen: npt.NDArray[np.int64]
    wirelen: npt.NDArray[np.int64]
    iface: npt.NDArray[np.int64]

    @property
    def frames(self) -> int:
        return len(self.ts)


class _Lists:
    """Frames of a pcapng buffer as they are found (made arrays by :meth:`batch`)."""

    __slots__ = ("buf", "ts", "linktype", "off", "caplen", "wirelen", "iface")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.ts: list[float] = []
        self.linktype: list[int] = []
        self.off: list[int] = []
        self.caplen: list[int] = []
        self.wirelen: list[int] = []
        self.iface: list[int] = []

    def batch(self) -> FrameBatch:
        i64 = np.int64
        return FrameBatch(
            self.buf, np.asarray(self.ts, np.float64), np.asarray(self.linktype, i64), np.asarray(self.off, i64),
            np.asarray(self.caplen, i64), np.asarray(self.wirelen, i64), np.asarray(self.iface, i64),
        )  # fmt: skip


@dataclass
class ReadStats:
    path: str
    format: str = ""
    frames: int = 0
    bytes_read: int = 0
    file_bytes: int = 0
    truncated: int = 0  # records cut short by the end of the file
    corrupt: int = 0  # records or blocks with impossible lengths (reading stops at the first one in a file)
    errors: list[str] = field(default_factory=list)
    snapped: int = 0  # frames captured shorter than they were on the wire
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e6),
    b"\xa1\xb2\xc3\xd4": (">", 1e6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e9),
    b"\xa1\xb2\x3c\x4d": (">", 1e9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 8 << 20
MAX_BLOCK = 64 << 20


def open_capture(path: Path) -> tuple[BinaryIO, str]:
    """Open a capture (pcap or pcapng, optionally gzip-compressed); raise CaptureError with a one-line reason."""
    try:
        size = os.path.getsize(path)
        fh: BinaryIO = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as e:
        raise CaptureError(f"{path}: cannot read: {e.strerror or e}") from e
    if size == 0:
        fh.close()
        raise CaptureError(f"{path}: empty file, not a capture")
    try:
        head = fh.read(4)
        fh.seek(0)
        if head[:2] == GZIP_MAGIC:
            fh.close()
            fh = gzip.open(path, "rb")  # type: ignore[assignment]  # owns (and closes) its file
            head = fh.read(4)
            fh.seek(0)
    except (OSError, EOFError) as e:
        fh.close()
        raise CaptureError(f"{path}: not a readable capture ({e or type(e).__name__})") from e
    if head in PCAP_MAGICS:
        return fh, "pcap"
    if head == PCAPNG_SHB:
        return fh, "pcapng"
    fh.close()
    raise CaptureError(f"{path}: not a pcap or pcapng capture (starts with {head.hex() or 'nothing'})")


class _Hashed:
    """A file whose bytes are hashed as they are read (the capture's SHA-256 without a second pass over it).

    The hashing runs on a thread of its own (hashlib releases the GIL), in read order.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="egressaudit-sha256")

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.pool.submit(self.hash.update, data)
        return data

    def hexdigest(self) -> str:
        """The hash of the whole file (the part not read yet is read now)."""
        while self.read(CHUNK):
            pass
        self.pool.shutdown(wait=True)
        return self.hash.hexdigest()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.f.close()


def iter_batches(path: Path, stats: ReadStats) -> Iterator[FrameBatch]:
    """Frames of one capture file, in file order, a buffer at a time.  Damage is counted in ``stats``, never raised mid-stream.

    When the file has been read to its end, ``stats.sha256`` holds its hash.
    """
    fh, fmt = open_capture(path)
    stats.format = fmt
    stats.file_bytes = os.path.getsize(path)
    hashed = None if isinstance(fh, gzip.GzipFile) else _Hashed(fh)  # a gzip file is hashed apart (its reader seeks)
    src: BinaryIO = hashed if hashed is not None else fh  # type: ignore[assignment]  # read() is all the reader uses
    try:
        yield from (_iter_pcapng if fmt == "pcapng" else _iter_pcap)(src, stats, path)
        stats.sha256 = hashed.hexdigest() if hashed is not None else sha256_file(path)
    finally:
        if hashed is not None:
            hashed.close()
        fh.close()


def iter_frames(path: Path, stats: ReadStats) -> Iterator[Frame]:
    """Frames of one capture file, one at a time (see :func:`iter_batches`)."""
    for b in iter_batches(path, stats):
        buf = b.buf
        cols = (b.ts.tolist(), b.linktype.tolist(), b.off.tolist(), b.caplen.tolist(), b.wirelen.tolist(), b.iface.tolist())
        for ts, lt, off, cap, wl, ifc in zip(*cols, strict=True):
            yield Frame(ts, lt, buf[off : off + cap], wl, ifc)


class _Buffer:
    """A read-ahead buffer over a file: ``need(n)`` makes n bytes available at ``pos``.

    A read error (a damaged gzip stream) ends the input like an end of file; its
    reason is kept in ``error``.
    """

    __slots__ = ("f", "buf", "pos", "eof", "chunk", "error")

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.error = ""
        # a damaged gzip stream raises without returning what it decoded: read it in small pieces to lose little
        self.chunk = (1 << 20) // 16 if isinstance(f, gzip.GzipFile) else CHUNK

    def need(self, n: int) -> bool:
        """Make ``n`` bytes available at ``pos``.  May replace ``buf`` (frames found so far stay in the old one)."""
        if self.pos + n <= len(self.buf):
            return True
        if self.eof:
            return False
        rest = self.buf[self.pos :]
        self.buf = rest
        self.pos = 0
        try:
            chunk = self.f.read(max(self.chunk, n - len(rest)))
            if not chunk:
                self.eof = True
            self.buf = rest + chunk
            while len(self.buf) < n and not self.eof:
                more = self.f.read(n - len(self.buf))
                if not more:
                    self.eof = True
                self.buf += more
        except (OSError, EOFError, zlib.error) as e:
            self.eof = True
            self.error = str(e) or type(e).__name__
        return n <= len(self.buf)

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos


def _end(b: _Buffer, stats: ReadStats, path: Path) -> None:
    """Count what stopped the reading: a read error, or a file that ends inside a record."""
    if b.error:
        stats.truncated += 1
        stats.errors.append(f"{path}: read stopped: {b.error}")
    elif b.remaining:
        stats.truncated += 1


def _iter_pcap(fh: BinaryIO, stats: ReadStats, path: Path) -> Iterator[FrameBatch]:
    b = _Buffer(fh)
    if not b.need(24):
        if b.error:
            raise CaptureError(f"{path}: not a readable capture ({b.error})")
        raise CaptureError(f"{path}: not a pcap capture (file shorter than its 24-byte header)")
    order, div = PCAP_MAGICS[b.buf[:4]]
    _v1, _v2, _tz, _sig, snaplen, linktype = struct.unpack_from(order + "HHiIII", b.buf, 4)
    linktype &= 0x0FFFFFFF  # the upper bits hold FCS information (pcap-linktype(7))
    stats.interfaces = [{"linktype": linktype, "snaplen": snaplen, "name": ""}]
    b.pos = 24
    caplen_at = struct.Struct(order + "I").unpack_from
    header = np.dtype(order + "u4")
    limit = max(snaplen, SNAP_MAX) if snaplen else MAX_BLOCK
    while True:
        # the records wholly inside the buffer: only their offsets are collected here, the headers are read as arrays
        buf, pos = b.buf, b.pos
        end = len(buf)
        offs: list[int] = []
        add = offs.append
        caplen = 0
        while pos + 16 <= end:
            caplen = caplen_at(buf, pos + 8)[0]
            nxt = pos + 16 + caplen
            if nxt > end or caplen > limit:
                break
            add(pos)
            pos = nxt
        b.pos = pos
        if offs:
            yield _pcap_batch(buf, offs, header, div, linktype, stats)
        if not b.need(16):
            _end(b, stats, path)  # the file ends inside a record header
            return
        caplen = caplen_at(b.buf, b.pos + 8)[0]
        if caplen > limit:
            stats.corrupt += 1  # a damaged record length: nothing after it can be trusted
            stats.errors.append(f"{path}: record {stats.frames + 1} claims {caplen} bytes (snaplen {snaplen}); stopped there")
            return
        if not b.need(16 + caplen):
            _end(b, stats, path)  # the file ends inside this record
            return


def _pcap_batch(buf: bytes, offs: list[int], header: np.dtype[Any], div: float, linktype: int, stats: ReadStats) -> FrameBatch:
    at = np.asarray(offs, np.int64)
    hdr = np.frombuffer(buf, np.uint8)[at[:, None] + np.arange(16)].copy().view(header)  # (n, 4): sec, frac, caplen, wirelen
    sec, frac, caplen, wirelen = (hdr[:, i].astype(np.int64) for i in range(4))
    n = len(at)
    stats.frames += n
    stats.bytes_read += int(caplen.sum())
    stats.snapped += int((caplen < wirelen).sum())
    ts = sec.astype(np.float64) + frac.astype(np.float64) / div
    return FrameBatch(buf, ts, np.full(n, linktype, np.int64), at + 16, caplen, wirelen, np.zeros(n, np.int64))


def _tsresol(value: int) -> float:
    return float(2 ** (value & 0x7F)) if value & 0x80 else float(10 ** (value & 0x7F))


def _iter_pcapng(fh: BinaryIO, stats: ReadStats, path: Path) -> Iterator[FrameBatch]:
    b = _Buffer(fh)
    order = "<"
    ifaces: list[tuple[int, int, float, float]] = []  # linktype, snaplen, units per second, offset seconds
    frames = nbytes = snapped = 0
    batch = _Lists(b.buf)
    try:
        while True:
            buf = b.buf
            if not b.need(12):
                _end(b, stats, path)
                break
            pos = b.pos
            if b.buf[pos : pos + 4] == PCAPNG_SHB:
                magic = b.buf[pos + 8 : pos + 12]
                order = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">" if magic == b"\x1a\x2b\x3c\x4d" else ""
                if not order:
                    stats.corrupt += 1
                    stats.errors.append(f"{path}: section header with a bad byte-order magic; stopped there")
                    break
                ifaces = []  # interface ids restart with every section
            btype, blen = struct.unpack_from(order + "II", b.buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                stats.corrupt += 1
                stats.errors.append(f"{path}: block of type {btype:#x} with length {blen}; stopped there")
                break
            if not b.need(blen):
                _end(b, stats, path)  # the file ends inside this block
                break
            if b.buf is not buf:  # refilled: the frames so far are in the old buffer
                if batch.ts:
                    yield batch.batch()
                batch = _Lists(b.buf)
            pos = b.pos
            b.pos = pos + blen
            body = pos + 8
            if btype == 6 or btype == 2:  # Enhanced Packet Block, or the obsolete Packet Block (16-bit interface id + drops)
                if btype == 6:
                    iface, hi, lo, caplen, wirelen = struct.unpack_from(order + "IIIII", b.buf, body)
                else:
                    iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(order + "HHIIII", b.buf, body)
                if iface >= len(ifaces) or caplen > blen - 32:
                    stats.corrupt += 1
                    continue
                lt, _snap, units, offset = ifaces[iface]
                start = body + 20
                ts = ((hi << 32) | lo) / units + offset
            elif btype == 3:  # Simple Packet Block
                if not ifaces:
                    stats.corrupt += 1
                    continue
                (wirelen,) = struct.unpack_from(order + "I", b.buf, body)
                lt, snap, units, offset = ifaces[0]
                caplen = min(wirelen, blen - 16, snap or wirelen)
                start = body + 4
                iface, ts = 0, 0.0
            elif btype == 1:  # Interface Description Block
                lt, _res, snap = struct.unpack_from(order + "HHI", b.buf, body)
                units, offset, name = 1e6, 0.0, ""
                opt = body + 8
                end = pos + blen - 4
                while opt + 4 <= end:
                    code, olen = struct.unpack_from(order + "HH", b.buf, opt)
                    val = b.buf[opt + 4 : opt + 4 + olen]
                    if code == 0:
                        break
                    if code == 9 and olen >= 1:
                        units = _tsresol(val[0])
                    elif code == 14 and olen == 8:
                        offset = float(struct.unpack(order + "q", val)[0])
                    elif code == 2:
                        name = val.decode("utf-8", "replace")
                    opt += 4 + olen + (-olen & 3)
                ifaces.append((lt, snap, units, offset))
                stats.interfaces.append({"linktype": lt, "snaplen": snap, "name": name})
                continue
            else:
                continue  # statistics, name resolution, custom blocks...
            frames += 1
            nbytes += caplen
            if caplen < wirelen:
                snapped += 1
            batch.ts.append(ts)
            batch.linktype.append(lt)
            batch.off.append(start)
            batch.caplen.append(caplen)
            batch.wirelen.append(wirelen)
            batch.iface.append(iface)
    finally:
        stats.frames += frames
        stats.bytes_read += nbytes
        stats.snapped += snapped
    if batch.ts:
        yield batch.batch()
