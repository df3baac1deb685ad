"""Call-state markers (issue 13, point 4): `egressaudit session mark` from other processes, and the report's measures
split by state."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import egressaudit as ea
from egressaudit.errors import EXIT_INPUT, EXIT_USAGE
from egressaudit.report.states import BEFORE, egress_by_state

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo"


def egressaudit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "egressaudit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m") / "call"
    ea.analyze_files([SAMPLE / "call.pcapng"], out, local_nets=["10.77.0.2/32"], signature_files=[SAMPLE / "selfhosted.yaml"])
    return out


def test_marks_from_other_processes_land_in_the_markers_table(tmp_path: Path, sample: Path) -> None:
    out = tmp_path / "call"
    ea.analyze_files([SAMPLE / "call.pcapng"], out, local_nets=["10.77.0.2/32"], signature_files=[SAMPLE / "selfhosted.yaml"])
    r = egressaudit("session", "mark", "Camera Off", "--note", "laptop lid", "--session", str(out))
    assert r.returncode == 0 and "camera-off" in r.stdout, r.stderr
    r = egressaudit("session", "mark", "waiting for the host", env={"EGRESSAUDIT_SESSION": str(out)})  # a word of one's own
    assert r.returncode == 0, r.stderr
    # eight marks at once from eight processes: none lost (each is added under the session's lock)
    procs = [subprocess.Popen([sys.executable, "-m", "egressaudit", "session", "mark", "muted" if i % 2 else "unmuted", "-s", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(8)]  # fmt: skip
    assert [p.wait(120) for p in procs] == [0] * 8
    m = ea.open_session(out).markers
    assert len(m) == 10 and m["ts"].is_monotonic_increasing and set(m["session_id"]) == {"call"} and set(m["source"]) == {"cli"}
    assert m.iloc[0]["state"] == "camera-off" and m.iloc[0]["note"] == "laptop lid" and m.iloc[1]["state"] == "waiting for the host"
    assert sorted(m["state"][2:]) == ["muted"] * 4 + ["unmuted"] * 4
    assert stat.S_IMODE((out / "markers.parquet").stat().st_mode) == 0o600


def test_a_bad_mark_is_one_line(tmp_path: Path, sample: Path) -> None:
    r = egressaudit("session", "mark", "  ", "-s", str(sample))
    assert r.returncode == EXIT_USAGE and r.stderr.count("\n") == 1 and "needs a state" in r.stderr, r.stderr
    r = egressaudit("session", "mark", "x" * 65, "-s", str(sample))
    assert r.returncode == EXIT_USAGE and "at most 64" in r.stderr
    (tmp_path / "plain").mkdir()
    r = egressaudit("session", "mark", "muted", "-s", str(tmp_path / "plain"))
    assert r.returncode == EXIT_INPUT and "not a session folder" in r.stderr and not (tmp_path / "plain" / "markers.parquet").exists()


def test_bytes_are_split_by_state_as_the_time_figure_spreads_them() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(s: float) -> pd.Timestamp:
        return pd.Timestamp(t0 + timedelta(seconds=s))

    flows = pd.DataFrame(
        {
            "ts_start": [at(0), at(30), at(10)],
            "ts_end": [at(100), at(30), at(90)],
            "bytes_out": [1000, 50, 800],
            "data_class": ["customer_content", "service_generated", "service_generated"],
        }
    )
    markers = pd.DataFrame({"ts": [at(20), at(60)], "state": ["talking", "muted"], "note": [None, "mic off"]})
    http = pd.DataFrame({"ts_start": [at(5), at(25), at(61), at(70)]})
    t = egress_by_state(flows, markers, http).set_index("state")
    assert list(t.index) == [BEFORE, "talking", "muted"]
    assert t["seconds"].tolist() == [20.0, 40.0, 40.0]
    assert t["customer_content"].tolist() == [200, 400, 400]  # 10 B/s over 0-100 s
    assert t["service_generated"].tolist() == [100, 50 + 400, 300]  # 10 B/s over 10-90 s, and 50 B at 30 s
    assert t["service_generated_per_min"].tolist() == [300, 675, 450]
    assert t["http_exchanges"].tolist() == [1, 1, 2] and t.loc["muted", "note"] == "mic off"
    assert egress_by_state(flows, markers.iloc[0:0], http).empty


def test_the_report_has_a_per_state_table_and_shades_the_states(tmp_path: Path, sample: Path) -> None:
    out = tmp_path / "call"
    ea.analyze_files([SAMPLE / "call.pcapng"], out, local_nets=["10.77.0.2/32"], signature_files=[SAMPLE / "selfhosted.yaml"])
    s = ea.open_session(out)
    t0, t1 = s.flows["ts_start"].min(), s.flows["ts_end"].max()
    ea.add_marker(out, "talking", ts=(t0 + (t1 - t0) * 0.25).to_pydatetime())
    ea.add_marker(out, "muted", ts=(t0 + (t1 - t0) * 0.6).to_pydatetime())
    r = egressaudit("report", str(out))
    assert r.returncode == 0, r.stderr
    assert "egress by call state" in r.stdout and "muted" in r.stdout
    page = (out / "report.html").read_text()
    assert 'id="states"' in page and "talking" in page and "(before the first marker)" in page
    from egressaudit.report import load_markers
    from egressaudit.report.summary import egress

    flows = s.flows.astype(object).where(s.flows.notna(), None)
    by_state = egress_by_state(egress(flows.assign(is_local=s.flows["is_local"].astype(bool))), load_markers(out))
    sent = int(s.flows.loc[~s.flows["is_local"].astype(bool), "bytes_out"].sum())
    assert abs(int(by_state["bytes_out"].sum()) - sent) <= len(by_state)  # every egress byte in one state (rounding aside)
