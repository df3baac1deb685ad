"""The HTTP-level audit end to end: a real mitmdump with the addon, real TLS interception, real clients and SDKs.

Every client talks to its vendor's real host name through the proxy; a test
addon (tests/support/redirect_addon.py) sends every upstream connection to a
local HTTPS sink and refuses any other, so nothing leaves the machine.  The
sink records each request as it arrived, which is what the client sent.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egressaudit.cli import app
from egressaudit.session import recording_pid
from egressaudit.session.store import part_files, read_rows
from tests.support.proxy import MITMDUMP, REDIRECT, ROOT, Mitmdump, audit_proxy, free_port, recorder_of, wait_listening
from tests.support.signals import as_in_a_terminal
from tests.support.sink import Sink

CURL = shutil.which("curl")


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path)
    yield s
    s.close()


def curl(proxy: Mitmdump | tuple[str, Path], *args: str) -> None:
    """curl through *proxy* (a Mitmdump, or a proxy URL and the CA file to trust)."""
    assert CURL, "curl is needed"
    url, ca = (proxy.url, proxy.ca) if isinstance(proxy, Mitmdump) else proxy
    r = subprocess.run(
        [CURL, "-sS", "--fail", "--proxy", url, "--cacert", str(ca), "-o", "/dev/null", *args], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


def sdk(proxy: Mitmdump, name: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tests.support.sdk_clients", name], cwd=ROOT, env=proxy.env(), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]


def _decoded(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    return body


def _by_host(rows: list[dict[str, Any]], host: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["host"] == host and r["kind"] == "http"]


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_real_clients_and_sdks_through_mitmdump(tmp_path: Path, sink: Sink) -> None:
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out, "egressaudit_client=zoom")
    try:
        for name in ("sentry", "segment", "amplitude", "posthog"):
            sdk(proxy, name)
        upload = tmp_path / "board-minutes.pdf"
        upload.write_bytes(b"%PDF-1.7\n" + os.urandom(40_000))
        curl(proxy, "-F", f"file=@{upload};type=application/pdf", "https://zoom.us/upload/v2/files")
        curl(proxy, "https://zoom.us/wc/join?token=s3cr3t-t0ken&meeting=85012345678")
        gz = "@" + str(_gzip_json(tmp_path))
        curl(proxy, "-H", "content-encoding: gzip", "-H", "content-type: application/json", "--data-binary", gz, "https://log.zoom.us/v1/log")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()

    table = pq.read_table(out / "http.parquet")  # compacted on shutdown
    assert not part_files(out, "http")
    rows = table.to_pylist()
    fields = pq.read_table(out / "fields.parquet").to_pylist()
    received = {(r.host.split(":")[0], r.path.split("?")[0]): r for r in sink.received}

    def check_sizes(row: dict[str, Any]) -> None:
        got = received[(row["host"], row["path"].split("?")[0])]
        assert row["body_bytes_out"] == len(got.body)
        enc = got.headers.get("Content-Encoding") or got.headers.get("content-encoding")
        assert row["decoded_bytes_out"] == len(_decoded(got.body, enc))

    def fields_of(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f["key_path"]: f for f in fields if f["exchange_id"] == row["exchange_id"]}

    (sentry,) = _by_host(rows, "o4501.ingest.sentry.io")
    assert (sentry["vendor"], sentry["category"], sentry["data_class"], sentry["party"]) == ("sentry", "telemetry", "service_generated", "third")
    assert sentry["body_format"] == "sentry_envelope" and sentry["method"] == "POST"
    check_sizes(sentry)
    sf = fields_of(sentry)
    assert any("email" in f["detectors"] for f in sf.values()), sorted(sf)
    assert all(f["value"] is None and f["value_hash"] for f in sf.values())  # no clear values by default

    seg = _by_host(rows, "api.segment.io")
    assert seg and all(r["category"] == "telemetry" and r["vendor"] == "segment" for r in seg)
    check_sizes(seg[0])
    detected = {d for r in seg for f in fields_of(r).values() for d in f["detectors"]}
    assert {"email", "meeting_id", "meeting_title"} <= detected, detected

    amp = _by_host(rows, "api2.amplitude.com")
    assert amp and amp[0]["category"] == "telemetry" and amp[0]["vendor"] == "amplitude"
    check_sizes(amp[0])
    assert "email" in {d for f in fields_of(amp[0]).values() for d in f["detectors"]}

    ph = _by_host(rows, "us.i.posthog.com")
    assert ph and all(r["category"] == "telemetry" for r in ph), ph  # no signature: recognised by body shape / path
    check_sizes(ph[0])

    (up,) = _by_host(rows, "zoom.us")[:1] if False else [r for r in _by_host(rows, "zoom.us") if r["method"] == "POST"]
    assert (up["category"], up["data_class"], up["party"], up["body_format"]) == ("content_upload", "customer_content", "first", "multipart")
    check_sizes(up)

    (join,) = [r for r in _by_host(rows, "zoom.us") if r["method"] == "GET"]
    assert join["path"] == "/wc/join?token=…&meeting=…" and "s3cr3t" not in json.dumps(rows, default=str)

    (log,) = _by_host(rows, "log.zoom.us")
    assert (log["category"], log["party"], log["encoding_out"]) == ("telemetry", "first", "gzip")
    check_sizes(log)
    assert log["decoded_bytes_out"] > log["body_bytes_out"]

    session = json.loads((out / "session.json").read_text())
    assert session["http"]["exchanges"] == len([r for r in rows if r["kind"] == "http"]) >= 7

    # the inventory command shows the identifying fields of the telemetry
    res = CliRunner().invoke(app, ["inventory", str(out)])
    assert res.exit_code == 0, res.output
    assert "o4501.ingest.sentry.io" in res.output and "email" in res.output


def _gzip_json(tmp: Path) -> Path:
    doc = {
        "events": [
            {"event": "qos", "device_id": "5f0c7e2a-1b7d-4c1e-9a53-2f1d2f7e9a10", "jitter_ms": i % 7, "ts": 1763880000 + i} for i in range(200)
        ]
    }
    p = tmp / "log.json.gz"
    p.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return p


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_a_killed_proxy_loses_at_most_the_last_second(tmp_path: Path, sink: Sink) -> None:
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out)
    try:
        for i in range(5):
            curl(
                proxy,
                "-H",
                "content-type: application/json",
                "--data",
                json.dumps({"n": i, "email": "bob@example.org"}),
                "https://api.segment.io/v1/batch",
            )
        deadline = time.monotonic() + 10  # the flush interval is 1 s: 10 s leaves room for a slow machine
        while read_rows(out, "http").num_rows < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = read_rows(out, "http").num_rows  # (read while the recorder runs: parts being compacted are read again)
    finally:
        proxy.stop(signal.SIGKILL)
    assert before == 5
    # the recorder outlives the killed proxy: it records what it holds, compacts and ends (the folder's lock is free)
    deadline = time.monotonic() + 60
    while recording_pid(out) is not None:
        assert time.monotonic() < deadline, "the recorder did not end"
        time.sleep(0.1)
    rows = read_rows(out, "http").to_pylist()
    assert len(rows) == 5 and {r["category"] for r in rows} == {"telemetry"}
    assert read_rows(out, "fields").num_rows >= 5


@pytest.mark.skipif(CURL is None, reason="curl not installed")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_the_proxys_whole_process_group_loses_no_row(tmp_path: Path, sink: Sink, sig: int) -> None:
    """A service manager stopping the proxy (SIGTERM) or a terminal closing (SIGHUP) signals the recorder process too,
    right after the last exchange, while it may still hold rows: it must keep them, and the proxy must shut down as on
    Ctrl-C (mitmdump itself would die on SIGHUP, before compacting and with the last exchange not yet handed over)."""
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out)
    try:
        worker = proxy.recorder()  # (waits: on Python 3.12+ mitmdump listens before it has loaded the addon)
        assert worker.ppid() == proxy.proc.pid and os.getpgid(worker.pid) == proxy.proc.pid  # its child, in its process group
        for i in range(5):
            curl(proxy, "-H", "content-type: application/json", "--data", json.dumps({"n": i}), "https://api.segment.io/v1/batch")
        os.killpg(proxy.proc.pid, sig)  # (the test's Mitmdump runs in a session of its own)
        proxy.proc.wait(60)
        worker.wait(60)
    finally:
        proxy.stop(signal.SIGKILL)
    log = proxy.logfile.read_text()
    assert "Traceback" not in log, log
    assert proxy.proc.returncode == 0 and "recorder process ended" not in log, log
    assert read_rows(out, "http").num_rows == 5, log
    assert (out / "http.parquet").exists() and not part_files(out, "http")  # an orderly shutdown: compacted
    assert json.loads((out / "session.json").read_text())["http"]["exchanges"] == 5


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_the_proxy_command_stops_its_mitmdump_cleanly_when_it_is_terminated(tmp_path: Path, sink: Sink) -> None:
    """`kill PID` of `egressaudit proxy` (SIGTERM to it alone) must not leave its mitmdump running without a parent:
    mitmdump is told to shut down, and the session is complete."""
    import psutil

    port, out = free_port(), tmp_path / "audit"
    cmd = [sys.executable, "-m", "egressaudit", "proxy", "--out", str(out), "--port", str(port), "--confdir", str(tmp_path / "ca")]
    cmd += ["--", "-s", str(REDIRECT), "--set", f"sink=127.0.0.1:{sink.port}", "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=as_in_a_terminal  # noqa: PLW1509
    )
    try:
        wait_listening("127.0.0.1", port, proc, proc.communicate)
        recorder_of(proc.pid, timeout=30)  # (on Python 3.12+ mitmdump listens before it has loaded the addon)
        family = psutil.Process(proc.pid).children(recursive=True)
        curl((f"http://127.0.0.1:{port}", tmp_path / "ca" / "mitmproxy-ca-cert.pem"), "--data", '{"n": 1}', "https://api.segment.io/v1/track")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert json.loads((out / "session.json").read_text())["http"]["exchanges"] == 1
    assert pq.read_table(out / "http.parquet").num_rows == 1


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_saved_flows_and_har_read_offline_into_the_same_tables(tmp_path: Path, sink: Sink) -> None:
    out = tmp_path / "live"
    proxy = audit_proxy(tmp_path, sink.port, out, "egressaudit_keep_bodies=true", "egressaudit_client=zoom")
    try:
        curl(
            proxy,
            "-H",
            "content-type: application/json",
            "--data",
            '{"event":"join","email":"carol@example.org"}',
            "https://api2.amplitude.com/2/httpapi",
        )
        curl(proxy, "https://zoom.us/signin?next=%2Fprofile")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()
    live = sorted((r["host"], r["path"], r["category"], r["body_bytes_out"]) for r in pq.read_table(out / "http.parquet").to_pylist())
    assert oct((out / "flows.mitm").stat().st_mode & 0o777) == "0o600"

    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(out / "flows.mitm"), "--out", str(tmp_path / "offline"), "--client", "zoom", "--quiet"])
    assert res.exit_code == 0, res.output
    offline = sorted(
        (r["host"], r["path"], r["category"], r["body_bytes_out"]) for r in pq.read_table(tmp_path / "offline" / "http.parquet").to_pylist()
    )
    assert offline == live

    # HAR with bodies (mitmproxy's exporter), read back offline
    res = runner.invoke(app, ["har", str(out), "--out", str(tmp_path / "s.har"), "--bodies"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", str(tmp_path / "s.har"), "--out", str(tmp_path / "fromhar"), "--client", "zoom", "--quiet"])
    assert res.exit_code == 0, res.output
    fromhar = sorted((r["host"], r["path"], r["category"]) for r in pq.read_table(tmp_path / "fromhar" / "http.parquet").to_pylist())
    assert fromhar == [x[:3] for x in live]

    # HAR without bodies: built from the table, no body text, query values redacted
    res = runner.invoke(app, ["har", str(out), "--out", str(tmp_path / "nobody.har")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "nobody.har").read_text()
    assert "carol@example.org" not in text and "%2Fprofile" not in text and len(json.loads(text)["log"]["entries"]) == 2

    # bad offline input: one line, exit code 3
    bad = tmp_path / "broken.har"
    bad.write_text("{not json")
    res = runner.invoke(app, ["analyze", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code == 3 and "broken.har" in res.output and "Traceback" not in res.output


class _PlainSink:
    """A plain-HTTP server on 127.0.0.1 (a port of its own, never 80) answering 200 to anything."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_har_export_keeps_a_port_that_is_not_the_schemes_default(tmp_path: Path, sink: Sink) -> None:
    """`egressaudit har` of a session a real proxy recorded from curl: a request to 127.0.0.1:18000 was exported as
    http://127.0.0.1/v1/... (port 80); the URL keeps a port that is not the scheme's default, for http and https."""
    plain = _PlainSink()
    out = tmp_path / "audit"
    proxy = Mitmdump(tmp_path, "mitmdump", [ROOT / "addons" / "egressaudit_addon.py"], f"egressaudit_dir={out}")  # no redirection
    try:
        curl(proxy, "--data", '{"n": 1}', f"http://127.0.0.1:{plain.port}/v1/track?writeKey=s3cr3t")
        curl(proxy, "--data", '{"n": 2}', f"https://127.0.0.1:{sink.port}/v1/batch")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()
        plain.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    har = tmp_path / "x.har"
    r = subprocess.run(
        [sys.executable, "-m", "egressaudit", "har", str(out), "-o", str(har)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    entries = json.loads(har.read_text())["log"]["entries"]
    assert sorted(e["request"]["url"] for e in entries) == sorted(
        [f"http://127.0.0.1:{plain.port}/v1/track?writeKey=…", f"https://127.0.0.1:{sink.port}/v1/batch"]
    )
    assert {e["serverIPAddress"] for e in entries} == {"127.0.0.1"} and "s3cr3t" not in har.read_text()


def _egressaudit(*args: str) -> str:
    """The real command line; its stdout, wide enough that no table row wraps."""
    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-m", "egressaudit", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_inventory_and_report_agree_on_the_fields_and_the_vendor_label(tmp_path: Path, sink: Sink) -> None:
    """`egressaudit inventory` said "6 of 12" where `egressaudit report` said "7 of 14" of one session, and named a
    host of no known vendor "nan" where the report said "(none)": the inventory counted telemetry bodies only (its
    --category default) and distinct key paths, the report every inventoried body (telemetry, unknown, uploads) and
    rows of fields.parquet (a key path once per exchange).  Both now count fields of report.measures.field_table, say
    which bodies they counted, and label a missing vendor alike."""
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out, "egressaudit_client=zoom")
    ph = {"batch": [{"event": "join", "distinct_id": "5f0c7e2a-1b7d-4c1e-9a53-2f1d2f7e9a10", "properties": {"email": "fay@example.org"}}]}
    try:
        for _ in range(2):  # the same key paths in two exchanges: one field each, not two
            curl(proxy, "-H", "content-type: application/json", "--data", json.dumps(ph), "https://us.i.posthog.com/batch/")
        seg = {"batch": [{"type": "track", "userId": "u-1", "properties": {"email": "fay@example.org", "plan": "pro"}}]}
        curl(proxy, "-H", "content-type: application/json", "--data", json.dumps(seg), "https://api.segment.io/v1/batch")
        prefs = {"contact": "fay@example.org", "theme": "dark"}  # no signature, not event-shaped: category unknown
        curl(proxy, "-H", "content-type: application/json", "--data", json.dumps(prefs), "https://prefs.example.net/save")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()

    # what the two commands should say, from the table itself
    fields = pq.read_table(out / "fields.parquet").to_pylist()
    cats = {f["category"] for f in fields}
    assert {"telemetry", "unknown"} <= cats and any(f["vendor"] is None and f["category"] == "telemetry" for f in fields)

    def expected(rows: list[dict[str, Any]]) -> str:
        keys = {(f["vendor"], f["host"], f["category"], f["key_path"]) for f in rows}
        ident = {(f["vendor"], f["host"], f["category"], f["key_path"]) for f in rows if f["detectors"]}
        return f"{len(ident):,} of {len(keys):,} distinct fields"

    telemetry, every = expected([f for f in fields if f["category"] == "telemetry"]), expected(fields)
    assert telemetry != every and len(fields) > int(every.split()[2])  # the session shows all three differences

    inv = _egressaudit("inventory", str(out))
    inv_any = _egressaudit("inventory", str(out), "--category", "any")
    rep = _egressaudit("report", str(out))
    assert f"identifying fields: {telemetry} in telemetry bodies; {every} in every inventoried body" in inv
    assert f"identifying fields: {every} in all bodies" in inv_any
    assert re.search(rf"identifying fields +│ {every} \(telemetry: {telemetry}\)", rep), rep
    for text in (inv, inv_any, rep):
        assert "nan" not in text.split() and not re.search(r"│ nan +│", text)
        assert re.search(r"│ \(none\) +│ us\.i\.posthog\.com +│", text), text


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_proxy_command_defaults_loopback_private_ca(tmp_path: Path, sink: Sink) -> None:
    """`egressaudit proxy` as a user runs it: CA instructions, loopback only, private CA key, tables on Ctrl-C."""
    import psutil

    port = free_port()
    conf = tmp_path / "ca"
    out = tmp_path / "audit"
    cmd = [sys.executable, "-m", "egressaudit", "proxy", "--out", str(out), "--port", str(port), "--confdir", str(conf), "--client", "zoom"]
    cmd += ["--", "-s", str(REDIRECT), "--set", f"sink=127.0.0.1:{sink.port}", "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=as_in_a_terminal  # noqa: PLW1509
    )
    try:
        wait_listening("127.0.0.1", port, proc, proc.communicate)
        listening = {
            c.laddr.ip
            for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
        assert oct(conf.stat().st_mode & 0o777) == "0o700"
        assert oct((conf / "mitmproxy-ca.pem").stat().st_mode & 0o777) == "0o600"
        body = '{"event":"join","email":"dan@example.org"}'
        curl(
            (f"http://127.0.0.1:{port}", conf / "mitmproxy-ca-cert.pem"),
            "-H",
            "content-type: application/json",
            "--data",
            body,
            "https://api.segment.io/v1/track",
        )
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert "mitmproxy-ca-cert.pem" in err and "127.0.0.1" in err
    rows = pq.read_table(out / "http.parquet").to_pylist()
    assert [(r["host"], r["category"], r["party"]) for r in rows] == [("api.segment.io", "telemetry", "third")]
    fields = pq.read_table(out / "fields.parquet").to_pylist()
    assert any("email" in f["detectors"] for f in fields) and not any(f["value"] for f in fields)
    assert "dan@example.org" not in (out / "http.parquet").read_bytes().decode("latin-1")


def _mitmdump_that_exits(tmp_path: Path, out: Path, *settings: str, port: int | None = None, timeout: float = 120) -> tuple[int, str]:
    """A mitmdump with the audit addon that is expected to stop on its own (at start): its exit code and its output."""
    cmd = [*MITMDUMP, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port or free_port())]
    cmd += ["-s", str(ROOT / "addons" / "egressaudit_addon.py")]
    cmd += ["--set", f"confdir={tmp_path / 'conf'}", "--set", f"egressaudit_dir={out}"]
    for setting in settings:
        cmd += ["--set", setting]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"mitmdump did not exit within {timeout:g} s") from e
    return r.returncode, r.stdout + r.stderr


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_max_lag_is_an_option_of_the_command_line(tmp_path: Path, sink: Sink) -> None:
    """--set egressaudit_max_lag=0 (record at once) runs and records; a negative one stops mitmdump at start in one line."""
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out, "egressaudit_max_lag=0")
    try:
        curl(proxy, "--data", '{"n": 1}', "https://api.segment.io/v1/track")
    finally:
        assert proxy.stop() == 0
    assert pq.read_table(out / "http.parquet").num_rows == 1

    code, log = _mitmdump_that_exits(tmp_path, tmp_path / "bad", "egressaudit_max_lag=-1")
    assert code != 0 and "egressaudit: egressaudit_max_lag: must be 0 or more seconds, not -1" in log, log
    assert "Traceback" not in log, log


