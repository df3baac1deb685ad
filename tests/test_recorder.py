"""The recorder on mitmproxy's own flow objects: names seen elsewhere, WebSocket messages, errors, undecodable bodies."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
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
    assert rows[1]["encoding_out"] == "gzip" and rows[1]["decoded_bytes_out"] == len(json.dumps(tele))
    assert rows[2]["body_format"].startswith("error:") and rows[2]["decoded_bytes_out"] is None
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
    assert [(r["direction"], r["body_bytes_out"], r["body_bytes_in"]) for r in ws] == [("out", len(out_msg), 0), ("in", 0, 300)]
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
    assert [(r["remote_ip"], r["remote_port"], r["host"]) for r in rows] == [
        ("127.0.0.1", 8081, "api2.amplitude.com"),
        (None, 443, "api2.amplitude.com"),
    ]


def test_the_local_end_and_community_id_of_the_connection_that_carried_the_exchange(tmp_path: Path) -> None:
    """local_* is the proxy's end of its upstream connection (server_conn.sockname), remote_* the end it connected to,
    client_* the client's connection to the proxy; IPv4-mapped addresses (a dual-stack socket's) as the IPv4 address a
    capture sees; community_id is that TCP connection's Community ID, as the communityid package computes it, and null
    without a local end (a HAR names none, a connection never made has none)."""
    import communityid
    from mitmproxy.io.har import request_to_flow

    f = _post("api.segment.io", "/v1/batch", b'{"n": 1}')
    f.client_conn.peername = ("::ffff:192.168.1.20", 51000)
    f.server_conn.peername = ("::ffff:192.0.2.7", 443)
    f.server_conn.sockname = ("::ffff:c0a8:105", 40000)  # 192.168.1.5, written the other way
    f.request.timestamp_start, f.response.timestamp_end = 100.0, 100.25  # type: ignore[union-attr]
    v6 = _post("api.segment.io", "/v1/batch", b'{"n": 2}')
    v6.server_conn.peername = ("2001:db8::7", 443, 0, 0)
    v6.server_conn.sockname = ("2001:db8::5", 40001, 0, 0)
    never = tflow.tflow(err=True)
    never.server_conn.peername = never.server_conn.sockname = None
    har = request_to_flow(
        {"startedDateTime": "2024-05-01T10:00:00Z", "time": 5, "serverIPAddress": "192.0.2.9",
         "request": {"method": "GET", "url": "https://zoom.us/signin", "httpVersion": "HTTP/1.1", "headers": []},
         "response": {"status": 200, "httpVersion": "HTTP/1.1", "headers": [], "content": {"text": ""}}}
    )  # fmt: skip
    rec = Recorder(tmp_path, default_db(), RecorderOptions(session_id="t"))
    for fl in (f, v6, never, har):
        rec.add_flow(fl)
    rec.close()
    a, b, c, d = pq.read_table(tmp_path / "http.parquet").to_pylist()
    cid = communityid.CommunityID()
    assert (a["local_ip"], a["local_port"], a["remote_ip"], a["remote_port"]) == ("192.168.1.5", 40000, "192.0.2.7", 443)
    assert (a["client_ip"], a["client_port"]) == ("192.168.1.20", 51000)
    assert a["community_id"] == cid.calc(communityid.FlowTuple.make_tcp("192.168.1.5", "192.0.2.7", 40000, 443))
    assert a["community_id"] == cid.calc(communityid.FlowTuple.make_tcp("192.0.2.7", "192.168.1.5", 443, 40000))
    assert (a["ts_end"] - a["ts_start"]).total_seconds() == 0.25
    assert b["community_id"] == cid.calc(communityid.FlowTuple.make_tcp("2001:db8::5", "2001:db8::7", 40001, 443))
    assert (c["local_ip"], c["community_id"], c["ts_end"]) == (None, None, c["ts_start"])
    assert (d["local_ip"], d["local_port"], d["remote_ip"], d["community_id"]) == (None, None, "192.0.2.9", None)


def _rows_of(tmp: Path, flows: list[http.HTTPFlow], name: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    out = tmp / name
    out.mkdir()
    (out / ".salt").write_bytes(b"s" * 32)  # the same salt on both sides, so value hashes compare
    rec = Recorder(out, default_db(), RecorderOptions(session_id="t"))
    for f in flows:
        rec.add_flow(f)
    rec.close()
    return pq.read_table(out / "http.parquet").to_pylist(), pq.read_table(out / "fields.parquet").to_pylist()


def test_worker_snapshots_record_the_same_rows_as_whole_flows(tmp_path: Path) -> None:
    """The proxy ships worker.snapshot() (no TLS state) instead of flow.get_state(): the rows must not change."""
    import pickle

    from egressaudit.http.worker import restore, snapshot

    plain = _post("api.segment.io", "/v1/batch?writeKey=k", json.dumps({"batch": [{"email": "ann@example.org", "n": 1}]}).encode())
    plain.client_conn.peername = ("127.0.0.1", 51234)
    plain.server_conn.peername = ("192.0.2.7", 443)
    plain.server_conn.sockname = ("::ffff:192.168.1.5", 40000)
    gz = _post("log.zoom.us", "/v1/log", gzip.compress(b'{"events": [{"meeting_id": "85012345678"}]}'), encoding="gzip")
    upstream = _post("api2.amplitude.com", "/2/httpapi", b'{"events": []}')
    upstream.server_conn.peername = None
    upstream.server_conn.address = ("api2.amplitude.com", 443)
    upstream.server_conn.via = ("http", ("127.0.0.1", 8081))
    err = tflow.tflow(err=True)
    ws = tflow.tflow(resp=True)
    ws.request.host = "rtcstats.example.net"
    ws.websocket = WebSocketData()
    ws.websocket.messages = [
        WebSocketMessage(Opcode.TEXT, True, b'{"device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}', 1.0),
        WebSocketMessage(Opcode.BINARY, False, b"\x00" * 300, 2.0),
    ]
    flows = [plain, gz, upstream, err, ws]
    shipped = [restore(pickle.loads(pickle.dumps(snapshot(f)))) for f in flows]
    assert _rows_of(tmp_path, flows, "whole") == _rows_of(tmp_path, shipped, "snapshot")

    # one WebSocket message at a time: only that message travels, the conversation stays whole in the proxy
    one = restore(snapshot(ws, ws.websocket.messages[-1:]))
    assert one.websocket is not None and [m.content for m in one.websocket.messages] == [b"\x00" * 300]
    assert len(ws.websocket.messages) == 2


def _http_rows(out: Path) -> int:
    from egressaudit.session.store import read_rows

    try:
        return read_rows(out, "http").num_rows
    except (OSError, ValueError):  # nothing written yet
        return 0


def _wait_rows(out: Path, n: int, within: float, why: str) -> float:
    """Seconds until ``out`` holds ``n`` http rows on disk; fails with ``why`` after ``within`` seconds."""
    import time

    start = time.monotonic()
    while _http_rows(out) < n:
        assert time.monotonic() - start < within, f"{why}: {_http_rows(out)} of {n} rows after {within:g} s"
        time.sleep(0.005)
    return time.monotonic() - start


def _never_quiet(proc: Any) -> None:
    """The proxy's clock stamped in the future, and submitting no longer stamps it: no pause of a test can look quiet."""
    proc.activity.value = float("inf")
    proc.touch = lambda: None


