"""Golden flow tables: every real capture's flows and verdicts must stay as they were.

Each capture (nDPI's and NFStream's in ../shared/captures/public, the calling
apps in ../shared/captures/calls, the sample shipped in captures/) is analysed
with :func:`egressaudit.audit.analyze.analyze` and default options, and its
flow table (one row per flow, every column of flows.parquet but session_id and
flow_id, sorted by start time and 5-tuple) must equal
``tests/golden/flows/<group>/<capture>.csv`` cell for cell; the session's
audited client and its flow and packet counts must equal ``index.json``.

The goldens were taken at 25300ed, before the session-model refactor (issue
12, point 7), so that the refactor can show it changed no result.  Regenerate
them (``python tests/golden/flows/regenerate.py``) only for a change that is
meant to change results, and say why in the commit message.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from egressaudit.audit.analyze import AnalyzeOptions, AnalyzeResult, analyze
from tests.ndpi_expected import SHARED, SKIP_REASON

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "flows"
INDEX = GOLDEN / "index.json"
SHARED_CAPTURES = SHARED.parent  # ../shared/captures
SESSION_ID = "golden"  # fixed: nothing in the flows may depend on it
FLOAT_FORMAT = "%.6f"
GZIP_ABOVE = 3_000_000  # bytes of CSV text; larger goldens are stored as .csv.gz
SUFFIXES = (".pcap", ".pcapng")

INT_COLUMNS = {
    "ip_version", "local_port", "remote_port", "bytes_out", "bytes_in", "packets_out", "packets_in", "payload_bytes_out",
    "payload_bytes_in", "fragments", "stun_packets", "rtp_packets", "rtcp_packets", "dtls_packets", "ssrc_count",
}  # fmt: skip
BOOL_COLUMNS = {"is_local"}
FLOAT_COLUMNS = {"duration_s"}
TIME_COLUMNS = {"ts_start", "ts_end"}
LIST_COLUMNS = {"rtp_payload_types", "media_kinds"}
#: flows.parquet's columns but session_id and flow_id, in its order
COLUMNS = (
    "community_id", "transport", "ip_version", "local_ip", "local_port", "remote_ip", "remote_port", "is_local",
    "bytes_out", "bytes_in", "packets_out", "packets_in", "payload_bytes_out", "payload_bytes_in", "ts_start", "ts_end",
    "duration_s", "fragments", "hostname", "hostname_source", "alpn", "app_protocol", "stun_packets", "rtp_packets",
    "rtcp_packets", "dtls_packets", "rtp_payload_types", "ssrc_count", "media_kinds", "vendor", "service", "party",
    "category", "data_class", "rule", "evidence",
)  # fmt: skip
EMPTY = "<empty>"  # a non-null empty string or list, told apart from null (an empty cell)


@dataclass(frozen=True)
class Capture:
    group: str  # public-ndpi, public-nfstream, calls, sample-<folder>
    path: Path

    @property
    def key(self) -> str:
        return f"{self.group}/{self.path.name}"


def _walk(root: Path, prefix: str) -> list[Capture]:
    found = []
    for p in root.rglob("*"):
        if p.suffix in SUFFIXES and p.is_file() and "expected" not in p.relative_to(root).parts:
            found.append(Capture("-".join([prefix, *p.parent.relative_to(root).parts]), p))
    return found


def discover() -> dict[str, Capture]:
    """Every capture on disk, by golden key (``group/file``)."""
    found = [
        *_walk(SHARED_CAPTURES / "public", "public"),
        *_walk(SHARED_CAPTURES / "calls", "calls"),
        *_walk(ROOT / "captures", "sample"),
    ]
    return {c.key: c for c in sorted(found, key=lambda c: c.key)}


def golden_path(key: str) -> Path:
    plain = GOLDEN / f"{key}.csv"
    return plain if plain.exists() or not (GOLDEN / f"{key}.csv.gz").exists() else GOLDEN / f"{key}.csv.gz"


def load_index() -> dict[str, dict[str, Any]]:
    return json.loads(INDEX.read_text(encoding="utf-8")) if INDEX.exists() else {}


def run(capture: Capture) -> AnalyzeResult:
    return analyze([capture.path], AnalyzeOptions(session_id=SESSION_ID))


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in TIME_COLUMNS:
        return _iso(value)
    if column in LIST_COLUMNS:
        return " ".join(str(v) for v in value) or EMPTY
    if isinstance(value, str) and not value:
        return EMPTY
    return value


def flow_frame(result: AnalyzeResult) -> pd.DataFrame:
    """The golden table of one analysis: one row per flow, sorted by start, end and 5-tuple (then every cell)."""
    keyed: list[tuple[tuple[Any, ...], list[Any]]] = []
    for r in result.rows:
        cells = [_cell(c, r[c]) for c in COLUMNS]
        # ties broken by the rendered cells, so that the order never rests on flow_id
        order = (r["ts_start"], r["ts_end"], r["transport"], r["local_ip"], r["local_port"], r["remote_ip"], r["remote_port"])
        keyed.append(((*order, tuple(str(v) for v in cells)), cells))
    keyed.sort(key=lambda kc: kc[0])
    table = [c for _, c in keyed]
    columns: dict[str, Any] = {}
    for j, c in enumerate(COLUMNS):
        values = [row[j] for row in table]
        if c in INT_COLUMNS:
            columns[c] = pd.array(values, dtype="Int64")
        elif c in BOOL_COLUMNS:
            columns[c] = pd.array(values, dtype="boolean")
        elif c in FLOAT_COLUMNS:
            columns[c] = pd.array(values, dtype="Float64")
        else:
            columns[c] = pd.array(values, dtype=object)
    return pd.DataFrame(columns, columns=list(COLUMNS))


def render(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n", na_rep="")


def read_golden(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def index_entry(capture: Capture, result: AnalyzeResult) -> dict[str, Any]:
    return {
        "audited_client": result.session["audited_client"],
        "flows": result.session["counts"]["flows"],
        "packets": result.session["counts"]["packets"],
        "sha256": hashlib.sha256(capture.path.read_bytes()).hexdigest(),
    }


def _parse(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def _flow_keys(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """An identity for each flow that holds when its verdict or orientation changes: transport, both ends, start (and
    which of equal keys)."""
    seen: Counter[tuple[str, ...]] = Counter()
    keys = []
    ident = ("transport", "local_ip", "local_port", "remote_ip", "remote_port", "ts_start")
    for t, lip, lp, rip, rp, ts in zip(*(frame[c] for c in ident), strict=True):
        ends = sorted([f"{lip} {lp}", f"{rip} {rp}"])
        base = (t, *ends, ts)
        seen[base] += 1
        keys.append((*base, str(seen[base])))
    return keys


def _label(row: pd.Series) -> str:
    return f"{row['transport']} {row['local_ip']}:{row['local_port']} -> {row['remote_ip']}:{row['remote_port']} from {row['ts_start']}"


def describe_diff(old_text: str, new_text: str, limit: int = 8) -> str:
    """What differs between the golden table and the new one: flows gone or new, and the first flows whose cells differ."""
    old, new = _parse(old_text), _parse(new_text)
    out: list[str] = []
    if list(old.columns) != list(new.columns):
        out.append(f"columns differ: golden {list(old.columns)}\n                 now    {list(new.columns)}")
        shared = [c for c in old.columns if c in new.columns]
        old, new = old[shared], new[shared]
    out.append(f"flows: golden {len(old)}, now {len(new)}")
    old_at = {k: i for i, k in enumerate(_flow_keys(old))}
    new_at = {k: i for i, k in enumerate(_flow_keys(new))}
    gone = [i for k, i in old_at.items() if k not in new_at]
    added = [i for k, i in new_at.items() if k not in old_at]
    for what, frame, idx in (("gone (in golden, not now)", old, gone), ("new (now, not in golden)", new, added)):
        if idx:
            out.append(f"{len(idx)} flows {what}; first ones:")
            out += [f"  {_label(frame.iloc[i])}  [{frame.iloc[i]['category']} {frame.iloc[i]['rule']}]" for i in idx[:limit]]
    changed: list[tuple[int, int, list[str]]] = []
    by_column: Counter[str] = Counter()
    for k, i in old_at.items():
        j = new_at.get(k)
        if j is None:
            continue
        cols = [c for c in old.columns if old.iloc[i][c] != new.iloc[j][c]]
        if cols:
            changed.append((i, j, cols))
            by_column.update(cols)
    if changed:
        out.append(f"{len(changed)} flows differ, by column: " + ", ".join(f"{c} x{n}" for c, n in by_column.most_common()))
        for i, j, cols in changed[:limit]:
            out.append(f"  {_label(old.iloc[i])}")
            out += [f"      {c}: {old.iloc[i][c]!r} -> {new.iloc[j][c]!r}" for c in cols]
    if not (gone or added or changed):
        out.append("same flows and cells, but in another order or layout (sorting or CSV rendering changed)")
    return "\n".join(out)


def _keys() -> list[str]:
    return sorted(load_index())


def _skip_reason(key: str) -> str:
    if key.startswith("public-"):
        return SKIP_REASON
    return "real captures not present: ../shared/captures/calls (a plain clone has no ../shared; see tests/README.md)"


_found = discover()


def _capture_or_skip(key: str) -> Capture:
    capture = _found.get(key)
    if capture is None:
        if key.startswith("sample-"):
            pytest.fail(f"{key}: the sample capture is gone from captures/")
        if not (SHARED_CAPTURES / ("public" if key.startswith("public-") else "calls")).is_dir():
            pytest.skip(_skip_reason(key))
        pytest.fail(f"{key}: the capture is gone from {SHARED_CAPTURES} (its golden is kept in {GOLDEN})")
    return capture


@pytest.mark.parametrize("key", _keys())
def test_flows_equal_golden(key: str) -> None:
    capture = _capture_or_skip(key)
    want = load_index()[key]
    result = run(capture)
    got = index_entry(capture, result)
    problems = []
    if got["sha256"] != want["sha256"]:
        problems.append(f"the capture itself changed (sha256 {want['sha256'][:12]}... -> {got['sha256'][:12]}...): the golden no longer applies")
    problems += [f"{k}: golden {want[k]!r}, now {got[k]!r}" for k in ("audited_client", "flows", "packets") if got[k] != want[k]]
    old_text, new_text = read_golden(golden_path(key)), render(flow_frame(result))
    if new_text != old_text:
        problems.append(describe_diff(old_text, new_text))
    if problems:
        pytest.fail(f"{key} ({capture.path}) differs from {golden_path(key).relative_to(ROOT)}:\n" + "\n".join(problems), pytrace=False)


def test_every_capture_has_a_golden() -> None:
    """A capture added to ../shared/captures or captures/ gets its golden deliberately: regenerate.py <group/file>."""
    missing = sorted(set(_found) - set(load_index()))
    assert not missing, "captures without a golden flow table (python tests/golden/flows/regenerate.py " + " ".join(missing) + ")"


def test_flows_do_not_depend_on_the_session_id() -> None:
    """The goldens are taken with one fixed session id; any other gives the same table."""
    (capture,) = [c for k, c in _found.items() if k == "sample-janus-echo/call.pcapng"]
    other = analyze([capture.path], AnalyzeOptions(session_id="another-session"))
    assert render(flow_frame(other)) == render(flow_frame(run(capture)))


def test_diff_names_the_changed_cells() -> None:
    """The failure message says which flow and which column changed, old and new."""
    base = {c: "1" for c in COLUMNS} | {"transport": "udp", "local_ip": "10.0.0.2", "remote_ip": "8.8.8.8", "category": "media", "rule": "r"}
    old = pd.DataFrame([base, base | {"local_port": "2"}])
    new = pd.DataFrame([base | {"vendor": "zoom"}, base | {"local_port": "3"}])
    text = describe_diff(old.to_csv(index=False), new.to_csv(index=False))
    assert "vendor: '1' -> 'zoom'" in text and "vendor x1" in text, text
    assert "1 flows gone" in text and "1 flows new" in text and "10.0.0.2:2" in text and "10.0.0.2:3" in text, text


def write(keys: Iterable[str]) -> list[tuple[str, int, int]]:
    """Analyse the captures and write their goldens and index entries; returns (key, flows, golden bytes) for each."""
    index = load_index()
    written = []
    for key in keys:
        capture = _found[key]
        result = run(capture)
        text = render(flow_frame(result))
        dest = GOLDEN / f"{key}.csv"
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in (dest, dest.with_name(dest.name + ".gz")):
            stale.unlink(missing_ok=True)
        data = text.encode("utf-8")
        if len(data) > GZIP_ABOVE:
            dest = dest.with_name(dest.name + ".gz")
            data = gzip.compress(data, mtime=0)
        dest.write_bytes(data)
        index[key] = index_entry(capture, result)
        written.append((key, index[key]["flows"], len(data)))
    INDEX.write_text(json.dumps(dict(sorted(index.items())), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return written
