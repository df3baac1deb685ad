"""The streams table (egressaudit/flows/streams.py): what each UDP media flow carried, per second, per RTP stream.

(a) the shipped real WebRTC call and real public captures, held to the flows' counters and to tshark;
(b) synthetic calls built with scapy: per-second bins, kinds, a 5-tuple split by an idle gap, IP fragments;
(c) the report's per-state table: a mute in the middle of a media flow shows as media that stopped.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

import egressaudit as ea
from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.audit.files import analyze_files
from egressaudit.flows.streams import KINDS, media_streams
from egressaudit.report.states import egress_by_state
from egressaudit.report.summary import egress, egress_over_time
from egressaudit.schema import arrow_schema
from egressaudit.session import manifest
from egressaudit.signatures import default_db
from tests.factories import CLIENT, write_pcap

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo"
SHARED = ROOT.parent / "shared" / "captures"
PUBLIC = SHARED / "public" / "ndpi"
TSHARK = shutil.which("tshark")
SERVER = "203.0.113.50"  # (a documentation address, private to ipaddress: the sessions say --local-net CLIENT/32)
T0 = 1_700_000_000.005  # just past a whole second: packet i/50 s later is in second i // 50


def _sums_match_flows(flows: pd.DataFrame, streams: pd.DataFrame) -> list[int]:
    """Every UDP media flow's counters are its stream rows' sums, per direction; the media flows' ids."""
    media = flows[(flows["category"] == "media") & (flows["transport"] == "udp")]
    assert set(streams["flow_id"]) <= set(media["flow_id"])
    for f in media.itertuples():
        rows = streams[streams["flow_id"] == f.flow_id]
        for d in ("out", "in"):
            r = rows[rows["direction"] == d]
            assert int(r["packets"].sum()) == getattr(f, f"packets_{d}"), (f.flow_id, d)
            assert int(r["bytes"].sum()) == getattr(f, f"bytes_{d}"), (f.flow_id, d)
            assert int(r["payload_bytes"].sum()) == getattr(f, f"payload_bytes_{d}"), (f.flow_id, d)
    return [int(i) for i in media["flow_id"]]


def _tshark(path: Path, *args: str) -> list[list[str]]:
    assert TSHARK
    r = subprocess.run([TSHARK, "-r", str(path), *args], capture_output=True, text=True, timeout=120, check=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line]


# -- (a) real captures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ea.Session, pd.DataFrame]:
    """The shipped call analysed as the README says; its streams table written beside the flows, as analyze does."""
    out = tmp_path_factory.mktemp("streams") / "call"
    done = analyze_files([SAMPLE / "call.pcapng"], out, local_nets=["10.77.0.2/32"], signature_files=[SAMPLE / "selfhosted.yaml"])
    assert done.flows is not None and done.flows.streams is not None and ea.open_session(out).has("streams")  # (analyze wrote it)
    s = ea.open_session(out)
    return out, s, s.streams


def test_the_calls_streams_add_up_to_its_media_flow(janus: tuple[Path, ea.Session, pd.DataFrame]) -> None:
    _, s, st = janus
    assert _sums_match_flows(s.flows, st) == [15]  # the one bundled WebRTC flow (audio, video, RTCP, ICE, DTLS)
    assert list(st.columns) == [f.name for f in arrow_schema("streams")]
    assert set(st["kind"]) == {"rtp", "rtcp", "stun", "dtls"} and set(st["direction"]) == {"out", "in"}
    assert (st["ts"].dt.microsecond == 0).all() and set(st["session_id"]) == {"call"}
    sec = st["ts"].map(lambda t: t.timestamp())
    f = s.flows.set_index("flow_id").loc[15]
    assert sec.min() == int(f["ts_start"].timestamp()) and sec.max() == int(f["ts_end"].timestamp())
    # the session's other tables and many sessions' frames carry it too
    many = ea.open_sessions([janus[0]]).frame("streams")
    assert len(many) == len(st) and list(many.columns[:3]) == ["session_id", "client", "label"]


