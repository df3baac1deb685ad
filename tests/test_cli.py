"""The command line as a user runs it: analyze, report, schema, signatures; bad input; exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapNgReader
from typer.testing import CliRunner

from egressaudit.cli import app
from egressaudit.errors import EXIT_INPUT, EXIT_OUTPUT, EXIT_SIGNATURES
from egressaudit.schema import column_names
from tests import factories

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_analyze_then_report_on_a_small_call(tmp_path: Path) -> None:
    cap = factories.sample_call(tmp_path / "call.pcap")
    out = tmp_path / "audit"
    code, text = run("analyze", str(cap), "--out", str(out))
    assert code == 0, text
    table = pq.read_table(out / "flows.parquet")
    assert table.column_names == column_names("flows")
    rows = table.to_pylist()
    by_remote = {(r["remote_ip"], r["remote_port"]): r for r in rows}
    tel = by_remote[("52.202.62.238", 443)]
    assert (tel["hostname"], tel["hostname_source"], tel["vendor"], tel["category"], tel["data_class"]) == (
        "log.zoom.us",
        "dns",
        "zoom",
        "telemetry",
        "service_generated",
    )
    assert tel["local_ip"] == factories.CLIENT and tel["bytes_out"] > tel["bytes_in"]
    sig = by_remote[("52.202.62.236", 443)]
    assert (sig["hostname"], sig["hostname_source"], sig["vendor"], sig["party"]) == ("zoom.us", "tls_sni", "zoom", "first")
    media = by_remote[("203.0.113.50", 3478)]
    assert (media["category"], media["data_class"], media["packets_out"], media["ssrc_count"]) == ("media", "customer_content", 150, 2)
    assert media["rtp_payload_types"] == [111]
    dns = by_remote[(factories.RESOLVER, 53)]
    assert dns["category"] == "dns" and dns["is_local"]
    assert all(r["community_id"].startswith("1:") for r in rows)

    session = json.loads((out / "session.json").read_text())
    assert session["inputs"][0]["sha256"] and session["inputs"][0]["format"] == "pcap"
    assert session["audited_client"] == "zoom"
    assert session["counts"]["flows"] == len(rows) == 4  # DNS, two TLS connections, RTP
    assert session["signatures"]["version"] and session["schema_version"]

    code, text = run("report", str(out))
    assert code == 0, text
    assert (out / "report.html").is_file()
    assert "service" in text.lower()


def test_pcapng_input_and_local_net_override(tmp_path: Path) -> None:
    cap = factories.sample_call(tmp_path / "call.pcapng", ng=True)
    out = tmp_path / "a"
    code, text = run("analyze", str(cap), "--out", str(out), "--local-net", "192.168.50.0/24", "--quiet")
    assert code == 0, text
    assert text.strip() == ""
    rows = pq.read_table(out / "flows.parquet").to_pylist()
    assert {r["local_ip"] for r in rows} == {factories.CLIENT}
    assert json.loads((out / "session.json").read_text())["inputs"][0]["format"] == "pcapng"


def test_truncated_capture_is_a_counted_skip(tmp_path: Path) -> None:
    cap = factories.sample_call(tmp_path / "call.pcap")
    data = cap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 37])
    out = tmp_path / "a"
    code, text = run("analyze", str(cut), "--out", str(out))
    assert code == 0, text
    session = json.loads((out / "session.json").read_text())
    assert session["counts"]["skipped"]["truncated_record"] == 1
    assert "truncated_record" in text
    code, text = run("report", str(out))
    assert code == 0 and "truncated_record" in text
    assert "truncated_record" in (out / "report.html").read_text()


def test_garbage_packets_inside_a_good_capture_are_counted(tmp_path: Path) -> None:
    good = factories.rtp_stream("203.0.113.50", 50000, 3478, 0.0, seconds=1.0)
    bad = [
        Ether(type=0x0800) / Raw(b"\x45\x00\x00"),
        Ether(type=0x0806) / Raw(b"arp?" * 7),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / Raw(b"\x01"),
    ]
    for i, p in enumerate(bad):
        p.time = 0.5 + i * 0.001
    cap = factories.write_pcap(tmp_path / "mixed.pcap", good + bad)
    out = tmp_path / "a"
    code, text = run("analyze", str(cap), "--out", str(out))
    assert code == 0, text
    session = json.loads((out / "session.json").read_text())
    skipped = session["counts"]["skipped"]
    assert (skipped["malformed_ip"], skipped["not_ip"], skipped["malformed_transport"]) == (1, 1, 1)
    assert session["counts"]["packets"] == len(good) + len(bad)
    rows = pq.read_table(out / "flows.parquet").to_pylist()
    assert sum(r["packets_out"] + r["packets_in"] for r in rows) == len(good)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not a capture at all\n" * 10, "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "not a"),
    ],
)
def test_not_a_capture_is_a_one_line_error(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    code, text = run("analyze", str(bad), "--out", str(tmp_path / "a"))
    assert code == EXIT_INPUT
    assert message in text
    assert "Traceback" not in text
    assert len([line for line in text.splitlines() if line.strip()]) == 1


def test_missing_input_folder_input_and_unwritable_output(tmp_path: Path) -> None:
    code, text = run("analyze", str(tmp_path / "nope.pcap"), "--out", str(tmp_path / "a"))
    assert code == EXIT_INPUT and "no such file" in text
    code, text = run("analyze", str(tmp_path), "--out", str(tmp_path / "a"))
    assert code == EXIT_INPUT and "is a folder" in text
    cap = factories.sample_call(tmp_path / "call.pcap")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, text = run("analyze", str(cap), "--out", str(blocker / "sub"))
    assert code == EXIT_OUTPUT and "cannot create" in text


def test_report_on_a_folder_that_is_not_a_session(tmp_path: Path) -> None:
    code, text = run("report", str(tmp_path))
    assert code == EXIT_INPUT
    assert "Traceback" not in text


def test_bad_local_net_and_unknown_client_are_usage_errors(tmp_path: Path) -> None:
    cap = factories.sample_call(tmp_path / "call.pcap")
    code, text = run("analyze", str(cap), "--out", str(tmp_path / "a"), "--local-net", "banana")
    assert code == 2 and "CIDR" in text
    code, text = run("analyze", str(cap), "--out", str(tmp_path / "a"), "--client", "nosuchvendor")
    assert code == 2 and "unknown vendor" in text


def test_extra_signature_file_and_broken_signature_file(tmp_path: Path) -> None:
    cap = factories.sample_call(tmp_path / "call.pcap")
    mine = tmp_path / "mylab.yaml"
    mine.write_text(
        "vendor: mylab\ndisplay_name: My lab\nkind: conferencing\nrules:\n"
        "  - id: sfu\n    cidrs: [203.0.113.0/24]\n    category: media\n    source: our own lab set-up\n"
    )
    out = tmp_path / "a"
    code, text = run("analyze", str(cap), "--out", str(out), "--signatures", str(mine))
    assert code == 0, text
    rows = pq.read_table(out / "flows.parquet").to_pylist()
    media = next(r for r in rows if r["remote_ip"] == "203.0.113.50")
    assert (media["vendor"], media["rule"]) == ("mylab", "mylab/sfu")

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "vendor: broken\ndisplay_name: B\nkind: conferencing\nrules:\n  - id: r1\n    domains: [x.example]\n    category: nonsense\n    source: s\n"
    )
    code, text = run("analyze", str(cap), "--out", str(tmp_path / "b"), "--signatures", str(broken))
    assert code == EXIT_SIGNATURES
    assert "broken.yaml" in text and "r1" in text
    code, text = run("analyze", str(cap), "--out", str(tmp_path / "c"), "--signatures", str(tmp_path / "gone.yaml"))
    assert code == EXIT_SIGNATURES and "gone.yaml: no such signature file or folder" in text


def test_schema_command_documents_every_column() -> None:
    code, text = run("schema", "flows")
    assert code == 0
    for name in column_names("flows"):
        assert f"`{name}`" in text


def test_signatures_command_lists_vendors() -> None:
    code, text = run("signatures")
    assert code == 0
    for vendor in ("zoom", "microsoft", "google", "cisco", "sentry"):
        assert vendor in text


# the console script installed beside the interpreter running the tests (its venv's bin/), not the first one on PATH,
# which may be a pyenv shim or another venv's: another Python, another install
CONSOLE_SCRIPT = shutil.which("egressaudit", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(CONSOLE_SCRIPT is None, reason="console script not installed (pip install -e .)")
def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT is not None
    cap = factories.sample_call(tmp_path / "call.pcap")
    env = {**os.environ, "COLUMNS": "120"}
    p = subprocess.run([CONSOLE_SCRIPT, "analyze", str(cap), "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "egressaudit", "report", str(tmp_path / "a")], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a" / "report.html").is_file()
    p = subprocess.run([CONSOLE_SCRIPT, "analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert p.returncode == EXIT_INPUT and "Traceback" not in p.stderr


def test_truncated_pcapng_is_a_counted_skip(tmp_path: Path) -> None:
    cap = factories.sample_call(tmp_path / "call.pcapng", ng=True)
    data = cap.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[: len(data) - 37])
    code, text = run("analyze", str(cut), "--out", str(tmp_path / "a"), "--quiet")
    assert code == 0, text
    session = json.loads((tmp_path / "a" / "session.json").read_text())
    assert session["counts"]["skipped"]["truncated_record"] == 1
    with PcapNgReader(str(cap)) as reader:
        total = sum(1 for _ in reader)
    assert session["counts"]["packets"] == total - 1
