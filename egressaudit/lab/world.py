"""The lab's world: a "cloud" network namespace with Janus, DNS and an HTTPS sink, and participants' namespaces.

::

    participant ns (ealab-*) --veth--> host --veth--> cloud ns (ealab-*, 10.96.X.2)
      chromium (fake devices)   NAT, FORWARD only     janus     wss/8989, udp/20000-20199 (videoroom, textroom)
                                to the cloud /30      dnsmasq   udp+tcp/53: *.lab.test -> the cloud address
                                                      sink      tcp/443: page, telemetry, uploads (python -m egressaudit.lab.sink)

Namespaces are :class:`egressaudit.netns.Namespace` objects with the prefix ``ealab`` on ``10.96.0.0/16``: each is
a /30 joined to the host by its veth pair.  The cloud gets no default route (it can answer only the host, whose
address the participants' traffic is masqueraded behind); participants get ``route_out`` with the cloud's /30 as the
only forwarded destination and the cloud as their resolver, so every packet stays between these namespaces and the
host.  The audited participant's namespace is made by ``egressaudit session start --netns`` with
:meth:`World.session_args`.

:meth:`World.close` (also on any failure in :meth:`World.start`) ends every process it started and removes every
namespace, rule and file.  A lab killed outright leaves namespaces whose owner is gone: :func:`cleanup` (run by the
next :meth:`World.start`) ends what still runs in them and removes them with :func:`egressaudit.netns.cleanup`; the
server processes also get SIGTERM from the kernel when the lab's process dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from egressaudit import netns
from egressaudit.lab import janus
from egressaudit.lab.certs import LabPKI, make_pki

PREFIX = "ealab"
NET = 96
"""Second octet of the lab's addresses (the session's namespaces use 199, the test suite's 98)."""
DOMAIN = "lab.test"
NAMES = ("meet.lab.test", "telemetry.lab.test", "upload.lab.test")
VENDOR_NAMES = ("o4509.ingest.sentry.io", "api2.amplitude.com")
"""The real hosts the page's Sentry and Amplitude SDKs report to, as in an app that embeds them: the lab's DNS answers
them with the cloud (the namespaces have no other way out), so the shipped signatures name those vendors."""
PAGE_DIR = Path(__file__).resolve().parent / "page"
CHROMIUM = "/usr/lib/chromium/chromium"
"""The browser binary itself: Debian's /usr/bin/chromium wrapper adds Google API keys and remote extensions."""
PLANTED = {"email": "alice@lab.test", "device": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "title": "Quarterly budget review"}
"""Identifiers the page puts into its telemetry on purpose (the inventory's truth)."""

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    # what keeps Chromium's own background traffic out (as captures/janus-echo/record.sh found)
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--disable-breakpad",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--disable-field-trial-config",
    "--metrics-recording-only", "--no-pings", "--password-store=basic", "--disable-dev-shm-usage", "--media-router=0",
    "--host-resolver-rules=MAP *.google.com ~NOTFOUND, MAP *.googleapis.com ~NOTFOUND, MAP *.gvt1.com ~NOTFOUND",
    "--disable-features=OptimizationHints,OptimizationHintsFetching,OptimizationGuideModelDownloading,OptimizationTargetPrediction,"
    "MediaRouter,DialMediaRouteProvider,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater,WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--auto-select-desktop-capture-source=Entire screen", "--auto-accept-this-tab-capture",
)  # fmt: skip


class LabError(netns.NetnsError):
    """The lab cannot be built (a missing package, a server that does not start); one line."""


def unavailable() -> str | None:
    """Why the lab's world cannot be built here (one line saying what to install), or None."""
    why = netns.unavailable()
    if why is not None:
        return why
    missing = [pkg for tool, pkg in (("janus", "janus"), ("dnsmasq", "dnsmasq")) if shutil.which(tool) is None]
    if janus.library_dir() is None and "janus" not in missing:
        missing.append("janus")
    if missing:
        return f"the lab needs {', '.join(missing)} (apt-get install -y {' '.join(missing)})"
    return None


def chromium_unavailable() -> str | None:
    return None if os.access(CHROMIUM, os.X_OK) else f"no {CHROMIUM} (apt-get install -y chromium)"


def _die_with_parent() -> None:  # (runs in the child between fork and exec)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cleanup() -> list[str]:
    """Remove what a killed lab left: the processes still running in ``ealab-*`` namespaces whose owner is gone, then
    the namespaces, pairs and rules (:func:`egressaudit.netns.cleanup`); the names removed."""
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    dead: list[str] = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not netns._alive(int(parts[1])):
            dead.append(name)
    for name in dead:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), sig)
            if pids:
                time.sleep(0.5)
    removed = netns.cleanup()
    for name in dead:  # (namespaces with no record: netns.cleanup only knows its own prefix's names)
        if name not in removed:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", f"eah{name.split('-')[2]}"], capture_output=True, timeout=10)
            removed.append(name)
    return removed


