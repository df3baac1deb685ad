"""Attribution from the socket table: real processes, real sockets on 127.0.0.1, a real sampler.

The clients are small stdlib programs run by the Python interpreter under a name of their own (a symlink:
the kernel names a process after the file it executed), so the process names are known.  Every packet goes
to 127.0.0.1.  The capture test needs root or CAP_NET_RAW and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from egressaudit.audit.attribution import (
    Observations,
    SocketSampler,
    attribute_flows,
    attribute_http,
    cmdline_hash,
    load_observations,
    process_tree,
    restrict,
    through_proxy,
)
from egressaudit.capture.live import capture
from egressaudit.schema import arrow_schema, to_table
from tests.test_live_capture import _wait_capturing, needs_sniffer

SALT = b"test-salt"
REPO = Path(__file__).resolve().parents[1]


# Prints one JSON line per socket it used (kind, local and remote address, when it was opened and closed): a long TCP
# connection held throughout, three of 0.3 s, a connected UDP socket and an unconnected one bound to 0.0.0.0.
def _client_script() -> str:
    return r"""
import json, socket, sys, time
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
def say(kind, local, remote, t0):
    print(json.dumps({"kind": kind, "local": list(local[:2]), "remote": remote, "t0": t0, "t1": time.time()}), flush=True)
t_long = time.time(); long = socket.create_connection(("127.0.0.1", tcp_port)); long_local = long.getsockname()
for i in range(3):  # short-lived connections, 0.3 s each
    t0 = time.time(); s = socket.create_connection(("127.0.0.1", tcp_port)); local = s.getsockname()
    s.sendall(b"short"); time.sleep(0.3); s.close(); say("tcp_short", local, ["127.0.0.1", tcp_port], t0)
t0 = time.time(); u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("127.0.0.1", udp_port))
for i in range(12):
    u.send(b"connected"); time.sleep(0.05)
local = u.getsockname(); u.close(); say("udp_connected", local, ["127.0.0.1", udp_port], t0)
t0 = time.time(); w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); w.bind(("0.0.0.0", 0))
for i in range(12):
    w.sendto(b"unconnected", ("127.0.0.1", udp_port)); time.sleep(0.05)
local = w.getsockname(); w.close(); say("udp_unconnected", local, ["127.0.0.1", udp_port], t0)
long.sendall(b"long"); long.close(); say("tcp_long", long_local, ["127.0.0.1", tcp_port], t_long)
"""


# Connects to the proxy, says its local port, holds the connection a second.
PROXY_CLIENT = r"""
import json, socket, sys, time
t0 = time.time(); s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"); time.sleep(1.0)
print(json.dumps({"local": list(s.getsockname()[:2]), "t0": t0, "t1": time.time()}), flush=True); s.close()
"""

# A relay: accepts one client, connects upstream, relays the client's bytes, says both local ends.
RELAY = r"""
import json, socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
c, peer = srv.accept(); t0 = time.time(); up = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
while (data := c.recv(65536)):
    up.sendall(data)
print(json.dumps({"upstream_local": list(up.getsockname()[:2]), "client": list(peer[:2]), "t0": t0, "t1": time.time()}), flush=True)
up.close(); c.close()
"""

# Runs the command it is given and waits for it: a parent without sockets of its own.
PARENT = r"""
import subprocess, sys
sys.exit(subprocess.run(sys.argv[1:]).returncode)
"""

HOLD = r"""
import json, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(json.dumps({"local": list(s.getsockname()[:2])}), flush=True); time.sleep(float(sys.argv[2])); s.close()
"""

# Opens short connections (0.15 s) one after another, a pause between them.
BLINKS = r"""
import json, socket, sys, time
for i in range(4):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); local = s.getsockname()
    time.sleep(0.15); s.close(); print(json.dumps({"local": list(local[:2])}), flush=True); time.sleep(0.4)
"""


class _Listener:
    """A TCP server reading every connection to its end, and a UDP receiver; both on 127.0.0.1, in threads."""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.tcp_port = int(self.tcp.getsockname()[1])
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp_port = int(self.udp.getsockname()[1])
        self.datagrams = 0
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass

    def _receive(self) -> None:
        while True:
            try:
                self.udp.recv(2048)
            except OSError:
                return
            self.datagrams += 1

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    srv = _Listener()
    yield srv
    srv.close()


@pytest.fixture
def named(tmp_path: Path) -> Any:
    """``named("confclient")``: the Python interpreter under that name (the process name the kernel reports)."""

    def make(name: str) -> str:
        link = tmp_path / "bin" / name
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            link.symlink_to(os.path.realpath(sys.executable))
        return str(link)

    return make


@dataclass
class _Run:
    proc: subprocess.Popen[str]
    argv: list[str]
    lines: list[dict[str, Any]]


_RUNS: list[_Run] = []


def _spawn(argv: list[str]) -> _Run:
    run = _Run(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO), argv, [])
    _RUNS.append(run)
    return run


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Every process a test started ends with it, its pipe closed."""
    yield
    while _RUNS:
        run = _RUNS.pop()
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait(10)
        assert run.proc.stdout is not None
        run.proc.stdout.close()


