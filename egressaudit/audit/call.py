"""The audited call session (``egressaudit session start``): capture and proxy together, then one finished session.

One supervised run, in this order:

1. the folder is claimed (:func:`egressaudit.session.claimed`: new, or ``--force``) and its recording lock held for
   the whole session; the manifest says ``recording``, with the options, the client command and the host;
2. with ``netns``, the client's network namespace is made (:mod:`egressaudit.netns`: every packet it sends is the
   client's, TCP 80/443 redirected to the proxy, QUIC rejected unless allowed);
3. a managed mitmdump with the addon starts (transparent on the namespace's side of the pair, or a regular proxy on
   loopback), sharing the lock (``egressaudit_lock_fd``);
4. the capture loop (:func:`egressaudit.capture.live.capture`, TPACKET ring) runs in a thread on the pair's host end
   (or ``iface``), reading payloads so that a live view can classify what runs;
5. without a namespace, the kernel's socket table is sampled (:mod:`egressaudit.audit.attribution`) to tie flows and
   exchanges to processes;
6. the client command, if given, starts with the proxy settings and CA in its environment.

It ends on SIGINT, SIGTERM or SIGHUP (a terminal closing), at ``duration``, when the client command exits, or when the
proxy or the capture cannot go on; then :func:`finish`: the client is stopped, the proxy shuts down (its recorder
compacts the HTTP tables), the capture is closed and analysed, every flow and exchange is attributed, exchanges are
joined to the flows that carried them (Community ID, or the client's port and the time when the proxy was
transparent), the audited client is settled once over both tables and the manifest says ``complete``.

A session whose supervisor was killed outright (SIGKILL, a crash) stays ``recording``: :func:`recover` finishes it
from what reached disk (the pcapng flushed every half second, the HTTP part files and spool, the socket log) and says
what was lost.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from egressaudit.audit.analyze import AnalyzeOptions, analyze, flow_facts
from egressaudit.audit.files import join_http_to_flows, keep_signatures, packet_section, signature_info
from egressaudit.audit.live import capture_section, recovery_inputs
from egressaudit.capture.live import CAPTURE_FILE, CaptureSetupError, LiveStats, capture, capture_files, off_the_terminal
from egressaudit.classify.engine import classify
from egressaudit.classify.party import first_party_vendors
from egressaudit.errors import InputError, OutputError, UsageError
from egressaudit.flows.orient import Orientation, sides
from egressaudit.flows.table import Flow, FlowTable
from egressaudit.session import Manifest, claimed, manifest, now_iso, recording_pid, session_id_for, settle_party, write_table
from egressaudit.session.store import read_rows
from egressaudit.signatures import SignatureDB, database

SOCKETS_FILE = "sockets.jsonl"
"""The socket-table log (:mod:`egressaudit.audit.attribution`): which process owned which socket when."""
PROXY_START_S = 60.0
CLIENT_GRACE_S = 5.0
PROXY_STOP_S = 300.0
LINGER_S = 0.3
"""Seconds the capture goes on after the proxy exited: the last packets of its connections reach the ring."""
LIVE_WINDOW_S = 5.0


@dataclass
class CallOptions:
    """What ``egressaudit session start`` was asked for."""

    out: Path
    command: list[str] = field(default_factory=list)
    client: str | None = None
    label: str | None = None
    iface: str | None = None
    bpf: str | None = None
    duration: float | None = None
    netns: bool = False
    allow_quic: bool = False
    netns_allow: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    process: str | None = None
    port: int = 0
    keep_values: bool = False
    keep_query: bool = False
    keep_bodies: bool = False
    signature_files: list[Path] = field(default_factory=list)
    signatures_path: Path | None = None  # the one --signatures file or folder as given (the proxy's addon takes one path)
    force: bool = False
    confdir: Path | None = None
    idle_timeout: float = 120.0
    local_nets: list[str] = field(default_factory=list)
    client_version: str | None = None
    redirect_ports: list[int] = field(default_factory=list)  # with netns: TCP ports handed to the proxy besides 80 and 443
    rotate_bytes: int | None = None  # a new pcapng file after this many captured bytes ...
    rotate_seconds: float | None = None  # ... or this long
    proxy_options: list[str] = field(default_factory=list)  # mitmproxy KEY=VALUE options (--proxy-set), e.g. an upstream proxy


@dataclass
class Live:
    """What the live view shows, refreshed by the capture thread (plain data: read from another thread)."""

    started: float = field(default_factory=time.time)
    stats: LiveStats | None = None
    rate_by_class: dict[str, float] = field(default_factory=dict)  # egress bytes/s over the last LIVE_WINDOW_S
    rate_by_category: dict[str, float] = field(default_factory=dict)
    top: list[tuple[str, str, str, int]] = field(default_factory=list)  # (destination, vendor, party, egress bytes)
    exchanges: int = 0
    markers: list[tuple[str, str]] = field(default_factory=list)  # (HH:MM:SS, state), every source


class Signals:
    """SIGINT, SIGTERM and SIGHUP from before the session starts until it is finished: the first ends the session
    (``ending``); later ones are said and otherwise ignored, so that a second Ctrl-C cannot leave a namespace, its
    rules or a half-written folder behind (SIGKILL still can: ``session recover`` and ``session cleanup`` are for that).
    Signals ignored when the command started (``nohup``) stay ignored."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.ending = threading.Event()
        self.stopped_by = ""
        self.previous: dict[int, Any] = {}
        self.terminal = [fd for fd in (1, 2) if os.isatty(fd)]  # (asked now: a hung-up terminal may no longer say it is one)
        self.said = False

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                handler = signal.getsignal(sig)
                if handler is not signal.SIG_IGN and handler is not None:
                    self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:  # the terminal is gone: what the view and the summary would print there goes nowhere
            off_the_terminal(self.terminal)
        if not self.ending.is_set():
            self.stopped_by = f"signal:{signal.Signals(signum).name}"
            self.ending.set()
        elif not self.said:
            self.said = True
            with contextlib.suppress(OSError):
                self.say("finishing the session; please wait (killed now, it is left for `egressaudit session recover`)")

    def check(self) -> None:
        """During start: a signal there ends the command before anything is recorded."""
        if self.ending.is_set():
            raise KeyboardInterrupt


