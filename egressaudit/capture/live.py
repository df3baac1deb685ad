"""Live capture: raw frames from an interface -> ``capture.pcapng`` + live flow counts.

``capture(iface, out_dir, duration)`` reads frames from a Linux packet socket
(``AF_PACKET``) and writes every frame to ``out_dir/capture.pcapng``; it feeds
the per-packet :class:`~egressaudit.flows.table.FlowTable` with payload
inspection off (the flows offline ingest finds, by the same keys, idle timeout
and TCP ends, without their evidence), so the number of live and finished
flows is known while capturing.  What the payloads say (TLS and QUIC server
names, media, vendors) is read once, from the file, by the analysis that
follows (``egressaudit capture`` runs it).  The file is an ordinary pcapng
(one interface, the socket's link type, microsecond timestamps from the
kernel, an Interface Statistics Block with the kernel's received and dropped
counts at the end): ``egressaudit analyze`` reads it, as do Wireshark and
tcpdump.

How frames are received:

* By default through a ``PACKET_MMAP`` receive ring, ``TPACKET_V3`` (what
  libpcap uses): the kernel copies frames into blocks of a ring shared with
  this process and hands over a whole block at a time (when it is full or
  after :data:`RING_TIMEOUT_MS`), so there is one wake-up per block and no
  system call per frame.  The ring's size is ``rcvbuf``.
* If the kernel refuses the ring (an old or sandboxed kernel), with one
  ``recvmsg()`` per frame (``PACKET_AUXDATA`` for lengths and VLAN tags,
  ``SO_TIMESTAMPNS`` for the time) into a socket buffer of ``rcvbuf`` bytes.
  :attr:`LiveStats.mode` says which.

The file always gets every frame the kernel delivered.  The live flow table
costs several times more per frame than writing it; when the ring falls
behind (more than an eighth of it is waiting) whole blocks are written without
being fed to the flow table, and counted in
:attr:`LiveStats.flow_updates_skipped`.  Live flow counts are then
approximate; the authoritative result is the analysis of the written file
(``egressaudit capture`` runs it after capturing).

Details that matter for correct counts:

* On a loopback interface the kernel hands a packet socket every frame twice
  (once going out, once coming in).  libpcap drops the outgoing copy; so do
  we, in the kernel, with a classic-BPF prefix on the socket filter.
* The filter and the ring are set up before the socket is bound to the
  interface, so no unfiltered frame is ever received.
* What the kernel drops (ring or buffer full) is read with
  ``PACKET_STATISTICS`` and reported in :class:`LiveStats`.  At the end a
  drop-everything filter is attached first and the ring is drained until
  every frame the kernel counted has been written.
* SIGINT/SIGTERM/SIGHUP (when called from the main thread) and the ``stop`` event end
  the capture cleanly: the file is flushed and closed, live flows are ended.
* The file is flushed every :data:`FLUSH_EVERY` seconds while capturing, so a
  capture killed outright (SIGKILL, a crash) loses at most that much of what it
  had read, plus what the kernel still held in the ring (a partly filled block
  is handed over after :data:`RING_TIMEOUT_MS`); the file then ends without the
  statistics block, perhaps inside a packet block, which readers count as a
  truncated record.
* An interface that goes down or away stops the capture as the end of its
  duration would (the file is closed and can be analysed), with
  ``stopped_by`` "interface_error" and the reason in :attr:`LiveStats.error`.
* A write that fails (a full disk, an I/O error) stops the capture: the socket
  is closed, nothing more is written, and :class:`CaptureWriteError` (an
  ``OSError``) is raised with the counters up to there in ``stats``; what
  reached the file is kept and readable.
* The ring is read without memory barriers, which is correct on x86 (stores
  are not reordered); libpcap uses acquire/release atomics here.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from egressaudit import __version__
from egressaudit.capture.frames import LINKTYPE_ETHERNET, decode
from egressaudit.errors import InputError, OutputError
from egressaudit.flows.table import Flow, FlowTable

CAPTURE_FILE = "capture.pcapng"
SNAPLEN = 262144
DEFAULT_RCVBUF = 64 << 20  # bytes of receive ring (or socket buffer) asked for (tcpdump's default is 2 MiB)
PROGRESS_EVERY = 0.5  # seconds between on_progress calls
CHECK_EVERY = 1024  # frames between clock checks when traffic never pauses (recv path)
RING_BLOCK = 1 << 20  # bytes per ring block; a frame larger than a block is cut to fit
RING_TIMEOUT_MS = 50  # the kernel hands over a partly filled block after this long
RING_BEHIND = 8  # behind when 1/RING_BEHIND of the ring's blocks wait: flow-table updates are skipped
DRAIN_TIMEOUT = 1.0  # seconds to wait at the end for the frames the kernel counted to reach the ring
FLUSH_EVERY = 0.5  # seconds between flushes of the file's write buffer: what a capture killed outright loses at most
WRITE_BUFFER = 1 << 20  # bytes of the file's write buffer

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
ETH_P_ALL = 3
ETH_P_8021Q = 0x8100
ARPHRD_LOOPBACK = 772
PACKET_OUTGOING = 4
# classic BPF: ld [SKF_AD_OFF + SKF_AD_PKTTYPE]
_BPF_LD_PKTTYPE = (0x20, 0, 0, (-0x1000 + 4) & 0xFFFFFFFF)
_BPF_RET_K = 0x06


class CaptureSetupError(InputError):
    """The capture cannot start (no such interface, no permission, bad filter); one line for the user (exit 3)."""


class CaptureWriteError(OutputError, OSError):
    """The capture file could not be written (a full disk, an I/O error): the capture stopped there.

    ``errno`` and ``filename`` are the failed write's; ``strerror`` is one line for
    the user saying so; ``stats`` holds the capture's counters up to there (set
    by :func:`capture`).  What reached the file is kept.
    """

    stats: LiveStats | None = None


@dataclass
class LiveStats:
    """Counters of a live capture; passed to ``on_progress`` while running and returned at the end.

    The flow counters (``flows_live``, ``flows_done``, ``flow_bytes_done``) cover the frames fed
    to the live flow table: all of them unless ``flow_updates_skipped`` > 0.
    """

    iface: str
    path: Path
    linktype: int = 0
    started: float = 0.0  # epoch seconds
    elapsed: float = 0.0  # seconds
    frames: int = 0  # frames written to the file
    bytes: int = 0  # captured bytes written (frame bytes, without pcapng framing)
    flows_live: int = 0
    flows_done: int = 0
    flow_bytes_done: int = 0  # IP bytes of the finished flows
    kernel_packets: int = 0  # frames that passed the socket filter (received + dropped), from PACKET_STATISTICS
    kernel_drops: int = 0  # frames the kernel dropped because the ring (socket buffer) was full
    decode_skips: dict[str, int] = field(default_factory=dict)  # frames written but not in any flow, by reason
    stopped_by: str = ""  # duration, stop, signal, error, write_error (the file could not be written: CaptureWriteError), interface_error
    error: str = ""  # why the capture stopped early, one line (interface_error: the interface went down or away)
    rcvbuf: int = 0  # bytes of receive ring (mode "ring") or socket receive buffer (mode "recv") the kernel granted
    mode: str = ""  # "ring": PACKET_MMAP TPACKET_V3 ring; "recv": one recvmsg() per frame
    flow_updates_skipped: int = 0  # frames written to the file but not fed to the live flow table (the ring was behind)
    ring_freezes: int = 0  # times the kernel found the ring full (tp_freeze_q_cnt; frames then dropped)
    files: list[Path] = field(default_factory=list)  # the files written, in order (more than one with rotation)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


# -- pcapng ------------------------------------------------------------------
_U32 = struct.Struct("<I")
_EPB_CACHE_MAX = 4096  # distinct frame lengths whose EPB packer is kept


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


class PcapNgWriter:
    """A minimal streaming pcapng writer: one section, one interface, microsecond timestamps.

    One ``struct.pack`` per packet, with a packer per frame length that pads and
    frames the data itself (scapy's ``RawPcapNgWriter`` builds each block from
    about ten packs and concatenations; see ``benchmarks/run.py --only writer``).
    :meth:`epb` returns the block for callers that gather many frames into one write.
    Every write that fails raises :class:`CaptureWriteError`; nothing is written after that.
    """

    def __init__(self, f: BinaryIO, linktype: int, ifname: str = "", snaplen: int = SNAPLEN) -> None:
        self.f = f
        self.frames = 0
        self.failed: OSError | None = None
        self._packers: dict[int, tuple[Callable[..., bytes], int]] = {}
        opts = _option(4, f"egressaudit {__version__} live capture".encode()) + _option(0, b"")
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts
        idb_opts = b""
        if ifname:
            idb_opts += _option(2, ifname.encode())
        idb_opts += _option(9, b"\x06")  # if_tsresol: 10^-6 (the default, said explicitly)
        idb_opts += _option(0, b"")
        idb = struct.pack("<HHI", linktype, 0, snaplen) + idb_opts
        self.write_blocks(_block(0x0A0D0D0A, shb) + _block(1, idb))

    def epb(self, data: bytes, ts_us: int, wirelen: int) -> bytes:
        """The Enhanced Packet Block of one frame (not written)."""
        n = len(data)
        p = self._packers.get(n)
        if p is None:
            if len(self._packers) >= _EPB_CACHE_MAX:
                self._packers.clear()
            padded = n + (-n % 4)
            p = self._packers[n] = (struct.Struct(f"<7I{padded}sI").pack, 32 + padded)
        pack, total = p
        return pack(6, total, 0, ts_us >> 32, ts_us & 0xFFFFFFFF, n, wirelen, data, total)

    def write(self, data: bytes, ts_us: int, wirelen: int) -> None:
        try:
            self.f.write(self.epb(data, ts_us, wirelen))
        except OSError as e:
            raise self._failed(e) from e
        self.frames += 1

    def write_blocks(self, blocks: bytes) -> None:
        """Blocks made by :meth:`epb` (or any whole pcapng blocks), written as they are."""
        try:
            self.f.write(blocks)
        except OSError as e:
            raise self._failed(e) from e

    def flush(self) -> None:
        """Hand what is buffered to the kernel (it survives the process then)."""
        try:
            self.f.flush()
        except OSError as e:
            raise self._failed(e) from e

    def _failed(self, e: OSError) -> CaptureWriteError:
        if isinstance(e, CaptureWriteError):
            return e
        self.failed = e
        name = getattr(self.f, "name", None)
        return CaptureWriteError(e.errno, e.strerror or str(e), name if isinstance(name, str) else None)

    def write_stats(self, start_us: int, end_us: int, received: int, dropped: int) -> None:
        """Interface Statistics Block: capture start/end, packets received and dropped by the kernel."""
        opts = (
            _option(2, struct.pack("<II", start_us >> 32, start_us & 0xFFFFFFFF))
            + _option(3, struct.pack("<II", end_us >> 32, end_us & 0xFFFFFFFF))
            + _option(4, struct.pack("<Q", received))
            + _option(5, struct.pack("<Q", dropped))
            + _option(0, b"")
        )
        self.write_blocks(_block(5, struct.pack("<III", 0, end_us >> 32, end_us & 0xFFFFFFFF) + opts))


# -- socket helpers ------------------------------------------------------------
class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _compile(bpf: str, iface: str) -> list[tuple[int, int, int, int]]:
    import scapy.arch  # noqa: F401  # the platform code (libpcap or tcpdump -ddd) that compile_filter uses
    from scapy.arch.common import compile_filter

    try:
        prog: Any = compile_filter(bpf, iface)
    except Exception as e:  # scapy raises Scapy_Exception or ImportError (no libpcap, no tcpdump)
        raise CaptureSetupError(f"cannot compile the capture filter {bpf!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return [(int(i.code), int(i.jt), int(i.jf), int(i.k)) for i in prog.bf_insns[: int(prog.bf_len)]]


def _attach(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    arr = (_SockFilter * len(insns))(*[_SockFilter(*i) for i in insns])
    prog = _SockFprog(len(insns), ctypes.cast(arr, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(memoryview(prog)))


def socket_filter(bpf: str | None, iface: str, loopback: bool) -> list[tuple[int, int, int, int]] | None:
    """Classic-BPF program for the socket: the user's filter, preceded on loopback by 'drop outgoing copies'."""
    user = _compile(bpf, iface) if bpf else [(_BPF_RET_K, 0, 0, SNAPLEN)]
    if not loopback:
        return user if bpf else None
    # if pkttype == PACKET_OUTGOING: return 0; else fall through to the user's program
    return [_BPF_LD_PKTTYPE, (0x15, 0, 1, PACKET_OUTGOING), (_BPF_RET_K, 0, 0, 0), *user]


