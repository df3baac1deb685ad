"""The comparison's heavy part, run by an engine over a dataset (:mod:`egressaudit.dataset`): DuckDB or Dask.

What goes through the engine is small and declared once, as data: a few :class:`Reduction` s, each "these rows of
this table, grouped by these columns: sums, a row count, the first and last time" (:data:`REDUCTIONS`).  Each engine
interprets the same declarations: DuckDB as one SQL query per reduction over the dataset's files (:func:`sql`), Dask
as a pandas function applied to every partition and a second group-by that combines the partial results
(:func:`partial`).  Only sums, counts, minima and maxima of integers are computed, so the two agree exactly (a test
holds them to it).  The reduced tables have a row per session and destination, host, field or time, a few thousand
rows where the tables had millions; :mod:`egressaudit.report.compare` makes the measures from them in pandas.

The split by call state and the telemetry over time need the report's own code
(:func:`egressaudit.report.states.egress_by_state`, :func:`egressaudit.report.summary.egress_over_time`: media placed
in time with the streams table, a flow's bytes spread over its duration), which works on one session's rows.  That
part (:func:`session_pass`) runs once per session: with DuckDB in this process, reading the session's rows through
DuckDB; with Dask as one task per session on the cluster's workers, reading them with pyarrow.

Narwhals (one API over DuckDB and Dask) was tried for the reductions: its Dask backend warns that it is moving to a
separate package, and reads list columns only when they are Arrow-backed, so the declarations and their two small
interpreters are kept here instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from egressaudit.report.measures import detector_list, epoch_seconds

if TYPE_CHECKING:
    from egressaudit.dataset import Dataset

Engine = Literal["duckdb", "dask"]
ENGINES: tuple[str, ...] = ("duckdb", "dask")

#: Stands for a null group key inside Dask (whose group-bys would drop null keys); never in the results.
_NULL = "\x00null"


@dataclass(frozen=True)
class Where:
    """A row filter: ``column`` equal to ``value`` (``eq``), false (``false``), or a list with an element (``nonempty``)."""

    column: str
    op: Literal["eq", "false", "nonempty"]
    value: str | None = None

    def sql(self) -> str:
        c = f'"{self.column}"'
        if self.op == "eq":
            return f"{c} = '{self.value}'"
        if self.op == "false":
            return f"NOT {c}"
        return f"len({c}) > 0"

    def mask(self, df: pd.DataFrame) -> pd.Series:
        s = df[self.column]
        if self.op == "eq":
            return (s.astype(object) == self.value).fillna(False).astype(bool)
        if self.op == "false":
            return ~s.fillna(True).astype(bool)
        return s.map(lambda v: len(detector_list(v)) > 0).astype(bool)


@dataclass(frozen=True)
class Reduction:
    """Rows of ``table`` (``where``), grouped by ``keys``: the sum of each of ``sums``, the number of rows (``count``),
    and the earliest / latest of timestamp columns as microseconds since the epoch (``first`` / ``last``: pairs of
    result column and table column).  ``explode``: (list column, element column) makes one row per element first,
    empty and null elements left out."""

    name: str
    table: str
    keys: tuple[str, ...]
    count: str
    sums: tuple[str, ...] = ()
    first: tuple[tuple[str, str], ...] = ()
    last: tuple[tuple[str, str], ...] = ()
    where: tuple[Where, ...] = ()
    explode: tuple[str, str] | None = None

    @property
    def columns(self) -> list[str]:
        """The table's columns this reduction reads."""
        names = [k for k in self.keys if not self.explode or k != self.explode[1]]
        names += [*self.sums, *(c for _, c in self.first), *(c for _, c in self.last), *(w.column for w in self.where)]
        if self.explode:
            names.append(self.explode[0])
        return list(dict.fromkeys(names))

    @property
    def values(self) -> list[str]:
        return [*self.sums, self.count, *(n for n, _ in self.first), *(n for n, _ in self.last)]


EGRESS_KEYS = ("session_id", "remote_ip", "hostname", "vendor", "party", "category", "data_class")
REQUEST_KEYS = ("session_id", "host", "remote_ip", "vendor", "party", "category", "data_class")

