"""The client namespace's plumbing (egressaudit/netns.py) on its own: forwarding shared by overlapping sessions,
cleanup after a killed owner, a resolver file every user can read.  Needs root and iproute2/iptables."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from egressaudit import netns
from egressaudit.netns import Namespace

pytestmark = [pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable())), pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[1]


def _others_running() -> bool:
    return any(p.name.startswith("eacall-") for p in netns.STATE_DIR.glob("*.json")) if netns.STATE_DIR.is_dir() else False


def test_forwarding_is_shared_by_overlapping_namespaces() -> None:
    """A starts, B starts, A ends: forwarding stays on for B; B ends: forwarding is as it was before A."""
    if _others_running():
        pytest.skip("another session's namespace exists now: the host's forwarding switch is shared with it")
    before = netns.IP_FORWARD.read_text()
    netns.IP_FORWARD.write_text("0\n")
    try:
        a = Namespace.create()
        a.route_out(proxy_port=None)
        assert netns.IP_FORWARD.read_text().strip() == "1"
        b = Namespace.create()
        b.route_out(proxy_port=None)
        a.close()
        assert netns.IP_FORWARD.read_text().strip() == "1"  # B still needs it
        b.close()
        assert netns.IP_FORWARD.read_text().strip() == "0"
        assert not netns.FORWARD_ORIG.exists()
    finally:
        netns.IP_FORWARD.write_text(before)


def test_cleanup_after_a_killed_owner_and_resolver_for_every_user(tmp_path: Path) -> None:
    """A process that made a namespace is SIGKILLed: its namespace, pair, rules, resolver file and record stay until
    cleanup() removes them (and only those of dead owners); the resolver file is readable by an unprivileged user."""
    code = textwrap.dedent(
        """
        import sys, time
        from egressaudit.netns import Namespace
        ns = Namespace.create()
        ns.route_out(proxy_port=3128, dns=["192.0.2.53"])
        print(ns.name, ns.host_if, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    name, host_if = owner.stdout.readline().split()
    try:
        resolv = Path("/etc/netns") / name / "resolv.conf"
        assert resolv.read_text() == "nameserver 192.0.2.53\n"
        assert resolv.stat().st_mode & 0o777 == 0o644 and resolv.parent.stat().st_mode & 0o777 == 0o755
        read = "import os; os.setgid(65534); os.setuid(65534); print(open('/etc/resolv.conf').read(), end='')"
        r = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", read], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "nameserver 192.0.2.53\n", r.stderr

        mine = Namespace.create()  # alive: cleanup() leaves it alone
        try:
            assert name not in netns.cleanup()  # its owner is still alive
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
            assert f"egressaudit:{name}" in rules
            removed = netns.cleanup()
            assert name in removed and mine.name not in removed
            assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            assert subprocess.run(["ip", "link", "show", host_if], capture_output=True).returncode != 0
            everything = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout + subprocess.run(
                ["iptables", "-t", "nat", "-S"], capture_output=True, text=True
            ).stdout
            assert f"egressaudit:{name}" not in everything
            assert not resolv.parent.exists() and not (netns.STATE_DIR / f"{name}.json").exists()
        finally:
            mine.close()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()
        netns.cleanup()
