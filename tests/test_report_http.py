"""The report's HTTP part: sessions written with the real HTTP table writers, http only, flows and http, crash-left part files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from egressaudit.report import ReportError, build_report, load_http
from egressaudit.report import http_summary as H
from egressaudit.schema import FIELDS, HTTP
from egressaudit.session import write_session_json, write_table
from egressaudit.session.store import TableAppender, part_files, read_rows
from tests.test_report import CLIENT, OTHER_LOCAL, PNG_MAGIC, lead, make_session, sample_rows, self_contained

T0 = 1_700_000_000_000_000  # microseconds
FLOW_FIGURES = ("data_class.png", "vendors.png", "over_time.png")


def exchange(**kw: Any) -> dict[str, Any]:
    """A complete http row: a default for every column of the schema, overridden by ``kw``."""
    defaults: dict[str, Any] = {
        "session_id": "p",
        "exchange_id": "x",
        "kind": "http",
        "ts_start": T0,
        "ts_end": T0,
        "community_id": None,
        "local_ip": None,
        "local_port": None,
        "remote_ip": "203.0.113.9",
        "remote_port": 443,
        "client_ip": CLIENT,
        "client_port": 50000,
        "host": None,
        "scheme": "https",
        "http_version": "HTTP/1.1",
        "method": "POST",
        "path": "/",
        "status": 200,
        "direction": "out",
        "content_type_out": "application/json",
        "content_type_in": "application/json",
        "encoding_out": None,
        "bytes_out": 0,
        "body_bytes_out": 0,
        "decoded_bytes_out": 0,
        "bytes_in": 0,
        "body_bytes_in": 0,
        "decoded_bytes_in": 0,
        "body_format": "json",
        "body_sha256": None,
        "field_count": 0,
        "identifier_fields": 0,
        "vendor": None,
        "service": None,
        "party": "unknown",
        "category": "unknown",
        "data_class": "unknown",
        "rule": "none",
        "evidence": "",
        "error": None,
        "flow_id": None,
        "pid": None,
        "process": None,
        "cmdline_hash": None,
        "attributed_by": "none",
    }
    assert set(defaults) == {c.name for c in HTTP}
    unknown = set(kw) - set(defaults)
    assert not unknown, unknown
    return {**defaults, **kw}


def fld(exchange_id: str, host: str, key_path: str, detectors: list[str], value_hash: str, **kw: Any) -> dict[str, Any]:
    """A complete fields row."""
    row: dict[str, Any] = {
        "session_id": "p",
        "exchange_id": exchange_id,
        "host": host,
        "vendor": "zoom",
        "category": "telemetry",
        "key_path": key_path,
        "value_type": "string",
        "count": 1,
        "detectors": detectors,
        "value_hash": value_hash,
        "value": None,
        "value_length": 8,
    }
    assert set(row) == {c.name for c in FIELDS}
    unknown = set(kw) - set(row)
    assert not unknown, unknown
    return {**row, **kw}


ZOOM_TELEMETRY = {"vendor": "zoom", "service": "logging", "party": "first", "category": "telemetry", "data_class": "service_generated"}
ZOOM_WS = {"vendor": "zoom", "service": "meetings", "party": "first", "category": "signaling", "data_class": "service_operation"}
ZOOM_UPLOAD = {"vendor": "zoom", "service": "files", "party": "first", "category": "content_upload", "data_class": "customer_content"}
SENTRY = {"vendor": "sentry", "service": "errors", "party": "third", "category": "telemetry", "data_class": "service_generated"}


def http_rows() -> list[dict[str, Any]]:
    """7500 B of requests: 2500 B zoom telemetry, 500 B sentry telemetry, 4000 B upload, 200 B websocket out, 300 B unknown."""
    return [
        exchange(exchange_id="e1", host="log.zoom.us", path="/log?sid=…", bytes_out=1500, bytes_in=300,
                 field_count=4, identifier_fields=3, **ZOOM_TELEMETRY),
        exchange(exchange_id="e2", host="log.zoom.us", path="/log?sid=…", bytes_out=1000, bytes_in=300,
                 field_count=3, identifier_fields=2, **ZOOM_TELEMETRY),
        exchange(exchange_id="e3", host="o1.ingest.sentry.io", path="/api/1/envelope/", bytes_out=500, bytes_in=100,
                 field_count=2, identifier_fields=1, client_ip=OTHER_LOCAL, **SENTRY),
        exchange(exchange_id="w1:0", kind="websocket", host="zoomus.zoom.us", path="/wc", method=None, status=None, scheme="wss",
                 bytes_out=200, **ZOOM_WS),
        exchange(exchange_id="w1:1", kind="websocket", direction="in", host="zoomus.zoom.us", path="/wc", method=None, status=None,
                 scheme="wss", bytes_out=0, bytes_in=800, **ZOOM_WS),
        exchange(exchange_id="e6", host="file.zoom.us", path="/upload", bytes_out=4000, bytes_in=50,
                 field_count=1, identifier_fields=1, **ZOOM_UPLOAD),
        exchange(exchange_id="e7", host="example.net", path="/x", bytes_out=300, status=None, error="connection reset"),
    ]  # fmt: skip


def field_rows(values: bool = False) -> list[dict[str, Any]]:
    v = (lambda s: s) if values else (lambda s: None)  # noqa: E731 - clear-text values only when the session keeps them
    return [
        fld("e1", "log.zoom.us", "device.id", ["device_id"], "h-dev", value=v("DEV-1234")),
        fld("e1", "log.zoom.us", "user.email", ["email"], "h-mail", value=v("alice@example.com")),
        fld("e1", "log.zoom.us", "meeting.topic", ["meeting_title"], "h-t1", value=v("Q3 layoffs <draft>")),
        fld("e1", "log.zoom.us", "app.version", [], "h-ver", value=v("5.17.0")),
        fld("e2", "log.zoom.us", "device.id", ["device_id"], "h-dev", value=v("DEV-1234")),
        fld("e2", "log.zoom.us", "meeting.topic", ["meeting_title"], "h-t2", value=v("Board meeting")),
        fld("e2", "log.zoom.us", "app.version", [], "h-ver", value=v("5.17.0")),
        fld("e3", "o1.ingest.sentry.io", "user.ip_address", ["ipv4"], "h-ip", vendor="sentry", value=v("198.51.100.7")),
        fld("e3", "o1.ingest.sentry.io", "contexts.os", [], "h-os", vendor="sentry", value=v("macOS")),
        fld("e6", "file.zoom.us", "file.name", ["file_name"], "h-file", category="content_upload", value=v("minutes.docx")),
    ]


SIGS = {"version": "sigdb-test-1", "vendors": 2, "rules": 3}


def http_meta(**kw: Any) -> dict[str, Any]:
    """The http section of session.json as the recorder writes it."""
    return {
        "updated": "2024-05-01T10:00:00+00:00",
        "exchanges": 6,
        "websocket_messages": 2,
        "fields": 10,
        "audited_client": "zoom",
        "keep_values": False,
        "keep_query": False,
        "keep_bodies": False,
        "skipped": {"error:truncated": 2, "error:zero": 0},
        "mode": ["regular"],
        "listen_host": "192.168.50.10",
        **kw,
    }


def make_http_session(folder: Path, *, values: bool = False, meta: dict[str, Any] | None = None, flows: bool = False) -> Path:
    """A proxy session written with the real writers: http through TableAppender (parts, then compacted), fields with write_table."""
    if flows:
        make_session(folder, sample_rows())
    folder.mkdir(parents=True, exist_ok=True)
    app = TableAppender(folder, "http", flush_interval=3600)
    rows = http_rows()
    app.append(rows[:3])
    app.flush()
    app.append(rows[3:])
    app.compact()
    assert not part_files(folder, "http")
    write_table(folder, "fields", field_rows(values))
    if flows:
        doc = json.loads((folder / "session.json").read_text())
        doc["http"] = meta or http_meta()
        (folder / "session.json").write_text(json.dumps(doc))
    else:
        write_session_json(folder, {"session_id": "p", "http": meta or http_meta()}, SIGS)
    return folder


def tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_http(folder)


def report(folder: Path, **kw: Any) -> tuple[str, str]:
    buf = io.StringIO()
    path = build_report(folder, console=Console(file=buf, width=220, color_system=None), **kw)
    return path.read_text(encoding="utf-8"), buf.getvalue()


# -- numbers ---------------------------------------------------------------------------


def test_http_headline_numbers_are_exact(tmp_path: Path) -> None:
    http, fields = tables(make_http_session(tmp_path / "s"))
    h = H.headline(http, fields)
    assert (h.exchanges, h.websocket_messages, h.websocket_out) == (5, 2, 1)
    assert (h.bytes_out, h.bytes_in) == (7500, 1550)
    assert (h.service_generated_bytes, h.service_generated_share) == (3000, 0.4)
    assert (h.customer_content_bytes, h.customer_content_share) == (4000, 4000 / 7500)
    assert (h.third_party_bytes, h.third_party_share) == (500, 500 / 7500)
    assert (h.hosts, h.errors) == (5, 1)
    assert h.fields == 7  # distinct (vendor, host, category, key_path): device.id and app.version were in two bodies, counted once
    assert h.vendors == ["sentry", "zoom"] and h.third_party_vendors == ["sentry"]
    # identifying paths: device.id, user.email, meeting.topic, user.ip_address, file.name; content leaks: meeting.topic only
    assert (h.identifying_paths, h.content_paths, h.content_hosts) == (5, 1, ["log.zoom.us"])
    assert (h.telemetry.fields, h.telemetry.identifying, h.telemetry.content) == (6, 4, 1)  # the upload's file.name left out


def test_http_tables(tmp_path: Path) -> None:
    http, _ = tables(make_http_session(tmp_path / "s"))
    dcc = H.by_data_class_category(http)
    assert list(zip(dcc["data_class"], dcc["category"], dcc["exchanges"], dcc["ws_messages"], dcc["bytes_out"], strict=True)) == [
        ("customer_content", "content_upload", 1, 0, 4000),
        ("service_generated", "telemetry", 3, 0, 3000),
        ("service_operation", "signaling", 0, 2, 200),
        ("unknown", "unknown", 1, 0, 300),
    ]
    assert dcc["share"].tolist() == pytest.approx([4000 / 7500, 0.4, 200 / 7500, 300 / 7500])
    assert dcc.loc[2, "bytes_in"] == 800  # an incoming message counts as received, never as sent

    hosts = H.by_host(http)
    assert list(zip(hosts["vendor"], hosts["host"], hosts["party"], hosts["category"], strict=True)) == [
        ("zoom", "file.zoom.us", "first", "content_upload"),
        ("zoom", "log.zoom.us", "first", "telemetry"),
        ("sentry", "o1.ingest.sentry.io", "third", "telemetry"),
        ("(none)", "example.net", "unknown", "unknown"),
        ("zoom", "zoomus.zoom.us", "first", "signaling"),
    ]
    assert hosts["exchanges"].tolist() == [1, 2, 1, 1, 0]
    assert hosts["bytes_out"].tolist() == [4000, 2500, 500, 300, 200]
    assert hosts["fields"].tolist() == [1, 7, 2, 0, 0] and hosts["identifier_fields"].tolist() == [1, 5, 1, 0, 0]

    party = H.by_party(http).set_index("party")
    assert party["bytes_out"].to_dict() == {"first": 6700, "third": 500, "unknown": 300}

    vc = H.by_vendor_category(http)
    assert list(zip(vc["vendor"], vc["category"], vc["bytes_out"], strict=True)) == [
        ("zoom", "content_upload", 4000),
        ("zoom", "telemetry", 2500),
        ("sentry", "telemetry", 500),
        ("(none)", "unknown", 300),
        ("zoom", "signaling", 200),
    ]
    ep = H.top_endpoints(http, n=2)
    assert list(zip(ep["host"], ep["path"], ep["exchanges"], strict=True)) == [("file.zoom.us", "/upload", 1), ("log.zoom.us", "/log?sid=…", 2)]
    clients = H.by_client(http).set_index("client_ip")
    assert clients["bytes_out"].to_dict() == {CLIENT: 7000, OTHER_LOCAL: 500}


def test_field_inventory(tmp_path: Path) -> None:
    _, fields = tables(make_http_session(tmp_path / "s"))
    inv = H.field_inventory(fields)
    assert "values" not in inv.columns
    assert list(zip(inv["host"], inv["key_path"], inv["detectors"], inv["content"], strict=True)) == [
        ("log.zoom.us", "meeting.topic", "meeting_title", "meeting_title"),  # content leaks first
        ("o1.ingest.sentry.io", "user.ip_address", "ipv4", ""),
        ("file.zoom.us", "file.name", "file_name", ""),  # a file name in an upload is content where it belongs
        ("log.zoom.us", "device.id", "device_id", ""),
        ("log.zoom.us", "user.email", "email", ""),
    ]
    topic = inv.iloc[0]
    assert (topic["exchanges"], topic["occurrences"], topic["distinct_values"]) == (2, 2, 2)
    device = inv.set_index("key_path").loc["device.id"]
    assert (device["exchanges"], device["distinct_values"]) == (2, 1)  # the same device in both bodies
    assert "app.version" not in set(inv["key_path"])  # no detector fired

    by_host = H.inventory_by_host(inv)
    assert list(zip(by_host["host"], by_host["identifying_paths"], by_host["content_paths"], by_host["detectors"], strict=True)) == [
        ("log.zoom.us", 3, 1, "meeting_title, device_id, email"),  # content-leak detectors listed first
        ("o1.ingest.sentry.io", 1, 0, "ipv4"),
        ("file.zoom.us", 1, 0, "file_name"),
    ]


# -- the report ------------------------------------------------------------------------


def test_http_only_session_gives_a_full_report(tmp_path: Path) -> None:
    folder = make_http_session(tmp_path / "s")
    html, out = report(folder)
    assert (folder / "figures" / "http_vendors.png").read_bytes().startswith(PNG_MAGIC)
    assert self_contained(html) == 1  # the HTTP figure, in the page
    for fig in FLOW_FIGURES:  # no flows: no flow figures, no flow sections
        assert not (folder / "figures" / fig).exists()
    assert 'id="headline"' not in html and "Skipped packets" not in html and 'id="http"' in html
    for text in (
        "log.zoom.us",
        "o1.ingest.sentry.io",
        "meeting.topic",
        "meeting title",  # (a detector's name, in words)
        "user.email",
        "7.5 kB",  # HTTP egress
        "40.0%",  # service generated share
        "6.7%",  # third party share
        "error:truncated",
        "sigdb-test-1",
        "salted hashes only",
        "/log?sid=…",
        "share of HTTP egress",
    ):
        assert text in html, text
    assert "error:zero" not in html
    assert '<tr class="leak">' in html and html.count('<tr class="leak">') == 2  # per-host summary and per-field row of the leak
    assert "5 with 5 hosts; 2 WebSocket messages (1 sent)" in out and "7.5 kB" in out and "meeting.topic" in out and "40.0% of HTTP egress" in out
    # the sentence, from the HTTP requests (every exchange at one instant: no length to speak of)
    said = (
        "In this session, 40% of the 7.5 kB the client sent in HTTP requests was service-generated data, sent to 2 parties, 1 of them a third party."
    )
    assert lead(html) == said and said in out
    assert "first to last HTTP exchange" in html


def test_http_redaction_and_values(tmp_path: Path) -> None:
    folder = make_http_session(tmp_path / "s", values=True, meta=http_meta(keep_values=True))
    html, out = report(folder)
    for secret in (CLIENT, OTHER_LOCAL, "alice@example.com", "DEV-1234", "Q3 layoffs", "Board meeting"):
        assert secret not in html and secret not in out, secret
    assert "local-1" in html and "local-2" in html and "not shown in a redacted report" in html
    assert html.index("local-1") < html.index("local-2")

    html, out = report(folder, redact=False)
    assert CLIENT in html and OTHER_LOCAL in html and "local-1" not in html
    assert "Q3 layoffs &lt;draft&gt;" in html and "Q3 layoffs <draft>" not in html  # shown, escaped
    assert "alice@example.com" in html and "Board meeting" in out

    # without --keep-values nothing is shown, even with --no-redact and values present in the table
    plain = make_http_session(tmp_path / "plain", values=True)
    html, out = report(plain, redact=False)
    for secret in ("alice@example.com", "DEV-1234", "Q3 layoffs", "values (clear text)"):
        assert secret not in html and secret not in out, secret


def test_kept_query_values_are_redacted_in_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    write_table(folder, "http", [exchange(exchange_id="e1", host="t.example", path="/c?token=s3cr3t&x=", bytes_out=10)])
    write_session_json(folder, {"session_id": "q", "http": http_meta(keep_query=True)}, SIGS)
    html, _ = report(folder)
    assert "s3cr3t" not in html and "/c?token=…&amp;x=…" in html
    html, _ = report(folder, redact=False)
    assert "/c?token=s3cr3t" in html


def test_html_escapes_and_is_self_contained(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    evil = "<script>alert(1)</script>"
    write_table(folder, "http", [exchange(exchange_id="e1", host=f"{evil}.example", path=f"/{evil}", bytes_out=10, field_count=1)])
    write_table(folder, "fields", [fld("e1", f"{evil}.example", f"a.{evil}", ["chat_text"], "h")])
    write_session_json(folder, {"session_id": "x", "http": http_meta()}, SIGS)
    html, out = report(folder)
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    assert "<link" not in html and 'src="http' not in html and "@import" not in html
    assert self_contained(html) == 1
    assert "chat text" in html and "a.<script>alert(1)</script>" in out  # the terminal shows it as text, not markup


def test_crash_left_session_with_only_part_files(tmp_path: Path) -> None:
    folder = tmp_path / "crashed"
    http_app = TableAppender(folder, "http", flush_interval=3600)
    fields_app = TableAppender(folder, "fields", flush_interval=3600)
    rows, frows = http_rows(), field_rows()
    for i in range(0, len(rows), 3):
        http_app.append(rows[i : i + 3])
        http_app.flush()
    fields_app.append(frows)
    fields_app.flush()  # killed here: no compaction, no session.json
    assert len(part_files(folder, "http")) == 3 and not (folder / "http.parquet").exists() and not (folder / "session.json").exists()
    html, out = report(folder)
    assert "recording did not finish" in html and "recording did not finish" in out
    assert "crashed" in html  # the session id, from the folder name
    h = H.headline(*tables(folder))
    assert (h.exchanges, h.bytes_out, h.service_generated_bytes, h.content_paths) == (5, 7500, 3000, 1)
    assert "7.5 kB" in html and "meeting.topic" in html and CLIENT not in html
    assert read_rows(folder, "http").num_rows == 7  # the report changed nothing


def test_flows_and_http(tmp_path: Path) -> None:
    folder = make_http_session(tmp_path / "both", flows=True)
    html, out = report(folder)
    for fig in (*FLOW_FIGURES, "http_vendors.png"):
        assert (folder / "figures" / fig).read_bytes().startswith(PNG_MAGIC)
    assert self_contained(html) == 4
    assert lead(html).startswith("In this 60-second session, 30% of the 10.0 kB that left the host")  # the flows answer first
    assert "first to last packet or HTTP exchange" in html
    assert 'id="headline"' in html and 'id="http"' in html and html.index('id="headline"') < html.index('id="http"')
    assert "10.0 kB" in html and "30.0%" in html  # flows egress and its service generated share, unchanged by HTTP
    assert "7.5 kB" in html and "40.0%" in html
    assert "truncated_record" in html and "error:truncated" in html
    # the flows' local hosts and the HTTP clients share one numbering
    assert CLIENT not in html and OTHER_LOCAL not in html and CLIENT not in out
    assert '<td class="mono">local-1</td>' in html and '<td class="mono">local-3</td>' in html  # OTHER_LOCAL is local-3 in the flows too
    assert "3.0 kB (30.0% of egress)" in out and "40.0% of HTTP egress" in out


def test_empty_http_session(tmp_path: Path) -> None:
    folder = tmp_path / "e"
    app = TableAppender(folder, "http")
    app.compact()
    write_session_json(folder, {"session_id": "e", "http": http_meta(exchanges=0, websocket_messages=0, fields=0, skipped={})}, SIGS)
    html, out = report(folder)
    assert "no HTTP requests" in html and "no identifying fields" in html and "every body was decoded" in html
    assert (folder / "figures" / "http_vendors.png").read_bytes().startswith(PNG_MAGIC)
    h = H.headline(*tables(folder))
    assert (h.exchanges, h.bytes_out, h.service_generated_share, h.vendors) == (0, 0, None, [])


def test_not_a_session_folder_still_fails(tmp_path: Path) -> None:
    (tmp_path / "session.json").write_text("{}")
    with pytest.raises(ReportError, match="no flows.parquet or http.parquet"):
        build_report(tmp_path)
    # neither session.json nor any table
    (tmp_path / "bare").mkdir()
    with pytest.raises(ReportError, match="session.json"):
        build_report(tmp_path / "bare")


def test_http_formats(tmp_path: Path) -> None:
    """An HTTP-only session crash-left in part files: JSON on stdout parses (the notes go to stderr), with the HTTP
    tables and headline; CSV's default table is HTTP egress by data class and category."""
    import csv

    from typer.testing import CliRunner

    from egressaudit.cli import app

    folder = tmp_path / "crashed"
    app_http = TableAppender(folder, "http", flush_interval=3600)
    app_http.append(http_rows())
    app_http.flush()
    write_table(folder, "fields", field_rows())
    runner = CliRunner()
    r = runner.invoke(app, ["report", str(folder), "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert "recording did not finish" in r.stderr and any("recording did not finish" in n for n in doc["notes"])
    assert doc["headline"] is None and doc["http_headline"]["bytes_out"] == 7500
    assert doc["sentence"].startswith("In this session, 40% of the 7.5 kB the client sent in HTTP requests")
    assert {"http_hosts", "http_fields", "http_fields_by_host", "states", "inputs"} <= set(doc["tables"]) and "destinations" not in doc["tables"]
    topic = next(x for x in doc["tables"]["http_fields"] if x["key_path"] == "meeting.topic")
    assert (topic["detectors"], topic["content"], topic["exchanges"]) == ("meeting_title", "meeting_title", 2)  # stored names
    assert CLIENT not in r.stdout and "local-1" in json.dumps(doc["tables"]["http_clients"])
    r = runner.invoke(app, ["report", str(folder), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["data_class", "category", "exchanges", "ws_messages", "bytes_out", "bytes_in", "fields", "identifier_fields", "share"]
    assert [(x["category"], int(x["bytes_out"])) for x in rows] == [
        ("content_upload", 4000),
        ("telemetry", 3000),
        ("signaling", 200),
        ("unknown", 300),
    ]
