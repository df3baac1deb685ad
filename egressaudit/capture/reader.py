"""Streaming reads of pcap and pcapng files (optionally gzip-compressed), without dissection.

:func:`iter_batches` yields the frames of each read-ahead buffer (8 MiB) as a
:class:`FrameBatch` (offsets into the buffer, for columnar decoding);
:func:`iter_frames` yields them one :class:`Frame` at a time.  Memory does not
grow with the number of packets.  pcapng files with several sections
and interfaces of different link types and timestamp resolutions are handled
per packet (EPB, SPB and the obsolete PB).

Damage is counted in :class:`ReadStats`, never raised mid-stream, and the
records around it still count:

* a file that ends inside a record (or a gzip stream that breaks) is counted
  in ``truncated``;
* a record or block with an impossible length is counted in ``corrupt``:
  reading that file stops there, since nothing after it can be trusted (pcap
  has no framing to resynchronise on);
* a pcapng block whose length is sane but whose content is not (a body too
  short for its type, a packet longer than its block, an unknown interface) is
  skipped and counted by reason in ``skipped``; reading goes on with the next
  block, which its length locates;
* timestamps outside [:data:`TS_MIN_S`, :data:`TS_MAX_S`] (1970-01-01 to
  2262-01-01 UTC) are clamped to that range and counted in
  ``timestamps_clamped``.  pcapng allows far more (an ``if_tsresol`` of 10^0
  with a 64-bit count, a 64-bit ``if_tsoffset``); this range is what every
  consumer of the session holds: int64 microseconds in the tables, Python's
  datetime in HAR exports, and pandas timestamps in the report even at
  nanosecond resolution (whose range ends in April 2262).

A file whose first block cannot be read at all (not a capture, an empty
file, a damaged gzip header or first deflate block, a first section header
with a bad byte-order magic) raises :class:`CaptureError`, whose message is
one line for the user.

Memory is bounded whatever the lengths in the file say: a record or block is
read only if it is at most :data:`MAX_BLOCK` bytes (pcap records also at most
the larger of the file's snap length and :data:`SNAP_MAX`); at most
:data:`MAX_INTERFACES` interfaces per pcapng section are kept (blocks naming
others are skipped as ``unknown_interface``) and :data:`MAX_LISTED` are listed
in ``interfaces``; ``errors`` keeps at most :data:`MAX_LISTED` messages.  Work
is linear in the bytes read (the decompressed bytes of a gzip file).

scapy's ``RawPcapReader``/``RawPcapNgReader`` did this job first; they read
about 300k records/s here and lose the difference between a truncated and a
damaged file, this reader about 1M/s (benchmarks/).  The tests compare both
on every real capture.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt

from egressaudit.errors import InputError

SNAP_MAX = 262144
TS_MIN_S = 0.0
"""Earliest timestamp kept (1970-01-01T00:00:00Z, seconds since the epoch); earlier ones are clamped to it and counted."""
TS_MAX_S = 9214646400.0
"""Latest timestamp kept (2262-01-01T00:00:00Z), inside pandas' nanosecond range; later ones are clamped to it and counted."""
MAX_INTERFACES = 65536  # interfaces kept per pcapng section (the obsolete PB addresses 16 bits of them)
MAX_LISTED = 64  # interfaces listed and error messages kept in ReadStats


class CaptureError(InputError):
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

    def batch(self, stats: ReadStats) -> FrameBatch:
        i64 = np.int64
        return FrameBatch(
            self.buf, _clamp(np.asarray(self.ts, np.float64), stats), np.asarray(self.linktype, i64), np.asarray(self.off, i64),
            np.asarray(self.caplen, i64), np.asarray(self.wirelen, i64), np.asarray(self.iface, i64),
        )  # fmt: skip


def _clamp(ts: npt.NDArray[np.float64], stats: ReadStats) -> npt.NDArray[np.float64]:
    """``ts`` with the timestamps outside [TS_MIN_S, TS_MAX_S] clamped into it (counted in ``stats``); one pass when all are in."""
    if len(ts) and (ts.min() < TS_MIN_S or ts.max() > TS_MAX_S):
        stats.timestamps_clamped += int(np.count_nonzero((ts < TS_MIN_S) | (ts > TS_MAX_S)))
        np.clip(ts, TS_MIN_S, TS_MAX_S, out=ts)
    return ts


