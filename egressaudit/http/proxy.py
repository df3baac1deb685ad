"""``egressaudit proxy``: mitmdump with the addon, a private CA, loopback by default."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mitmproxy.certs import CertStore

from egressaudit.errors import EXIT_INCOMPLETE, OutputError
from egressaudit.http import mitm_script
from egressaudit.session import private_dir

DEFAULT_CONFDIR = Path("~/.egressaudit/mitmproxy")
CA_BASENAME = "mitmproxy"
PR_SET_PDEATHSIG = 1
RECORDER_GRACE_S = 300.0
"""How long ``egressaudit proxy`` waits for the recorder of a killed mitmdump to finish the session."""


class ProxyError(OutputError):
    """The proxy cannot be set up; one line for the user."""


def ensure_ca(confdir: Path | None) -> Path:
    """Create (once) the CA in a private folder (0700; key files 0600) and return the folder."""
    conf = (confdir or DEFAULT_CONFDIR).expanduser()
    try:
        if confdir is None:  # ~/.egressaudit: also holds crash files; private as a whole
            private_dir(conf.parent, narrow=True)
        conf.mkdir(parents=True, exist_ok=True)
        os.chmod(conf, 0o700)
        CertStore.from_store(conf, CA_BASENAME, 2048)
        for key_file in (conf / f"{CA_BASENAME}-ca.pem", conf / f"{CA_BASENAME}-ca.p12"):
            if key_file.exists():
                os.chmod(key_file, 0o600)
    except OSError as e:
        raise ProxyError(f"{conf}: cannot set up the proxy CA: {e.strerror or e}") from e
    return conf


def spki_hash(ca_cert: Path) -> str:
    """Base64 SHA-256 of the CA certificate's public key: Chromium's ``--ignore-certificate-errors-spki-list`` value
    (mitmproxy signs every certificate it makes with that key)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


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


def _die_with_parent(parent: int) -> None:
    """In the mitmdump child, before exec: SIGTERM when ``egressaudit proxy`` dies, however it dies (SIGKILL
    included), so that mitmdump shuts down cleanly and finishes the session instead of running on as an orphan."""
    with contextlib.suppress(Exception):  # (not Linux: no such guarantee)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: the signal would never come
            os.kill(os.getpid(), signal.SIGTERM)


def run_mitmdump(out: Path, conf: Path, **kw: object) -> int:
    """Run mitmdump in a child process until it exits (Ctrl-C stops it cleanly); returns the command's exit code.

    SIGTERM or SIGHUP to this process (``kill``, a service manager, a closed terminal) are passed on to mitmdump as
    SIGTERM, on which it shuts down cleanly too; if this process is killed outright, mitmdump gets SIGTERM from the
    kernel (PR_SET_PDEATHSIG).  mitmdump's own exit code (the addon's: 0, 4 output cannot be written, 6 recording
    incomplete; 2 and 5 at start) is returned as it is; a mitmdump killed by a signal gives 6 with one line, once its
    recorder process (which finishes the session on its own) has released the session folder."""
    args = mitmdump_args(out, conf, **kw)  # type: ignore[arg-type]
    # (argv[0] named, so that mitmdump's own messages read "mitmdump: ...", not "-c: ...")
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'mitmdump'; from mitmproxy.tools.main import mitmdump; mitmdump()", *args]
    me = os.getpid()
    proc = subprocess.Popen(cmd, preexec_fn=lambda: _die_with_parent(me))  # noqa: PLW1509 - single-threaded here

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
            code = proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reaches mitmdump too (same process group): let it shut down and compact.
            # A second Ctrl-C is passed on, which makes mitmdump exit at once.
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return _outcome(code, out)


def _outcome(code: int, out: Path) -> int:
    """The command's exit code for mitmdump's ``code``."""
    if code >= 0:
        return code
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    waited = _wait_for_recorder(out, RECORDER_GRACE_S)
    tail = (
        "its recorder finished the session with what it had been handed"
        if waited
        else f"its recorder is still writing {out} (the session is complete when it ends)"
    )
    print(
        f"egressaudit: mitmdump was killed by {name}: recording incomplete (exchanges still in the proxy were lost); {tail}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_INCOMPLETE


def _wait_for_recorder(out: Path, timeout: float) -> bool:
    """Wait until nothing holds the session folder's recording lock (the recorder process of a killed mitmdump records
    what it holds, compacts and writes session.json); False if it still does after ``timeout`` seconds."""
    from egressaudit.session import recording_pid

    deadline = time.monotonic() + timeout
    while recording_pid(out) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
