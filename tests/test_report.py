"""The report: its numbers from hand-made flows, redaction, figures, the page, empty and invalid session folders."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from egressaudit.report import ReportError, build_report, load_report
from egressaudit.report import figures as F
from egressaudit.report import measures as M
from egressaudit.report import summary as S
from egressaudit.report.terminal import print_report
from egressaudit.schema import FLOWS, column_names
from egressaudit.session import read_rows, write_session_json, write_table

CLIENT = "192.168.50.10"
OTHER_LOCAL = "192.168.50.23"
RESOLVER = "192.168.50.1"
T0 = 1_700_000_000_000_000  # microseconds
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def flow(**kw: Any) -> dict[str, Any]:
    """A complete flows row: a default for every column of the schema, overridden by ``kw``."""
    defaults: dict[str, Any] = {
        "session_id": "t",
        "flow_id": 0,
        "community_id": "1:AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "transport": "tcp",
        "ip_version": 4,
        "local_ip": CLIENT,
        "local_port": 50000,
        "remote_ip": "203.0.113.1",
        "remote_port": 443,
        "is_local": False,
        "bytes_out": 0,
        "bytes_in": 0,
        "packets_out": 1,
        "packets_in": 1,
        "payload_bytes_out": 0,
        "payload_bytes_in": 0,
        "ts_start": T0,
        "ts_end": T0,
        "duration_s": 0.0,
        "fragments": 0,
        "hostname": None,
        "hostname_source": None,
        "alpn": None,
        "app_protocol": "tls",
        "stun_packets": 0,
        "rtp_packets": 0,
        "rtcp_packets": 0,
        "dtls_packets": 0,
        "rtp_payload_types": None,
        "ssrc_count": 0,
        "media_kinds": None,
        "vendor": None,
        "service": None,
        "party": "unknown",
        "category": "unknown",
        "data_class": "unknown",
        "rule": "none",
        "evidence": "",
        "pid": None,
        "process": None,
        "cmdline_hash": None,
        "attributed_by": "none",
    }
    assert set(defaults) == {c.name for c in FLOWS}
    unknown = set(kw) - set(defaults)
    assert not unknown, unknown
    row = {**defaults, **kw}
    row["duration_s"] = (row["ts_end"] - row["ts_start"]) / 1e6
    return row


def sample_rows() -> list[dict[str, Any]]:
    """A small call: 6000 B media, 2000 B zoom telemetry, 1000 B third-party telemetry, 1000 B signalling; local DNS and LAN traffic."""
    s = 1_000_000
    return [
        flow(
            flow_id=1,
            transport="udp",
            remote_ip="203.0.113.50",
            remote_port=8801,
            bytes_out=6000,
            bytes_in=9000,
            ts_start=T0,
            ts_end=T0 + 60 * s,
            app_protocol="zoom_media",
            vendor="zoom",
            service="meetings",
            party="first",
            category="media",
            data_class="customer_content",
            rule="zoom/media",
            media_kinds=["audio", "video"],
            rtp_payload_types=[111],
            ssrc_count=2,
        ),
        flow(
            flow_id=2,
            remote_ip="52.202.62.238",
            hostname="log.zoom.us",
            hostname_source="dns",
            bytes_out=2000,
            bytes_in=300,
            ts_start=T0 + 10 * s,
            ts_end=T0 + 12 * s,
            vendor="zoom",
            service="logging",
            party="first",
            category="telemetry",
            data_class="service_generated",
            rule="zoom/telemetry-log",
        ),
        flow(
            flow_id=3,
            remote_ip="34.120.0.9",
            hostname="o123.ingest.sentry.io",
            hostname_source="tls_sni",
            bytes_out=1000,
            bytes_in=100,
            ts_start=T0 + 30 * s,
            ts_end=T0 + 30 * s,
            vendor="sentry",
            service="errors",
            party="third",
            category="telemetry",
            data_class="service_generated",
            rule="sentry/ingest",
        ),
        flow(
            flow_id=4,
            remote_ip="52.202.62.236",
            hostname="zoom.us",
            hostname_source="tls_sni",
            bytes_out=1000,
            bytes_in=5000,
            ts_start=T0,
            ts_end=T0 + 5 * s,
            vendor="zoom",
            service="web",
            party="first",
            category="signaling",
            data_class="service_operation",
            rule="zoom/web",
        ),
        # local traffic: never egress
        flow(
            flow_id=5,
            transport="udp",
            remote_ip=RESOLVER,
            remote_port=53,
            is_local=True,
            bytes_out=400,
            bytes_in=600,
            app_protocol="dns",
            category="dns",
            data_class="service_operation",
            rule="heuristic/dns",
        ),
        flow(flow_id=6, local_ip=OTHER_LOCAL, remote_ip=CLIENT, is_local=True, bytes_out=50_000, bytes_in=10, category="other"),
    ]


def make_session(folder: Path, rows: list[dict[str, Any]], skipped: dict[str, int] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder, "flows", rows)
    session = {
        "session_id": "t",
        "audited_client": "zoom",
        "audited_client_source": "option",
        "local_nets": ["192.168.50.0/24"],
        "local_hosts": [CLIENT],
        "idle_timeout_s": 120.0,
        "inputs": [{"path": "/home/alice/captures/call.pcap", "sha256": "ab" * 32, "bytes": 123456, "format": "pcap", "packets": 999}],
        "counts": {"packets": 999, "flows": len(rows), "skipped": skipped if skipped is not None else {"truncated_record": 1, "not_ip": 0}},
    }
    write_session_json(folder, session, {"version": "sigdb-test-1", "vendors": 2, "rules": 3})
    return folder


def flows_df(rows: list[dict[str, Any]], tmp_path: Path) -> pd.DataFrame:
    """The rows as the report reads them: through a real flows.parquet."""
    make_session(tmp_path / "df", rows)
    df = read_rows(tmp_path / "df", "flows").to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == column_names("flows")
    return df


def test_headline_numbers_are_exact(tmp_path: Path) -> None:
    h = S.headline(flows_df(sample_rows(), tmp_path))
    assert h.egress_bytes == 10_000  # local flows (400 + 50 000 B) left out
    assert h.ingress_bytes == 14_400
    assert (h.service_generated_bytes, h.service_generated_share) == (3000, 0.3)
    assert (h.customer_content_bytes, h.customer_content_share) == (6000, 0.6)
    assert (h.third_party_bytes, h.third_party_share) == (1000, 0.1)
    assert (h.flows, h.egress_flows, h.local_flows, h.local_bytes_out) == (6, 4, 2, 50_400)
    assert h.vendors == ["sentry", "zoom"] and h.third_party_vendors == ["sentry"]


def test_tables(tmp_path: Path) -> None:
    df = flows_df(sample_rows(), tmp_path)
    dc = S.by_data_class(df).set_index("data_class")
    assert list(dc.index) == ["customer_content", "service_generated", "service_operation", "unknown"]
    assert dc["bytes_out"].to_dict() == {"customer_content": 6000, "service_generated": 3000, "service_operation": 1000, "unknown": 0}
    assert dc.loc["service_generated", "share"] == 0.3 and dc.loc["service_generated", "flows"] == 2

    dcc = S.by_data_class_category(df)
    assert list(zip(dcc["data_class"], dcc["category"], dcc["bytes_out"], strict=True)) == [
        ("customer_content", "media", 6000),
        ("service_generated", "telemetry", 3000),
        ("service_operation", "signaling", 1000),
    ]

    v = S.by_vendor(df)
    assert list(zip(v["vendor"], v["service"], v["party"], v["bytes_out"], strict=True)) == [
        ("zoom", "meetings", "first", 6000),
        ("zoom", "logging", "first", 2000),
        ("sentry", "errors", "third", 1000),
        ("zoom", "web", "first", 1000),
    ]
    p = S.by_party(df).set_index("party")
    assert p["bytes_out"].to_dict() == {"first": 9000, "third": 1000}

    top = S.top_destinations(df, n=3)
    assert list(top["destination"]) == ["203.0.113.50", "log.zoom.us", "o123.ingest.sentry.io"]  # no name: the remote address
    assert list(top["bytes_out"]) == [6000, 2000, 1000] and list(top["flows"]) == [1, 1, 1]
    assert RESOLVER not in set(S.top_destinations(df)["destination"])


def test_over_time_spreads_bytes_over_each_flow(tmp_path: Path) -> None:
    df = flows_df(sample_rows(), tmp_path)
    series, w = S.egress_over_time(df, bin_s=10)
    assert w == 10 and len(series) == 7  # 0..60 s in bins of 10 s
    assert series["customer_content"].sum() == pytest.approx(6000)
    assert series["customer_content"].tolist() == pytest.approx([1000.0] * 6 + [0.0])  # 60 s flow, 100 B/s
    assert series["service_generated"].tolist() == pytest.approx([0, 2000, 0, 1000, 0, 0, 0])
    assert series["service_operation"].tolist() == pytest.approx([1000, 0, 0, 0, 0, 0, 0])
    assert series.index[0] == pd.Timestamp(T0 // 1_000_000 // 10 * 10, unit="s", tz="UTC")
    # a flow across bin edges is split in proportion to its time in each bin
    odd = flows_df([flow(flow_id=1, bytes_out=900, ts_start=T0 + 5_000_000, ts_end=T0 + 14_000_000)], tmp_path / "odd")
    s2, _ = S.egress_over_time(odd, bin_s=10)
    assert s2["unknown"].tolist() == pytest.approx([500, 400])
    assert S.choose_bin_width(60) == 1 and S.choose_bin_width(3600) == 30 and S.choose_bin_width(0) == 1


def test_human_units() -> None:
    assert [M.human_bytes(n) for n in (0, 999, 1000, 1234, 999_960, 1_200_000, 3_400_000_000)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.2 kB",
        "1.0 MB",
        "1.2 MB",
        "3.4 GB",
    ]
    assert M.percent(0.3) == "30.0%" and M.percent(None) == "-"


def test_report_page_figures_and_terminal(tmp_path: Path) -> None:
    folder = make_session(tmp_path / "s", sample_rows())
    buf = io.StringIO()
    path = build_report(folder, console=Console(file=buf, width=160, color_system=None))
    assert path == folder / "report.html"
    html = path.read_text(encoding="utf-8")
    for fig in ("data_class.png", "vendors.png", "over_time.png"):
        data = (folder / "figures" / fig).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert f"figures/{fig}" not in html  # the page holds its figures (self_contained below)
    assert self_contained(html) == 3
    for text in (
        "zoom",
        "sentry",
        "log.zoom.us",
        "truncated_record",
        "sigdb-test-1",
        "ab" * 32,
        "10.2",
        "Service Generated Data",
        "30.0%",
        "10.0 kB",
    ):
        assert text in html, text
    assert "not_ip" not in html  # zero counts are left out
    out = buf.getvalue()
    for text in ("service-generated data", "3.0 kB (30.0% of egress)", "sentry", "log.zoom.us", "truncated_record", "6.0 kB"):
        assert text in out, text


def test_local_addresses_are_redacted_unless_asked(tmp_path: Path) -> None:
    folder = make_session(tmp_path / "s", sample_rows())
    buf = io.StringIO()
    html = build_report(folder, console=Console(file=buf, width=160)).read_text(encoding="utf-8")
    for ip in (CLIENT, OTHER_LOCAL, RESOLVER, "192.168.50.0/24", "/home/alice"):
        assert ip not in html and ip not in buf.getvalue(), ip
    assert "local-1" in html and "203.0.113.50" in html and "call.pcap" in html  # remote addresses stay

    html = build_report(folder, redact=False).read_text(encoding="utf-8")
    assert CLIENT in html and "192.168.50.0/24" in html and "/home/alice/captures/call.pcap" in html
    assert "local-1" not in html


def test_redactor_tokens_are_stable(tmp_path: Path) -> None:
    df = flows_df(sample_rows(), tmp_path)
    red = M.Redactor(df, {"local_hosts": [CLIENT]})
    assert red.tokens == {CLIENT: "local-1", RESOLVER: "local-2", OTHER_LOCAL: "local-3"}
    assert red("203.0.113.50") == "203.0.113.50" and red(None) is None
    assert M.Redactor(df, {"local_hosts": [CLIENT]}, enabled=False)(CLIENT) == CLIENT


def test_empty_session_still_gives_a_report(tmp_path: Path) -> None:
    folder = make_session(tmp_path / "empty", [], skipped={})
    buf = io.StringIO()
    path = build_report(folder, console=Console(file=buf, width=120))
    html = path.read_text(encoding="utf-8")
    assert "no egress" in html and "every packet was analysed" in html
    for fig in ("data_class.png", "vendors.png", "over_time.png"):
        assert (folder / "figures" / fig).read_bytes().startswith(PNG_MAGIC)
    h = S.headline(read_rows(folder, "flows").to_pandas())
    assert (h.egress_bytes, h.service_generated_share, h.flows, h.vendors) == (0, None, 0, [])
    assert "no egress" in buf.getvalue()


def test_only_local_traffic(tmp_path: Path) -> None:
    rows = [r for r in sample_rows() if r["is_local"]]
    folder = make_session(tmp_path / "local", rows)
    html = build_report(folder).read_text(encoding="utf-8")
    assert "no egress" in html and "2 flows" in html
    assert lead(html) == "In this session, nothing left the host for a remote network (2 local flows, not egress)."  # (both at T0)


def test_not_a_session_folder(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as e:
        build_report(tmp_path)
    assert "session.json" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ReportError, match="not a folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "session.json").write_text("{not json")
    with pytest.raises(ReportError) as e:
        build_report(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "session.json").write_text("{}")
    with pytest.raises(ReportError, match="flows.parquet"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


# -- issue 15, point 6: the report a new user finds lacking -------------------------------------------------------


class _Page(HTMLParser):
    """What a page refers to (src, href, url()), its ids, and its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "srcset", "data", "poster", "action"):
                self.refs.append(v or "")
            if k == "id":
                self.ids.append(v or "")
            if k == "style" and v and "url(" in v:
                self.refs += re.findall(r"url\(([^)]*)\)", v)