@dataclass
class Running:
    """The parts of a running session, for :func:`finish`."""

    opts: CallOptions
    db: SignatureDB
    out: Path
    signals: Signals
    stop: threading.Event = field(default_factory=threading.Event)  # the capture is to stop (after the client and the proxy)
    stopped_by: str = ""
    proxy: subprocess.Popen[bytes] | None = None
    proxy_code: int | None = None
    proxy_log: threading.Thread | None = None
    client: subprocess.Popen[bytes] | None = None
    client_code: int | None = None
    capture_thread: threading.Thread | None = None
    capture_stats: LiveStats | None = None
    capture_error: BaseException | None = None
    sampler: Any = None
    ns: Any = None
    live: Live = field(default_factory=Live)
    salt: bytes = b""
    part_rows: dict[str, int] = field(default_factory=dict)
    markers_mtime: int = 0

    @property
    def ending(self) -> threading.Event:
        """The session is to end: a signal, the capture's end, or :func:`wait` deciding so."""
        return self.signals.ending


# -- setting up ------------------------------------------------------------------------------------------------------


def host_info() -> dict[str, str]:
    """The host the session ran on (manifest ``call.host``)."""
    pretty = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    return {"os": pretty or platform.system(), "kernel": platform.release(), "machine": platform.machine(), "python": platform.python_version()}


def client_version(command: Sequence[str]) -> str | None:
    """The client's version when it is cheap and safe to ask: browsers and command-line tools answer ``--version``
    and exit; a desktop client is not started twice (None: give --client-version)."""
    if not command:
        return None
    exe = shutil.which(command[0])
    if exe is None:
        return None
    if Path(exe).name not in {"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "firefox", "curl", "wget", "node"}:
        return None
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0][:200] if r.returncode == 0 and first else None


def default_iface() -> str:
    """The interface a packet to the internet would leave by (the kernel's route lookup, as ``ip route get`` asks
    it: metrics, policy rules and a VPN's split routes included; nothing is sent); UsageError when there is none."""
    import json

    for probe in ("192.0.2.1", "2001:db8::1"):  # (documentation addresses: only looked up, never sent to)
        try:
            r = subprocess.run(["ip", "-j", "route", "get", probe], capture_output=True, text=True, timeout=10)
            dev = json.loads(r.stdout)[0].get("dev") if r.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError, AttributeError):
            dev = None
        if dev and dev != "lo":
            return str(dev)
    raise UsageError("no route out of this host to capture on: give --iface (or --netns)")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening(pid: int, port: int) -> bool:
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for p in procs for c in p.net_connections("tcp"))
    except psutil.Error:
        return False


