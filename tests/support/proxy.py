"""mitmdump as the proxy tests run it: its own confdir and log, addons and options as given, stopped with a signal."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.signals import as_in_a_terminal

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "addons" / "egressaudit_addon.py"
REDIRECT = ROOT / "tests" / "support" / "redirect_addon.py"
MITMDUMP = [sys.executable, "-c", "import sys; sys.argv[0] = 'mitmdump'; from mitmproxy.tools.main import mitmdump; mitmdump()"]
"""mitmdump as the interpreter running the tests has it (as `egressaudit proxy` runs it), not the first one on PATH:
that may be a pyenv shim or another venv's, i.e. another Python with another mitmproxy (a suite run by a venv's python
without activating it tested mitmproxy 11 on Python 3.11 for its proxy tests)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(host: str, port: int, proc: subprocess.Popen[Any], why: Callable[[], object], timeout: float = 30) -> None:
    """Wait until something accepts on host:port; fail with ``why()`` (e.g. the log) if *proc* exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            assert proc.poll() is None, why()
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


class Mitmdump:
    """A mitmdump on *host* (loopback unless a test says otherwise) with its own confdir; addons and options as given.

    *prefix* runs it through another command (``ip netns exec NS``); *host* must then be reachable from here.
    """

    def __init__(
        self, tmp: Path, name: str, scripts: list[Path], *settings: str, host: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.conf = tmp / f"{name}-conf"
        self.logfile = tmp / f"{name}.log"
        cmd = [*prefix, *MITMDUMP, "-q", "--listen-host", host, "--listen-port", str(self.port)]
        for script in scripts:
            cmd += ["-s", str(script)]
        cmd += ["--set", f"confdir={self.conf}", "--set", "connection_strategy=lazy", "--set", "ssl_insecure=true"]
        for s in settings:
            cmd += ["--set", s]
        self.log = open(self.logfile, "w")  # noqa: SIM115 - closed in stop()
        # the addon imports egressaudit: this checkout's, whatever an installed (editable) copy elsewhere may be
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen(  # noqa: PLW1509
            cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True, preexec_fn=as_in_a_terminal
        )
        try:
            wait_listening(host, self.port, self.proc, lambda: self.logfile.read_text()[-3000:])
        except AssertionError:
            self.stop()
            raise
        self.ca = self.conf / "mitmproxy-ca-cert.pem"
        assert self.ca.exists()

    def recorder(self, timeout: float = 30) -> Any:
        """The addon's recorder process, once it has started (see recorder_of)."""
        return recorder_of(self.proc.pid, timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment for a client that should use this proxy and trust its CA (no proxy settings of the caller's)."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(HTTPS_PROXY=self.url, HTTP_PROXY=self.url, SSL_CERT_FILE=str(self.ca), REQUESTS_CA_BUNDLE=str(self.ca), NO_PROXY="")
        return env

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def recorder_of(pid: int, timeout: float = 0) -> Any:
    """The recorder process under process *pid* (mitmdump, or `egressaudit proxy` above it): the multiprocessing child
    that is not multiprocessing's resource tracker; waits up to *timeout* seconds for it to appear.

    The port listening does not mean that the recorder has started: on Python 3.12 and newer mitmproxy runs its event
    loop with eager tasks, and with a numeric --listen-host it binds the port before its script watcher has loaded the
    addon (about a second later, the addon's start blocking the loop: a connection meanwhile waits in the backlog and
    is recorded).  On 3.11 the addon was loaded first."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        for c in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # (one that ended meanwhile)
                cmdline = " ".join(c.cmdline())
                if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
                    return c
        if time.monotonic() >= deadline:
            raise AssertionError("no recorder process")
        time.sleep(0.05)


def audit_proxy(tmp: Path, sink_port: int, out: Path, *settings: str, name: str = "mitmdump", **where: Any) -> Mitmdump:
    """The audit addon writing to *out*, with every connection it opens sent to the local sink on *sink_port*; *where* as for Mitmdump."""
    return Mitmdump(tmp, name, [ADDON, REDIRECT], f"sink=127.0.0.1:{sink_port}", f"egressaudit_dir={out}", *settings, **where)


class ProxyCommand:
    """``egressaudit proxy`` as a user runs it (its own session and confdir), with the test's redirect addon after ``--``;
    its stderr goes to a file.  *extra* are further mitmdump arguments."""

    def __init__(
        self, tmp: Path, out: Path, sink_port: int, *extra: str, name: str = "proxy", env: dict[str, str] | None = None, redirect: bool = True,
        options: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.out = out
        self.conf = tmp / f"{name}-ca"
        self.ca = self.conf / "mitmproxy-ca-cert.pem"
        self.errfile = tmp / f"{name}.err"
        cmd = [sys.executable, "-m", "egressaudit", "proxy", "--out", str(out), "--port", str(self.port), "--confdir", str(self.conf), *options]
        cmd += ["--", *(["-s", str(REDIRECT), "--set", f"sink=127.0.0.1:{sink_port}"] if redirect else [])]
        cmd += ["--set", "connection_strategy=lazy", "--set", "ssl_insecure=true", *extra]
        self._err = open(self.errfile, "w")  # noqa: SIM115 - closed in wait()
        base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._err, env={**base, **(env or {})}, start_new_session=True,
            preexec_fn=as_in_a_terminal,
        )  # noqa: PLW1509

    def wait_listening(self) -> ProxyCommand:
        wait_listening("127.0.0.1", self.port, self.proc, lambda: self.stderr()[-3000:], timeout=60)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.errfile.read_text(errors="replace")

    def lines(self, prefix: str = "egressaudit:") -> list[str]:
        """Its own stderr lines (the CA instructions left out)."""
        return [line for line in self.stderr().splitlines() if line.startswith(prefix)]

    def family(self) -> list[Any]:
        """psutil processes of the command, its mitmdump and the recorder."""
        import psutil

        p = psutil.Process(self.proc.pid)
        return [p, *p.children(recursive=True)]

    def recorder(self, timeout: float = 0) -> Any:
        """The recorder process (the mitmdump child that is not multiprocessing's helper); see recorder_of."""
        return recorder_of(self.proc.pid, timeout)

    def mitmdump(self) -> Any:
        import psutil

        (child,) = psutil.Process(self.proc.pid).children()
        return child

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self._err.close()
        return code

    def kill_all(self) -> None:
        """Whatever is left of the command's session (cleanup)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._err.close()
