"""Regenerate RELIABILITY.md: what was tried against egressaudit, what held and what did not.

    python fuzz/reliability.py                      # everything (about 15 minutes on 2 cores)
    python fuzz/reliability.py --quick              # smaller hostile runs, fault tests, last fuzz results
    python fuzz/reliability.py --fuzz-cases 100000  # also run every fuzz target first (fuzz/run.py)

Four kinds of evidence, each from a real run of the real commands:

* hostile inputs: fuzz/hostile_captures.py (mutated real captures through ``egressaudit analyze``),
  fuzz/hostile_http.py (hostile HAR and .mitm files through ``analyze``, ``inventory``, ``har``) and
  fuzz/hostile_proxy.py (hostile requests through a real ``egressaudit proxy``): inputs, exit codes, tracebacks;
* fuzz targets: fuzz/results.json, written by fuzz/run.py (atheris, coverage-guided): cases, time, crashes;
* faults: the fault and hostile-input tests of the suite (SIGKILLs, a full disk, a read-only folder, ...), run
  here with pytest; each row is one test, its docstring's first sentence and its outcome;
* load: the latest benchmark results (benchmarks/results.json), which this command does not re-run.

The raw numbers go to fuzz/reliability.json beside the page.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
OUT_MD = ROOT / "RELIABILITY.md"
OUT_JSON = FUZZ / "reliability.json"

HOSTILE = [
    # (module, what it feeds, cases full, cases quick)
    ("hostile_captures", "mutated real captures (pcap, pcapng, gzip) through `egressaudit analyze`", 3200, 300),
    ("hostile_http", "hostile HAR and .mitm files through `egressaudit analyze`, `inventory`, `har`", 800, 120),
    ("hostile_proxy", "hostile requests through a real `egressaudit proxy`, then SIGTERM", 1200, 200),
]
FAULT_TESTS = [
    "tests/test_hardening.py",
    "tests/test_capture_faults.py",
    "tests/test_proxy_faults.py",
    "tests/test_hostile_captures.py",
    "tests/test_hostile_http.py",
    "tests/test_fuzz_corpus.py",
]


def _load(name: str) -> Any:
    path = FUZZ / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def run_hostile(quick: bool, seed: int) -> list[dict[str, Any]]:
    rows = []
    for name, what, full, small in HOSTILE:
        mod = _load(name)
        if mod is None:
            rows.append({"target": name, "what": what, "error": f"fuzz/{name}.py is missing"})
            continue
        print(f"hostile inputs: {name} ({small if quick else full} cases)...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"egressaudit-{name}-") as work:
            t0 = time.monotonic()
            try:
                summary = dict(mod.run(Path(work), small if quick else full, seed))
            except Exception as e:  # the runner itself broke: say so on the page
                summary = {"error": f"{type(e).__name__}: {e}"}
            summary.setdefault("seconds", round(time.monotonic() - t0, 1))
        rows.append({"target": name, "what": what, **summary})
    return rows


def run_fuzz(cases: int | None) -> dict[str, Any]:
    if cases:
        print(f"fuzz targets: {cases:,} cases each...", flush=True)
        subprocess.run([sys.executable, str(FUZZ / "run.py"), "--cases", str(cases)], cwd=ROOT, check=False)
    path = FUZZ / "results.json"
    if not path.exists():
        return {"error": "no fuzz/results.json: run python fuzz/run.py --cases 100000"}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _doc_first_sentence(node: ast.FunctionDef) -> str:
    doc = ast.get_docstring(node) or ""
    text = " ".join(doc.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _docs(paths: list[Path]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for p in paths:
        tree = ast.parse(p.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                out[(p.stem, node.name)] = _doc_first_sentence(node)
    return out


def run_faults() -> list[dict[str, Any]]:
    files = [ROOT / f for f in FAULT_TESTS if (ROOT / f).exists()]
    if not files:
        return []
    print(f"fault tests: {', '.join(f.name for f in files)}...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", "-o", "junit_family=xunit1"]
        subprocess.run([*cmd, *map(str, files)], cwd=ROOT, check=False)
        root = ET.parse(xml).getroot()
    docs = _docs(files)
    rows = []
    for case in root.iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "")
        base = name.split("[", 1)[0]
        outcome = "passed"
        detail = ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[kind]
                detail = " ".join((el.get("message") or "").split())[:200]
        rows.append(
            {"file": module, "test": name, "what": docs.get((module, base), ""), "outcome": outcome, "detail": detail,
             "seconds": round(float(case.get("time", 0)), 1)}
        )  # fmt: skip
    return rows


def load_benchmarks() -> dict[str, Any]:
    path = ROOT / "benchmarks" / "results.json"
    if not path.exists():
        return {}
    d = json.loads(path.read_text())
    out: dict[str, Any] = {"dates": d.get("dates", {})}
    cap = d.get("capture") or {}
    if cap:
        out["capture"] = {
            "highest_lossless_pps": cap.get("highest_lossless"),
            "tcpdump": cap.get("highest_lossless_tcpdump"),
            "sender": cap.get("sender"),
        }
    prox = (d.get("proxy") or {}).get("overhead") or {}
    out["proxy"] = {k: {m: v.get(m) for m in ("median_ratio", "p99_ratio", "time_per_req_ratio")} for k, v in prox.items() if isinstance(v, dict)}
    ing = d.get("ingest") or {}
    if ing:
        out["ingest"] = {"packets": ing.get("packets"), "agreement": ing.get("agreement")}
    return out


# -- the page ----------------------------------------------------------------------------------------------------------


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))


def _codes(codes: dict[str, int] | None) -> str:
    return ", ".join(f"{k}: {_n(v)}" for k, v in sorted((codes or {}).items(), key=lambda kv: str(kv[0]))) or "-"


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} ({_n(x)})" if isinstance(x, int) else f"{k}: {_value(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v) or "none"
    return _n(v)


def _by_test(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["file"], r["test"].split("[", 1)[0]), []).append(r)
    return out


def render(data: dict[str, Any]) -> str:
    env = data["environment"]
    lines = [
        "# Reliability",
        "",
        "What was tried against egressaudit, and what held. Generated by `python fuzz/reliability.py`"
        f"{' --quick' if data['quick'] else ''} on {data['date']} ({env['machine']}, Python {env['python']}, egressaudit {env['version']},"
        f" commit {env['commit']}); raw numbers in `fuzz/reliability.json`. Do not edit by hand: run the command.",
        "",
        "Bad input must give one clear line or a counted, reported skip, never a traceback, never lost data. A",
        '*traceback* below is any Python traceback on stderr or exit code 1 (the last-resort handler\'s "internal error").',
        "",
        "## Hostile inputs",
        "",
        "| runner | inputs | what | exit codes | tracebacks | held | time |",
        "| --- | ---: | --- | --- | ---: | --- | --- |",
    ]
    std = {"target", "what", "inputs", "exit_codes", "tracebacks", "causes", "seconds", "error"}
    details: list[str] = []
    for r in data["hostile"]:
        if r.get("error"):
            lines.append(f"| `{r['target']}` | | {r['what']} | | | **not run**: {r['error']} | |")
            continue
        tb = int(r.get("tracebacks") or 0)
        lines.append(
            f"| `fuzz/{r['target']}.py` | {_n(r.get('inputs'))} | {r['what']} | {_codes(r.get('exit_codes'))} | {tb} | "
            f"{'yes' if tb == 0 else '**no**'} | {_n(r.get('seconds'))} s |"
        )
        details += ["", f"`{r['target']}`:", ""]
        details += [f"- {k}: {_value(v)}" for k, v in r.items() if k not in std]
    lines += details
    causes = [(r["target"], c, n) for r in data["hostile"] for c, n in (r.get("causes") or {}).items()]
    if causes:
        lines += ["", "Tracebacks by cause:", ""] + [f"- `{t}`: {c} ({_n(n)})" for t, c, n in causes]
    fz = data["fuzz"]
    lines += ["", "## Fuzz targets", ""]
    if fz.get("error"):
        lines.append(f"Not run: {fz['error']}.")
    else:
        targets = fz.get("targets", fz)
        lines += [
            f"`python fuzz/run.py --cases N` (atheris, coverage-guided): each target's latest run, from `fuzz/results.json`"
            f" (the latest run of all: {fz.get('date', '?')}, `{fz.get('command', '')}`).",
            "",
            "| target | cases | seconds | corpus files | crashes | held | run |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for name, t in sorted(targets.items()) if isinstance(targets, dict) else []:
            if not isinstance(t, dict):
                continue
            crashes = t.get("crashes") or 0
            crashes_n = len(crashes) if isinstance(crashes, list) else int(crashes)
            held = "yes" if crashes_n == 0 else "**no**"
            when = str(t.get("date", ""))[:10]
            lines.append(f"| `{name}` | {_n(t.get('cases'))} | {_n(t.get('seconds'))} | {_n(t.get('corpus'))} | {crashes_n} | {held} | {when} |")
    lines += [
        "",
        "## Faults and hostile-input tests",
        "",
        "One row per test; a parametrized test's cases together (each case is in `fuzz/reliability.json`).",
        "",
        "| test | what it tries | cases | outcome | s |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for (file, test), cases in _by_test(data["faults"]).items():
        counts: dict[str, int] = {}
        for r in cases:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        outcome = ", ".join(f"{k} {v}" if len(cases) > 1 else k for k, v in counts.items())
        notes = [f"{r['test']}: {r['outcome']} {r['detail']}" for r in cases if r["outcome"] != "passed" and r["detail"]]
        outcome += "".join(f"; {n}" for n in notes[:3])
        seconds = round(sum(float(r["seconds"]) for r in cases), 1)
        lines.append(f"| `{file}::{test}` | {cases[0]['what']} | {len(cases)} | {outcome} | {seconds} |")
    b = data["load"]
    lines += ["", "## Load (from benchmarks/results.json, not re-run here)", ""]
    if b.get("capture"):
        c = b["capture"]
        lines.append(
            f"- Live capture: lossless up to {_n(c['highest_lossless_pps'])} packets/s (tcpdump: {_n(c['tcpdump'])}), {c['sender']}"
            f" ({b['dates'].get('capture', '?')})."
        )
    for k, v in (b.get("proxy") or {}).items():
        ratios = ", ".join(f"{m.replace('_ratio', '')} {x:.2f}x" for m, x in v.items() if isinstance(x, float))
        lines.append(f"- Proxy with the addon vs plain mitmdump, {k} client(s): {ratios} ({b['dates'].get('proxy', '?')}).")
    lines += ["", "## What did not hold", ""]
    bad = [f"- hostile `{r['target']}`: {r.get('error') or str(r.get('tracebacks')) + ' tracebacks'}" for r in data["hostile"]
           if r.get("error") or r.get("tracebacks")]  # fmt: skip
    bad += [f"- `{r['file']}::{r['test']}` {r['outcome']}: {r['detail']}" for r in data["faults"] if r["outcome"] in ("FAILED", "ERROR")]
    skipped = [r for r in data["faults"] if r["outcome"] == "skipped"]
    bad += [f"- skipped `{r['file']}::{r['test']}`: {r['detail']}" for r in skipped]
    lines += bad or ["Nothing: every runner, target and test above held."]
    lines.append("")
    return "\n".join(lines)


def _commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "egressaudit"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return r.stdout.strip() + ("+changes" if dirty.strip() else "")
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer hostile inputs (about 5 minutes, not 15)")
    ap.add_argument("--fuzz-cases", type=int, default=None, help="run fuzz/run.py with this many cases per target first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated sections to keep from the last fuzz/reliability.json: hostile,faults")
    args = ap.parse_args()
    from egressaudit import __version__

    previous = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    skip = {s for s in args.skip.split(",") if s}
    data: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "quick": args.quick,
        "environment": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "version": __version__,
            "commit": _commit(),
        },  # fmt: skip
        "hostile": previous.get("hostile", []) if "hostile" in skip else run_hostile(args.quick, args.seed),
        "fuzz": run_fuzz(args.fuzz_cases),
        "faults": previous.get("faults", []) if "faults" in skip else run_faults(),
        "load": load_benchmarks(),
    }
    OUT_JSON.write_text(json.dumps(data, indent=1, default=str) + "\n")
    OUT_MD.write_text(render(data))
    print(f"wrote {OUT_MD.relative_to(ROOT)} and {OUT_JSON.relative_to(ROOT)}")
    held = not any(r.get("error") or r.get("tracebacks") for r in data["hostile"]) and not any(
        r["outcome"] in ("FAILED", "ERROR") for r in data["faults"]
    )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
