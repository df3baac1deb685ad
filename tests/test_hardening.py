"""The commands around the session folder under faults: private files, a full disk, a read-only folder, a folder
another process records into, a capture killed before it analysed, and the last resort for bugs.

Every case runs the real ``egressaudit`` command in a subprocess, as a user would, and checks the exit code, that
stderr is one line without a traceback, and what is left on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from egressaudit.schema import TS_MAX_US, TS_MIN_US, escape_text, to_table
from egressaudit.session import RecordingLock
from tests.support.smallfs import fill, mount_unavailable, read_only_folder, small_filesystem

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo"
SAMPLE_ARGS = [str(SAMPLE / "call.pcapng"), "--local-net", "10.77.0.2/32", "--signatures", str(SAMPLE / "selfhosted.yaml")]
needs_mount = pytest.mark.skipif(mount_unavailable() is not None, reason=str(mount_unavailable()))


def egressaudit(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "egressaudit", *args], capture_output=True, text=True, env=env, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """stderr of a failed command: exactly one non-empty line, no traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def sample_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's sample, analysed once (flows.parquet + session.json)."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("sessions") / "sample"
    r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(out), "--quiet", home=home)
    assert r.returncode == 0, r.stderr
    return out


def test_every_file_of_a_session_is_private(tmp_path: Path, sample_session: Path) -> None:
    """Files 0600 and folders 0700, whatever the user's umask: the tables keep real addresses and host names."""
    out = tmp_path / "audits" / "s"
    shutil.copytree(sample_session, out)
    for p in [out, *out.rglob("*")]:  # as if written by an older version, with a permissive umask
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(out.parent, 0o755)
    (out / "report.html").unlink(missing_ok=True)
    shutil.rmtree(out / "figures", ignore_errors=True)
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "audits" / "fresh"
        r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(fresh), "--quiet", home=tmp_path)
        assert r.returncode == 0, r.stderr
        for folder in (fresh, out):
            r = egressaudit("report", str(folder), home=tmp_path)
            assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    written = [fresh, *fresh.rglob("*")]
    assert {p.name for p in written} >= {"flows.parquet", "session.json", "report.html", "data_class.png"}
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {k: (0o700 if (tmp_path / k).is_dir() else 0o600) for k in modes}
    # an existing session folder is narrowed too, and what the report writes into it is private
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "report.html").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "figures" / "vendors.png").stat().st_mode) == 0o600


