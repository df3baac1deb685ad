"""``egressaudit lab`` end to end: a scripted call in the lab's namespaces (Janus, DNS, sinks; headless Chromium
participants), the audited participant recorded by the audited-session machinery, the markers from its page.
What the lab proves about the classification (issue 14, point 5), as far as it is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import egressaudit as ea
from egressaudit.lab import world as lab_world

ROOT = Path(__file__).resolve().parents[1]
why = lab_world.unavailable() or lab_world.chromium_unavailable()
pytestmark = [pytest.mark.skipif(why is not None, reason=str(why)), pytest.mark.timeout(300)]


def test_a_scripted_lab_call_is_an_audited_session_with_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    r = subprocess.run([sys.executable, "-m", "egressaudit", "lab", "--out", str(out), "--script", "mute", "--duration", "20"],
                       cwd=ROOT, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "next: egressaudit report" in r.stdout
    s = ea.open_session(out)
    m = s.manifest
    assert m.state == "complete" and m.audited_client == "lab" and (m.call or {})["stopped_by"] == "stop"
    assert (m.call or {})["lab"]["errors"] == [] and (m.call or {})["netns"].startswith("eacall-")

    # the markers are the audited page's: in the script's order, at its (squeezed) times
    mk = s.markers
    assert list(mk["state"]) == ["joining", "talking", "muted", "unmuted", "left"] and set(mk["source"]) == {"lab"}
    t = mk["ts"].map(lambda x: x.timestamp()).tolist()
    assert 4 <= t[2] - t[0] <= 8 and 10 <= t[3] - t[0] <= 15  # mute at 15/60 of 20 s, unmute at 35/60

    f, h = s.flows, s.http
    egress = f[~f["is_local"].astype(bool)]
    # media to Janus is the first party's customer content; the SDKs' beacons third-party telemetry
    media = egress[egress["category"] == "media"]
    assert len(media) >= 1 and set(media["vendor"]) == {"lab"} and set(media["party"]) == {"first"}
    assert set(media["data_class"]) == {"customer_content"} and int(media["bytes_out"].sum()) > 100_000
    by_host = h.groupby("host").agg(vendor=("vendor", "first"), party=("party", "first"), category=("category", "first"))
    assert by_host.loc["o4509.ingest.sentry.io"].tolist() == ["sentry", "third", "telemetry"]
    assert by_host.loc["api2.amplitude.com"].tolist() == ["amplitude", "third", "telemetry"]
    assert by_host.loc["telemetry.lab.test", "category"] == "telemetry"
    signaling = egress[(egress["remote_port"] == 8989)]  # Janus's wss, handed to the proxy too (--redirect-port)
    assert len(signaling) >= 1 and set(signaling["category"]) == {"signaling"}
    ws = h[(h["kind"] == "websocket") & (h["host"] == "meet.lab.test") & (h["remote_port"] == 8989)]
    assert len(ws) >= 10 and set(ws["category"]) == {"signaling"} and set(ws["direction"]) == {"in", "out"}
    assert ws["flow_id"].notna().all()  # each message joined to the captured wss flow
    # every flow is the audited participant's, and the others' traffic is not in the session
    assert set(f["attributed_by"]) == {"netns"}
    # the planted identifiers are found by the inventory and stored only as salted hashes
    fields = s.fields
    detected = {d for ds in fields["detectors"].dropna() for d in ds}
    assert {"email"} <= detected, detected
    assert fields["value"].isna().all()
    assert not any("alice@lab.test" in str(v) for v in fields.astype(str).to_numpy().ravel())
