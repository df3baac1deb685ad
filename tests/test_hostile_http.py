"""Hostile HAR and .mitm files through the real ``egressaudit analyze``: each cause of a traceback measured on c21c1a1.

Every file is written byte by byte here (tnetstring records, JSON text).  A case ends either with exit 0, the bad
record or value counted in ``session.json`` and the good records kept, or with exit 3 and one line; never exit 1 or
a traceback.  The folder a case leaves is then read by ``report``, ``inventory`` and ``har``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from mitmproxy import http
from mitmproxy.test import tflow
from typer.testing import CliRunner

from egressaudit.cli import app
from egressaudit.http import bodies, recorder
from egressaudit.http.query import MAX_QUERY_KEYS
from egressaudit.http.recorder import Recorder, RecorderOptions
from egressaudit.signatures import default_db

runner = CliRunner()
EVENTS = b'{"events": [{"event_type": "join", "device_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}]}'


# -- files, byte by byte ---------------------------------------------------------------------------------------
def tn(v: Any) -> bytes:
    """mitmproxy's tnetstring encoding (as its FlowWriter writes), able to hold what that writer refuses."""
    if v is None:
        return b"0:~"
    if v is True or v is False:
        return b"4:true!" if v else b"5:false!"
    if isinstance(v, int):
        e = str(v).encode()
        return b"%d:%s#" % (len(e), e)
    if isinstance(v, float):
        e = repr(v).encode()
        return b"%d:%s^" % (len(e), e)
    if isinstance(v, bytes):
        return b"%d:%s," % (len(v), v)
    if isinstance(v, str):
        e = v.encode("utf-8", "surrogateescape")
        return b"%d:%s;" % (len(e), e)
    if isinstance(v, list | tuple):
        inner = b"".join(tn(x) for x in v)
        return b"%d:%s]" % (len(inner), inner)
    assert isinstance(v, dict)
    inner = b"".join(tn(k) + tn(x) for k, x in v.items())
    return b"%d:%s}" % (len(inner), inner)


def state(n: int = 0) -> dict[str, Any]:
    """A flow's state as mitmproxy saves it: a JSON telemetry POST."""
    f = tflow.tflow(resp=True)
    f.request.host = "api2.amplitude.com"
    f.request.path = f"/2/httpapi?n={n}"
    f.request.method = "POST"
    f.request.headers["content-type"] = "application/json"
    f.request.content = EVENTS
    return f.get_state()


def good(n: int = 3) -> list[dict[str, Any]]:
    return [state(i) for i in range(n)]


def har(entries: list[Any]) -> dict[str, Any]:
    return {"log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, "entries": entries}}


def entry(i: int = 0, **request: Any) -> dict[str, Any]:
    req = {
        "method": "POST", "url": f"https://api2.amplitude.com/2/httpapi?n={i}", "httpVersion": "HTTP/1.1", "cookies": [],
        "headers": [{"name": "content-type", "value": "application/json"}], "queryString": [], "headersSize": -1, "bodySize": len(EVENTS),
        "postData": {"mimeType": "application/json", "text": EVENTS.decode()},
    }  # fmt: skip
    req.update(request)
    return {
        "startedDateTime": "2026-01-01T00:00:00.000Z", "time": 10, "request": req,
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1", "headers": [], "cookies": [],
                     "content": {"size": 0, "mimeType": "application/json"}, "redirectURL": "", "headersSize": -1, "bodySize": 0},
        "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0},
    }  # fmt: skip


def analyze(tmp_path: Path, name: str, data: bytes) -> tuple[int, str, Path]:
    p = tmp_path / name
    p.write_bytes(data)
    out = tmp_path / f"out-{name}"
    r = runner.invoke(app, ["analyze", str(p), "--out", str(out)])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and r.exit_code != 1, r.output
    return r.exit_code, r.output, out


def session(out: Path) -> dict[str, Any]:
    return json.loads((out / "session.json").read_text())["http"]  # type: ignore[no-any-return]


def rows(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "http.parquet").to_pylist()


