"""The recorder on mitmproxy's own flow objects: names seen elsewhere, WebSocket messages, errors, undecodable bodies."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
from mitmproxy import http
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import Opcode

from egressaudit.http.recorder import Recorder, RecorderOptions
from egressaudit.signatures import default_db


def _post(host: str, path: str, body: bytes, ctype: str = "application/json", encoding: str | None = None) -> http.HTTPFlow:
    headers = [(b"host", host.encode()), (b"content-type", ctype.encode())]
    if encoding:
        headers.append((b"content-encoding", encoding.encode()))
    req = http.Request.make("POST", f"https://{host}{path}", b"", dict((k.decode(), v.decode()) for k, v in headers))
    req.raw_content = body  # as sent on the wire (already encoded)
    return tflow.tflow(req=req, resp=True)


def test_names_seen_in_signaling_are_flagged_in_telemetry(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, default_db(), RecorderOptions(session_id="t", client="zoom"))
    rec.add_flow(_post("zoom.us", "/wc/join", json.dumps({"display_name": "Alice Liddell", "meeting": "85012345678"}).encode()))
    tele = {"events": [{"name": "qos", "participant": "Alice Liddell", "jitter": 3}]}
    rec.add_flow(_post("log.zoom.us", "/v1/log", gzip.compress(json.dumps(tele).encode()), encoding="gzip"))
    rec.add_flow(_post("log.zoom.us", "/v1/log", b"\x1f\x8b\x08broken", encoding="gzip"))
    rec.close()
    rows = pq.read_table(tmp_path / "http.parquet").to_pylist()
    assert [r["category"] for r in rows] == ["signaling", "telemetry", "telemetry"]
    assert rows[1]["request_encoding"] == "gzip" and rows[1]["request_decoded_bytes"] == len(json.dumps(tele))
    assert rows[2]["body_format"].startswith("error:") and rows[2]["request_decoded_bytes"] is None
    fields = {f["key_path"]: f for f in pq.read_table(tmp_path / "fields.parquet").to_pylist() if f["exchange_id"] == rows[1]["exchange_id"]}
    assert "seen_name" in fields["events[].participant"]["detectors"]
    assert fields["events[].participant"]["value"] is None
    session = json.loads((tmp_path / "session.json").read_text())
    assert session["http"]["exchanges"] == 3 and sum(session["http"]["skipped"].values()) == 1


def test_websocket_messages_are_rows_each_way(tmp_path: Path) -> None:
    f = tflow.tflow(resp=True)
    f.request.host = "rtcstats.example.net"
    f.websocket = WebSocketData()
    out_msg = json.dumps({"type": "getstats", "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}).encode()
    f.websocket.messages = [WebSocketMessage(Opcode.TEXT, True, out_msg, 1.0), WebSocketMessage(Opcode.BINARY, False, b"\x00" * 300, 2.0)]
    rec = Recorder(tmp_path, default_db(), RecorderOptions(session_id="t"))
    rec.add_flow(f)
    rec.close()
    rows = pq.read_table(tmp_path / "http.parquet").to_pylist()
    ws = [r for r in rows if r["kind"] == "websocket"]
    assert [(r["direction"], r["request_body_bytes"], r["response_body_bytes"]) for r in ws] == [("out", len(out_msg), 0), ("in", 0, 300)]
    assert ws[0]["body_format"] == "json" and ws[0]["field_count"] >= 2
    assert len([r for r in rows if r["kind"] == "http"]) == 1


def test_connection_errors_are_recorded(tmp_path: Path) -> None:
    f = tflow.tflow(err=True)
    rec = Recorder(tmp_path, default_db(), RecorderOptions(session_id="t"))
    rec.add_flow(f)
    rec.close()
    (row,) = pq.read_table(tmp_path / "http.parquet").to_pylist()
    assert row["error"] and row["status"] is None


def test_server_address_is_never_a_host_name(tmp_path: Path) -> None:
    """Upstream mode: mitmproxy keeps the target name in server_conn.address; the connection went to the next proxy."""
    f = _post("api2.amplitude.com", "/2/httpapi", b'{"events": []}')
    f.server_conn.peername = None
    f.server_conn.address = ("api2.amplitude.com", 443)
    f.server_conn.via = ("http", ("127.0.0.1", 8081))
    g = _post("api2.amplitude.com", "/2/httpapi", b'{"events": []}')
    g.server_conn.peername = None
    g.server_conn.address = ("api2.amplitude.com", 443)
    rec = Recorder(tmp_path, default_db(), RecorderOptions(session_id="t"))
    rec.add_flow(f)
    rec.add_flow(g)
    rec.close()
    rows = pq.read_table(tmp_path / "http.parquet").to_pylist()
    assert [(r["server_ip"], r["server_port"], r["host"]) for r in rows] == [
        ("127.0.0.1", 8081, "api2.amplitude.com"),
        (None, 443, "api2.amplitude.com"),
    ]