class World:
    """The cloud and its servers; :meth:`start` builds it, :meth:`close` removes all (a context manager does both)."""

    def __init__(self, workdir: Path | None = None, *, room: int = janus.ROOM, net: int = NET) -> None:
        self.room = room
        self.net = net
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="egressaudit-lab-")) if workdir is None else workdir
        self.cloud: netns.Namespace | None = None
        self.participants: list[netns.Namespace] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pki: LabPKI | None = None
        self.started_s: float | None = None

    # -- building and removing -----------------------------------------------------------------------------------------

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self, timeout: float = 20.0) -> World:
        """Build the cloud and start its servers (a second call does nothing); LabError in one line if it cannot."""
        if self.cloud is not None:
            return self
        why = unavailable()
        if why is not None:
            raise LabError(f"lab: {why}")
        lib = janus.library_dir()
        assert lib is not None
        t0 = time.monotonic()
        cleanup()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "logs").mkdir(exist_ok=True)
            self.cloud = netns.Namespace.create(prefix=PREFIX, net=self.net)
            ip = self.cloud.ns_ip
            self.pki = make_pki(self.workdir / "pki", [*NAMES, f"*.{DOMAIN}", *VENDOR_NAMES], [ip])
            self._start("dnsmasq", ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root", "--group=root",
                                    "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={ip}",
                                    f"--address=/{DOMAIN}/{ip}", *(f"--address=/{n}/{ip}" for n in VENDOR_NAMES),
                                    "--log-queries", f"--log-facility={self.workdir / 'logs' / 'dns.log'}",
                                    f"--pid-file={self.workdir / 'dnsmasq.pid'}"])  # fmt: skip
            self._start("sink", [sys.executable, "-m", "egressaudit.lab.sink", "--bind", ip, "--port", "443", "--cert", str(self.pki.cert),
                                 "--key", str(self.pki.key), "--root", str(PAGE_DIR), "--records", str(self.records_file)])  # fmt: skip
            conf = janus.write_config(
                self.workdir / "janus", lib=lib, interface=self.cloud.ns_if, cert=self.pki.cert, key=self.pki.key, room=self.room
            )
            self._start("janus", ["janus", "-C", str(conf), "-F", str(conf.parent)])
            self._wait_listening(timeout - (time.monotonic() - t0))
            self.write_signatures()
        except BaseException:
            self.close()
            raise
        self.started_s = time.monotonic() - t0
        return self

    def _start(self, name: str, args: list[str]) -> None:
        assert self.cloud is not None
        log = (self.workdir / "logs" / f"{name}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
        self.procs[name] = self.cloud.popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
        )
        log.close()

    def _wait_listening(self, timeout: float) -> None:
        assert self.cloud is not None
        want = {("tcp", 443): "sink", ("tcp", janus.WSS_PORT): "janus", ("udp", 53): "dnsmasq"}
        deadline = time.monotonic() + max(timeout, 1.0)
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise LabError(f"lab: {name} exited ({p.returncode}); see {self.workdir / 'logs' / (name + '.log')}")
            out = subprocess.run([*self.cloud.exec, "ss", "-Hlntu"], capture_output=True, text=True, timeout=10).stdout
            listening = {(ln.split()[0], int(ln.split()[4].rsplit(":", 1)[1])) for ln in out.splitlines() if len(ln.split()) > 4}
            missing = [name for key, name in want.items() if key not in listening]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise LabError(f"lab: {', '.join(missing)} not listening after {timeout:.0f} s; see {self.workdir / 'logs'}")
            time.sleep(0.1)

    def close(self) -> None:
        """End every process, remove every namespace (participants first) and, unless given, the work folder."""
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()
        for ns in [*self.participants, *([self.cloud] if self.cloud else [])]:
            with contextlib.suppress(Exception):
                ns.close()
        self.participants.clear()
        self.cloud = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what participants and sessions need -----------------------------------------------------------------------------

    def _need(self) -> tuple[netns.Namespace, LabPKI]:
        if self.cloud is None or self.pki is None:
            raise LabError("lab: the world is not started")
        return self.cloud, self.pki

    @property
    def ip(self) -> str:
        """The cloud's address: every lab name resolves to it; the DNS server, Janus and the sink listen on it."""
        return self._need()[0].ns_ip

    @property
    def dns(self) -> str:
        return self.ip

    @property
    def subnet(self) -> str:
        """The cloud's /30 (for ``--netns-allow`` and participants' ``allow``)."""
        return self._need()[0].subnet

    @property
    def ca_file(self) -> Path:
        """The lab CA's certificate (PEM), e.g. for ``--proxy-set ssl_verify_upstream_trusted_ca=FILE``."""
        return self._need()[1].ca_cert

    @property
    def spki(self) -> tuple[str, ...]:
        return self._need()[1].spki

    @property
    def records_file(self) -> Path:
        return self.workdir / "sink.jsonl"

    @property
    def signatures_file(self) -> Path:
        return self.workdir / "signatures" / "lab.yaml"

    @property
    def janus_url(self) -> str:
        return f"wss://meet.{DOMAIN}:{janus.WSS_PORT}/"

    def page_url(self, participant: int, *, name: str | None = None, room: int | None = None, planted: bool = True, **extra: str) -> str:
        """The conference page for participant ``participant`` (1, 2, ...); ``planted`` puts the planted identifiers
        (:data:`PLANTED`, participant 1's e-mail; others get ``userN@lab.test``) into its telemetry."""
        q: dict[str, str] = {"room": str(room or self.room), "n": str(participant), "name": name or f"Participant {participant}",
                             "janus": self.janus_url}  # fmt: skip
        if planted:
            email = PLANTED["email"] if participant == 1 else f"user{participant}@{DOMAIN}"
            q |= {"email": email, "device": PLANTED["device"], "title": PLANTED["title"]}
        q |= extra
        return f"https://meet.{DOMAIN}/?{urllib.parse.urlencode(q)}"

    def participant(self) -> netns.Namespace:
        """A namespace for a non-audited participant: NAT through the host to the cloud's /30 only, the cloud as
        resolver; removed by :meth:`close`."""
        self._need()
        ns = netns.Namespace.create(prefix=PREFIX, net=self.net)
        self.participants.append(ns)
        ns.route_out(proxy_port=None, allow=[self.subnet], dns=[self.dns])
        return ns

    def chromium_args(self, profile: Path, url: str | None = None, *, extra_spki: Sequence[str] = (), pipe: bool = True) -> list[str]:
        """Chromium's command line for a participant: the binary, the required and quieting flags, the fresh profile
        ``profile``, trust of the lab's certificate by its SPKI (plus ``extra_spki``, e.g. an audited session's
        mitmproxy CA), ``--remote-debugging-pipe`` (the caller passes fds 3 and 4) and ``url``."""
        spki = ",".join([*self.spki, *extra_spki])
        args = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={spki}"]
        if pipe:
            args.append("--remote-debugging-pipe")
        return [*args, url or "about:blank"]

    @staticmethod
    def chromium_env(home: Path) -> dict[str, str]:
        """The browser's environment: a fresh ``HOME``, no proxy variables and no Google API keys."""
        drop = {"GOOGLE_API_KEY", "GOOGLE_DEFAULT_CLIENT_ID", "GOOGLE_DEFAULT_CLIENT_SECRET"}
        env = {k: v for k, v in os.environ.items() if k not in drop and not k.lower().endswith("_proxy")}
        home.mkdir(parents=True, exist_ok=True)
        return env | {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}

    def session_args(self) -> list[str]:
        """Arguments of ``egressaudit session start`` for the audited participant: its own namespace forwarding only
        to the cloud, the lab's resolver, mitmproxy verifying the lab's servers with the lab CA, the lab's vendors."""
        return ["--netns", "--netns-allow", self.subnet, "--dns", self.dns, "--proxy-set", f"ssl_verify_upstream_trusted_ca={self.ca_file}",
                "--signatures", str(self.signatures_file)]  # fmt: skip

    def write_signatures(self) -> Path:
        """The lab's first-party vendor ``lab`` (conferencing) as an egressaudit signature file; its path."""
        lo, hi = janus.RTP_PORTS
        src = "egressaudit lab: egressaudit/lab/world.py and janus.py build the deployment: sink.py on tcp/443 for every *.lab.test name, Janus wss"
        rules: list[dict[str, Any]] = [
            {"id": "signaling-meet", "domains": [f"meet.{DOMAIN}"], "category": "signaling", "service": "janus", "source": "lab-world",
             "note": f"the conference page (tcp/443) and Janus's videoroom/textroom signalling over wss (tcp/{janus.WSS_PORT})"},
            {"id": "telemetry-rtcstats", "domains": [f"telemetry.{DOMAIN}"], "category": "telemetry", "service": "rtcstats", "source": "lab-world",
             "note": "rtcstats getStats stream over a WebSocket (page/src/lab.js)"},
            {"id": "upload", "domains": [f"upload.{DOMAIN}"], "category": "content_upload", "service": "files", "source": "lab-world",
             "note": "multipart POST /upload of a file from the page (lab.upload)"},
            {"id": "media-udp", "cidrs": [f"{self.ip}/32"], "transport": "udp", "ports": [f"{lo}-{hi}"], "category": "media",
             "service": "janus", "source": "lab-world", "note": "STUN, DTLS, SRTP/SRTCP to Janus (BUNDLE, rtcp-mux); the data channel's SCTP too"},
        ]  # fmt: skip
        doc = {
            "vendor": "lab",
            "display_name": "egressaudit lab (self-hosted Janus)",
            "kind": "conferencing",
            "default_service": "janus",
            "sources": {"lab-world": f"{src} on tcp/{janus.WSS_PORT}, media on the cloud address udp/{lo}-{hi} (rtp_port_range)"},
            "rules": rules,
        }
        self.signatures_file.parent.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no dumper needed, and the file's every string is quoted
        self.signatures_file.write_text("# written by egressaudit.lab.world for one lab run\n" + json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return self.signatures_file

    # -- what arrived ----------------------------------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """What the sink received so far, one dict per request or WebSocket (see :mod:`egressaudit.lab.sink`)."""
        try:
            lines = self.records_file.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for ln in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(ln))
        return out