def kept(tmp_path: Path, name: str, data: bytes, good_rows: int) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    code, output, out = analyze(tmp_path, name, data)
    assert code == 0, output
    rs = rows(out)
    assert len(rs) == good_rows
    return session(out), rs, out


def refused(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    code, output, _ = analyze(tmp_path, name, data)
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code == 3 and len(lines) == 1 and name in output and words in output, output


def readable(tmp_path: Path, out: Path, report: bool = False) -> None:
    """What the other commands make of the folder a hostile file left."""
    cmds = [["inventory", str(out), "--all", "--category", "any"], ["har", str(out), "--out", str(tmp_path / f"{out.name}.har")]]
    if report:
        cmds.append(["report", str(out)])
    for args in cmds:
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and r.exception is None and "Traceback" not in r.output, (args, r.output)


# -- text that is not UTF-8 ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "column", "expected"),
    [
        (("request", "headers"), "content_type_out", "application/\\xffjson"),
        (("request", "method"), "method", "PO\\xffST"),
        (("request", "path"), "path", "/a\\xff"),
        (("request", "authority"), "host", "\\xffauthority"),
        (("request", "host"), "host", "h\\xffst"),
    ],
)
def test_not_utf8_is_kept_as_escaped_text(tmp_path: Path, where: tuple[str, str], column: str, expected: str) -> None:
    bad = state(9)
    value: Any = {
        "headers": [(b"content-type", b"application/\xffjson")],
        "method": b"PO\xffST",
        "path": b"/a\xff",
        "authority": b"\xffauthority",
        "host": "h\udcffst",  # text mitmproxy cannot write (";" holding bytes that are not UTF-8)
    }[where[1]]
    bad[where[0]][where[1]] = value
    if where[1] == "authority":  # HTTP/2's :authority names the host
        bad["request"]["http_version"] = b"HTTP/2.0"
    data = b"".join(tn(s) for s in [*good(2), bad])
    if where[1] == "host":  # a text field that is not UTF-8: the record is unreadable, the others are kept
        s, _, out = kept(tmp_path, "host.mitm", data, 2)
        assert s["skipped"] == {"bad_tnetstring": 1}
        return
    s, rs, out = kept(tmp_path, "bad.mitm", data, 3)
    row = next(r for r in rs if r["exchange_id"] == bad["id"])
    assert row[column].startswith(expected)
    assert any(k.endswith(":not_utf8") for k in s["problems"]), s
    readable(tmp_path, out, report=where[1] == "headers")


def test_har_text_not_utf8_raw_bytes_and_escapes(tmp_path: Path) -> None:
    text = json.dumps(har([entry(0), entry(1, method="G\udcffET")])).encode()
    text = text.replace(b"https://api2.amplitude.com/2/httpapi?n=0", b"https://api2.amplitude.com/2/h\xfe?n=0")  # a raw byte
    s, rs, out = kept(tmp_path, "utf8.har", text, 2)
    assert {r["method"] for r in rs} == {"POST", "G\\XFFET"}  # \udcff is byte 0xff escaped; mitmproxy uppercases methods
    assert any(r["path"].startswith("/2/h\\xfe") for r in rs)
    assert s["problems"]["har:not_utf8"] == 2
    readable(tmp_path, out)


# -- numbers, types, timestamps ------------------------------------------------------------------------------
def test_har_status_too_large_is_nulled_and_counted(tmp_path: Path) -> None:
    bad = entry(1)
    bad["response"]["status"] = 2**31
    huge = entry(2)
    huge["response"]["status"] = 10**30
    s, rs, out = kept(tmp_path, "status.har", json.dumps(har([entry(0), bad, huge])).encode(), 3)
    assert sorted(r["status"] or 0 for r in rs) == [0, 0, 200]
    assert s["problems"]["status:out_of_range"] == 2
    readable(tmp_path, out)


