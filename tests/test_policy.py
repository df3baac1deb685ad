"""``egressaudit check``: policies as data over real sessions (analysed real captures, the shipped lab session), each
violation with its evidence, text / JSON / JUnit XML, exit 7 on a violation, one line for a policy that cannot be used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

import egressaudit as ea
from egressaudit.audit.files import analyze_files
from egressaudit.cli import app
from egressaudit.errors import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION
from egressaudit.lab.world import PLANTED
from egressaudit.policy import load, policy_files

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
LAB = ROOT / "captures" / "lab-call"
NDPI = ROOT.parent / "shared" / "captures" / "public" / "ndpi"


def _cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["check", *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Webex's capture (it talks to Google Analytics and Crittercism) and a Zoom-only one, analysed."""
    if not (NDPI / "webex.pcap").exists() or not (NDPI / "zoom2.pcap").exists():
        pytest.skip(f"the real captures are not here ({NDPI}: ../shared/captures/public/ndpi)")
    base = tmp_path_factory.mktemp("real")
    return {name: analyze_files([NDPI / f"{name}.pcap"], base / name).out for name in ("webex", "zoom2")}


def test_the_shipped_policies_are_valid() -> None:
    files = policy_files([POLICIES])
    assert len(files) == 5
    kinds = {r.kind for f in files for r in load(f).rules}
    assert kinds == {"no-third-party", "max-rate", "content-destinations", "no-identifiers", "no-countries"}


def test_third_party_telemetry_fails_on_webex_and_passes_on_zoom(real: dict[str, Path]) -> None:
    policy = str(POLICIES / "no-third-party-telemetry.yaml")
    code, out, err = _cli(str(real["webex"]), "--policy", policy)
    assert code == EXIT_VIOLATION and "Traceback" not in out + err, out + err
    assert "FAIL" in out and "crittercism (third party) at api.crittercism.com" in out and "google (third party) at ssl.google-analytics.com" in out
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    webex = ea.open_session(real["webex"]).flows
    ga = webex[webex["hostname"] == "ssl.google-analytics.com"].iloc[0]
    assert f"flow {ga['flow_id']} tcp to {ga['remote_ip']}:443 ssl.google-analytics.com" in out and ga["community_id"] in out
    code, out, _ = _cli(str(real["zoom2"]), "--policy", policy)
    assert code == EXIT_OK and "pass" in out and "FAIL" not in out, out


def test_json_and_junit_say_the_same(real: dict[str, Path], tmp_path: Path) -> None:
    args = [str(real["webex"]), str(real["zoom2"]), "--policy", str(POLICIES / "no-third-party-telemetry.yaml"),
            "--policy", str(POLICIES / "muted-service-data-budget.yaml")]  # fmt: skip
    code, out, _ = _cli(*args, "--format", "json")
    assert code == EXIT_VIOLATION
    doc = json.loads(out)
    assert doc["summary"] == {"rules": 4, "pass": 1, "fail": 1, "not_applicable": 2, "violations": 3}
    (failed,) = [r for r in doc["results"] if r["status"] == "fail"]
    assert failed["session"] == "webex" and failed["rule"] == "third-party-telemetry" and failed["kind"] == "no-third-party"
    hosts = {e["hostname"] for v in failed["violations"] for e in v["evidence"]}
    assert {"api.crittercism.com", "ssl.google-analytics.com"} <= hosts
    # the muted budget cannot be checked without call-state markers: said, not passed
    na = [r for r in doc["results"] if r["status"] == "not_applicable"]
    assert {r["rule"] for r in na} == {"service-data-while-muted"} and all("markers" in r["reason"] for r in na)

    xml_file = tmp_path / "check.xml"
    code, out, _ = _cli(*args, "--format", "junit", "--output", str(xml_file))
    assert code == EXIT_VIOLATION and out == ""
    root = ET.fromstring(xml_file.read_text())
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "1", "2")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"webex", "zoom2"}
    case = suites["webex"].find("testcase[@name='third-party-telemetry']")
    assert case is not None and case.get("classname") == "no-third-party-telemetry"
    failure = case.find("failure")
    assert failure is not None and "3 violations" in (failure.get("message") or "") and "api.crittercism.com" in (failure.text or "")
    assert suites["zoom2"].find("testcase[@name='service-data-while-muted']/skipped") is not None


def test_countries_from_offline_data(real: dict[str, Path], tmp_path: Path) -> None:
    policy = tmp_path / "no-us.yaml"
    policy.write_text("name: no-us\nrules:\n  - {id: us, kind: no-countries, countries: [us]}\n")
    code, out, _ = _cli(str(real["webex"]), "--policy", str(policy))
    assert code == EXIT_VIOLATION and "US, " in out and "GeoLite2" in out, out
    code, out, _ = _cli(str(real["webex"]), "--policy", str(POLICIES / "no-egress-to-countries.yaml"))
    assert code == EXIT_OK and "24 remote addresses (24 with a country)" in out, out