def self_contained(html: str) -> int:
    """Assert that the page needs nothing beside itself (no file, no network: every reference is a fragment of the
    page), that its ids are unique and that each figure is well-formed SVG with a title; return the figures' count."""
    page = _Page()
    page.feed(html)
    assert not {"img", "link", "script", "iframe", "object", "embed"} & set(page.tags), set(page.tags)
    assert all(r.startswith("#") for r in page.refs), [r for r in page.refs if not r.startswith("#")]
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", html)), "a url() that is not a fragment"
    assert "@import" not in html and "figures/" not in html
    assert len(page.ids) == len(set(page.ids)), sorted(i for i in page.ids if page.ids.count(i) > 1)[:5]
    ids = set(page.ids)
    for ref in page.refs + re.findall(r"url\((#[^)]*)\)", html):
        assert ref[1:] in ids, ref  # every reference resolves in the page
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.get("viewBox") and root.find("{http://www.w3.org/2000/svg}title") is not None
    return len(svgs)


def lead(html: str) -> str:
    """The sentence the page opens with."""
    m = re.search(r'<p class="lead">(.*?)</p>', html, re.S)
    assert m is not None
    from html import unescape

    return unescape(m.group(1))


def terminal(data: S.ReportData, width: int) -> str:
    buf = io.StringIO()
    print_report(data, Console(file=buf, width=width, color_system=None))
    return buf.getvalue()


