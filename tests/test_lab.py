"""``egressaudit lab`` end to end: a scripted call in the lab's namespaces (Janus, DNS, sinks; headless Chromium
participants), the audited participant recorded by the audited-session machinery, the markers from its page.

What the lab proves about the tool (issue 14, point 5), against the truth the lab knows: the script's markers, the
audited page's own account of each step (``session.json`` ``call.lab.audited``: the SSRCs it sends with, the upload's
size) and the identifiers it planted (:data:`egressaudit.lab.world.PLANTED`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pandas as pd
import pyarrow.parquet as pq
import pytest

import egressaudit as ea
from egressaudit.lab import script as lab_script
from egressaudit.lab import world as lab_world
from egressaudit.report.states import egress_by_state

ROOT = Path(__file__).resolve().parents[1]
why = lab_world.unavailable() or lab_world.chromium_unavailable()
pytestmark = [pytest.mark.skipif(why is not None, reason=str(why)), pytest.mark.timeout(300)]
SECONDS = 40  # the default script (80 s) squeezed: every state lasts 1.5 s or more


@pytest.fixture(scope="module")
def lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ea.Session]:
    out = tmp_path_factory.mktemp("lab") / "lab"
    r = subprocess.run([sys.executable, "-m", "egressaudit", "lab", "--out", str(out), "--script", "default", "--duration", str(SECONDS)],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "next: egressaudit report" in r.stdout
    yield ea.open_session(out)


def _steps(s: ea.Session) -> dict[str, dict[str, Any]]:
    """The audited page's account of each step, by what it did (the first of each)."""
    steps: dict[str, dict[str, Any]] = {}
    for e in (s.manifest.call or {})["lab"]["audited"]:
        assert "error" not in e, e
        steps.setdefault(e["do"], e)
    return steps


def _egress(s: ea.Session) -> pd.DataFrame:
    f = s.flows
    return f[~f["is_local"].astype(bool)]


def test_the_session_is_an_audited_call_with_the_scripts_markers(lab_session: ea.Session) -> None:
    s = lab_session
    m = s.manifest
    assert m.state == "complete" and m.audited_client == "lab" and (m.call or {})["stopped_by"] == "stop"
    assert (m.call or {})["lab"]["errors"] == [] and (m.call or {})["netns"].startswith("eacall-")
    script = lab_script.load("default")
    audited = [st for st in sorted(script.steps, key=lambda x: x.at) if lab_script.AUDITED in st.targets(script.participants)]
    expected = ["joining", *(lab_script.ACTIONS[st.do][1].value for st in audited)]
    mk = s.markers
    assert list(mk["state"]) == expected and set(mk["source"]) == {"lab"}
    # at the script's (squeezed) times: the marker is the time the page finished the step
    t0 = mk["ts"].iloc[0].timestamp()
    steps = _steps(s)
    mute = mk[mk["state"] == "muted"]["ts"].iloc[0].timestamp()
    assert abs(mute - steps["mute"]["done"]) < 0.01 and 0 <= mute - t0 - steps["mute"]["at"] < 4
    assert set(s.flows["attributed_by"]) == {"netns"}  # every flow is the audited participant's


def test_media_signalling_and_sdk_beacons_are_classified_as_what_they_are(lab_session: ea.Session) -> None:
    s = lab_session
    egress, h = _egress(s), s.http
    # media to Janus is the first party's customer content; the SDKs' beacons third-party telemetry
    media = egress[egress["category"] == "media"]
    assert len(media) >= 1 and set(media["vendor"]) == {"lab"} and set(media["party"]) == {"first"}
    assert set(media["data_class"]) == {"customer_content"} and int(media["bytes_out"].sum()) > 100_000
    beacons = h[h["kind"] != "websocket"].groupby("host").agg(vendor=("vendor", "first"), party=("party", "first"), category=("category", "first"))
    assert beacons.loc["o4509.ingest.sentry.io"].tolist() == ["sentry", "third", "telemetry"]
    assert beacons.loc["api2.amplitude.com"].tolist() == ["amplitude", "third", "telemetry"]
    rtcstats = h[(h["host"] == "telemetry.lab.test") & (h["kind"] == "websocket")]
    assert len(rtcstats) >= 5 and set(rtcstats["category"]) == {"telemetry"} and set(rtcstats["party"]) == {"first"}
    signaling = egress[(egress["remote_port"] == 8989)]  # Janus's wss, handed to the proxy too (--redirect-port)
    assert len(signaling) >= 1 and set(signaling["category"]) == {"signaling"}
    ws = h[(h["kind"] == "websocket") & (h["host"] == "meet.lab.test") & (h["remote_port"] == 8989)]
    assert len(ws) >= 10 and set(ws["category"]) == {"signaling"} and set(ws["direction"]) == {"in", "out"}
    assert ws["flow_id"].notna().all()  # each message joined to the captured wss flow


def test_the_upload_and_the_chat_message_are_content_sent(lab_session: ea.Session) -> None:
    s = lab_session
    steps, egress, h = _steps(s), _egress(s), s.http
    # the upload: one multipart POST, the size the sink answered, a content upload joined to its flow
    up = h[(h["host"] == "upload.lab.test") & (h["method"] == "POST")]
    assert len(up) == 1 and up["category"].iloc[0] == "content_upload" and up["data_class"].iloc[0] == "customer_content"
    assert int(up["body_bytes_out"].iloc[0]) == steps["upload"]["result"]["bytes"] > 300_000
    flow = egress[egress["flow_id"] == up["flow_id"].iloc[0]]
    assert flow["category"].tolist() == ["content_upload"] and int(flow["bytes_out"].iloc[0]) > 300_000
    # the chat message rides the textroom's data channel (DTLS application data inside a media flow): its bytes
    # leave in the second the page sent it, and that flow's bytes are customer content
    st = s.streams
    dc = st[(st["kind"] == "data_channel") & (st["direction"] == "out")]
    sec = dc["ts"].map(lambda x: x.timestamp())
    asked, done = steps["chat"]["asked"], steps["chat"]["done"]
    at_chat = dc[(sec >= int(asked) - 1) & (sec <= done + 1)]
    assert int(at_chat["bytes"].sum()) > 0, dc
    assert set(egress[egress["flow_id"].isin(at_chat["flow_id"])]["data_class"]) == {"customer_content"}


