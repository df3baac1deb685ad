"""egressaudit.http.inventory: key paths, detectors and hashing, on payloads captured from the real analytics SDKs."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from egressaudit.http.bodies import decode_content, parse_body
from egressaudit.http.inventory import FIELD_KEYS, hash_value, inventory, salt_new
from egressaudit.schema import column_names

EMAIL = "alice.example@example.org"
DEVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
MEETING = "85012345678"
TITLE = "Quarterly board review"
SALT = b"\x01" * 32


def by_path(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["key_path"]: r for r in rows}


def dets(tree: object, **kw: Any) -> dict[str, list[str]]:
    return {r["key_path"]: r["detectors"] for r in inventory(tree, salt=SALT, **kw)}


# -- rows ------------------------------------------------------------------------


def test_rows_have_exactly_the_fields_columns() -> None:
    rows = inventory({"a": 1}, salt=SALT)
    assert set(FIELD_KEYS) <= set(column_names("fields"))
    assert [set(r) for r in rows] == [set(FIELD_KEYS)]


def test_key_paths_fold_list_indexes_and_count() -> None:
    tree = {
        "events": [
            {"device": {"model": "Pixel 8", "os": "android"}, "ts": 1},
            {"device": {"model": "Pixel 8"}, "ts": 2, "tags": ["a", "b", "c"]},
        ],
        "sent_at": None,
        "empty": {},
        "nothing": [],
    }
    rows = by_path(inventory(tree, salt=SALT))
    assert sorted(rows) == ["events[].device.model", "events[].device.os", "events[].tags[]", "events[].ts", "sent_at"]
    assert rows["events[].device.model"]["count"] == 2 and rows["events[].tags[]"]["count"] == 3
    assert (rows["events[].ts"]["value_type"], rows["sent_at"]["value_type"], rows["events[].tags[]"]["value_type"]) == ("int", "null", "string")
    assert rows["events[].device.model"]["value_length"] == len("Pixel 8")
    top = by_path(inventory([{"x": 1.5}, {"x": 2.5}], salt=SALT))
    assert top["[].x"]["value_type"] == "float" and top["[].x"]["count"] == 2
    assert by_path(inventory("just a string", salt=SALT))["$"]["value_type"] == "string"


def test_mixed_types_at_one_path() -> None:
    rows = by_path(inventory({"v": [1, "one", None, True]}, salt=SALT))
    assert rows["v[]"]["value_type"] == "bool,int,string"


def test_protobuf_paths_and_wire_types() -> None:
    body = bytes.fromhex("089601") + b"\x12\x07testing" + bytes.fromhex("1a03089601") + b"\x25" + (7).to_bytes(4, "little")
    p = parse_body(body, "application/x-protobuf")
    rows = by_path(inventory(p.tree, salt=SALT))
    assert {k: v["value_type"] for k, v in rows.items()} == {"#1": "varint", "#2": "string", "#3.#1": "varint", "#4": "fixed32"}
    b = by_path(inventory({"#1": b"\x00\xff"}, salt=SALT))["#1"]
    assert (b["value_type"], b["value_length"]) == ("bytes", 2)


# -- hashing -------------------------------------------------------------------------


def test_hashing_is_salted_and_values_stay_hidden() -> None:
    tree = {"user": {"email": EMAIL}, "n": 3}
    s1, s2 = salt_new(), salt_new()
    assert len(s1) == 32 and s1 != s2
    a, b, c = (by_path(inventory(tree, salt=s))["user.email"] for s in (s1, s1, s2))
    assert a["value_hash"] == b["value_hash"] != c["value_hash"]
    assert a["value_hash"] == hashlib.sha256(s1 + EMAIL.encode()).hexdigest() == hash_value(s1, EMAIL)
    assert a["value"] is None and EMAIL not in json.dumps(inventory(tree, salt=s1))
    kept = by_path(inventory(tree, salt=s1, keep_values=True))
    assert kept["user.email"]["value"] == EMAIL and kept["n"]["value"] == "3"
    assert kept["user.email"]["value_hash"] == a["value_hash"]  # hashes join across sessions' rows either way
    # equal values at different paths or in different bodies join; the first value is the one hashed
    other = by_path(inventory({"events": [{"uid": EMAIL}, {"uid": "someone@else.org"}]}, salt=s1))
    assert other["events[].uid"]["value_hash"] == a["value_hash"] and other["events[].uid"]["count"] == 2
    assert hash_value(SALT, 1) == hash_value(SALT, "1") and hash_value(SALT, True) == hash_value(SALT, "true")


# -- detectors -----------------------------------------------------------------------


def test_identifier_detectors_on_values() -> None:
    d = dets(
        {
            "contact": EMAIL,
            "note": f"please mail {EMAIL} about it",
            "uid": DEVICE,
            "nil": "00000000-0000-0000-0000-000000000000",
            "local": "192.168.1.20",
            "v6": "2001:db8::8a2e:370:7334",
            "hw": "3c:22:fb:12:ab:9e",
            "hw2": "3C-22-FB-12-AB-9E",
            "zero_mac": "00:00:00:00:00:00",
            "e164": "+14155552671",
            "us": "(415) 555-2671",
            "de": "+49 30 901820",
            "uk": "020 7946 0958",
        }
    )
    assert d["contact"] == ["email"] and d["note"] == ["email"]
    assert d["uid"] == ["uuid"] and d["nil"] == []
    assert d["local"] == ["ipv4"] and d["v6"] == ["ipv6"]
    assert d["hw"] == ["mac"] and d["hw2"] == ["mac"] and d["zero_mac"] == []
    assert d["e164"] == d["us"] == d["de"] == d["uk"] == ["phone"]


def test_not_phones_not_ips() -> None:
    d = dets(
        {
            "ts": 1763880000,
            "ts_ms": 1763880000123,
            "ts_text": "1763880000123",
            "date": "2025-11-23",
            "dt": "2025-11-23T07:49:52.616517Z",
            "time": "12:30:45",
            "app_version": "5.17.1.2345",
            "count": 12345678,
            "ratio": 0.123456789,
            "sha": "e59ff93f20eb4b2784497e236314f393",
            "peer": "10.0.0.1",
        }
    )
    assert all(v == [] for k, v in d.items() if k != "peer"), d
    assert d["peer"] == ["ipv4"] and dets({"os_ver": "10.0.0.1"})["os_ver"] == []  # versions are not addresses
    # the same number under a phone key is a phone
    assert dets({"phone": "4155552671"})["phone"] == ["phone"] and dets({"msisdn": 14155552671})["msisdn"] == ["phone"]


def test_identifier_detectors_on_key_names() -> None:
    d = dets(
        {
            "deviceId": "a1b2c3d4e5f6a7b8",
            "install_id": 99887766554433,
            "device": {"id": "AB12CD34EF56", "model": "MacBookPro18,3"},
            "advertising_id": DEVICE,
            "anonymousId": "anon-8c1d2e3f4a5b",
            "machine_id": "unknown",
            "serialNumber": "C02XK1ABJGH5",
            "hw": {"serial": "unknown"},
            "meetingId": "94823412345",
            "meeting_number": 85012345678,
            "confId": "ab12-cd34-ef56",
            "meeting": {"id": 8501234567, "title": TITLE},
            "thread": "19:meeting_NDQ4MGRhYzYtOTFhNi00MjQ3LWI3ZmUtMDhkZTdiMWU4NjQ2@thread.v2",
            "join": "https://us02web.zoom.us/j/85012345678?pwd=abc",
            "meet": "abc-defg-hij",
            "id": 85012345678,
        }
    )
    assert d["deviceId"] == ["device_id"] and d["install_id"] == ["device_id"] and d["device.id"] == ["device_id"]
    assert d["advertising_id"] == ["device_id", "uuid"] and d["anonymousId"] == ["device_id"]
    assert d["device.model"] == [] and d["machine_id"] == []  # a placeholder is no identifier
    assert d["serialNumber"] == ["serial"] and d["hw.serial"] == []
    assert d["meetingId"] == d["meeting_number"] == d["confId"] == d["meeting.id"] == ["meeting_id"]
    assert d["thread"] == d["join"] == d["meet"] == ["meeting_id"]
    assert d["id"] == []  # a bare number under a bare "id" says nothing


def test_seen_names() -> None:
    d = dets({"user": {"display": "alice EXAMPLE"}, "other": "Bob", "n": "Al"}, seen_names={"Alice Example", "x"})
    assert d["user.display"] == ["seen_name"] and d["other"] == [] and d["n"] == []


def test_content_leak_detectors() -> None:
    d = dets(
        {
            "meeting_title": TITLE,
            "topic": "Layoffs planning",
            "kafka": {"topic": "client.metrics"},
            "meeting": {"name": "1:1 Alice / Bob"},
            "chat": {"messages": [{"text": "the password is hunter2", "sender": "x"}]},
            "chatMessage": "see you",
            "message": "audio device lost",
            "fileName": "Q3 forecast.xlsx",
            "upload": {"path": "C:\\Users\\alice\\Documents\\merger-terms.docx"},
            "asset": "https://cdn.example.com/app/logo.png",
            "bundle": "com.example.app",
            "transcript": "so as I was saying, the numbers are bad",
            "captions": ["hello everyone", "next slide"],
            "lang": "en-US",
        }
    )
    assert d["meeting_title"] == ["meeting_title"] and d["topic"] == ["meeting_title"] and d["meeting.name"] == ["meeting_title"]
    assert d["kafka.topic"] == []  # an identifier, not a title
    assert d["chat.messages[].text"] == ["chat_text"] and d["chatMessage"] == ["chat_text"] and d["chat.messages[].sender"] == []
    assert d["message"] == []  # a log message is not chat
    assert d["fileName"] == ["file_name"] and d["upload.path"] == ["file_name"]
    assert d["asset"] == [] and d["bundle"] == []
    assert d["transcript"] == ["transcript"] and d["captions[]"] == ["transcript"] and d["lang"] == []


def test_detectors_union_over_values() -> None:
    rows = by_path(inventory({"events": [{"who": "x"}, {"who": EMAIL}, {"who": DEVICE}]}, salt=SALT))
    assert rows["events[].who"]["detectors"] == ["email", "uuid"]


def test_many_paths_are_capped() -> None:
    rows = inventory({f"k{i}": i for i in range(20_000)}, salt=SALT)
    assert len(rows) <= 5001 and sum(r["count"] for r in rows) == 20_000


def test_empty_keys_and_root_leaves_are_dollar() -> None:
    assert [r["key_path"] for r in inventory({"": 1, "a": {"": 2}}, salt=SALT)] == ["$", "a."]
    assert [r["key_path"] for r in inventory({"": {"": "x"}}, salt=SALT)] == ["$"]
    assert [r["key_path"] for r in inventory("root", salt=SALT)] == ["$"]


def test_key_decisions_depend_on_parent_and_ancestors() -> None:
    # the same key and value, under different parents and ancestors (decisions per key are cached)
    body = {
        "device": {"id": "A1B2C3D4E5F6"},
        "user": {"id": "A1B2C3D4E5F6"},
        "chat": {"items": [{"text": "see you at noon"}]},
        "page": {"items": [{"text": "see you at noon"}]},
        "conference": {"title": "Quarterly board review"},
        "book": {"title": "Quarterly board review"},
    }
    for _ in range(2):
        d = dets(body)
        assert d["device.id"] == ["device_id"] and d["user.id"] == []
        assert d["chat.items[].text"] == ["chat_text"] and d["page.items[].text"] == []
        assert d["conference.title"] == ["meeting_title"] and d["book.title"] == []


def test_too_deep_is_one_leaf() -> None:
    tree: object = {"x": 1}
    for _ in range(70):
        tree = {"k": tree}
    rows = inventory(tree, salt=SALT)
    assert len(rows) == 1 and rows[0]["key_path"] == ".".join(["k"] * 64) and rows[0]["value_type"] == "string"


# -- real SDK payloads ---------------------------------------------------------------


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes


class Collector:
    """An HTTP server on 127.0.0.1 answering every POST like the vendors' ingestion endpoints do."""

    def __init__(self) -> None:
        self.got: list[Captured] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("content-length") or 0)
                got.append(Captured(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
                body = b'{"code":200,"status":1,"success":true,"events_ingested":1,"payload_size_bytes":1,"server_upload_time":1}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def parsed(self, i: int = 0) -> tuple[str, object]:
        c = self.got[i]
        data, err = decode_content(c.body, c.headers.get("content-encoding"))
        assert err is None and data is not None
        p = parse_body(data, c.headers.get("content-type"))
        return p.format, p.tree


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def test_segment_batch(collector: Collector) -> None:
    segment = pytest.importorskip("segment.analytics")
    client = segment.Client("segment-write-key", host=collector.url, sync_mode=True, gzip=True)
    client.identify(DEVICE, {"email": EMAIL, "name": "Alice Example"})
    client.track(DEVICE, "Call Started", {"email": EMAIL, "meeting_id": MEETING, "meeting_title": TITLE, "mic_muted": True})
    client.flush()
    assert [c.path for c in collector.got] == ["/v1/batch", "/v1/batch"] and collector.got[0].headers.get("content-encoding") == "gzip"
    fmt, tree = collector.parsed(1)
    assert fmt == "json"
    rows = by_path(inventory(tree, salt=SALT, seen_names={"Alice Example"}))
    assert rows["batch[].userId"]["detectors"] == ["uuid"]
    assert rows["batch[].properties.email"]["detectors"] == ["email"]
    assert rows["batch[].properties.meeting_id"]["detectors"] == ["meeting_id"]
    assert rows["batch[].properties.meeting_title"]["detectors"] == ["meeting_title"]
    assert rows["batch[].properties.mic_muted"]["value_type"] == "bool"
    assert rows["batch[].timestamp"]["detectors"] == [] and rows["batch[].messageId"]["detectors"] == ["uuid"]
    assert "batch[].context.library.name" in rows
    _, ident = collector.parsed(0)
    assert by_path(inventory(ident, salt=SALT, seen_names={"Alice Example"}))["batch[].traits.name"]["detectors"] == ["seen_name"]


def test_amplitude_events(collector: Collector) -> None:
    amplitude = pytest.importorskip("amplitude")
    client = amplitude.Amplitude("amplitude-api-key", configuration=amplitude.Config(server_url=collector.url + "/2/httpapi"))
    client.track(amplitude.BaseEvent(event_type="meeting_joined", user_id=EMAIL, device_id=DEVICE, event_properties={"meeting_id": MEETING}))
    client.flush()
    client.shutdown()
    assert collector.got and collector.got[0].path == "/2/httpapi"
    fmt, tree = collector.parsed()
    assert fmt == "json"
    rows = by_path(inventory(tree, salt=SALT))
    assert rows["events[].user_id"]["detectors"] == ["email"]
    assert rows["events[].device_id"]["detectors"] == ["device_id", "uuid"]
    assert rows["events[].event_properties.meeting_id"]["detectors"] == ["meeting_id"]
    assert rows["events[].time"]["value_type"] == "int" and rows["events[].time"]["detectors"] == []
    assert rows["api_key"]["detectors"] == []


def test_mixpanel_form_with_json_data(collector: Collector) -> None:
    mixpanel = pytest.importorskip("mixpanel")
    consumer = mixpanel.Consumer(events_url=collector.url + "/track", retry_limit=0)
    mp = mixpanel.Mixpanel("mixpanel-token", consumer=consumer)
    mp.track(DEVICE, "Screen Share Started", {"$email": EMAIL, "meetingId": MEETING, "$os": "Linux"})
    assert collector.got[0].path.startswith("/track")
    fmt, tree = collector.parsed()
    assert fmt == "form"  # data=<JSON> in an urlencoded form: the JSON is expanded into the tree
    rows = by_path(inventory(tree, salt=SALT))
    data = "data[]" if "data[].event" in rows else "data"
    assert rows[f"{data}.properties.distinct_id"]["detectors"] == ["uuid"]
    assert rows[f"{data}.properties.$email"]["detectors"] == ["email"]
    assert rows[f"{data}.properties.meetingId"]["detectors"] == ["meeting_id"]
    assert rows[f"{data}.properties.time"]["detectors"] == []


def test_sentry_envelope_inventory() -> None:
    from tests.test_bodies import _sentry_envelope

    env = _sentry_envelope()
    p = parse_body(gzip.decompress(gzip.compress(env)), "application/x-sentry-envelope")
    rows = by_path(inventory(p.tree, salt=SALT))
    assert rows["items[].payload.user.email"]["detectors"] == ["email"]
    assert rows["items[].payload.user.id"]["detectors"] == ["uuid"]
    assert rows["items[].payload.tags.meeting_id"]["detectors"] == ["meeting_id"]
    assert rows["items[].header.filename"]["detectors"] == ["file_name"]
    assert rows["items[].header.type"]["count"] == 2
    assert all(r["value"] is None for r in rows.values())


def test_addresses_inside_ice_candidates_and_sdp() -> None:
    tree = {
        "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\nc=IN IP4 192.0.2.7\r\n",
        "pc": [{"candidate": "candidate:842163049 1 udp 1677729535 2001:db8::7 61665 typ srflx raddr :: rport 0"}],
        "note": "client 1.2.3.4 build",  # a version-like number in prose is not an address
    }
    got = {r["key_path"]: r["detectors"] for r in inventory(tree, salt=b"s" * 32)}
    assert "ipv4" in got["sdp"] and "ipv6" in got["pc[].candidate"] and "ipv4" not in got["note"]


# -- limits: paths, depth, cost ----------------------------------------------------------------------------------------


def test_paths_are_capped_and_deep_subtrees_become_one_clipped_leaf() -> None:
    from egressaudit.http import inventory as inv

    rows = inventory({f"k{i}": i for i in range(20_000)}, salt=b"s")
    assert len(rows) == inv.MAX_PATHS + 1 and rows[-1]["key_path"] == "<more>" and rows[-1]["count"] == 20_000 - inv.MAX_PATHS
    deep: Any = "x" * 50_000
    for _ in range(3_000):  # past both MAX_DEPTH and the recursion limit (json.dumps of the subtree raised RecursionError)
        deep = [deep]
    (row,) = inventory({"a": deep}, salt=b"s", keep_values=True)
    assert row["key_path"] == "a" + "[]" * (inv.MAX_DEPTH - 1) and len(row["value"]) <= inv.MAX_TEXT


def test_inventory_cost_is_linear() -> None:
    import time

    def batch(n: int) -> dict[str, Any]:
        events = [
            {"event_type": f"e{i % 50}", "device_id": f"7c9e6679-7425-40de-944b-{i:012d}", "n": i, "user": {"email": f"u{i}@x.org"}} for i in range(n)
        ]
        return {"events": events}

    small, big = batch(5_000), batch(20_000)
    times = []
    for tree in (small, big):
        best = float("inf")
        for _ in range(3):  # the best of three: the machine is shared
            t = time.perf_counter()
            inventory(tree, salt=b"s")
            best = min(best, time.perf_counter() - t)
        times.append(best)
    assert times[1] < 8 * times[0], times


def test_the_walk_stops_at_max_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from egressaudit.http import inventory as inv

    monkeypatch.setattr(inv, "MAX_CONTAINERS", 100)
    cuts: Counter[str] = Counter()
    (row,) = inventory({"a": [{"x": i} for i in range(1000)]}, salt=b"s", cuts=cuts)
    assert row["key_path"] == "a[].x" and row["count"] < 100 and cuts == {"inventory_cut": 1}
    cuts.clear()
    assert inventory({"a": [{"x": i} for i in range(50)]}, salt=b"s", cuts=cuts)[0]["count"] == 50 and not cuts


# -- `egressaudit inventory`: words, narrow terminals, machine-readable formats (issue 15, point 6) ---------------


def _inventory(folder: Path, width: int, category: str | None = "telemetry") -> str:
    import io

    from rich.console import Console

    from egressaudit.http.inventory_report import print_inventory

    buf = io.StringIO()
    print_inventory(folder, Console(file=buf, width=width, color_system=None), category=category)
    return buf.getvalue()


def test_inventory_in_a_narrow_terminal_and_in_words(tmp_path: Path) -> None:
    from tests.test_report import _cells
    from tests.test_report_http import make_http_session

    folder = make_http_session(tmp_path / "s")
    for width in (60, 80):
        out = _inventory(folder, width)
        assert "…" not in out and max(map(len, out.splitlines())) <= width
        assert _cells(out, "telemetry exchanges by destination", 1) == ["log.zoom.us", "o1.ingest.sentry.io"]
        assert "meeting_title" not in out and "device_id" not in out
    out = _inventory(folder, 200)
    assert "meeting title" in out and "device id" in out
    out = _inventory(folder, 200, None)
    assert "content upload" in out and "content_upload" not in out
    assert "identifying fields: 4 of 6 distinct fields in telemetry bodies" in _inventory(folder, 200)
    wide = _inventory(folder, 100_000)
    assert any("o1.ingest.sentry.io" in line and "user.ip_address" in line for line in wide.splitlines())


def test_inventory_formats(tmp_path: Path) -> None:
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from egressaudit.cli import app
    from tests.test_report_http import make_http_session

    folder = make_http_session(tmp_path / "s")
    runner = CliRunner()
    r = runner.invoke(app, ["inventory", str(folder), "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == [
        "vendor",
        "host",
        "category",
        "key_path",
        "value_type",
        "exchanges",
        "occurrences",
        "distinct_values",
        "detectors",
        "content",
    ]
    assert {(x["key_path"], x["detectors"]) for x in rows} == {
        ("device.id", "device_id"), ("user.email", "email"), ("meeting.topic", "meeting_title"), ("user.ip_address", "ipv4"),
    }  # fmt: skip
    r = runner.invoke(app, ["inventory", str(folder), "--format", "csv", "--table", "hosts", "--all"])
    hosts = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["host"], int(x["exchanges"]), int(x["bytes_out"])) for x in hosts] == [("log.zoom.us", 2, 2500), ("o1.ingest.sentry.io", 1, 500)]
    r = runner.invoke(app, ["inventory", str(folder), "--format", "json", "--all", "--category", "any"])
    doc = json.loads(r.stdout)
    assert doc["category"] is None and doc["field_counts"] == {"fields": 7, "identifying": 5, "content": 1}
    assert list(doc["tables"]) == ["hosts", "fields"] and len(doc["tables"]["fields"]) == 7
    assert runner.invoke(app, ["inventory", str(folder), "--format", "csv", "--table", "nope"]).exit_code == 2