SNAKE = {*M.DATA_CLASS_ORDER, *M.CATEGORY_ORDER} - {"media", "telemetry", "signaling", "auth", "dns", "other", "unknown"}


def test_words_plurals_durations() -> None:
    assert [M.words(v) for v in ("customer_content", "service_generated", "service_operation", "content_upload", "config_update")] == [
        "customer content",
        "service-generated data",
        "service operation",
        "content upload",
        "config update",
    ]
    assert M.words("meeting_title, device_id") == "meeting title, device id" and M.words(None) == "" and M.words("media") == "media"
    assert [M.plural(n, "flow") for n in (0, 1, 2, 1234)] == ["0 flows", "1 flow", "2 flows", "1,234 flows"]
    assert M.plural(1, "party", "parties") == "1 party" and M.plural(3, "party", "parties") == "3 parties"
    assert [M.duration_adjective(s) for s in (0.4, 42.3, 117, 42 * 60, 9000, 3 * 86400)] == [
        "0.4-second",
        "42-second",
        "2-minute",
        "42-minute",
        "2.5-hour",
        "3-day",
    ]
    assert [M.duration(s) for s in (0.4, 42.3, 423, 7500, 200000)] == ["0.4 s", "42 s", "7 min 3 s", "2 h 5 min", "2 d 7 h"]
    assert [M.short_percent(x) for x in (0, 0.00001, 0.051, 0.19, 0.995, 0.99999, 1)] == [
        "0%",
        "under 0.1%",
        "5.1%",
        "19%",
        "99.5%",
        "over 99.9%",
        "100%",
    ]
    assert M.fields_text(M.FieldCounts(1, 1, 0)) == "1 of 1 distinct field"


