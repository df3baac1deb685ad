"""Units of the HTTP path: query redaction, the crash-safe part store, HTTP signature rules, exchange classification."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egressaudit.classify.http import ExchangeFacts, classify_exchange, looks_like_events
from egressaudit.http.query import redact_query
from egressaudit.session.store import TableAppender, part_files, read_rows
from egressaudit.signatures import SignatureDB, SignatureError, load_file

VENDOR_YAML = """\
vendor: acme
display_name: Acme Meetings
kind: conferencing
default_service: meetings
sources:
  docs: "Acme network requirements (test fixture)"
rules:
  - id: web
    domains: [acme.test]
    category: signaling
    source: docs
  - id: stats
    domains: [acme.test]
    paths: ["^/api/v\\\\d+/stats"]
    methods: [POST]
    category: telemetry
    source: docs
"""


@pytest.fixture
def db(tmp_path: Path) -> SignatureDB:
    p = tmp_path / "acme.yaml"
    p.write_text(VENDOR_YAML)
    return SignatureDB([load_file(p)], version="test")


def facts(**kw: object) -> ExchangeFacts:
    base: dict[str, object] = dict(
        host="www.acme.test", remote_ip="127.0.0.1", port=443, method="POST", path="/", content_type_out=None, body_format="json", body_bytes=100
    )
    base.update(kw)
    return ExchangeFacts(**base)  # type: ignore[arg-type]


# hypothesis imports its patch writer (libcst, which warns on import) after a failure, where warnings are errors
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass


def test_redact_query_keeps_keys_only() -> None:
    assert redact_query("/a?token=abc&x=1") == "/a?token=…&x=…"
    assert redact_query("/a?token=abc", keep=True) == "/a?token=abc"
    assert redact_query("/plain") == "/plain"
    assert redact_query("/a?") == redact_query("/a?&&") == "/a?…"
    assert redact_query("/a?a+b=1&c%2Fd=2&é=3") == "/a?a%20b=…&c%2Fd=…&%C3%A9=…"
    assert redact_query("/a?k1=1&k2=2&k3=3", limit=2) == "/a?k1=…&k2=…&…"


@pytest.mark.parametrize(
    "redacted",
    ["/a?…", "/a?x=…", "/a?x=…&y=…&…", "/a?a%20b=…&c%2Fd=…&%C3%A9=…", "/a?=…", "/a?%E2%80%A6=…", "/a?%5Cudcff=…", "/a?%25=…&%2B=…"],
)
def test_a_redacted_path_is_left_as_it_is(redacted: str) -> None:
    """The marker (``?…``, ``&…``) is not read as a key, and percent-quoted keys are not quoted again."""
    assert redact_query(redacted) == redacted


_QUERY_PIECES = st.lists(
    st.one_of(
        st.sampled_from(["&", "=", "?", "…", "&…", "%", "%2", "%25", "%20", "%C3%A9", "%E2%80%A6", "%ff", "+", "#", ";", "\udcff", "é"]),
        st.text(alphabet="abcxyz019_-.~/", max_size=4),
        st.text(max_size=3),
    ),
    max_size=24,
)


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(base=st.text(alphabet=st.characters(blacklist_characters="?"), max_size=8), pieces=_QUERY_PIECES, limit=st.sampled_from([1, 2, 3, 1000]))
def test_redact_query_is_idempotent(base: str, pieces: list[str], limit: int) -> None:
    path = base + "?" + "".join(pieces)
    once = redact_query(path, limit=limit)
    assert redact_query(once, limit=limit) == once
    assert once.startswith(base + "?") and "&&" not in once


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(path=st.text(max_size=40))
def test_redact_query_is_idempotent_on_any_text(path: str) -> None:
    once = redact_query(path)
    assert redact_query(once) == once


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(keys=st.lists(st.text(max_size=6), min_size=1, max_size=6), secret=st.from_regex(r"S3CR3T[0-9]{4}", fullmatch=True))
def test_redact_query_drops_every_value(keys: list[str], secret: str) -> None:
    from urllib.parse import quote

    path = "/p?" + "&".join(f"{quote(k, safe='', errors='backslashreplace')}={secret}" for k in keys)
    once = redact_query(path)
    assert secret not in once and once.count("=…") == len(keys)


def test_path_rule_beats_host_rule(db: SignatureDB) -> None:
    m = db.match_http("www.acme.test", None, 443, "POST", "/api/v2/stats?x=1")
    assert m is not None and (m.rule_id, m.category) == ("acme/stats", "telemetry")
    m = db.match_http("www.acme.test", None, 443, "GET", "/api/v2/stats")
    assert m is not None and m.rule_id == "acme/web"  # method does not match the path rule
    assert db.match("www.acme.test", None, 443, "tcp").rule_id == "acme/web"  # type: ignore[union-attr]  # packets never see paths


def test_bad_path_regex_names_file_and_rule(tmp_path: Path) -> None:
    p = tmp_path / "acme.yaml"
    p.write_text(VENDOR_YAML.replace("^/api/v\\\\d+/stats", "(unclosed"))
    with pytest.raises(SignatureError, match=r"acme.yaml.*'stats'.*path pattern"):
        load_file(p)


@pytest.mark.parametrize(
    ("kw", "category", "rule"),
    [
        ({"path": "/api/v1/stats"}, "telemetry", "acme/stats"),
        ({"path": "/upload/x", "body_format": "multipart", "multipart_files": 1}, "content_upload", "heuristic/multipart-upload"),
        ({"path": "/x", "method": "PUT", "body_format": "binary:mp4", "body_bytes": 5_000_000}, "content_upload", "heuristic/large-upload"),
        ({"path": "/chat/messages", "body_bytes": 80}, "content_upload", "heuristic/content-path"),
        ({"host": "unknown.example", "path": "/envelope", "body_format": "sentry_envelope"}, "telemetry", "heuristic/sentry_envelope"),
        ({"host": "unknown.example", "path": "/i", "event_shaped": True}, "telemetry", "heuristic/event-batch"),
        ({"host": "unknown.example", "path": "/v1/track"}, "telemetry", "heuristic/telemetry-path"),
        ({"path": "/join", "method": "GET", "body_bytes": 0, "body_format": "empty"}, "signaling", "acme/web"),
        ({"host": "unknown.example", "path": "/app.js", "method": "GET", "body_bytes": 0}, "web_asset", "heuristic/static-asset"),
        ({"host": "unknown.example", "path": "/", "method": "GET", "body_bytes": 0}, "unknown", "none"),
    ],
)
def test_classify_exchange(db: SignatureDB, kw: dict[str, object], category: str, rule: str) -> None:
    v = classify_exchange(facts(**kw), db)
    assert (v.category.value, v.rule) == (category, rule), v.evidence


def test_event_shapes() -> None:
    assert looks_like_events({"batch": [{"event": "a"}], "sentAt": "x"})
    assert looks_like_events([{"event_type": "join", "user_id": "u"}])
    assert not looks_like_events({"user": "x", "password": "y"})
    assert not looks_like_events(["a", "b"])


def _row(i: int) -> dict[str, object]:
    return {
        "session_id": "s", "exchange_id": f"e{i}", "kind": "http", "ts_start": i, "ts_end": i, "direction": "out", "bytes_out": 1,
        "body_bytes_out": 1, "bytes_in": 0, "body_bytes_in": 0, "field_count": 0, "identifier_fields": 0, "party": "unknown",
        "category": "unknown", "data_class": "unknown", "rule": "none", "evidence": "",
    }  # fmt: skip


def test_part_store_survives_a_crash_and_compacts(tmp_path: Path) -> None:
    app = TableAppender(tmp_path, "http", flush_interval=3600)
    app.append([_row(1), _row(2)])
    assert app.flush() == 2
    app.append([_row(3)])  # buffered, not yet flushed: what a crash would lose
    assert read_rows(tmp_path, "http").num_rows == 2
    # a new writer (a restarted proxy) continues the numbering and keeps what is there
    app2 = TableAppender(tmp_path, "http", flush_interval=3600)
    app2.append([_row(4)])
    app2.compact()
    assert not part_files(tmp_path, "http")
    assert [r["exchange_id"] for r in pq.read_table(tmp_path / "http.parquet").to_pylist()] == ["e1", "e2", "e4"]


def test_har_with_bodies_from_damaged_flows(tmp_path: Path) -> None:
    """flows.mitm of a killed proxy (a cut last record) or one that kept nothing; a flow mitmproxy cannot export."""
    import json

    from mitmproxy import io
    from mitmproxy.test import tflow

    from egressaudit.http.har import HarError, export_har

    (tmp_path / "flows.mitm").write_bytes(b"")
    assert export_har(tmp_path, tmp_path / "empty.har", bodies=True) == 0
    with open(tmp_path / "flows.mitm", "wb") as f:
        w = io.FlowWriter(f)
        bad = tflow.tflow(resp=True)
        bad.request.timestamp_start = 1e300  # past what datetime holds
        for fl in (tflow.tflow(resp=True), bad, tflow.tflow(resp=True)):
            w.add(fl)
    data = (tmp_path / "flows.mitm").read_bytes()
    (tmp_path / "flows.mitm").write_bytes(data[:-20])
    assert export_har(tmp_path, tmp_path / "s.har", bodies=True) == 1
    assert json.loads((tmp_path / "s.har").read_text())["log"]["comment"] == "1 flows could not be exported"
    (tmp_path / "flows.mitm").write_bytes(b"garbage")
    with pytest.raises(HarError, match="not a mitmproxy flow file"):
        export_har(tmp_path, tmp_path / "g.har", bodies=True)


@pytest.mark.parametrize(
    ("scheme", "host", "remote_ip", "port", "url"),
    [
        ("https", "zoom.us", "192.0.2.7", 443, "https://zoom.us/p"),
        ("http", "127.0.0.1", "127.0.0.1", 80, "http://127.0.0.1/p"),
        ("http", "127.0.0.1", "127.0.0.1", 18000, "http://127.0.0.1:18000/p"),
        ("wss", "zoom.us", "192.0.2.7", 8443, "wss://zoom.us:8443/p"),
        ("https", None, "2001:db8::7", 8443, "https://[2001:db8::7]:8443/p"),
        ("https", "zoom.us", None, None, "https://zoom.us/p"),
    ],
)
def test_har_urls_keep_a_port_that_is_not_the_schemes_default(
    scheme: str, host: str | None, remote_ip: str | None, port: int | None, url: str
) -> None:
    from egressaudit.http.har import _url

    assert _url({"scheme": scheme, "host": host, "remote_ip": remote_ip, "remote_port": port, "path": "/p"}) == url
