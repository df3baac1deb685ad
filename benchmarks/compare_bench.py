"""The ``compare`` part of the benchmarks (``python benchmarks/run.py --only compare``): ``egressaudit compare`` over
1,000 made-up sessions (about a million flows and a million HTTP rows), with each engine.

The sessions are made by :mod:`egressaudit.report.compare_synth` (1,000 flows and 1,000 HTTP rows each, markers,
media streams, fields) into ``benchmarks/.cache`` once, and laid out as a dataset (``egressaudit dataset``, links).
Each engine then runs in a process of its own (wall time and peak RSS of its process tree, with run.py's
``measure``): the reductions alone (``compare_engines.run``) and the whole comparison (``compare``: reductions,
per-session pass, measures).  Engines: DuckDB (the per-session pass in a pool of one process per core), Dask on its
local threads, Dask on a ``distributed.LocalCluster`` of two worker processes on 127.0.0.1 (no other address).  And
once the command a user runs, ``egressaudit compare DATASET --out DIR`` (tables, figures, compare.html).

    python benchmarks/compare_bench.py --child ENGINE DATASET     # what each measured process runs
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
CONFIGS = ("duckdb", "dask-threads", "dask-cluster")


def _data(sessions: int, flows: int, http: int) -> tuple[Path, dict[str, float]]:
    from egressaudit.dataset import export_dataset
    from egressaudit.report.compare_synth import synthetic_sessions

    base = CACHE / f"compare-{sessions}x{flows}x{http}"
    made: dict[str, float] = {}
    if not (base / "done").exists():
        shutil.rmtree(base, ignore_errors=True)
        t = time.perf_counter()
        synthetic_sessions(base / "sessions", sessions, flows=flows, http=http, seed=1)
        made["generate_s"] = round(time.perf_counter() - t, 1)
        (base / "done").write_text("")
    t = time.perf_counter()
    export_dataset([str(base / "sessions" / "*")], base / "dataset")
    made["export_s"] = round(time.perf_counter() - t, 2)
    return base / "dataset", made


def bench_compare(measure: Callable[..., dict[str, Any]], sessions: int = 1000, flows: int = 1000, http: int = 1000) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from egressaudit.dataset import open_dataset

    dataset, made = _data(sessions, flows, http)
    ds = open_dataset(dataset)
    rows_flows = sum(pq.ParquetFile(f).metadata.num_rows for f in ds.files("flows"))
    rows_http = sum(pq.ParquetFile(f).metadata.num_rows for f in ds.files("http"))
    out: dict[str, Any] = {"sessions": len(ds), "flows": rows_flows, "http_rows": rows_http, **made, "rows": []}
    for config in CONFIGS:
        m = measure([sys.executable, str(Path(__file__)), "--child", config, str(dataset)], timeout=3600, cwd=ROOT)
        child = json.loads(m.get("stdout") or "{}") if m.get("stdout") else {}
        out["rows"].append({"engine": config, "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"], **child})
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "egressaudit", "compare", str(dataset), "--out", f"{tmp}/comparison", "--format", "csv"]
        m = measure(cmd, timeout=3600, cwd=ROOT)
        out["cli"] = {"command": "egressaudit compare DATASET --out DIR", "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"],
                      "returncode": m.get("returncode")}  # fmt: skip
    return out


def child(config: str, dataset: str) -> None:
    from egressaudit.dataset import open_dataset
    from egressaudit.report import compare_engines
    from egressaudit.report.compare import compare

    engine = "duckdb" if config == "duckdb" else "dask"
    cluster = client = None
    if config == "dask-cluster":
        from distributed import Client, LocalCluster

        with compare_engines.quiet_dask():
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
            client = Client(cluster)
    try:
        t = time.perf_counter()
        compare_engines.run(open_dataset(dataset), engine)  # type: ignore[arg-type]
        reduce_s = time.perf_counter() - t
        t = time.perf_counter()
        c = compare([dataset], engine=engine)  # type: ignore[arg-type]
        total_s = time.perf_counter() - t
    finally:
        if client is not None and cluster is not None:
            with compare_engines.quiet_dask():
                client.close()
                cluster.close()
    print(json.dumps({"reductions_s": round(reduce_s, 2), "compare_s": round(total_s, 2), "where": c.manifest["engine"]["where"],
                      "measures_rows": len(c.tables["measures"])}))  # fmt: skip


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    cmp = res.get("compare")
    if not cmp:
        return []
    rows = [[r["engine"], f"{r.get('reductions_s', '')}", f"{r.get('compare_s', '')}", f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:,.0f}",
             r.get("where", "")] for r in cmp["rows"]]  # fmt: skip
    cli = cmp.get("cli", {})
    rows.append(["duckdb, the command (tables, figures, compare.html)", "", "", f"{cli.get('wall_s', 0):.1f}", f"{cli.get('peak_rss_mb', 0):,.0f}",
                 "egressaudit compare DATASET --out DIR"])  # fmt: skip
    note = (
        f"{cmp['sessions']:,} sessions made by egressaudit.report.compare_synth: {cmp['flows']:,} flows, {cmp['http_rows']:,} HTTP rows, with "
        f"markers, streams and fields; laid out as a dataset (links) in {cmp.get('export_s', '?')} s. 'reductions': the engine's group-bys over "
        "the whole dataset (compare_engines.run); 'compare': the whole comparison (reductions, then the per-session pass: states, time with "
        "traffic, telemetry over time, by the report's own pandas code, about 70 ms a session; then the measures); 'wall' and 'peak RSS': the "
        "measured process and its children (the cluster's workers included), start-up and imports included."
    )
    return [("Compare: 1,000 sessions, DuckDB and Dask", ["engine", "reductions s", "compare s", "wall s", "peak RSS MB", "where"], rows, note)]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