def test_a_recorder_that_cannot_start_stops_the_proxy_at_start(tmp_path: Path, sink: Sink) -> None:
    """The recorder process reports ready before the proxy serves; if it cannot start, mitmdump exits with one line."""
    out = tmp_path / "audit"
    (out / ".salt").mkdir(parents=True)  # the session's salt file cannot be read or written
    code, log = _mitmdump_that_exits(tmp_path, out)
    assert code != 0, log
    assert "egressaudit: cannot start the recorder: IsADirectoryError" in log, log
    assert "Traceback" not in log, log
    assert not list(out.glob("*.parquet")) and not list(out.glob("*.parts"))


def test_a_proxy_whose_port_is_taken_exits_instead_of_waiting_for_its_recorder(tmp_path: Path) -> None:
    """mitmdump stops without calling the addon's `done` when it cannot listen; the recorder process must not keep it
    waiting at exit (it used to hang forever: multiprocessing joins non-daemon children, which waited to be closed)."""
    out = tmp_path / "audit"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, log = _mitmdump_that_exits(tmp_path, out, port=taken.getsockname()[1], timeout=60)  # (it used to hang)
    assert code != 0 and "address already in use" in log, log
    assert "Traceback" not in log, log
    assert json.loads((out / "session.json").read_text())["http"]["exchanges"] == 0


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_the_addon_classifies_with_a_users_own_signature_folder(tmp_path: Path, sink: Sink) -> None:
    """``--set egressaudit_signatures=FOLDER``: its vendor files join the packaged ones (the same expansion as the
    CLI's --signatures), and the recorder process classifies with them."""
    mine = tmp_path / "sigs"
    mine.mkdir()
    (mine / "mylab.yaml").write_text(
        "vendor: mylab\ndisplay_name: My lab\nkind: analytics\nrules:\n"
        "  - id: events\n    domains: [events.mylab.example]\n    category: telemetry\n    source: our own lab set-up\n"
    )
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out, f"egressaudit_signatures={mine}")
    try:
        curl(proxy, "-H", "content-type: application/json", "--data", '{"n": 1}', "https://events.mylab.example/v1")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()
    rows = read_rows(out, "http").to_pylist()
    assert [(r["vendor"], r["rule"]) for r in rows] == [("mylab", "mylab/events")]