def _read(run: _Run, n: int) -> list[dict[str, Any]]:
    assert run.proc.stdout is not None
    while len(run.lines) < n:
        line = run.proc.stdout.readline()
        assert line, f"{run.argv[0]} ended after {len(run.lines)} lines"
        run.lines.append(json.loads(line))
    return run.lines


def _us(t: float) -> int:
    return int(t * 1e6)


def _flow(flow_id: int, transport: str, local: list[Any], remote: list[Any], t0: float, t1: float, **extra: Any) -> dict[str, Any]:
    return {
        "session_id": "s", "flow_id": flow_id, "transport": transport, "ip_version": 4,
        "local_ip": local[0], "local_port": local[1], "remote_ip": remote[0], "remote_port": remote[1],
        "is_local": True, "bytes_out": 1, "bytes_in": 1, "packets_out": 1, "packets_in": 1, "payload_bytes_out": 0, "payload_bytes_in": 0,
        "ts_start": _us(t0), "ts_end": _us(t1), "duration_s": t1 - t0, "fragments": 0, "stun_packets": 0, "rtp_packets": 0,
        "rtcp_packets": 0, "dtls_packets": 0, "ssrc_count": 0, "party": "unknown", "category": "unknown", "data_class": "unknown",
        "rule": "test", "evidence": "test", **extra,
    }  # fmt: skip


def _http(n: int, client: list[Any], t0: float, t1: float, **extra: Any) -> dict[str, Any]:
    return {
        "session_id": "s", "exchange_id": f"x{n}", "kind": "http", "ts_start": _us(t0), "ts_end": _us(t1),
        "client_ip": client[0], "client_port": client[1], "direction": "out", "bytes_out": 1, "body_bytes_out": 0, "bytes_in": 0,
        "body_bytes_in": 0, "field_count": 0, "identifier_fields": 0, "party": "unknown", "category": "unknown",
        "data_class": "unknown", "rule": "test", "evidence": "test", **extra,
    }  # fmt: skip


def _by_flow(t: pa.Table) -> dict[int, dict[str, Any]]:
    return {r["flow_id"]: r for r in t.select(["flow_id", "pid", "process", "cmdline_hash", "attributed_by"]).to_pylist()}


def _run_clients(tmp_path: Path, named: Any, listener: _Listener) -> tuple[Observations, _Run]:
    """The client run under the sampler; its socket report read."""
    with SocketSampler(tmp_path / "sockets.jsonl", SALT) as sampler:
        client = _spawn([named("confclient"), "-c", _client_script(), str(listener.tcp_port), str(listener.udp_port)])
        _read(client, 6)
        assert client.proc.wait(10) == 0
    assert sampler.stats["samples"] > 0 and not sampler.stats["skipped"].get("error:Exception")
    return sampler.observations(), client


def _check_client_rows(rows: dict[int, dict[str, Any]], ids: list[int], client: _Run) -> None:
    for i in ids:
        r = rows[i]
        assert (r["pid"], r["process"], r["attributed_by"]) == (client.proc.pid, "confclient", "socket-table"), (i, r)
        assert r["cmdline_hash"] == cmdline_hash(SALT, client.argv)


