"""Which end of a flow is the audited host, and the flow's Community ID.

The flows tables say ``local``/``remote`` and ``out``/``in`` (from the audited
host's point of view); the flow tables of this package only know ``a`` (the
first sender) and ``b``.  :class:`Orientation` decides, once per session, which
end is local.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import ipaddress
import struct
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import communityid

from egressaudit.capture.frames import PROTO_TCP, PROTO_UDP
from egressaudit.flows.table import Flow

_NETS = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_nonunicast(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.is_multicast or addr.is_unspecified:
        return True
    if addr.version == 4 and (int(addr) == 0xFFFFFFFF or (int(addr) & 0xFF) == 0xFF):
        return True  # limited or (likely) directed broadcast
    return False


def _is_local_range(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return bool(addr.is_private or addr.is_link_local or addr.is_loopback or addr.is_multicast or addr.is_unspecified or _is_nonunicast(addr))


def community_id_v1(proto: int, a_ip: bytes, b_ip: bytes, a_port: int, b_port: int, seed: int = 0) -> str:
    """Community ID v1 of a TCP or UDP flow (https://github.com/corelight/community-id-spec).

    The same hash as the ``communityid`` package, which is used for every other
    protocol and checked against this in tests; computed inline here because
    building its FlowTuple objects cost ~45 µs a flow, a fifth of ingest time on
    captures with many short flows.
    """
    if (a_ip, a_port) > (b_ip, b_port):
        a_ip, b_ip, a_port, b_port = b_ip, a_ip, b_port, a_port
    digest = hashlib.sha1(_CID_HEAD.pack(seed) + a_ip + b_ip + _CID_TAIL.pack(proto, 0, a_port, b_port)).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")


_CID_HEAD = struct.Struct("!H")
_CID_TAIL = struct.Struct("!BBHH")


def _special_ranges() -> dict[int, tuple[list[int], list[int]]] | None:
    """Merged integer ranges (starts, ends per IP version) holding every address for which one of ipaddress's
    is_private, is_link_local, is_loopback, is_multicast or is_unspecified can be true.

    Outside them all five are false, which spares building an address object
    and walking ipaddress's network lists for each of the many public
    addresses of a capture.  Read from this Python's ipaddress module itself;
    None (every address takes the slow path) where it does not expose them.
    tests/test_flows.py checks both paths agree.
    """
    try:
        c4, c6 = ipaddress._IPv4Constants, ipaddress._IPv6Constants  # type: ignore[attr-defined]
        nets = [*c4._private_networks, c4._linklocal_network, c4._loopback_network, c4._multicast_network]
        nets += [*c6._private_networks, c6._linklocal_network, c6._multicast_network]
        # IPv6 loopback and unspecified are tested by value; IPv4-mapped addresses may be judged as the IPv4 address
        nets += [ipaddress.ip_network(n) for n in ("::1/128", "::/128", "0.0.0.0/32", "::ffff:0:0/96")]
    except AttributeError:
        return None
    out: dict[int, tuple[list[int], list[int]]] = {}
    for version in (4, 6):
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version)
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in spans:
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        out[version] = (starts, ends)
    return out


_SPECIAL = _special_ranges()


def maybe_special(packed: bytes) -> bool:
    """False only when the address is in none of ipaddress's private, link-local, loopback, multicast or unspecified ranges."""
    if _SPECIAL is None:
        return True
    starts, ends = _SPECIAL[4 if len(packed) == 4 else 6]
    a = int.from_bytes(packed, "big")
    i = bisect.bisect_right(starts, a) - 1
    return i >= 0 and a <= ends[i]


class Orientation:
    """Decides which end of each flow is the audited host.

    With ``--local-net`` the ends inside those networks are local.  Otherwise
    the audited hosts are the private (RFC 1918 / ULA / link-local) unicast
    addresses; when both or neither end is private, the end seen in more flows
    (the capturing host is in nearly all of them) is local, then the client
    (the TCP SYN's sender or the first packet's sender).
    """

    def __init__(self, flows: Sequence[Flow], local_nets: Sequence[str]) -> None:
        self.nets: list[_NETS] = [ipaddress.ip_network(n, strict=False) for n in local_nets]
        self._net_ranges = [(n.version, int(n.network_address), int(n.broadcast_address)) for n in self.nets]
        self.degree: Counter[bytes] = Counter()
        for f in flows:
            self.degree[f.a_ip] += 1
            self.degree[f.b_ip] += 1
        self._addr: dict[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._facts: dict[bytes, tuple[bool, bool, bool]] = {}

    def addr(self, packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        a = self._addr.get(packed)
        if a is None:
            a = self._addr[packed] = ipaddress.ip_address(packed)
        return a

    def facts(self, packed: bytes) -> tuple[bool, bool, bool]:
        """(a candidate for the audited host, not unicast, traffic to it stays local) for one address; cached."""
        r = self._facts.get(packed)
        if r is not None:
            return r
        version, value = (4 if len(packed) == 4 else 6), int.from_bytes(packed, "big")
        in_nets = any(v == version and lo <= value <= hi for v, lo, hi in self._net_ranges)
        if not maybe_special(packed):
            nonunicast = version == 4 and packed[3] == 0xFF  # (likely) directed broadcast
            r = (in_nets, nonunicast, in_nets or nonunicast)
        else:
            a = self.addr(packed)
            nonunicast = _is_nonunicast(a)
            if self.nets:
                cand = in_nets
                local = in_nets or bool(a.is_link_local or a.is_loopback or a.is_multicast or a.is_unspecified or nonunicast)
            else:
                cand = bool(a.is_private or a.is_link_local or a.is_loopback) and not nonunicast
                local = _is_local_range(a)
            r = (cand, nonunicast, local)
        self._facts[packed] = r
        return r

    def remote_is_local(self, packed: bytes) -> bool:
        """Whether traffic to the address stays on the local network (is not egress).

        With ``--local-net`` only those networks (and link-local, loopback,
        multicast addresses) are local, so a server on a private address
        outside them (a self-hosted Jitsi or Janus, a lab namespace) counts as
        egress; without it every private address is local.
        """
        return self.facts(packed)[2]

    def a_is_local(self, f: Flow) -> bool:
        ca, nonuni_a, _ = self.facts(f.a_ip)
        cb, nonuni_b, _ = self.facts(f.b_ip)
        if ca != cb:
            return ca
        if nonuni_b:
            return True
        if nonuni_a:
            return False
        da, db = self.degree[f.a_ip], self.degree[f.b_ip]
        if da != db and not (ca and cb and self.nets):
            return da > db
        return f.client_is_a


_CID = communityid.CommunityID()


def community_id(f: Flow) -> str | None:
    """Community ID v1 of a flow: the inline hash for TCP and UDP, the ``communityid`` package for the rest (ICMP's
    type/code pairing); None when the package refuses the tuple."""
    try:
        if f.proto in (PROTO_TCP, PROTO_UDP):
            return community_id_v1(f.proto, f.a_ip, f.b_ip, f.a_port, f.b_port)
        return str(_CID.calc(communityid.FlowTuple(f.proto, f.a_ip, f.b_ip, f.a_port or None, f.b_port or None)))
    except (communityid.FlowTupleError, ValueError, TypeError):
        return None


class Sides(NamedTuple):
    """A flow seen from the audited host: its end, the remote end, and the counters each way."""

    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    packets_out: int
    packets_in: int
    bytes_out: int
    bytes_in: int
    payload_bytes_out: int
    payload_bytes_in: int


def sides(f: Flow, a_is_local: bool) -> Sides:
    """The flow's ``a``/``b`` counters as ``local``/``remote``, ``out``/``in``."""
    if a_is_local:
        return Sides(f.a_ip, f.a_port, f.b_ip, f.b_port, f.pkts_ab, f.pkts_ba, f.bytes_ab, f.bytes_ba, f.pay_ab, f.pay_ba)
    return Sides(f.b_ip, f.b_port, f.a_ip, f.a_port, f.pkts_ba, f.pkts_ab, f.bytes_ba, f.bytes_ab, f.pay_ba, f.pay_ab)
