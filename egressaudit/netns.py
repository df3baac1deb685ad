"""A network namespace for the audited client, whose every packet leaves through this host (``session start --netns``).

The namespace is joined to the host by one veth pair and nothing else: the namespace gets ``10.X.Y.2/30``, the
host's end ``10.X.Y.1/30`` (a /30 no interface or route of the host uses) and is its default route.  IPv6 is off on
both ends and inside (the client cannot go around the audit over IPv6; NAT here is IPv4 only), as are IPv4
link-local multicast reports.  What the namespace sends is therefore exactly what arrives on the host's end of the
pair: a capture there sees the client and nothing else.

:meth:`Namespace.route_out` makes it a client's network, with iptables (the ``iptables`` command, nft or legacy
backend, whichever the host uses):

* ``nat PREROUTING``: TCP to ports 80 and 443 arriving on the pair is redirected to the transparent proxy listening
  on the host's end (mitmproxy's ``--mode transparent`` reads the original destination back), so clients that ignore
  proxy settings are intercepted too;
* ``filter FORWARD``: QUIC (UDP 443) from the namespace is rejected unless allowed, so browsers fall back to TCP and
  are seen by the proxy; the rest is forwarded (and only what ``allow`` lists, when given);
* ``nat POSTROUTING``: what is forwarded leaves masqueraded behind the host's address;
* ``net.ipv4.ip_forward`` is switched on while a namespace needs it and back to what it was after the last one (the
  value before the first is kept once for the host, in ``/run/egressaudit/netns/ip_forward.orig``);
* ``filter INPUT``: from the namespace the host accepts the proxy's port and replies, nothing else (a resolver or
  another service listening on the host is not reachable from the client);
* ``/etc/netns/NAME/resolv.conf`` gives programs run with ``ip netns exec`` the resolvers to use (the host's, or
  ``dns``); a host whose resolver listens on loopback (systemd-resolved's 127.0.0.53) cannot serve the namespace:
  its upstream servers are used then.

Everything made is written down first, in ``/run/egressaudit/netns/NAME.json`` with the owner's pid, so that
:func:`cleanup` removes what a killed owner left (the namespace, the pair, every iptables rule, ``resolv.conf``, the
forwarding switch) and a new namespace never collides with leftovers.  Needs root (CAP_NET_ADMIN), iproute2's ``ip``
and iptables; :func:`unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from egressaudit.capture.live import CaptureSetupError

STATE_DIR = Path("/run/egressaudit/netns")
"""Where each namespace's record lives while it exists (tmpfs: a reboot clears both)."""
PREFIX = "eacall"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
FORWARD_ORIG = STATE_DIR / "ip_forward.orig"
"""ip_forward as it was before the first namespace switched it on; restored by the last one to go."""
STATE_LOCK = STATE_DIR / ".lock"
REDIRECTED_PORTS = (80, 443)


class NetnsError(CaptureSetupError):
    """The namespace cannot be set up (no root, no ``ip`` or ``iptables``, a command refused); one line (exit 3)."""


def unavailable() -> str | None:
    """Why a network namespace for the client cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (run as root, or use --process without --netns)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return f"ip netns is unavailable: {r.stderr.strip()}"
    return None


def _run(cmd: Sequence[str], what: str | None = None) -> str:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{what or ' '.join(cmd)}: {e}") from None
    if r.returncode != 0:
        raise NetnsError(f"{what or ' '.join(cmd)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout


def _quiet(cmd: Sequence[str]) -> bool:
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _sysctl(ns: str | None, *settings: str) -> None:
    cmd = ["ip", "netns", "exec", ns, "sysctl", "-qw", *settings] if ns else ["sysctl", "-qw", *settings]
    _run(cmd)


def _in_use(prefix: str) -> bool:
    """Whether any address or route of the host is inside ``prefix``'s /24."""
    out = _run(["ip", "-4", "-o", "addr", "show"]) + _run(["ip", "-4", "route", "show", "table", "all"])
    return f"{prefix}." in out


@dataclass
class Record:
    """What a namespace made, written before it is made: enough for :func:`cleanup` to undo it after a crash."""

    name: str
    owner: int
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    rules: list[list[str]] = field(default_factory=list)  # iptables arguments after -A/-I, each with its table and chain
    forwarding: bool = False  # this namespace needs ip_forward on
    resolv: str | None = None

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = STATE_DIR / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("forward_was", None)  # (written by the first version of this module)
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