@pytest.mark.timeout(60)
def test_flows_get_the_client_that_owned_their_sockets(tmp_path: Path, named: Any, listener: _Listener) -> None:
    obs, client = _run_clients(tmp_path, named, listener)
    rows = []
    for i, line in enumerate(client.lines):
        transport = line["kind"].split("_")[0]
        rows.append(_flow(i, transport, line["local"], line["remote"], line["t0"], line["t1"]))
    unconnected = next(line for line in client.lines if line["kind"] == "udp_unconnected")
    short = next(line for line in client.lines if line["kind"] == "tcp_short")
    # the unconnected socket (bound to 0.0.0.0) to another destination: still its
    rows.append(_flow(10, "udp", ["127.0.0.1", unconnected["local"][1]], ["127.0.0.1", 9], unconnected["t0"], unconnected["t1"]))
    # not the client's: its tuple an hour later, a port nobody used, the short connection's port with another remote end, UDP on a TCP port
    rows.append(_flow(20, "tcp", short["local"], short["remote"], short["t0"] + 3600, short["t1"] + 3600))
    rows.append(_flow(21, "tcp", ["127.0.0.1", 9], short["remote"], short["t0"], short["t1"]))
    rows.append(_flow(22, "tcp", short["local"], ["127.0.0.1", 9], short["t0"], short["t1"]))
    rows.append(_flow(23, "udp", short["local"], short["remote"], short["t0"], short["t1"]))
    flows = to_table("flows", rows)

    out = attribute_flows(flows, obs)
    assert out.schema.equals(arrow_schema("flows"), check_metadata=True)
    assert out.num_rows == flows.num_rows and out.column("flow_id").to_pylist() == flows.column("flow_id").to_pylist()
    got = _by_flow(out)
    _check_client_rows(got, [*range(6), 10], client)
    for i in (20, 21, 22, 23):
        assert got[i] == {"flow_id": i, "pid": None, "process": None, "cmdline_hash": None, "attributed_by": "none"}
    # only the pids asked for
    assert {r["attributed_by"] for r in attribute_flows(flows, obs, pids={os.getpid()}).to_pylist()} == {"none"}


@needs_sniffer
@pytest.mark.timeout(90)
def test_captured_flows_on_loopback(tmp_path: Path, named: Any, listener: _Listener) -> None:
    """A real capture of the clients' traffic, analysed by the product, attributed; the test's own connection (its pid ignored) stays "none"."""
    stop = threading.Event()
    errors: list[BaseException] = []
    bpf = f"(tcp port {listener.tcp_port}) or (udp port {listener.udp_port})"

    def run() -> None:
        try:
            capture("lo", tmp_path / "cap", duration=60.0, bpf=bpf, stop=stop)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    _wait_capturing(tmp_path / "cap", lambda: None if t.is_alive() else "exited")
    try:
        with SocketSampler(tmp_path / "sockets.jsonl", SALT, ignore={os.getpid()}) as sampler:
            client = _spawn([named("confclient"), "-c", _client_script(), str(listener.tcp_port), str(listener.udp_port)])
            # opened after the client started: a socket open while a child is forked is the child's too until it execs
            own = socket.create_connection(("127.0.0.1", listener.tcp_port))
            own_port = own.getsockname()[1]
            own.sendall(b"mine")
            _read(client, 6)
            assert client.proc.wait(10) == 0
            own.close()
            time.sleep(0.3)
    finally:
        stop.set()
        t.join(20)
    assert not errors, errors
    flows = analyze([tmp_path / "cap" / "capture.pcapng"], AnalyzeOptions()).table
    out = attribute_flows(flows, sampler.observations())
    rows = out.to_pylist()
    ports = {line["local"][1] for line in client.lines}
    assert {r["local_port"] for r in rows} == ports | {own_port}  # loopback: the connecting end is the local one
    for r in rows:
        if r["local_port"] == own_port:
            assert (r["pid"], r["attributed_by"]) == (None, "none")
        else:
            assert (r["pid"], r["process"], r["attributed_by"]) == (client.proc.pid, "confclient", "socket-table"), r
            assert r["cmdline_hash"] == cmdline_hash(SALT, client.argv)