@dataclass
class ReadStats:
    path: str
    format: str = ""
    frames: int = 0
    bytes_read: int = 0
    file_bytes: int = 0
    truncated: int = 0  # records cut short by the end of the file (or by a gzip stream that breaks)
    corrupt: int = 0  # records or blocks with impossible lengths (reading stops at the first one in a file)
    skipped: dict[str, int] = field(default_factory=dict)  # pcapng blocks skipped (reading went on), by reason
    timestamps_clamped: int = 0  # frames whose timestamp was outside [TS_MIN_S, TS_MAX_S]
    errors: list[str] = field(default_factory=list)  # at most MAX_LISTED messages (then one saying how many more)
    snapped: int = 0  # frames captured shorter than they were on the wire
    interfaces: list[dict[str, Any]] = field(default_factory=list)  # at most MAX_LISTED (interface_count has them all)
    interface_count: int = 0
    sha256: str = ""

    def error(self, message: str) -> None:
        """Keep ``message`` (at most MAX_LISTED of them; the rest are counted in the last one)."""
        if len(self.errors) < MAX_LISTED:
            self.errors.append(message)
        elif len(self.errors) == MAX_LISTED:
            self.errors.append("1 more error")
        else:
            self.errors[-1] = f"{int(self.errors[-1].split()[0]) + 1} more errors"

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def interface(self, linktype: int, snaplen: int, name: str) -> None:
        self.interface_count += 1
        if len(self.interfaces) < MAX_LISTED:
            self.interfaces.append({"linktype": linktype, "snaplen": snaplen, "name": name})


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
    """Open a capture (pcap or pcapng, optionally gzip-compressed); raise CaptureError with a one-line reason.

    Returns a reader of the capture's bytes (decompressed) and its format; the caller closes the reader.
    """
    src, fmt = _open(path)
    return src, fmt  # type: ignore[return-value]  # read() and close() are all it offers


def _open(path: Path) -> tuple[_Hashed | _Gunzip, str]:
    try:
        size = os.path.getsize(path)
        fh = open(path, "rb")  # noqa: SIM115 - closed by the returned reader
    except OSError as e:
        raise CaptureError(f"{path}: cannot read: {e.strerror or e}") from e
    hashed = _Hashed(fh)
    src: _Hashed | _Gunzip = hashed
    try:
        if size == 0:
            raise CaptureError(f"{path}: empty file, not a capture")
        head = fh.peek(4)[:4]
        if head[:2] == GZIP_MAGIC:
            src = _Gunzip(hashed)
            head = src.peek(4)
    except OSError as e:
        src.close()
        raise CaptureError(f"{path}: cannot read: {e.strerror or e}") from e
    except (EOFError, zlib.error) as e:  # gzip: a damaged header or first deflate block, nothing decoded
        src.close()
        raise CaptureError(f"{path}: not a readable capture (gzip: {_one_line(e)})") from e
    except CaptureError:
        src.close()
        raise
    if head in PCAP_MAGICS:
        return src, "pcap"
    if head == PCAPNG_SHB:
        return src, "pcapng"
    src.close()
    raise CaptureError(f"{path}: not a pcap or pcapng capture (starts with {head.hex() or 'nothing'})")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


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


_NOT_ZERO = re.compile(rb"[^\x00]")


