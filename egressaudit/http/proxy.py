"""``egressaudit proxy``: mitmdump with the addon, a private CA, loopback by default."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from mitmproxy.certs import CertStore

from egressaudit.http import mitm_script

DEFAULT_CONFDIR = Path("~/.egressaudit/mitmproxy")
CA_BASENAME = "mitmproxy"


class ProxyError(Exception):
    """The proxy cannot be set up; one line for the user."""


def ensure_ca(confdir: Path | None) -> Path:
    """Create (once) the CA in a private folder (0700; key files 0600) and return the folder."""
    conf = (confdir or DEFAULT_CONFDIR).expanduser()
    try:
        conf.mkdir(parents=True, exist_ok=True)
        os.chmod(conf, 0o700)
        CertStore.from_store(conf, CA_BASENAME, 2048)
        for key_file in (conf / f"{CA_BASENAME}-ca.pem", conf / f"{CA_BASENAME}-ca.p12"):
            if key_file.exists():
                os.chmod(key_file, 0o600)
    except OSError as e:
        raise ProxyError(f"{conf}: cannot set up the proxy CA: {e.strerror or e}") from e
    return conf


def ca_instructions(conf: Path, listen_host: str, port: int) -> str:
    cert = conf / f"{CA_BASENAME}-ca-cert.pem"
    lines = [
        f"egressaudit proxy listening on {listen_host}:{port}",
        f"CA certificate to trust (public part only): {cert}",
        "  curl:     curl --cacert CERT ...      Python: SSL_CERT_FILE=CERT / REQUESTS_CA_BUNDLE=CERT",
        "  Chromium: --proxy-server=http://HOST:PORT --ignore-certificate-errors-spki-list=... or import CERT in the OS store",
        "  Debian:   cp CERT /usr/local/share/ca-certificates/egressaudit.crt && update-ca-certificates",
        f"The CA private key stays in {conf} (mode 0700); never share it. Stop with Ctrl-C: the tables are compacted on exit.",
    ]
    if listen_host not in ("127.0.0.1", "::1", "localhost"):
        lines.append(f"warning: listening on {listen_host}, not loopback: other hosts can use this proxy")
    return "\n".join(lines)


def mitmdump_args(
    out: Path,
    conf: Path,
    *,
    port: int,
    listen_host: str,
    modes: list[str],
    client: str | None,
    keep_values: bool,
    keep_query: bool,
    keep_bodies: bool,
    extra: list[str],
) -> list[str]:
    args = ["-q", "-s", str(Path(mitm_script.__file__).resolve()), "--listen-host", listen_host, "--listen-port", str(port)]
    for m in modes:
        args += ["--mode", m]
    args += ["--set", f"confdir={conf}", "--set", f"egressaudit_dir={out.resolve()}"]
    if client:
        args += ["--set", f"egressaudit_client={client}"]
    for name, flag in (("keep_values", keep_values), ("keep_query", keep_query), ("keep_bodies", keep_bodies)):
        args += ["--set", f"egressaudit_{name}={'true' if flag else 'false'}"]
    return args + extra


def run_mitmdump(out: Path, conf: Path, **kw: object) -> int:
    """Run mitmdump in a child process until it exits (Ctrl-C stops it cleanly); returns its exit code.

    SIGTERM or SIGHUP to this process (``kill``, a service manager, a closed terminal) are passed on to mitmdump as
    SIGTERM, on which it shuts down cleanly too, instead of leaving it running without its parent."""
    args = mitmdump_args(out, conf, **kw)  # type: ignore[arg-type]
    cmd = [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()", *args]
    proc = subprocess.Popen(cmd)

    def stop(signum: int, frame: object) -> None:
        proc.send_signal(signal.SIGTERM)

    previous = {}
    for sig in [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]:  # (no SIGHUP on Windows)
        with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
            handler = signal.getsignal(sig)
            if handler is not signal.SIG_IGN and handler is not None:  # (nohup ignores SIGHUP: so do we; None: set from C)
                previous[sig] = signal.signal(sig, stop)
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reaches mitmdump too (same process group): let it shut down and compact.
            # A second Ctrl-C is passed on, which makes mitmdump exit at once.
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