@pytest.mark.timeout(60)
def test_exchanges_and_the_proxys_upstream_flows_get_the_client(tmp_path: Path, named: Any, listener: _Listener) -> None:
    with SocketSampler(tmp_path / "sockets.jsonl", SALT) as sampler:
        relay = _spawn([named("fakeproxy"), "-c", RELAY, str(listener.tcp_port)])
        assert relay.proc.stdout is not None
        proxy_port = int(relay.proc.stdout.readline())
        client = _spawn([named("confclient"), "-c", PROXY_CLIENT, str(proxy_port)])
        (c,) = _read(client, 1)
        (r,) = _read(relay, 1)
        assert client.proc.wait(10) == 0 and relay.proc.wait(10) == 0
    obs = sampler.observations()
    assert r["client"] == c["local"]
    flows = to_table(
        "flows",
        [
            _flow(7, "tcp", r["upstream_local"], ["127.0.0.1", listener.tcp_port], r["t0"], r["t1"], community_id="1:upstream"),
            _flow(8, "tcp", c["local"], ["127.0.0.1", proxy_port], c["t0"], c["t1"], community_id="1:client"),
        ],
    )
    http = to_table(
        "http",
        [
            _http(
                1,
                c["local"],
                c["t0"] + 0.1,
                c["t0"] + 0.2,
                community_id="1:upstream",
                local_ip=r["upstream_local"][0],
                local_port=r["upstream_local"][1],
            ),
            _http(2, ["127.0.0.1", 9], c["t0"] + 0.1, c["t0"] + 0.2),  # a client port nobody used
        ],
    )
    flows = attribute_flows(flows, obs)
    got = _by_flow(flows)
    assert (got[7]["pid"], got[7]["process"]) == (relay.proc.pid, "fakeproxy")
    assert (got[8]["pid"], got[8]["process"]) == (client.proc.pid, "confclient")

    http = attribute_http(http, obs)
    assert http.schema.equals(arrow_schema("http"), check_metadata=True)
    h = http.select(["pid", "process", "cmdline_hash", "attributed_by"]).to_pylist()
    assert h[0] == {"pid": client.proc.pid, "process": "confclient", "cmdline_hash": cmdline_hash(SALT, client.argv), "attributed_by": "socket-table"}
    assert h[1] == {"pid": None, "process": None, "cmdline_hash": None, "attributed_by": "none"}

    for carried in (http, http.set_column(http.schema.get_field_index("flow_id"), "flow_id", pa.array([7, None], pa.int64()))):
        if carried is not http:  # joined by flow_id alone
            carried = carried.set_column(carried.schema.get_field_index("community_id"), "community_id", pa.array([None, None], pa.string()))
        relayed = _by_flow(through_proxy(flows, carried, {relay.proc.pid}))
        assert relayed[7] == {**got[8], "flow_id": 7}
        assert relayed[8] == got[8]
    # another proxy pid: nothing passed on
    assert _by_flow(through_proxy(flows, http, {1}))[7] == got[7]


@pytest.mark.timeout(60)
def test_process_tree_follows_the_parent(tmp_path: Path, named: Any, listener: _Listener) -> None:
    started = time.time()
    with SocketSampler(tmp_path / "sockets.jsonl", SALT) as sampler:
        parent = _spawn(
            [named("confparent"), "-c", PARENT, named("confmiddle"), "-c", PARENT, named("confclient"), "-c", HOLD, str(listener.tcp_port), "1.0"]
        )
        other = _spawn([named("confclient"), "-c", HOLD, str(listener.tcp_port), "1.0"])
        (child_line,) = _read(parent, 1)
        (other_line,) = _read(other, 1)
        assert parent.proc.wait(10) == 0 and other.proc.wait(10) == 0
    ended = time.time()
    obs = sampler.observations()
    procs = obs.processes
    (middle,) = procs.loc[procs["ppid"] == parent.proc.pid, "pid"]
    child = [int(p) for p in procs.loc[procs["ppid"] == middle, "pid"]]
    assert len(child) == 1 and procs.loc[procs["pid"] == middle, "name"].tolist() == ["confmiddle"]
    assert process_tree(obs, "confparent") == {parent.proc.pid, middle, child[0]}
    assert process_tree(obs, "confmiddle") == {middle, child[0]}
    assert process_tree(obs, "confclient") == {child[0], other.proc.pid}
    assert process_tree(obs, "no-such-program") == set()

    flows = attribute_flows(
        to_table(
            "flows",
            [
                _flow(1, "tcp", child_line["local"], ["127.0.0.1", listener.tcp_port], started, ended),
                _flow(2, "tcp", other_line["local"], ["127.0.0.1", listener.tcp_port], started, ended),
                _flow(3, "tcp", ["127.0.0.1", 9], ["127.0.0.1", listener.tcp_port], started, ended),
            ],
        ),
        obs,
    )
    assert _by_flow(flows)[1]["pid"] == child[0]
    kept, dropped = restrict(flows, process_tree(obs, "confparent"))
    assert kept.column("flow_id").to_pylist() == [1] and dropped == 2
    assert kept.schema.equals(flows.schema, check_metadata=True)


@pytest.mark.timeout(60)
def test_a_polled_change_samples_at_once(tmp_path: Path, listener: _Listener) -> None:
    """With samples 30 s apart, connections of 0.15 s are seen only because opening them triggers a sample."""
    with SocketSampler(tmp_path / "sockets.jsonl", SALT, interval=30.0) as sampler:
        time.sleep(0.2)
        blinks = _spawn([sys.executable, "-c", BLINKS, str(listener.tcp_port)])
        lines = _read(blinks, 4)
        assert blinks.proc.wait(10) == 0
    seen = set(sampler.observations().sockets.query("pid == @blinks.proc.pid")["local_port"])
    assert {line["local"][1] for line in lines} <= seen
    assert sampler.stats["triggered"] >= 4