def test_flow_id_that_is_not_a_string(tmp_path: Path) -> None:
    a, b = state(1), state(2)
    a["id"], b["id"] = 12345, [1, 2]
    s, rs, _ = kept(tmp_path, "ids.mitm", tn(a) + tn(b) + tn(state(3)), 3)
    assert {"12345", "[1, 2]"} <= {r["exchange_id"] for r in rs}
    assert s["problems"]["exchange_id:wrong_type"] == 2


@pytest.mark.parametrize(
    ("ts", "us"), [(float("inf"), recorder.TS_MAX_US), (float("-inf"), 0), (float("nan"), 0), (1e300, recorder.TS_MAX_US), (-5.0, 0)]
)
def test_timestamps_are_clamped_and_counted(tmp_path: Path, ts: float, us: int) -> None:
    bad = state(1)
    bad["request"]["timestamp_start"] = ts
    s, rs, _ = kept(tmp_path, "ts.mitm", tn(bad) + tn(state(2)), 2)
    row = next(r for r in rs if r["exchange_id"] == bad["id"])
    assert (row["ts_start"] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) == us
    assert sum(v for k, v in s["problems"].items() if k.startswith("ts_start:")) == 1


# -- mitmproxy's reader: one bad record costs that record ------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s["request"].__setitem__("headers", [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]), "bad_flow_state"),  # TypeError
        (lambda s: s.__setitem__("zzz", 1), "bad_flow_state"),  # AssertionError in Flow.set_state
        (lambda s: s.__setitem__("client_conn", "x"), "bad_flow_state"),  # AttributeError
        (lambda s: s.__setitem__("version", 999), "bad_flow_version"),  # ValueError from migrate_flow
        (lambda s: s.__setitem__("type", "tcp") or s.__setitem__("messages", []), "bad_flow_state"),
        (lambda s: s["request"].__setitem__("content", "\udcff"), "bad_tnetstring"),  # ";" that is not UTF-8
    ],
)
def test_a_bad_record_is_skipped_and_counted(tmp_path: Path, mutate: Any, reason: str) -> None:
    bad = state(9)
    mutate(bad)
    s, _, out = kept(tmp_path, "rec.mitm", tn(state(1)) + tn(bad) + tn(state(2)), 2)
    assert s["skipped"] == {reason: 1}
    assert json.loads((out / "session.json").read_text())["http"]["inputs"][0]["skipped"] == {reason: 1}


def test_nesting_past_the_recursion_limit(tmp_path: Path) -> None:
    """mitmproxy's tnetstring parser recurses: 5,000 nested lists were a RecursionError for the whole file."""
    deep = b"1:0#"
    for _ in range(5000):
        deep = b"%d:%s]" % (len(deep), deep)
    body = tn("id") + deep
    record = b"%d:%s}" % (len(body), body)
    s, _, _ = kept(tmp_path, "deep.mitm", tn(state(1)) + record + tn(state(2)), 2)
    assert s["skipped"] == {"record_too_deep": 1}


def test_a_length_prefix_that_lies_is_never_allocated(tmp_path: Path) -> None:
    """An 11-digit length in a 16-byte file: mitmproxy called read(n) with it (MemoryError)."""
    refused(tmp_path, "lie.mitm", b"12345678901:abcd", "corrupt record at byte 0")
    data = b"".join(tn(s) for s in good(2)) + b"99999999999:" + tn(state(5))
    s, _, out = kept(tmp_path, "lie2.mitm", data, 2)
    assert s["skipped"] == {"corrupt_record": 1}
    (line,) = s["errors"]
    assert "lie2.mitm: corrupt record at byte" in line and "2 flows before it were read" in line
    readable(tmp_path, out)


@pytest.mark.parametrize("cut", [-1, -2, 1, 5])
def test_truncation_at_a_record_boundary_keeps_the_records_before(tmp_path: Path, cut: int) -> None:
    records = [tn(s) for s in good(3)]
    data = b"".join(records)
    at = len(records[0]) + len(records[1]) + cut  # around the end of the second record
    s, _, _ = kept(tmp_path, "cut.mitm", data[:at], 1 if cut < 0 else 2)
    assert s["skipped"] == {"corrupt_record": 1}


