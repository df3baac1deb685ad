"""Which process each flow and HTTP exchange belongs to, from the kernel's socket table (``attributed_by`` "socket-table").

While a session runs, :class:`SocketSampler` reads the socket table (``psutil.net_connections``: every inet
socket with its owner) and remembers, for each socket (owner, transport, local and remote address), when it was
first and last seen, and for each owner (pid and start time, as pids are reused) its name, parent, executable and a
salted hash of its command line.  It polls the kernel's counters (``/proc/net/snmp``, ``/proc/net/sockstat{,6}``,
about 85 µs) every ``poll`` seconds and reads the table:

* at once when a socket opened or closed (TCP connections opened, sockets in use moved), no sooner than
  ``min_gap`` after the previous read;
* every ``interval`` seconds while there is traffic (segments or datagrams moved: one socket closing as another
  opens moves no count of sockets);
* every ``full_every`` seconds otherwise; in between, nothing opened, closed or sent, the sockets of the last read
  are the open ones and only their last-seen times move.

Each new observation is appended to a JSON-lines file at once, and the last-seen times once a second, so a
supervisor killed with SIGKILL leaves what it had seen (:func:`load_observations` reads it back).

Afterwards :func:`attribute_flows` gives each packet flow the process whose socket had the flow's local end
(and its remote end, for a connected socket) while the flow was active, :func:`attribute_http` gives each
HTTP exchange the process at the client's end of its connection to the proxy, and :func:`through_proxy`
passes that process on to the proxy's upstream flows, as the proxy only relays for its client.
:func:`process_tree` and :func:`restrict` keep one program's rows (``--process NAME``).

Missed: a socket that opens and closes before the sample its opening triggers (about ``poll`` plus one sample:
tens of milliseconds), sockets of processes whose file descriptors cannot be read (another user's, without root)
and sockets in another network namespace.  ``stats["unowned"]`` counts sockets seen without an owner (those, and
TCP's TIME_WAIT after a close); ``stats["tcp_opened"]`` (the kernel's count of TCP connections opened while
sampling, by every process) against ``stats["tcp_seen"]`` bounds what was missed.  A socket open while its
process forks belongs to the child too until the child closes it or execs: the owner that held it longest wins.

Cost, measured on the development VM (2 vCPUs, 70 processes, ``python -m timeit``): one
``psutil.net_connections(kind="inet")`` call takes 8.6-10.8 ms, about 7 ms of it the kernel walking its TCP hash
table for ``/proc/net/tcp`` and ``tcp6`` (262,144 buckets there), the rest the scan of every process's file
descriptors.  Reading it every 0.25 s with the polls cost 7 % of one CPU (``time.process_time`` over 6 s, no
triggered samples); with reads triggered no sooner than 0.1 s apart, on that VM whose background opens about
140 TCP connections a second, 9.6 %.  Hence the defaults: the counters polled every 0.04 s (polling them every 0.02 s
alone cost 2.7 % of a core, every 0.04 s 1.3 %), the table read every 0.5 s with traffic and every 2 s without: the
sampler's thread then took 1.8 % of a core on an idle host (schedstat over 10 s).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from egressaudit.schema import arrow_schema, with_attribution
from egressaudit.taxonomy import Attribution

UPDATE_SECONDS = 1.0
"""How often the last-seen times of the sockets seen since the previous update are appended to the file."""
FORMAT = 1
"""Version of the observation file's lines (written in its first line)."""

_TRANSPORTS = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}
_ANY_IP = ("0.0.0.0", "::")
_PROC_KEY = ("pid", "create_time")
_SOCKET_COLUMNS = ["pid", "create_time", "transport", "local_ip", "local_port", "remote_ip", "remote_port", "first_seen", "last_seen"]
_PROCESS_COLUMNS = ["pid", "create_time", "name", "ppid", "exe", "cmdline_hash"]


def cmdline_hash(salt: bytes, cmdline: Iterable[str]) -> str:
    """Hex SHA-256 of ``salt`` + the arguments joined by NUL (UTF-8)."""
    return hashlib.sha256(salt + "\0".join(cmdline).encode("utf-8", "surrogateescape")).hexdigest()