SENTENCE = re.compile(
    r"In this (?P<n>\d+)-(?P<unit>second|minute) session, (?P<pct>[\d.]+)% of the (?P<bytes>[\d.]+ [kMGT]?B) that left the host was "
    r"service-generated data, sent to (?P<parties>\d+) parties, "
    r"(?:(?P<third>\d+) of them (?:a )?third part(?:y|ies)|(?P<all>all) of them third parties)\."
)


def test_the_sentence_answers_the_question_from_the_tables(tmp_path: Path) -> None:
    folder = make_session(tmp_path / "s", sample_rows())
    data = load_report(folder)
    assert data.sentence == (
        "In this 60-second session, 30% of the 10.0 kB that left the host was service-generated data, sent to 2 parties, 1 of them a third party."
    )
    m = SENTENCE.fullmatch(data.sentence)
    assert m is not None
    flows = read_rows(folder, "flows").to_pandas()
    span = (flows["ts_end"].max() - flows["ts_start"].min()).total_seconds()
    assert int(m["n"]) == round(span) == round(data.window.seconds if data.window else -1)
    dc = data.by_data_class.set_index("data_class")
    assert float(m["pct"]) == round(100 * dc.loc["service_generated", "share"])
    assert m["bytes"] == M.human_bytes(int(dc["bytes_out"].sum()))
    sg = flows[(flows["data_class"] == "service_generated") & ~flows["is_local"].astype(bool)]
    assert int(m["parties"]) == sg["vendor"].nunique() and int(m["third"]) == sg.loc[sg["party"] == "third", "vendor"].nunique()
    html = build_report(folder).read_text(encoding="utf-8")
    assert lead(html) == data.sentence and html.index('class="lead"') < html.index('id="headline"')
    out = terminal(data, 200)
    assert out.splitlines()[1] == data.sentence  # right below the title