def test_while_muted_no_audio_leaves_and_telemetry_goes_on(lab_session: ea.Session) -> None:
    s = lab_session
    steps, st, h = _steps(s), s.streams, s.http
    audio = set(steps["join"]["result"]["ssrcs"]["audio"])
    assert len(audio) == 1, steps["join"]
    rtp = st[(st["kind"] == "rtp") & (st["direction"] == "out") & st["ssrc"].isin(audio)]
    per_s = rtp.groupby(rtp["ts"].map(lambda x: int(x.timestamp())))["packets"].sum()
    mute, unmute = steps["mute"]["done"], steps["unmute"]["asked"]
    talking = per_s[(per_s.index >= steps["join"]["done"] + 1) & (per_s.index + 1 <= steps["mute"]["asked"])]
    muted = per_s[(per_s.index >= mute + 0.5) & (per_s.index + 1 <= unmute)]
    assert len(talking) >= 2 and talking.min() >= 30, per_s  # Opus: 50 packets a second
    assert int(unmute - mute) >= 3 and muted.sum() == 0, per_s
    after = per_s[(per_s.index >= steps["unmute"]["done"] + 1) & (per_s.index + 1 <= steps["leave"]["asked"])]
    assert len(after) >= 10 and after.min() >= 30, per_s  # back after unmute, until the page leaves
    # the video stream goes on while muted, and so does the telemetry
    video = set(steps["join"]["result"]["ssrcs"]["video"])
    v = st[(st["kind"] == "rtp") & (st["direction"] == "out") & st["ssrc"].isin(video)]
    vsec = v["ts"].map(lambda x: x.timestamp())
    assert int(v[(vsec >= mute + 0.5) & (vsec + 1 <= unmute)]["packets"].sum()) > 0
    tel = h[(h["category"] == "telemetry") & (h["direction"] != "in")]
    tsec = tel["ts_start"].map(lambda x: x.timestamp())
    assert int(((tsec >= mute) & (tsec <= unmute)).sum()) >= 1
    # the report's call-state table says the same from the same rows: less media sent while muted than talking
    by_state = egress_by_state(_egress(s), s.markers, s.http, s.streams)
    rate = (by_state["customer_content"] / by_state["seconds"]).set_axis(by_state["state"])
    assert rate["muted"] < rate["talking"], by_state


def test_flow_bytes_agree_with_tshark(lab_session: ea.Session) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    s = lab_session
    columns = ["ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "ip.len"]
    r = subprocess.run(["tshark", "-r", str(s.path / "capture.pcapng"), "-T", "fields", "-E", "separator=,", "-Y", "ip and (tcp or udp) and not icmp",
                        *(a for c in columns for a in ("-e", c))], capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    rows = [ln.split(",") for ln in r.stdout.splitlines() if ln]
    t = pd.DataFrame(rows, columns=["src", "dst", "ts", "td", "us", "ud", "len"])
    t["sport"] = (t["ts"] + t["us"]).astype(int)
    t["dport"] = (t["td"] + t["ud"]).astype(int)
    t["len"] = t["len"].astype(int)
    sums = t.groupby(["src", "sport", "dst", "dport"])["len"].sum().to_dict()
    f = s.flows[s.flows["transport"].isin(["tcp", "udp"])]
    by_tuple = f.groupby(["local_ip", "local_port", "remote_ip", "remote_port"])[["bytes_out", "bytes_in"]].sum()
    assert len(by_tuple) >= 10
    for (lip, lport, rip, rport), row in by_tuple.iterrows():
        out_ = sums.get((lip, int(lport), rip, int(rport)), 0)
        in_ = sums.get((rip, int(rport), lip, int(lport)), 0)
        assert abs(int(row["bytes_out"]) - out_) <= 0.01 * max(out_, 1), (lip, lport, rip, rport, row.tolist(), out_)
        assert abs(int(row["bytes_in"]) - in_) <= 0.01 * max(in_, 1), (lip, lport, rip, rport, row.tolist(), in_)
    assert int(f["bytes_out"].sum() + f["bytes_in"].sum()) == int(t["len"].sum())


def test_the_planted_identifiers_are_found_and_stored_nowhere_in_clear(lab_session: ea.Session) -> None:
    s = lab_session
    fields = s.fields
    detected = {d for ds in fields["detectors"].dropna() for d in ds}
    assert {"email", "device_id", "meeting_title"} <= detected, detected
    for host in ("o4509.ingest.sentry.io", "api2.amplitude.com"):  # the third parties get them
        at = {d for ds in fields[fields["host"] == host]["detectors"].dropna() for d in ds}
        assert {"email", "meeting_title"} <= at, (host, at)
    assert fields["value"].isna().all()
    forms = {v for p in lab_world.PLANTED.values() for v in (p, quote(p), quote_plus(p), quote(p, safe=""))}
    needles = [v.encode() for v in forms] + [v.encode("utf-16-le") for v in forms]
    for path in sorted(p for p in s.path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".parquet":  # compressed: look at the values
            data = pq.read_table(path).to_pandas().astype(str).to_csv().encode()
        assert not [n for n in needles if n in data], path
