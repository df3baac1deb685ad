"""``egressaudit compare`` and the dataset it reads (issue 15, points 1, 2, 5 and the compare part of 6 and 7).

Real session folders: nDPI's captures of Zoom (two), Teams, Webex and Google Meet in ../shared/captures/public,
and the shipped lab call (captures/lab-call), each analysed with :func:`egressaudit.audit.files.analyze_files` into a
temporary folder.  Their comparison's tables must equal ``tests/golden/compare/<table>.csv``; regenerate with
``EGRESSAUDIT_REGEN_GOLDEN=1 python -m pytest tests/test_compare.py`` after checking a difference by hand (the
offline country and operator data is part of the result: a new geoip2fast data file changes ``destinations``).

Engines: DuckDB and Dask (in a ``distributed.LocalCluster`` of threads, no network) give the same tables, on the
real sessions and on 30 sessions made by :mod:`egressaudit.report.compare_synth`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from egressaudit.audit.files import analyze_files
from egressaudit.dataset import export_dataset, open_dataset
from egressaudit.report import compare_engines
from egressaudit.report.compare import TABLE_NAMES, Comparison, compare
from egressaudit.report.compare_synth import synthetic_sessions
from tests.ndpi_expected import NDPI, SHARED, SKIP_REASON

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "compare"
REGEN = os.environ.get("EGRESSAUDIT_REGEN_GOLDEN") == "1"
CAPTURES = ("zoom.pcap", "zoom2.pcap", "teams.pcap", "webex.pcap", "google_meet.pcapng")
CHROMIUM = Path("/usr/lib/chromium/chromium")
FLOAT = "%.6g"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=SKIP_REASON)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real session folders (captures of ../shared analysed, and the shipped lab call analysed again)."""
    if not SHARED.is_dir():
        pytest.skip(SKIP_REASON)
    root = tmp_path_factory.mktemp("audits")
    for name in CAPTURES:
        analyze_files([NDPI / name], root / name.split(".")[0])
    analyze_files([ROOT / "captures" / "lab-call"], root / "lab-call")
    return root


@pytest.fixture(scope="module")
def real_duckdb(real: Path) -> Comparison:
    return compare([str(real / "*")])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    synthetic_sessions(root, 30, flows=200, http=120, seed=3)
    return root


@pytest.fixture
def local_cluster() -> Iterator[None]:
    """A small distributed cluster: one worker of two threads in this process (in-process transport, no sockets)."""
    from distributed import Client, LocalCluster

    with compare_engines.quiet_dask():
        cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
        client = Client(cluster)
    try:
        yield
    finally:
        with compare_engines.quiet_dask():
            client.close()
            cluster.close()


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format=FLOAT, lineterminator="\n")


# -- golden tables on real sessions ----------------------------------------------------------------------------


@needs_shared
def test_golden_tables_on_real_sessions(real_duckdb: Comparison) -> None:
    c = real_duckdb
    index = GOLDEN / "index.json"
    meta = {"sentence": c.sentence, "geo": c.manifest["geo"]["source"], "sessions": sorted(s["session_id"] for s in c.manifest["inputs"]),
            "time": c.manifest["time"]}  # fmt: skip
    if REGEN:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name in TABLE_NAMES:
            (GOLDEN / f"{name}.csv").write_text(_csv(c.tables[name]))
        index.write_text(json.dumps(meta, indent=1) + "\n")
    if not index.exists():
        pytest.fail(f"no golden files in {GOLDEN}; run with EGRESSAUDIT_REGEN_GOLDEN=1 and review them")
    want = json.loads(index.read_text())
    assert meta["geo"] == want["geo"], "the offline geo data changed: regenerate the goldens (EGRESSAUDIT_REGEN_GOLDEN=1) and review destinations"
    assert meta == want
    for name in TABLE_NAMES:
        assert _csv(c.tables[name]) == (GOLDEN / f"{name}.csv").read_text(), f"{name} differs from tests/golden/compare/{name}.csv"


@needs_shared
def test_what_the_real_sessions_say(real_duckdb: Comparison) -> None:
    """Facts known from the captures, beside the goldens: the sentence, n=1, third parties with their operators,
    the planted identifiers of the lab call, per-state rows only where there are markers."""
    c = real_duckdb
    assert c.sentence.startswith("Across 5 vendors and 6 sessions, service-generated data was between ")
    m = c.tables["measures"]
    assert set(m["client"]) == {"cisco", "google", "lab", "microsoft", "zoom"}
    zoom = m[(m["client"] == "zoom") & (m["measure"] == "minutes")].iloc[0]
    assert zoom["n"] == 2 and pd.isna(zoom["note"])
    cisco = m[m["client"] == "cisco"]
    assert (cisco.loc[cisco["n"] == 1, "note"] == "n=1: a single session, not a spread").all()
    assert cisco.loc[cisco["measure"] == "service_generated_requests_per_min", "note"].iloc[0].startswith("no data")
    tp = c.tables["third_parties"]
    webex = tp[tp["client"] == "cisco"].set_index("vendor")
    assert {"google", "crittercism"} <= set(webex.index)
    assert webex.loc["google", "operators"] == "GOOGLE"
    ids = c.tables["identifiers"]
    lab = ids[ids["client"] == "lab"].set_index("detector")
    assert {"email", "device_id", "meeting_title"} <= set(lab.index)
    assert "amplitude" in lab.loc["email", "to_third_parties"]
    states = c.tables["states"]
    assert set(states["client"]) == {"lab"}
    assert {"muted", "unmuted", "talking"} <= set(states["state"])
    # the 2023 flow appended to nDPI's zoom.pcap is not three years of call: pauses over two minutes are left out
    s = c.tables["sessions"].set_index("session_id")
    assert s.loc["zoom", "span_s"] > 365 * 86400 and s.loc["zoom", "minutes"] < 5