def test_the_sentence_in_other_sessions() -> None:
    def sentence(rows: list[dict[str, Any]], tmp: Path) -> str:
        df = pd.DataFrame(rows) if rows else S.empty_flows()
        if rows:
            df["ts_start"] = pd.to_datetime(df["ts_start"], unit="us", utc=True)
            df["ts_end"] = pd.to_datetime(df["ts_end"], unit="us", utc=True)
        h = S.headline(df)
        return S.lead_sentence(h, None, S.capture_window(df), h.local_flows)

    rows = sample_rows()
    media = [r for r in rows if r["flow_id"] == 1]
    assert sentence(media, Path()) == "In this 60-second session, none of the 6.0 kB that left the host was service-generated data."
    tel = {"category": "telemetry", "data_class": "service_generated", "party": "third"}
    third = [
        flow(flow_id=1, bytes_out=1000, vendor="sentry", hostname="a.sentry.io", ts_end=T0 + 42 * 60 * 1_000_000, **tel),
        flow(flow_id=2, bytes_out=500, vendor="amplitude", hostname="api2.amplitude.com", **tel),
    ]
    assert sentence(third, Path()) == (
        "In this 42-minute session, all of the 1.5 kB that left the host was service-generated data, sent to 2 parties, all of them third parties."
    )
    unknown = [flow(flow_id=1, bytes_out=300, hostname="t.example", category="telemetry", data_class="service_generated"), *media]
    assert sentence(unknown, Path()).endswith("4.8% of the 6.3 kB that left the host was service-generated data, sent to 1 unrecognised destination.")
    one = [flow(flow_id=1, bytes_out=300, vendor="zoom", hostname="log.zoom.us", **{**tel, "party": "first"}), *media]
    assert sentence(one, Path()).endswith("sent to 1 party, the first party.")
    assert sentence([], Path()) == "In this session, nothing left the host: the session holds no flows."


def test_capture_window(tmp_path: Path) -> None:
    folder = make_session(tmp_path / "s", sample_rows())
    data = load_report(folder)
    w = data.window
    assert w is not None and (w.first, w.last, w.of) == (
        pd.Timestamp(T0, unit="us", tz="UTC"),
        pd.Timestamp(T0 + 60_000_000, unit="us", tz="UTC"),
        "packet",
    )
    text = "2023-11-14 22:13:20.0 to 22:14:20.0 UTC (1 min), first to last packet"
    assert w.text() + ", first to last packet" == text
    assert f"Capture window: {text}." in build_report(folder).read_text(encoding="utf-8")
    assert f"capture window: {text}" in terminal(data, 200)
    assert S.capture_window(S.empty_flows()) is None
    assert "Capture window: none (no traffic recorded)." in build_report(make_session(tmp_path / "e", [], skipped={})).read_text(encoding="utf-8")


def test_page_is_one_file_with_sharp_figures(tmp_path: Path) -> None:
    """report.html can be sent alone: the figures are in it, as SVG (sharp at any zoom); the PNG files beside it
    are for other documents, at 200 dpi."""
    rows = sample_rows()
    rows[2] = {**rows[2], "vendor": "<script>alert(1)</script> $x$"}  # (escaped in the SVG; a dollar is not mathtext)
    folder = make_session(tmp_path / "s", rows)
    (folder / "markers.parquet").unlink(missing_ok=True)
    from egressaudit.session.markers import add_marker

    add_marker(folder, "muted", ts=pd.Timestamp(T0 + 20_000_000, unit="us", tz="UTC").to_pydatetime())
    add_marker(folder, "<b>left</b>", ts=pd.Timestamp(T0 + 40_000_000, unit="us", tz="UTC").to_pydatetime())
    html = build_report(folder).read_text(encoding="utf-8")
    assert self_contained(html) == 3
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; $x$" in html and "<b>left" not in html
    png = (folder / "figures" / "over_time.png").read_bytes()
    assert int.from_bytes(png[16:20], "big") >= 8 * 150  # 8 inches wide, at least 150 dpi
    moved = tmp_path / "mail" / "report.html"  # sent on its own: the same page, nothing missing
    moved.parent.mkdir()
    moved.write_text(html, encoding="utf-8")
    assert self_contained(moved.read_text(encoding="utf-8")) == 3