def test_the_lab_session_breaks_the_identifier_and_muted_policies(tmp_path: Path) -> None:
    """The lab planted an e-mail, a device id and the meeting title in telemetry, and measured a mute."""
    code, out, _ = _cli(str(LAB), "--policy", str(POLICIES / "no-identifiers-in-telemetry.yaml"))
    assert code == EXIT_VIOLATION
    assert "email in events[].user_id sent to api2.amplitude.com" in out and "meeting_title in items[].payload.tags.meeting_title" in out
    assert not any(v in out for v in PLANTED.values())  # field paths and request ids, never values
    code, out, _ = _cli(str(LAB), "--policy", str(POLICIES / "muted-service-data-budget.yaml"))
    assert code == EXIT_VIOLATION and "while muted:" in out and "kB/min of service-generated data" in out, out
    generous = tmp_path / "generous.yaml"
    generous.write_text("name: generous\nrules:\n  - {id: muted, kind: max-rate, while: [muted], max_kb_per_min: 500}\n")
    code, out, _ = _cli(str(LAB), "--policy", str(generous))
    assert code == EXIT_OK and "service-generated data while muted" in out, out
    code, out, _ = _cli(str(LAB), "--policy", str(POLICIES / "content-uploads-first-party.yaml"))
    assert code == EXIT_OK and out.count("  pass ") == 2, out


def test_the_python_api() -> None:
    results = ea.check_policies([LAB], [POLICIES / "no-third-party-telemetry.yaml"])
    (r,) = results
    assert r.status == "fail" and {v.summary.split(" ")[0] for v in r.violations} == {"amplitude", "sentry"}
    assert all(e["row"] in ("flow", "http") for v in r.violations for e in v.evidence)


BAD = {
    "unknown-kind": ("rules:\n  - {id: a, kind: no-such-thing}\n", "rules[0] (a): unknown kind"),
    "no-kind": ("rules:\n  - {id: a}\n", "rules[0] (a): a rule needs a kind"),
    "bad-detector": ("rules:\n  - {id: ids, kind: no-identifiers, detectors: [emial]}\n", "rules[0] (ids): detectors: unknown detector 'emial'"),
    "negative": ("rules:\n  - {id: m, kind: max-rate, max_kb_per_min: -1}\n", "rules[0] (m): max_kb_per_min: Input should be greater than 0"),
    "state-typo": ("rules:\n  - {id: m, kind: max-rate, max_kb_per_min: 5, while: [camera_off]}\n", "did you mean 'camera-off'"),
    "duplicate": ("rules:\n  - {id: a, kind: no-third-party}\n  - {id: a, kind: no-third-party}\n", "rule id 'a' is used twice"),
    "country": ("rules:\n  - {id: c, kind: no-countries, countries: [Germany]}\n", "rules[0] (c): countries: not ISO 3166-1 alpha-2"),
    "extra-key": ("rules:\n  - {id: a, kind: no-third-party, categorys: [telemetry]}\n", "rules[0] (a): categorys: Extra inputs are not permitted"),
    "category": ("rules:\n  - {id: a, kind: no-third-party, categories: [telemetri]}\n", "rules[0] (a): categories[0]: Input should be"),
    "not-yaml": ("rules: [\n", "not YAML"),
    "not-a-mapping": ("- just a list\n", "a policy is a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_policy_that_cannot_be_used_is_one_line_naming_file_and_rule(tmp_path: Path, case: str) -> None:
    body, expected = BAD[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(body if case in ("not-yaml", "not-a-mapping") else f"name: {case}\n{body}")
    code, out, err = _cli(str(LAB), "--policy", str(f))
    assert code == EXIT_USAGE and out == "", (out, err)
    line = err.strip()
    assert len(line.splitlines()) == 1 and line.startswith(f"error: {f}: ") and expected in line, line


def test_missing_policy_and_missing_session(tmp_path: Path) -> None:
    code, _, err = _cli(str(LAB), "--policy", str(tmp_path / "nope.yaml"))
    assert code == EXIT_USAGE and "no such policy file" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _cli(str(LAB), "--policy", str(empty))
    assert code == EXIT_USAGE and "no policy files" in err
    code, _, err = _cli(str(tmp_path / "no-session"), "--policy", str(POLICIES))
    assert code == 3 and "not a session folder" in err and len(err.strip().splitlines()) == 1


def test_a_session_without_markers_or_bodies_says_what_it_could_not_check(tmp_path: Path) -> None:
    folder = tmp_path / "flows-only"
    shutil.copytree(LAB, folder, ignore=shutil.ignore_patterns("http.parquet", "fields.parquet", "markers.parquet"))
    code, out, _ = _cli(
        str(folder), "--policy", str(POLICIES / "no-identifiers-in-telemetry.yaml"), "--policy", str(POLICIES / "muted-service-data-budget.yaml")
    )
    assert code == EXIT_OK and out.count("not checked") == 3, out
    assert "no HTTP bodies inventoried" in out and "no call-state markers" in out
