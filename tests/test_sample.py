"""The sample shipped in captures/janus-echo (a real WebRTC call recorded by record.sh) analyses as its README says."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from egressaudit.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "captures" / "janus-echo"


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