def _kernel_stats(sock: socket.socket) -> tuple[int, int, int]:
    """(packets, drops, ring freezes) since the last call; PACKET_STATISTICS resets on read; packets includes drops.

    With TPACKET_V3 the kernel returns ``struct tpacket_stats_v3`` (a third field,
    ``tp_freeze_q_cnt``); otherwise ``struct tpacket_stats`` (freezes are then 0).
    """
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
    if len(raw) >= 12:
        packets, drops, freezes = struct.unpack_from("III", raw)
        return packets, drops, freezes
    packets, drops = struct.unpack_from("II", raw)
    return packets, drops, 0


def read_kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: PACKET_STATISTICS resets on read; packets includes drops."""
    packets, drops, _ = _kernel_stats(sock)
    return packets, drops


# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status, num_pkts, offset_to_first_pkt, ...
_BLOCK_HEAD = struct.Struct("<III")  # at offset 8: block_status, num_pkts, offset_to_first_pkt
_BLOCK_STATUS = 8
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac (u16)
_TP3_HDR = struct.Struct("<IIIIIIH")
_TP3_VLAN = struct.Struct("<IH")  # at offset 32: tp_vlan_tci (u32), tp_vlan_tpid (u16)
_TP3_VLAN_OFF = 32
_RING_FRAME = 2048  # tp_frame_size: with TPACKET_V3 only checked for consistency; frames are packed in blocks


class _Ring:
    """A mapped TPACKET_V3 receive ring of ``nblocks`` blocks of ``block_size`` bytes."""

    def __init__(self, mm: mmap.mmap, block_size: int, nblocks: int) -> None:
        self.mm = mm
        self.block_size = block_size
        self.nblocks = nblocks

    @property
    def size(self) -> int:
        return self.block_size * self.nblocks

    @classmethod
    def setup(cls, sock: socket.socket, size: int) -> _Ring | None:
        """Switch an unbound packet socket to TPACKET_V3 and map a ring of about ``size`` bytes; None if the kernel refuses."""
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        except OSError:
            return None
        nblocks = max(2, size // RING_BLOCK)
        while True:  # a large ring may not be granted at once (memory): halve it down to 8 blocks
            req = struct.pack("7I", RING_BLOCK, nblocks, _RING_FRAME, nblocks * (RING_BLOCK // _RING_FRAME), RING_TIMEOUT_MS, 0, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
                break
            except OSError:
                if nblocks <= 8:
                    return None
                nblocks //= 2
        try:
            mm = mmap.mmap(sock.fileno(), RING_BLOCK * nblocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            return None
        return cls(mm, RING_BLOCK, nblocks)


@dataclass
class _Source:
    sock: socket.socket
    linktype: int
    ring: _Ring | None
    rcvbuf: int

    def close(self) -> None:
        if self.ring is not None:
            self.ring.mm.close()
        self.sock.close()


def _open_socket(iface: str, bpf: str | None, rcvbuf: int, ring: bool = True) -> _Source:
    """A packet socket on ``iface`` with its filter and (if ``ring`` and the kernel agrees) a TPACKET_V3 ring.

    The socket is bound to the interface with protocol 0 (nothing is received) to
    learn the hardware type, set up, and only then bound to ETH_P_ALL: every frame
    it ever receives has passed the filter and is counted by PACKET_STATISTICS.
    """
    try:
        ifindex = socket.if_nametoindex(iface)
    except OSError as e:
        raise CaptureSetupError(f"{iface}: no such network interface") from e
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as e:
        raise CaptureSetupError(f"{iface}: capturing needs root or CAP_NET_RAW ({e.strerror or e})") from e
    except OSError as e:
        raise CaptureSetupError(f"{iface}: cannot open a packet socket ({e.strerror or e})") from e
    r: _Ring | None = None
    try:
        try:
            sock.bind((iface, 0))
        except OSError as e:
            raise CaptureSetupError(f"{iface}: cannot bind a packet socket ({e.strerror or e})") from e
        hatype = int(sock.getsockname()[3])
        loopback = hatype == ARPHRD_LOOPBACK
        from scapy.data import ARPHRD_TO_DLT

        linktype = LINKTYPE_ETHERNET if loopback else int(ARPHRD_TO_DLT.get(hatype, LINKTYPE_ETHERNET))
        insns = socket_filter(bpf, iface, loopback)
        if insns is not None:
            _attach(sock, insns)
        try:  # promiscuous, as tcpdump and scapy capture by default; the kernel ends it when the socket closes
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
        except OSError:
            pass
        r = _Ring.setup(sock, rcvbuf) if ring else None
        if r is not None:
            granted = r.size
        else:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # capped by net.core.rmem_max
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.bind((iface, ETH_P_ALL))
    except BaseException:
        if r is not None:
            r.mm.close()
        sock.close()
        raise
    return _Source(sock, linktype, r, granted)


# -- the loop ------------------------------------------------------------------
_AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_TIMESPEC = struct.Struct("qq")
_ANCBUF = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size)


class _Rotation:
    """When the capture moves on to a new file (``rotate_bytes`` captured bytes or ``rotate_seconds`` in the current
    one), and the function that opens it."""

    def __init__(self, open_next: Callable[[], PcapNgWriter], max_bytes: int | None, max_seconds: float | None) -> None:
        self.open_next, self.max_bytes, self.max_seconds = open_next, max_bytes, max_seconds
        self.bytes_at = 0
        self.opened = time.monotonic()

    def due(self, nbytes: int, now: float) -> bool:
        return bool((self.max_bytes and nbytes - self.bytes_at >= self.max_bytes) or (self.max_seconds and now - self.opened >= self.max_seconds))

    def next(self, nbytes: int, now: float) -> PcapNgWriter:
        w = self.open_next()
        self.bytes_at, self.opened = nbytes, now
        return w


def capture_files(folder: Path) -> list[Path]:
    """A capture's files in order: ``capture.pcapng``, then the files rotation made (``capture-00001.pcapng``, ...)."""
    first = folder / CAPTURE_FILE
    return ([first] if first.exists() else []) + sorted(folder.glob("capture-[0-9][0-9][0-9][0-9][0-9].pcapng"))