SAMPLER_CHILD = r"""
import socket, sys, time
from pathlib import Path
from egressaudit.audit.attribution import SocketSampler
SocketSampler(Path(sys.argv[1]), b"k", interval=0.1).start()
c = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
print(c.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_a_killed_sampler_leaves_what_it_saw(tmp_path: Path, listener: _Listener) -> None:
    path = tmp_path / "sockets.jsonl"
    child = _spawn([sys.executable, "-c", SAMPLER_CHILD, str(path), str(listener.tcp_port)])
    assert child.proc.stdout is not None
    port = int(child.proc.stdout.readline())
    time.sleep(2.5)  # past two updates of the last-seen times
    killed_at = time.time()
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10)
    assert path.stat().st_mode & 0o777 == 0o600
    obs = load_observations(path)
    mine = obs.sockets[(obs.sockets["pid"] == child.proc.pid) & (obs.sockets["local_port"] == port)]
    assert len(mine) == 1 and mine["name"].iloc[0].startswith("python")
    assert mine["last_seen"].iloc[0] - mine["first_seen"].iloc[0] >= 1.0
    assert killed_at - mine["last_seen"].iloc[0] < 1.5
    assert obs.interval == 0.1


@pytest.mark.timeout(60)
def test_a_cut_last_line_is_counted_and_skipped(tmp_path: Path, listener: _Listener) -> None:
    path = tmp_path / "sockets.jsonl"
    with SocketSampler(path, SALT):
        c = socket.create_connection(("127.0.0.1", listener.tcp_port))
        time.sleep(0.6)
        c.close()
    whole = load_observations(path)
    assert whole.problems == {} and os.getpid() in set(whole.sockets["pid"])
    lines = path.read_bytes().splitlines(keepends=True)
    socket_line = next(line for line in lines if b'"kind":"socket"' in line)
    path.write_bytes(b"".join([lines[0], b"{not json\n", *lines[1:], socket_line[: len(socket_line) // 2]]))
    cut = load_observations(path)
    assert cut.problems == {"bad_line": 1, "truncated_line": 1}
    assert cut.sockets.equals(whole.sockets) and cut.processes.equals(whole.processes)


@pytest.mark.timeout(60)
def test_100k_flows_against_10k_sockets_in_seconds() -> None:
    n_flows, n_socks, t = 100_000, 10_000, 1.8e9
    socks = [
        {"pid": 100 + i % 50, "create_time": 1.0, "transport": "tcp" if i % 3 else "udp", "local_ip": "10.0.0.1", "local_port": 10_000 + i,
         "remote_ip": None if i % 3 == 0 else "192.0.2.1", "remote_port": None if i % 3 == 0 else 443, "first_seen": t, "last_seen": t + 60}
        for i in range(n_socks)
    ]  # fmt: skip
    procs = [{"pid": 100 + i, "create_time": 1.0, "name": f"p{i}", "ppid": 1, "exe": None, "cmdline_hash": "h"} for i in range(50)]
    obs = Observations.from_records(procs, socks, 0.25)
    cols: dict[str, list[Any]] = {
        "session_id": ["s"] * n_flows, "flow_id": list(range(n_flows)), "ip_version": [4] * n_flows,
        "transport": ["tcp" if (i % n_socks) % 3 else "udp" for i in range(n_flows)], "local_ip": ["10.0.0.1"] * n_flows,
        "local_port": [10_000 + (i * 7) % (n_socks + 500) for i in range(n_flows)], "remote_ip": ["192.0.2.1"] * n_flows,
        "remote_port": [443] * n_flows, "ts_start": [_us(t + 10)] * n_flows, "ts_end": [_us(t + 20)] * n_flows,
    }  # fmt: skip
    for c in arrow_schema("flows"):
        if c.name not in cols and not c.nullable:
            cols[c.name] = [
                0 if pa.types.is_integer(c.type) else 0.0 if pa.types.is_floating(c.type) else False if pa.types.is_boolean(c.type) else "x"
            ] * n_flows
    flows = to_table("flows", cols)
    start = time.perf_counter()
    out = attribute_flows(flows, obs)
    took = time.perf_counter() - start
    by = out.column("attributed_by").to_pylist()
    ports, transports = cols["local_port"], cols["transport"]
    expected = [
        "socket-table" if p < 10_000 + n_socks and ("tcp" if (p - 10_000) % 3 else "udp") == tr else "none"
        for p, tr in zip(ports, transports, strict=True)
    ]
    assert by == expected
    assert took < 3.0, took
