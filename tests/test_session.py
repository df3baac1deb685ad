"""The session model as users meet it: the public API over real session folders, safe folders through the real
command line (a session is never mixed, a failed command leaves nothing), one audited client per session, schema
versions (1.0 folders migrated, newer ones refused)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import egressaudit as ea
from egressaudit.cli import app
from egressaudit.errors import EXIT_INPUT, EXIT_USAGE
from egressaudit.schema import HTTP_1_0_NAMES, SCHEMA_VERSION, TABLES, arrow_schema
from egressaudit.session import settle_party, write_table
from egressaudit.signatures import default_db
from tests import factories
from tests.test_live_capture import needs_sniffer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "captures" / "janus-echo" / "call.pcapng"
SAMPLE_ARGS = ["--local-net", "10.77.0.2/32", "--signatures", str(ROOT / "captures" / "janus-echo" / "selfhosted.yaml")]
EVENTS = '{"events": [{"event_type": "join", "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}]}'
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and r.exit_code != 1, r.output
    return r.exit_code, r.output


def har_file(path: Path, n: int = 3, host: str = "api2.amplitude.com") -> Path:
    entries = [
        {
            "startedDateTime": f"2026-01-01T00:00:0{i}.000Z", "time": 10,
            "request": {"method": "POST", "url": f"https://{host}/2/httpapi?n={i}", "httpVersion": "HTTP/1.1", "cookies": [],
                        "headers": [{"name": "content-type", "value": "application/json"}], "queryString": [], "headersSize": -1,
                        "bodySize": len(EVENTS), "postData": {"mimeType": "application/json", "text": EVENTS}},
            "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1", "headers": [], "cookies": [],
                         "content": {"size": 0, "mimeType": "application/json"}, "redirectURL": "", "headersSize": -1, "bodySize": 0},
            "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0}, "serverIPAddress": "52.1.2.3",
        }
        for i in range(n)
    ]  # fmt: skip
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, "entries": entries}}))
    return path


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under the folder and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


# -- the public API ---------------------------------------------------------------------------------------------


def test_open_session_gives_every_table_with_its_schema_dtypes(tmp_path: Path) -> None:
    out = tmp_path / "call"
    code, text = cli("analyze", str(SAMPLE), str(har_file(tmp_path / "t.har")), "--out", str(out), "--label", "weekly sync", *SAMPLE_ARGS)
    assert code == 0, text
    s = ea.open_session(out)
    assert isinstance(s, ea.Session) and s.session_id == "call" and s.manifest.label == "weekly sync"
    assert s.manifest.schema_version == SCHEMA_VERSION and s.manifest.state == "complete"
    assert len(s.flows) == s.manifest.counts["flows"] == 20 and len(s.http) == 3 and len(s.fields) > 0
    assert s.markers.empty and list(s.markers.columns) == [c.name for c in TABLES["markers"]]
    for name in TABLES:
        df = s.frame(name)
        assert list(df.columns) == [c.name for c in TABLES[name]], name
        for c in TABLES[name]:
            assert df[c.name].dtype == pd.ArrowDtype(c.type), (name, c.name, df[c.name].dtype)
        assert set(df["session_id"]) <= {"call"}
    # one audited client for the whole session, and every table's party says the same
    assert s.manifest.audited_client == "selfhosted"
    sh = s.flows[s.flows["vendor"] == "selfhosted"]
    assert len(sh) and set(sh["party"]) == {"first"}
    assert set(s.http["party"]) == {"third"}  # amplitude is not the client's vendor
    assert s.http["status"].dtype == pd.ArrowDtype(pa.int32()) and s.http["status"].tolist() == [200, 200, 200]


def test_open_sessions_concatenates_with_session_client_and_label(tmp_path: Path) -> None:
    audits = tmp_path / "audits"
    assert cli("analyze", str(SAMPLE), "--out", str(audits / "a"), "--label", "first", *SAMPLE_ARGS)[0] == 0
    assert cli("analyze", str(factories.sample_call(tmp_path / "z.pcap")), "--out", str(audits / "b"))[0] == 0
    (audits / "notes").mkdir()  # a folder that is not a session: passed over by a pattern
    many = ea.open_sessions([f"{audits}/*"])
    assert len(many) == 2
    assert list(many.flows.columns[:3]) == ["session_id", "client", "label"]
    counts = many.flows.groupby("session_id").size().to_dict()
    assert counts == {"a": 20, "b": len(ea.open_session(audits / "b").flows)}
    clients = many.flows.groupby("session_id")["client"].first().to_dict()
    assert clients == {"a": "selfhosted", "b": "zoom"}
    labels = many.manifests.set_index("session_id")["label"]
    assert labels["a"] == "first" and pd.isna(labels["b"])
    assert many.http.empty and "client" in many.http.columns
    with pytest.raises(ea.NotASessionError, match="notes: not a session folder"):
        ea.open_sessions([audits / "a", audits / "notes"])
    with pytest.raises(ea.NotASessionError, match="no session folder"):
        ea.open_sessions([f"{tmp_path}/nothing-*"])
    other = tmp_path / "elsewhere" / "a"
    assert cli("analyze", str(SAMPLE), "--out", str(other), *SAMPLE_ARGS)[0] == 0
    with pytest.raises(ea.UsageError, match="share the session_id 'a'"):
        ea.open_sessions([audits / "a", other])


def test_a_folder_that_is_not_a_session_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ea.NotASessionError, match="no such folder"):
        ea.open_session(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(ea.NotASessionError, match=r"not a session folder \(no session.json"):
        ea.open_session(tmp_path / "plain")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "session.json").write_text("{not json")
    with pytest.raises(ea.NotASessionError, match="unreadable"):
        ea.open_session(tmp_path / "broken")


def test_a_session_of_a_newer_schema_is_refused_in_the_api_and_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "new"
    assert cli("analyze", str(SAMPLE), "--out", str(out), *SAMPLE_ARGS)[0] == 0
    doc = json.loads((out / "session.json").read_text())
    doc["schema_version"] = "3.0"
    (out / "session.json").write_text(json.dumps(doc))
    with pytest.raises(ea.NewerSchemaError, match="newer egressaudit"):
        ea.open_session(out)
    r = subprocess.run([sys.executable, "-m", "egressaudit", "report", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_INPUT and r.stderr.count("\n") == 1 and "newer egressaudit" in r.stderr, r.stderr
    # a table written by a newer version, in a folder whose manifest is current
    doc["schema_version"] = SCHEMA_VERSION
    (out / "session.json").write_text(json.dumps(doc))
    t = pq.read_table(out / "flows.parquet")
    pq.write_table(t.replace_schema_metadata({b"egressaudit.schema_version": b"3.1"}), out / "flows.parquet")
    with pytest.raises(ea.NewerSchemaError, match="flows.parquet: written by a newer egressaudit"):
        _ = ea.open_session(out).flows


def test_a_1_0_session_is_read_with_the_2_0_vocabulary(tmp_path: Path) -> None:
    """A proxy session as egressaudit 1.0 wrote it: old http column names, the client only in the http section."""
    out = tmp_path / "old"
    out.mkdir()
    old_names = {v: k for k, v in HTTP_1_0_NAMES.items()}
    new = arrow_schema("http")
    added = ("ts_end", "community_id", "local_ip", "local_port")
    fields = [pa.field(old_names.get(f.name, f.name), f.type, f.nullable) for f in new if f.name not in added]
    row = {
        "session_id": "old", "exchange_id": "e1", "kind": "http", "ts": 1_700_000_000_000_000, "client_ip": "127.0.0.1", "client_port": 50000,
        "server_ip": "52.1.2.3", "server_port": 443, "host": "zoom.us", "direction": "out", "request_wire_bytes": 300, "request_body_bytes": 100,
        "response_wire_bytes": 200, "response_body_bytes": 50, "field_count": 0, "identifier_fields": 0, "vendor": "zoom", "party": "first",
        "category": "telemetry", "data_class": "service_generated", "rule": "zoom/x", "evidence": "e",
    }  # fmt: skip
    table = pa.Table.from_pylist([row], schema=pa.schema(fields, metadata={b"egressaudit.schema_version": b"1.0", b"egressaudit.table": b"http"}))
    pq.write_table(table, out / "http.parquet")
    (out / "session.json").write_text(
        json.dumps({"session_id": "old", "schema_version": "1.0", "tool": {"name": "egressaudit", "version": "0.1.0"},
                    "signatures": {"version": "x"}, "created": "2026-01-01T00:00:00+00:00", "state": "complete",
                    "http": {"exchanges": 1, "websocket_messages": 0, "fields": 0, "audited_client": "zoom"}})  # fmt: skip
    )
    s = ea.open_session(out)
    assert s.manifest.schema_version == SCHEMA_VERSION and s.manifest.audited_client == "zoom"
    assert s.manifest.model_extra == {"migrated_from": "1.0"}
    h = s.http.iloc[0]
    assert (h["remote_ip"], h["remote_port"], h["bytes_out"], h["bytes_in"], h["client_ip"]) == ("52.1.2.3", 443, 300, 200, "127.0.0.1")
    assert h["ts_start"] == h["ts_end"] == pd.Timestamp(1_700_000_000_000_000, unit="us", tz="UTC")
    assert pd.isna(h["community_id"]) and pd.isna(h["local_ip"])
    assert list(s.http.columns) == [c.name for c in TABLES["http"]]


# -- safe folders ---------------------------------------------------------------------------------------------


def test_a_session_is_never_mixed_replaced_only_whole_and_added_to_only_where_it_lacks(tmp_path: Path) -> None:
    out = tmp_path / "x"
    zoom_call = factories.sample_call(tmp_path / "zoom.pcap")
    assert cli("analyze", str(SAMPLE), "--out", str(out), *SAMPLE_ARGS)[0] == 0
    assert cli("report", str(out))[0] == 0
    assert (out / "report.html").exists() and (out / "figures").is_dir()
    before = fingerprint(out)

    code, text = cli("analyze", str(zoom_call), "--out", str(out))
    assert code == EXIT_USAGE and "already holds a session" in text and "--force" in text and "--add" in text, text
    assert fingerprint(out) == before

    code, text = cli("analyze", str(zoom_call), "--out", str(out), "--add")  # it has flows already: adding flows would mix
    assert code == EXIT_USAGE and "already has packet flows" in text, text
    assert fingerprint(out) == before

    code, text = cli("analyze", str(zoom_call), "--out", str(out), "--force")
    assert code == 0, text
    assert not (out / "report.html").exists() and not (out / "figures").exists()
    s = ea.open_session(out)
    assert [i["path"] for i in s.manifest.inputs] == [str(zoom_call)] and s.manifest.audited_client == "zoom"
    assert siblings(out) == sorted(["x", "zoom.pcap"])  # nothing set aside is left behind

    # HTTP rows added to the capture's session: both tables, both sections of the manifest, one client
    assert cli("report", str(out))[0] == 0
    code, text = cli("analyze", str(har_file(tmp_path / "t.har")), "--out", str(out), "--add")
    assert code == 0, text
    s = ea.open_session(out)
    assert len(s.http) == 3 and len(s.flows) > 0 and s.manifest.counts and s.manifest.http and s.manifest.http["exchanges"] == 3
    assert not (out / "report.html").exists(), "the report described the tables before the HTTP rows were added"
    assert s.manifest.audited_client == "zoom" and set(s.flows[s.flows["vendor"] == "zoom"]["party"]) == {"first"}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"just some text\n", id="text-file"),
        pytest.param(b"", id="empty-file"),
        pytest.param(None, id="missing-file"),
    ],
)
def test_a_failed_command_creates_no_folder_and_leaves_an_existing_session_as_it_was(tmp_path: Path, bad: bytes | None) -> None:
    src = tmp_path / "input.pcap"
    src_har = tmp_path / "input.har"  # (what --add may add to a capture's session)
    if bad is not None:
        src.write_bytes(bad)
        src_har.write_bytes(bad)
    new = tmp_path / "new" / "deeper" / "s"
    code, text = cli("analyze", str(src), "--out", str(new))
    assert code == EXIT_INPUT, text
    assert not (tmp_path / "new").exists(), "the folders made for --out are removed again"

    out = tmp_path / "kept"
    assert cli("analyze", str(SAMPLE), "--out", str(out), *SAMPLE_ARGS)[0] == 0
    before = fingerprint(out)
    for flag, given in (("--force", src), ("--add", src_har)):
        code, text = cli("analyze", str(given), "--out", str(out), flag)
        assert code == EXIT_INPUT, text
        assert fingerprint(out) == before, flag
        assert siblings(out) == sorted(["kept", *(["input.har", "input.pcap"] if bad is not None else [])])


def test_a_later_input_that_fails_undoes_the_earlier_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.har"
    bad.write_text("{}")
    out = tmp_path / "s"
    code, text = cli("analyze", str(SAMPLE), str(bad), "--out", str(out), *SAMPLE_ARGS)
    assert code == EXIT_INPUT and "bad.har" in text, text
    assert not out.exists()


def test_a_folder_of_other_files_is_not_written_into(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    code, text = cli("analyze", str(SAMPLE), "--out", str(tmp_path), "--force", *SAMPLE_ARGS)
    assert code == EXIT_USAGE and "not a session's" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_every_file_of_an_analysed_session_is_private(tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert cli("analyze", str(SAMPLE), str(har_file(tmp_path / "t.har")), "--out", str(out), *SAMPLE_ARGS)[0] == 0
    assert cli("report", str(out))[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


@needs_sniffer
def test_capture_failures_leave_no_folder_and_a_capture_is_private(tmp_path: Path) -> None:
    for args, why in ((["-i", "no-such-if0"], "no-such-if0"), (["-i", "lo", "--filter", "this is not ( bpf"], "filter")):
        out = tmp_path / "made" / "c"
        r = subprocess.run([sys.executable, "-m", "egressaudit", "capture", *args, "--out", str(out), "--duration", "1"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == EXIT_INPUT and why in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "made").exists()
    out = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "egressaudit", "capture", "-i", "lo", "--out", str(out), "--duration", "1", "-q"],
                       capture_output=True, text=True, timeout=120, env={**os.environ})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "capture.pcapng").stat().st_mode) == 0o600
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    assert ea.open_session(out).manifest.capture["stopped_by"] == "duration"


# -- one audited client per session -------------------------------------------------------------------------


def test_the_audited_client_is_decided_once_from_all_tables(tmp_path: Path) -> None:
    """HTTP rows mostly to Microsoft by count, flows mostly Zoom media by bytes: the session audits Zoom, and the
    party columns of both tables say so (before, the HTTP path picked by exchange count and named Microsoft)."""
    out = tmp_path / "s"
    out.mkdir()
    base = {"session_id": "s", "transport": "udp", "ip_version": 4, "local_ip": "10.0.0.2", "local_port": 5000, "remote_ip": "3.3.3.3",
            "remote_port": 8801, "is_local": False, "packets_out": 1, "packets_in": 1, "payload_bytes_out": 1, "payload_bytes_in": 1,
            "ts_start": 0, "ts_end": 1, "duration_s": 1.0, "fragments": 0, "stun_packets": 0, "rtp_packets": 0, "rtcp_packets": 0,
            "dtls_packets": 0, "ssrc_count": 0, "party": "unknown", "data_class": "customer_content", "rule": "r", "evidence": "e"}  # fmt: skip
    flows = [{**base, "flow_id": 0, "vendor": "zoom", "category": "media", "bytes_out": 5_000_000, "bytes_in": 5_000_000}]
    hbase = {"session_id": "s", "kind": "http", "ts_start": 0, "ts_end": 0, "direction": "out", "body_bytes_out": 0, "body_bytes_in": 0,
             "field_count": 0, "identifier_fields": 0, "party": "unknown", "data_class": "service_generated", "rule": "r",
             "evidence": "e"}  # fmt: skip
    http = [{**hbase, "exchange_id": f"m{i}", "vendor": "microsoft", "category": "telemetry", "bytes_out": 1000, "bytes_in": 100} for i in range(20)]
    http += [{**hbase, "exchange_id": "z", "vendor": "zoom", "category": "telemetry", "bytes_out": 1000, "bytes_in": 100}]
    write_table(out, "flows", flows)
    write_table(out, "http", http)
    assert settle_party(out, default_db()) == "zoom"
    s = ea.open_session(out)
    assert s.manifest.audited_client == "zoom" and s.manifest.audited_client_source == "auto"
    assert s.flows["party"].tolist() == ["first"]
    assert {v: set(g) for v, g in s.http.groupby("vendor")["party"]} == {"microsoft": {"third"}, "zoom": {"first"}}
    # the user's --client wins, and is kept by later settlements without it
    assert settle_party(out, default_db(), "microsoft") == "microsoft"
    assert settle_party(out, default_db()) == "microsoft"
    s = ea.open_session(out)
    assert s.manifest.audited_client_source == "option" and s.flows["party"].tolist() == ["third"]


def test_the_party_of_a_whole_column_is_the_party_of_each_vendor() -> None:
    from egressaudit.classify.party import party_array, party_of

    vendors = ["zoom", None, "microsoft", "zoom", "amplitude", None]
    for first in (frozenset(), frozenset({"zoom"}), frozenset({"zoom", "microsoft"})):
        assert party_array(pa.array(vendors, pa.string()), first).to_pylist() == [party_of(v, first).value for v in vendors]