REDUCTIONS: tuple[Reduction, ...] = (
    # what left the host, per session and destination (address, host name, vendor) and kind
    Reduction("egress", "flows", EGRESS_KEYS, "flows", sums=("bytes_out",), where=(Where("is_local", "false"),)),
    # requests sent (HTTP exchanges, WebSocket messages from the client), per session, host and kind
    Reduction("requests", "http", REQUEST_KEYS, "requests", sums=("bytes_out",), where=(Where("direction", "eq", "out"),)),
    # what the telemetry's bodies held that identifies someone, per session and field
    Reduction(
        "identifiers", "fields", ("session_id", "vendor", "host", "key_path", "detector"), "rows",
        where=(Where("category", "eq", "telemetry"), Where("detectors", "nonempty")), explode=("detectors", "detector"),
    ),  # fmt: skip
    # when each session began and ended, by each table
    Reduction("flow_span", "flows", ("session_id",), "flows", first=(("first_us", "ts_start"),), last=(("last_us", "ts_end"),)),
    Reduction("http_span", "http", ("session_id",), "rows", first=(("first_us", "ts_start"),), last=(("last_us", "ts_end"),)),
    Reduction("marker_span", "markers", ("session_id",), "markers", first=(("first_us", "ts"),), last=(("last_us", "ts"),)),
)


def empty(r: Reduction) -> pd.DataFrame:
    """A reduction's result with no rows (its columns and dtypes)."""
    return pd.DataFrame({**{k: pd.Series([], dtype=object) for k in r.keys}, **{v: pd.Series([], dtype="int64") for v in r.values}})


def _null(v: Any) -> bool:
    return v is None or v is pd.NA or v == _NULL or (isinstance(v, float) and bool(np.isnan(v)))


def canonical(r: Reduction, df: pd.DataFrame) -> pd.DataFrame:
    """A reduction's result as both engines give it: keys as Python strings with None for null, values int64, rows in
    key order (nulls first), a fresh index."""
    out = pd.DataFrame(index=range(len(df)))
    for k in r.keys:
        col = df[k].astype(object).to_numpy()
        out[k] = pd.Series([None if _null(v) else str(v) for v in col], dtype=object)
    for v in r.values:
        out[v] = pd.to_numeric(df[v].to_numpy()).astype("int64")
    if len(out):
        out = out.sort_values(list(r.keys), key=lambda s: s.map(lambda x: (x is not None, x or "")), kind="stable").reset_index(drop=True)
    return out


# -- DuckDB ------------------------------------------------------------------------------------------------------


def sql(r: Reduction) -> str:
    """The reduction as one DuckDB query over ``read_parquet($files)``."""
    source = "read_parquet($files)"
    where = [w.sql() for w in r.where]
    if r.explode:
        lst, elem = r.explode
        cols = ", ".join(f'"{c}"' for c in r.columns if c != lst)
        inner_where = f" WHERE {' AND '.join(where)}" if where else ""
        source = f'(SELECT {cols}, unnest("{lst}") AS "{elem}" FROM {source}{inner_where})'
        where = [f'"{elem}" IS NOT NULL', f"\"{elem}\" <> ''"]
    keys = ", ".join(f'"{k}"' for k in r.keys)
    aggs = [f'CAST(sum("{c}") AS BIGINT) AS "{c}"' for c in r.sums] + [f'CAST(count(*) AS BIGINT) AS "{r.count}"']
    aggs += [f'epoch_us(min("{c}")) AS "{n}"' for n, c in r.first] + [f'epoch_us(max("{c}")) AS "{n}"' for n, c in r.last]
    where_sql = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {keys}, {', '.join(aggs)} FROM {source}{where_sql} GROUP BY {keys}"


def _connect(threads: int | None = None) -> Any:
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": threads} if threads else {})
    with contextlib.suppress(duckdb.Error):  # (in a Jupyter kernel without ipywidgets, DuckDB refuses to touch the setting at all)
        con.execute("SET enable_progress_bar = false")
    return con


def run_duckdb(ds: Dataset, reductions: Sequence[Reduction] = REDUCTIONS, threads: int | None = None) -> dict[str, pd.DataFrame]:
    out: dict[str, pd.DataFrame] = {}
    con = _connect(threads)
    try:
        for r in reductions:
            files = ds.files(r.table)
            if not files:
                out[r.name] = empty(r)
                continue
            df = con.sql(sql(r), params={"files": files}).to_arrow_table().to_pandas()
            out[r.name] = canonical(r, df)
    finally:
        con.close()
    return out


