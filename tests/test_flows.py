"""Flow building on scapy-made packets: idle timeout, direction, fragments, Community ID, DNS names, streaming."""

from __future__ import annotations

from pathlib import Path

import communityid
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.capture.frames import PROTO_UDP, decode
from egressaudit.capture.reader import ReadStats, iter_frames
from egressaudit.dissect.evidence import Evidence
from egressaudit.flows.table import Flow, FlowTable
from tests import factories

SAMPLE = Path(__file__).resolve().parents[1] / "captures" / "janus-echo" / "call.pcapng"


def _rows(tmp_path: Path, pkts: list[Packet], **opts: object) -> list[dict[str, object]]:
    cap = factories.write_pcap(tmp_path / "c.pcap", pkts)
    return analyze([cap], AnalyzeOptions(**opts)).rows  # type: ignore[arg-type]


def _udp(src: str, dst: str, sport: int, dport: int, t: float, size: int = 50) -> Packet:
    p = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"x" * size)
    p.time = t
    return p


def test_idle_timeout_splits_a_flow(tmp_path: Path) -> None:
    pkts = [_udp(factories.CLIENT, "198.51.100.7", 4000, 9000, t) for t in (0, 1, 2, 200, 201)]
    rows = _rows(tmp_path, pkts, idle_timeout=60.0)
    assert sorted(r["packets_out"] for r in rows) == [2, 3]  # type: ignore[type-var]
    rows = _rows(tmp_path, pkts, idle_timeout=300.0)
    assert [r["packets_out"] for r in rows] == [5]


def test_counts_and_timestamps_each_way(tmp_path: Path) -> None:
    pkts = [_udp(factories.CLIENT, "198.51.100.7", 4000, 9000, 10.0, 100), _udp("198.51.100.7", factories.CLIENT, 9000, 4000, 10.5, 300)]
    (r,) = _rows(tmp_path, pkts)
    assert (r["bytes_out"], r["bytes_in"], r["packets_out"], r["packets_in"]) == (128, 328, 1, 1)
    assert (r["payload_bytes_out"], r["payload_bytes_in"]) == (100, 300)
    assert (r["ts_start"], r["ts_end"]) == (10_000_000, 10_500_000)
    assert (r["local_ip"], r["local_port"], r["remote_ip"], r["remote_port"]) == (factories.CLIENT, 4000, "198.51.100.7", 9000)


def test_direction_from_local_net_even_when_the_server_speaks_first(tmp_path: Path) -> None:
    pkts = [_udp("203.0.113.9", "198.51.100.7", 9000, 4000, 0.0), _udp("198.51.100.7", "203.0.113.9", 4000, 9000, 0.1)]
    (r,) = _rows(tmp_path, pkts, local_nets=("198.51.100.0/24",))
    assert (r["local_ip"], r["remote_ip"], r["packets_out"]) == ("198.51.100.7", "203.0.113.9", 1)
    assert r["is_local"] is False


def test_tcp_client_is_the_syn_sender(tmp_path: Path) -> None:
    pkts = factories.tls_flow("203.0.113.20", "example.org", 40000, 0.0)
    (r,) = _rows(tmp_path, pkts, local_nets=("0.0.0.0/0",))  # both ends "local": the SYN decides
    assert (r["local_ip"], r["remote_port"], r["hostname"], r["hostname_source"]) == (factories.CLIENT, 443, "example.org", "tls_sni")


def test_community_id_matches_the_reference_implementation(tmp_path: Path) -> None:
    pkts = factories.tls_flow("203.0.113.20", "example.org", 40000, 0.0)
    (r,) = _rows(tmp_path, pkts)
    ref = communityid.CommunityID().calc(communityid.FlowTuple.make_tcp(factories.CLIENT, "203.0.113.20", 40000, 443))
    assert r["community_id"] == ref


def test_fragments_are_counted_into_their_flow(tmp_path: Path) -> None:
    big = Ether() / IP(src=factories.CLIENT, dst="198.51.100.7", id=77) / UDP(sport=5000, dport=6000) / Raw(b"y" * 3000)
    frags = fragment(big[IP], fragsize=1000)
    pkts = []
    for i, f in enumerate(frags):
        p = Ether() / f
        p.time = i * 0.001
        pkts.append(p)
    (r,) = _rows(tmp_path, pkts)
    assert len(frags) >= 3
    assert r["fragments"] == r["packets_out"] == len(frags) and r["remote_port"] == 6000
    assert r["bytes_out"] == sum(len(f) for f in frags)


