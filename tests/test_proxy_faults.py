"""Faults of the live proxy, through the real `egressaudit proxy`: hostile headers, killed processes, full and read-only disks,
huge bodies.  Every exchange the proxy answered must end as a row or as a counted loss, the folder must stay readable,
and the command must exit with a documented code (0, 4, 6) and one line, never a traceback.

Clients are real curl processes on loopback; the upstream is the local HTTPS sink (tests/support/sink.py), or a local
HTTP server that discards what it reads (the large uploads), so nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from egressaudit.session import recording_pid
from egressaudit.session.store import part_files, read_rows
from tests.support.proxy import ROOT, ProxyCommand
from tests.support.sink import Sink
from tests.support.smallfs import fill, mount_unavailable, read_only_folder, small_filesystem

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl not installed")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path)
    yield s
    s.close()


@pytest.fixture
def proxies() -> Iterator[list[ProxyCommand]]:
    """Proxy commands a test started: whatever is left of them is killed at the end."""
    started: list[ProxyCommand] = []
    yield started
    for p in started:
        p.kill_all()


def start(
    proxies: list[ProxyCommand], tmp: Path, out: Path, sink_port: int, *extra: str, name: str = "proxy", env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
) -> ProxyCommand:  # fmt: skip
    p = ProxyCommand(tmp, out, sink_port, *extra, name=name, env=env, options=options)
    proxies.append(p)
    return p.wait_listening()


def curl_batch(proxy: ProxyCommand, requests: list[list[bytes | str]], timeout: float = 300) -> list[int]:
    """One curl process sending ``requests`` (each: curl options then the URL) one after the other through ``proxy``,
    reusing its connections; the status code of each (0: no answer)."""
    assert CURL
    common: list[bytes | str] = ["-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "/dev/null", "-w", "%{http_code}\\n"]
    cmd: list[bytes | str] = [CURL]
    for i, r in enumerate(requests):
        if i:
            cmd.append("--next")
        cmd += [*common, *r]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout)
    codes = [int(x) for x in res.stdout.split()]
    return codes + [0] * (len(requests) - len(codes))


def post(path: str, body: str = '{"event": "qos", "n": 1}', ctype: bytes | str = "application/json") -> list[bytes | str]:
    header: bytes | str = b"content-type: " + ctype if isinstance(ctype, bytes) else f"content-type: {ctype}"
    return ["-H", header, "--data-binary", body, f"https://api.segment.io{path}"]


def http_rows(out: Path) -> int:
    try:
        return read_rows(out, "http").num_rows
    except (OSError, ValueError):
        return 0


def wait_for(what: str, cond: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def recording(out: Path) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads((out / "session.json").read_text())["http"]["recording"]
    return rec


def no_traceback(proxy: ProxyCommand) -> None:
    err = proxy.stderr()
    assert "Traceback" not in err, err[-4000:]


def gone(p: Any) -> bool:
    """A process that has ended (an orphan's zombie waits for whoever adopted it to reap it)."""
    import psutil

    try:
        return bool(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def egressaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "egressaudit", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


# -- hostile content ----------------------------------------------------------------------------------------------------


def test_a_non_utf8_content_type_costs_no_row(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """`Content-Type: application/\\xffjson` killed the recorder (c21c1a1: 0 of 62 rows, no session.json, exit 0)."""
    out = tmp_path / "audit"
    proxy = start(proxies, tmp_path, out, sink.port)
    requests = [post(f"/v1/batch/{i}") for i in range(30)]
    requests.append(post("/v1/hostile", ctype=b"application/\xffjson"))
    requests += [post(f"/v1/batch/{i}") for i in range(30, 61)]
    codes = curl_batch(proxy, requests)
    assert codes == [200] * 62
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.wait() == 0, proxy.stderr()[-3000:]
    no_traceback(proxy)
    rows = pq.read_table(out / "http.parquet").to_pylist()
    assert len(rows) == 62
    (hostile,) = [r for r in rows if r["path"] == "/v1/hostile"]
    assert hostile["content_type_out"] is not None and "\\xff" in hostile["content_type_out"]
    rec = recording(out)
    assert (rec["handed_over"], rec["recorded"], rec["lost"], rec["complete"]) == (62, 62, 0, True)


# -- a killed recorder process ------------------------------------------------------------------------------------------


class Traffic:
    """``clients`` curl processes sending POSTs through the proxy without pausing, until stopped; answered requests are
    counted (each curl process prints one status code per request)."""

    def __init__(self, proxy: ProxyCommand, clients: int = 4, per_client: int = 2000) -> None:
        assert CURL
        self.procs: list[subprocess.Popen[bytes]] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._threads = []
        for c in range(clients):
            cmd: list[str] = [CURL]
            for i in range(per_client):
                if i:
                    cmd.append("--next")
                cmd += ["-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "/dev/null", "-w", "%{http_code}\\n"]
                cmd += ["-H", "content-type: application/json", "--data", f'{{"c": {c}, "n": {i}}}', f"https://api.segment.io/v1/t/{c}/{i}"]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            t = threading.Thread(target=self._count, args=(p,), daemon=True)
            t.start()
            self._threads.append(t)

    def _count(self, p: subprocess.Popen[bytes]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.strip() == b"200":
                with self._lock:
                    self.answered += 1

    def stop(self) -> int:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)
        for t in self._threads:
            t.join(30)
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()
        return self.answered


def new_recorder(proxy: ProxyCommand, old: int) -> bool:
    import psutil

    try:
        return bool(proxy.recorder().pid != old)
    except (AssertionError, psutil.Error):  # (between the two: none, or one still starting)
        return False


@pytest.mark.parametrize("spool", [True, False], ids=["spool", "no-spool"])
def test_a_killed_recorder_is_reported_replaced_and_the_proxy_still_stops_promptly(
    tmp_path: Path, sink: Sink, proxies: list[ProxyCommand], spool: bool
) -> None:
    """SIGKILL of the recorder process under continuous traffic (c21c1a1: 0 of 500 rows, then SIGTERM hung).  The proxy
    says so at once, starts a successor that records what follows; with the spool (the default) the successor also
    records what the killed one held (exit 0), without it that is lost, counted in session.json (exit 6)."""
    out = tmp_path / "audit"
    extra = ["--set", "egressaudit_max_lag=600"]  # under this traffic the recorder holds what it receives
    if not spool:
        extra += ["--set", "egressaudit_spool=false"]
    proxy = start(proxies, tmp_path, out, sink.port, *extra)
    traffic = Traffic(proxy)
    try:
        # (progress as the sink sees it: curl's own output reaches us in blocks)
        wait_for("200 forwarded requests", lambda: len(sink.received) >= 200)
        first = proxy.recorder()
        first.kill()
        first.wait(10)
        killed_at = len(sink.received)
        wait_for("the stderr line", lambda: any("the recorder process died (killed by SIGKILL)" in x for x in proxy.lines()), timeout=10)
        told_at = len(sink.received)
        wait_for("a new recorder", lambda: new_recorder(proxy, first.pid), timeout=30)
        wait_for("200 more forwarded requests", lambda: len(sink.received) >= told_at + 200)
    finally:
        answered = traffic.stop()
    assert told_at - killed_at < 200  # said while the traffic went on, not at the end
    proxy.proc.send_signal(signal.SIGTERM)
    code = proxy.wait(60)  # (c21c1a1: hung in Queue._finalize_join)
    no_traceback(proxy)
    rec = recording(out)
    rows = pq.read_table(out / "http.parquet").num_rows
    assert rec["recorder_restarts"] == 1 and rec["recorder_deaths"] == ["killed by SIGKILL"]
    assert rec["handed_over"] >= answered and rows == rec["recorded"]
    if spool:
        assert code == 0, proxy.stderr()[-3000:]
        assert rec["lost"] == 0 and rows == rec["handed_over"]
    else:
        assert code == 6, proxy.stderr()[-3000:]
        assert rec["lost"] >= 1 and rows + rec["lost"] == rec["handed_over"]
        assert rec["lost_by_reason"] == {"held in memory by a recorder process that died": rec["lost"]}
        assert any(f"recording incomplete: {rec['lost']:,} of {rec['handed_over']:,} exchanges lost" in x for x in proxy.lines())
    assert not (out / ".spool").exists()


# -- killed proxy processes ---------------------------------------------------------------------------------------------


def test_a_killed_proxy_command_leaves_nothing_running_and_a_finished_session(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """SIGKILL of `egressaudit proxy` (c21c1a1: mitmdump and the recorder went on as orphans, still listening): mitmdump
    is told by the kernel (PR_SET_PDEATHSIG) and shuts down cleanly, so the session is compacted and complete."""
    import psutil

    out = tmp_path / "audit"
    proxy = start(proxies, tmp_path, out, sink.port)
    assert curl_batch(proxy, [post(f"/v1/batch/{i}") for i in range(20)]) == [200] * 20
    family = proxy.family()[1:]
    assert len(family) >= 2  # mitmdump and its recorder
    proxy.proc.kill()
    proxy.wait(10)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    assert pq.read_table(out / "http.parquet").num_rows == 20 and not part_files(out, "http")
    rec = recording(out)
    assert rec["complete"] and rec["recorded"] == 20


def test_a_killed_mitmdump_exits_6_in_one_line_and_leaves_a_readable_session(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """SIGKILL of mitmdump (c21c1a1: `egressaudit proxy` exited 247): the recorder finishes the session with what it was
    handed (it says the recording is incomplete), the command exits 6 with one line naming the signal, and report,
    inventory and har read the folder."""
    out = tmp_path / "audit"
    proxy = start(proxies, tmp_path, out, sink.port)
    assert curl_batch(proxy, [post(f"/v1/batch/{i}", body=json.dumps({"email": "eve@example.org", "n": i})) for i in range(20)]) == [200] * 20
    wait_for("the rows on disk", lambda: http_rows(out) == 20)  # (handed over: a killed mitmdump loses its last ~50 ms)
    recorder = proxy.recorder()
    mitmdump = proxy.mitmdump()
    assert recording_pid(out) == mitmdump.pid  # (the recording lock names mitmdump; its recorder shares the lock)
    mitmdump.kill()
    assert proxy.wait(120) == 6
    assert recording_pid(out) is None  # released once the recorder had finished ...
    assert (out / ".recording.lock").read_text().strip() == str(recorder.pid)  # ... which named itself while it did
    no_traceback(proxy)
    lines = proxy.lines()
    assert len(lines) == 1 and "mitmdump was killed by SIGKILL" in lines[0], lines
    assert gone(recorder)  # the command waited for it to finish the session
    rec = recording(out)
    assert not rec["complete"] and "the proxy ended without closing the recorder" in rec["stopped_by"]
    assert rec["recorded"] == 20 == pq.read_table(out / "http.parquet").num_rows
    for args in (["inventory", str(out)], ["har", str(out), "--out", str(tmp_path / "s.har")], ["report", str(out)]):
        r = egressaudit(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stdout[-2000:], r.stderr[-2000:])
        # and each says what the session lost
        assert "The HTTP recording is incomplete" in r.stderr + r.stdout, (args, r.stderr[-2000:])
    assert "the proxy ended without closing the recorder" in (out / "report.html").read_text()


# -- disks that refuse --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(mount_unavailable() is not None, reason=str(mount_unavailable()))
@pytest.mark.parametrize("free", [0, 8 << 10, 56 << 10], ids=["0B", "8KB", "56KB"])
def test_a_full_disk_ends_with_exit_4_one_line_and_what_reached_disk_readable(
    tmp_path: Path, sink: Sink, proxies: list[ProxyCommand], free: int
) -> None:
    """The session folder on a filesystem with 0 B / 8 KB / 56 KB free (c21c1a1: a traceback and exit 0 with 0 rows, rows
    left uncompacted, exit 1).  At 0 B the proxy stops at start; otherwise it proxies, says once that it cannot write,
    and finishing on the disk that stays full exits 4 with what reached disk readable."""
    with small_filesystem(tmp_path / "small", 4 << 20) as fs:
        out = fs / "audit"
        out.mkdir()
        fill(fs, free)
        proxy = ProxyCommand(tmp_path, out, sink.port)
        proxies.append(proxy)
        if free == 0:
            assert proxy.wait(60) == 4
            no_traceback(proxy)
            lines = proxy.lines("egressaudit:") + [x for x in proxy.stderr().splitlines() if x.startswith("error:")]
            assert len(lines) == 1 and "No space left on device" in lines[0], proxy.stderr()
            return
        proxy.wait_listening()
        n = 60
        body = json.dumps({"events": [{"device_id": f"{i:032x}", "event": "qos", "jitter_ms": i % 7} for i in range(40)]})
        assert curl_batch(proxy, [post(f"/v1/batch/{i}", body=body) for i in range(n)]) == [200] * n
        wait_for("the disk-full line", lambda: any("cannot write" in x for x in proxy.lines()), timeout=30)
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.wait(60) == 4, proxy.stderr()[-3000:]
        no_traceback(proxy)
        said = proxy.lines()
        assert sum("cannot write" in x and "No space left on device" in x for x in said) == 1, said
        on_disk = http_rows(out)  # readable, whatever reached the disk
        assert on_disk < n
        if (out / "session.json").exists():
            rec = recording(out)
            assert not rec["complete"] and rec["unwritten_rows"] + on_disk >= n
        else:
            assert any("session.json could not be written" in x for x in said), said


@pytest.mark.skipif(mount_unavailable() is not None, reason=str(mount_unavailable()))
def test_a_read_only_folder_stops_the_proxy_at_start_with_exit_4(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        proxy = ProxyCommand(tmp_path, ro / "audit", sink.port)
        proxies.append(proxy)
        assert proxy.wait(60) == 4
        no_traceback(proxy)
        err = [x for x in proxy.stderr().splitlines() if x.strip()]
        assert len(err) == 1 and "Read-only file system" in err[0], err


# -- bodies that take long or are large ---------------------------------------------------------------------------------


def test_a_body_of_100k_multipart_parts_is_recorded_with_the_rest(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """A worker busy on a 100k-part multipart body (c21c1a1: killed at the 120 s close timeout, 6 of 8 exchanges lost, no
    session.json).  Closing waits while it makes progress; the parts are parsed in linear time."""
    out = tmp_path / "audit"
    proxy = start(proxies, tmp_path, out, sink.port, "--set", "egressaudit_stream_large_bodies=64m")  # (the whole body to the recorder)
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="k%d"\r\n\r\nv\r\n' % i for i in range(100_000)) + b"--b--\r\n"
    big = tmp_path / "parts.bin"
    big.write_bytes(parts)
    requests = [post(f"/v1/batch/{i}") for i in range(7)]
    requests.insert(3, ["-H", "content-type: multipart/form-data; boundary=b", "--data-binary", f"@{big}", "https://zoom.us/upload/parts"])
    assert curl_batch(proxy, requests) == [200] * 8
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.wait(600) == 0, proxy.stderr()[-3000:]
    no_traceback(proxy)
    rows = pq.read_table(out / "http.parquet").to_pylist()
    assert len(rows) == 8
    (multi,) = [r for r in rows if r["path"] == "/upload/parts"]
    assert multi["body_format"] == "multipart" and multi["body_bytes_out"] == len(parts)
    assert recording(out)["complete"]


class Discard(ThreadingHTTPServer):
    """A plain-HTTP upstream on 127.0.0.1 that reads every body in 1 MiB chunks and throws it away (the sink keeps them)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                while n:
                    got = self.rfile.read(min(n, 1 << 20))
                    if not got:
                        break
                    n -= len(got)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_PUT = do_POST

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def test_large_uploads_are_streamed_counted_and_hashed_not_buffered(tmp_path: Path, proxies: list[ProxyCommand]) -> None:
    """Two 200 MB uploads at once (c21c1a1: mitmdump grew to 1.36 GB, the recorder to 763 MB).  The proxy streams them:
    the rows say 200 MB, and what the recorder was handed (flows.mitm keeps exactly that) holds 1 MiB of each body and
    the size and hash of the whole."""
    import hashlib

    from mitmproxy import io as mio

    size = 200_000_000
    blob = tmp_path / "upload.bin"
    with open(blob, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size % len(chunk)])
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    server = Discard()
    out = tmp_path / "audit"
    proxy = ProxyCommand(tmp_path, out, 1, name="upload", redirect=False, options=["--keep-bodies"])
    proxies.append(proxy)
    proxy.wait_listening()
    try:
        assert CURL
        clients = [
            subprocess.Popen(
                [CURL, "-sS", "--proxy", proxy.url, "-o", "/dev/null", "-w", "%{http_code}", "-H", "content-type: application/octet-stream",
                 "--data-binary", f"@{blob}", f"http://127.0.0.1:{server.port}/upload/{i}"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            for i in range(2)
        ]
        assert [c.communicate(timeout=300)[0] for c in clients] == ["200", "200"]
    finally:
        server.shutdown()
        server.server_close()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.wait(120) == 0, proxy.stderr()[-3000:]
    no_traceback(proxy)
    rows = pq.read_table(out / "http.parquet").to_pylist()
    assert sorted(r["path"] for r in rows) == ["/upload/0", "/upload/1"]
    assert all(r["body_bytes_out"] == size and r["bytes_out"] > size for r in rows), rows
    with open(out / "flows.mitm", "rb") as f:
        flows = list(mio.FlowReader(f).stream())
    assert len(flows) == 2
    for fl in flows:
        assert len(fl.request.raw_content or b"") == 1 << 20  # the head only
        assert fl.metadata["egressaudit_streamed"] == {"request": {"bytes": size, "sha256": digest}}
    assert (out / "flows.mitm").stat().st_size < 8 << 20


def test_a_second_proxy_into_the_same_folder_is_refused_at_start(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """The recording lock (OUT/.recording.lock) is held by mitmdump and its recorder: a second recorder into the folder
    exits 4 at start in one line naming the first, which goes on recording."""
    out = tmp_path / "audit"
    first = start(proxies, tmp_path, out, sink.port, name="first")
    second = ProxyCommand(tmp_path, out, sink.port, name="second")
    proxies.append(second)
    assert second.wait(60) == 4
    no_traceback(second)
    lines = second.lines("error:")  # (refused by the command before mitmdump starts, whatever --force or --add say)
    assert len(lines) == 1 and "another process" in lines[0] and "is recording into this folder" in lines[0], second.stderr()
    assert curl_batch(first, [post(f"/v1/batch/{i}") for i in range(3)]) == [200] * 3
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0
    assert pq.read_table(out / "http.parquet").num_rows == 3 and recording(out)["complete"]


def test_a_spool_left_by_a_run_killed_outright_is_recorded_by_the_next_run(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """SIGKILL of the whole process group (proxy, mitmdump and recorder at once) while the recorder holds everything (a
    long max_lag, never-quiet traffic): what was handed over waits in OUT/.spool, and the next proxy into the folder
    records it, exactly once (the commits in the part files say what was on disk already)."""
    out = tmp_path / "audit"
    proxy = start(proxies, tmp_path, out, sink.port, "--set", "egressaudit_max_lag=600", name="killed")
    traffic = Traffic(proxy, clients=4, per_client=150)
    for p in traffic.procs:
        p.wait(120)
    answered = traffic.stop()
    assert answered == 600
    wait_for("the last batch spooled", lambda: spooled(out) >= 600 - 64, timeout=30)
    at_kill = spooled(out)
    os.killpg(proxy.proc.pid, signal.SIGKILL)
    proxy.wait(10)
    assert (out / ".spool").is_dir() and not (out / "session.json").exists()
    before = http_rows(out)
    r = egressaudit("report", str(out))  # says what waits in the spool and how to record it
    said = r.stderr if r.returncode else (out / "report.html").read_text()
    assert "Traceback" not in r.stderr and f"run `egressaudit proxy --out {out} --add` to record them" in said, r.stderr
    assert r.returncode == (0 if before else 3)
    nxt = start(proxies, tmp_path, out, sink.port, name="next", options=("--add",))  # (the session it continues)
    nxt.proc.send_signal(signal.SIGTERM)
    assert nxt.wait(120) == 0, nxt.stderr()[-3000:]
    rows = pq.read_table(out / "http.parquet").to_pylist()
    ids = [r["exchange_id"] for r in rows]
    assert len(ids) == len(set(ids))  # nothing twice
    assert at_kill <= len(rows) <= 600 and len(rows) > before
    rec = recording(out)
    assert rec["recovered_from_earlier_runs"] == len(rows) - before and not (out / ".spool").exists()


def spooled(out: Path) -> int:
    """Exchanges in the spool's segments (their record headers say how many each holds)."""
    import struct

    n = 0
    for seg in sorted((out / ".spool").glob("*.seg")) if (out / ".spool").is_dir() else []:
        data = seg.read_bytes()
        pos = 0
        while pos + 24 <= len(data):
            _, first, count, length, _ = struct.unpack_from("<4sQIII", data, pos)
            if pos + 24 + length > len(data):
                break
            n += count
            pos += 24 + length
    return n


# -- hostile and damaged files in the session folder --------------------------------------------------------------------


class _RunsCommand:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


def test_a_hostile_spool_segment_in_the_folder_is_not_run_and_is_counted(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """A .seg file put into OUT/.spool by someone else, whose pickle runs a command (the recorder read spools with
    pickle.loads): the proxy's recorder refuses it as damaged, records the rest, and the command exits 6 in one line."""
    import pickle
    import struct
    import zlib

    out = tmp_path / "audit"
    (out / ".spool").mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = pickle.dumps([("flow", _RunsCommand(f"touch {marker}"), -1)], protocol=4)
    record = struct.pack("<4sQIII", b"EAS1", 1, 1, len(payload), zlib.crc32(payload)) + payload
    (out / ".spool" / "0123456789ab-000000000001.seg").write_bytes(record)
    proxy = start(proxies, tmp_path, out, sink.port, env={"HOME": str(tmp_path / "home")}, options=("--add",))  # (its crash folder)
    assert curl_batch(proxy, [post(f"/v1/batch/{i}") for i in range(3)]) == [200] * 3
    proxy.proc.send_signal(signal.SIGTERM)
    code = proxy.wait(120)
    assert not marker.exists()
    assert code == 6, proxy.stderr()[-3000:]
    no_traceback(proxy)
    lines = proxy.lines()
    assert len(lines) == 1 and "1 exchanges left in the spool by an earlier run lost (spool record damaged: 1)" in lines[0], lines
    rec = recording(out)
    assert (rec["recorded"], rec["lost"], rec["lost_from_earlier_runs"], rec["complete"]) == (3, 0, 1, False)
    assert pq.read_table(out / "http.parquet").num_rows == 3 and not (out / ".spool").exists()
    assert not (tmp_path / "home" / ".egressaudit").exists()  # no crash file


def test_a_damaged_table_in_the_folder_ends_with_exit_6_in_one_line(tmp_path: Path, sink: Sink, proxies: list[ProxyCommand]) -> None:
    """An http.parquet that cannot be read (cut short) in the folder the proxy records into: compacting it at the end
    raised ArrowInvalid, which crashed the recorder (a crash file, "a bug") and each of its 10 successors.  Now one line,
    exit 6, the new rows kept as parts, session.json written, no crash file."""
    out = tmp_path / "audit"
    out.mkdir()
    (out / "http.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    proxy = start(proxies, tmp_path, out, sink.port, env={"HOME": str(tmp_path / "home")}, options=("--add",))  # (its crash folder)
    assert curl_batch(proxy, [post(f"/v1/batch/{i}") for i in range(5)]) == [200] * 5
    proxy.proc.send_signal(signal.SIGTERM)
    code = proxy.wait(120)
    assert code == 6, proxy.stderr()[-3000:]
    no_traceback(proxy)
    lines = proxy.lines()
    assert len(lines) == 1 and "cannot compact the tables" in lines[0] and "http.parquet" in lines[0], lines
    assert sum(pq.read_table(p).num_rows for p in part_files(out, "http")) == 5
    rec = recording(out)
    assert rec["recorded"] == 5 and rec["lost"] == 0 and "http.parquet" in rec["not_compacted"] and rec["recorder_restarts"] == 0
    assert not (tmp_path / "home" / ".egressaudit").exists()