# -- Dask --------------------------------------------------------------------------------------------------------


def _compute(*lazy: Any) -> tuple[Any, ...]:
    """``dask.compute`` (typed): on the active ``distributed`` client when there is one, else Dask's default scheduler."""
    from dask.base import compute

    return tuple(compute(*lazy))  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def quiet_dask() -> Iterator[None]:
    """Dask's own deprecation notices (its Parquet reader calls pandas APIs that pandas 3 deprecates) are not the user's
    business: left out while Dask works (in this process: a cluster's own workers log theirs)."""
    with warnings.catch_warnings():
        for module in (r"dask(\..*)?$", r"distributed(\..*)?$"):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
            warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        yield


def partial(df: pd.DataFrame, r: Reduction) -> pd.DataFrame:
    """The reduction over one partition (pandas): filter, explode, group, aggregate; null keys as :data:`_NULL`."""
    mask = pd.Series(True, index=df.index)
    for w in r.where:
        mask &= w.mask(df)
    df = df[mask]
    if r.explode:
        lst, elem = r.explode
        df = df.assign(**{elem: df[lst].map(detector_list)}).explode(elem)
        df = df[df[elem].notna()]
    base = pd.DataFrame({k: df[k].astype(object).where(df[k].notna(), _NULL).to_numpy() for k in r.keys}, index=range(len(df)))
    for c in r.sums:
        base[c] = pd.to_numeric(df[c].to_numpy()).astype("int64")
    base[r.count] = np.ones(len(df), dtype="int64")
    for n, c in (*r.first, *r.last):
        base[n] = _micros(df[c])
    aggs = {**{c: "sum" for c in (*r.sums, r.count)}, **{n: "min" for n, _ in r.first}, **{n: "max" for n, _ in r.last}}
    g = base.groupby(list(r.keys), sort=False).agg(aggs).reset_index() if len(base) else base
    return g[[*r.keys, *r.values]].astype({v: "int64" for v in r.values})


def _micros(ts: pd.Series) -> np.ndarray[Any, Any]:
    if not len(ts):
        return np.zeros(0, dtype="int64")
    return np.asarray((pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1), dtype="int64")


#: Session files per Dask partition.
FILES_PER_PARTITION = 32


def _read_partial(files: list[str], r: Reduction) -> pd.DataFrame:
    """:func:`partial` over a batch of a table's files, read with pyarrow (only the columns the reduction needs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.concat_tables([pq.read_table(f, columns=r.columns) for f in files])
    df = t.to_pandas()
    assert isinstance(df, pd.DataFrame)
    return partial(df, r)


def run_dask(ds: Dataset, reductions: Sequence[Reduction] = REDUCTIONS) -> dict[str, pd.DataFrame]:
    """The reductions with ``dask.dataframe`` on the current scheduler (a ``distributed.Client`` when one is active)."""
    import dask.dataframe as dd

    lazy: dict[str, Any] = {}
    out: dict[str, pd.DataFrame] = {}
    for r in reductions:
        files = ds.files(r.table)
        if not files:
            out[r.name] = empty(r)
            continue
        # one partition per batch of files, each read with pyarrow and reduced where it is read (a session's files are
        # small: one partition each would cost more to schedule than to read)
        batches = [files[i : i + FILES_PER_PARTITION] for i in range(0, len(files), FILES_PER_PARTITION)]
        parts = dd.from_map(_read_partial, batches, r=r, meta=empty(r), enforce_metadata=False)  # type: ignore[no-untyped-call]
        aggs = {**{c: "sum" for c in (*r.sums, r.count)}, **{n: "min" for n, _ in r.first}, **{n: "max" for n, _ in r.last}}
        lazy[r.name] = parts.groupby(list(r.keys), sort=False).agg(aggs, split_out=1).reset_index()
    names = list(lazy)
    with quiet_dask():
        computed = _compute(*(lazy[n] for n in names))
    for name, df in zip(names, computed, strict=True):
        r = next(x for x in reductions if x.name == name)
        out[name] = canonical(r, df)
    return {r.name: out[r.name] for r in reductions}


# -- the per-session part: states, time with traffic and the telemetry over time, by the report's own code -------

FLOW_COLUMNS = ["session_id", "flow_id", "is_local", "ts_start", "ts_end", "bytes_out", "data_class"]
STATE_COLUMNS = ["session_id", "state", "start_s", "seconds", "customer_content", "service_generated", "service_operation", "unknown",
                 "bytes_out", "http_exchanges"]  # fmt: skip
TIMELINE_COLUMNS = ["session_id", "t_s", "service_generated"]
ACTIVITY_COLUMNS = ["session_id", "active_s"]

#: A pause longer than this without a flow, an exchange or a marker is not counted as the session's time (the
#: flows' default idle timeout): a capture that holds two calls a day apart lasts the two calls, not the day.
MAX_GAP_S = 120.0

Reader = Callable[[str, list[str]], pd.DataFrame]

#: From this many sessions on, the DuckDB engine's per-session pass runs in a pool of processes (one per core): it is
#: pandas work, about 70 ms a session of 1,000 flows on this project's machine, held to one core by the GIL.
POOL_FROM = 64


@dataclass(frozen=True)
class SessionJob:
    """One session's files (by table) and where its time begins (microseconds since the epoch)."""

    session_id: str
    files: dict[str, str]
    start_us: int


