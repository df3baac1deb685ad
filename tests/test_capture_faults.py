"""Live capture under faults: killed outright, a disk that fills up, a folder it cannot write to, an interface that goes away.

Real ``egressaudit capture`` processes on the loopback interface with real UDP
traffic to 127.0.0.1 (numbered datagrams, so that what reached the file can be
told from what was lost), real small filesystems and read-only mounts
(tests/support/smallfs.py), the veth of a namespace made by the test
(tests/support/netns.py).  Needs root (a packet socket, mounts); each test is
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from egressaudit.capture import live
from egressaudit.capture.live import CAPTURE_FILE, CaptureWriteError, LiveStats, capture
from egressaudit.capture.reader import ReadStats, iter_frames
from tests.support.netns import Netns, netns_unavailable
from tests.support.smallfs import mount_unavailable, read_only_folder, small_filesystem
from tests.test_live_capture import _can_sniff, _free_port, _wait_capturing

needs_sniffer = pytest.mark.skipif(_can_sniff() is not None, reason=_can_sniff() or "")
needs_mount = pytest.mark.skipif(mount_unavailable() is not None, reason=str(mount_unavailable()))
needs_netns = pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
PAYLOAD = 100  # bytes per datagram: 4 of sequence number, then padding


class Sender(threading.Thread):
    """Numbered UDP datagrams to 127.0.0.1:``port`` at ``rate`` per second until ``stop`` is set (at most ``limit``).

    ``times[i]`` is when datagram ``i`` was sent (monotonic clock); ``reached`` is set once ``at`` datagrams are out.
    """

    def __init__(self, port: int, rate: float, at: int, limit: int = 200_000) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.at, self.limit = port, rate, at, limit
        self.times: list[float] = []
        self.reached = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            t0 = time.monotonic()
            for i in range(self.limit):
                if self.stop.is_set():
                    return
                due = t0 + i / self.rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)  # pacing the traffic (not waiting for a result)
                tx.sendto(i.to_bytes(4, "big") + bytes(PAYLOAD - 4), ("127.0.0.1", self.port))
                self.times.append(time.monotonic())
                if i + 1 == self.at:
                    self.reached.set()
            self.reached.set()


def egressaudit(*args: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HOME": str(home), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "egressaudit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def numbers_in(path: Path, port: int) -> tuple[list[int], ReadStats]:
    """The sequence numbers of the datagrams to ``port`` in a capture file, in file order."""
    rs = ReadStats(path=str(path))
    seen = []
    for f in iter_frames(path, rs):
        d = f.data  # Ethernet (loopback: zero MACs) / IPv4 / UDP
        if len(d) >= 46 and d[12:14] == b"\x08\x00" and d[23] == 17 and int.from_bytes(d[36:38], "big") == port:
            seen.append(int.from_bytes(d[42:46], "big"))
    return seen, rs


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


@needs_sniffer
def test_sigkill_loses_at_most_about_a_second_of_packets(tmp_path: Path) -> None:
    """SIGKILL of `egressaudit capture` under continuous traffic: the file holds every datagram up to at most about a
    second before the kill (it is flushed every FLUSH_EVERY s), and `egressaudit analyze` reads it.

    At 500 datagrams/s of 142 bytes the 1 MiB write buffer alone would hold 14 s: before the periodic flush a capture
    killed after 4 s had written nothing of them.
    """
    port = _free_port(socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    out = tmp_path / "live"
    proc = egressaudit("capture", "--iface", "lo", "--filter", f"udp and dst port {port}", "--out", str(out), "--quiet", home=tmp_path)
    sender = Sender(port, rate=500, at=2000)
    try:
        _wait_capturing(out, proc.poll)
        sender.start()
        assert sender.reached.wait(60), "the sender did not get 2,000 datagrams out"
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(30)
        sent_before_kill = sum(1 for t in sender.times if t <= killed_at)  # (the sender goes on: traffic never paused)
        last_second = sum(1 for t in sender.times if killed_at - 1.0 < t <= killed_at)
    finally:
        sender.stop.set()
        sender.join(10)
        rx.close()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    seen, rs = numbers_in(out / CAPTURE_FILE, port)
    assert seen == list(range(len(seen))), "the datagrams that reached the file are in order, with no gap"
    assert rs.truncated <= 1 and rs.corrupt == 0  # at most the block the kill cut short
    lost = sent_before_kill - len(seen)
    assert 0 <= lost <= last_second, f"{lost} datagrams lost; the sender sent {last_second} in the second before the kill"

    r = subprocess.run([sys.executable, "-m", "egressaudit", "analyze", str(out / CAPTURE_FILE), "--out", str(tmp_path / "after"), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    counts = json.loads((tmp_path / "after" / "session.json").read_text())["counts"]
    assert counts["packets"] == len(seen)  # (the filter let only the numbered datagrams in)
    assert counts["skipped"].get("truncated_record", 0) == rs.truncated


@needs_sniffer
def test_the_file_reaches_disk_while_capturing(tmp_path: Path) -> None:
    """A few hundred small frames (far less than the write buffer) are on disk within about FLUSH_EVERY s, capture still running."""
    port = _free_port(socket.SOCK_DGRAM)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            capture("lo", tmp_path, duration=60.0, bpf=f"udp and dst port {port}", stop=stop)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        _wait_capturing(tmp_path, lambda: None if t.is_alive() else "exited")
        sender = Sender(port, rate=1000, at=300, limit=300)
        sender.start()
        sender.join(30)
        deadline = time.monotonic() + 20  # (a bound for a hung test, not a timing assertion)
        while len(numbers_in(tmp_path / CAPTURE_FILE, port)[0]) < 300:
            assert time.monotonic() < deadline, "the frames did not reach the file while the capture ran"
            assert t.is_alive(), errors
            time.sleep(0.05)
        assert t.is_alive()  # still capturing: it was the periodic flush, not the end
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors


@needs_sniffer
@needs_mount
@pytest.mark.parametrize("mode", ["ring", "recv"])
def test_full_disk_stops_the_capture_and_keeps_what_reached_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """capture() on a filesystem that fills up: CaptureWriteError (an OSError) with the counters, the file readable."""
    monkeypatch.setattr(live, "USE_RING", mode == "ring")
    port = _free_port(socket.SOCK_DGRAM)
    with small_filesystem(tmp_path / "fs", 192 << 10) as fs:
        sender = Sender(port, rate=20_000, at=1, limit=50_000)
        result: list[BaseException] = []
        t = threading.Thread(target=lambda: _capture_into(fs, port, result))
        t.start()
        try:
            _wait_capturing(fs, lambda: None if t.is_alive() else "exited")
            sender.start()
            t.join(60)  # it stops by itself when the disk is full
        finally:
            sender.stop.set()
            sender.join(10)
        assert not t.is_alive() and len(result) == 1
        e = result[0]
        assert isinstance(e, CaptureWriteError) and isinstance(e, OSError), repr(e)
        assert e.errno == 28 and e.strerror and "No space left on device" in e.strerror and "\n" not in e.strerror
        assert isinstance(e.stats, LiveStats) and e.stats.stopped_by == "write_error" and e.stats.frames > 0
        seen, rs = numbers_in(fs / CAPTURE_FILE, port)
        assert seen == list(range(len(seen))) and len(seen) > 100  # what reached the disk is readable, in order
        assert rs.corrupt == 0 and rs.truncated <= 1
        assert len(seen) <= e.stats.frames


def _capture_into(folder: Path, port: int, result: list[BaseException]) -> None:
    try:
        capture("lo", folder, duration=60.0, bpf=f"udp and dst port {port}")
    except BaseException as e:  # handed to the test thread
        result.append(e)
    else:
        result.append(AssertionError("the capture did not stop on a full disk"))


@needs_sniffer
@needs_mount
def test_capture_command_onto_a_full_disk_exits_4_and_its_file_is_readable(tmp_path: Path) -> None:
    port = _free_port(socket.SOCK_DGRAM)
    with small_filesystem(tmp_path / "fs", 256 << 10) as fs:
        out = fs / "live"
        proc = egressaudit("capture", "--iface", "lo", "--filter", f"udp and dst port {port}", "--out", str(out), "--quiet", home=tmp_path)
        sender = Sender(port, rate=20_000, at=1, limit=100_000)
        try:
            _wait_capturing(out, proc.poll)
            sender.start()
            _, err = proc.communicate(timeout=120)  # it stops by itself when the disk is full
        finally:
            sender.stop.set()
            sender.join(10)
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 4, err
        assert "No space left on device" in one_line(err)
        r = subprocess.run([sys.executable, "-m", "egressaudit", "analyze", str(out / CAPTURE_FILE), "--out", str(tmp_path / "after"), "--quiet"],
                           capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=300)  # fmt: skip
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        seen, _ = numbers_in(out / CAPTURE_FILE, port)
    counts = json.loads((tmp_path / "after" / "session.json").read_text())["counts"]
    assert counts["packets"] >= len(seen) > 100 and seen == list(range(len(seen)))


@needs_sniffer
@needs_mount
def test_read_only_folder_exits_4_at_start_and_leaves_nothing(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        for out in (ro, ro / "session"):
            proc = egressaudit("capture", "--iface", "lo", "--duration", "30", "--out", str(out), "--quiet", home=tmp_path)
            _, err = proc.communicate(timeout=60)  # at start: long before the 30 s
            assert proc.returncode == 4, err
            assert str(out) in one_line(err)
            assert list(ro.iterdir()) == []
        # capture() itself: the file cannot be created, the socket is closed, nothing is left
        with pytest.raises(OSError) as raised:
            capture("lo", ro, duration=30.0)
        assert not isinstance(raised.value, CaptureWriteError)
        assert list(ro.iterdir()) == []


@needs_sniffer
@needs_netns
@pytest.mark.parametrize("mode", ["ring", "recv"])
def test_an_interface_that_goes_away_stops_the_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The veth of a test namespace deleted while capturing on it: the capture stops at once (it spun in ring mode until
    its duration ended; in recv mode it raised ENETDOWN, which the command reported as a write error), says why in
    ``error``, and the file it wrote is a valid capture."""
    monkeypatch.setattr(live, "USE_RING", mode == "ring")
    ns = Netns.create()
    result: list[LiveStats | BaseException] = []

    def run() -> None:
        try:
            result.append(capture(ns.host_if, tmp_path, duration=120.0))
        except BaseException as e:  # handed to the test thread
            result.append(e)

    t = threading.Thread(target=run)
    try:
        t.start()
        _wait_capturing(tmp_path, lambda: None if t.is_alive() else "exited")
        subprocess.run(["ip", "link", "del", ns.host_if], check=True, capture_output=True, timeout=20)
        t.join(30)  # (a bound for a hung test: the duration is 120 s)
        assert not t.is_alive(), "the capture went on after its interface was removed"
    finally:
        ns.close()
        t.join(120)
    (stats,) = result
    assert isinstance(stats, LiveStats), repr(stats)
    assert stats.stopped_by == "interface_error" and stats.error.startswith(f"{ns.host_if}: ") and "\n" not in stats.error
    frames, rs = numbers_in(tmp_path / CAPTURE_FILE, 0)
    assert frames == [] and rs.truncated == rs.corrupt == 0 and rs.format == "pcapng"