def test_the_recorder_process_records_while_the_proxy_is_quiet_and_at_most_max_lag_behind(tmp_path: Path) -> None:
    """The real worker process: while the proxy keeps stamping activity it holds its snapshots back (no rows, little
    CPU), for at most ``max_lag`` seconds and ``max_hold_bytes``; once the proxy is quiet it records them all."""
    import gc
    import time

    import psutil

    from egressaudit.http import worker as W

    def busy(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            proc.touch()
            time.sleep(0.005)

    body = json.dumps({"events": [{"device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "event": f"qos {i}", "n": i} for i in range(200)]}).encode()
    # 1) busy proxy, then quiet: nothing recorded while busy, everything soon after
    out = tmp_path / "quiet"
    lag = 2.0  # (the default is longer; the test would take that long)
    proc = W.RecorderProcess(out, RecorderOptions(session_id="q"), None, max_lag=lag)
    proc.wait_ready()
    try:
        assert _http_rows(out) == 0  # (its imports now, not while the worker may record)
        cpu0 = sum(psutil.Process(proc.process.pid).cpu_times()[:2])
        gc.disable()  # a collection pause of 50+ ms here would look like a quiet proxy
        try:
            first = time.monotonic()
            proc.touch()
            for i in range(200):
                proc.submit_flow(_post("api.segment.io", f"/v1/batch?{i}", body))  # no event loop here: shipped at once
            busy(first + lag - 0.5 - time.monotonic())  # ends well before the first snapshot's lag runs out
        finally:
            gc.enable()
        cpu1 = sum(psutil.Process(proc.process.pid).cpu_times()[:2])
        assert _http_rows(out) == 0
        _wait_rows(out, 200, 10, "not recorded once the proxy was quiet")
        cpu2 = sum(psutil.Process(proc.process.pid).cpu_times()[:2])
        assert cpu1 - cpu0 < 0.3 * (cpu2 - cpu1), (cpu1 - cpu0, cpu2 - cpu1)  # while busy it polled; the recording came after
    finally:
        assert proc.close({}) == 0
    assert pq.read_table(out / "http.parquet").num_rows == 200

    # 2) a proxy that never goes quiet: the snapshots are recorded anyway, max_lag late
    out = tmp_path / "busy"
    proc = W.RecorderProcess(out, RecorderOptions(session_id="b"), None, max_lag=lag)
    proc.wait_ready()
    try:
        _never_quiet(proc)
        for i in range(20):
            proc.submit_flow(_post("api.segment.io", f"/v1/batch?{i}", body))
        waited = _wait_rows(out, 20, lag + 10, "held back past max_lag while the proxy stayed busy")
        assert waited >= lag - 0.2  # not before their lag ran out
    finally:
        assert proc.close({}) == 0

    # 3) ... or as soon as what it holds passes max_hold_bytes, long before max_lag: the oldest first, down to the bound
    out = tmp_path / "full"
    size = W._held(W.snapshot(_post("api.segment.io", "/v1/batch/0", body)), False)
    proc = W.RecorderProcess(out, RecorderOptions(session_id="f"), None, max_lag=600, max_hold_bytes=10 * size)
    proc.wait_ready()
    try:
        _never_quiet(proc)
        for i in range(20):
            proc.submit_flow(_post("api.segment.io", f"/v1/batch/{i}", body))
        _wait_rows(out, 10, 30, "held past max_hold_bytes while the proxy stayed busy")
        time.sleep(2.0)  # the rest stays held while the proxy is busy: only the excess was recorded
        assert _http_rows(out) == 10
    finally:
        assert proc.close({}) == 0
    assert pq.read_table(out / "http.parquet").column("path").to_pylist() == [f"/v1/batch/{i}" for i in range(20)]


def _heavy(i: int) -> http.HTTPFlow:
    body = json.dumps({"events": [{"device_id": f"{i:08x}{n:024x}", "n": n} for n in range(300)]}).encode()
    return _post("api.segment.io", f"/v1/batch/{i}", body)


def _recording(out: Path) -> dict[str, Any]:
    rec: dict[str, Any] = json.loads((out / "session.json").read_text())["http"]["recording"]
    return rec


def test_closing_waits_for_a_recorder_that_makes_progress(tmp_path: Path) -> None:
    """Closing has no deadline while the worker makes progress: seconds of recording with a 1 s stall timeout finish."""
    import time

    from egressaudit.http import worker as W

    out = tmp_path / "slow"
    proc = W.RecorderProcess(out, RecorderOptions(session_id="s"), None)
    proc.wait_ready()
    _never_quiet(proc)  # everything is still held when closing starts
    for i in range(2000):
        proc.submit_flow(_heavy(i))
    start = time.monotonic()
    assert proc.close({}, timeout=1.0) == 0
    assert time.monotonic() - start > 1.0  # (the premise: finishing took longer than the timeout; about 2 ms an exchange)
    assert proc.restarts == 0 and _http_rows(out) == 2000
    assert _recording(out)["lost"] == 0 and _recording(out)["complete"]


def test_a_recorder_that_makes_no_progress_is_stopped_and_replaced_without_loss(tmp_path: Path) -> None:
    """A worker that stops making progress (here: stopped with SIGSTOP while it holds 300 exchanges) is killed after the
    stall timeout (it ignores SIGTERM); its successor records everything from the spool."""
    import os
    import signal

    from egressaudit.http import worker as W

    out = tmp_path / "stuck"
    proc = W.RecorderProcess(out, RecorderOptions(session_id="s"), None, max_lag=600)
    proc.wait_ready()
    _never_quiet(proc)
    for i in range(300):
        proc.submit_flow(_heavy(i))
    first = proc.process
    os.kill(first.pid, signal.SIGSTOP)
    code = proc.close({}, timeout=1.0)
    assert first.exitcode == -signal.SIGKILL and proc.restarts == 1
    assert code == 0 and _http_rows(out) == 300
    rec = _recording(out)
    assert (rec["handed_over"], rec["recorded"], rec["lost"], rec["recorder_restarts"]) == (300, 300, 0, 1)
    assert not (out / W.SPOOL).exists()  # recorded: the spool (bodies) is gone


def _submit_raw(proc: Any, snap: tuple[Any, ...]) -> None:
    proc._submit("flow", snap, -1)


def test_an_exchange_the_recorder_fails_on_costs_its_detail_not_the_session(tmp_path: Path) -> None:
    """An exception while recording one exchange (here: headers mitmproxy itself cannot rebuild) leaves a row with what
    could be read, counted; the exchanges around it are recorded in full and the worker carries on."""
    from egressaudit.http import worker as W

    out = tmp_path / "bad"
    proc = W.RecorderProcess(out, RecorderOptions(session_id="b"), None)
    proc.wait_ready()
    good = _post("api.segment.io", "/v1/batch?writeKey=k", b'{"batch": [{"n": 1}]}')
    bad = W.snapshot(_post("api.segment.io", "/v1/t?token=s3cr3t", b'{"n": 2}'))
    bad = (bad[0], (*bad[1][:7], "not a header list", *bad[1][8:]), *bad[2:])
    proc.submit_flow(good)
    _submit_raw(proc, bad)
    proc.submit_flow(_post("api.segment.io", "/v1/batch", b'{"batch": [{"n": 3}]}'))
    assert proc.close({}) == 0
    rows = pq.read_table(out / "http.parquet").to_pylist()
    assert len(rows) == 3
    failed = [r for r in rows if r["body_format"] == "error:recorder"]
    assert len(failed) == 1 and failed[0]["path"] == "/v1/t?token=…" and failed[0]["host"] == "api.segment.io"
    assert "the recorder failed on it" in failed[0]["evidence"]
    assert sum(1 for r in rows if r["category"] == "telemetry") == 2
    session = json.loads((out / "session.json").read_text())["http"]
    assert sum(v for k, v in session["skipped"].items() if k.startswith("recorder:")) == 1
    assert session["recording"]["lost"] == 0


@pytest.mark.parametrize("spool", [True, False], ids=["spool", "no-spool"])
def test_a_killed_recorder_is_replaced_and_what_it_held_is_recovered_or_counted(tmp_path: Path, spool: bool) -> None:
    """SIGKILL of the worker while it holds 200 exchanges: the proxy side notices at its next batch and starts a
    successor.  With the spool (the default) the successor records all 200; without, they are lost and counted."""
    import os
    import signal

    from egressaudit.http import worker as W

    out = tmp_path / "killed"
    proc = W.RecorderProcess(out, RecorderOptions(session_id="k"), None, max_lag=600, spool=spool)
    proc.wait_ready()
    _never_quiet(proc)
    for i in range(200):
        proc.submit_flow(_heavy(i))
    first = proc.process
    os.kill(first.pid, signal.SIGKILL)
    first.join(10)
    for i in range(200, 250):  # after the kill: shipped to the successor
        proc.submit_flow(_heavy(i))
    assert proc.process is not first and proc.restarts == 1
    code = proc.close({})
    rec = _recording(out)
    assert rec["handed_over"] == 250 and rec["recorder_restarts"] == 1 and rec["recorder_deaths"] == ["killed by SIGKILL"]
    if spool:
        assert code == 0 and _http_rows(out) == 250 and rec["lost"] == 0 and rec["complete"]
    else:
        # the first worker held (or had in its pipe) most of the 200; those the sender had not yet sent went to the successor
        rows = _http_rows(out)
        assert code == W.EXIT_INCOMPLETE and not rec["complete"] and 50 <= rows < 250
        assert rec["lost"] == 250 - rows and rec["lost_by_reason"] == {"held in memory by a recorder process that died": 250 - rows}


def test_a_negative_max_lag_is_refused_in_one_line(tmp_path: Path) -> None:
    from egressaudit.http import worker as W

    with pytest.raises(ValueError, match="egressaudit_max_lag: must be 0 or more seconds"):
        W.RecorderProcess(tmp_path / "x", RecorderOptions(session_id="x"), None, max_lag=-1)


def test_a_recorder_closed_at_exit_still_finishes_without_starting_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mitmdump can exit without calling `done` (its port is taken); the atexit close must finish the real worker then,
    and Python 3.12+ refuses to start threads at interpreter shutdown: closing must not need a new one."""
    import threading

    from egressaudit.http import worker as W

    out = tmp_path / "audit"
    proc = W.RecorderProcess(out, RecorderOptions(session_id="x"), None)
    proc.wait_ready()
    proc.submit_flow(_post("api.segment.io", "/v1/batch", b'{"batch": [{"n": 1}]}'))

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    proc._close_at_exit()
    assert proc.process.exitcode == 0
    assert json.loads((out / "session.json").read_text())["http"]["exchanges"] == 1
    assert (out / "http.parquet").exists()


# -- the worker's spool, full disks and damaged tables -------------------------------------------------------------------


class _Pipe:
    """The worker's end of the proxy's pipe, in process: messages queued by the test."""

    def __init__(self) -> None:
        import collections

        self.msgs: collections.deque[tuple[Any, ...]] = collections.deque()

    def poll(self, timeout: float = 0.0) -> bool:
        import time

        if not self.msgs and timeout:
            time.sleep(timeout)
        return bool(self.msgs)

    def recv(self) -> tuple[Any, ...]:
        return self.msgs.popleft()


def _spool_items(first: int, n: int, tag: str) -> list[tuple[str, Any, int]]:
    from egressaudit.http.worker import snapshot

    return [("flow", snapshot(_post("api.segment.io", f"/v1/{tag}/{i}", b'{"batch": [{"n": 1}]}')), -1) for i in range(first, first + n)]


def _write_spool(out: Path, spool: str, first: int, items: list[Any], payload: bytes | None = None) -> None:
    import pickle

    from egressaudit.http.worker import SPOOL, _SpoolWriter

    w = _SpoolWriter(out / SPOOL, spool)
    w.append(first, len(items), payload if payload is not None else pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))
    w.close()


def _in_process_worker(out: Path, spool: str) -> tuple[Any, _Pipe, list[int]]:
    import dataclasses
    import math
    import os
    import types

    from egressaudit.http import worker as W

    opts = RecorderOptions(session_id="w")
    rec = Recorder(out, default_db(), dataclasses.replace(opts, flush_interval=math.inf))
    pipe, shared = _Pipe(), [0] * W._SHARED
    quiet = types.SimpleNamespace(value=0.0)  # the proxy has been quiet for long
    return W._Worker(out, opts, rec, pipe, os.getppid(), quiet, shared, 600.0, W.MAX_HOLD_BYTES, spool, set()), pipe, shared


class _Spinning(BaseException):
    """Ends a worker loop that retries the disk without pause."""


def test_a_full_disk_between_two_spools_is_retried_once_a_second_with_the_data_and_the_heartbeat_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of an earlier run's spool are buffered, the disk is full (ENOSPC), and the next exchange is of another spool
    (a part holds the rows of one spool): the worker retried the flush without pause (100% CPU, no heartbeat, its pipe
    unread).  It now retries once per FLUSH_S, keeps its heartbeat, reads the close, ends with exit 4 and keeps the
    spools; a later worker records every exchange."""
    import errno
    import threading
    import time

    from egressaudit.http import worker as W
    from egressaudit.session import store

    out = tmp_path / "audit"
    out.mkdir()
    _write_spool(out, "aaaaaaaaaaaa", 1, _spool_items(1, 5, "earlier"))
    _write_spool(out, "bbbbbbbbbbbb", 1, _spool_items(1, 5, "now"))
    attempts: list[float] = []
    real_write = store.pq.write_table

    def full(*args: Any, **kw: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) > 200:
            raise _Spinning
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.pq, "write_table", full)
    worker, pipe, shared = _in_process_worker(out, "bbbbbbbbbbbb")
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(worker.run())
        except BaseException as e:  # noqa: BLE001 - reported below
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    cpu0, start = time.process_time(), time.monotonic()
    t.start()
    time.sleep(0.5)
    beat = shared[W._HEARTBEAT]
    time.sleep(2.0)
    cpu, window = time.process_time() - cpu0, time.monotonic() - start
    assert not result or not isinstance(result[0], _Spinning), f"{len(attempts)} flush attempts in {window:.1f} s"
    assert 1 <= len(attempts) <= 4, f"{len(attempts)} flush attempts in {window:.1f} s"
    assert cpu < 0.3 * window, f"{cpu:.2f} s of CPU in {window:.1f} s"
    assert shared[W._HEARTBEAT] > beat  # alive, as the proxy's close sees it
    assert worker.rec.http.pending == 5  # the earlier run's rows, kept for the next try
    pipe.msgs.append(("close", {}, {"handed_over": 5}))
    t.join(10)
    assert result == [W.EXIT_OUTPUT]
    assert len(list((out / W.SPOOL).glob("*.seg"))) == 2  # nothing on disk: both spools stay for the next run
    rec = _recording(out)
    assert not rec["complete"] and rec["lost"] == 0

    monkeypatch.setattr(store.pq, "write_table", real_write)
    nxt, pipe, _ = _in_process_worker(out, "cccccccccccc")
    pipe.msgs.append(("close", {}, {"handed_over": 0}))
    assert nxt.run() == W.EXIT_OK
    paths = sorted(pq.read_table(out / "http.parquet").column("path").to_pylist())
    assert paths == sorted([f"/v1/earlier/{i}" for i in range(1, 6)] + [f"/v1/now/{i}" for i in range(1, 6)])
    assert _recording(out)["recovered_from_earlier_runs"] == 10 and not (out / W.SPOOL).exists()


class _Hostile:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_spool_segment_is_refused_not_run_and_counted_as_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker records the spools it finds in OUT/.spool, and read them with pickle.loads: a .seg file placed there ran
    code.  Segments now load as plain data only: a record naming any callable is refused, counted as damaged, and said
    (exit 6); the exchanges of the earlier run around it are recorded; a segment whose name is not a spool's is left
    alone (it crashed the worker: int(name, 16))."""
    import pickle

    from egressaudit.http import worker as W

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # (crash files of the spawned worker, if any)
    out = tmp_path / "audit"
    out.mkdir()
    marker = tmp_path / "pwned"
    _write_spool(out, "0123456789ab", 1, _spool_items(1, 3, "before"))
    evil = pickle.dumps([("flow", _Hostile(marker), -1), ("flow", _Hostile(marker), -1)], protocol=pickle.HIGHEST_PROTOCOL)
    w = W._SpoolWriter(out / W.SPOOL, "0123456789ab")
    w.append(4, 2, evil)
    w.append(6, 2, pickle.dumps(_spool_items(6, 2, "after"), protocol=pickle.HIGHEST_PROTOCOL))
    w.close()
    (out / W.SPOOL / "not-hex-000000000001.seg").write_bytes(W._HEADER.pack(W._MAGIC, 1, 1, 0, 0))
    proc = W.RecorderProcess(out, RecorderOptions(session_id="h"), None)
    proc.wait_ready()
    proc.submit_flow(_post("api.segment.io", "/v1/batch/live", b'{"batch": [{"n": 1}]}'))
    code = proc.close({})
    assert not marker.exists()
    assert code == W.EXIT_INCOMPLETE and proc.restarts == 0 and not (tmp_path / "home" / ".egressaudit").exists()
    rows = pq.read_table(out / "http.parquet").column("path").to_pylist()
    assert sorted(rows) == sorted(["/v1/batch/live", "/v1/before/1", "/v1/before/2", "/v1/before/3", "/v1/after/6", "/v1/after/7"])
    rec = _recording(out)
    assert not rec["complete"] and rec["lost"] == 0 and rec["recorded"] == 1 and rec["recovered_from_earlier_runs"] == 5
    assert rec["lost_from_earlier_runs"] == 2 and rec["lost_from_earlier_runs_by_reason"] == {"spool record damaged": 2}


def test_spool_records_load_as_plain_data_only() -> None:
    """What the proxy ships loads without any callable: snapshots (a NamedTuple or enum in them goes as its plain value,
    an object as text); anything naming a callable, extension codes included, is refused."""
    import copyreg
    import enum
    import pickle
    from typing import NamedTuple

    from egressaudit.http import worker as W

    class Spec(NamedTuple):
        scheme: str
        address: tuple[str, int]

    class Kind(enum.IntEnum):
        TEXT = 1

    f = _post("api.segment.io", "/v1/batch", b'{"n": 1}')
    f.server_conn.via = Spec("http", ("127.0.0.1", 8081))  # type: ignore[assignment]
    f.metadata["egressaudit_streamed"] = {"request": {"bytes": Kind.TEXT, "sha256": bytearray(b"ab"), "x": object()}}
    items = [("flow", W.snapshot(f), -1)]
    loaded = W._loads(W._dumps(items))
    assert loaded[0][1][6][3] == ("http", ("127.0.0.1", 8081)) and type(loaded[0][1][6][3]) is tuple
    streamed = loaded[0][1][7]["request"]
    assert type(streamed["bytes"]) is int and streamed["sha256"] == b"ab" and streamed["x"].startswith("<object")
    assert W.restore(loaded[0][1]).server_conn.via == ("http", ("127.0.0.1", 8081))
    for hostile in (pickle.dumps(Path("/")), pickle.dumps(print), pickle.dumps(Counter(a=1))):
        with pytest.raises(pickle.UnpicklingError):
            W._loads(hostile)
    copyreg.add_extension("os", "system", 0x7FFF)
    try:
        with pytest.raises(pickle.UnpicklingError):
            W._loads(b"\x80\x02\x83\xff\x7f.")  # EXT2 0x7fff
    finally:
        copyreg.remove_extension("os", "system", 0x7FFF)


def _damage(path: Path) -> None:
    path.write_bytes(b"PAR1" + b"\0" * 64)  # a table cut short (not Parquet any more)


def test_a_damaged_table_in_the_folder_ends_the_recording_with_exit_6_in_one_line_without_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """An http.parquet that pyarrow cannot read (ArrowInvalid) made compaction fail at close: the worker caught only
    OSError, so it crashed (a crash file, "a bug"), and each successor crashed the same way (10 restarts).  Now: one line,
    exit 6, no crash file, no restart, the new rows kept as parts and session.json written."""
    from egressaudit.http import worker as W
    from egressaudit.session.store import part_files

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # (the spawned worker's crash folder)
    out = tmp_path / "audit"
    out.mkdir()
    _damage(out / "http.parquet")
    proc = W.RecorderProcess(out, RecorderOptions(session_id="d"), None)
    proc.wait_ready()
    for i in range(3):
        proc.submit_flow(_post("api.segment.io", f"/v1/batch/{i}", b'{"batch": [{"n": 1}]}'))
    capfd.readouterr()
    code = proc.close({})
    err = capfd.readouterr().err
    assert code == W.EXIT_INCOMPLETE and proc.restarts == 0, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "cannot compact" in lines[0] and "http.parquet" in lines[0], lines
    assert "Traceback" not in err and not (home / ".egressaudit" / "crashes").exists()
    assert sum(pq.read_table(p).num_rows for p in part_files(out, "http")) == 3  # kept
    session = json.loads((out / "session.json").read_text())["http"]
    assert not session["recording"]["complete"] and "http.parquet" in session["recording"]["not_compacted"]
    assert session["exchanges"] == 3 and session["recording"]["recorded"] == 3


def test_a_session_json_that_is_not_an_object_is_replaced(tmp_path: Path) -> None:
    """A session.json holding valid JSON that is not an object (``[]``, ``"x"``) made closing the recorder fail."""
    for i, text in enumerate(("[]", '"x"', "3", "null")):
        out = tmp_path / f"s{i}"
        out.mkdir()
        (out / "session.json").write_text(text)
        rec = Recorder(out, default_db(), RecorderOptions(session_id="j"))
        rec.add_flow(_post("api.segment.io", "/v1/batch", b'{"n": 1}'))
        rec.close()
        doc = json.loads((out / "session.json").read_text())
        assert doc["session_id"] == "j" and doc["http"]["exchanges"] == 1


def test_values_the_table_fitted_reach_session_json_once_even_after_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TableAppender counts the values it had to fit into their columns: the counts never reached session.json, and a
    flush that failed (a full disk) counted its rows again when retried."""
    import errno

    from egressaudit.session import store

    first = tmp_path / "first"
    _rows_of(tmp_path, [_post("api.segment.io", "/v1/batch", b'{"n": 1}')], "first")
    (row,) = pq.read_table(first / "http.parquet").to_pylist()
    row["ts_start"] = row["ts_end"] = 1_700_000_000_000_000  # (as the recorder gives it)
    out = tmp_path / "out"
    rec = Recorder(out, default_db(), RecorderOptions(session_id="p", flush_interval=3600))
    rec.http.append([{**row, "host": "bad\udcffhost"}, {**row, "exchange_id": "x2"}])
    real_write = store.pq.write_table
    monkeypatch.setattr(store.pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    for _ in range(3):
        with pytest.raises(OSError):
            rec.http.flush()
    monkeypatch.setattr(store.pq, "write_table", real_write)
    rec.close()
    problems = json.loads((out / "session.json").read_text())["http"]["problems"]
    assert problems == {"http.host:not_utf8": 1}
    assert pq.read_table(out / "http.parquet").column("host").to_pylist() == ["bad\\xffhost", "api.segment.io"]


def test_compaction_that_fails_midway_leaves_the_table_and_parts_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """store.compact wrote its output by hand and cleaned up after OSError only: any other failure while writing (here
    pyarrow's, and an interrupt) left its temporary file behind."""
    import pyarrow as pa

    from egressaudit.session import store

    out = tmp_path / "out"
    app = store.TableAppender(out, "http")
    first = tmp_path / "first"
    _rows_of(tmp_path, [_post("api.segment.io", "/v1/batch", b'{"n": 1}')], "first")
    table = pq.read_table(first / "http.parquet")
    app.append(table.to_pylist())
    app.compact()
    before = (out / "http.parquet").read_bytes()
    app.append(table.to_pylist())
    app.flush()
    real_write = store.pq.write_table

    for exc in (pa.ArrowInvalid("boom"), KeyboardInterrupt()):

        def half(t: Any, where: Any, exc: BaseException = exc, **kw: Any) -> None:
            Path(where).write_bytes(b"PAR1 half a file")
            raise exc

        monkeypatch.setattr(store.pq, "write_table", half)
        with pytest.raises(type(exc)):
            store.compact(out, "http")
        assert (out / "http.parquet").read_bytes() == before
        assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
        assert len(store.part_files(out, "http")) == 1
    monkeypatch.setattr(store.pq, "write_table", real_write)
    store.compact(out, "http")
    assert pq.read_table(out / "http.parquet").num_rows == 2 and not store.part_files(out, "http")