@dataclass
class PerSession:
    """What :func:`session_pass` gives for every session: state intervals, telemetry per time bin, time with traffic."""

    states: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STATE_COLUMNS))
    timeline: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TIMELINE_COLUMNS))
    activity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ACTIVITY_COLUMNS))
    where: str = ""  # how the pass ran


def read_arrow(path: str, columns: list[str]) -> pd.DataFrame:
    """A table file's columns as pandas, read with pyarrow (the Dask workers' reader)."""
    import pyarrow.parquet as pq

    df = pq.read_table(path, columns=columns).to_pandas()
    assert isinstance(df, pd.DataFrame)
    return df


def active_seconds(starts: np.ndarray[Any, Any], ends: np.ndarray[Any, Any], max_gap_s: float = MAX_GAP_S) -> float:
    """The time covered by the intervals, pauses of at most ``max_gap_s`` included, longer ones left out."""
    if not len(starts):
        return 0.0
    order = np.argsort(starts, kind="stable")
    a, b = starts[order], np.maximum.accumulate(np.maximum(ends[order], starts[order]))
    gaps = a[1:] - b[:-1]
    cut = np.flatnonzero(gaps > max_gap_s)
    block_start = np.concatenate([[a[0]], a[cut + 1]])
    block_end = np.concatenate([b[cut], [b[-1]]])
    return float((block_end - block_start).sum())