def test_a_user_folder_that_is_not_a_session_is_not_written_into(tmp_path: Path) -> None:
    """`--out` pointing at a shared folder that already holds other things (e.g. /tmp): refused in one line (a session
    would mix with someone else's files), the folder neither narrowed nor written (issue 12: safe folders)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "someone-elses-file").write_text("x")
    os.chmod(shared, 0o1777)
    r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(shared), "--quiet", home=tmp_path)
    assert r.returncode == 2 and "holds files that are not a session's" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert sorted(p.name for p in shared.iterdir()) == ["someone-elses-file"]


@needs_mount
@pytest.mark.parametrize("free", [0, 8 << 10, 56 << 10], ids=["0B", "8KB", "56KB"])
def test_report_on_a_full_disk_says_so_and_leaves_no_partial_file(tmp_path: Path, sample_session: Path, free: int) -> None:
    with small_filesystem(tmp_path / "disk", 4 << 20) as disk:
        out = disk / "sample"
        shutil.copytree(sample_session, out)
        for p in out.glob("report.html"):
            p.unlink()
        shutil.rmtree(out / "figures", ignore_errors=True)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        fill(disk, free)
        r = egressaudit("report", str(out), home=tmp_path)
        assert r.returncode == 4, (r.returncode, r.stderr)
        assert "No space left on device" in one_line_error(r)
        left = [p for p in out.rglob("*") if p.is_file()]
        assert not [p.name for p in left if p.name.endswith(".tmp") or (p.stat().st_size == 0 and p.suffix != ".lock")], left
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the session itself untouched
        (disk / ".filler").unlink()
        r = egressaudit("report", str(out), home=tmp_path)  # space again: the same folder reports
        assert r.returncode == 0, r.stderr
        assert (out / "report.html").stat().st_size > 0


@needs_mount
def test_analyze_into_a_read_only_folder_exits_4_and_writes_nothing(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as ro:
        r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(ro / "s"), home=tmp_path)
        assert r.returncode == 4, r.stderr
        assert "Read-only file system" in one_line_error(r)
        assert list(ro.iterdir()) == []


@needs_mount
def test_analyze_onto_a_full_disk_exits_4_and_leaves_no_partial_table(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk", 1 << 20) as disk:
        out = disk / "s"
        out.mkdir()
        fill(disk, 4 << 10)
        r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(out), home=tmp_path)
        assert r.returncode == 4, (r.returncode, r.stderr)
        assert "No space left on device" in one_line_error(r)
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == "flows.parquet"]


def test_a_folder_another_process_records_into_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from egressaudit.session import RecordingLock; "
         "RecordingLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(out), home=tmp_path)
        assert r.returncode == 4, r.stderr
        assert f"another process (pid {holder.pid}) is recording into this folder" in one_line_error(r)
        assert not (out / "flows.parquet").exists()
    finally:
        holder.kill()
        holder.communicate()
    r = egressaudit("analyze", *SAMPLE_ARGS, "--out", str(out), "--quiet", home=tmp_path)  # its holder died: the folder is free
    assert r.returncode == 0, r.stderr
    with RecordingLock(out):  # and the lock was released when analyze ended
        pass


def _needs_capture() -> str | None:
    if os.geteuid() != 0:
        return "live capture needs root"
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (OSError, AttributeError) as e:
        return f"no packet socket here: {e}"
    return None


@pytest.mark.skipif(_needs_capture() is not None, reason=str(_needs_capture()))
def test_report_analyses_what_a_killed_capture_left(tmp_path: Path) -> None:
    """`egressaudit capture` SIGKILLed mid-capture leaves capture.pcapng and a session.json that says "capturing":
    `egressaudit report` analyses what reached disk, says so, and marks the session recovered, with the capture's
    options (its own signature file and --client included)."""
    out = tmp_path / "live"
    mine = tmp_path / "mylab.yaml"
    mine.write_text(
        "vendor: mylab\ndisplay_name: My lab\nkind: conferencing\nrules:\n"
        "  - id: sfu\n    cidrs: [127.0.0.0/8]\n    category: media\n    source: our own lab set-up\n"
    )
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    env = {**os.environ, "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "egressaudit", "capture", "--iface", "lo", "--filter", f"udp port {port}", "--out", str(out), "--quiet",
           "--local-net", "127.0.0.1/32", "--signatures", str(mine), "--client", "mylab"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out / "capture.pcapng").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads((out / "session.json").read_text())["state"] == "capturing"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(400):
                tx.sendto(i.to_bytes(4, "big") + bytes(96), ("127.0.0.1", port))
        deadline = time.monotonic() + 30  # until the capture has written some of them (it flushes about once a second)
        while (out / "capture.pcapng").stat().st_size < 20_000:
            assert time.monotonic() < deadline, "nothing reached capture.pcapng"
            time.sleep(0.1)
        r = egressaudit("report", str(out), home=tmp_path)
        assert r.returncode == 3 and "a capture is still running into this folder" in one_line_error(r)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        rx.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not (out / "flows.parquet").exists()
    mine.rename(tmp_path / "away.yaml")  # the capture's signature file is gone: say so, leave the folder as it is
    r = egressaudit("report", str(out), home=tmp_path)
    assert r.returncode == 3 and f"started with the signature file {mine}, which is gone" in one_line_error(r)
    assert json.loads((out / "session.json").read_text())["state"] == "capturing"
    (tmp_path / "away.yaml").rename(mine)
    r = egressaudit("report", str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "the capture did not finish" in r.stderr
    session = json.loads((out / "session.json").read_text())
    assert session["state"] == "recovered"
    assert session["capture"]["stopped_by"] == "killed" and session["capture"]["iface"] == "lo"
    assert session["local_nets"] == ["127.0.0.1/32"] and session["audited_client"] == "mylab"
    flows = pq.read_table(out / "flows.parquet").to_pylist()
    assert {f["vendor"] for f in flows if port in (f["local_port"], f["remote_port"])} == {"mylab"}
    assert sum(f["packets_out"] + f["packets_in"] for f in flows if port in (f["local_port"], f["remote_port"])) >= 150
    assert "The capture did not finish (it was killed)" in (out / "report.html").read_text()
    r = egressaudit("report", str(out), home=tmp_path)  # once recovered, reported like any session
    assert r.returncode == 0 and "did not finish" not in r.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["analyze", "{tmp}/text.pcap"], 3),
        (["analyze", "{tmp}/empty.pcap"], 3),
        (["analyze", str(SAMPLE / "call.pcapng"), "--signatures", "{tmp}/binary.yaml"], 5),
        (["capture", "--iface", "no-such-if0", "--duration", "1"], 3),
        (["capture", "--iface", "lo", "--duration", "1", "--filter", "udp port"], 3),
        (["analyze", "{tmp}/empty.har"], 3),
        (["analyze", "{tmp}/empty.mitm"], 3),
        (["proxy", "--mode", "bogus:x"], 2),
    ],
    ids=["text-file", "empty-file", "binary-signatures", "no-interface", "bad-filter", "har-without-entries", "empty-mitm", "bad-proxy-mode"],
)
def test_a_failed_command_says_why_in_one_line_and_leaves_no_folder(tmp_path: Path, args: list[str], code: int) -> None:
    (tmp_path / "text.pcap").write_text("hello\n")
    (tmp_path / "empty.pcap").write_bytes(b"")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(128, 256)))
    (tmp_path / "empty.har").write_text('{"log": {"version": "1.2", "entries": []}}')
    (tmp_path / "empty.mitm").write_bytes(b"")
    out = tmp_path / "new" / "session"
    r = egressaudit(*[a.format(tmp=tmp_path) for a in args], "--out", str(out), home=tmp_path)
    assert r.returncode == code
    one_line_error(r)
    assert not (tmp_path / "new").exists()  # nor the parent made for it


def test_mitmdump_refusing_its_arguments_is_a_usage_error_and_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "px"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = egressaudit("proxy", "--out", str(out), "--port", str(port), "--", "--no-such-mitmdump-flag", home=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "mitmdump: error: unrecognized arguments: --no-such-mitmdump-flag" in r.stderr
    assert not (tmp_path / "new").exists()


def test_a_proxy_whose_port_is_taken_says_so_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """(mitmdump itself exits 1 with its own message when it cannot listen, after the folder was made.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = egressaudit("proxy", "--out", str(tmp_path / "px"), "--port", str(port), home=tmp_path)
    assert r.returncode == 2
    assert f"--port: cannot listen on 127.0.0.1:{port}" in one_line_error(r)
    assert not (tmp_path / "px").exists()


def test_a_bug_is_one_line_and_its_traceback_is_saved_privately(tmp_path: Path, sample_session: Path) -> None:
    """The last resort: an exception no command expected (here: made to happen in the report) exits 1 with one line
    naming a crash file (0600, in ~/.egressaudit, 0700) that holds the traceback."""
    code = "import sys; import egressaudit.report as r; r.build_report = lambda *a, **k: 1 / 0; from egressaudit.cli import run; run()"
    env = {**os.environ, "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code, "report", str(sample_session)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    line = one_line_error(r)
    assert "internal error: ZeroDivisionError" in line
    crashes = list((tmp_path / ".egressaudit" / "crashes").glob("crash-*.txt"))
    assert len(crashes) == 1 and str(crashes[0]) in line.replace("\n", "")
    assert "Traceback" in crashes[0].read_text() and "ZeroDivisionError" in crashes[0].read_text()
    assert stat.S_IMODE(crashes[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / ".egressaudit").stat().st_mode) == 0o700


def _edit_json(key: str, value: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        doc = json.loads((folder / "session.json").read_text())
        doc[key] = value
        (folder / "session.json").write_text(json.dumps(doc))

    return edit


def _edit_flows(column: str, values: Callable[[int], pa.Array]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        t = pq.read_table(folder / "flows.parquet")
        pq.write_table(t.set_column(t.schema.get_field_index(column), column, values(t.num_rows)), folder / "flows.parquet")

    return edit


@pytest.mark.parametrize(
    ("damage", "code", "says"),
    [
        (_edit_json("inputs", 5), 0, "session.json is damaged: left out inputs"),
        (_edit_json("local_hosts", 7), 0, "session.json is damaged: left out local_hosts"),
        (_edit_json("counts", "x"), 0, "session.json is damaged: left out counts"),
        (lambda f: (f / "session.json").write_text("[1]"), 3, "session.json: not a JSON object"),
        (lambda f: (f / "session.json").write_bytes(b"\xff{"), 3, "session.json: unreadable"),
        (lambda f: (f / "flows.parquet").write_bytes((f / "flows.parquet").read_bytes()[:1000]), 3, "flows.parquet: unreadable"),
        (_edit_flows("bytes_out", lambda n: pa.array(["x"] * n)), 3, "flows.parquet: columns of the wrong type"),
        (_edit_flows("bytes_out", lambda n: pa.array(["12"] * n)), 0, ""),  # castable: read as numbers
        (_edit_flows("ts_start", lambda n: pa.array([None] * n, pa.timestamp("us"))), 3, "flows.parquet: columns of the wrong type"),
        (lambda f: (f / "flows.parquet").unlink(), 3, "no flows.parquet or http.parquet"),
    ],
    ids=["inputs-int", "local_hosts-int", "counts-str", "json-list", "json-bytes", "parquet-cut", "bytes_out-text", "bytes_out-digits",
         "ts_start-null", "no-flows"],  # fmt: skip
)
def test_report_on_a_damaged_session_says_what_is_wrong(
    tmp_path: Path, sample_session: Path, damage: Callable[[Path], None], code: int, says: str
) -> None:
    folder = tmp_path / "s"
    shutil.copytree(sample_session, folder)
    damage(folder)
    r = egressaudit("report", str(folder), home=tmp_path)
    assert r.returncode == code, r.stderr
    if code:
        assert says in one_line_error(r)
    else:
        assert "Traceback" not in r.stderr and says in (folder / "report.html").read_text()


# -- the writer's last line of defence -----------------------------------------------------------------------------


def _http_row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "session_id": "s", "exchange_id": "x", "kind": "http", "ts_start": 1_700_000_000_000_000, "ts_end": 1_700_000_000_000_000,
        "direction": "out", "bytes_out": 1, "body_bytes_out": 0, "bytes_in": 0, "body_bytes_in": 0, "field_count": 0, "identifier_fields": 0,
        "party": "unknown", "category": "unknown", "data_class": "unknown", "rule": "r", "evidence": "e",
    }  # fmt: skip
    row.update(kw)
    return row


def test_to_table_keeps_valid_rows_as_they_are() -> None:
    problems: Counter[str] = Counter()
    t = to_table("http", [_http_row(host="zoom.us", status=200)], problems)
    assert problems == Counter() and t.column("host").to_pylist() == ["zoom.us"] and t.column("status").to_pylist() == [200]


@pytest.mark.parametrize(
    ("field", "value", "stored", "reason"),
    [
        ("content_type_out", "application/\udcffjson", "application/\\xffjson", "not_utf8"),  # mitmproxy's surrogate escapes
        ("path", "/\ud800", "/\\ud800", "not_utf8"),  # a lone surrogate that no escape handler produced
        ("method", b"G\xffT", "G\\xffT", "wrong_type"),
        ("exchange_id", 12345, "12345", "wrong_type"),
        ("status", 1 << 31, None, "out_of_range"),
        ("status", "200", None, "wrong_type"),
        ("remote_port", -1 << 40, None, "out_of_range"),
        ("bytes_out", None, 0, "missing"),
        ("bytes_out", 1 << 64, (1 << 63) - 1, "out_of_range"),
        ("ts_start", float("nan"), 0, "wrong_type"),
        ("ts_start", 1 << 70, TS_MAX_US, "out_of_range"),
        ("ts_start", -1 << 62, TS_MIN_US, "out_of_range"),
        ("ts_start", -5, TS_MIN_US, "out_of_range"),
        ("ts_start", None, 0, "missing"),
    ],
)
def test_to_table_fits_what_a_column_cannot_hold_and_counts_it(field: str, value: object, stored: object, reason: str) -> None:
    problems: Counter[str] = Counter()
    t = to_table("http", [_http_row(host="ok.example"), _http_row(**{field: value})], problems)
    assert problems == Counter({f"http.{field}:{reason}": 1})
    got = t.column(field).cast("int64").to_pylist()[1] if field == "ts_start" else t.column(field).to_pylist()[1]
    assert got == stored
    assert t.column("host").to_pylist()[0] == "ok.example"  # the good row around it is kept as it was


def test_escape_text_shows_the_bytes() -> None:
    assert escape_text(b"caf\xc3\xa9 \xff".decode("utf-8", "surrogateescape")) == "café \\xff"


def test_the_proxy_ca_lives_in_a_private_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from egressaudit.http.proxy import ensure_ca

    monkeypatch.setenv("HOME", str(tmp_path))
    old = os.umask(0o022)
    try:
        conf = ensure_ca(None)
    finally:
        os.umask(old)
    assert conf == tmp_path / ".egressaudit" / "mitmproxy"
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700 and stat.S_IMODE(conf.stat().st_mode) == 0o700
    assert stat.S_IMODE((conf / "mitmproxy-ca.pem").stat().st_mode) == 0o600  # the private key


def test_an_older_wide_egressaudit_folder_is_narrowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.egressaudit made 0755 by an older version (it already holds the CA folder) becomes 0700."""
    from egressaudit.http.proxy import ensure_ca

    monkeypatch.setenv("HOME", str(tmp_path))
    home = tmp_path / ".egressaudit"
    (home / "mitmproxy").mkdir(parents=True)
    os.chmod(home, 0o755)
    os.chmod(home / "mitmproxy", 0o755)
    conf = ensure_ca(None)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(conf.stat().st_mode) == 0o700


HAR_ONE = {
    "log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, "entries": [{
        "startedDateTime": "2026-01-01T00:00:00.000Z", "time": 1,
        "request": {"method": "GET", "url": "https://a.example/x", "httpVersion": "HTTP/1.1", "headers": [], "queryString": [],
                    "cookies": [], "headersSize": -1, "bodySize": 0},
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1", "headers": [], "cookies": [],
                     "content": {"size": 0, "mimeType": "text/plain"}, "redirectURL": "", "headersSize": -1, "bodySize": 0},
        "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0}}]},
}  # fmt: skip


@pytest.mark.parametrize("command", ["analyze", "inventory", "har", "report"])
@pytest.mark.parametrize("damage", [b"garbage", b"PAR1" + bytes(64) + b"PAR1"], ids=["short", "not-parquet"])
def test_a_damaged_http_table_is_one_line_and_exit_3(tmp_path: Path, command: str, damage: bytes) -> None:
    """A damaged http.parquet in a session folder (every command that reads it exited 1 with a traceback before)."""
    har = tmp_path / "one.har"
    har.write_text(json.dumps(HAR_ONE))
    out = tmp_path / "s"
    assert egressaudit("analyze", str(har), "--out", str(out), "--quiet", home=tmp_path).returncode == 0
    (out / "http.parquet").write_bytes(damage)
    args = {
        "analyze": ["analyze", *SAMPLE_ARGS, "--out", str(out), "--add"],  # (packet flows added to the session: it settles one client)
        "inventory": ["inventory", str(out)],
        "har": ["har", str(out), "--out", str(tmp_path / "x.har")],
        "report": ["report", str(out)],
    }[command]
    r = egressaudit(*args, home=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "http" in one_line_error(r) and str(out) in r.stderr
    assert (out / "http.parquet").read_bytes() == damage  # left as it was, for the user to look at
    assert not (tmp_path / "x.har").exists()


def test_the_report_says_what_a_recording_that_could_not_finish_lost(tmp_path: Path) -> None:
    from egressaudit.report import recording_notes

    session: dict[str, object] = {"http": {"recording": {
        "complete": False, "lost": 0, "handed_over": 5, "lost_from_earlier_runs": 2,
        "lost_from_earlier_runs_by_reason": {"spool record damaged": 2}, "not_compacted": "http.parquet: not Parquet"}}}  # fmt: skip
    (note,) = recording_notes(tmp_path, session)
    assert "2 exchanges an earlier run left in the spool were lost (spool record damaged: 2)" in note
    assert "the tables were not compacted (http.parquet: not Parquet)" in note