def test_the_calls_rtp_streams_are_the_ones_tshark_sees(janus: tuple[Path, ea.Session, pd.DataFrame]) -> None:
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark): it is the second opinion on the RTP streams")
    _, _, st = janus
    path = SAMPLE / "call.pcapng"
    seen: Counter[tuple[str, int, int]] = Counter()
    markers: Counter[tuple[str, int, int]] = Counter()
    for src, ssrc, pt, marker in _tshark(path, "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields", "-e", "ip.src", "-e", "rtp.ssrc",
                                         "-e", "rtp.p_type", "-e", "rtp.marker"):  # fmt: skip
        key = ("out" if src == "10.77.0.2" else "in", int(ssrc, 16), int(pt))
        seen[key] += 1
        markers[key] += marker in ("1", "True")
    rtp = st[st["kind"] == "rtp"].groupby(["direction", "ssrc", "payload_type"])[["packets", "marker_packets"]].sum()
    ours = {(d, int(ssrc), int(pt)): (int(r["packets"]), int(r["marker_packets"])) for (d, ssrc, pt), r in rtp.iterrows()}
    assert ours == {k: (n, markers[k]) for k, n in seen.items()}  # Opus (111) and VP8 (96) each way, and retransmissions (97)
    # STUN and DTLS packets as tshark dissects them (no data channel: the EchoTest page opens none, so its DTLS is the
    # handshake and the closing alerts only; the ICMP error that quotes the last alert is not in the UDP flow)
    stun = _tshark(path, "-Y", "stun && udp.port == 20060", "-T", "fields", "-e", "frame.number")
    dtls = _tshark(path, "-Y", "dtls && udp && !icmp", "-T", "fields", "-e", "dtls.record.content_type")
    assert int(st.loc[st["kind"] == "stun", "packets"].sum()) == len(stun)
    assert int(st.loc[st["kind"] == "dtls", "packets"].sum()) == len(dtls) and not any("23" in t[0].split(",") for t in dtls)
    assert (st["kind"] != "data_channel").all()


@pytest.mark.parametrize("name", ["stun_dtls_rtp.pcapng", "stun_google_meet.pcapng"])
def test_data_channel_packets_in_real_captures(name: str) -> None:
    """Real WebRTC captures with a data channel (nDPI's test captures): DTLS application data records are the
    data_channel rows, as many as tshark finds; every media flow adds up."""
    path = PUBLIC / name
    if not path.exists():
        pytest.skip(f"{path} is absent (a plain clone has no ../shared/captures)")
    if TSHARK is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    r = analyze([path], AnalyzeOptions(), default_db())
    assert r.streams is not None
    st = r.streams.to_pandas()
    _sums_match_flows(r.table.to_pandas(), st)
    app = _tshark(path, "-Y", "dtls.record.content_type == 23", "-T", "fields", "-e", "frame.number")
    assert int(st.loc[st["kind"] == "data_channel", "packets"].sum()) == len(app) > 0