def test_empty_and_flowless_files_exit_3_with_one_line(tmp_path: Path) -> None:
    refused(tmp_path, "empty.mitm", b"", "empty file")
    refused(tmp_path, "empty.har", b"", "empty file")
    refused(tmp_path, "nothing.har", json.dumps(har([])).encode(), "no readable HTTP flow")
    refused(tmp_path, "null.mitm", b"0:~", "no readable HTTP flow (not_a_flow: 1)")
    refused(tmp_path, "allbad.har", json.dumps(har([1, "x", None])).encode(), "har_entry_wrong_type: 3")
    refused(tmp_path, "garbage.mitm", b"\x00\x01garbage", "not a mitmproxy flow file or HAR file")


def test_a_later_file_that_fails_undoes_the_command(tmp_path: Path) -> None:
    """analyze is all or nothing (issue 12: a command that fails creates no folder): the files are still there to run
    again without the bad one, and no half session is left for a report to present as whole."""
    (tmp_path / "good.har").write_text(json.dumps(har([entry(0)])))
    (tmp_path / "nothing.har").write_text(json.dumps(har([])))
    out = tmp_path / "new" / "session"
    r = runner.invoke(app, ["analyze", str(tmp_path / "good.har"), str(tmp_path / "nothing.har"), "--out", str(out)])
    assert r.exit_code == 3 and "nothing.har" in r.output
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("text", [b"{not json", b'{"log": 5}', b"[1, 2]", b'{"a": {"entries": []}}', b"{" * 5000])
def test_not_a_har_exits_3(tmp_path: Path, text: bytes) -> None:
    refused(tmp_path, "x.har", text, "x.har")


def test_har_entries_one_by_one(tmp_path: Path) -> None:
    missing = entry(1)
    del missing["request"]["method"]
    wrong = entry(2, headers=5)
    deep = entry(3)
    # a body nested past the recursion limit, whatever the Python: json parses [[[...]]] about 950 deep on 3.11, 1,250 on
    # 3.12 and 9,750 on 3.13 (its C recursion limit), so 5000 levels were json on 3.13
    deep["request"]["postData"]["text"] = "[" * 100_000 + "]" * 100_000
    s, rs, _ = kept(tmp_path, "entries.har", json.dumps(har([entry(0), missing, wrong, deep, entry(4)])).encode(), 3)
    assert s["skipped"]["har_entry_missing_field"] == 1 and s["skipped"]["har_entry_wrong_type"] == 1
    assert {r["body_format"] for r in rs} >= {"json", "error:too_deep"}
    # a HAR cut short: the entries before the cut are kept
    text = json.dumps(har([entry(0), entry(1), entry(2)])).encode()
    s, _, _ = kept(tmp_path, "cut.har", text[: text.rindex(b'{"startedDateTime"') + 40], 2)
    assert s["skipped"] == {"corrupt_record": 1}


