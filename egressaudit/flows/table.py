"""Bidirectional 5-tuple flows with an idle timeout.

A :class:`FlowTable` takes decoded :class:`~egressaudit.capture.frames.IPPacket`
objects in time order.  Flows are keyed by the unordered pair of endpoints and
the transport; they end after ``idle_timeout`` seconds without a packet, on a
new TCP SYN after the previous connection closed, or at the end of the input.
Memory grows with the number of live flows; finished flows are handed to the
``on_flow`` callback.  Live capture uses this table; offline ingest uses
:class:`~egressaudit.flows.columnar.ColumnarFlowTable`, which gives the same
flows a buffer of frames at a time and is tested against this one.

Only the first packets of a flow are dissected (``INSPECT_PACKETS`` each way,
then one in ``SAMPLE_EVERY``), by :class:`~egressaudit.dissect.inspect.Inspector`:
enough to read the TLS/QUIC ClientHello, the HTTP Host, STUN attributes and RTP
headers, at a fraction of the cost of dissecting every packet.  With
``inspect_payloads=False`` nothing is dissected: the flows are the same (keys,
ends, counters), their evidence stays empty; live capture counts flows so and
leaves the evidence to the analysis of the file it wrote.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable

from egressaudit.capture.frames import PROTO_TCP, IPPacket
from egressaudit.dissect.evidence import Evidence
from egressaudit.dissect.inspect import Inspector

INSPECT_PACKETS = 48
SAMPLE_EVERY = 32
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

__all__ = ["INSPECT_PACKETS", "SAMPLE_EVERY", "Flow", "FlowKey", "FlowTable", "ip_str"]


def ip_str(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


class Flow(Evidence):
    """Counters of one flow, and the evidence its payloads showed.  ``a`` is the endpoint that sent the first packet."""

    __slots__ = (
        "version", "a_ip", "a_port", "b_ip", "b_port", "ts_first", "ts_last",
        "pkts_ab", "pkts_ba", "bytes_ab", "bytes_ba", "pay_ab", "pay_ba", "fragments", "vlan",
        "syn_from_b", "closed", "seen", "seq",
    )  # fmt: skip

    def __init__(self, proto: int, version: int, a_ip: bytes, a_port: int, b_ip: bytes, b_port: int, ts: float, vlan: int = -1, seq: int = 0) -> None:
        Evidence.__init__(self, proto)
        self.version = version
        self.a_ip, self.a_port, self.b_ip, self.b_port = a_ip, a_port, b_ip, b_port
        self.ts_first = self.ts_last = ts
        self.seq = seq  # number of the flow's first packet in the input: orders flows that start at the same time
        self.pkts_ab = self.pkts_ba = self.bytes_ab = self.bytes_ba = self.pay_ab = self.pay_ba = 0
        self.fragments = 0
        self.vlan = vlan
        self.syn_from_b = False
        self.closed = False
        self.seen = 0

    @property
    def client_is_a(self) -> bool:
        return not self.syn_from_b


FlowKey = tuple[int, bytes, int, bytes, int]


class FlowTable(Inspector):
    """Flows metered one packet at a time, their payloads inspected unless ``inspect_payloads`` is False (see the module docstring)."""

    def __init__(self, on_flow: Callable[[Flow], None], idle_timeout: float = 120.0, inspect_payloads: bool = True) -> None:
        self.on_flow = on_flow
        self.idle_timeout = idle_timeout
        self.inspecting = inspect_payloads
        self.flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        self.dns_map: dict[bytes, str] = {}
        self.frag_map: dict[tuple[bytes, bytes, int, int], tuple[FlowKey, float]] = {}  # first fragments: flow and time
        self.orphan_fragments = 0
        self.packets = 0
        self._last_expire = 0.0

    # -- packets -------------------------------------------------------------
    def add(self, pkt: IPPacket, ts: float) -> None:
        self.packets += 1
        if ts - self._last_expire >= 1.0:
            self._expire(ts)
            self._last_expire = ts
        version, src, dst, proto, sp, dp, ip_len, payload, tcp_flags, frag, frag_id, vlan = pkt
        flows = self.flows
        if frag == 2:
            hit = self.frag_map.get((src, dst, proto, frag_id))
            fk = hit[0] if hit is not None and ts - hit[1] <= self.idle_timeout else None  # (later than that: not its datagram's)
            flow = flows.get(fk) if fk else None
            if flow is None:
                self.orphan_fragments += 1
                return
            flows.move_to_end(fk)  # type: ignore[arg-type]
            self._count(flow, pkt, ts, src == flow.a_ip)
            flow.fragments += 1
            return
        key: FlowKey = (proto, src, sp, dst, dp) if src < dst or (src == dst and sp <= dp) else (proto, dst, dp, src, sp)
        flow = flows.get(key)
        if flow is not None:
            if ts - flow.ts_last > self.idle_timeout or (proto == PROTO_TCP and flow.closed and tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN):
                del flows[key]
                self.on_flow(flow)
                flow = None
            else:
                flows.move_to_end(key)
        if flow is None:
            flow = Flow(proto, version, src, sp, dst, dp, ts, vlan, self.packets)
            dns_map = self.dns_map
            if dns_map:
                flow.dns_name = dns_map.get(dst) or dns_map.get(src)
            flows[key] = flow
        from_a = src == flow.a_ip and sp == flow.a_port
        if frag == 1:
            flow.fragments += 1
            if len(self.frag_map) > 65536:
                self.frag_map.clear()
            self.frag_map[(src, dst, proto, frag_id)] = (key, ts)
        if from_a:
            flow.pkts_ab += 1
            flow.bytes_ab += ip_len
            flow.pay_ab += len(payload)
        else:
            flow.pkts_ba += 1
            flow.bytes_ba += ip_len
            flow.pay_ba += len(payload)
        if ts > flow.ts_last:
            flow.ts_last = ts
        if proto == PROTO_TCP:
            if tcp_flags & (TCP_FIN | TCP_RST):
                flow.closed = True
            syn = tcp_flags & (TCP_SYN | TCP_ACK)
            if syn == TCP_SYN:
                flow.syn_from_b = not from_a  # the SYN's sender is the client
            elif syn == (TCP_SYN | TCP_ACK) and flow.pkts_ab + flow.pkts_ba == 1:
                flow.syn_from_b = from_a  # capture starts at the SYN-ACK: its receiver is the client
        seen = flow.seen = flow.seen + 1
        if payload and self.inspecting and (seen <= INSPECT_PACKETS * 2 or seen % SAMPLE_EVERY == 0):
            self.inspect(flow, payload, sp, dp, from_a == flow.client_is_a)

    def dns_answer(self, packed: bytes, name: str) -> None:
        self.dns_map[packed] = name

    @staticmethod
    def _count(flow: Flow, pkt: IPPacket, ts: float, from_a: bool) -> None:
        if from_a:
            flow.pkts_ab += 1
            flow.bytes_ab += pkt.ip_len
            flow.pay_ab += len(pkt.payload)
        else:
            flow.pkts_ba += 1
            flow.bytes_ba += pkt.ip_len
            flow.pay_ba += len(pkt.payload)
        if ts > flow.ts_last:
            flow.ts_last = ts

    def _expire(self, now: float) -> None:
        flows = self.flows
        while flows:
            key, flow = next(iter(flows.items()))
            if now - flow.ts_last <= self.idle_timeout:
                break
            del flows[key]
            self.on_flow(flow)

    def flush(self) -> None:
        """End every live flow (end of input)."""
        for flow in self.flows.values():
            self.on_flow(flow)
        self.flows.clear()
