"""``egressaudit session start`` end to end, with real parts (issue 13, point 8).

The "internet" is a network namespace of the test's own (tests/support/netns.py) holding an HTTPS sink on port 443
and a UDP listener; the client runs in the namespace ``session start --netns`` makes, whose traffic leaves through the
auditor: a real capture on the pair's host end, a real transparent mitmdump, real NAT.  ``--netns-allow`` limits what
is forwarded to the test's server namespace, and ``--dns`` points the client's resolver there: no packet leaves the
machine.  Markers come from a second process; a session killed with SIGKILL is finished by ``session recover``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import egressaudit as ea
from tests.support.netns import Netns, netns_unavailable
from tests.support.signals import as_in_a_terminal

ROOT = Path(__file__).resolve().parents[1]
EGRESSAUDIT = [sys.executable, "-m", "egressaudit"]
CHROMIUM = shutil.which("chromium")

pytestmark = [pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable())), pytest.mark.timeout(300)]


class Server:
    """The test's "internet": a namespace with an HTTPS sink on 443 and a UDP listener on 5004 and 443 (counting)."""

    def __init__(self, tmp: Path) -> None:
        self.ns = Netns.create()
        self.ip = self.ns.ns_ip
        # a second address there, outside the sessions' --netns-allow (the sink answers on it too)
        third = self.ip.split(".")[2]
        self.other_ip = f"10.97.{third}.1"
        self.ns.run("ip", "addr", "add", f"{self.other_ip}/32", "dev", "lo")
        subprocess.run(["ip", "route", "add", f"{self.other_ip}/32", "via", self.ip], check=True)
        self.sink = self.ns.popen(
            [sys.executable, "-m", "tests.support.sink", str(tmp), "0.0.0.0", "443"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.sink.stdout is not None
        assert self.sink.stdout.readline().strip() == b"443"
        udp = textwrap.dedent(
            f"""
            import selectors, socket, sys
            sel = selectors.DefaultSelector()
            counts = {{}}
            for port in (5004, 443):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{self.ip}", port)); s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, port); counts[port] = 0
            sel.register(sys.stdin, selectors.EVENT_READ, None)
            print("ready", flush=True)
            while True:
                for key, _ in sel.select():
                    if key.data is None:
                        print(counts, flush=True); sys.exit(0)
                    data, addr = key.fileobj.recvfrom(65535); counts[key.data] += 1
                    key.fileobj.sendto(data[:32], addr)
            """
        )
        self.udp = self.ns.popen([sys.executable, "-c", udp], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # type: ignore[call-overload]
        assert self.udp.stdout.readline().strip() == "ready"

    def received(self) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """Stop both servers; what the sink received and the UDP datagrams per port."""
        assert self.sink.stdin is not None and self.sink.stdout is not None
        self.sink.stdin.close()
        http = [json.loads(line) for line in self.sink.stdout.read().decode().splitlines() if line.strip()]
        self.sink.wait(30)
        self.udp.stdin.close()
        udp = eval(self.udp.stdout.read().strip().splitlines()[-1])  # noqa: S307 - our own child's dict of ints
        self.udp.wait(30)
        return http, udp

    def close(self) -> None:
        subprocess.run(["ip", "route", "del", f"{self.other_ip}/32"], capture_output=True)
        for p in (self.sink, self.udp):
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
        self.ns.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.close()


NONE_LEFT = {"netns": [], "rules": [], "records": [], "resolv": []}


def _ns_of(out: Path) -> str:
    """The namespace a session (finished or killed) was given, from its manifest."""
    name = json.loads((out / "session.json").read_text())["call"]["netns"]
    assert isinstance(name, str) and name.startswith("eacall-")
    return name


def _leftovers(*names: str) -> dict[str, Any]:
    """What these sessions' namespaces leave on the host, if anything (other sessions may run meanwhile: only these)."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    rules += subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    state = Path("/run/egressaudit/netns")
    return {
        "netns": [ln.split()[0] for ln in ns.splitlines() if ln.split() and ln.split()[0] in names],
        "rules": [ln for ln in rules.splitlines() if any(f"egressaudit:{n}" in ln for n in names)],
        "records": [n for n in names if (state / f"{n}.json").exists()],
        "resolv": [n for n in names if Path("/etc/netns", n).exists()],
    }


def _client_script(ip: str, *, requests: int, pause: float, go: Path | None = None) -> list[str]:
    """A client (Python's own TLS and sockets, the CA from SSL_CERT_FILE as the session sets it): HTTPS POSTs of
    telemetry-looking JSON, RTP-sized UDP to 5004 (not proxied: NAT), one QUIC-looking datagram to UDP 443."""
    code = textwrap.dedent(
        f"""
        import json, os, socket, ssl, sys, time, urllib.request
        from pathlib import Path
        go = {str(go)!r}
        ctx = ssl.create_default_context()  # honours SSL_CERT_FILE: the session's CA
        ctx.check_hostname = False  # (an IP address: mitmproxy's certificate names the address it was asked for)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(1)
        q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        q.sendto(b"\\xc0\\x00\\x00\\x00\\x01" + bytes(1195), ("{ip}", 443))
        for i in range({requests}):
            body = json.dumps({{"event": "heartbeat", "n": i, "device_id": "3f2b9c1e-8a4d-4c2e-9b1a-7d6e5f4a3b2c"}}).encode()
            req = urllib.request.Request("https://{ip}/v1/telemetry", data=body, headers={{"content-type": "application/json"}})
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                assert r.status == 200
            for _ in range(5):
                u.sendto(b"\\x80\\x6f" + bytes(158), ("{ip}", 5004))
            if go != "None":
                while not Path(go).exists():
                    time.sleep(0.05)
            time.sleep({pause})
        print("client done", flush=True)
        """
    )
    return [sys.executable, "-c", code]


def _start(out: Path, server: Server, client: list[str], *extra: str, **kw: Any) -> subprocess.Popen[str]:
    cmd = [*EGRESSAUDIT, "session", "start", "--netns", "--netns-allow", f"{server.ip}/32", "--dns", server.ip,
           "--proxy-set", "ssl_insecure=true", "--out", str(out), *extra, "--", *client]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=as_in_a_terminal, **kw)


def test_netns_session_end_to_end(tmp_path: Path, server: Server) -> None:
    """One session: the client in its namespace, markers from a second process while it runs, the client's exit ends
    it; every flow is the client's, the proxy saw every HTTPS request, UDP went through NAT and was captured, QUIC was
    blocked, the HTTP rows join the flows that carried them, and nothing of the namespace is left."""
    out = tmp_path / "audits" / "call-1"
    go = tmp_path / "go"
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    proc = _start(out, server, _client_script(server.ip, requests=3, pause=0.3, go=go), "--client", "zoom", "--label", "weekly sync")
    # markers from another process, while the session records (the client waits for them)
    deadline = time.monotonic() + 60
    while not (out / "capture.pcapng").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for state in ("joining", "muted"):
        r = subprocess.run([*EGRESSAUDIT, "session", "mark", state, "--session", str(out), "--note", "from a test"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    go.touch()
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    http_received, udp = server.received()

    s = ea.open_session(out)
    m = s.manifest
    assert m.state == "complete" and m.label == "weekly sync" and m.audited_client == "zoom"
    call = m.call or {}
    assert call["stopped_by"] == "client_exited" and call["client_exit"] == 0 and call["proxy_exit"] == 0
    assert call["netns"].startswith("eacall-") and call["proxy"]["mode"] == "transparent"
    assert call["host"]["kernel"] and call["command"][0] == sys.executable
    client_ip = call["netns_subnet"].rsplit(".", 1)[0] + ".2"

    # every packet captured is the client's, attributed by the namespace, to the command it started
    f = s.flows
    assert len(f) > 0 and set(f["local_ip"]) == {client_ip}, f[["local_ip", "remote_ip"]]
    assert set(f["attributed_by"]) == {"netns"} and set(f["pid"]) == {call["client_pid"]}
    tls = f[(f["transport"] == "tcp") & (f["remote_port"] == 443)]
    assert len(tls) == 3 and (tls["remote_ip"] == server.ip).all()  # one connection per urlopen, seen before the redirect
    media = f[(f["transport"] == "udp") & (f["remote_port"] == 5004)]
    assert len(media) == 1 and int(media["packets_out"].iloc[0]) == 15 and int(media["packets_in"].iloc[0]) == 15  # NAT both ways
    quic = f[(f["transport"] == "udp") & (f["remote_port"] == 443)]
    assert len(quic) == 1 and int(quic["packets_in"].iloc[0]) == 0 and udp[443] == 0  # rejected before it left
    assert udp[5004] == 15

    # the proxy saw every request; each row joins the flow that carried it (the client's port and time: transparent)
    h = s.http
    assert len(http_received) == 3 and len(h) == 3
    assert set(h["path"]) == {"/v1/telemetry"} and set(h["attributed_by"]) == {"netns"}
    joined = h.merge(f, left_on="flow_id", right_on="flow_id", suffixes=("", "_flow"))
    assert len(joined) == 3 and (joined["client_port"] == joined["local_port_flow"]).all()
    assert (s.fields["key_path"] == "device_id").any()

    # the markers, from the other process, inside the session's time
    mk = s.markers
    assert list(mk["state"]) == ["joining", "muted"] and set(mk["source"]) == {"cli"}
    assert (mk["ts"] >= f["ts_start"].min() - __import__("pandas").Timedelta(seconds=5)).all()

    # the summary was printed, files are private, nothing of the namespace is left
    assert "client_exited" in text and "next: egressaudit report" in text
    assert "s packets=" in text and " http=" in text  # the live view off a terminal: one line a second
    assert call["markers"] == {"joining": 1, "muted": 1}
    for p in out.iterdir():
        if p.is_file():
            assert p.stat().st_mode & 0o077 == 0, p
    assert _leftovers(call["netns"]) == NONE_LEFT
    if not list(Path("/run/egressaudit/netns").glob("eacall-*.json")):  # (no other session runs: forwarding is as it was)
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before

    r = subprocess.run([*EGRESSAUDIT, "report", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_and_duration_finish_the_session(tmp_path: Path, server: Server, sig: signal.Signals) -> None:
    """Ctrl-C, SIGTERM and SIGHUP each end the session cleanly (the client is stopped, the session complete); a
    --duration ends one by itself."""
    out = tmp_path / "s"
    proc = _start(out, server, _client_script(server.ip, requests=1000, pause=0.2))
    deadline = time.monotonic() + 60
    while not (out / ".parts").exists() or not any((out / ".parts").rglob("*.parquet")):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no exchange recorded"
        time.sleep(0.1)
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    s = ea.open_session(out)
    assert s.manifest.state == "complete" and (s.manifest.call or {})["stopped_by"] == f"signal:{sig.name}"
    assert len(s.http) >= 1 and len(s.flows) >= 1
    assert _leftovers(_ns_of(out)) == NONE_LEFT

    if sig == signal.SIGINT:
        out2 = tmp_path / "timed"
        proc = _start(out2, server, _client_script(server.ip, requests=1000, pause=0.2), "--duration", "3s")
        text, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, text
        m = ea.open_session(out2).manifest
        assert (m.call or {})["stopped_by"] == "duration" and 2.5 < (m.capture or {})["elapsed_s"] < 20


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EGRESSAUDIT, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant at once (a power cut, the OOM killer taking everything)."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_sigkill_then_cleanup_then_recover(tmp_path: Path, server: Server) -> None:
    """Everything SIGKILLed mid-call: the folder stays 'recording'; a second session starts anyway (the dead one's
    namespace and rules are cleaned away), `session cleanup` removes leftovers, and `session recover` finishes the
    killed one from the flushed pcapng and the proxy's part files and spool, saying what was lost."""
    out = tmp_path / "killed"
    proc = _start(out, server, _client_script(server.ip, requests=1000, pause=0.1), "--rotate-time", "1s")
    deadline = time.monotonic() + 60
    while not (out / ".parts").exists() or len(list((out / ".parts").rglob("*.parquet"))) < 2:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no exchange recorded"
        time.sleep(0.1)
    time.sleep(1.0)
    _kill_tree(proc.pid)
    proc.communicate()
    assert json.loads((out / "session.json").read_text())["state"] == "recording"
    left = _leftovers(_ns_of(out))
    assert left["netns"] and left["rules"] and left["records"]  # SIGKILL leaves them: nothing ran to remove them

    # a second session starts anyway: the dead session's namespace is removed first
    out2 = tmp_path / "second"
    proc2 = _start(out2, server, _client_script(server.ip, requests=1, pause=0))
    text2, _ = proc2.communicate(timeout=120)
    assert proc2.returncode == 0, text2
    assert f"removed the leftovers of an earlier session's namespace {_ns_of(out)}" in text2
    assert _leftovers(_ns_of(out), _ns_of(out2)) == NONE_LEFT

    # `session cleanup` when a killed session left things behind
    proc3 = _start(tmp_path / "third", server, _client_script(server.ip, requests=1000, pause=0.1))
    while not (tmp_path / "third" / "capture.pcapng").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    _kill_tree(proc3.pid)
    proc3.communicate()
    third = _ns_of(tmp_path / "third")
    assert _leftovers(third)["netns"] == [third]
    r = subprocess.run([*EGRESSAUDIT, "session", "cleanup"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and third in r.stdout, r.stdout + r.stderr
    assert _leftovers(third) == NONE_LEFT

    # recover the first one
    r = subprocess.run([*EGRESSAUDIT, "session", "recover", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "lost:" in r.stderr and "recovered" in r.stdout
    s = ea.open_session(out)
    assert s.manifest.state == "recovered" and (s.manifest.call or {})["stopped_by"] == "killed"
    from egressaudit.capture.live import capture_files
    from egressaudit.capture.reader import ReadStats, iter_frames

    files = capture_files(out)
    assert len(files) >= 2  # rotated every second; every file is read
    assert (s.manifest.counts or {})["packets"] == sum(sum(1 for _ in iter_frames(f, ReadStats(str(f)))) for f in files)
    assert len(s.flows) > 0 and set(s.flows["attributed_by"]) == {"netns"}
    assert len(s.http) >= 2
    # exchanges the proxy's spool kept but whose packets were still in the capture's buffer when it was killed (its last
    # half second) have no flow; every other one is joined
    unjoined = s.http[s.http["flow_id"].isna()]
    last_packet = s.flows["ts_end"].max()
    assert (unjoined["ts_start"] >= last_packet - __import__("pandas").Timedelta(seconds=1)).all(), unjoined[["ts_start"]]
    assert len(unjoined) < len(s.http) / 2  # (the client sends every 0.1 s: a second holds a few)
    assert not (out / ".parts").exists() or not any((out / ".parts").rglob("*.parquet"))  # compacted
    r = subprocess.run([*EGRESSAUDIT, "session", "recover", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "nothing to recover" in r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_chromium_in_the_namespace(tmp_path: Path, server: Server) -> None:
    """A real browser as the client, with no proxy setting at all: the namespace's redirect hands its HTTPS to the
    proxy (transparent), its DNS goes to the test's server namespace, and the page it loaded is in http.parquet."""
    from egressaudit.http.proxy import ensure_ca, spki_hash

    ca = ensure_ca(None) / "mitmproxy-ca-cert.pem"
    profile = tmp_path / "profile"
    chromium = [
        CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
        "--disable-features=OptimizationHints,MediaRouter,Translate", f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP meet.example.test {server.ip}", f"--ignore-certificate-errors-spki-list={spki_hash(ca)}",
        "--dump-dom", "https://meet.example.test/room",
    ]  # fmt: skip
    out = tmp_path / "browser"
    proc = _start(out, server, chromium, "--duration", "60s")
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, text
    s = ea.open_session(out)
    h = s.http
    got = h[(h["host"] == "meet.example.test") & (h["path"] == "/room")]
    assert len(got) == 1 and got["status"].iloc[0] == 200, h[["host", "path", "status"]]
    assert (s.manifest.call or {})["stopped_by"] == "client_exited"
    assert "chromium" in str((s.manifest.call or {})["client_version"]).lower()
    assert set(s.flows["attributed_by"]) == {"netns"}


def test_without_netns_socket_table_and_process(tmp_path: Path) -> None:
    """No namespace: the proxy is a regular one on loopback, the capture is on ``lo``, and rows are tied to processes
    from the socket table.  --process curl keeps curl's exchanges and flows and leaves out those of another program
    using the same proxy at the same time (counted in the manifest)."""
    from tests.support.sink import Sink

    sink = Sink(tmp_path)
    port = _free_port()
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"event": "meeting_joined", "device_id": "3f2b9c1e-8a4d-4c2e-9b1a-7d6e5f4a3b2c", "pad": "x" * 20000}))
    # the client: curl, slowed down so that its connection lives long enough for any sampler (0.5 s)
    client = ["sh", "-c", f"sleep 1.5; curl -sS --max-time 20 --limit-rate 40k -H 'content-type: application/json' -d @{body} "
              f"https://127.0.0.1:{sink.port}/v1/curl; sleep 1"]  # fmt: skip
    cmd = [*EGRESSAUDIT, "session", "start", "-i", "lo", "--port", str(port), "--process", "curl", "--proxy-set", "ssl_insecure=true",
           "--out", str(tmp_path / "s"), "--", *client]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=as_in_a_terminal)
    try:
        # another program, through the same proxy, meanwhile
        deadline = time.monotonic() + 60
        while not any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        other = textwrap.dedent(
            f"""
            import ssl, time, urllib.request
            ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({{"https": "http://127.0.0.1:{port}"}}),
                                                 urllib.request.HTTPSHandler(context=ctx))
            for i in range(2):
                opener.open(urllib.request.Request("https://127.0.0.1:{sink.port}/v1/other", data=b"x" * 30000), timeout=20).read()
                time.sleep(0.5)
            """
        )
        r = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        text, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sink.close()
    assert proc.returncode == 0, text
    assert sorted(r.path for r in sink.received) == ["/v1/curl", "/v1/other", "/v1/other"]
    s = ea.open_session(tmp_path / "s")
    call = s.manifest.call or {}
    assert call["attribution"] == "socket-table" and call["proxy"]["mode"] == "regular"
    h = s.http
    assert list(h["path"]) == ["/v1/curl"], h[["path", "process", "attributed_by"]]
    assert list(h["process"]) == ["curl"] and list(h["attributed_by"]) == ["socket-table"]
    assert call["excluded_by_process"]["http"] == 2
    f = s.flows
    assert len(f) >= 2 and set(f["process"]) == {"curl"} and set(f["attributed_by"]) == {"socket-table"}
    # the proxy's upstream connection is tied to curl through the exchange it carried, and joined to it
    assert h["flow_id"].notna().all() and int(h["flow_id"].iloc[0]) in set(f["flow_id"])
    assert (tmp_path / "s" / "sockets.jsonl").stat().st_mode & 0o077 == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_view_on_a_terminal_marks_with_keys(tmp_path: Path, server: Server) -> None:
    """On a terminal the live view refreshes (rates by data class and category, top destinations, markers) and a key
    marks a state (source "live"); off a terminal it prints one line a second (the other tests read those)."""
    import pty
    import select as sel

    out = tmp_path / "live"
    go = tmp_path / "go"
    master, slave = pty.openpty()
    cmd = [*EGRESSAUDIT, "session", "start", "--netns", "--netns-allow", f"{server.ip}/32", "--dns", server.ip, "--proxy-set",
           "ssl_insecure=true", "--out", str(out), "--", *_client_script(server.ip, requests=4, pause=0.3, go=go)]  # fmt: skip
    env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=as_in_a_terminal)
    os.close(slave)
    seen = b""

    def read_for(seconds: float, until: bytes | None = None) -> None:
        nonlocal seen
        end = time.monotonic() + seconds
        while time.monotonic() < end and (until is None or until not in seen):
            r, _, _ = sel.select([master], [], [], 0.2)
            if r:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    return

    try:
        read_for(60, b"top destinations")
        assert b"top destinations" in seen and b"egress now" in seen and b"HTTP exchanges" in seen, seen[-2000:]
        r = subprocess.run([*EGRESSAUDIT, "session", "mark", "talking", "--session", str(out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        read_for(5, b"talking")
        assert b"talking" in seen  # a marker from another process shows in the view
        os.write(master, b"m")
        read_for(3, b"muted")
        os.write(master, b"C")
        read_for(3, b"camera-off")
        go.touch()
        read_for(60, b"next: egressaudit report")
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, seen[-3000:].decode(errors="replace")
    mk = ea.open_session(out).markers
    assert list(mk["state"]) == ["talking", "muted", "camera-off"] and list(mk["source"]) == ["cli", "live", "live"]


def test_a_session_that_cannot_start_leaves_nothing(tmp_path: Path) -> None:
    """One line and the documented exit code; no folder, no proxy left running, no namespace or rule."""
    out = tmp_path / "never"
    before = {p.pid for p in psutil.process_iter()}
    r = _run("session", "start", "-i", "nosuchif0", "--out", str(out), "--", "true")
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and "nosuchif0" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before and "mitmdump" in " ".join(p.info["cmdline"] or [])]
    assert not left, left

    r = _run("session", "start", "--netns", "--process", "zoom", "--out", str(out))
    assert r.returncode == 2 and "--process" in r.stderr and not out.exists()
    r = _run("session", "start", "--duration", "soon", "--out", str(out))
    assert r.returncode == 2 and "duration" in r.stderr
    r = _run("session", "start", "--proxy-set", "egressaudit_dir=/x", "--out", str(out))
    assert r.returncode == 2 and "--proxy-set" in r.stderr
    r = _run("session", "start", "--netns", "--dns", "resolver.example", "--out", str(out))
    assert r.returncode == 2 and "not an IP address" in r.stderr
    r = _run("session", "start", "--netns", "--netns-allow", "meet.example.org", "--out", str(out))
    assert r.returncode == 2 and "not a network" in r.stderr

    # with --netns: a filter that cannot be compiled, after the namespace and the proxy are up
    proc = subprocess.Popen([*EGRESSAUDIT, "session", "start", "--netns", "--filter", "not a filter (", "--out", str(out), "--", "true"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3 and stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in stderr, stderr
    assert not out.exists()
    prefix = f"eacall-{proc.pid}-"  # (the namespace's name starts with its owner's pid)
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split() if n.startswith(prefix)]
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    rules += subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert f"egressaudit:{prefix}" not in rules
    assert not list(Path("/run/egressaudit/netns").glob(f"{prefix}*"))


def test_a_terminal_that_hangs_up(tmp_path: Path, server: Server) -> None:
    """The terminal goes away (its master closed: every write to it fails) and SIGHUP arrives: the session finishes
    all the same, printing nowhere."""
    import pty

    out = tmp_path / "hup"
    master, slave = pty.openpty()
    cmd = [*EGRESSAUDIT, "session", "start", "--netns", "--netns-allow", f"{server.ip}/32", "--dns", server.ip, "--proxy-set",
           "ssl_insecure=true", "--out", str(out), "--", *_client_script(server.ip, requests=1000, pause=0.2)]  # fmt: skip
    env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=as_in_a_terminal)
    os.close(slave)
    import select as sel

    deadline = time.monotonic() + 60
    while not (out / ".parts").exists() or not any((out / ".parts").rglob("*.parquet")):
        assert proc.poll() is None
        assert time.monotonic() < deadline
        if sel.select([master], [], [], 0.1)[0]:
            os.read(master, 65536)
    os.close(master)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(120) == 0
    m = ea.open_session(out).manifest
    assert m.state == "complete" and (m.call or {})["stopped_by"] == "signal:SIGHUP"


def test_capture_interface_gone_mid_session(tmp_path: Path) -> None:
    """The captured interface disappears: the session ends there, is finished with what was recorded, and the command
    says in one line that it is incomplete (exit 6)."""
    ns = Netns.create()
    try:
        out = tmp_path / "gone"
        cmd = [*EGRESSAUDIT, "session", "start", "-i", ns.host_if, "--duration", "60s", "--out", str(out)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
        deadline = time.monotonic() + 60
        while not (out / "capture.pcapng").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        send = f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x' * 64, ('{ns.host_ip}', 9)) for _ in range(3)]"
        ns.run(sys.executable, "-c", send)
        subprocess.run(["ip", "link", "del", ns.host_if], check=True)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        ns.close()
    assert proc.returncode == 6, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "capture stopped early" in last and "Traceback" not in stderr, stderr
    s = ea.open_session(out)
    assert s.manifest.state == "complete" and (s.manifest.capture or {})["stopped_by"] == "interface_error"
    assert (s.manifest.call or {})["stopped_by"] == "capture_ended" and len(s.flows) >= 1


def test_allow_list_holds_for_https_too(tmp_path: Path, server: Server) -> None:
    """--netns-allow: HTTPS to an address outside the list is neither forwarded nor handed to the proxy (which would
    connect to it from the host); the host's own services are not reachable from the namespace either."""
    out = tmp_path / "allow"
    code = textwrap.dedent(
        f"""
        import socket, ssl, urllib.request
        ctx = ssl.create_default_context(); ctx.check_hostname = False
        results = []
        for url in ("https://{server.ip}/v1/allowed", "https://{server.other_ip}/v1/forbidden"):
            try:
                urllib.request.urlopen(urllib.request.Request(url, data=b"x"), context=ctx, timeout=5).read()
                results.append("ok")
            except Exception as e:
                results.append(type(e).__name__)
        gw = next(int(c[2], 16) for c in (ln.split() for ln in open("/proc/net/route").read().splitlines()[1:]) if c[1] == "00000000")
        host_ip = socket.inet_ntoa(gw.to_bytes(4, "little"))  # the host's end of the pair, the namespace's gateway
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect((host_ip, HOST_PORT)); results.append("host reachable")
        except OSError as e:
            results.append("host refused")
        print(results, flush=True)
        assert results[0] == "ok" and results[1] != "ok" and results[2] == "host refused", results
        """
    )
    import socket

    listener = socket.socket()  # a service of the host's, on every address: the namespace must not reach it
    listener.bind(("0.0.0.0", 0))
    listener.listen(4)
    try:
        proc = _start(out, server, [sys.executable, "-c", code.replace("HOST_PORT", str(listener.getsockname()[1]))])
        text, _ = proc.communicate(timeout=120)
    finally:
        listener.close()
    assert proc.returncode == 0, text
    http_received, _ = server.received()
    assert [r["path"] for r in http_received] == ["/v1/allowed"]
    s = ea.open_session(out)
    assert list(s.http["path"]) == ["/v1/allowed"]
    assert "'ok'" in text and (s.manifest.call or {})["client_exit"] == 0


def test_a_second_signal_while_finishing_and_goodbye_traffic(tmp_path: Path, server: Server) -> None:
    """The client's goodbye (an HTTPS request it sends when told to quit) is recorded, packets and exchange; a second
    Ctrl-C while the session finishes is said and otherwise ignored: the session still completes, nothing is left."""
    out = tmp_path / "bye"
    code = textwrap.dedent(
        f"""
        import signal, ssl, sys, time, urllib.request
        ctx = ssl.create_default_context(); ctx.check_hostname = False
        def post(path):
            urllib.request.urlopen(urllib.request.Request("https://{server.ip}" + path, data=b'{{"bye": 1}}'), context=ctx, timeout=10).read()
        def bye(signum, frame):
            time.sleep(0.5)  # (a client takes its time to say goodbye)
            post("/v1/goodbye")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        post("/v1/hello")
        while True:
            time.sleep(0.1)
        """
    )
    proc = _start(out, server, [sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not (out / ".parts").exists() or not any((out / ".parts").rglob("*.parquet")):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # while the client says goodbye
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    assert "finishing the session; please wait" in text
    s = ea.open_session(out)
    assert s.manifest.state == "complete" and (s.manifest.call or {})["stopped_by"] == "signal:SIGINT"
    h = s.http.set_index("path")
    assert set(h.index) == {"/v1/hello", "/v1/goodbye"}
    assert h["flow_id"].notna().all()  # the goodbye's packets were captured too
    assert _leftovers(_ns_of(out)) == NONE_LEFT


def test_stdin_not_a_terminal(tmp_path: Path, server: Server) -> None:
    """Output on a terminal, input from elsewhere (a script, </dev/null): the live view runs, without keys."""
    import pty
    import select as sel

    out = tmp_path / "nokeys"
    master, slave = pty.openpty()
    cmd = [*EGRESSAUDIT, "session", "start", "--netns", "--netns-allow", f"{server.ip}/32", "--dns", server.ip, "--proxy-set",
           "ssl_insecure=true", "--out", str(out), "--", *_client_script(server.ip, requests=2, pause=1.0)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, preexec_fn=as_in_a_terminal,
                            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})  # fmt: skip
    os.close(slave)
    seen = b""
    while proc.poll() is None:
        if sel.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    os.close(master)
    assert proc.wait(60) == 0, seen[-3000:]
    assert b"Traceback" not in seen and b"top destinations" in seen


def test_a_program_runs_the_session(tmp_path: Path, server: Server) -> None:
    """The lab's way in: record_call with ``started`` (the namespace is known: a client is started in it by the
    caller) and ``stop`` (set when the caller is done)."""
    import threading

    from egressaudit.audit.call import CallOptions, Running, record_call

    out = tmp_path / "program"
    stop = threading.Event()
    clients: list[subprocess.Popen[bytes]] = []

    def started(r: Running) -> None:
        assert r.ns is not None
        env = {**os.environ, "SSL_CERT_FILE": str(Path.home() / ".egressaudit" / "mitmproxy" / "mitmproxy-ca-cert.pem")}
        cmd = ["ip", "netns", "exec", r.ns.name, *_client_script(server.ip, requests=2, pause=0.2)]
        clients.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))

        def later() -> None:
            clients[0].wait(60)
            stop.set()

        threading.Thread(target=later, daemon=True).start()

    opts = CallOptions(out=out, netns=True, netns_allow=[f"{server.ip}/32"], dns=[server.ip], proxy_options=["ssl_insecure=true"])
    m = record_call(opts, say=lambda s: None, started=started, stop=stop)
    assert clients[0].returncode == 0
    assert m.state == "complete" and (m.call or {})["stopped_by"] == "stop"
    s = ea.open_session(out)
    assert len(s.http) == 2 and set(s.flows["attributed_by"]) == {"netns"}
    assert _leftovers(_ns_of(out)) == NONE_LEFT
