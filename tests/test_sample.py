"""The samples shipped in captures/: janus-echo (a real WebRTC call recorded by record.sh) analyses as its README
says; lab-call (a lab session recorded by ``egressaudit lab``) is the input of the README's quick start, analysed
again as a session folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import egressaudit as ea
from egressaudit.cli import app
from egressaudit.report.states import egress_by_state

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo"
LAB = ROOT / "captures" / "lab-call"


def test_quick_start_sample(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    args = ["analyze", str(SAMPLE / "call.pcapng"), "--local-net", "10.77.0.2/32", "--signatures", str(SAMPLE / "selfhosted.yaml"), "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out / "flows.parquet").to_pylist()
    (media,) = [r for r in rows if r["category"] == "media"]
    assert (media["transport"], media["remote_ip"], media["rule"], media["data_class"], media["party"]) == (
        "udp", "10.77.0.1", "selfhosted/media-udp", "customer_content", "first",
    )  # fmt: skip
    assert media["stun_packets"] > 0 and media["dtls_packets"] > 0 and media["rtp_packets"] > 0 and media["rtcp_packets"] > 0
    assert set(media["rtp_payload_types"]) == {96, 97, 111}  # VP8, RTX, Opus (README)
    assert media["packets_out"] + media["packets_in"] > 3000 and media["bytes_out"] > 500_000
    (tel,) = [r for r in rows if r["category"] == "telemetry"]
    assert (tel["hostname"], tel["hostname_source"], tel["remote_port"], tel["data_class"]) == (
        "stats.selfhosted.test",
        "tls_sni",
        443,
        "service_generated",
    )
    assert all(r["category"] != "unknown" for r in rows if r["transport"] in ("tcp", "udp")), [r for r in rows if r["category"] == "unknown"]
    assert not any(r["is_local"] for r in rows if r["remote_ip"] == "10.77.0.1")
    session = json.loads((out / "session.json").read_text())
    assert session["inputs"][0]["sha256"] and session["audited_client"] == "selfhosted"

    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "selfhosted" in html and "10.77.0.2" not in html  # local address redacted by default


def test_readme_quick_start_on_the_lab_sample(tmp_path: Path) -> None:
    """The README's first command: the shipped lab session analysed again, then reported, with its call states."""
    out = tmp_path / "sample"
    r = CliRunner().invoke(app, ["analyze", str(LAB), "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    rec, s = ea.open_session(LAB), ea.open_session(out)
    m = s.manifest
    assert m.state == "complete" and m.audited_client == "lab" and (m.call or {})["analysed_from"]["session_id"] == "lab-call"
    assert (out / "signatures" / "lab.yaml").is_file()
    # the packets are metered as when the session was recorded; the recorded rows are taken over
    f, f0 = s.flows, rec.flows
    assert len(f) == len(f0) and int(f["bytes_out"].sum()) == int(f0["bytes_out"].sum()) and set(f["attributed_by"]) == {"netns"}
    assert len(s.http) == len(rec.http) and s.http["flow_id"].notna().sum() == rec.http["flow_id"].notna().sum() > 0
    assert s.markers["state"].tolist() == rec.markers["state"].tolist() and len(s.fields) == len(rec.fields)
    assert set(s.http["session_id"]) == set(f["session_id"]) == {"sample"}
    # what the lab knows: Janus media is first-party content, the SDKs' beacons third-party telemetry
    egress = f[~f["is_local"].astype(bool)]
    media = egress[egress["category"] == "media"]
    assert set(media["vendor"]) == {"lab"} and set(media["data_class"]) == {"customer_content"}
    assert {"amplitude", "sentry"} <= set(egress[egress["party"] == "third"]["vendor"])
    # while muted, less content leaves than while talking (the page stops its audio sender)
    by_state = egress_by_state(egress, s.markers, s.http, s.streams).set_index("state")
    rate = by_state["customer_content"] / by_state["seconds"]
    assert rate["muted"] < rate["talking"], by_state
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "muted" in r.output and "amplitude" in r.output
    html = (out / "report.html").read_text()
    assert "muted" in html and "10.199." not in html  # the audited host's address redacted


@pytest.mark.parametrize("case", ["no-manifest", "with-other-inputs", "onto-itself"])
def test_analyze_a_session_folder_refuses_what_it_cannot_do(tmp_path: Path, case: str) -> None:
    copy = tmp_path / "lab-call"
    shutil.copytree(LAB, copy)
    (tmp_path / "empty").mkdir()
    args = {
        "no-manifest": [str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
        "with-other-inputs": [str(LAB), str(SAMPLE / "call.pcapng"), "--out", str(tmp_path / "o")],
        "onto-itself": [str(copy), "--out", str(copy), "--force"],
    }[case]
    r = CliRunner().invoke(app, ["analyze", *args])
    assert r.exit_code != 0 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o").exists() and sorted(p.name for p in copy.rglob("*")) == sorted(p.name for p in LAB.rglob("*"))
