"""Live capture on the loopback interface: a real sniffer, real UDP and TCP traffic to 127.0.0.1.

Every packet these tests send goes to 127.0.0.1.  The sniffer tests need root
or CAP_NET_RAW (a packet socket) and are skipped with that reason otherwise.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.capture import live
from egressaudit.capture.frames import LINKTYPE_ETHERNET
from egressaudit.capture.live import CAPTURE_FILE, CaptureSetupError, CaptureWriteError, LiveStats, PcapNgWriter, capture
from egressaudit.capture.reader import ReadStats, iter_frames
from tests.support.signals import as_in_a_terminal

UDP_FLOWS = 3
UDP_PER_FLOW = 400
UDP_SIZE = 120
TCP_MESSAGES = 50


def _can_sniff() -> str | None:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    except PermissionError:
        return "live capture needs root or CAP_NET_RAW (cannot open an AF_PACKET socket)"
    except (OSError, AttributeError) as e:
        return f"no AF_PACKET sockets here: {e}"
    s.close()
    try:
        socket.if_nametoindex("lo")
    except OSError:
        return "no loopback interface 'lo'"
    return None


needs_sniffer = pytest.mark.skipif(_can_sniff() is not None, reason=_can_sniff() or "")


def _free_port(kind: int) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class _Traffic:
    """UDP datagrams from several source ports to one receiver, and one TCP connection; all on 127.0.0.1."""

    def __init__(self) -> None:
        self.udp_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.udp_rx.bind(("127.0.0.1", 0))
        self.udp_port = int(self.udp_rx.getsockname()[1])
        self.tcp_srv = socket.socket()
        self.tcp_srv.bind(("127.0.0.1", 0))
        self.tcp_srv.listen(1)
        self.tcp_port = int(self.tcp_srv.getsockname()[1])
        self.udp_sources: list[int] = []
        self.udp_received = 0
        self.tcp_echoed = 0

    def run(self) -> None:
        for _ in range(UDP_FLOWS):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("127.0.0.1", 0))
            self.udp_sources.append(int(tx.getsockname()[1]))
            for i in range(UDP_PER_FLOW):
                tx.sendto(i.to_bytes(4, "big") + b"u" * (UDP_SIZE - 4), ("127.0.0.1", self.udp_port))
                if i % 100 == 99:
                    time.sleep(0.002)
            tx.close()
        self.udp_rx.settimeout(2.0)
        while self.udp_received < UDP_FLOWS * UDP_PER_FLOW:
            self.udp_rx.recv(2048)
            self.udp_received += 1
        cli = socket.create_connection(("127.0.0.1", self.tcp_port))
        srv, _ = self.tcp_srv.accept()
        cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(TCP_MESSAGES):
            msg = f"POST /telemetry/{i} HTTP/1.1\r\nHost: collector.example\r\n\r\n".encode()
            cli.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += srv.recv(65536)
            srv.sendall(b"ok")
            assert cli.recv(16) == b"ok"
            self.tcp_echoed += 1
        cli.close()
        srv.recv(16)  # the FIN
        srv.close()
        self.tcp_srv.close()
        self.udp_rx.close()

    @property
    def bpf(self) -> str:
        return f"(udp and port {self.udp_port}) or (tcp and port {self.tcp_port})"


def _tshark_count(path: Path) -> int | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        return None
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=60, check=True)
    return len(out.stdout.split())


def _tshark_tcp_frames(path: Path, port: int) -> int | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        return None
    out = subprocess.run(
        [tshark, "-r", str(path), "-Y", f"tcp.port == {port}", "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return len(out.stdout.split())


@needs_sniffer
@pytest.mark.parametrize("mode", ["ring", "recv"])
def test_live_capture_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setattr(live, "USE_RING", mode == "ring")
    traffic = _Traffic()
    stop = threading.Event()
    progress: list[LiveStats] = []
    result: dict[str, LiveStats] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result["stats"] = capture("lo", tmp_path, duration=15.0, bpf=traffic.bpf, stop=stop, on_progress=progress.append)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    _wait_capturing(tmp_path, lambda: None if t.is_alive() else "exited")
    try:
        traffic.run()
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(20)
    assert not errors, errors
    stats = result["stats"]
    assert stats.stopped_by == "stop"
    assert stats.elapsed < 14
    assert progress and progress[-1] is stats
    assert stats.mode == mode
    assert stats.flow_updates_skipped == 0 and stats.ring_freezes == 0
    if mode == "ring":
        assert stats.rcvbuf == live.DEFAULT_RCVBUF  # the ring, as asked

    path = tmp_path / CAPTURE_FILE
    assert stats.path == path and path.stat().st_size > 0
    assert stats.linktype == LINKTYPE_ETHERNET
    assert stats.kernel_drops == 0
    assert stats.kernel_packets == stats.frames  # loopback: each frame once (the outgoing copy is filtered in the kernel)
    assert stats.decode_skips == {}

    # the file: every frame, in order, with sane timestamps; loopback frames carry zero MACs
    rs = ReadStats(path=str(path))
    frames = list(iter_frames(path, rs))
    assert rs.format == "pcapng" and rs.truncated == 0
    assert len(frames) == stats.frames
    assert sum(len(f.data) for f in frames) == stats.bytes
    assert all(f.linktype == LINKTYPE_ETHERNET and f.data[:12] == bytes(12) for f in frames)
    ts = [f.ts for f in frames]
    assert ts == sorted(ts) and stats.started - 1 < ts[0] <= ts[-1] < stats.started + stats.elapsed + 1
    tshark_n = _tshark_count(path)
    if tshark_n is not None:
        assert tshark_n == len(frames)

    # what was sent: three UDP flows of UDP_PER_FLOW datagrams each, one TCP connection
    udp_n = UDP_FLOWS * UDP_PER_FLOW
    assert traffic.udp_received == udp_n and traffic.tcp_echoed == TCP_MESSAGES
    tcp_frames = len(frames) - udp_n
    tshark_tcp = _tshark_tcp_frames(path, traffic.tcp_port)
    if tshark_tcp is not None:
        assert tshark_tcp == tcp_frames
    assert tcp_frames >= 2 * TCP_MESSAGES + 5  # handshake, each message and its reply, the close
    assert stats.flows_done == UDP_FLOWS + 1 and stats.flows_live == 0
    assert stats.flow_bytes_done == sum(len(f.data) - 14 for f in frames)

    # the product's analysis of the file agrees, flow by flow
    res = analyze([path], AnalyzeOptions())
    assert res.session["counts"]["packets"] == stats.frames
    assert res.session["counts"]["flows"] == UDP_FLOWS + 1
    udp = sorted((r for r in res.rows if r["transport"] == "udp"), key=lambda r: r["local_port"])
    tcp = [r for r in res.rows if r["transport"] == "tcp"]
    assert len(udp) == UDP_FLOWS and len(tcp) == 1
    for r in udp:
        assert {r["local_port"], r["remote_port"]} & {traffic.udp_port}
        assert r["packets_out"] + r["packets_in"] == UDP_PER_FLOW
        assert r["bytes_out"] + r["bytes_in"] == UDP_PER_FLOW * (UDP_SIZE + 28)
    assert sorted(r["local_port"] if r["remote_port"] == traffic.udp_port else r["remote_port"] for r in udp) == sorted(traffic.udp_sources)
    assert tcp[0]["packets_out"] + tcp[0]["packets_in"] == tcp_frames
    assert traffic.tcp_port in (tcp[0]["local_port"], tcp[0]["remote_port"])


@needs_sniffer
def test_ring_behind_skips_flow_updates_but_writes_every_frame(tmp_path: Path) -> None:
    """While the loop is held up, the kernel fills several ring blocks; the backlog is written in full, the flow table skips it."""
    port = _free_port(socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", port))
    held = threading.Event()
    sent = threading.Event()
    result: dict[str, LiveStats] = {}
    errors: list[BaseException] = []

    def progress(s: LiveStats) -> None:
        if not held.is_set():
            held.set()
            sent.wait(10)  # the loop stands still while the datagrams arrive

    def run() -> None:
        try:
            # 4 blocks of 1 MiB: behind as soon as the block after the current one is ready too
            result["stats"] = capture("lo", tmp_path, duration=20.0, bpf=f"udp and dst port {port}", stop=stop, on_progress=progress, rcvbuf=4 << 20)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    stop = threading.Event()
    t = threading.Thread(target=run)
    t.start()
    try:
        assert held.wait(10)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for burst in range(4):  # each burst lands in its own block: the kernel hands a block over after RING_TIMEOUT_MS
            for i in range(50):
                tx.sendto(bytes([burst, i]) + bytes(98), ("127.0.0.1", port))
            time.sleep(3 * live.RING_TIMEOUT_MS / 1000)
        tx.close()
        sent.set()
        time.sleep(0.5)
    finally:
        sent.set()
        stop.set()
        t.join(20)
        rx.close()
    assert not errors, errors
    stats = result["stats"]
    assert stats.mode == "ring" and stats.rcvbuf == 4 << 20
    assert stats.frames == 200 and stats.kernel_packets == 200 and stats.kernel_drops == 0
    assert 0 < stats.flow_updates_skipped < 200
    assert stats.flow_bytes_done == (200 - stats.flow_updates_skipped) * 128  # only what the flow table saw
    rs = ReadStats(path=str(stats.path))
    frames = list(iter_frames(stats.path, rs))
    assert len(frames) == 200 and rs.truncated == 0
    assert [f.data[42:44] for f in frames] == [bytes([b, i]) for b in range(4) for i in range(50)]  # every frame, in order
    res = analyze([stats.path], AnalyzeOptions())  # the authoritative count: the file
    assert res.session["counts"]["packets"] == 200


@needs_sniffer
def test_live_capture_duration_and_no_traffic(tmp_path: Path) -> None:
    port = _free_port(socket.SOCK_DGRAM)
    t0 = time.monotonic()
    stats = capture("lo", tmp_path, duration=0.6, bpf=f"udp and port {port}")
    took = time.monotonic() - t0
    assert stats.stopped_by == "duration"
    assert 0.55 <= took < 3
    assert stats.frames == 0 and stats.flows_done == 0
    rs = ReadStats(path=str(stats.path))
    assert list(iter_frames(stats.path, rs)) == [] and rs.truncated == 0
    if shutil.which("tshark"):
        assert _tshark_count(stats.path) == 0


@needs_sniffer
def test_live_capture_bad_interface_and_filter(tmp_path: Path) -> None:
    with pytest.raises(CaptureSetupError, match="no such network interface"):
        capture("egressaudit-nope0", tmp_path, duration=0.1)
    with pytest.raises(CaptureSetupError, match="filter"):
        capture("lo", tmp_path, duration=0.1, bpf="udp and and port")


def test_pcapng_writer_round_trip(tmp_path: Path) -> None:
    """The writer alone (no privileges): timestamps, lengths, padding, the statistics block."""
    frames = [(bytes(12) + b"\x08\x00" + bytes(range(n % 256)) * 1, 1_700_000_000_123_456 + i, n + 14) for i, n in enumerate((1, 2, 3, 4, 61))]
    buf = io.BytesIO()
    w = PcapNgWriter(buf, LINKTYPE_ETHERNET, "lo")
    for data, ts_us, _ in frames:
        w.write(data, ts_us, len(data) + 10)  # wirelen larger than caplen: a snapped frame
    w.write_stats(1_700_000_000_000_000, 1_700_000_001_000_000, 5, 0)
    path = tmp_path / "w.pcapng"
    path.write_bytes(buf.getvalue())
    rs = ReadStats(path=str(path))
    got = list(iter_frames(path, rs))
    assert [f.data for f in got] == [f[0] for f in frames]
    assert [round(f.ts * 1e6) for f in got] == [f[1] for f in frames]
    assert [f.wirelen for f in got] == [len(f[0]) + 10 for f in frames]
    assert rs.snapped == len(frames) and rs.truncated == 0
    assert rs.interfaces == [{"linktype": LINKTYPE_ETHERNET, "snaplen": 262144, "name": "lo"}]
    if shutil.which("tshark"):
        assert _tshark_count(path) == len(frames)


class _FullDisk(io.BytesIO):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    name = "/full/capture.pcapng"

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, b: Any) -> int:  # type: ignore[override]
        if self.tell() + len(bytes(b)) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(b)


def test_pcapng_writer_turns_a_failed_write_into_capture_write_error() -> None:
    """Every way the writer writes (one frame, a ring block's frames, the statistics block, a flush) fails the same way."""
    f = _FullDisk(300)
    w = PcapNgWriter(f, LINKTYPE_ETHERNET, "lo")
    frame = bytes(12) + b"\x08\x00" + bytes(100)
    w.write(frame, 1, len(frame))
    with pytest.raises(CaptureWriteError) as raised:
        w.write(frame, 2, len(frame))
    e = raised.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename == "/full/capture.pcapng" and w.failed is not None
    assert w.frames == 1
    for call in (lambda: w.write_blocks(w.epb(frame, 3, len(frame))), lambda: w.write_stats(0, 1, 2, 0)):
        with pytest.raises(CaptureWriteError):
            call()


@needs_sniffer
def test_capture_command_captures_then_analyses(tmp_path: Path) -> None:
    """`egressaudit capture` as a user runs it: a real process, real traffic, a session folder with the kernel's counts."""
    import json
    import sys

    out = tmp_path / "live"
    port = _free_port(socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egressaudit",
            "capture",
            "--iface",
            "lo",
            "--duration",
            "4",
            "--filter",
            f"udp port {port}",
            "--out",
            str(out),
            "--quiet",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_capturing(out, proc.poll)
    _send_udp(port, 500)
    _, err = proc.communicate(timeout=60)
    rx.close()
    assert proc.returncode == 0, err
    session = json.loads((out / "session.json").read_text())
    assert session["capture"]["frames"] == 500 and session["capture"]["kernel_drops"] == 0
    assert session["counts"]["packets"] == 500
    assert (out / "flows.parquet").is_file() and (out / "capture.pcapng").is_file()


def _send_udp(port: int, n: int) -> None:
    """``n`` datagrams of 100 bytes to 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for _ in range(n):
            tx.sendto(b"\xf0" + bytes(99), ("127.0.0.1", port))


def _wait_capturing(out: Path, exited: Callable[[], object], timeout: float = 60) -> None:
    """Until the capture file exists: the socket is open and the signal handlers are installed by then."""
    deadline = time.monotonic() + timeout
    while not (out / CAPTURE_FILE).exists():
        assert exited() is None, "egressaudit capture exited before it started capturing"
        assert time.monotonic() < deadline, "egressaudit capture did not start"
        time.sleep(0.05)


@needs_sniffer
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_capture_command_stopped_by_a_signal_keeps_everything(tmp_path: Path, sig: int) -> None:
    """`egressaudit capture` without --duration, stopped by `kill` (SIGTERM) or a closed terminal (SIGHUP): it stops
    capturing, then analyses and writes the session as after Ctrl-C, with every packet."""
    import json
    import sys

    out = tmp_path / "live"
    port = _free_port(socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    cmd = [sys.executable, "-m", "egressaudit", "capture", "--iface", "lo", "--filter", f"udp port {port}", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)  # noqa: PLW1509
    try:
        _wait_capturing(out, proc.poll)
        _send_udp(port, 300)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        rx.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    session = json.loads((out / "session.json").read_text())
    assert session["capture"]["stopped_by"] == "signal"
    assert session["capture"]["frames"] == 300 and session["counts"]["packets"] == 300


@needs_sniffer
def test_capture_command_in_a_terminal_that_hangs_up_still_writes_its_session(tmp_path: Path) -> None:
    """`egressaudit capture` with its progress line in a real terminal (a pty it controls), which then goes away (an
    ssh connection drops): it gets SIGHUP and every write to the terminal fails from then on, yet it must stop, analyse
    and write the session, as after Ctrl-C."""
    import json
    import os
    import pty
    import sys

    out = tmp_path / "live"
    port = _free_port(socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    cmd = [sys.executable, "-m", "egressaudit", "capture", "--iface", "lo", "--filter", f"udp port {port}", "--out", str(out)]
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own, the pty its controlling terminal
        try:
            as_in_a_terminal()
            os.execv(sys.executable, cmd)
        finally:
            os._exit(127)
    seen = bytearray()
    hang_up = threading.Event()
    reader = threading.Thread(target=_drain, args=(master, seen, hang_up), daemon=True)  # so that its writes never block
    reader.start()
    status: int | None = None

    def exited() -> int | None:
        nonlocal status
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            status = st if done else None
        return status

    try:
        _wait_capturing(out, exited)
        _send_udp(port, 300)
        deadline = time.monotonic() + 30
        while b"300 packets" not in seen:  # its progress line, on the terminal
            assert time.monotonic() < deadline, bytes(seen[-500:])
            time.sleep(0.05)
        hang_up.set()  # the terminal goes away (the reader closes its end): SIGHUP to its session
        reader.join(10)
        deadline = time.monotonic() + 60
        while exited() is None:
            assert time.monotonic() < deadline, "egressaudit capture still running 60 s after its terminal hung up"
            time.sleep(0.05)
    finally:
        rx.close()
        if exited() is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0, (status, bytes(seen[-2000:]))
    session = json.loads((out / "session.json").read_text())
    assert session["capture"]["stopped_by"] == "signal"
    assert session["capture"]["frames"] == 300 and session["counts"]["packets"] == 300
    assert (out / "flows.parquet").is_file()


def _drain(fd: int, into: bytearray, hang_up: threading.Event) -> None:
    """Read the pty's output into ``into`` until ``hang_up`` is set, then close it."""
    import os
    import select

    try:
        while not hang_up.is_set():
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the other end is gone
                    return
                if not data:
                    return
                into += data
    finally:
        os.close(fd)


def test_capture_command_on_a_missing_interface_is_one_line() -> None:
    from typer.testing import CliRunner

    from egressaudit.cli import app

    r = CliRunner().invoke(app, ["capture", "--iface", "no-such-if0", "--duration", "1", "--out", "/tmp/egressaudit-no-such-if"])
    assert r.exit_code in (2, 3) and "no-such-if0" in r.output and "Traceback" not in r.output


@needs_sniffer
@pytest.mark.parametrize("kw", [{"rotate_bytes": 40_000}, {"rotate_seconds": 0.3}], ids=["size", "time"])
def test_rotation_by_size_and_time(tmp_path: Path, kw: dict[str, Any]) -> None:
    """--rotate-size / --rotate-time: the capture moves on to capture-00001.pcapng, ... ; every file is a whole pcapng
    (tshark reads each on its own), no frame is lost or doubled across them, and their analysis together gives the
    flows of the whole capture."""
    from egressaudit.capture.live import capture_files

    out = tmp_path / "cap"
    traffic = _Traffic()
    stop = threading.Event()
    result: dict[str, LiveStats] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result["stats"] = capture("lo", out, duration=20.0, bpf=traffic.bpf, stop=stop, **kw)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    _wait_capturing(out, lambda: None if t.is_alive() else "exited")
    try:
        traffic.run()
        time.sleep(0.5)
        _udp_burst(traffic.udp_port, 200)  # after a pause: a block of its own, in a file of its own
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(20)
    assert not errors, errors
    stats = result["stats"]
    files = capture_files(out)
    # (the ring hands over whole blocks: a file ends at the first block boundary past its limit)
    assert len(files) >= 3 and files == stats.files, (kw, files)
    assert files[0].name == CAPTURE_FILE and files[1].name == "capture-00001.pcapng"
    counts = [_tshark_count(f) for f in files]
    if counts[0] is not None:
        assert sum(c or 0 for c in counts) == stats.frames
    total = 0
    for f in files:
        rs = ReadStats(str(f))
        total += sum(1 for _ in iter_frames(f, rs))
        assert rs.truncated == 0 and rs.corrupt == 0, f
    assert total == stats.frames and stats.kernel_drops == 0
    whole = analyze(files, AnalyzeOptions(), None)
    udp = [r for r in whole.table.to_pylist() if r["transport"] == "udp"]
    assert len(udp) == UDP_FLOWS + 1 and sorted(r["packets_out"] + r["packets_in"] for r in udp) == [200] + [UDP_PER_FLOW] * UDP_FLOWS


def _udp_burst(port: int, n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i in range(n):
            tx.sendto(i.to_bytes(4, "big") + b"b" * 200, ("127.0.0.1", port))
