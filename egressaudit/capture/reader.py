"""Streaming reads of pcap and pcapng files (scapy's raw readers, no dissection).

Yields one :class:`Frame` at a time, so memory does not grow with the number
of packets.  pcapng files with several interfaces of different link types are
handled per packet.  Problems are reported, never raised mid-stream: a file
that ends inside a record is counted in ``ReadStats.truncated``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapNgReader, RawPcapReader

SNAP_MAX = 262144


class CaptureError(Exception):
    """The input is not a readable capture; the message is one line for the user."""


class Frame(NamedTuple):
    ts: float  # seconds since the epoch
    linktype: int
    data: bytes
    wirelen: int
    iface: int


@dataclass
class ReadStats:
    path: str
    format: str = ""
    frames: int = 0
    bytes_read: int = 0
    file_bytes: int = 0
    truncated: int = 0  # records cut short by the end of the file
    snapped: int = 0  # frames captured shorter than they were on the wire
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""


class _CountingHandler(logging.Handler):
    """Counts scapy's reader warnings about damaged records (it logs instead of raising)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "Pcap" in msg or "pcap" in msg:
            self.count += 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_capture(path: Path) -> tuple[Any, str]:
    """Open a capture with scapy's raw reader; raise CaptureError with a one-line reason."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CaptureError(f"{path}: cannot read: {e.strerror or e}") from e
    if size == 0:
        raise CaptureError(f"{path}: empty file, not a capture")
    fh = open(path, "rb")  # noqa: SIM115 - handed to the reader, closed with it or below
    try:
        reader = RawPcapReader(fh)  # type: ignore[arg-type]  # scapy accepts an open file too
    except Scapy_Exception as e:
        fh.close()
        raise CaptureError(f"{path}: not a pcap or pcapng capture ({str(e).splitlines()[0] if str(e) else 'unknown format'})") from e
    except (OSError, EOFError, ValueError, struct.error) as e:
        fh.close()
        raise CaptureError(f"{path}: not a readable capture ({e or type(e).__name__})") from e
    fmt = "pcapng" if isinstance(reader, RawPcapNgReader) else "pcap"
    return reader, fmt


def iter_frames(path: Path, stats: ReadStats) -> Iterator[Frame]:
    """Frames of one capture file, in file order."""
    reader, fmt = open_capture(path)
    stats.format = fmt
    stats.file_bytes = os.path.getsize(path)
    logger = logging.getLogger("scapy.runtime")
    counter = _CountingHandler()
    logger.addHandler(counter)
    old_level = logger.level
    logger.setLevel(logging.WARNING)  # not propagated: only the counting handler above sees these
    logger.propagate = False
    try:
        with reader:
            if fmt == "pcapng":
                yield from _iter_pcapng(reader, stats)
            else:
                yield from _iter_pcap(reader, stats)
            try:
                pos = reader.f.tell()
            except (OSError, ValueError):
                pos = stats.file_bytes
    finally:
        logger.removeHandler(counter)
        logger.setLevel(old_level)
        logger.propagate = True
    if fmt == "pcapng":
        stats.truncated += counter.count  # scapy warns (and stops) on a block cut short
    elif pos < stats.file_bytes and stats.truncated == 0:
        stats.truncated += 1  # trailing bytes too short to be a record header
    if fmt == "pcapng":
        stats.interfaces = [
            {"linktype": lt, "snaplen": snap, "name": (opts.get("name") or b"").decode("utf-8", "replace")} for lt, snap, opts in reader.interfaces
        ]


def _iter_pcap(reader: Any, stats: ReadStats) -> Iterator[Frame]:
    linktype = int(reader.linktype)
    stats.interfaces = [{"linktype": linktype, "snaplen": int(getattr(reader, "snaplen", 0) or 0), "name": ""}]
    div = 1e9 if getattr(reader, "nano", False) else 1e6
    for data, meta in reader:
        if len(data) < meta.caplen:  # the file ends inside this record
            stats.truncated += 1
            break
        stats.frames += 1
        stats.bytes_read += len(data)
        if meta.caplen < meta.wirelen:
            stats.snapped += 1
        yield Frame(meta.sec + meta.usec / div, linktype, data, meta.wirelen, 0)


def _iter_pcapng(reader: Any, stats: ReadStats) -> Iterator[Frame]:
    for data, meta in reader:
        stats.frames += 1
        stats.bytes_read += len(data)
        if len(data) < meta.wirelen:
            stats.snapped += 1
        ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
        yield Frame(ts, int(meta.linktype), data, meta.wirelen, 0)
