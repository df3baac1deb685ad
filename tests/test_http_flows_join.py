"""http.parquet joins flows.parquet on ``community_id``: a real mitmdump, real curl, a real packet capture of loopback.

The proxy records each exchange with the Community ID of the TCP connection that carried it out of the host (its
own upstream connection, ``local_*`` to ``remote_*``); the capture of that connection, analysed by the packet path,
gives the flow the same ID.  Everything goes to 127.0.0.1 (tests/support/redirect_addon.py sends every upstream
connection to a local sink).  Needs root or CAP_NET_RAW for the capture, and curl.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.capture.live import CAPTURE_FILE, LiveStats, capture
from tests.support.proxy import audit_proxy
from tests.support.sink import Sink
from tests.test_live_capture import needs_sniffer

CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl not installed")
@needs_sniffer
def test_http_rows_join_the_flows_of_the_proxys_upstream_connections(tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    out = tmp_path / "http-session"
    pcap_dir = tmp_path / "capture"
    stop = threading.Event()
    result: dict[str, LiveStats] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:  # only the proxy's upstream side: the sink's port
            result["stats"] = capture("lo", pcap_dir, duration=120.0, bpf=f"tcp and port {sink.port}", stop=stop)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not (pcap_dir / CAPTURE_FILE).exists():
            assert t.is_alive() and not errors, errors
            assert time.monotonic() < deadline, "the capture did not start"
            time.sleep(0.05)
        proxy = audit_proxy(tmp_path, sink.port, out, "egressaudit_keep_bodies=true")  # (flows.mitm: for analyze below)
        try:
            for i in range(2):  # two curls: two client connections, so two upstream connections
                r = subprocess.run(
                    [CURL, "-sS", "--fail", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "/dev/null",
                     "-H", "content-type: application/json", "--data", json.dumps({"n": i, "email": "erin@example.org"}),
                     "https://api.segment.io/v1/batch"],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert r.returncode == 0, r.stderr
        finally:
            assert proxy.stop() == 0, proxy.logfile.read_text()  # (closes its upstream connections: the FINs are captured)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(30)
        sink.close()
    assert not errors, errors
    assert result["stats"].kernel_drops == 0

    rows = pq.read_table(out / "http.parquet").to_pylist()
    assert len(rows) == 2 and all(r["host"] == "api.segment.io" for r in rows)
    for r in rows:
        assert (r["local_ip"], r["remote_ip"], r["remote_port"]) == ("127.0.0.1", "127.0.0.1", sink.port)
        assert r["local_port"] not in (None, sink.port) and r["community_id"] and r["community_id"].startswith("1:")
        assert r["client_port"] != r["local_port"]  # the client's connection to the proxy is another connection
        assert r["ts_start"] <= r["ts_end"]
    assert len({r["community_id"] for r in rows}) == 2

    flows = [f for f in analyze([pcap_dir / CAPTURE_FILE], AnalyzeOptions()).rows if f["transport"] == "tcp"]
    assert len(flows) == 2, flows
    by_id = {f["community_id"]: f for f in flows}
    assert set(by_id) == {r["community_id"] for r in rows}  # the two tables join exactly, row for flow
    for r in rows:
        f = by_id[r["community_id"]]
        assert {(f["local_ip"], f["local_port"]), (f["remote_ip"], f["remote_port"])} == {
            (r["local_ip"], r["local_port"]),
            (r["remote_ip"], r["remote_port"]),
        }
        assert f["bytes_out"] + f["bytes_in"] > r["bytes_out"]  # TLS and TCP around the decrypted request

    # offline, as a user with the two files runs it: analyze joins each exchange to the flow that carried it
    from egressaudit.audit.files import analyze_files

    both = analyze_files([pcap_dir / CAPTURE_FILE, out / "flows.mitm"], tmp_path / "offline")
    offline = pq.read_table(both.out / "http.parquet").to_pylist()
    flow_ids = {f["community_id"]: f["flow_id"] for f in pq.read_table(both.out / "flows.parquet").to_pylist()}
    assert len(offline) == 2 and all(r["flow_id"] is not None and r["flow_id"] == flow_ids[r["community_id"]] for r in offline), offline
