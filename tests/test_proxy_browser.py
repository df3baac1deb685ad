"""The HTTP-level audit end to end with a real browser, HTTP/2, WebSockets and mitmproxy's other modes.

As in tests/test_proxy_e2e.py, clients use their vendors' real host names
and a test addon (tests/support/redirect_addon.py) sends every connection
the proxy opens to a local HTTPS sink, refusing any other.  Chromium runs
headless in a network namespace of the test's own (tests/support/netns.py:
one veth pair to this host, no default route, no IPv6), so nothing it sends
can reach a real network; its only route is the proxy, which for this test
listens on the host's end of the pair.  No name resolves
(host-resolver-rules), loopback is not bypassed, a fresh profile, and
mitmproxy's CA trusted by its key hash only.

The page (tests/support/browser: real npm SDKs bundled into dist/bundle.js,
committed; rebuild with ``npm ci && npm run build`` there) is served by the
sink as https://meet.example-conference.test/QuarterlyBoardReview and sends
what a conferencing web client's telemetry sends: a Sentry envelope, an
Amplitude event and rtcstats' WebRTC statistics over a websocket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from egressaudit.session.store import read_rows
from tests.support.netns import Netns, netns_unavailable
from tests.support.proxy import ADDON, ROOT, Mitmdump, audit_proxy
from tests.support.sink import Sink
from tests.support.web_sink import BROWSER, WebSink

CURL = shutil.which("curl")
IPTABLES = shutil.which("iptables")
# Debian's binary itself: its /usr/bin/chromium wrapper adds Google API keys and extension flags
CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p and os.path.exists(p)), None
)
PAGE_HOST = "meet.example-conference.test"
ROOM = "/QuarterlyBoardReview"
EMAIL = "alice.example@example.org"
DEVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
TITLE = "Quarterly board review"


def _curl_has_http2() -> bool:
    if CURL is None:
        return False
    out = subprocess.run([CURL, "--version"], capture_output=True, text=True, timeout=10).stdout
    return "HTTP2" in out


def _wait_for(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _spki_hash(ca: Path) -> str:
    cert = x509.load_pem_x509_certificate(ca.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert CURL
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # only the proxy a test names
    r = subprocess.run(
        [CURL, "-sS", "--fail", "-o", "/dev/null", "-w", "%{http_version}", *args], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path)
    yield s
    s.close()


@pytest.fixture
def web_sink(tmp_path: Path) -> Iterator[WebSink]:
    s = WebSink(tmp_path, PAGE_HOST)
    yield s
    s.close()


@pytest.fixture
def netns() -> Iterator[Netns]:
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    ns = Netns.create()
    try:
        yield ns
    finally:
        ns.close()


def _host(r: Any) -> str:
    return str(r.host).split(":")[0]


# -- 1. a real browser running real telemetry SDKs ---------------------------------------------


def _chromium(netns: Netns, proxy: Mitmdump, profile: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    assert CHROMIUM
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-pings",
        "--disable-dev-shm-usage",
        "--metrics-recording-only",
        "--disable-features=WebRtcHideLocalIpsWithMdns,OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
        # the proxy (on the host's end of the veth pair) is the only route: names never resolve, loopback is not bypassed,
        # WebRTC sends no UDP of its own
        f"--proxy-server={proxy.url}",
        "--proxy-bypass-list=<-loopback>",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {proxy.host}",  # the proxy address is looked up too
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        f"--ignore-certificate-errors-spki-list={_spki_hash(proxy.ca)}",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        url,
    ]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("GOOGLE_")}
    env["HOME"] = str(profile)
    with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
        return netns.popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT, start_new_session=True)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End the browser we started: its own process group (start_new_session), by id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.skipif(not (BROWSER / "dist" / "bundle.js").exists(), reason="tests/support/browser/dist/bundle.js missing (npm ci && npm run build)")
def test_headless_chromium_with_real_sdks(tmp_path: Path, web_sink: WebSink, netns: Netns) -> None:
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, web_sink.port, out, host=netns.host_ip)  # the host end of the veth pair
    browser_log = tmp_path / "chromium.log"
    try:
        browser = _chromium(netns, proxy, tmp_path / "profile", f"https://{PAGE_HOST}{ROOM}", browser_log)
        try:
            finished = web_sink.state.done.wait(45)
            if finished:  # the sink has /done; wait for its response to pass the proxy and be recorded (rows: once the proxy is quiet)
                _wait_for(lambda: any(r["path"] == "/done" for r in read_rows(out, "http").to_pylist()), 10)
        finally:
            _stop_group(browser)
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()[-3000:]
    log_tail = browser_log.read_text(errors="replace")[-4000:]
    assert finished, f"the page did not finish; chromium said:\n{log_tail}\nmitmdump said:\n{proxy.logfile.read_text()[-3000:]}"
    report = web_sink.state.report
    assert report.get("errors") == [], report
    assert report.get("steps") == ["sentry", "amplitude", "rtcstats"], report

    rows = pq.read_table(out / "http.parquet").to_pylist()
    fields = pq.read_table(out / "fields.parquet").to_pylist()
    assert read_rows(out, "http").num_rows == len(rows)
    received = web_sink.received
    # every request the page made reached the sink and was recorded, with the body as it arrived
    http_rows = [r for r in rows if r["kind"] == "http"]

    def ours(host: str) -> bool:  # not Chromium's own background requests (to Google), which may be cut off when it is stopped
        return not host.endswith((".google.com", ".googleapis.com"))

    answered = sorted((r["host"], r["method"], r["path"].split("?")[0], r["body_bytes_out"]) for r in http_rows if ours(r["host"]))
    assert answered == sorted((_host(x), x.method, x.path.split("?")[0], len(x.body)) for x in received if ours(_host(x)))
    assert all(r["status"] is not None and r["error"] is None for r in http_rows if ours(r["host"]))

    def one(host: str, method: str) -> tuple[dict[str, Any], Any]:
        (row,) = [r for r in http_rows if r["host"] == host and r["method"] == method]
        (got,) = [x for x in received if _host(x) == host and x.method == method]
        assert row["body_bytes_out"] == len(got.body) and row["status"] in (200, 101), (row, got)
        return row, got

    def detectors(row: dict[str, Any]) -> set[str]:
        return {d for f in fields if f["exchange_id"] == row["exchange_id"] for d in f["detectors"]}

    # the page and its script: first party web assets / unknown, no fields inventoried from GETs
    gets = [r for r in http_rows if r["host"] == PAGE_HOST and r["method"] == "GET"]
    assert {r["path"] for r in gets} >= {ROOM, "/bundle.js"}
    (bundle,) = [r for r in gets if r["path"] == "/bundle.js"]
    assert bundle["category"] == "web_asset" and bundle["body_bytes_in"] == (BROWSER / "dist" / "bundle.js").stat().st_size

    # Sentry: an envelope over fetch
    sentry, got = one("o4501.ingest.sentry.io", "POST")
    assert (sentry["vendor"], sentry["category"], sentry["data_class"], sentry["party"]) == ("sentry", "telemetry", "service_generated", "third")
    assert sentry["body_format"] == "sentry_envelope", sentry
    assert sentry["path"].startswith("/api/4502/envelope/") and "abc123def456" not in sentry["path"]  # the key in the query is redacted
    assert "email" in detectors(sentry), detectors(sentry)

    # Amplitude: JSON after a CORS preflight
    amp, got = one("api2.amplitude.com", "POST")
    assert (amp["vendor"], amp["category"], amp["data_class"], amp["party"]) == ("amplitude", "telemetry", "service_generated", "third")
    assert amp["body_format"] == "json" and amp["path"] == "/2/httpapi"
    assert amp["decoded_bytes_out"] == len(got.body)
    assert {"email", "meeting_title"} <= detectors(amp), detectors(amp)
    preflight = [r for r in http_rows if r["host"] == "api2.amplitude.com" and r["method"] == "OPTIONS"]
    assert len(preflight) == 1 and preflight[0]["body_bytes_out"] == 0

    # rtcstats: the websocket upgrade, then one row per message in each direction
    (upgrade,) = [r for r in http_rows if r["host"] == "rtcstats-server-8x8.jitsi.net"]
    assert upgrade["status"] == 101 and upgrade["path"] == ROOM
    assert (upgrade["vendor"], upgrade["service"], upgrade["category"]) == ("jitsi", "rtcstats", "telemetry")
    ws_rows = [r for r in rows if r["kind"] == "websocket"]
    sent = [m for m in web_sink.ws if m.from_client]
    back = [m for m in web_sink.ws if not m.from_client]
    assert len(sent) >= 3, sent  # identity, create, getstats ...
    out_rows = [r for r in ws_rows if r["direction"] == "out"]
    in_rows = [r for r in ws_rows if r["direction"] == "in"]
    assert len(out_rows) == len(sent) and len(in_rows) == len(back)
    assert sorted(r["body_bytes_out"] for r in out_rows) == sorted(len(m.content) for m in sent)
    assert sorted(r["body_bytes_in"] for r in in_rows) == sorted(len(m.content) for m in back)
    assert all(r["body_bytes_out"] == 0 for r in in_rows) and all(r["body_bytes_in"] == 0 for r in out_rows)
    assert all(r["host"] == "rtcstats-server-8x8.jitsi.net" and r["scheme"] == "wss" and r["vendor"] == "jitsi" for r in ws_rows)
    assert all(r["category"] == "telemetry" for r in out_rows), {r["category"] for r in out_rows}
    assert all(r["exchange_id"].startswith(upgrade["exchange_id"] + ":") for r in ws_rows)
    identity = [m for m in sent if m.content.startswith(b'["identity"')]
    assert len(identity) == 1
    (id_row,) = [r for r in out_rows if r["body_sha256"] and r["body_bytes_out"] == len(identity[0].content) and detectors(r)]
    assert {"email", "meeting_title"} <= detectors(id_row), detectors(id_row)

    # values are stored as salted hashes only
    text = json.dumps([rows, fields], default=str)
    for secret in (EMAIL, DEVICE, TITLE):
        assert secret not in text
    assert all(f["value"] is None and f["value_hash"] for f in fields)

    session = json.loads((out / "session.json").read_text())
    assert session["http"]["exchanges"] == len(http_rows) and session["http"]["websocket_messages"] == len(ws_rows)


# -- 2. HTTP/2 between client and proxy ----------------------------------------------------------


@pytest.mark.skipif(not _curl_has_http2(), reason="curl with HTTP/2 not installed")
def test_http2_clients_are_recorded_as_http2(tmp_path: Path, sink: Sink) -> None:
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out)
    body = json.dumps({"batch": [{"type": "track", "event": "Call Started", "properties": {"email": EMAIL, "meeting_title": TITLE}}]})
    try:
        common = ["--proxy", proxy.url, "--cacert", str(proxy.ca), "-H", "content-type: application/json"]
        v2 = _curl(*common, "--http2", "--data", body, "https://api.segment.io/v1/batch")
        v1 = _curl(*common, "--http1.1", "--data", body, "https://api.segment.io/v1/batch")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()
    assert (v2.stdout, v1.stdout) == ("2", "1.1")
    rows = sorted(read_rows(out, "http").to_pylist(), key=lambda r: r["ts_start"])
    assert [r["http_version"] for r in rows] == ["HTTP/2.0", "HTTP/1.1"]
    assert len(sink.received) == 2 and all(len(x.body) == len(body) for x in sink.received)
    for r in rows:
        assert (r["host"], r["vendor"], r["category"], r["method"], r["status"]) == ("api.segment.io", "segment", "telemetry", "POST", 200)
        assert r["body_bytes_out"] == r["decoded_bytes_out"] == len(body)
        assert r["bytes_out"] > len(body)
    fields = read_rows(out, "fields").to_pylist()
    for r in rows:
        assert {"email", "meeting_title"} <= {d for f in fields if f["exchange_id"] == r["exchange_id"] for d in f["detectors"]}


# -- 3. reverse and upstream modes ------------------------------------------------------------------


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_reverse_mode(tmp_path: Path, sink: Sink) -> None:
    """A reverse proxy for the vendor's host (the client reaches it through DNS or /etc/hosts; here curl --resolve)."""
    out = tmp_path / "audit"
    proxy = audit_proxy(tmp_path, sink.port, out, "mode=reverse:https://api.segment.io")
    body = json.dumps({"batch": [{"type": "identify", "event": "Signed In", "traits": {"email": EMAIL}}]})
    try:
        _curl(
            "--cacert",
            str(proxy.ca),
            "--resolve",
            f"api.segment.io:{proxy.port}:127.0.0.1",
            "-H",
            "content-type: application/json",
            "--data",
            body,
            f"https://api.segment.io:{proxy.port}/v1/batch",
        )
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()
    (row,) = read_rows(out, "http").to_pylist()
    (got,) = sink.received
    assert _host(got) == "api.segment.io" and len(got.body) == len(body)
    assert (row["host"], row["vendor"], row["category"], row["party"], row["status"]) == ("api.segment.io", "segment", "telemetry", "third", 200)
    assert row["body_bytes_out"] == len(body) and row["remote_ip"] == "127.0.0.1" and row["remote_port"] == sink.port
    session = json.loads((out / "session.json").read_text())
    assert session["http"]["mode"] == ["reverse:https://api.segment.io"]


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_upstream_mode(tmp_path: Path, sink: Sink) -> None:
    """The audit proxy chained in front of another proxy (here a second mitmdump, regular mode, that sends everything to the sink)."""
    upstream_out = tmp_path / "upstream-audit"
    upstream = audit_proxy(tmp_path, sink.port, upstream_out, name="upstream")
    out = tmp_path / "audit"
    # the audit proxy itself only ever connects to the upstream proxy on 127.0.0.1
    proxy = Mitmdump(tmp_path, "front", [ADDON], f"mode=upstream:{upstream.url}", f"egressaudit_dir={out}")
    body = json.dumps({"events": [{"event_type": "meeting_joined", "user_id": EMAIL, "device_id": DEVICE}]})
    try:
        _curl(
            "--proxy",
            proxy.url,
            "--cacert",
            str(proxy.ca),
            "-H",
            "content-type: application/json",
            "--data",
            body,
            "https://api2.amplitude.com/2/httpapi",
        )
        _curl("--proxy", proxy.url, "--cacert", str(proxy.ca), "--data", "a=1", "https://log.zoom.us/v1/log?token=s3cr3t")
    finally:
        assert proxy.stop() == 0, proxy.logfile.read_text()
        assert upstream.stop() == 0, upstream.logfile.read_text()
    rows = sorted(read_rows(out, "http").to_pylist(), key=lambda r: r["ts_start"])
    assert [(r["host"], r["scheme"]) for r in rows] == [("api2.amplitude.com", "https"), ("log.zoom.us", "https")]
    amp, log = rows
    (got_amp,) = [x for x in sink.received if _host(x) == "api2.amplitude.com"]
    assert (amp["vendor"], amp["category"], amp["status"]) == ("amplitude", "telemetry", 200)
    assert amp["body_bytes_out"] == len(got_amp.body) == len(body)
    assert (log["vendor"], log["category"], log["path"]) == ("zoom", "telemetry", "/v1/log?token=…")
    # the upstream proxy, auditing too, saw the same exchanges
    up_rows = sorted(read_rows(upstream_out, "http").to_pylist(), key=lambda r: r["ts_start"])
    assert [(r["host"], r["category"], r["body_bytes_out"]) for r in up_rows] == [
        (r["host"], r["category"], r["body_bytes_out"]) for r in rows
    ]
    assert "email" in {d for f in read_rows(out, "fields").to_pylist() for d in f["detectors"]}
    # the connection went to the upstream proxy: that is the server address the row should carry
    assert (amp["remote_ip"], amp["remote_port"]) == ("127.0.0.1", upstream.port)