def test_every_real_capture_with_media_adds_up() -> None:
    """On every public capture, whatever its framing (SLL, VLAN, tunnels) and however odd its timestamps."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (a plain clone has no ../shared/captures)")
    with_media = 0
    for path in sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng")):
        r = analyze([path], AnalyzeOptions(), default_db())
        if r.streams is None:
            continue
        with_media += 1
        _sums_match_flows(r.table.to_pandas(), r.streams.to_pandas())
    assert with_media >= 10


# -- (b) synthetic calls -----------------------------------------------------------------------------------------


def _rtp(pt: int, seq: int, ssrc: int, size: int, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, seq * 960, ssrc) + os.urandom(size)


def _udp(payload: bytes, t: float, sport: int = 50000, dport: int = 3478, out: bool = True, ip_id: int = 1) -> Packet:
    ip = IP(src=CLIENT, dst=SERVER, id=ip_id) if out else IP(src=SERVER, dst=CLIENT, id=ip_id)
    p = Ether() / ip / UDP(sport=sport if out else dport, dport=dport if out else sport) / Raw(payload)
    p.time = t
    return p


STUN_REQ = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
DTLS_HELLO = b"\x16\xfe\xfd" + bytes(8) + struct.pack("!H", 100) + os.urandom(100)
DTLS_DATA = b"\x17\xfe\xfd" + b"\x00\x01" + bytes(6) + struct.pack("!H", 60) + os.urandom(60)
RTCP_SR = struct.pack("!BBHI", 0x80, 200, 6, 0xA0D10) + os.urandom(20)
TURN_DATA = struct.pack("!HH", 0x4000, 16) + os.urandom(16)


def _call(path: Path) -> Path:
    """Audio out at 50 pps for 10 s, 5 s of silence (a mute), 10 s more; audio in all along; video (PT 96, marker on
    every 3rd packet) out for the first 5 s; ICE, DTLS, the data channel, RTCP, TURN ChannelData and junk around it.
    A second 5-tuple: 3 s of audio, 30 s idle, 3 s more (two flows with idle_timeout=10); a third whose first flow is
    not media (three packets of noise) and whose second, after an idle gap, is."""
    pk: list[Packet] = [_udp(STUN_REQ, T0 - 0.5), _udp(STUN_REQ, T0 - 0.49, out=False)]
    pk += [_udp(DTLS_HELLO, T0 - 0.3), _udp(DTLS_HELLO, T0 - 0.29, out=False)]
    for i in range(1250):
        t = T0 + i / 50
        if not 500 <= i < 750:
            pk.append(_udp(_rtp(111, i, 0xA0D10, 100), t))
        pk.append(_udp(_rtp(111, i, 0xB0B, 90), t + 0.003, out=False))
        if i < 250:
            pk.append(_udp(_rtp(96, i, 0xF1DE0, 900, marker=i % 3 == 2), t + 0.005))
    for k in range(25):
        pk += [_udp(RTCP_SR, T0 + k + 0.5), _udp(DTLS_DATA, T0 + k + 0.6), _udp(DTLS_DATA, T0 + k + 0.61, out=False)]
    pk += [_udp(TURN_DATA, T0 + 2.7), _udp(b"\x80\x6f\x00\x01", T0 + 2.8), _udp(b"\x10" + bytes(30), T0 + 2.9), _udp(b"", T0 + 3.1)]
    # one large video frame, fragmented (3 fragments), and one later fragment whose first was never seen
    big = _udp(_rtp(96, 999, 0xF1DE0, 3000, marker=True), T0 + 1.5, ip_id=4242)
    for j, frag in enumerate(fragment(big[IP], fragsize=1400)):
        p = Ether() / frag
        p.time = T0 + 1.5 + j * 0.0001
        pk.append(p)
    orphan = Ether() / IP(src=CLIENT, dst=SERVER, id=777, frag=200, proto=17) / Raw(os.urandom(200))
    orphan.time = T0 + 1.6
    pk.append(orphan)
    for i in range(150):  # the second 5-tuple: split by the idle gap
        pk.append(_udp(_rtp(0, i, 0x5EC0, 160), T0 + i / 50, sport=50002, dport=3479))
        pk.append(_udp(_rtp(0, i, 0x5EC1, 160), T0 + 33 + i / 50, sport=50002, dport=3479))
    for i in range(3):  # the third: noise, then (after 20 s) media
        pk.append(_udp(b"\x55" * 40, T0 + i, sport=50003, dport=3480))
    for i in range(150):
        pk.append(_udp(_rtp(8, i, 0x7111D, 160), T0 + 20 + i / 50, sport=50003, dport=3480))
        pk.append(_udp(_rtp(8, i, 0x7111E, 160), T0 + 20 + i / 50 + 0.001, sport=50003, dport=3480, out=False))
    return write_pcap(path, pk)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = _call(tmp_path_factory.mktemp("syn") / "call.pcap")
    r = analyze([path], AnalyzeOptions(local_nets=[f"{CLIENT}/32"], idle_timeout=10.0, session_id="syn"), default_db())
    assert r.streams is not None
    return r.table.to_pandas(), r.streams.to_pandas()


def _sec(st: pd.DataFrame) -> pd.Series:
    return st["ts"].map(lambda t: int(t.timestamp()) - int(T0))


def test_per_second_bins_of_a_call_with_a_mute(synthetic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    flows, st = synthetic
    main = flows[flows["local_port"] == 50000]
    assert len(main) == 1 and main.iloc[0]["category"] == "media" and main.iloc[0]["fragments"] == 3
    fid = int(main.iloc[0]["flow_id"])
    rows = st[st["flow_id"] == fid]
    audio = rows[(rows["kind"] == "rtp") & (rows["ssrc"] == 0xA0D10)]
    per_s = audio.groupby(_sec(audio))["packets"].sum()
    assert per_s.to_dict() == {s: 50 for s in [*range(10), *range(15, 25)]}  # nothing in seconds 10-14: the mute
    assert set(audio["payload_type"]) == {111} and set(audio["direction"]) == {"out"} and audio["marker_packets"].sum() == 0
    back = rows[(rows["kind"] == "rtp") & (rows["ssrc"] == 0xB0B)]
    assert set(back["direction"]) == {"in"} and back.groupby(_sec(back))["packets"].sum().tolist() == [50] * 25
    video = rows[(rows["kind"] == "rtp") & (rows["payload_type"] == 96)]
    # 250 packets at 50 pps, a marker on every third, and the fragmented frame: its 3 fragments, one marker
    assert int(video["packets"].sum()) == 253 and int(video["marker_packets"].sum()) == 250 // 3 + 1
    assert int(video.loc[_sec(video) == 1, "packets"].sum()) == 53
    kinds = rows.groupby("kind")["packets"].sum().to_dict()
    assert kinds["stun"] == 2 and kinds["dtls"] == 2 and kinds["data_channel"] == 50 and kinds["rtcp"] == 25
    assert kinds["turn_channel"] == 1 and kinds["other"] == 3  # an RTP-range packet too short, a ZRTP-range one, an empty one
    assert set(rows["kind"]) <= set(KINDS)
    sr = rows[rows["kind"] == "rtcp"]
    assert set(sr["ssrc"]) == {0xA0D10} and set(sr["payload_type"]) == {200}
    assert rows.loc[~rows["kind"].isin(["rtp", "rtcp"]), ["ssrc", "payload_type"]].isna().all().all()
    _sums_match_flows(flows, st)  # the orphan fragment is in neither: the flows table could not join it either


def test_a_five_tuple_split_by_an_idle_gap(synthetic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    flows, st = synthetic
    two = flows[flows["local_port"] == 50002].sort_values("ts_start")
    assert len(two) == 2 and (two["category"] == "media").all()
    first, second = (st[st["flow_id"] == i] for i in two["flow_id"])
    assert set(first["ssrc"]) == {0x5EC0} and sorted(set(_sec(first))) == [0, 1, 2]
    assert set(second["ssrc"]) == {0x5EC1} and sorted(set(_sec(second))) == [33, 34, 35]
    # the same 5-tuple's earlier flow that was not media: its packets are in no row
    third = flows[flows["local_port"] == 50003].sort_values("ts_start")
    assert third["category"].tolist()[1] == "media" and third["category"].tolist()[0] != "media"
    noise, media = third["flow_id"].tolist()
    assert noise not in set(st["flow_id"]) and set(st.loc[st["flow_id"] == media, "ssrc"]) == {0x7111D, 0x7111E}


def test_no_media_no_second_pass(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "dns.pcap", [_udp(b"\x12\x34" + bytes(30), T0, sport=53001, dport=53)])
    r = analyze([path], AnalyzeOptions(), default_db())
    assert r.streams is None
    empty = pa.table({"transport": ["tcp"], "category": ["media"]})
    assert media_streams([path], empty, "x") is None  # (never opens the capture: TCP media is not split)


def test_a_recovered_capture_writes_its_streams(tmp_path: Path) -> None:
    """live.recover (a killed `egressaudit capture`) writes the streams table beside the flows."""
    from egressaudit.audit.live import recover

    out = tmp_path / "killed"
    out.mkdir(mode=0o700)
    shutil.copy(SAMPLE / "call.pcapng", out / "capture.pcapng")

    def capturing(m: manifest.Manifest) -> None:
        m.state = "capturing"
        m.local_nets = ["10.77.0.2/32"]
        m.signature_files = [str(SAMPLE / "selfhosted.yaml")]

    manifest.update(out, capturing, session_id="killed")
    assert recover(out) is not None
    s = ea.open_session(out)
    assert s.has("streams") and _sums_match_flows(s.flows, s.streams) == [15]


# -- (c) the per-state table -------------------------------------------------------------------------------------


def test_a_mute_shows_as_media_that_stopped(tmp_path: Path, synthetic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    flows, st = synthetic
    main = flows[flows["local_port"] == 50000]
    at = pd.Timestamp(int(T0), unit="s", tz="UTC")
    markers = pd.DataFrame({"ts": [at, at + pd.Timedelta(seconds=10.2), at + pd.Timedelta(seconds=14.9)],
                            "state": ["talking", "muted", "unmuted"], "note": [None, None, None]})  # fmt: skip
    assert not main["is_local"].any()
    by = egress_by_state(egress(main), markers, None, st).set_index("state")
    even = egress_by_state(egress(main), markers).set_index("state")
    sent = int(main["bytes_out"].sum())
    assert abs(int(by["bytes_out"].sum()) - sent) <= len(by) and abs(int(even["bytes_out"].sum()) - sent) <= len(even)
    # muted 10.2-14.9 s: out RTP stopped at 10 s and came back at 15; what is left is RTCP and the data channel
    others = int(st[(st["flow_id"] == int(main.iloc[0]["flow_id"])) & (st["direction"] == "out") & ~st["kind"].isin(["rtp"])]["bytes"].sum())
    assert by.loc["muted", "customer_content"] <= others * 5 / 25 + 200
    assert even.loc["muted", "customer_content"] > 0.15 * sent  # spread evenly, the mute was invisible
    assert by.loc["talking", "customer_content"] > 0.5 * sent


def test_the_time_figure_shows_the_mute_too(synthetic: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """The report's egress-over-time series places the media flow's bytes where they were sent, like the state table."""
    flows, st = synthetic
    main = flows[flows["local_port"] == 50000]
    placed, w = egress_over_time(main, bin_s=1, streams=st)
    even, _ = egress_over_time(main, bin_s=1)
    assert w == 1
    sent = int(main["bytes_out"].sum())
    for series in (placed, even):
        assert abs(series.to_numpy().sum() - sent) < 1
    sec = np.asarray([int(t.timestamp()) - int(T0) for t in placed.index])
    cc = placed["customer_content"].to_numpy()
    talking, muted = cc[(sec >= 0) & (sec < 10)].mean(), cc[(sec >= 10) & (sec < 15)].mean()
    assert muted < 0.1 * talking, (talking, muted)
    ev = even["customer_content"].to_numpy()
    assert ev[(sec >= 10) & (sec < 15)].mean() > 0.5 * ev[(sec >= 0) & (sec < 10)].mean()  # spread evenly: no mute to see


def test_the_report_reads_the_streams_for_its_state_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """egressaudit report: the session's streams reach the per-state table (the mute shows) through build_report."""
    import egressaudit.report as report_mod

    path = _call(tmp_path / "call.pcap")
    out = tmp_path / "s"
    done = analyze_files([path], out, local_nets=[f"{CLIENT}/32"], idle_timeout=10.0)
    assert done.flows is not None and done.flows.streams is not None and ea.open_session(out).has("streams")  # (analyze wrote it)
    at = pd.Timestamp(int(T0), unit="s", tz="UTC")
    for state, dt in (("talking", 0.0), ("muted", 10.2), ("unmuted", 14.9)):
        ea.add_marker(out, state, ts=(at + pd.Timedelta(seconds=dt)).to_pydatetime())
    seen = []
    real = report_mod.summarize

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("streams"))
        data = real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(data)
        return data

    monkeypatch.setattr(report_mod, "summarize", spy)
    report_mod.build_report(out)
    streams, data = seen
    assert isinstance(streams, pd.DataFrame) and len(streams) == done.flows.streams.num_rows
    by = data.by_state.set_index("state")  # type: ignore[attr-defined]
    s = ea.open_session(out)
    media_out = int(egress(s.flows.assign(is_local=s.flows["is_local"].astype(bool))).query("category == 'media'")["bytes_out"].sum())
    muted = by.loc["muted", "customer_content"] / by.loc["muted", "seconds"]
    talking = by.loc["talking", "customer_content"] / by.loc["talking", "seconds"]
    assert muted < 0.2 * talking and by["customer_content"].sum() <= media_out + len(by)
