"""Live capture: raw frames from an interface -> ``capture.pcapng`` + live flow counts.

``capture(iface, out_dir, duration)`` reads frames from scapy's
``conf.L2listen`` packet socket with ``recv_raw()`` (no scapy Packet is built
per frame), writes every frame to ``out_dir/capture.pcapng`` and feeds the
same :class:`~egressaudit.capture.flows.FlowTable` that offline ingest uses,
so the number of live and finished flows is known while capturing.  The file
is an ordinary pcapng (one interface, the socket's link type, microsecond
timestamps from the kernel, an Interface Statistics Block with the kernel's
received and dropped counts at the end): ``egressaudit analyze`` reads it, as
do Wireshark and tcpdump.

Details that matter for correct counts:

* On a loopback interface the kernel hands a packet socket every frame twice
  (once going out, once coming in).  libpcap drops the outgoing copy; so do
  we, in the kernel, with a classic-BPF prefix on the socket filter.
* The socket's receive buffer is raised (``SO_RCVBUFFORCE`` as root) so that
  bursts are buffered rather than dropped; what the kernel still drops is
  read with ``PACKET_STATISTICS`` and reported in :class:`LiveStats`.
* SIGINT/SIGTERM (when called from the main thread) and the ``stop`` event end
  the capture cleanly: the file is flushed and closed, live flows are ended.
"""

from __future__ import annotations

import ctypes
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
from egressaudit.capture.flows import Flow, FlowTable
from egressaudit.capture.frames import decode

CAPTURE_FILE = "capture.pcapng"
SNAPLEN = 262144
DEFAULT_RCVBUF = 64 << 20  # bytes of socket receive buffer asked for (tcpdump's default is 2 MiB)
PROGRESS_EVERY = 0.5  # seconds between on_progress calls
CHECK_EVERY = 1024  # frames between clock checks when traffic never pauses

SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
ARPHRD_LOOPBACK = 772
PACKET_OUTGOING = 4
# classic BPF: ld [SKF_AD_OFF + SKF_AD_PKTTYPE]
_BPF_LD_PKTTYPE = (0x20, 0, 0, (-0x1000 + 4) & 0xFFFFFFFF)
_BPF_RET_K = 0x06


class CaptureSetupError(Exception):
    """The capture cannot start (no such interface, no permission, bad filter); one line for the user."""


@dataclass
class LiveStats:
    """Counters of a live capture; passed to ``on_progress`` while running and returned at the end."""

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
    kernel_drops: int = 0  # frames the kernel dropped because the socket buffer was full
    decode_skips: dict[str, int] = field(default_factory=dict)  # frames written but not in any flow, by reason
    stopped_by: str = ""  # duration, stop, signal, error
    rcvbuf: int = 0  # socket receive buffer the kernel granted, bytes

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0


# -- pcapng ------------------------------------------------------------------
_EPB_HEAD = struct.Struct("<IIIIIII")
_U32 = struct.Struct("<I")


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


class PcapNgWriter:
    """A minimal streaming pcapng writer: one section, one interface, microsecond timestamps.

    One ``struct.pack`` per packet (scapy's ``RawPcapNgWriter`` builds each block
    from about ten packs and concatenations; see ``benchmarks/run.py --only writer``).
    """

    def __init__(self, f: BinaryIO, linktype: int, ifname: str = "", snaplen: int = SNAPLEN) -> None:
        self.f = f
        self.frames = 0
        opts = _option(4, f"egressaudit {__version__} live capture".encode()) + _option(0, b"")
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts
        idb_opts = b""
        if ifname:
            idb_opts += _option(2, ifname.encode())
        idb_opts += _option(9, b"\x06")  # if_tsresol: 10^-6 (the default, said explicitly)
        idb_opts += _option(0, b"")
        idb = struct.pack("<HHI", linktype, 0, snaplen) + idb_opts
        f.write(_block(0x0A0D0D0A, shb) + _block(1, idb))

    def write(self, data: bytes, ts_us: int, wirelen: int) -> None:
        n = len(data)
        pad = -n % 4
        total = 32 + n + pad
        self.f.write(_EPB_HEAD.pack(6, total, 0, ts_us >> 32, ts_us & 0xFFFFFFFF, n, wirelen))
        self.f.write(data + b"\x00" * pad + _U32.pack(total) if pad else data + _U32.pack(total))
        self.frames += 1

    def write_stats(self, start_us: int, end_us: int, received: int, dropped: int) -> None:
        """Interface Statistics Block: capture start/end, packets received and dropped by the kernel."""
        opts = (
            _option(2, struct.pack("<II", start_us >> 32, start_us & 0xFFFFFFFF))
            + _option(3, struct.pack("<II", end_us >> 32, end_us & 0xFFFFFFFF))
            + _option(4, struct.pack("<Q", received))
            + _option(5, struct.pack("<Q", dropped))
            + _option(0, b"")
        )
        self.f.write(_block(5, struct.pack("<III", 0, end_us >> 32, end_us & 0xFFFFFFFF) + opts))


# -- socket helpers ------------------------------------------------------------
class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _compile(bpf: str, iface: str) -> list[tuple[int, int, int, int]]:
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