class _Gunzip:
    """A gzip file decompressed as it is read (every member), keeping every byte decoded before any damage.

    Python's ``GzipFile`` decodes a small file whole at its first read and, on a
    damaged deflate block, a bad CRC or a file cut short, raises without the
    bytes it decoded in that read: a file whose only fault is its last 8 bytes
    gave nothing.  Here the compressed input is fed in pieces of
    :attr:`FEED` bytes; a piece that fails is fed again in halves (from a copy
    of the decompressor's state) down to the byte where it fails, so every byte
    before the damage is returned.  The error is raised by the next read, after
    the last good bytes.  Output per read is at most what was asked for (a
    decompression bomb costs time linear in its output, never memory).
    """

    FEED = 64 << 10
    IN = 1 << 20

    def __init__(self, f: _Hashed) -> None:
        self.f = f
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.src = b""  # compressed bytes read from the file; the decompressor has consumed those before pos
        self.pos = 0
        self.feed = self.FEED
        self.head = b""  # decoded bytes given back by peek()
        self.failed: Exception | None = None

    def peek(self, n: int) -> bytes:
        """The next ``n`` decoded bytes (fewer at the end), read again by the next read()."""
        self.head = self.read(n)
        if self.failed is not None and not self.head:
            raise self.failed
        return self.head

    def _input(self, n: int) -> bool:
        """At least ``n`` compressed bytes at ``pos``, unless the file ends first (then False)."""
        while len(self.src) - self.pos < n:
            more = self.f.read(self.IN)
            if not more:
                return False
            self.src = self.src[self.pos :] + more
            self.pos = 0
        return True

    def read(self, n: int = -1) -> bytes:
        n = n if n >= 0 else 1 << 62
        parts = [self.head] if self.head else []
        got = len(self.head)
        self.head = b""
        while got < n and self.failed is None:
            d = self.d
            if d.eof:  # after a member: the end, zero padding, or another member
                while self._input(1):  # skip zero padding (a chunk at a time: a file may hold megabytes of it)
                    m = _NOT_ZERO.search(self.src, self.pos)
                    if m is not None:
                        self.pos = m.start()
                        break
                    self.pos = len(self.src)
                if not self._input(1):
                    break
                if not self._input(2) or self.src[self.pos : self.pos + 2] != GZIP_MAGIC:
                    self.failed = OSError("data after the end of the gzip stream that is not gzip")
                    break
                d = self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if not self._input(1):
                tail = d.flush()
                if tail:
                    parts.append(tail)
                    got += len(tail)
                self.failed = EOFError("the compressed file ends before the end of its gzip stream")
                break
            fed = self.src[self.pos : self.pos + self.feed]
            saved = d.copy()
            try:
                out = d.decompress(fed, n - got)
            except zlib.error as e:
                if len(fed) > 1:  # the damage is in this piece: find the byte, keeping what decodes before it
                    self.d = saved
                    self.feed = len(fed) // 2
                    continue
                self.failed = e
                break
            self.pos += len(fed) - (len(d.unused_data) if d.eof else len(d.unconsumed_tail))
            if out:
                parts.append(out)
                got += len(out)
        if not parts and self.failed is not None:
            raise self.failed
        return b"".join(parts)

    def hexdigest(self) -> str:
        return self.f.hexdigest()

    def close(self) -> None:
        self.f.close()


def iter_batches(path: Path, stats: ReadStats) -> Iterator[FrameBatch]:
    """Frames of one capture file, in file order, a buffer at a time.  Damage is counted in ``stats``, never raised mid-stream.

    When the file has been read to its end, ``stats.sha256`` holds its hash.
    """
    src, fmt = _open(path)
    stats.format = fmt
    stats.file_bytes = os.path.getsize(path)
    try:
        yield from (_iter_pcapng if fmt == "pcapng" else _iter_pcap)(src, stats, path)  # type: ignore[arg-type]  # read() is all they use
        stats.sha256 = src.hexdigest()
    finally:
        src.close()


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
        self.chunk = CHUNK

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
            self.error = _one_line(e)
        return n <= len(self.buf)

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos


def _end(b: _Buffer, stats: ReadStats, path: Path) -> None:
    """Count what stopped the reading: a read error, or a file that ends inside a record."""
    if b.error:
        stats.truncated += 1
        stats.error(f"{path}: read stopped: {b.error}")
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
    stats.interface(linktype, snaplen, "")
    b.pos = 24
    caplen_at = struct.Struct(order + "I").unpack_from
    header = np.dtype(order + "u4")
    limit = min(max(snaplen, SNAP_MAX), MAX_BLOCK) if snaplen else MAX_BLOCK
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
            stats.error(f"{path}: record {stats.frames + 1} claims {caplen} bytes (snaplen {snaplen}); stopped there")
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
    ts = _clamp(sec.astype(np.float64) + frac.astype(np.float64) / div, stats)  # (32-bit seconds: past 2106 never happens)
    return FrameBatch(buf, ts, np.full(n, linktype, np.int64), at + 16, caplen, wirelen, np.zeros(n, np.int64))


def _tsresol(value: int) -> float:
    return float(2 ** (value & 0x7F)) if value & 0x80 else float(10 ** (value & 0x7F))


SKIP_BLOCK_TOO_SHORT = "pcapng_block_too_short"
SKIP_UNKNOWN_INTERFACE = "pcapng_unknown_interface"
SKIP_CAPLEN_BEYOND_BLOCK = "pcapng_caplen_beyond_block"
SKIP_TOO_MANY_INTERFACES = "pcapng_too_many_interfaces"


