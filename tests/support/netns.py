"""A network namespace of the test's own, joined to this host by one veth pair and nothing else.

The namespace gets 10.98.X.2/30, the host's end of the pair 10.98.X.1/30 (X
picked per run among the /30s no interface on this host uses).  There is no
default route inside, IPv6 is off on both ends (no neighbour or router
solicitations, no MLD) and IPv4 link-local multicast reports are off, so a
program run in it with :meth:`Netns.popen` can reach the host's end of the
pair and nothing else: every packet it makes stays on the pair.

Needs root and iproute2's ``ip netns``; :func:`netns_unavailable` says why not.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from typing import Any

IP = shutil.which("ip")


def netns_unavailable() -> str | None:
    """Why a test cannot make a network namespace here, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (ip netns add)"
    if IP is None:
        return "iproute2's ip is not installed (apt-get install iproute2)"
    r = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        return f"ip netns is unavailable: {r.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    assert IP
    r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _sysctl(ns: str | None, *settings: str) -> None:
    assert IP
    cmd = [IP, "netns", "exec", ns, "sysctl", "-qw", *settings] if ns else ["sysctl", "-qw", *settings]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"sysctl {' '.join(settings)}: {r.stderr.strip()}")


def _subnet_in_use(third: int) -> bool:
    r = subprocess.run([IP or "ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10)
    return f" 10.98.{third}." in r.stdout


class Netns:
    """Create with :meth:`create`; always :meth:`close` (it also ends whatever still runs inside)."""

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.name = f"eatest-{os.getpid()}-{token}"
        self.host_if, self.ns_if = f"eah{token}", f"ean{token}"  # at most 15 characters
        third = random.randrange(256)
        for _ in range(256):
            if not _subnet_in_use(third):
                break
            third = (third + 1) % 256
        else:
            raise RuntimeError("every 10.98.X.0/30 is in use on this host")
        self.host_ip, self.ns_ip = f"10.98.{third}.1", f"10.98.{third}.2"
        self.created = False

    @classmethod
    def create(cls) -> Netns:
        ns = cls()
        try:
            ns._setup()
        except BaseException:
            ns.close()
            raise
        return ns

    def _setup(self) -> None:
        _ip("netns", "add", self.name)
        self.created = True
        # before any interface exists in it: no IPv6 (neighbour/router solicitations, MLD), no IGMP for 224.0.0.x
        _sysctl(
            self.name,
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.igmp_link_local_mcast_reports=0",
        )
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if, "netns", self.name)
        _sysctl(None, f"net.ipv6.conf.{self.host_if}.disable_ipv6=1")  # the host's end is down until here: it has sent nothing
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "link", "set", self.ns_if, "up")

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start *args* inside the namespace (``ip netns exec`` execs it: the process is the program itself)."""
        return subprocess.Popen([*self.exec, *args], **kwargs)

    @property
    def exec(self) -> list[str]:
        """The command prefix that runs a program in the namespace."""
        assert IP and self.created
        return [IP, "netns", "exec", self.name]

    def run(self, *args: str) -> None:
        """Run a command in the namespace (e.g. iptables); raise with its error output if it fails."""
        r = subprocess.run([*self.exec, *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")

    def pids(self) -> list[int]:
        if not self.created or IP is None:
            return []
        r = subprocess.run([IP, "netns", "pids", self.name], capture_output=True, text=True, timeout=10)
        return [int(p) for p in r.stdout.split()]

    def close(self) -> None:
        """End what still runs inside (only this test starts processes there), then remove the namespace and the pair."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.created:
            subprocess.run([IP or "ip", "netns", "del", self.name], capture_output=True, timeout=20)
            self.created = False
        # deleting the namespace deletes the pair; this only matters if the namespace was never made
        subprocess.run([IP or "ip", "link", "del", self.host_if], capture_output=True, timeout=20)