def read_kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: PACKET_STATISTICS resets on read; packets includes drops."""
    packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return packets, drops


def _open_socket(iface: str, bpf: str | None, rcvbuf: int) -> tuple[Any, int, bool]:
    import scapy.arch  # noqa: F401  # loads the platform code that sets conf.L2listen
    from scapy.config import conf

    try:
        idx = socket.if_nametoindex(iface)
    except OSError as e:
        raise CaptureSetupError(f"{iface}: no such network interface") from e
    del idx
    try:
        sock: Any = conf.L2listen(iface=iface, nofilter=1)
    except PermissionError as e:
        raise CaptureSetupError(f"{iface}: capturing needs root or CAP_NET_RAW ({e.strerror or e})") from e
    except OSError as e:
        raise CaptureSetupError(f"{iface}: cannot open a packet socket ({e.strerror or e})") from e
    try:
        ins: socket.socket = sock.ins
        hatype = int(ins.getsockname()[3])
        loopback = hatype == ARPHRD_LOOPBACK
        from scapy.data import ARPHRD_TO_DLT

        linktype = 1 if loopback else int(ARPHRD_TO_DLT.get(hatype, 1))
        insns = socket_filter(bpf, iface, loopback)
        if insns is not None:
            _attach(ins, insns)
        try:
            ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # capped by net.core.rmem_max
        # drain what arrived before the filter was attached, and reset the kernel counters
        ins.setblocking(False)
        while True:
            try:
                ins.recv(SNAPLEN)
            except BlockingIOError:
                break
        read_kernel_stats(ins)
    except BaseException:
        sock.close()
        raise
    return sock, linktype, loopback


# -- the loop ------------------------------------------------------------------
def capture(
    iface: str,
    out_dir: Path,
    duration: float | None,
    bpf: str | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[LiveStats], None] | None = None,
    idle_timeout: float = 120.0,
    rcvbuf: int = DEFAULT_RCVBUF,
) -> LiveStats:
    """Capture on ``iface`` into ``out_dir/capture.pcapng`` until ``duration`` seconds pass, ``stop`` is set, or SIGINT/SIGTERM.

    Returns the final :class:`LiveStats`.  Raises :class:`CaptureSetupError`
    if the capture cannot start and ``OSError`` if the file cannot be written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CAPTURE_FILE
    stats = LiveStats(iface=iface, path=path)
    stop = stop or threading.Event()
    sock, linktype, _ = _open_socket(iface, bpf, rcvbuf)
    ins: socket.socket = sock.ins
    stats.linktype = linktype
    stats.rcvbuf = ins.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    skips: Counter[str] = Counter()

    def done(flow: Flow) -> None:
        stats.flows_done += 1
        stats.flow_bytes_done += flow.bytes_ab + flow.bytes_ba

    table = FlowTable(done, idle_timeout=idle_timeout)

    previous: dict[signal.Signals, Any] = {}
    signalled: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)

    fh = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in the finally below
    writer = PcapNgWriter(fh, linktype, iface)
    recv = sock.recv_raw
    write = writer.write
    add = table.add
    fd = ins.fileno()
    started = time.time()
    t0 = time.monotonic()
    deadline = t0 + duration if duration is not None else None
    next_progress = t0 + PROGRESS_EVERY
    frames = nbytes = 0
    kpackets = kdrops = 0
    countdown = CHECK_EVERY
    stats.started = started
    try:
        while True:
            try:
                _, data, ts = recv(SNAPLEN)
            except BlockingIOError:
                data = None
            except InterruptedError:
                data = None
            if data is not None:
                n = len(data)
                frames += 1
                nbytes += n
                write(data, int(ts * 1e6 + 0.5), n)
                pkt = decode(linktype, data)
                if pkt.__class__ is str:
                    skips[pkt] += 1
                else:
                    add(pkt, ts)  # type: ignore[arg-type]
                countdown -= 1
                if countdown:
                    continue
                countdown = CHECK_EVERY
            else:
                countdown = CHECK_EVERY
            # no frame waiting, or CHECK_EVERY frames since the last look at the clock
            now = time.monotonic()
            if stop.is_set() or (deadline is not None and now >= deadline):
                break
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY
                p, d = read_kernel_stats(ins)
                kpackets += p
                kdrops += d
                if on_progress is not None:
                    stats.frames, stats.bytes, stats.kernel_packets, stats.kernel_drops = frames, nbytes, kpackets, kdrops
                    stats.flows_live, stats.elapsed, stats.decode_skips = len(table.flows), now - t0, dict(skips)
                    on_progress(stats)
            if data is None:
                wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - now))
                try:
                    select.select([fd], [], [], wait)
                except InterruptedError:
                    pass
        stats.stopped_by = "signal" if signalled else ("stop" if stop.is_set() else "duration")
    except BaseException:
        stats.stopped_by = "error"
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        try:
            p, d = read_kernel_stats(ins)
            kpackets += p
            kdrops += d
        except OSError:
            pass
        sock.close()
        stats.elapsed = time.monotonic() - t0
        try:
            writer.write_stats(int(started * 1e6), int(time.time() * 1e6), kpackets, kdrops)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        stats.flows_live = len(table.flows)
        table.flush()
        stats.flows_live = 0
        stats.frames, stats.bytes, stats.kernel_packets, stats.kernel_drops = frames, nbytes, kpackets, kdrops
        skips["orphan_fragment"] += table.orphan_fragments
        stats.decode_skips = {k: v for k, v in sorted(skips.items()) if v}
    if on_progress is not None:
        on_progress(stats)
    return stats


__all__ = ["CAPTURE_FILE", "CaptureSetupError", "LiveStats", "PcapNgWriter", "capture", "read_kernel_stats", "socket_filter"]