@needs_shared
def test_engines_agree_on_real_sessions(real: Path, real_duckdb: Comparison) -> None:
    d = compare([str(real / "*")], engine="dask")
    for name in TABLE_NAMES:
        pd.testing.assert_frame_equal(real_duckdb.tables[name], d.tables[name], obj=name)
    assert d.sentence == real_duckdb.sentence
    assert d.manifest["engine"]["name"] == "dask" and real_duckdb.manifest["engine"]["name"] == "duckdb"


# -- engines on a generated dataset ------------------------------------------------------------------------------


def test_engines_agree_on_a_generated_dataset_with_a_local_cluster(synthetic: Path, tmp_path: Path, local_cluster: None) -> None:
    ds = export_dataset([str(synthetic / "*")], tmp_path / "dataset")
    assert len(ds) == 30
    a = compare_engines.run(ds, "duckdb")
    b = compare_engines.run(ds, "dask")
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert a["egress"]["flows"].sum() == 30 * 150  # (a quarter of each session's 200 flows is local DNS)
    assert a["requests"]["requests"].sum() == 30 * 120
    duck = compare([str(tmp_path / "dataset")])
    dask = compare([str(tmp_path / "dataset")], engine="dask")
    assert "distributed scheduler" in dask.manifest["engine"]["where"]
    for name in TABLE_NAMES:
        pd.testing.assert_frame_equal(duck.tables[name], dask.tables[name], obj=name)
    m = duck.tables["measures"]
    assert sorted(m.groupby("client")["sessions"].first().items()) == [("cisco", 9), ("jitsi", 1), ("microsoft", 10), ("zoom", 10)]
    # one vendor sends no e-mail address in its telemetry; the others do, in every session
    ids = duck.tables["identifiers"]
    assert "microsoft" not in set(ids.loc[ids["detector"] == "email", "client"])
    assert (ids.loc[ids["detector"] == "email", "sessions"] == ids.loc[ids["detector"] == "email", "of"]).all()
    # the muted interval's media: the stream rows of the first media flow stop while muted
    assert {"muted", "unmuted"} <= set(duck.tables["states"]["state"])


# -- the dataset -------------------------------------------------------------------------------------------------


def test_dataset_is_hive_partitioned_and_read_by_duckdb(synthetic: Path, tmp_path: Path) -> None:
    import duckdb

    out = tmp_path / "ds"
    ds = export_dataset([str(synthetic / "zoom-*"), str(synthetic / "jitsi-*")], out)
    assert len(ds) == 11
    leaf = out / "client=zoom" / "session=zoom-0000"
    assert (leaf / "flows.parquet").is_symlink() and (leaf / "flows.parquet").resolve() == (synthetic / "zoom-0000" / "flows.parquet").resolve()
    assert {p.name for p in out.iterdir()} == {"client=zoom", "client=jitsi", "dataset.json", "sessions.parquet"}
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    con = duckdb.connect()
    got = con.sql(f"SELECT client, count(*) AS n FROM read_parquet('{out}/*/*/flows.parquet', hive_partitioning = true) GROUP BY client "
                  "ORDER BY client").fetchall()  # fmt: skip
    assert got == [("jitsi", 200), ("zoom", 2000)]
    index = pq.read_table(out / "sessions.parquet").to_pandas()
    assert list(index["session_id"]) == [f"zoom-{i:04d}" for i in range(0, 28, 3)] + ["jitsi-0029"]
    assert index["has_streams"].all() and index["has_http"].all()
    # exported again as copies: replaced whole, real files
    again = export_dataset([str(synthetic / "jitsi-*")], out, copy=True)
    assert len(again) == 1 and not (out / "client=zoom").exists()
    f = out / "client=jitsi" / "session=jitsi-0029" / "flows.parquet"
    assert not f.is_symlink() and oct(f.stat().st_mode & 0o777) == "0o600"
    assert open_dataset(out).files("flows") == [str(f)]


def test_dataset_writes_tables_of_an_older_schema_migrated(synthetic: Path, tmp_path: Path) -> None:
    """A table that is not in this version's schema is not linked: the session's reader migrates it, and the dataset
    holds this version's rows (here: a flows table written without the 2.1 attribution columns)."""
    s = tmp_path / "old"
    shutil.copytree(synthetic / "jitsi-0029", s)
    t = pq.read_table(s / "flows.parquet")
    old = t.drop_columns(["pid", "process", "cmdline_hash", "attributed_by"]).replace_schema_metadata({b"egressaudit.schema_version": b"2.0"})
    pq.write_table(old, s / "flows.parquet")
    (s / "session.json").write_text((s / "session.json").read_text().replace('"jitsi-0029"', '"old"'))
    ds = export_dataset([s], tmp_path / "ds")
    f = Path(ds.files("flows")[0])
    assert not f.is_symlink()
    assert pq.read_schema(f).names == t.schema.names