def _ip(text: str) -> str:
    """An address as a capture prints it: ``::ffff:127.0.0.1`` (a dual-stack socket's IPv4 peer) as ``127.0.0.1``."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return text
    return str(a.ipv4_mapped) if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None else str(a)


def _kernel_counters() -> tuple[int, ...]:
    """TCP connections opened (active, passive) and sockets in use, as the kernel counts them: they move when a socket
    opens; then the segments and datagrams sent and received (:data:`TRAFFIC` of them), which move with any traffic."""
    out: list[int] = []
    for name, wanted in (
        ("snmp", ("ActiveOpens", "PassiveOpens", "InSegs", "OutSegs", "InDatagrams", "OutDatagrams")),
        ("sockstat", ("inuse", "alloc")),
        ("sockstat6", ("inuse",)),
    ):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = [line.split() for line in f if line.startswith(("Tcp:", "Udp:", "TCP", "UDP:", "UDP6:"))]
        except OSError:
            continue
        if name == "snmp":  # a line of names, then one of values
            pairs = [(k, v) for names, values in zip(lines[::2], lines[1::2], strict=False) for k, v in zip(names, values, strict=False)]
        else:  # "TCP: inuse 2 orphan 0 tw 0 alloc 2 mem 308"
            pairs = [(f[i], f[i + 1]) for f in lines for i in range(1, len(f) - 1, 2)]
        out += [int(v) for k, v in pairs if k in wanted and v.isdigit()]
    return tuple(out)


TRAFFIC = slice(2, 6)
"""Where :func:`_kernel_counters`'s traffic counters are (the rest say which sockets exist)."""


def _sockets_part(c: tuple[int, ...]) -> tuple[int, ...]:
    return c[: TRAFFIC.start] + c[TRAFFIC.stop :]


def _tcp_opened() -> int | None:
    """TCP connections opened so far (ActiveOpens + PassiveOpens), None when the kernel does not say."""
    c = _kernel_counters()
    return c[0] + c[1] if len(c) >= 2 else None


@dataclass
class Observations:
    """What a sampler saw: one row per socket and owner (``sockets``, with its owner's columns) and per process."""

    sockets: pd.DataFrame
    processes: pd.DataFrame
    interval: float
    problems: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_records(cls, processes: Iterable[dict[str, Any]], sockets: Iterable[dict[str, Any]], interval: float) -> Observations:
        procs = pd.DataFrame(list(processes), columns=_PROCESS_COLUMNS).drop_duplicates(list(_PROC_KEY), keep="last")
        socks = pd.DataFrame(list(sockets), columns=_SOCKET_COLUMNS)
        if len(socks):
            keys = _SOCKET_COLUMNS[:7]
            socks = socks.groupby(keys, dropna=False, as_index=False, sort=False).agg(
                first_seen=("first_seen", "min"), last_seen=("last_seen", "max")
            )
        socks = socks.merge(procs, on=list(_PROC_KEY), how="left")
        return cls(sockets=socks, processes=procs.reset_index(drop=True), interval=interval)