def _iter_pcapng(fh: BinaryIO, stats: ReadStats, path: Path) -> Iterator[FrameBatch]:  # noqa: C901, PLR0912, PLR0915 - the block loop is the hot path
    b = _Buffer(fh)
    order = "<"
    ifaces: list[tuple[int, int, float, float]] = []  # linktype, snaplen, units per second, offset seconds
    frames = nbytes = snapped = 0
    batch = _Lists(b.buf)
    first = True
    try:
        while True:
            buf = b.buf
            if not b.need(12):
                if first:
                    raise CaptureError(f"{path}: not a readable capture ({b.error or 'it ends inside its section header'})")
                _end(b, stats, path)
                break
            pos = b.pos
            section = ""  # a section header: its byte order
            if b.buf[pos : pos + 4] == PCAPNG_SHB:
                magic = b.buf[pos + 8 : pos + 12]
                section = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">" if magic == b"\x1a\x2b\x3c\x4d" else ""
                if not section:
                    if first:
                        raise CaptureError(f"{path}: not a readable pcapng capture (its section header has a bad byte-order magic)")
                    stats.corrupt += 1
                    stats.error(f"{path}: section header with a bad byte-order magic; stopped there")
                    break
            btype, blen = struct.unpack_from((section or order) + "II", b.buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                if first:
                    raise CaptureError(f"{path}: not a readable pcapng capture (its first block claims {blen} bytes)")
                stats.corrupt += 1
                stats.error(f"{path}: block of type {btype:#x} with length {blen}; stopped there")
                break
            if not b.need(blen):
                if first:
                    raise CaptureError(f"{path}: not a readable capture ({b.error or 'it ends inside its section header'})")
                _end(b, stats, path)  # the file ends inside this block
                break
            first = False
            if b.buf is not buf:  # refilled: the frames so far are in the old buffer
                if batch.ts:
                    yield batch.batch(stats)
                batch = _Lists(b.buf)
            pos = b.pos
            b.pos = pos + blen
            body = pos + 8
            # (a block too short for its type's fixed fields is skipped: the next one is at pos + blen all the same)
            if section:
                if blen < 28:
                    stats.skip(SKIP_BLOCK_TOO_SHORT)  # (not a new section: the interfaces so far still hold)
                else:
                    order = section
                    ifaces = []  # interface ids restart with every section
                continue
            if btype == 6 or btype == 2:  # Enhanced Packet Block, or the obsolete Packet Block (16-bit interface id + drops)
                if blen < 32:
                    stats.skip(SKIP_BLOCK_TOO_SHORT)
                    continue
                if btype == 6:
                    iface, hi, lo, caplen, wirelen = struct.unpack_from(order + "IIIII", b.buf, body)
                else:
                    iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(order + "HHIIII", b.buf, body)
                if iface >= len(ifaces):
                    stats.skip(SKIP_UNKNOWN_INTERFACE)
                    continue
                if caplen > blen - 32:
                    stats.skip(SKIP_CAPLEN_BEYOND_BLOCK)
                    continue
                lt, _snap, units, offset = ifaces[iface]
                start = body + 20
                ts = ((hi << 32) | lo) / units + offset  # (any 64-bit count and offset is a finite float; clamped per batch)
            elif btype == 3:  # Simple Packet Block
                if blen < 16:
                    stats.skip(SKIP_BLOCK_TOO_SHORT)
                    continue
                if not ifaces:
                    stats.skip(SKIP_UNKNOWN_INTERFACE)
                    continue
                (wirelen,) = struct.unpack_from(order + "I", b.buf, body)
                lt, snap, units, offset = ifaces[0]
                caplen = min(wirelen, blen - 16, snap or wirelen)
                start = body + 4
                iface, ts = 0, 0.0
            elif btype == 1:  # Interface Description Block
                if blen < 20:
                    stats.skip(SKIP_BLOCK_TOO_SHORT)
                    continue
                lt, _res, snap = struct.unpack_from(order + "HHI", b.buf, body)
                units, offset, name = 1e6, 0.0, ""
                opt = body + 8
                end = pos + blen - 4
                while opt + 4 <= end:
                    code, olen = struct.unpack_from(order + "HH", b.buf, opt)
                    if code == 0 or opt + 4 + olen > end:  # the end of options, or an option longer than its block
                        break
                    val = b.buf[opt + 4 : opt + 4 + olen]
                    if code == 9 and olen >= 1:
                        units = _tsresol(val[0])
                    elif code == 14 and olen == 8:
                        offset = float(struct.unpack(order + "q", val)[0])
                    elif code == 2:
                        name = val[:256].decode("utf-8", "replace")
                    opt += 4 + olen + (-olen & 3)
                if len(ifaces) >= MAX_INTERFACES:
                    stats.skip(SKIP_TOO_MANY_INTERFACES)
                    continue
                ifaces.append((lt, snap, units, offset))
                stats.interface(lt, snap, name)
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
        yield batch.batch(stats)
