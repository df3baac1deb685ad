"""A network namespace of the test's own, joined to this host by one veth pair and nothing else.

The plumbing is the package's (:mod:`egressaudit.netns`, what ``session start --netns`` and the lab use): the
namespace gets 10.98.X.2/30, the host's end of the pair 10.98.X.1/30 (X picked per run among the /30s no interface
on this host uses).  There is no default route inside unless a test asks for one, IPv6 is off on both ends and IPv4
link-local multicast reports are off, so a program run in it with :meth:`Netns.popen` can reach the host's end of the
pair and nothing else: every packet it makes stays on the pair.

Needs root and iproute2's ``ip netns``; :func:`netns_unavailable` says why not.
"""

from __future__ import annotations

from typing import Self

from egressaudit.netns import Namespace, unavailable


class Netns(Namespace):
    """Create with :meth:`create`; always :meth:`close` (it also ends whatever still runs inside)."""

    @classmethod
    def create(cls, prefix: str = "eatest", net: int = 98) -> Self:
        return super().create(prefix, net)


def netns_unavailable() -> str | None:
    """Why a test cannot make a network namespace here, or None."""
    return unavailable()