def test_vlan_and_ipv6(tmp_path: Path) -> None:
    p1 = Ether() / Dot1Q(vlan=10) / Dot1Q(vlan=20) / IP(src=factories.CLIENT, dst="198.51.100.7") / UDP(sport=1, dport=2) / Raw(b"a")
    p2 = Ether() / IPv6(src="2001:db8::1", dst="2001:db8:ffff::2") / TCP(sport=3333, dport=443, flags="S")
    p1.time, p2.time = 0.0, 0.1
    rows = _rows(tmp_path, [p1, p2], local_nets=(factories.CLIENT + "/32", "2001:db8::1/128"))
    assert {(r["ip_version"], r["transport"], r["remote_ip"]) for r in rows} == {(4, "udp", "198.51.100.7"), (6, "tcp", "2001:db8:ffff::2")}


def test_dns_answer_names_a_later_flow(tmp_path: Path) -> None:
    pkts = factories.dns_exchange("stats.example.net", "198.51.100.44") + [_udp(factories.CLIENT, "198.51.100.44", 4444, 443, 1.0)]
    rows = {r["remote_ip"]: r for r in _rows(tmp_path, pkts)}
    assert (rows["198.51.100.44"]["hostname"], rows["198.51.100.44"]["hostname_source"]) == ("stats.example.net", "dns")


def test_flow_table_holds_only_live_flows() -> None:
    """Streaming: finished flows leave the table as soon as they idle out, so memory follows live flows."""
    done: list[Flow] = []
    table = FlowTable(done.append, idle_timeout=5.0)
    for i in range(2000):
        frame = bytes(Ether() / IP(src=factories.CLIENT, dst="198.51.100.7") / UDP(sport=10000 + i, dport=53) / Raw(b"q"))
        pkt = decode(1, frame)
        assert not isinstance(pkt, str)
        table.add(pkt, float(i))  # one new flow a second, each idle after 5 s
        assert len(table.flows) <= 7
    table.flush()
    assert len(done) == 2000 and not table.flows


def _encrypted_udp(seconds: float, pps: int, both_ways: bool) -> list[Packet]:
    import os

    pkts = []
    for i in range(int(seconds * pps)):
        t = i / pps
        pkts.append(_udp(factories.CLIENT, "198.51.100.80", 40000, 9999, t, 0))
        pkts[-1][Raw].load = b"\xf0" + os.urandom(159)  # no RTP/STUN/DTLS first byte: only the shape can tell
        if both_ways:
            back = _udp("198.51.100.80", factories.CLIENT, 9999, 40000, t + 0.003, 0)
            back[Raw].load = b"\xf0" + os.urandom(119)
            pkts.append(back)
    return pkts


def test_unknown_encrypted_call_is_media_by_flow_shape(tmp_path: Path) -> None:
    (r,) = _rows(tmp_path, _encrypted_udp(4.0, 50, both_ways=True))
    assert (r["category"], r["data_class"], r["rule"], r["vendor"]) == ("media", "customer_content", "heuristic/udp-shape", None)


def test_one_way_udp_burst_is_not_called_media(tmp_path: Path) -> None:
    (r,) = _rows(tmp_path, _encrypted_udp(4.0, 50, both_ways=False))
    assert r["category"] != "media" and r["rule"] != "heuristic/udp-shape"


def test_inline_community_id_equals_the_reference_for_tcp_udp_v4_v6() -> None:
    import ipaddress

    from egressaudit.flows.orient import community_id_v1

    ref = communityid.CommunityID()
    cases = [
        (6, "192.168.50.10", "203.0.113.20", 40000, 443),
        (17, "203.0.113.20", "192.168.50.10", 3478, 50000),
        (17, "2001:db8::1", "2001:db8:ffff::2", 5353, 5353),
        (6, "10.0.0.1", "10.0.0.1", 80, 8080),
    ]
    for proto, a, b, pa, pb in cases:
        want = ref.calc(communityid.FlowTuple(proto, a, b, pa, pb))
        got = community_id_v1(proto, ipaddress.ip_address(a).packed, ipaddress.ip_address(b).packed, pa, pb)
        assert got == want, (proto, a, b)