def test_one_colour_per_class_and_category_and_legends_beside_the_data(tmp_path: Path) -> None:
    from egressaudit.taxonomy import DATA_CLASS_OF, Category, DataClass

    assert set(F.DATA_CLASS_COLORS) == {d.value for d in DataClass} and set(F.CATEGORY_COLORS) == {c.value for c in Category}
    assert len(set(F.DATA_CLASS_COLORS.values())) == len(F.DATA_CLASS_COLORS)
    assert len(set(F.CATEGORY_COLORS.values())) == len(F.CATEGORY_COLORS)
    for d in DataClass:  # a class has the colour of one of its categories, and no colour of another class's categories
        assert F.DATA_CLASS_COLORS[d.value] in {F.CATEGORY_COLORS[c.value] for c in Category if DATA_CLASS_OF[c] is d}
        assert F.DATA_CLASS_COLORS[d.value] not in {F.CATEGORY_COLORS[c.value] for c in Category if DATA_CLASS_OF[c] is not d}
    assert not set(F.PARTY_COLORS.values()) & (set(F.DATA_CLASS_COLORS.values()) | set(F.CATEGORY_COLORS.values()))

    from matplotlib.colors import to_hex

    data = load_report(make_session(tmp_path / "s", sample_rows()))
    states = pd.DataFrame({"state": ["talking", "muted"], "from": [data.over_time.index[0]] * 2, "seconds": [20.0, 40.0]})
    drawn = {
        "classes": (F.data_class_figure(data.by_data_class_category), F.CATEGORY_COLORS),
        "vendors": (F.vendor_figure(data.by_vendor_data_class), F.DATA_CLASS_COLORS),
        "time": (F.over_time_figure(data.over_time, data.bin_s, states), F.DATA_CLASS_COLORS),
    }
    for name, (fig, palette) in drawn.items():
        fig.draw_without_rendering()
        (ax,) = fig.axes
        legends = [*fig.legends, *([ax.get_legend()] if ax.get_legend() else [])]
        assert legends, name
        for lg in legends:
            assert not lg.get_window_extent().overlaps(ax.get_window_extent()), f"{name}: a legend over the data"
            for text, handle in zip(lg.get_texts(), lg.legend_handles, strict=True):
                want = {M.words(k): v for k, v in palette.items()}[text.get_text()]
                assert handle is not None and to_hex(handle.get_facecolor()) == want, (name, text.get_text())


def test_plurals(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    make_session(folder, [sample_rows()[2]])  # one flow: sentry telemetry
    from egressaudit.session import write_session_json

    doc = {"session_id": "one", "local_hosts": [CLIENT], "counts": {"packets": 1, "flows": 1, "skipped": {"not_ip": 1}}}
    write_session_json(folder, doc, {"version": "v", "vendors": 1, "rules": 1})
    html = build_report(folder).read_text(encoding="utf-8")
    out = terminal(load_report(folder), 200)
    bad = re.compile(r"(?<![\d.,])1 (flows|hosts|exchanges|fields|vendors|rules|parties|destinations|messages|segments|rows)\b")
    for text in (re.sub(r"<[^>]+>", " ", html), out):
        assert not bad.search(text), bad.search(text)
    assert "(1 vendor, 1 rule)" in html and "1 of 1 flow)" in html and "1 of 1 flow" in out and "sent to 1 party, a third party." in out


def test_class_and_category_names_in_words(tmp_path: Path) -> None:
    rows = [*sample_rows(), flow(flow_id=7, bytes_out=700, vendor="zoom", category="content_upload", data_class="customer_content")]
    folder = make_session(tmp_path / "s", rows)
    html = build_report(folder).read_text(encoding="utf-8")
    cells = {c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)}
    assert {"customer content", "service-generated data", "service operation", "content upload"} <= cells
    assert not cells & SNAKE, cells & SNAKE
    svg_text = set(re.findall(r"<text[^>]*>([^<]*)</text>", html))
    assert "service-generated data" in svg_text and not svg_text & SNAKE
    out = terminal(load_report(folder), 200)
    assert not {w for w in re.findall(r"[a-z]+_[a-z_]+", out)} & SNAKE
    assert "content upload" in out and "service-generated data" in out


