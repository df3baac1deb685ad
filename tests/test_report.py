"""The report: its numbers from hand-made flows, redaction, figures, the page, empty and invalid session folders."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from egressaudit.report import ReportError, build_report
from egressaudit.report import measures as M
from egressaudit.report import summary as S
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
        assert f'src="figures/{fig}"' in html
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
    for text in ("service generated data", "3.0 kB (30.0% of egress)", "sentry", "log.zoom.us", "truncated_record", "6.0 kB"):
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


# -- issue 15, point 6: how the report says things ------------------------------------------------------------------


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