def session_pass(job: SessionJob, bin_s: int, horizon_s: float, read: Reader = read_arrow) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(state intervals, service-generated bytes per bin, time with traffic) of one session.

    States: :func:`egress_by_state` over the session's egress flows, markers, HTTP rows and streams, as the report
    makes them; each interval's start as seconds since the session's start (``start_s``).  Timeline: the
    service-generated part of :func:`egress_over_time` in bins of ``bin_s`` seconds over the session's first
    ``horizon_s`` seconds (bins start at multiples of ``bin_s`` since the epoch, as in the report; ``t_s`` is a bin's
    start since the session's start, rounded to a multiple of ``bin_s``).  Time with traffic (``active_s``): the span
    of its egress flows, HTTP exchanges and markers, pauses longer than :data:`MAX_GAP_S` left out."""
    from egressaudit.report.states import egress_by_state
    from egressaudit.report.summary import egress_over_time

    start_s = job.start_us / 1e6
    flows = read(job.files["flows"], FLOW_COLUMNS) if "flows" in job.files else pd.DataFrame(columns=FLOW_COLUMNS)
    eg = flows[~flows["is_local"].astype(bool)] if len(flows) else flows
    http = read(job.files["http"], ["session_id", "ts_start", "ts_end"]) if "http" in job.files else None
    markers = read(job.files["markers"], ["session_id", "ts", "state", "note"]) if "markers" in job.files else None
    spans = [(epoch_seconds(eg["ts_start"]), epoch_seconds(eg["ts_end"]))] if len(eg) else []
    if http is not None and len(http):
        spans.append((epoch_seconds(http["ts_start"]), epoch_seconds(http["ts_end"])))
    if markers is not None and len(markers):
        t = epoch_seconds(markers["ts"])
        spans.append((t, t))
    active = active_seconds(np.concatenate([a for a, _ in spans]), np.concatenate([b for _, b in spans])) if spans else 0.0
    activity = pd.DataFrame({"session_id": [job.session_id], "active_s": [active]})
    states = pd.DataFrame(columns=STATE_COLUMNS)
    if markers is not None and len(markers):
        streams = read(job.files["streams"], ["session_id", "flow_id", "ts", "direction", "bytes"]) if "streams" in job.files else None
        by = egress_by_state(eg, markers, http, streams)
        states = pd.DataFrame(
            {"session_id": job.session_id, "state": by["state"].astype(str), "start_s": epoch_seconds(by["from"]) - start_s, "seconds": by["seconds"]}
        )
        for c in STATE_COLUMNS[4:]:
            states[c] = by[c].astype("int64").to_numpy()
    timeline = pd.DataFrame(columns=TIMELINE_COLUMNS)
    sg = eg[eg["data_class"].astype(str) == "service_generated"] if len(eg) else eg
    if len(sg):
        sg = sg[epoch_seconds(sg["ts_start"]) < start_s + horizon_s]
    if len(sg):
        series, w = egress_over_time(sg, bin_s)
        offset = np.round((epoch_seconds(pd.Series(series.index)) - start_s) / w).astype("int64") * w
        timeline = pd.DataFrame({"session_id": job.session_id, "t_s": offset, "service_generated": series["service_generated"].to_numpy()})
        kept = timeline[timeline["t_s"] < horizon_s]
        timeline = kept.groupby(["session_id", "t_s"], as_index=False).agg(service_generated=("service_generated", "sum"))
    return states, timeline, activity


def run_sessions(jobs: Sequence[SessionJob], bin_s: int, horizon_s: float, engine: Engine, workers: int | None = None) -> PerSession:
    """:func:`session_pass` for every job: with Dask, one task per session on its scheduler; with DuckDB, on this
    machine: in this process, reading through DuckDB, or, from :data:`POOL_FROM` sessions on, in a pool of
    ``workers`` processes (default: one per core) reading with pyarrow."""
    results: list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]
    where = "one task per session" if engine == "dask" else "in this process"
    workers = workers if workers is not None else (os.cpu_count() or 1) if len(jobs) >= POOL_FROM else 1
    if engine == "dask":
        from dask.delayed import delayed

        with quiet_dask():
            results = list(_compute(*(delayed(session_pass)(j, bin_s, horizon_s) for j in jobs)))
    elif workers > 1 and (pooled := _pooled(jobs, bin_s, horizon_s, workers)) is not None:
        results, where = pooled, f"in {workers} processes"
    else:
        con = _connect()

        def read(path: str, columns: list[str]) -> pd.DataFrame:
            cols = ", ".join(f'"{c}"' for c in columns)
            df = con.sql(f"SELECT {cols} FROM read_parquet($path)", params={"path": path}).to_arrow_table().to_pandas()
            assert isinstance(df, pd.DataFrame)
            return df

        try:
            results = [session_pass(j, bin_s, horizon_s, read) for j in jobs]
        finally:
            con.close()
    empty_ = PerSession()
    parts = [[r[i] for r in results if len(r[i])] for i in range(3)]
    frames = [pd.concat(p, ignore_index=True) if p else e for p, e in zip(parts, (empty_.states, empty_.timeline, empty_.activity), strict=True)]
    return PerSession(frames[0], frames[1], frames[2], where=f"per-session pass {where}")


def _pooled(jobs: Sequence[SessionJob], bin_s: int, horizon_s: float, workers: int) -> list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] | None:
    """:func:`session_pass` in a pool of processes; None when no pool can be had here (a program run from standard
    input cannot spawn children that import its main module): the caller does the work itself."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    work = functools.partial(session_pass, bin_s=bin_s, horizon_s=horizon_s)
    try:
        # (spawned, not forked: DuckDB's threads may hold locks a forked child would inherit)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(work, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
    except (BrokenProcessPool, OSError):
        return None


def run(ds: Dataset, engine: Engine) -> dict[str, pd.DataFrame]:
    """The reductions (:data:`REDUCTIONS`) over the dataset with the engine, as canonical tables by name."""
    if engine == "dask":
        return run_dask(ds)
    return run_duckdb(ds)