# -- 4. transparent mode ---------------------------------------------------------------------------


@pytest.mark.skipif(CURL is None or IPTABLES is None, reason="curl and iptables needed (apt-get install curl iptables)")
def test_transparent_mode(tmp_path: Path, netns: Netns) -> None:
    """The proxy where traffic is redirected to it (a gateway): nothing names a proxy.

    In the test's namespace iptables REDIRECTs TCP port 443 arriving on the veth pair to a transparent mitmdump,
    which learns the original destination from conntrack; the sink runs there too, on the namespace's loopback.
    curl, on this host, connects to api.segment.io "directly": --resolve sends it to the namespace's address.
    """
    port = 8080  # the namespace is new: nothing else listens in it
    assert IPTABLES
    netns.run(IPTABLES, "-t", "nat", "-A", "PREROUTING", "-i", netns.ns_if, "-p", "tcp", "--dport", "443", "-j", "REDIRECT", "--to-ports", str(port))
    sink = netns.popen([sys.executable, "-m", "tests.support.sink", str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert sink.stdin and sink.stdout
    out = tmp_path / "audit"
    body = json.dumps({"batch": [{"type": "track", "event": "Call Started", "properties": {"email": EMAIL, "meeting_title": TITLE}}]})
    try:
        sink_port = int(sink.stdout.readline())
        proxy = audit_proxy(tmp_path, sink_port, out, "mode=transparent", host=netns.ns_ip, port=port, prefix=netns.exec)
        try:
            _curl(
                "--cacert",
                str(proxy.ca),
                "--resolve",
                f"api.segment.io:443:{netns.ns_ip}",
                "-H",
                "content-type: application/json",
                "--data",
                body,
                "https://api.segment.io/v1/batch",
            )
        finally:
            assert proxy.stop() == 0, proxy.logfile.read_text()
    finally:
        printed, _ = sink.communicate(timeout=30)  # closing its stdin ends it; it prints what it received
    received = [json.loads(line) for line in printed.decode().splitlines()]
    assert received == [{"method": "POST", "host": "api.segment.io", "path": "/v1/batch", "body_bytes": len(body)}]
    (row,) = read_rows(out, "http").to_pylist()
    assert (row["host"], row["vendor"], row["category"], row["party"], row["status"]) == ("api.segment.io", "segment", "telemetry", "third", 200)
    assert row["body_bytes_out"] == len(body) and row["remote_ip"] == "127.0.0.1" and row["remote_port"] == sink_port
    assert {"email", "meeting_title"} <= {d for f in read_rows(out, "fields").to_pylist() for d in f["detectors"]}
    session = json.loads((out / "session.json").read_text())
    assert session["http"]["mode"] == ["transparent"]