def client_env(proxy_url: str | None, ca: Path, out: Path) -> dict[str, str]:
    """What the client command gets besides the environment it was started from: the proxy (unless the namespace
    intercepts it anyway), the CA to trust, and the session folder for ``egressaudit session mark``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    if proxy_url:
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[k] = proxy_url
    for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        env[k] = str(ca)
    env["EGRESSAUDIT_SESSION"] = str(out.resolve())
    return env


def instructions(r: Running, listen: str, port: int, ca: Path) -> list[str]:
    from egressaudit.http.proxy import spki_hash

    lines = [f"session {r.out}: capturing on {r.live.stats.iface if r.live.stats else r.opts.iface}"]
    if r.ns is not None:
        lines += [
            f"client network namespace {r.ns.name} ({r.ns.ns_ip}); TCP 80/443 goes through the proxy on {listen}:{port} (transparent)"
            + ("" if r.opts.allow_quic else "; QUIC (UDP 443) is blocked"),
            f"  run a client in it:  ip netns exec {r.ns.name} COMMAND",
        ]
    else:
        lines += [
            f"proxy: http://{listen}:{port}",
            f"  environment:  HTTP_PROXY=http://{listen}:{port} HTTPS_PROXY=http://{listen}:{port}",
            f"  Chromium:     --proxy-server=http://{listen}:{port} --ignore-certificate-errors-spki-list={spki_hash(ca)}",
        ]
    lines += [
        f"CA certificate to trust: {ca}  (SSL_CERT_FILE / NODE_EXTRA_CA_CERTS; Chromium: --ignore-certificate-errors-spki-list={spki_hash(ca)})",
        f"mark what happens:  egressaudit session mark muted --session {r.out}   (or EGRESSAUDIT_SESSION={r.out})",
        "stop: Ctrl-C" + (f" (or after {r.opts.duration:g} s)" if r.opts.duration else ""),
    ]
    return lines


def start(opts: CallOptions, say: Callable[[str], None], claim: Any, db: SignatureDB, signals: Signals) -> Running:
    """Everything of a session up and running (the folder already claimed and locked by the caller); on a failure
    what was started is stopped again (no namespace, rule or process is left) before the error goes on."""
    r = Running(opts, db, opts.out, signals)
    try:
        _start(r, say, claim)
    except BaseException:
        _abandon(r)
        raise
    return r


def _start(r: Running, say: Callable[[str], None], claim: Any) -> None:
    from egressaudit.audit.attribution import SocketSampler
    from egressaudit.http.proxy import ensure_ca, mitmdump_args
    from egressaudit.http.recorder import load_salt
    from egressaudit.netns import Namespace

    opts, db = r.opts, r.db
    r.salt = load_salt(opts.out)
    conf = ensure_ca(opts.confdir)
    ca = conf / "mitmproxy-ca-cert.pem"
    if opts.netns:
        r.ns = Namespace.create()
        listen, modes = r.ns.host_ip, ["transparent"]
        port = opts.port or _free_port(listen)
        r.ns.route_out(proxy_port=port, allow_quic=opts.allow_quic, allow=opts.netns_allow, dns=opts.dns, redirect=opts.redirect_ports)
        iface = r.ns.host_if
        local_nets = [f"{r.ns.ns_ip}/32", *opts.local_nets]  # the client; the host end (its gateway) is a remote on the local net
    else:
        listen, modes = "127.0.0.1", ["regular"]
        port = opts.port or _free_port(listen)
        iface = opts.iface or default_iface()
        local_nets = list(opts.local_nets)
    r.opts.iface = iface

    def started(m: Manifest) -> None:
        m.state = "recording"
        m.label = opts.label
        m.signatures = manifest.Signatures(**signature_info(db))
        m.signature_files = [str(f) for f in opts.signature_files]
        m.local_nets = local_nets
        m.idle_timeout_s = opts.idle_timeout
        if opts.client:
            m.audited_client, m.audited_client_source = opts.client, "option"
        m.capture = {"iface": iface, "filter": opts.bpf, "started": now_iso()}
        m.call = {
            "command": list(opts.command),
            "client_version": opts.client_version or client_version(opts.command),
            "netns": r.ns.name if r.ns is not None else None,
            "netns_subnet": r.ns.subnet if r.ns is not None else None,
            "allow_quic": opts.allow_quic,
            "redirected_ports": sorted({80, 443, *opts.redirect_ports}) if r.ns is not None else None,
            "process": opts.process,
            "proxy": {"listen": f"{listen}:{port}", "mode": modes[0]},
            "attribution": "netns" if r.ns is not None else "socket-table",
            "host": host_info(),
            "started": now_iso(),
            "supervisor_pid": os.getpid(),
        }

    manifest.update(opts.out, started, session_id=session_id_for(opts.out))
    keep_signatures(opts.out, opts.signature_files)

    # the proxy, sharing the folder's recording lock
    lock_fd = claim.lock.fileno()
    extra = ["--set", f"egressaudit_lock_fd={lock_fd}"]
    if opts.signatures_path is not None:
        extra += ["--set", f"egressaudit_signatures={opts.signatures_path.resolve()}"]
    for kv in opts.proxy_options:
        extra += ["--set", kv]
    args = mitmdump_args(
        opts.out, conf, port=port, listen_host=listen, modes=modes, client=opts.client, keep_values=opts.keep_values,
        keep_query=opts.keep_query, keep_bodies=opts.keep_bodies, extra=extra,
    )  # fmt: skip
    # (the child asks for SIGTERM when this process dies, however it dies, itself: no preexec_fn, which is unsafe once
    # threads run, as the live view's do)
    boot = (
        f"from egressaudit.http.proxy import _die_with_parent; _die_with_parent({os.getpid()}); "
        "import sys; sys.argv[0] = 'mitmdump'; from mitmproxy.tools.main import mitmdump; mitmdump()"
    )
    r.proxy = subprocess.Popen([sys.executable, "-c", boot, *args], pass_fds=(lock_fd,), start_new_session=True, stderr=subprocess.PIPE)
    assert r.proxy.stderr is not None
    r.proxy_log = threading.Thread(target=relay_proxy_stderr, args=(r.proxy.stderr, opts.out / PROXY_LOG, say), daemon=True)
    r.proxy_log.start()
    deadline = time.monotonic() + PROXY_START_S
    while not _listening(r.proxy.pid, port):
        r.signals.check()
        if r.proxy.poll() is not None:
            raise OutputError(f"{opts.out}: the proxy (mitmdump) did not start (exit {r.proxy.returncode}; its message is above)")
        if time.monotonic() > deadline:
            raise OutputError(f"{opts.out}: the proxy (mitmdump) did not listen on {listen}:{port} within {PROXY_START_S:g} s")
        time.sleep(0.05)
    manifest.update(opts.out, lambda m: setattr(m, "call", {**(m.call or {}), "proxy_pid": r.proxy.pid if r.proxy else None}))

    # the capture, in a thread (this one handles signals and the view)
    orient = Orientation([], local_nets)
    first = first_party_vendors(opts.client, db) if opts.client else set()
    window: deque[tuple[float, str, str, str, str, int]] = deque()  # (t, class, category, destination, vendor, egress bytes)
    last_out: dict[int, int] = {}

    def account(f: Flow, now: float) -> None:
        sd = sides(f, orient.a_is_local(f))
        if orient.remote_is_local(sd.remote_ip):
            return
        before = last_out.get(id(f), 0)
        if sd.bytes_out <= before:
            return
        last_out[id(f)] = sd.bytes_out
        facts = flow_facts(f, sd, orient)
        v = classify(facts, db)
        window.append((now, v.data_class.value, v.category.value, facts.hostname or facts.remote_ip or "", v.vendor or "", sd.bytes_out - before))

    totals: Counter[tuple[str, str]] = Counter()

    def on_done(f: Flow) -> None:
        account(f, time.time())
        last_out.pop(id(f), None)

    def on_flows(table: FlowTable) -> None:
        now = time.time()
        for f in list(table.flows.values()):
            account(f, now)
        while window and window[0][0] < now - LIVE_WINDOW_S:
            t, _c, _k, dest, vendor, n = window.popleft()
            totals[(dest, vendor)] += n
        by_class: Counter[str] = Counter()
        by_cat: Counter[str] = Counter()
        recent: Counter[tuple[str, str]] = Counter()
        for _t, c, k, dest, vendor, n in window:
            by_class[c] += n
            by_cat[k] += n
            recent[(dest, vendor)] += n
        r.live.rate_by_class = {k: v / LIVE_WINDOW_S for k, v in by_class.items()}
        r.live.rate_by_category = {k: v / LIVE_WINDOW_S for k, v in by_cat.items()}
        top = (totals + recent).most_common(6)
        r.live.top = [(d, v, "first" if v and v in first else ("third" if v else "unknown"), n) for (d, v), n in top]

    def on_progress(s: LiveStats) -> None:
        r.live.stats = s

    def run_capture() -> None:
        try:
            r.capture_stats = capture(
                iface, opts.out, None, bpf=opts.bpf, stop=r.stop, on_progress=on_progress, idle_timeout=opts.idle_timeout,
                inspect_payloads=True, on_flow_done=on_done, on_flows=on_flows, rotate_bytes=opts.rotate_bytes,
                rotate_seconds=opts.rotate_seconds,
            )  # fmt: skip
        except BaseException as e:  # (reported by finish)
            r.capture_error = e
        finally:
            if not r.stop.is_set() and not r.ending.is_set():
                r.stopped_by = r.stopped_by or "capture_ended"
                r.ending.set()

    r.capture_thread = threading.Thread(target=run_capture, name="egressaudit-capture", daemon=True)
    r.capture_thread.start()
    t0 = time.monotonic()
    while r.live.stats is None and r.capture_thread.is_alive() and time.monotonic() - t0 < 10:
        time.sleep(0.02)  # the capture's first progress: the socket is open, packets are recorded from here on
    if r.capture_error is not None:
        raise r.capture_error
    r.signals.check()

    if r.ns is None:
        r.sampler = SocketSampler(opts.out / SOCKETS_FILE, salt=r.salt)
        r.sampler.start()
    for line in instructions(r, listen, port, ca):
        say(line)
    if opts.command:
        env = client_env(None if r.ns is not None else f"http://{listen}:{port}", ca, opts.out)
        try:
            if r.ns is not None:
                r.client = r.ns.popen(list(opts.command), env=env, start_new_session=True)
            else:
                r.client = subprocess.Popen(list(opts.command), env=env, start_new_session=True)
        except OSError as e:
            raise UsageError(f"{opts.command[0]}: cannot start the client: {e.strerror or e}") from None
        say(f"client started (pid {r.client.pid}): {' '.join(opts.command)}")
        manifest.update(opts.out, lambda m: setattr(m, "call", {**(m.call or {}), "client_pid": r.client.pid if r.client else None}))


PROXY_LOG = "proxy.log"
"""mitmdump's messages, all of them (0600): what the user is shown is its one-line messages."""
_TRACEBACK_START = ("Traceback (most recent call last):", "Exception in callback", "Task exception was never retrieved", "Future exception")


