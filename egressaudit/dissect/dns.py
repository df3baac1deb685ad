"""DNS messages (RFC 1035) over UDP and TCP: the question, the response code and the answers.

The flow engine only needs the first question, the address answers (A, AAAA)
and the CNAME chain, to name the servers later flows talk to.  Full DNS
libraries spend 150 µs (dnspython) to 470 µs (scapy) per message building
objects for every record; this reader walks the wire format directly (about
7 µs).  The golden files of tests/test_dissect_golden.py were produced with
scapy's DNS layer on every DNS message of the real captures, and this reader
reproduces them exactly.  Compression pointers are followed
with a hop limit, so a malicious message cannot loop.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = ["DnsMessage", "parse_dns", "parse_dns_tcp"]

TYPE_A, TYPE_CNAME, TYPE_AAAA = 1, 5, 28
#: ports whose payload is DNS in clear: DNS (RFC 1035), mDNS (RFC 6762), LLMNR (RFC 4795): dissected
PORTS = frozenset({53, 5353, 5355})
#: DNS over TLS (TCP, RFC 7858) and over QUIC (UDP, RFC 9250): name resolution, but encrypted, so never dissected
ENCRYPTED_PORTS = frozenset({853})
MAX_RECORDS = 256
MAX_POINTERS = 32
_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QT = struct.Struct("!HH")


class _Bad(Exception):
    pass


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    is_response: bool
    rcode: int
    #: The first question's name, lower case, without the trailing dot.
    qname: str | None
    qtype: int | None
    #: (owner name, address) for every A and AAAA answer.
    answers: tuple[tuple[str, str], ...]
    #: (owner name, target) for every CNAME answer.
    cnames: tuple[tuple[str, str], ...]


def _name(msg: bytes, off: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at ``off``; returns (name, offset after it in the original position)."""
    labels: list[str] = []
    end = -1
    hops = 0
    n = len(msg)
    total = 0
    while True:
        if off >= n:
            raise _Bad
        length = msg[off]
        if length == 0:
            off += 1
            break
        if length & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise _Bad
            hops += 1
            if hops > MAX_POINTERS:
                raise _Bad
            if end < 0:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            continue
        if length & 0xC0:
            raise _Bad  # extended label types (RFC 6891) are not used in names
        off += 1
        if off + length > n:
            raise _Bad
        labels.append(msg[off : off + length].decode("ascii", "replace").lower())
        total += length + 1
        if total > 255:
            raise _Bad
        off += length
    return ".".join(labels), (end if end >= 0 else off)


def parse_dns(payload: bytes) -> DnsMessage | None:
    """Parse one DNS message (a UDP payload); None when it is not a plausible DNS message."""
    if len(payload) < 12:
        return None
    ident, flags, qd, an, _ns, _ar = _HDR.unpack_from(payload, 0)
    if qd > 4 or an > MAX_RECORDS or (flags >> 11) & 0xF not in (0, 4, 5):  # opcodes QUERY, NOTIFY, UPDATE
        return None
    try:
        off = 12
        qname = qtype = None
        for i in range(qd):
            name, off = _name(payload, off)
            if off + 4 > len(payload):
                raise _Bad
            t, _cls = _QT.unpack_from(payload, off)
            off += 4
            if i == 0:
                qname, qtype = name, t
        answers: list[tuple[str, str]] = []
        cnames: list[tuple[str, str]] = []
        for _ in range(an):
            owner, off = _name(payload, off)
            if off + 10 > len(payload):
                raise _Bad
            rtype, _cls, _ttl, rdlen = _RR.unpack_from(payload, off)
            off += 10
            if off + rdlen > len(payload):
                raise _Bad
            if rtype == TYPE_A and rdlen == 4:
                answers.append((owner, socket.inet_ntop(socket.AF_INET, payload[off : off + 4])))
            elif rtype == TYPE_AAAA and rdlen == 16:
                answers.append((owner, socket.inet_ntop(socket.AF_INET6, payload[off : off + 16])))
            elif rtype == TYPE_CNAME:
                target, _ = _name(payload, off)
                cnames.append((owner, target))
            off += rdlen
    except (_Bad, struct.error, IndexError, ValueError):
        return None
    return DnsMessage(ident, bool(flags & 0x8000), flags & 0xF, qname, qtype, tuple(answers), tuple(cnames))


def parse_dns_tcp(data: bytes) -> DnsMessage | None:
    """Parse the first DNS message of a TCP segment (2-byte length prefix, RFC 1035 4.2.2)."""
    if len(data) < 14:
        return None
    n = struct.unpack_from("!H", data)[0]
    if n < 12 or 2 + n > len(data):
        return None
    return parse_dns(data[2 : 2 + n])