def _cells(out: str, title: str, column: int) -> list[str]:
    """The cells of one column of the terminal table that follows ``title``, each row's folded lines joined."""
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(title))
    body = lines[next(n for n in range(i, len(lines)) if lines[n].startswith("┡")) + 1 :]
    rows: list[list[str]] = []
    for line in body:
        if not line.startswith("│"):
            break
        cells = [c.strip() for c in line.strip("│").split("│")]
        if rows and not cells[-1]:  # a continuation: the last column (a number) is empty
            rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return [r[column] for r in rows]


LONG_HOST = "a-rather-long-telemetry-endpoint.eu-west-1.analytics.example.com"
V6 = "2001:db8:ffff:1234:5678:9abc:def0:1234"


def test_terminal_tables_never_cut_names(tmp_path: Path) -> None:
    rows = [
        *sample_rows(),
        flow(flow_id=8, hostname=LONG_HOST, bytes_out=5000, vendor="example", category="telemetry", data_class="service_generated", party="third"),
        flow(flow_id=9, ip_version=6, remote_ip=V6, bytes_out=4000, local_ip="fd00::10"),
    ]
    data = load_report(make_session(tmp_path / "s", rows))
    for width in (60, 80):
        out = terminal(data, width)
        assert "…" not in out and max(map(len, out.splitlines())) <= width
        assert {LONG_HOST, V6} <= set(_cells(out, "top destinations", 0))
    wide = terminal(data, 100_000)
    assert "…" not in wide and any(LONG_HOST in line and "5.0 kB" in line for line in wide.splitlines())


def test_layout_keeps_words_and_numbers_whole() -> None:
    from egressaudit.report.terminal import Col, layout

    cols = [Col("host", "name"), Col("category"), Col("exchanges", "number", 2), Col("sent", "number"), Col("fields", "number", 1)]
    rows = [[LONG_HOST, "content upload", "12", "300.9 kB", "139"]]
    assert layout(200, cols, rows) == ([0, 1, 2, 3, 4], None)  # fits: as wide as it needs
    kept, widths = layout(50, cols, rows)
    assert kept == [0, 1, 2, 3] and widths is not None  # an optional column left out: fields (1 first)
    assert sum(widths) + 3 * len(kept) + 1 <= 50 and widths[1] >= len("content") and widths[3] >= len("300.9 kB")
    kept, widths = layout(40, cols, rows)
    assert kept == [0, 1, 3] and widths is not None  # then exchanges
    assert sum(widths) + 3 * len(kept) + 1 <= 40 and widths[0] >= 12 and widths[2] >= len("300.9 kB")
    kept, widths = layout(20, cols, rows)  # too narrow for anything: everything folds, nothing is cut
    assert widths is not None and sum(widths) + 3 * len(kept) + 1 <= 20 + len(kept)