@contextlib.contextmanager
def _state_locked() -> Iterator[None]:
    """One process at a time changes the host's forwarding switch and its record."""
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(STATE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _forwarding_on() -> None:
    """ip_forward on, its value before kept once for the host (a second namespace finds it on and the record there)."""
    with _state_locked():
        now = IP_FORWARD.read_text().strip()
        if now != "1":
            if not FORWARD_ORIG.exists():
                FORWARD_ORIG.write_text(now + "\n")
            IP_FORWARD.write_text("1\n")


def _forwarding_off(leaving: str) -> None:
    """ip_forward back to what it was before the first namespace, when no other live one needs it."""
    with _state_locked():
        if _others_need_forwarding(leaving):
            return
        try:
            before = FORWARD_ORIG.read_text().strip()
        except OSError:
            return  # (it was on before any namespace: it stays on)
        with contextlib.suppress(OSError):
            IP_FORWARD.write_text(before + "\n")
        with contextlib.suppress(OSError):
            FORWARD_ORIG.unlink()


class Namespace:
    """Create with :meth:`create`; always :meth:`close` (it ends what still runs inside and undoes every change)."""

    def __init__(self, prefix: str = PREFIX, net: int = 199) -> None:
        token = secrets.token_hex(3)
        self.name = f"{prefix}-{os.getpid()}-{token}"
        self.host_if, self.ns_if = f"eah{token}", f"ean{token}"  # at most 15 characters
        third = random.randrange(256)
        for _ in range(256):
            if not _in_use(f"10.{net}.{third}"):
                break
            third = (third + 1) % 256
        else:
            raise NetnsError(f"every 10.{net}.X.0/30 is in use on this host")
        self.host_ip, self.ns_ip = f"10.{net}.{third}.1", f"10.{net}.{third}.2"
        self.subnet = f"10.{net}.{third}.0/30"
        self.record = Record(self.name, os.getpid(), self.host_if, self.ns_if, self.host_ip, self.ns_ip)
        self.created = False

    @classmethod
    def create(cls, prefix: str = PREFIX, net: int = 199) -> Self:
        why = unavailable()
        if why is not None:
            raise NetnsError(f"--netns: {why}")
        ns = cls(prefix, net)
        try:
            ns._setup()
        except BaseException:
            ns.close()
            raise
        return ns

    def _setup(self) -> None:
        self.record.save()  # first: whatever happens from here, cleanup() knows what to look for
        _run(["ip", "netns", "add", self.name])
        self.created = True
        # before any interface exists in it: no IPv6 (no way around the IPv4-only NAT; no solicitations, no MLD)
        _sysctl(
            self.name,
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.igmp_link_local_mcast_reports=0",
        )
        _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name])
        _sysctl(None, f"net.ipv6.conf.{self.host_if}.disable_ipv6=1")  # the host's end is down until here: it has sent nothing
        _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
        _run(["ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        _run(["ip", "-n", self.name, "link", "set", self.ns_if, "up"])

    # -- the client's network ----------------------------------------------------------------------------------------

    def route_out(
        self,
        *,
        proxy_port: int | None = None,
        allow_quic: bool = False,
        allow: Sequence[str] = (),
        dns: Sequence[str] = (),
        redirect: Sequence[int] = (),
    ) -> None:
        """Make the namespace a client's network: a default route through the host, NAT out, TCP 80/443 (and the
        ``redirect`` ports) redirected to a transparent proxy on ``host_ip:proxy_port``, QUIC rejected unless
        ``allow_quic``; with ``allow``, only those destinations (CIDRs) are forwarded (the rest is rejected)."""
        _run(["ip", "-n", self.name, "route", "add", "default", "via", self.host_ip])
        tag = ["-m", "comment", "--comment", f"egressaudit:{self.name}"]
        rules: list[list[str]] = []
        # INPUT rules are inserted at the top too: from the namespace only the proxy's port and replies reach the host
        rules.append(["filter", "INPUT", "-i", self.host_if, "-j", "REJECT", *tag])
        rules.append(["filter", "INPUT", "-i", self.host_if, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT", *tag])
        if proxy_port is not None:
            ports = ",".join(str(p) for p in sorted({*REDIRECTED_PORTS, *redirect}))
            dests: list[str | None] = list(allow) or [None]
            for dest in dests:  # (with an allow-list only those destinations reach the proxy: the rest is rejected)
                to = ["-d", dest] if dest else []
                rules.append(["nat", "PREROUTING", "-i", self.host_if, *to, "-p", "tcp", "-m", "multiport", "--dports", ports,
                              "-j", "REDIRECT", "--to-ports", str(proxy_port), *tag])  # fmt: skip
            rules.append(["filter", "INPUT", "-i", self.host_if, "-p", "tcp", "--dport", str(proxy_port), "-j", "ACCEPT", *tag])
        # FORWARD rules are inserted at the top, so the last one here is checked first
        rules.append(["filter", "FORWARD", "-o", self.host_if, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT", *tag])
        if allow:
            rules.append(["filter", "FORWARD", "-i", self.host_if, "-j", "REJECT", *tag])
            rules += [["filter", "FORWARD", "-i", self.host_if, "-d", cidr, "-j", "ACCEPT", *tag] for cidr in allow]
        else:
            rules.append(["filter", "FORWARD", "-i", self.host_if, "-j", "ACCEPT", *tag])
        if not allow_quic:
            rules.append(["filter", "FORWARD", "-i", self.host_if, "-p", "udp", "--dport", "443", "-j", "REJECT", *tag])
        rules.append(["nat", "POSTROUTING", "-s", self.subnet, "!", "-o", self.host_if, "-j", "MASQUERADE", *tag])
        self.record.rules = rules
        self.record.resolv = str(self._resolv_path())
        self.record.forwarding = True
        self.record.save()  # (written before any is made)
        for table, chain, *spec in rules:
            op = "-I" if chain in ("FORWARD", "INPUT") else "-A"
            _run(["iptables", "-w", "5", "-t", table, op, chain, *spec], f"iptables -t {table} {op} {chain}")
        _forwarding_on()
        self._write_resolv(dns)

    def _resolv_path(self) -> Path:
        return Path("/etc/netns") / self.name / "resolv.conf"

    def _write_resolv(self, dns: Sequence[str]) -> None:
        servers = list(dns) or host_resolvers()
        path = self._resolv_path()
        # readable by everyone, whatever the umask: `ip netns exec` mounts it over /etc/resolv.conf for every user's client
        for d in (path.parent.parent, path.parent):
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
        path.write_text("".join(f"nameserver {s}\n" for s in servers) or "# no resolver reachable from the namespace\n", encoding="utf-8")
        os.chmod(path, 0o644)

    # -- running programs inside ---------------------------------------------------------------------------------------

    @property
    def exec(self) -> list[str]:
        """The command prefix that runs a program in the namespace (``ip netns exec`` execs it: the process is the
        program itself, with ``/etc/netns/NAME/resolv.conf`` as its ``/etc/resolv.conf``)."""
        if not self.created:
            raise NetnsError("the namespace is not set up")
        return ["ip", "netns", "exec", self.name]

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``args`` inside the namespace."""
        return subprocess.Popen([*self.exec, *args], **kwargs)

    def run(self, *args: str) -> None:
        """Run a command in the namespace (iptables, sysctl); NetnsError with its error output if it fails."""
        _run([*self.exec, *args])

    def pids(self) -> list[int]:
        if not self.created:
            return []
        try:
            r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [int(p) for p in r.stdout.split() if p.isdigit()]

    def close(self) -> None:
        """End what still runs inside, then remove the namespace, the pair, the rules and the resolver file."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        _undo(self.record)
        self.created = False


def host_resolvers() -> list[str]:
    """The host's DNS servers that a namespace can reach (not loopback: systemd-resolved's stub is replaced by its
    upstream servers)."""
    for path in (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        servers = [ln.split()[1] for ln in lines if ln.startswith("nameserver") and len(ln.split()) > 1]
        reachable = [s for s in servers if not s.startswith("127.") and s != "::1"]
        if reachable:
            return reachable
    return []


def _undo(rec: Record) -> None:
    """Remove everything ``rec`` says was made (each step tolerates its part being gone already)."""
    for table, chain, *spec in rec.rules:
        for _ in range(8):  # (a rule added twice by a retried start is removed twice)
            if not _quiet(["iptables", "-w", "5", "-t", table, "-D", chain, *spec]):
                break
    _quiet(["ip", "netns", "del", rec.name])
    _quiet(["ip", "link", "del", rec.host_if])  # (deleting the namespace deletes the pair: this is for a half-made one)
    if rec.resolv:
        with contextlib.suppress(OSError):
            Path(rec.resolv).unlink()
        with contextlib.suppress(OSError):
            Path(rec.resolv).parent.rmdir()
    with contextlib.suppress(OSError):
        (STATE_DIR / f"{rec.name}.json").unlink()
    if rec.forwarding:
        with contextlib.suppress(OSError):
            _forwarding_off(rec.name)


def _others_need_forwarding(name: str) -> bool:
    for path in STATE_DIR.glob("*.json"):
        rec = Record.load(path)
        if rec is not None and rec.name != name and rec.forwarding and _alive(rec.owner):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup(*, everything: bool = False) -> list[str]:
    """Remove what namespaces of dead owners left (all of them with ``everything``); the names removed.  Namespaces
    named like ours but with no record (a crash before the record was written cannot happen; a record deleted by
    hand can) are removed too when their owner's pid, which their name holds, is gone."""
    removed: list[str] = []
    if STATE_DIR.is_dir():
        for path in sorted(STATE_DIR.glob("*.json")):
            rec = Record.load(path)
            if rec is None:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if everything or not _alive(rec.owner):
                _undo(rec)
                removed.append(rec.name)
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and name not in removed:
            if everything or not _alive(int(parts[1])):
                _quiet(["ip", "netns", "del", name])
                _quiet(["ip", "link", "del", f"eah{parts[2]}"])
                removed.append(name)
    return removed
