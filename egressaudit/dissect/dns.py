"""DNS messages (RFC 1035) over UDP and TCP, read with scapy's DNS layer.

DNS packets are few, so each is dissected with scapy's full layer; the flow
engine only needs the question, the response code and the address answers
(A and AAAA), plus the CNAME chain, to name the servers later flows talk to.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from scapy.layers.dns import DNS

__all__ = ["DnsMessage", "parse_dns", "parse_dns_tcp"]

TYPE_A, TYPE_CNAME, TYPE_AAAA = 1, 5, 28
MAX_RECORDS = 256
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    is_response: bool
    rcode: int
    #: The first question's name, without the trailing dot.
    qname: str | None
    qtype: int | None
    #: (owner name, address) for every A and AAAA answer.
    answers: tuple[tuple[str, str], ...]
    #: (owner name, target) for every CNAME answer.
    cnames: tuple[tuple[str, str], ...]


def _name(raw: object) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    return str(raw).rstrip(".").lower()


def parse_dns(payload: bytes) -> DnsMessage | None:
    """Parse one DNS message (a UDP payload); None when it is not a plausible DNS message."""
    if len(payload) < 12:
        return None
    qd, an = struct.unpack_from("!HH", payload, 4)
    if qd > 4 or an > MAX_RECORDS or payload[2] & 0x78 not in (0, 0x20, 0x28):  # opcodes QUERY/NOTIFY/UPDATE
        return None
    try:
        msg = DNS(payload)
        questions = list(msg.qd or [])
        records = list(msg.an or [])
        qname = qtype = None
        if questions:
            qname = _name(questions[0].qname)
            qtype = int(questions[0].qtype)
        answers: list[tuple[str, str]] = []
        cnames: list[tuple[str, str]] = []
        for rr in records:
            rtype = getattr(rr, "type", None)
            rdata = getattr(rr, "rdata", None)
            if rtype in (TYPE_A, TYPE_AAAA) and isinstance(rdata, str):
                answers.append((_name(rr.rrname), rdata))
            elif rtype == TYPE_CNAME and rdata is not None:
                cnames.append((_name(rr.rrname), _name(rdata)))
        ident, qr, rcode = int(msg.id), bool(msg.qr), int(msg.rcode)
    except Exception:  # scapy raises many kinds of errors on garbage (struct, Attribute, Index, ...)
        return None
    return DnsMessage(ident, qr, rcode, qname, qtype, tuple(answers), tuple(cnames))


def parse_dns_tcp(data: bytes) -> DnsMessage | None:
    """Parse the first DNS message of a TCP segment (2-byte length prefix, RFC 1035 4.2.2)."""
    if len(data) < 14:
        return None
    n = struct.unpack_from("!H", data)[0]
    if n < 12 or 2 + n > len(data):
        return None
    return parse_dns(data[2 : 2 + n])