class _Run:
    """State of one capture: the file, the flow table, the counters, the clock."""

    def __init__(self, src: _Source, writer: PcapNgWriter, table: FlowTable, stats: LiveStats, stop: threading.Event,
                 deadline: float | None, on_progress: Callable[[LiveStats], None] | None) -> None:  # fmt: skip
        self.src = src
        self.writer = writer
        self.table = table
        self.stats = stats
        self.stop = stop
        self.deadline = deadline
        self.on_progress = on_progress
        self.skips: Counter[str] = Counter()
        self.t0 = time.monotonic()
        self.next_progress = self.t0 + PROGRESS_EVERY
        self.next_flush = self.t0 + FLUSH_EVERY
        self.frames = self.nbytes = self.skipped = 0
        self.kpackets = self.kdrops = self.kfreezes = 0
        self.error = ""  # the socket's error, when the interface went down or away
        self.on_flows: Callable[[FlowTable], None] | None = None
        self.rotation: _Rotation | None = None

    def socket_error(self) -> bool:
        """Whether the socket reports an error (the interface went down or was removed); it is kept in ``error``."""
        err = self.src.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.error = f"{self.stats.iface}: {os.strerror(err)}"
        return bool(err)

    def kernel(self) -> None:
        p, d, f = _kernel_stats(self.src.sock)
        self.kpackets += p
        self.kdrops += d
        self.kfreezes += f

    def sync(self, now: float) -> None:
        s = self.stats
        s.frames, s.bytes, s.kernel_packets, s.kernel_drops, s.ring_freezes = self.frames, self.nbytes, self.kpackets, self.kdrops, self.kfreezes
        s.flow_updates_skipped, s.flows_live, s.elapsed, s.decode_skips = self.skipped, len(self.table.flows), now - self.t0, dict(self.skips)

    def check(self) -> tuple[bool, float]:
        """(time to stop?, seconds to wait for traffic at most); flushes the file, reads the kernel's counters and reports
        progress when due."""
        now = time.monotonic()
        if self.stop.is_set() or (self.deadline is not None and now >= self.deadline):
            return True, 0.0
        if self.rotation is not None and self.rotation.due(self.nbytes, now):
            self.writer = self.rotation.next(self.nbytes, now)
        if now >= self.next_flush:
            self.next_flush = now + FLUSH_EVERY
            self.writer.flush()
        if now >= self.next_progress:
            self.next_progress = now + PROGRESS_EVERY
            self.kernel()
            if self.on_progress is not None:
                self.sync(now)
                self.on_progress(self.stats)
            if self.on_flows is not None:
                self.on_flows(self.table)
        return False, 0.1 if self.deadline is None else max(0.0, min(0.1, self.deadline - now))

    # -- ring --------------------------------------------------------------------
    def ring_block(self, ring: _Ring, index: int, full: bool) -> None:
        """Write every frame of a block handed over by the kernel, feed them to the flow table if ``full``, give the block back."""
        mm = ring.mm
        boff = index * ring.block_size
        _, num, first = _BLOCK_HEAD.unpack_from(mm, boff + _BLOCK_STATUS)
        hdr = _TP3_HDR.unpack_from
        epb = self.writer.epb
        linktype = self.src.linktype
        eth = linktype == LINKTYPE_ETHERNET
        add = self.table.add
        skips = self.skips
        parts: list[bytes] = []
        keep = parts.append
        nbytes = 0
        off = boff + first
        for _ in range(num):
            nxt, sec, nsec, snap, wirelen, status, mac = hdr(mm, off)
            data = mm[off + mac : off + mac + snap]
            if status & TP_STATUS_VLAN_VALID and eth:  # the NIC took the tag off: put it back, as libpcap does
                tci, tpid = _TP3_VLAN.unpack_from(mm, off + _TP3_VLAN_OFF)
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = ETH_P_8021Q
                data = data[:12] + struct.pack("!HH", tpid, tci & 0xFFFF) + data[12:]
                wirelen += 4
            nbytes += len(data)
            ts_us = sec * 1000000 + nsec // 1000
            keep(epb(data, ts_us, wirelen))
            if full:
                pkt = decode(linktype, data)
                if pkt.__class__ is str:
                    skips[pkt] += 1
                else:
                    add(pkt, sec + nsec * 1e-9)  # type: ignore[arg-type]
            off += nxt
        _U32.pack_into(mm, boff + _BLOCK_STATUS, TP_STATUS_KERNEL)
        self.writer.write_blocks(b"".join(parts))
        self.frames += num
        self.nbytes += nbytes
        if not full:
            self.skipped += num

    def ring_loop(self, ring: _Ring) -> None:
        mm = ring.mm
        bs = ring.block_size
        nb = ring.nblocks
        lag = max(1, nb // RING_BEHIND)
        status_of = _U32.unpack_from
        poller = select.poll()
        poller.register(self.src.sock.fileno(), select.POLLIN | select.POLLERR)
        cur = 0
        while True:
            if status_of(mm, cur * bs + _BLOCK_STATUS)[0] & TP_STATUS_USER:
                behind = status_of(mm, ((cur + lag) % nb) * bs + _BLOCK_STATUS)[0] & TP_STATUS_USER
                self.ring_block(ring, cur, not behind)
                cur = (cur + 1) % nb
                done, _ = self.check()
                if done:
                    break
                continue
            done, wait = self.check()
            if done:
                break
            events = poller.poll(int(wait * 1000) + 1)
            if events and events[0][1] & select.POLLERR and self.socket_error():
                break  # (poll would report the error at once, again and again: the loop would spin)
        self.ring_drain(ring, cur, poller)

    def ring_drain(self, ring: _Ring, cur: int, poller: select.poll) -> None:
        """Stop receiving (a drop-everything filter), then write what is in the ring until it matches the kernel's count."""
        try:
            _attach(self.src.sock, [(_BPF_RET_K, 0, 0, 0)])
        except OSError:
            return
        mm = ring.mm
        bs = ring.block_size
        nb = ring.nblocks
        until = time.monotonic() + DRAIN_TIMEOUT
        while True:
            self.kernel()
            if self.frames >= self.kpackets - self.kdrops or time.monotonic() >= until:
                return
            while _U32.unpack_from(mm, cur * bs + _BLOCK_STATUS)[0] & TP_STATUS_USER:
                self.ring_block(ring, cur, True)
                cur = (cur + 1) % nb
            if self.frames < self.kpackets - self.kdrops:
                poller.poll(RING_TIMEOUT_MS // 2 + 1)  # the kernel hands over the last, partly filled block after RING_TIMEOUT_MS

    # -- recv ----------------------------------------------------------------------
    def recv_loop(self) -> None:
        sock = self.src.sock
        recvmsg = sock.recvmsg
        write = self.writer.write
        linktype = self.src.linktype
        eth = linktype == LINKTYPE_ETHERNET
        add = self.table.add
        skips = self.skips
        sock.setblocking(False)
        fd = sock.fileno()
        countdown = CHECK_EVERY
        while True:
            try:
                data, anc, _, _ = recvmsg(SNAPLEN, _ANCBUF)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as e:  # the interface went down or away (ENETDOWN, ENXIO)
                self.error = f"{self.stats.iface}: {e.strerror or e}"
                break
            if data is not None:
                wirelen = len(data)
                ts = time.time()
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                        sec, nsec = _TIMESPEC.unpack_from(value)
                        ts = sec + nsec * 1e-9
                    elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= _AUXDATA.size:
                        status, wirelen, _, _, _, tci, tpid = _AUXDATA.unpack_from(value)
                        if status & TP_STATUS_VLAN_VALID and eth:
                            if not status & TP_STATUS_VLAN_TPID_VALID:
                                tpid = ETH_P_8021Q
                            data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                            wirelen += 4
                n = len(data)
                self.frames += 1
                self.nbytes += n
                write(data, int(ts * 1e6 + 0.5), max(wirelen, n))
                pkt = decode(linktype, data)
                if pkt.__class__ is str:
                    skips[pkt] += 1
                else:
                    add(pkt, ts)  # type: ignore[arg-type]
                countdown -= 1
                if countdown:
                    continue
            countdown = CHECK_EVERY
            done, wait = self.check()
            if done:
                break
            if data is None:
                try:
                    select.select([fd], [], [], wait)
                except InterruptedError:
                    pass


def off_the_terminal(fds: list[int]) -> None:
    """The terminal hung up: what the capture and the analysis after it would print there goes to /dev/null, since
    every write to it now fails (EIO) and would end the run before the session is written."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in fds:
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def capture(
    iface: str,
    out_dir: Path,
    duration: float | None,
    bpf: str | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[LiveStats], None] | None = None,
    idle_timeout: float = 120.0,
    rcvbuf: int = DEFAULT_RCVBUF,
    inspect_payloads: bool = False,
    on_flow_done: Callable[[Flow], None] | None = None,
    on_flows: Callable[[FlowTable], None] | None = None,
    rotate_bytes: int | None = None,
    rotate_seconds: float | None = None,
) -> LiveStats:
    """Capture on ``iface`` into ``out_dir/capture.pcapng`` until ``duration`` seconds pass, ``stop`` is set, or SIGINT/SIGTERM/SIGHUP.

    ``rcvbuf`` is the size of the receive ring (or of the socket buffer when the
    kernel gives no ring).  Returns the final :class:`LiveStats`.  Raises
    :class:`CaptureSetupError` if the capture cannot start, ``OSError`` if the
    file cannot be created (nothing is left behind then), and
    :class:`CaptureWriteError` (an ``OSError``) if it cannot be written while
    capturing: the capture stops, what reached the file is kept, and the
    error's ``stats`` are the counters up to there (``stopped_by`` "write_error").

    For a live view: ``inspect_payloads`` reads the flows' payloads as the analysis does (server names, media; it
    costs several times more per packet), ``on_flow_done`` gets each flow that ends, and ``on_flows`` the live flow
    table each time progress is reported (both called from the capturing thread).

    Rotation: with ``rotate_bytes`` or ``rotate_seconds`` the file is closed (flushed and synced) once it holds that
    many captured bytes or that much time (checked as the kernel hands over each block of the ring: a file ends at the
    first block past its limit, at most 1 MiB or :data:`RING_TIMEOUT_MS` later), and the capture goes on in ``capture-00001.pcapng``, ``-00002``, ...
    (:func:`capture_files` lists them in order); the last file gets the statistics block.  Each file is a whole pcapng
    that tools read on its own, and a closed one is safe whatever happens to the capture after.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CAPTURE_FILE
    stats = LiveStats(iface=iface, path=path)
    stop = stop or threading.Event()
    src = _open_socket(iface, bpf, rcvbuf, ring=USE_RING)
    stats.linktype = src.linktype
    stats.rcvbuf = src.rcvbuf
    stats.mode = "ring" if src.ring is not None else "recv"

    def done(flow: Flow) -> None:
        stats.flows_done += 1
        stats.flow_bytes_done += flow.bytes_ab + flow.bytes_ba
        if on_flow_done is not None:
            on_flow_done(flow)

    # (without a live view: counts flows only, the evidence is read from the file)
    table = FlowTable(done, idle_timeout=idle_timeout, inspect_payloads=inspect_payloads)

    previous: dict[signal.Signals, Any] = {}
    signalled: list[int] = []

    terminal = [fd for fd in (1, 2) if os.isatty(fd)]  # (asked now: a hung-up terminal may no longer say it is one)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        stop.set()
        if signum == signal.SIGHUP:
            off_the_terminal(terminal)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: a closed terminal
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN and handler is not None:  # (nohup ignores SIGHUP: so do we; None: set from C)
                previous[signum] = signal.signal(signum, on_signal)

    fh: BinaryIO | None = None
    try:
        fh = open(path, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 - closed in the finally below
        writer = PcapNgWriter(fh, src.linktype, iface)
        writer.flush()  # a capture killed before its first periodic flush leaves a valid (empty) pcapng, not an empty file
    except BaseException:
        src.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if fh is not None:  # created, but not even its header could be written (a full disk): nothing is left behind
            with contextlib.suppress(OSError):
                fh.close()
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    started = time.time()
    stats.started = started
    run = _Run(src, writer, table, stats, stop, None, on_progress)
    run.on_flows = on_flows
    stats.files = [path]
    if rotate_bytes or rotate_seconds:

        def rotate() -> PcapNgWriter:
            nonlocal fh
            run.writer.flush()
            assert fh is not None
            try:
                os.fsync(fh.fileno())
                fh.close()
                nxt = out_dir / f"capture-{len(stats.files):05d}.pcapng"
                fh = open(nxt, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 - closed at the next rotation or in the finally below
            except OSError as e:
                raise run.writer._failed(e) from e
            stats.files.append(nxt)
            w = PcapNgWriter(fh, src.linktype, iface)
            w.flush()
            return w

        run.rotation = _Rotation(rotate, rotate_bytes, rotate_seconds)
    run.deadline = run.t0 + duration if duration is not None else None
    failed: CaptureWriteError | None = None
    try:
        if src.ring is not None:
            run.ring_loop(src.ring)
        else:
            run.recv_loop()
        stats.stopped_by = "interface_error" if run.error else "signal" if signalled else "stop" if stop.is_set() else "duration"
        stats.error = run.error
    except CaptureWriteError as e:  # a full disk: stop here, keep what reached the file
        failed = e
        stats.stopped_by = "write_error"
    except BaseException:
        stats.stopped_by = "error"
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        try:
            run.kernel()
        except OSError:
            pass
        src.close()
        end = time.monotonic()
        writer = run.writer  # (the last file, after rotations)
        if failed is None and writer.failed is None:
            try:
                writer.write_stats(int(started * 1e6), int(time.time() * 1e6), run.kpackets, run.kdrops)
                writer.flush()
                os.fsync(fh.fileno())
            except OSError as e:
                failed = e if isinstance(e, CaptureWriteError) else writer._failed(e)
                if stats.stopped_by != "error":
                    stats.stopped_by = "write_error"
        try:
            fh.close()  # (after a failed write it tries that write again, and fails again: the file is closed all the same)
        except OSError:
            pass
        run.sync(end)
        table.flush()
        stats.flows_live = 0
        run.skips["orphan_fragment"] += table.orphan_fragments
        stats.decode_skips = {k: v for k, v in sorted(run.skips.items()) if v}
    if on_progress is not None:
        on_progress(stats)
    if failed is not None:
        err = CaptureWriteError(
            failed.errno,
            f"{failed.strerror or failed} (the capture stopped after {stats.frames:,} packets; what reached {path.name} is kept)",
            str(path),
        )
        err.stats = stats
        raise err from failed
    return stats


USE_RING = True  # False: one recvmsg() per frame even where the kernel offers a ring (tests cover both paths)

__all__ = [
    "CAPTURE_FILE", "CaptureSetupError", "CaptureWriteError", "LiveStats", "PcapNgWriter", "capture", "capture_files", "off_the_terminal",
    "read_kernel_stats", "socket_filter",
]  # fmt: skip