def test_dataset_refuses_a_session_folder_as_output(synthetic: Path) -> None:
    from egressaudit.errors import UsageError

    with pytest.raises(UsageError, match="holds a session"):
        export_dataset([str(synthetic / "jitsi-*")], synthetic / "zoom-0000")


# -- the command ---------------------------------------------------------------------------------------------------


def _run(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "egressaudit", *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@needs_shared
def test_cli_writes_tables_figures_and_one_self_contained_page(real: Path, tmp_path: Path) -> None:
    out = tmp_path / "comparison"
    r = _run("compare", str(real / "zoom*"), str(real / "teams"), str(real / "webex"), str(real / "lab-call"), "--out", str(out), columns=90)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Across 4 vendors and 5 sessions, ")
    assert "…" not in r.stdout  # (host names and addresses are wrapped, never cut)
    for name in TABLE_NAMES:
        assert (out / "tables" / f"{name}.csv").is_file()
        assert pq.read_table(out / "tables" / f"{name}.parquet").num_rows == len(pd.read_csv(out / "tables" / f"{name}.csv"))
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["data_classes.svg", "states.svg", "third_parties.svg", "timeline.svg"]
    manifest = json.loads((out / "compare.json").read_text())
    assert manifest["engine"]["name"] == "duckdb" and manifest["geo"]["source"].startswith("MAXMIND:GeoLite2")
    assert sorted(s["session_id"] for s in manifest["inputs"]) == ["lab-call", "teams", "webex", "zoom", "zoom2"]
    page = (out / "compare.html").read_text()
    first = re.search(r"<p class=\"answer\">(.*?)</p>", page)
    assert first and first.group(1).startswith("Across 4 vendors and 5 sessions, ")
    assert page.count("data:image/svg+xml;base64,") == 4
    assert not re.search(r"""(?:src|href)\s*=\s*(?!["']?(?:data:|#))""", page), "the page links to another file or address"
    assert not re.search(r"https?://|url\(\s*['\"]?(?!data:|#)", page), "the page names an external address"
    # a second run into the same folder replaces the comparison; a folder with other files is refused
    assert _run("compare", str(real / "zoom*"), "--out", str(out), "--format", "csv").returncode == 0
    if CHROMIUM.exists():
        _screenshot(out / "compare.html", tmp_path / "shot.png")


def _screenshot(page: Path, png: Path) -> None:
    from PIL import Image

    r = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}", "--window-size=1280,2000",
                        page.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert png.is_file(), r.stderr[-2000:]
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1280, 2000)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 200, "the screenshot is (almost) blank"
        white = sum(n for n, c in colours if min(c) >= 245)
        assert white < 0.95 * 1280 * 2000
        red = sum(n for n, (r_, g, b) in colours if r_ > 180 and g < 80 and b < 80)  # (service-generated data's colour: the figures drew)
        assert red > 500


@needs_shared
def test_cli_json_and_csv(real: Path) -> None:
    r = _run("compare", str(real / "zoom*"), str(real / "webex"), "--format", "json", "--engine", "dask")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["tables"]) == set(TABLE_NAMES) and doc["manifest"]["engine"]["name"] == "dask"
    assert doc["sentence"].startswith("Across 2 vendors and 3 sessions")
    r = _run("compare", str(real / "zoom*"), "--format", "csv", "--table", "third_parties")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "client,vendor,sessions,of,bytes_out,requests,category,categories,operators,countries,hosts"


def test_cli_errors_are_one_line_with_their_exit_codes(synthetic: Path, tmp_path: Path) -> None:
    r = _run("compare", str(tmp_path / "nothing-*"))
    assert r.returncode == 3 and r.stderr.startswith("error: no session folder in") and len(r.stderr.strip().splitlines()) == 1
    plain = tmp_path / "plain"
    plain.mkdir()
    r = _run("compare", str(plain))
    assert r.returncode == 3 and r.stderr.startswith("error:") and "not a session" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run("compare", str(synthetic / "jitsi-*"), "--out", str(synthetic / "zoom-0000"))
    assert r.returncode == 2 and "holds a session" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = _run("compare", str(synthetic / "jitsi-*"), "--out", str(other))
    assert r.returncode == 2 and "not a comparison" in r.stderr
    r = _run("compare", str(synthetic / "jitsi-*"), "--engine", "spark")
    assert r.returncode == 2
    r = _run("dataset", str(synthetic / "jitsi-*"), "--out", str(tmp_path / "ds"))
    assert r.returncode == 0 and r.stdout.startswith("1 session ->")
    r = _run("compare", str(tmp_path / "ds"), "--format", "csv", "--table", "sessions")
    assert r.returncode == 0 and "jitsi-0029" in r.stdout