def test_har_over_the_cap_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A HAR is held whole as text: past HAR_MAX_BYTES it is refused before it is read."""
    monkeypatch.setattr(recorder, "HAR_MAX_BYTES", 2000)
    refused(tmp_path, "big.har", json.dumps(har([entry(i) for i in range(5)])).encode(), "2,000-byte cap")


# -- linear work and bounded memory --------------------------------------------------------------------------
def _multipart(n: int, lf: bool = False) -> bytes:
    body = b"".join(b'--XB\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(n)) + b"--XB--\r\n"
    return body.replace(b"\r\n", b"\n") if lf else body


def _best(fn: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@pytest.mark.parametrize("lf", [False, True])
def test_multipart_parsing_is_linear(lf: bool) -> None:
    """10k parts took 3.5 s and 40k 55 s (quadratic: 16x for 4x the parts); now the ratio is that of the sizes."""
    small, big = _multipart(10_000, lf), _multipart(40_000, lf)
    t_small = _best(lambda: bodies.parse_body(small, "multipart/form-data"))
    t_big = _best(lambda: bodies.parse_body(big, "multipart/form-data"))
    assert t_big < 8 * t_small, (t_small, t_big)
    p = bodies.parse_body(big, "multipart/form-data")
    assert (p.format, p.part_count, len(p.parts), p.cut, p.warning) == ("multipart", 40_000, bodies.MAX_PARTS, 39_000, "too_many_parts")


def test_many_parts_through_analyze(tmp_path: Path) -> None:
    st = state(1)
    st["request"]["content"] = _multipart(40_000)
    st["request"]["headers"] = [(b"content-type", b"multipart/form-data; boundary=XB")]
    s, rs, _ = kept(tmp_path, "parts.mitm", tn(st) + tn(state(2)), 2)
    assert s["skipped"] == {"too_many_parts": 1}
    assert {r["body_format"] for r in rs} == {"multipart", "json"}


def test_query_keys_are_capped(tmp_path: Path) -> None:
    """A 20 MB HAR with 2M query keys took 1.5 GB and 33 s: the path and the inventory keep MAX_QUERY_KEYS keys."""
    url = "https://api2.amplitude.com/2/httpapi?" + "&".join(f"k{i}=v" for i in range(30_000))
    s, (row,), out = kept(tmp_path, "query.har", json.dumps(har([entry(0, url=url)])).encode(), 1)
    assert s["skipped"] == {"query_keys_cut": 1}
    assert row["path"].count("=…") == MAX_QUERY_KEYS and row["path"].endswith("&…")
    keys = [f["key_path"] for f in pq.read_table(out / "fields.parquet").to_pylist() if f["key_path"].startswith("?")]
    assert len(keys) == MAX_QUERY_KEYS


def test_form_keys_are_capped() -> None:
    body = b"&".join(b"k%d=v" % i for i in range(20_000))
    p = bodies.parse_body(body, "application/x-www-form-urlencoded")
    assert isinstance(p.tree, dict) and len(p.tree) == bodies.MAX_FORM_KEYS and p.cut == 15_000 and p.warning == "too_many_keys"


# -- the recorder never raises on content ---------------------------------------------------------------------
def _recorder(tmp_path: Path, **kw: Any) -> Recorder:
    return Recorder(tmp_path / "rec", default_db(), RecorderOptions(session_id="t", **kw))


def test_one_bad_header_costs_nothing_else(tmp_path: Path) -> None:
    """In the live proxy, one request with Content-Type: application/\\xffjson killed the recorder: 0 of 62 rows."""
    rec = _recorder(tmp_path)
    flows = [tflow.tflow(resp=True) for _ in range(62)]
    flows[0].request.headers["content-type"] = "application/\udcffjson"
    flows[0].request.content = EVENTS
    for f in flows:
        rec.add_flow(f)
    rec.close()
    rs = pq.read_table(tmp_path / "rec" / "http.parquet").to_pylist()
    assert len(rs) == 62 and rs[0]["content_type_out"] == "application/\\xffjson"
    assert json.loads((tmp_path / "rec" / "session.json").read_text())["http"]["problems"] == {"content_type_out:not_utf8": 1}


def test_a_flow_of_wrong_types_still_gives_a_row(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    f = tflow.tflow(resp=True)
    f.id = object()  # type: ignore[assignment]
    f.metadata = "not a dict"  # type: ignore[assignment]
    f.client_conn.peername = ("a", "b")  # type: ignore[assignment]
    f.request.timestamp_start = float("nan")
    rec.add_flow(f)
    rec.add_websocket_message(f, 3)  # no such message
    rec.close()
    (row,) = pq.read_table(tmp_path / "rec" / "http.parquet").to_pylist()
    assert row["exchange_id"].startswith("<object object") and row["client_port"] is None and row["status"] == 200
    assert rec.stats.skipped["websocket_message_missing"] == 1
    assert {"exchange_id:wrong_type", "client_ip:wrong_type", "ts_start:not_a_number", "streamed_metadata:unreadable"} <= set(rec.stats.problems)


def test_an_exchange_the_recorder_fails_on_keeps_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise ValueError("a bug")

    rec = _recorder(tmp_path)
    monkeypatch.setattr(recorder, "classify_exchange", boom)
    rec.add_flow(tflow.tflow(resp=True))
    monkeypatch.undo()
    rec.add_flow(tflow.tflow(resp=True))
    rec.close()
    rs = pq.read_table(tmp_path / "rec" / "http.parquet").to_pylist()
    assert [r["body_format"] for r in rs] == ["error:recorder", "text"]
    assert rs[0]["evidence"].endswith("(ValueError)") and rec.stats.skipped == {"recorder_error:ValueError": 1}

    def disk_full(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    rec = _recorder(tmp_path)
    monkeypatch.setattr(recorder, "classify_exchange", disk_full)
    with pytest.raises(OSError):
        rec.add_flow(tflow.tflow(resp=True))


# -- streamed bodies (the proxy streams large ones and keeps their head) -----------------------------------------
def test_streamed_body_contract(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    head = (
        b'--XB\r\nContent-Disposition: form-data; name="meeting"\r\n\r\n85012345678\r\n'
        b'--XB\r\nContent-Disposition: form-data; name="f"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n' + png + bytes(500)
    )
    total = 300 << 20
    digest = hashlib.sha256(b"the body as sent").hexdigest()
    req = http.Request.make("PUT", "https://upload.example.com/upload/x", b"", {"content-type": "multipart/form-data; boundary=XB"})
    req.raw_content = head
    f = tflow.tflow(req=req, resp=True)
    assert f.response is not None
    f.response.raw_content = b"\x1f\x8b\x08\x00" + bytes(100)  # a gzip head, cut
    f.response.headers["content-encoding"] = "gzip"
    f.metadata["egressaudit_streamed"] = {"request": {"bytes": total, "sha256": digest}, "response": {"bytes": 5_000_000, "sha256": None}}
    plain = tflow.tflow(resp=True)
    rec = _recorder(tmp_path)
    rec.add_flow(f)
    rec.add_flow(plain)
    rec.close()
    row, other = pq.read_table(tmp_path / "rec" / "http.parquet").to_pylist()
    assert row["body_bytes_out"] == total and row["bytes_out"] > total and row["decoded_bytes_out"] is None
    assert row["body_bytes_in"] == 5_000_000 and row["bytes_in"] > 5_000_000 and row["decoded_bytes_in"] is None
    assert row["body_format"] == "multipart" and row["category"] == "content_upload" and "1 file" in row["evidence"]
    assert row["body_sha256"] == hashlib.sha256(rec.salt + bytes.fromhex(digest)).hexdigest()
    fields = {r["key_path"] for r in pq.read_table(tmp_path / "rec" / "fields.parquet").to_pylist() if r["exchange_id"] == row["exchange_id"]}
    assert "meeting" in fields  # the head's part headers and fields were read
    assert rec.stats.skipped["streamed_body"] == 2
    assert other["decoded_bytes_out"] == other["body_bytes_out"]  # a flow without the metadata is unaffected
    # kept values: the proxy's digest as is; bad metadata is counted and the content's own size used
    g = copy.deepcopy(f)
    g.metadata["egressaudit_streamed"] = {"request": {"bytes": "many", "sha256": "xyz"}}
    rec = _recorder(tmp_path, keep_values=True)
    rec.add_flow(f)
    rec.add_flow(g)
    rec.close()
    a, b = pq.read_table(tmp_path / "rec" / "http.parquet").to_pylist()[-2:]
    assert a["body_sha256"] == digest and b["body_sha256"] is None and b["body_bytes_out"] == len(head)
    assert rec.stats.problems["streamed_metadata:bad_bytes"] == 1 and rec.stats.problems["streamed_metadata:bad_sha256"] == 1


def test_partial_decoding_of_a_streamed_head() -> None:
    import gzip

    whole = gzip.compress(EVENTS * 100)
    assert bodies.decode_content(whole[:60], "gzip") == (None, "error:truncated_gzip")
    part, err = bodies.decode_content(whole[:60], "gzip", partial=True)
    assert err is None and part is not None and (EVENTS * 100).startswith(part)