def test_report_formats(tmp_path: Path) -> None:
    """--format csv: one of the report's tables (--table), stored names and raw numbers; json: all of them with the
    sentence, the window and the headline; both on stdout, redacted as the table is, and nothing written."""
    import csv
    import json

    from typer.testing import CliRunner

    from egressaudit.cli import app

    folder = make_session(tmp_path / "s", sample_rows())
    runner = CliRunner()
    r = runner.invoke(app, ["report", str(folder), "--format", "csv"])
    assert r.exit_code == 0, r.output
    got = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(got[0]) == ["data_class", "category", "flows", "bytes_out", "bytes_in", "share"]
    assert [(g["data_class"], g["category"], int(g["bytes_out"])) for g in got] == [
        ("customer_content", "media", 6000),
        ("service_generated", "telemetry", 3000),
        ("service_operation", "signaling", 1000),
    ]
    assert float(got[1]["share"]) == 0.3
    assert not (folder / "report.html").exists() and not (folder / "figures").exists()

    r = runner.invoke(app, ["report", str(folder), "--format", "csv", "--table", "local_hosts"])
    assert r.exit_code == 0 and CLIENT not in r.stdout and "local-1" in r.stdout
    assert list(csv.DictReader(io.StringIO(r.stdout)))[0].keys() == {"local_ip", "flows", "bytes_out", "bytes_in", "share"}
    r = runner.invoke(app, ["report", str(folder), "--format", "csv", "--table", "local_hosts", "--no-redact"])
    assert r.exit_code == 0 and CLIENT in r.stdout

    r = runner.invoke(app, ["report", str(folder), "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    data = load_report(folder, top=10**9)
    assert doc["sentence"] == data.sentence and doc["capture_window"]["first"] == "2023-11-14T22:13:20+00:00"
    assert doc["capture_window"]["seconds"] == 60.0 and doc["headline"]["egress_bytes"] == 10_000 and doc["http_headline"] is None
    assert doc["headline"]["service_generated_recipients"] == {"parties": 2, "first": 1, "third": 1, "unrecognised": 0}
    assert list(doc["tables"]) == [
        "data_class", "data_class_category", "party", "vendors", "vendor_data_class", "destinations", "local_hosts", "over_time",
        "states", "skipped", "inputs",
    ]  # fmt: skip
    assert [(x["data_class"], x["bytes_out"]) for x in doc["tables"]["data_class_category"]] == [(g["data_class"], int(g["bytes_out"])) for g in got]
    assert doc["tables"]["destinations"][0] == {
        "destination": "203.0.113.50", "vendor": "zoom", "party": "first", "category": "media", "flows": 1, "bytes_out": 6000,
        "bytes_in": 9000, "share": 0.6,
    }  # fmt: skip
    assert sum(x["customer_content"] for x in doc["tables"]["over_time"]) == pytest.approx(6000)
    assert CLIENT not in r.stdout and "/home/alice" not in r.stdout
    r = runner.invoke(app, ["report", str(folder), "--format", "json", "--table", "party"])
    assert list(json.loads(r.stdout)["tables"]) == ["party"]

    r = runner.invoke(app, ["report", str(folder), "--format", "csv", "--table", "nope"])
    assert r.exit_code == 2 and "data_class_category" in r.output and "destinations" in r.output
    r = runner.invoke(app, ["report", str(folder), "--table", "party"])
    assert r.exit_code == 2 and "--format csv or json" in r.output


def test_real_sessions_read_in_80_columns(tmp_path: Path) -> None:
    """The shipped lab call and, when present, Webex's capture: the sentence's numbers are the tables', and at 80
    columns every destination reads in full."""
    import shutil

    import egressaudit as ea
    from tests.ndpi_expected import NDPI

    lab = tmp_path / "lab-call"
    shutil.copytree(Path(__file__).resolve().parents[1] / "captures" / "lab-call", lab)
    sessions = [lab]
    webex = NDPI / "webex.pcap"
    if webex.exists():
        ea.analyze_files([webex], tmp_path / "webex")
        sessions.append(tmp_path / "webex")
    for folder in sessions:
        data = load_report(folder)
        m = SENTENCE.fullmatch(data.sentence)
        assert m is not None, data.sentence
        dc = data.by_data_class.set_index("data_class")
        assert m["bytes"] == M.human_bytes(data.headline.egress_bytes) == M.human_bytes(int(dc["bytes_out"].sum()))
        assert m["pct"] + "%" == M.short_percent(float(dc.loc["service_generated", "share"]))
        f = ea.open_session(folder).flows
        sg = f[(f["data_class"] == "service_generated") & ~f["is_local"].astype(bool)]
        third = sg.loc[sg["party"] == "third", "vendor"].nunique()
        assert (int(m["parties"]), int(m["parties"] if m["all"] else m["third"])) == (sg["vendor"].nunique(), third)
        out = terminal(data, 80)
        assert "…" not in out and max(map(len, out.splitlines())) <= 80
        assert _cells(out, "top destinations", 0) == list(data.top_destinations["destination"])
    assert load_report(lab).sentence == (
        "In this 41-second session, 5.1% of the 1.2 MB that left the host was service-generated data, sent to 3 parties, 2 of them third parties."
    )
    if len(sessions) > 1:
        assert load_report(sessions[1]).sentence.endswith(
            "6.0% of the 77.1 kB that left the host was service-generated data, sent to 3 parties, all of them third parties."
        )


def test_the_command_in_80_columns_and_wide(tmp_path: Path) -> None:
    """`egressaudit report` as a user runs it in an 80-column terminal: nothing cut; --wide: one line per row."""
    import os
    import subprocess
    import sys

    from typer.testing import CliRunner

    from egressaudit.cli import app

    rows = [
        *sample_rows(),
        flow(flow_id=8, hostname=LONG_HOST, bytes_out=5000, vendor="example", category="telemetry", data_class="service_generated"),
    ]
    folder = make_session(tmp_path / "s", rows)
    env = {**os.environ, "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "egressaudit", "report", str(folder)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    *lines, said = r.stdout.splitlines()
    assert said == f"report: {folder / 'report.html'}"  # (a path, never wrapped: it is copied)
    assert "…" not in r.stdout and max(map(len, lines)) <= 80
    assert lines[1].startswith("In this 60-second session, ") and LONG_HOST in _cells(r.stdout, "top destinations", 0)
    assert not any(LONG_HOST in line for line in lines)  # (folded)
    wide = CliRunner().invoke(app, ["report", str(folder), "--wide"])
    assert wide.exit_code == 0 and "…" not in wide.stdout
    assert any(LONG_HOST in line and "5.0 kB" in line for line in wide.stdout.splitlines())