class SocketSampler:
    """Samples the socket table in a daemon thread; :meth:`start` / :meth:`stop` (or ``with``) around the session.

    ``path`` receives the observations as JSON lines (created 0600, appended to); ``salt`` salts the command-line
    hashes; sockets of the ``ignore`` pids (the auditor's own) are not recorded.  :meth:`observations` gives
    what was seen so far.  Nothing raises out of the thread: failures are counted in :attr:`stats`.
    """

    def __init__(
        self,
        path: Path,
        salt: bytes,
        *,
        interval: float = 0.5,
        poll: float = 0.04,
        min_gap: float = 0.1,
        full_every: float = 2.0,
        ignore: Collection[int] = (),
    ) -> None:
        self.path = path
        self.salt = salt
        self.interval = interval
        self.full_every = max(full_every, interval)
        self.poll = min(poll, interval)
        self.min_gap = min_gap
        self.ignore = frozenset(ignore)
        self.stats: dict[str, Any] = {
            "samples": 0,
            "triggered": 0,
            "sample_seconds": 0.0,
            "max_sample_seconds": 0.0,
            "skipped": Counter(),
            "quiet": 0,
            "unowned": 0,
            "tcp_seen": 0,
            "tcp_opened": None,
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._procs: dict[tuple[int, float], dict[str, Any]] = {}
        self._create_times: dict[int, float] = {}
        self._socks: dict[tuple[Any, ...], list[Any]] = {}  # key -> [id, first_seen, last_seen]
        self._unowned: set[tuple[Any, ...]] = set()
        self._dirty: set[int] = set()
        self._last: list[list[Any]] = []  # the sockets the last sample saw (their [id, first_seen, last_seen])
        self._opened_at_start: int | None = None

    def start(self) -> SocketSampler:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write([{"kind": "start", "format": FORMAT, "interval": self.interval, "t": time.time(), "pid": os.getpid()}])
        self._opened_at_start = _tcp_opened()
        self._thread = threading.Thread(target=self._run, name="socket-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd >= 0:
            self._write_seen()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SocketSampler:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def observations(self) -> Observations:
        with self._lock:
            procs = list(self._procs.values())
            socks = [self._socket_record(k, v) for k, v in self._socks.items()]
        return Observations.from_records(procs, socks, self.interval)

    def _run(self) -> None:
        last_sample = last_update = last_seen = -1e9
        counters: tuple[int, ...] = ()
        while True:
            now = time.monotonic()
            try:
                current = _kernel_counters()
                opened = _sockets_part(current) != _sockets_part(counters)
                busy = current[TRAFFIC] != counters[TRAFFIC]
                due = now - last_sample >= (self.interval if busy else self.full_every)
                if due or (opened and now - last_sample >= self.min_gap):
                    self.stats["triggered"] += not due
                    counters, last_sample = current, now
                    last_seen = now
                    self._sample()
                elif not opened and not busy and now - last_seen >= self.interval:
                    # No socket opened or closed and nothing sent since the last sample: the sockets it saw are the ones
                    # open now, seen without reading the table again (which costs about 100 times more).  With traffic,
                    # the table is read every `interval` as well: one socket closing as another opens moves no counter.
                    last_seen = now
                    self._still_open()
                if now - last_update >= UPDATE_SECONDS:
                    last_update = now
                    self._write_seen()
                if self._opened_at_start is not None:
                    self.stats["tcp_opened"] = current[0] + current[1] - self._opened_at_start
            except Exception as e:  # never out of the thread: counted, and the next poll tries again
                self.stats["skipped"][f"error:{type(e).__name__}"] += 1
            if self._stop.wait(self.poll):
                return

    def _sample(self) -> None:
        t0 = time.time()
        try:
            conns = psutil.net_connections(kind="inet")
        except psutil.Error as e:
            self.stats["skipped"][type(e).__name__] += 1
            return
        t1 = time.time()
        new: list[dict[str, Any]] = []
        last: list[list[Any]] = []
        with self._lock:
            for c in conns:
                transport = _TRANSPORTS.get(c.type)
                if transport is None or not c.laddr or c.pid in self.ignore:
                    continue
                local_ip, local_port = _ip(c.laddr.ip), c.laddr.port
                remote_ip, remote_port = (_ip(c.raddr.ip), c.raddr.port) if c.raddr else (None, None)
                if c.pid is None:
                    self._unowned.add((transport, local_ip, local_port, remote_ip, remote_port))
                    continue
                owner = self._owner(c.pid, new)
                if owner is None:
                    continue
                key = (*owner, transport, local_ip, local_port, remote_ip, remote_port)
                seen = self._socks.get(key)
                if seen is None:
                    seen = self._socks[key] = [len(self._socks), t0, t1]
                    new.append({"kind": "socket", "id": seen[0], **self._socket_record(key, seen)})
                    self.stats["tcp_seen"] += transport == "tcp" and remote_ip is not None
                else:
                    seen[2] = t1
                    self._dirty.add(seen[0])
                last.append(seen)
            self._last = last
            self.stats["unowned"] = len(self._unowned - {k[2:] for k in self._socks})
        self._write(new)
        spent = time.time() - t0
        self.stats["samples"] += 1
        self.stats["sample_seconds"] += spent
        self.stats["max_sample_seconds"] = max(self.stats["max_sample_seconds"], spent)

    def _still_open(self) -> None:
        t = time.time()
        with self._lock:
            for seen in self._last:
                seen[2] = t
                self._dirty.add(seen[0])
        self.stats["quiet"] += 1

    def _owner(self, pid: int, new: list[dict[str, Any]]) -> tuple[int, float] | None:
        """(pid, start time) of a socket's owner, recording it and its ancestors the first time; None when it is gone."""
        try:
            created = psutil.Process(pid).create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess) as e:
            self.stats["skipped"][type(e).__name__] += 1
            return None
        if self._create_times.get(pid) != created:
            self._create_times[pid] = created
            self._record_process(pid, new)
        return pid, created

    def _record_process(self, pid: int, new: list[dict[str, Any]]) -> None:
        """A process and every ancestor not recorded yet (``--process NAME`` follows the parents)."""
        while pid > 0:
            try:
                p = psutil.Process(pid)
                with p.oneshot():
                    key = (pid, p.create_time())
                    if key in self._procs:
                        return
                    info = p.as_dict(["name", "ppid", "exe", "cmdline"], ad_value=None)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess) as e:
                self.stats["skipped"][type(e).__name__] += 1
                return
            cmdline = info.pop("cmdline")
            rec = {"pid": pid, "create_time": key[1], **info, "cmdline_hash": None if cmdline is None else cmdline_hash(self.salt, cmdline)}
            self._procs[key] = rec
            self._create_times.setdefault(pid, key[1])
            new.append({"kind": "process", **rec})
            pid = info["ppid"] or 0

    @staticmethod
    def _socket_record(key: tuple[Any, ...], seen: list[Any]) -> dict[str, Any]:
        return dict(zip(_SOCKET_COLUMNS, (*key, seen[1], seen[2]), strict=True))

    def _write_seen(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            by_time: dict[float, list[int]] = {}
            for seen in self._socks.values():
                if seen[0] in self._dirty:
                    by_time.setdefault(seen[2], []).append(seen[0])
            self._dirty.clear()
        self._write([{"kind": "seen", "t": t, "ids": ids} for t, ids in by_time.items()])

    def _write(self, records: list[dict[str, Any]]) -> None:
        """Whole lines in one write: a kill leaves at most the last one cut short."""
        if not records or self._fd < 0:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as e:
            self.stats["skipped"][f"write:{e.errno}"] += 1


def load_observations(path: Path) -> Observations:
    """Read a sampler's file back; lines that do not parse (a last line cut by a kill) are counted in ``problems``."""
    processes: list[dict[str, Any]] = []
    sockets: dict[int, dict[str, Any]] = {}
    interval = 0.5
    problems: Counter[str] = Counter()
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            rec = json.loads(line)
            kind = rec["kind"]
            if kind == "start":
                interval = float(rec["interval"])
            elif kind == "process":
                processes.append({k: rec.get(k) for k in _PROCESS_COLUMNS})
            elif kind == "socket":
                sockets[int(rec["id"])] = {k: rec[k] for k in _SOCKET_COLUMNS}
            elif kind == "seen":
                for n in rec["ids"]:
                    sockets[int(n)]["last_seen"] = float(rec["t"])
            else:
                problems["unknown_kind"] += 1
        except (ValueError, TypeError, KeyError):
            problems["truncated_line" if i == last else "bad_line"] += 1
    obs = Observations.from_records(processes, sockets.values(), interval)
    obs.problems = problems
    return obs


def _seconds(t: pa.Table, name: str) -> pd.Series:
    return pd.Series(t.column(name).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype="float64") / 1e6


def _best(candidates: pd.DataFrame, score: pd.Series) -> pd.DataFrame:
    """One socket per row: the most specific match (remote address, then local address), then the owner that held it
    longest (a socket open while its process forks is the child's too, until the child closes it or execs)."""
    c = candidates.assign(_score=score, _held=candidates["last_seen"] - candidates["first_seen"])
    return c.sort_values(["_row", "_score", "_held"], ascending=[True, False, False]).drop_duplicates("_row")


def _fill(table: str, t: pa.Table, best: pd.DataFrame, *, reset: bool) -> pa.Table:
    """``t`` with the attribution of the rows in ``best`` (by ``_row``: pid, name, cmdline_hash); with ``reset`` the
    other rows' set to "none".  Rows attributed by "netns" are kept as they are."""
    t = with_attribution(table, t)
    cols = {name: pd.Series(t.column(name).to_pylist(), dtype=object) for name in ("pid", "process", "cmdline_hash", "attributed_by")}
    change = cols["attributed_by"] != str(Attribution.netns)
    if reset:
        for name in ("pid", "process", "cmdline_hash"):
            cols[name][change] = None
        cols["attributed_by"][change] = str(Attribution.none)
    best = best[change.to_numpy()[best["_row"].to_numpy()]]
    rows = best["_row"].to_numpy()
    cols["pid"].iloc[rows] = [int(p) for p in best["pid"]]
    cols["process"].iloc[rows] = best["name"].to_numpy()
    cols["cmdline_hash"].iloc[rows] = best["cmdline_hash"].to_numpy()
    cols["attributed_by"].iloc[rows] = str(Attribution.socket_table)
    schema = arrow_schema(table)
    for name, values in cols.items():
        f = schema.field(name)
        t = t.set_column(t.schema.get_field_index(name), f, pa.array(values.where(values.notna(), None), f.type))
    return t.select(schema.names).cast(schema)


def _usable(obs: Observations, pids: Collection[int] | None) -> pd.DataFrame:
    s = obs.sockets
    return s[s["pid"].isin(list(pids))] if pids is not None else s


def _frame(t: pa.Table, names: dict[str, str]) -> pd.DataFrame:
    """The columns of a flows or http table that a match needs, renamed (new name: column), with the row number
    (``_row``) and the start and end in epoch seconds (``t0``, ``t1``)."""
    out: pd.DataFrame = t.select(list(names.values())).rename_columns(list(names)).to_pandas()
    out.insert(0, "_row", range(t.num_rows))
    out["t0"], out["t1"] = _seconds(t, "ts_start"), _seconds(t, "ts_end")
    return out


def attribute_flows(flows: pa.Table, obs: Observations, *, pids: Collection[int] | None = None) -> pa.Table:
    """Each flow's process: a socket of the flow's transport with its local end (any local address when bound to
    0.0.0.0 or ::) and remote end (any, for an unconnected socket), seen while the flow was active (give or take
    one ``obs.interval``).  Only sockets of ``pids`` when given.  Same schema as the input (``flows``)."""
    ends = {"f_local_ip": "local_ip", "f_remote_ip": "remote_ip", "f_remote_port": "remote_port"}
    f = _frame(flows, {"transport": "transport", "local_port": "local_port", **ends})
    s = _usable(obs, pids)
    m = f.merge(s, on=["transport", "local_port"])
    any_local = m["local_ip"].isin(_ANY_IP)
    connected = m["remote_ip"].notna()
    ok = (
        (any_local | (m["local_ip"] == m["f_local_ip"]))
        & (~connected | ((m["remote_ip"] == m["f_remote_ip"]) & (m["remote_port"] == m["f_remote_port"])))
        & (m["t0"] <= m["last_seen"] + obs.interval)
        & (m["t1"] >= m["first_seen"] - obs.interval)
    )
    m = m[ok]
    return _fill("flows", flows, _best(m, 2 * connected[ok].astype(int) + (~any_local[ok]).astype(int)), reset=True)


def attribute_http(http: pa.Table, obs: Observations, *, pids: Collection[int] | None = None) -> pa.Table:
    """Each exchange's process: the one whose connected TCP socket had the client's end of the connection to
    the proxy (``client_ip``, ``client_port``) while the exchange ran.  Same schema as the input (``http``)."""
    h = _frame(http, {"local_port": "client_port", "h_ip": "client_ip"}).dropna(subset=["local_port", "h_ip"])
    s = _usable(obs, pids)
    s = s[(s["transport"] == "tcp") & s["remote_ip"].notna()]
    m = h.astype({"local_port": "int64"}).merge(s.astype({"local_port": "int64"}), on="local_port")
    m = m[(m["local_ip"] == m["h_ip"]) & (m["t0"] <= m["last_seen"] + obs.interval) & (m["t1"] >= m["first_seen"] - obs.interval)]
    return _fill("http", http, _best(m, pd.Series(0, index=m.index)), reset=True)


def through_proxy(flows: pa.Table, http: pa.Table, proxy_pids: Collection[int]) -> pa.Table:
    """``flows`` where the proxy's upstream flows carry the process of the exchanges they carried (by
    ``http.flow_id``, or by ``community_id`` while the flow was active), when those agree on one process."""
    f = flows.select(["flow_id", "community_id", "pid", "ts_start", "ts_end"]).to_pandas()
    f["_row"] = range(len(f))
    f["t0"], f["t1"] = _seconds(flows, "ts_start"), _seconds(flows, "ts_end")
    f = f[f["pid"].isin(list(proxy_pids))]
    h = pd.DataFrame(
        {
            "flow_id": http.column("flow_id").to_pandas(),
            "community_id": http.column("community_id").to_pandas(),
            "pid": http.column("pid").to_pandas(),
            "name": http.column("process").to_pandas(),
            "cmdline_hash": http.column("cmdline_hash").to_pandas(),
            "h0": _seconds(http, "ts_start"),
            "h1": _seconds(http, "ts_end"),
        }
    )
    h = h[h["pid"].notna() & (http.column("attributed_by").to_pandas() == str(Attribution.socket_table)).to_numpy()]
    by_id = f[["_row", "flow_id"]].merge(h.dropna(subset=["flow_id"]).astype({"flow_id": "int64"}), on="flow_id")
    by_cid = f[["_row", "community_id", "t0", "t1"]].dropna(subset=["community_id"]).merge(h.drop(columns="flow_id"), on="community_id")
    by_cid = by_cid[(by_cid["h0"] <= by_cid["t1"]) & (by_cid["h1"] >= by_cid["t0"])]
    pairs = pd.concat([by_id, by_cid])[["_row", "pid", "name", "cmdline_hash"]].drop_duplicates()
    agreed = pairs[~pairs.duplicated("_row", keep=False)]
    return _fill("flows", flows, agreed, reset=False)


def process_tree(obs: Observations, name: str) -> set[int]:
    """Pids of the processes named ``name`` (or whose executable is), and of all their descendants."""
    procs = obs.processes
    exe = procs["exe"].fillna("").map(os.path.basename)
    roots = procs[(procs["name"] == name) | (exe == name)]
    tree = set(zip(roots["pid"], roots["create_time"], strict=True))
    children: dict[int, list[tuple[int, float]]] = {}
    for pid, ppid, created in zip(procs["pid"], procs["ppid"], procs["create_time"], strict=True):
        children.setdefault(ppid, []).append((pid, created))
    todo = list(tree)
    while todo:
        pid, created = todo.pop()
        for child in children.get(pid, ()):
            if child not in tree and child[1] >= created:  # not an older process that had the pid before
                tree.add(child)
                todo.append(child)
    return {int(pid) for pid, _ in tree}


def restrict(table: pa.Table, pids: Collection[int]) -> tuple[pa.Table, int]:
    """The rows of ``table`` owned by one of ``pids``, and how many others were dropped (unattributed ones too)."""
    kept = table.filter(pc.is_in(table.column("pid"), pa.array(sorted(pids), pa.int32())))
    return kept, table.num_rows - kept.num_rows