def relay_proxy_stderr(stream: Any, log_path: Path, say: Callable[[str], None]) -> None:
    """mitmdump's stderr: every line to ``OUT/proxy.log``; the one-line messages (the addon's errors, mitmproxy's
    warnings) to the user too, but not Python tracebacks (mitmproxy logs asyncio's cancelled connections as tracebacks
    when it shuts down with clients connected): those are counted and said in one line at the end."""
    tracebacks = 0
    inside = False
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for raw in iter(stream.readline, b""):
            with contextlib.suppress(OSError):
                os.write(fd, raw)
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(_TRACEBACK_START):
                inside = True
                tracebacks += 1
                continue
            if inside and (not line or line[0].isspace() or line.startswith(("handle:", "During handling", "The above exception"))
                           or re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", line)):  # fmt: skip
                continue
            inside = False
            with contextlib.suppress(OSError):
                say(line)
    finally:
        os.close(fd)
        stream.close()
    if tracebacks:
        with contextlib.suppress(OSError):
            say(f"the proxy (mitmproxy) logged {tracebacks} internal traceback(s), e.g. connections cancelled as it stopped; see {log_path}")


# -- running ---------------------------------------------------------------------------------------------------------


def count_exchanges(r: Running) -> int:
    """HTTP rows the proxy's recorder has written so far (its part files' row counts, read once per file: a part is
    written whole, by renaming, and never changed)."""
    import pyarrow.parquet as pq

    from egressaudit.session.store import part_files

    for f in part_files(r.out, "http"):
        if f.name not in r.part_rows:
            try:
                r.part_rows[f.name] = pq.read_metadata(f).num_rows
            except (OSError, pa.ArrowException):
                continue  # (being compacted away: counted from the next one)
    return sum(r.part_rows.values())


def read_markers(r: Running) -> None:
    """The session's markers for the live view, from any process (``session mark``, keys), read again when the table
    changed."""
    path = r.out / "markers.parquet"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return
    if mtime == r.markers_mtime:
        return
    t = read_rows(r.out, "markers")
    if t is not None:
        r.live.markers = [(f"{ts:%H:%M:%S}", st) for ts, st in zip(t.column("ts").to_pylist(), t.column("state").to_pylist(), strict=True)]
        r.markers_mtime = mtime


def wait(r: Running, tick: Callable[[Running], None] | None = None) -> None:
    """Until a signal (:class:`Signals`), the duration, the client's exit, or the proxy's or the capture's end; ``tick``
    each second."""
    deadline = time.monotonic() + r.opts.duration if r.opts.duration else None
    try:
        next_tick = time.monotonic()
        while not r.ending.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                r.stopped_by = "duration"
                break
            if r.client is not None and r.client.poll() is not None:
                r.client_code = r.client.returncode
                r.stopped_by = "client_exited"
                break
            if r.proxy is not None and r.proxy.poll() is not None:
                r.proxy_code = r.proxy.returncode
                r.stopped_by = "proxy_exited"
                break
            if tick is not None and now >= next_tick:
                next_tick = now + 1.0
                r.live.exchanges = count_exchanges(r)
                read_markers(r)
                tick(r)
            r.ending.wait(0.1)
    finally:
        r.ending.set()
        r.stopped_by = r.stopped_by or r.signals.stopped_by


# -- finishing -------------------------------------------------------------------------------------------------------


def _stop_client(r: Running) -> None:
    """SIGTERM to the client's process group (what a launcher left running after it exited too), SIGKILL after
    :data:`CLIENT_GRACE_S`."""
    p = r.client
    if p is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + CLIENT_GRACE_S
    while time.monotonic() < deadline and (p.poll() is None or _group_alive(p.pid)):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    r.client_code = p.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_proxy(r: Running) -> None:
    p = r.proxy
    if p is None:
        return
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)  # mitmdump shuts down cleanly: its recorder records what it holds and compacts
        try:
            p.wait(PROXY_STOP_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    r.proxy_code = p.returncode
    if r.proxy_log is not None:
        r.proxy_log.join(10)


def _stop_all(r: Running, linger: float = LINGER_S) -> None:
    """The client first, then the proxy, while the capture and the sampler still run (what a client sends as it quits,
    and the connections' ends, are part of the call); then, after ``linger``, the capture and the namespace."""
    r.ending.set()
    _stop_client(r)
    _stop_proxy(r)
    if r.capture_thread is not None and r.capture_thread.is_alive():
        time.sleep(linger)
    if r.sampler is not None:
        r.sampler.stop()
    r.stop.set()
    if r.capture_thread is not None:
        r.capture_thread.join()
    if r.ns is not None:
        r.ns.close()
        r.ns = None


def finish(r: Running, say: Callable[[str], None]) -> Manifest:
    """Stop everything, then write the finished session (see the module's docstring)."""
    from egressaudit.capture.live import CaptureWriteError

    _stop_all(r)
    if isinstance(r.capture_error, CaptureWriteError):  # a full disk: the session is made of what reached the files
        r.capture_stats = r.capture_error.stats
        if r.capture_stats is not None:
            r.capture_stats.error = r.capture_stats.error or str(r.capture_error.strerror)
    elif r.capture_error is not None:
        raise r.capture_error
    stats = r.capture_stats
    return finalise(
        r.out, r.db, client=r.opts.client, process=r.opts.process, netns=r.opts.netns,
        capture=capture_section(stats, r.opts.bpf) if stats else {"stopped_by": "error", "error": str(r.capture_error)},
        call={"stopped_by": r.stopped_by or "stop", "ended": now_iso(), "client_exit": r.client_code, "proxy_exit": r.proxy_code,
              "client_pid": r.client.pid if r.client is not None else None},
        state="complete", say=say, client_pid=r.client.pid if r.client is not None else None,
        client_name=Path(r.opts.command[0]).name if r.opts.command else None, salt=r.salt,
        cmdline=r.opts.command, proxy_pid=r.proxy.pid if r.proxy is not None else None,
    )  # fmt: skip


def problems(m: Manifest) -> list[str]:
    """What a finished session lacks, one line each (empty: nothing known to be missing): ``session start`` then exits
    6 after its summary."""
    said = []
    call, cap = m.call or {}, m.capture or {}
    if call.get("proxy_exit") not in (0, None):
        said.append(f"the proxy's recording is incomplete (mitmdump exit {call['proxy_exit']}; session.json http.recording says what was lost)")
    if cap.get("stopped_by") in ("write_error", "interface_error", "error"):
        why = cap.get("error") or "see session.json capture"
        said.append(f"the capture stopped early ({cap.get('stopped_by')}: {why}); later packets were not recorded")
    if call.get("stopped_by") == "proxy_exited":
        said.append("the proxy ended before the session did: later exchanges were not recorded")
    return said


def finalise(
    out: Path,
    db: SignatureDB,
    *,
    client: str | None,
    process: str | None,
    netns: bool,
    capture: dict[str, Any],
    call: dict[str, Any],
    state: str,
    say: Callable[[str], None],
    client_pid: int | None = None,
    client_name: str | None = None,
    salt: bytes = b"",
    cmdline: Sequence[str] = (),
    proxy_pid: int | None = None,
) -> Manifest:
    """The packet flows analysed, both tables attributed and joined, the audited client settled, the manifest
    finished.  Also what :func:`recover` runs on a killed session's folder."""
    m, _ = manifest.read(out)
    pcaps = [p for p in capture_files(out) if p.stat().st_size > 0]
    flows: pa.Table | None = None
    result = None
    if pcaps:
        opts = AnalyzeOptions(local_nets=m.local_nets, client=client, idle_timeout=m.idle_timeout_s or 120.0, session_id=session_id_for(out))
        result = analyze(pcaps, opts, db)
        flows = result.table
    http = read_rows(out, "http")
    dropped: dict[str, int] = {}
    attributed: dict[str, dict[str, int]] = {}
    if netns:
        from egressaudit.audit.attribution import cmdline_hash

        cmd_hash = cmdline_hash(salt, cmdline) if cmdline else None
        flows = _netns_attribution(flows, "flows", client_pid, client_name, cmd_hash)
        http = _netns_attribution(http, "http", client_pid, client_name, cmd_hash)
    else:
        from egressaudit.audit import attribution as att

        obs = att.load_observations(out / SOCKETS_FILE)
        proxy_pids = {proxy_pid} if proxy_pid else set()
        if flows is not None:
            flows = att.attribute_flows(flows, obs)
        if http is not None:
            http = att.attribute_http(http, obs)
        if flows is not None and http is not None:
            flows = att.through_proxy(flows, http, proxy_pids)
        if process:
            pids = att.process_tree(obs, process)
            if flows is not None:
                flows, dropped["flows"] = att.restrict(flows, pids)
            if http is not None:
                http, dropped["http"] = att.restrict(http, pids)
    if flows is not None and http is not None:
        http = join_http_to_flows(http, flows)
    mk = read_rows(out, "markers")
    markers = Counter(mk.column("state").to_pylist()) if mk is not None else Counter()
    for name, t in (("flows", flows), ("http", http)):
        if t is not None:
            attributed[name] = {str(k): int(v) for k, v in Counter(t.column("attributed_by").to_pylist()).items()}
    if flows is not None:
        write_table(out, "flows", flows)
        if result is not None and result.streams is not None:  # (the rows of flows --process left out go with them)
            write_table(out, "streams", result.streams.filter(pc.is_in(result.streams.column("flow_id"), flows.column("flow_id"))))
    if http is not None:
        write_table(out, "http", http)

    def finished(m: Manifest) -> None:
        if result is not None:
            packet_section(m, result.session)
        m.state = state  # type: ignore[assignment]
        m.capture = {**(m.capture or {}), **capture}
        m.call = {**(m.call or {}), **call, "attributed": attributed, "excluded_by_process": dropped or None, "markers": markers}

    manifest.update(out, finished)
    settle_party(out, db, client)
    m, _ = manifest.read(out)
    if dropped:
        say(f"--process {process}: left out {dropped.get('flows', 0):,} flows and {dropped.get('http', 0):,} exchanges of other processes")
    return m


def _netns_attribution(t: pa.Table | None, table: str, pid: int | None, name: str | None, cmd_hash: str | None) -> pa.Table | None:
    """Every row of a namespace's session is the client's: attributed by ``netns`` (to the client command's process
    when one was started; its children share the namespace and are counted with it)."""
    if t is None:
        return None
    n = t.num_rows
    cols = {"pid": pa.array([pid] * n, pa.int32()), "process": pa.array([name] * n, pa.string()),
            "cmdline_hash": pa.array([cmd_hash] * n, pa.string()), "attributed_by": pa.array(["netns"] * n, pa.string())}  # fmt: skip
    for k, v in cols.items():
        t = t.set_column(t.schema.get_field_index(k), t.schema.field(k), v)
    return t


# -- the whole run ---------------------------------------------------------------------------------------------------


def record_call(
    opts: CallOptions,
    *,
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    tick: Callable[[Running], None] | None = None,
    started: Callable[[Running], None] | None = None,
    stop: threading.Event | None = None,
) -> Manifest:
    """``egressaudit session start``: set up, run until stopped, finish; the finished session's manifest.

    For a program that runs the session (the lab): ``started`` is called once everything runs (the namespace's name
    is then in ``running.ns.name``), and setting ``stop`` ends the session as Ctrl-C would (``stopped_by`` "stop")."""
    from egressaudit.netns import cleanup

    db = database(list(opts.signature_files))
    if opts.client is not None and opts.client not in db.vendors:
        raise UsageError(f"--client: unknown vendor {opts.client!r}; known: {', '.join(sorted(db.vendors))}")
    if opts.netns and opts.process:
        raise UsageError("--process and --netns: with --netns every packet is the client's already; give one of them")
    if opts.netns:
        from egressaudit.netns import NetnsError, unavailable

        why = unavailable()
        if why is not None:
            raise NetnsError(f"--netns: {why}")
        for name in cleanup():
            say(f"removed the leftovers of an earlier session's namespace {name} (its owner is gone)")
    if opts.iface and not opts.netns:
        check_iface(opts.iface)
    with Signals(say) as signals, claimed(opts.out, force=opts.force) as claim:
        r = start(opts, say, claim, db, signals)  # (a failure here stops what started; the claim removes the folder)
        claim.keep()  # recording: whatever happens now, what reached the folder stays
        try:
            if stop is not None:
                threading.Thread(target=_relay_stop, args=(stop, r), name="egressaudit-stop", daemon=True).start()
            if started is not None:
                started(r)
            wait(r, tick)
        except BaseException:
            _abandon(r)
            raise
        return finish(r, say)


def _relay_stop(stop: threading.Event, r: Running) -> None:
    while not r.ending.is_set():
        if stop.wait(0.2):
            r.stopped_by = r.stopped_by or "stop"
            r.ending.set()
            return


def check_iface(iface: str) -> None:
    """CaptureSetupError (one line, exit 3) for an interface this host does not have, before anything starts."""
    try:
        socket.if_nametoindex(iface)
    except OSError:
        raise CaptureSetupError(f"{iface}: no such interface (see `ip link`)") from None


def _abandon(r: Running) -> None:
    """A failure after start: stop every part; the folder keeps what it recorded, ``recording`` (recover finishes it)."""
    _stop_all(r, linger=0)


# -- recovery --------------------------------------------------------------------------------------------------------


def needs_recovery(folder: Path) -> bool:
    try:
        m, _ = manifest.read(folder)
    except InputError:
        return False
    return m.state == "recording" and m.call is not None


def recover(folder: Path, announce: Callable[[str], None] | None = None) -> Manifest | None:
    """A session whose supervisor was killed: record what the proxy's spool and part files hold, analyse what reached
    capture.pcapng, attribute and join as :func:`finish` does, and mark it ``recovered`` with what was lost."""
    if not needs_recovery(folder):
        return None
    pid = recording_pid(folder)
    if pid is not None:
        raise InputError(f"{folder}: a session is still recording into this folder{f' (pid {pid})' if pid else ''}; stop it first")
    m, _ = manifest.read(folder)
    db, client = recovery_inputs(folder, m)
    call = dict(m.call or {})
    say = announce or (lambda s: None)
    say(f"{folder}: the session did not finish (killed?); recovering what reached disk")
    from egressaudit.http.recorder import load_salt

    if call.get("netns") and os.geteuid() == 0:  # the killed session's namespace, rules and forwarding, if still there
        from egressaudit.netns import cleanup

        try:
            for name in cleanup():
                say(f"removed the namespace {name} a killed session left")
        except OSError as e:
            say(f"warning: could not look for namespaces killed sessions left: {e}")
    with claimed(folder, add=True) as claim:
        http_note = _recover_http(folder, claim, client)
        pcaps = capture_files(folder)
        lost = []
        if not pcaps or all(p.stat().st_size == 0 for p in pcaps):
            lost.append(f"no packet reached {CAPTURE_FILE}")
        else:
            lost.append("the last half second of packets at most (the capture flushes every 0.5 s)")
        if http_note:
            lost.append(http_note)
        m = finalise(
            folder, db, client=client, process=call.get("process"), netns=bool(call.get("netns")),
            capture={"stopped_by": "killed", "recovered": now_iso()},
            call={"stopped_by": "killed", "recovered": now_iso(), "lost": lost},
            state="recovered", say=say, client_pid=call.get("client_pid"), proxy_pid=call.get("proxy_pid"),
            client_name=Path(call["command"][0]).name if call.get("command") else None, cmdline=call.get("command") or (),
            salt=load_salt(folder),
        )  # fmt: skip
    for line in lost:
        say(f"lost: {line}")
    return m


def _recover_http(folder: Path, claim: Any, client: str | None) -> str:
    """Record what a killed proxy's spool holds and compact the part files (a recorder opening the folder does both);
    what could not be, in one line (empty: nothing lost that is known)."""
    from egressaudit.http.recorder import RecorderOptions
    from egressaudit.http.worker import RecorderProcess, RecorderStartError
    from egressaudit.session.store import PARTS, SPOOL

    if not (folder / PARTS).exists() and not (folder / SPOOL).exists():
        return ""
    ropts = RecorderOptions(session_id=session_id_for(folder), client=client)
    try:
        worker = RecorderProcess(folder, ropts, None, lock_fd=claim.lock.fileno())
        worker.wait_ready()
        code = worker.close({})
    except (RecorderStartError, OSError) as e:
        return f"the proxy's part files could not be compacted ({e}); they stay readable as parts"
    return "" if code == 0 else "some exchanges the killed proxy held (see session.json http.recording)"


def summary(m: Manifest, out: Path) -> dict[str, Any]:
    """The numbers of the one-screen summary ``session start`` prints at the end."""
    from egressaudit.session import open_session

    s = open_session(out)
    f, h, mk = s.flows, s.http, s.markers
    egress = f[~f["is_local"].astype(bool)] if len(f) else f
    by_class = egress.groupby("data_class")["bytes_out"].sum().to_dict() if len(egress) else {}
    top: list[tuple[str, str, str, int]] = []
    if len(egress):
        g = egress.assign(dest=egress["hostname"].fillna(egress["remote_ip"])).groupby(["dest", "vendor", "party"], dropna=False)["bytes_out"].sum()
        for key, n in g.sort_values(ascending=False).head(5).items():
            parts: tuple[Any, ...] = key  # type: ignore[assignment]
            top.append((str(parts[0]), parts[1] if isinstance(parts[1], str) else "", str(parts[2]), int(n)))
    return {
        "packets": int((m.counts or {}).get("packets", 0)),
        "flows": len(f),
        "exchanges": len(h),
        "egress_by_class": {str(k): int(v) for k, v in by_class.items()},
        "top": top,
        "markers": len(mk),
        "client": m.audited_client,
        "attributed": (m.call or {}).get("attributed"),
        "stopped_by": (m.call or {}).get("stopped_by"),
        "duration_s": (m.capture or {}).get("elapsed_s"),
        "drops": (m.capture or {}).get("kernel_drops"),
    }