def test_the_quick_address_check_never_misses_a_special_address() -> None:
    """Orientation skips ipaddress's predicates for addresses outside maybe_special(); none of them may be true there."""
    import ipaddress
    import random

    from egressaudit.flows.orient import _SPECIAL, maybe_special

    assert _SPECIAL is not None  # this Python's ipaddress exposes its networks: the quick path is in use
    rng = random.Random(1)
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    addrs += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(100_000)]
    addrs += [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(20_000)]
    for prefix in ("2001:db8::", "fe80::", "fc00::", "ff02::", "::ffff:0:0", "2002::", "64:ff9b::", "100::", "2001::"):
        base = int(ipaddress.IPv6Address(prefix))
        addrs += [ipaddress.IPv6Address(base + rng.getrandbits(96)) for _ in range(2_000)]
    for version, (starts, ends) in _SPECIAL.items():
        top = 2**32 - 1 if version == 4 else 2**128 - 1
        for edge in [*starts, *ends]:
            make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            addrs += [make(v) for v in (edge - 1, edge, edge + 1) if 0 <= v <= top]
    quick = 0
    for a in addrs:
        if not maybe_special(a.packed):
            quick += 1
            assert not (a.is_private or a.is_link_local or a.is_loopback or a.is_multicast or a.is_unspecified), a
        if a.is_private or a.is_link_local or a.is_loopback or a.is_multicast or a.is_unspecified:
            assert maybe_special(a.packed), a
    assert quick > 100_000


def test_rtp_evidence_sets_grow_in_place(tmp_path: Path) -> None:
    """A hostile flow with a new SSRC in every RTP packet: each new value is added in place (a copy per value was
    quadratic: 80,000 SSRCs in one flow took 14 s), and two flows never share a set."""
    from egressaudit.dissect.rtp import RtpHeader

    a, b = Flow(17, 4, b"\x01\x02\x03\x04", 1, b"\x05\x06\x07\x08", 2, 0.0), Flow(17, 4, b"\x01\x02\x03\x04", 3, b"\x05\x06\x07\x08", 4, 0.0)
    a.note_rtp(RtpHeader(111, False, 0, 0, 1, 0, False, False, 12))
    b.note_rtp(RtpHeader(96, False, 0, 0, 2, 0, False, False, 12))
    ssrcs, pts = a.ssrcs, a.pts
    for ssrc in range(3, 1000):
        a.note_rtp(RtpHeader(111 if ssrc % 2 else 0, False, 0, 0, ssrc, 0, False, False, 12))
    assert a.ssrcs is ssrcs and a.pts is pts
    assert len(a.ssrcs) == 998 and a.pts == {0, 111} and b.ssrcs == {2} and b.pts == {96}
    a.hint("zoom")
    a.hint("teams")
    a.media_kind("audio")
    assert a.vendor_hints == {"zoom", "teams"} and a.media_kinds == {"audio"} and not b.vendor_hints and not b.media_kinds


def test_dns_in_clear_is_dissected_and_encrypted_dns_is_still_dns(tmp_path: Path) -> None:
    """Port 53 carries DNS in clear (dissected); UDP 853 carries DNS over QUIC (RFC 9250): name resolution too, so
    classified as DNS, but its bytes are never read as a DNS message (one list of ports for each, in dissect/dns.py)."""
    query = factories.dns_exchange("stats.example.net", "198.51.100.44")[0]
    doq = query.copy()
    doq[UDP].dport = 853
    doq[UDP].chksum = None
    doq.time = 1.0
    rows = {r["remote_port"]: r for r in _rows(tmp_path, [query, doq])}
    assert rows[53]["app_protocol"] == "dns" and rows[53]["category"] == "dns"
    assert rows[853]["app_protocol"] != "dns" and rows[853]["category"] == "dns"


def test_flows_without_inspection_are_the_same_flows_with_empty_evidence() -> None:
    """Live capture's table (inspect_payloads=False): same keys, ends and counters as the inspecting one."""
    evidence = [k for k in Evidence.__slots__ if k != "proto"]
    meter = ["proto", *Flow.__slots__]
    runs: list[list[Flow]] = [[], []]
    for out, inspecting in zip(runs, (True, False), strict=True):
        table = FlowTable(out.append, inspect_payloads=inspecting)
        for fr in iter_frames(SAMPLE, ReadStats(path=str(SAMPLE))):
            pkt = decode(fr.linktype, fr.data)
            if not isinstance(pkt, str):
                table.add(pkt, fr.ts)
        table.flush()
    full, bare = runs
    assert len(full) > 10 and sum(f.app_protocol is not None for f in full) > 0
    assert [[getattr(f, k) for k in meter] for f in full] == [[getattr(f, k) for k in meter] for f in bare]
    fresh = Evidence(PROTO_UDP)
    assert all(getattr(f, k) == getattr(fresh, k) for f in bare for k in evidence)
