#!/usr/bin/env python3
"""The one fuzz command: every reader, dissector and body decoder under atheris (coverage-guided libFuzzer).

    python fuzz/run.py [--cases 100000] [--targets a,b] [--seconds N] [--jobs 2] [--seed 1]
    python fuzz/run.py --reproduce fuzz/crashes/<target>/<file> [...]
    python fuzz/run.py --list

Each target (``fuzz/targets.py``) runs in a subprocess of its own (atheris takes
over the process) with the egressaudit modules instrumented, for ``--cases``
executions starting from ``fuzz/corpus/<target>/``.  A target stops at its
first crash: the reproducer is saved to ``fuzz/crashes/<target>/`` and the
command exits 1 once every target has run.  Without a crash, the inputs that
found new coverage are merged into the corpus (libFuzzer ``-merge=1``: only
those adding coverage; libFuzzer has already shrunk them) within a small
budget per target, so the committed corpus stays a few hundred KB.
Per-target cases, seconds, corpus size and crashes are printed and written to
``fuzz/results.json``.

Without atheris (``pip install atheris``), a plain mutation loop over the
corpus runs instead (not coverage-guided), and the summary says so.

``run(work_dir, cases, seed)`` is the same run as a function (for RELIABILITY.md):
it returns the summary and leaves the committed corpus and results.json alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
CRASHES = FUZZ / "crashes"
RESULTS = FUZZ / "results.json"
WORK = FUZZ / "work"

TIMEOUT_S = 60
"""libFuzzer's wall-clock limit per case: a backstop for a case that never returns (the CPU limit in targets.check is 2 s)."""
RSS_LIMIT_MB = 2048
"""libFuzzer's memory limit for the whole worker: passing it is a crash (an ``oom-`` reproducer)."""
NEW_FILES_MAX = 24
NEW_BYTES_MAX = 12 * 1024
NEW_FILE_MAX = 4096
"""Budget of the inputs a run adds to a target's committed corpus: how many, their total and largest size."""
INSTRUMENT = ["egressaudit", "mitmproxy.io"]


def _targets_module() -> Any:
    sys.path.insert(0, str(FUZZ))
    sys.path.insert(1, str(ROOT))
    import targets

    return targets


# -- the worker: one target under atheris ---------------------------------------------------------------------------


def _dict_file(entries: tuple[bytes, ...], path: Path) -> Path:
    path.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in e) + '"\n' for e in entries))
    return path


def worker(name: str, cases: int, seconds: float, seed: int, work: Path, merge: bool, rest: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        return _fallback(name, cases, seconds, seed, work)
    sys.path.insert(0, str(FUZZ))
    sys.path.insert(1, str(ROOT))
    with atheris.instrument_imports(include=INSTRUMENT):
        import targets
    t = targets.TARGETS[name]
    targets.byte_mutate = lambda data, n: atheris.Mutate(data, n)  # looked up per call: Setup() swaps in the real one
    corpus, new, crashes = CORPUS / name, work / name / "new", CRASHES / name
    for d in (corpus, new, crashes):
        d.mkdir(parents=True, exist_ok=True)
    prefix = " ".join([sys.executable, str(Path(__file__).resolve()), "--worker", name, "--work", str(work)])
    if rest:  # libFuzzer re-running us (merge): its own arguments
        argv = [prefix, *rest]
    else:
        argv = [prefix, f"-max_len={t.max_len}", f"-timeout={TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}", f"-artifact_prefix={crashes}/"]
        if t.dictionary:
            argv.append(f"-dict={_dict_file(t.dictionary, work / name / 'dict.txt')}")
        if merge:
            argv += ["-merge=1", str(work / name / "merged"), str(new)]
        else:
            argv += [str(new), str(corpus), f"-runs={cases}", f"-seed={seed}", "-print_final_stats=1", "-print_pcs=0"]
            if seconds:
                argv.append(f"-max_total_time={int(seconds)}")

    def one(data: bytes) -> None:
        targets.check(name, data)

    kwargs: dict[str, Any] = {}
    if t.mutator is not None:
        mutator = t.mutator

        def custom(data: bytes, max_size: int, seed_: int) -> bytes:
            return mutator(data, max_size, seed_) or b"\x00"

        kwargs["custom_mutator"] = custom
    atheris.Setup(argv, one, **kwargs)
    atheris.Fuzz()
    return 0


def _fallback(name: str, cases: int, seconds: float, seed: int, work: Path) -> int:
    """Without atheris: mutate corpus files (the target's own mutator or byte edits) and run every case."""
    import random

    targets = _targets_module()
    t = targets.TARGETS[name]
    rnd = random.Random(seed)
    pool = [p.read_bytes() for p in sorted((CORPUS / name).glob("*"))] or [b""]
    start = time.monotonic()
    done = 0
    while done < cases:
        done += 1
        base = rnd.choice(pool)
        data = t.mutator(base, t.max_len, rnd.randrange(2**32)) if t.mutator and rnd.random() < 0.7 else targets._mutate_bytes(base, t.max_len, rnd)
        try:
            targets.check(name, data)
        except Exception:
            out = CRASHES / name
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"crash-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print("=== Uncaught Python exception: ===", flush=True)
            traceback.print_exc()
            print(f"Test unit written to {path}", flush=True)
            return 1
        if seconds and time.monotonic() - start > seconds:
            break
    print(f"stat::number_of_executed_units: {done}\nFALLBACK: not coverage-guided (atheris not installed)", flush=True)
    return 0


# -- the parent: one subprocess per target ----------------------------------------------------------------------------

_WRITTEN = re.compile(r"Test unit written to (\S+)")
_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _cause(log: str) -> tuple[str, str]:
    """(exception line, "Type at file:line") of the crash in a worker's output."""
    exc = ""
    lines = log.splitlines()
    for i, ln in enumerate(lines):
        if "Uncaught Python exception" in ln:
            exc = next((x.strip() for x in lines[i + 1 :] if x.strip() and not x.startswith("Traceback")), "")
            break
    if not exc:
        for kind in ("libFuzzer: timeout", "libFuzzer: out-of-memory", "libFuzzer: deadly signal", "libFuzzer: fuzz target exited"):
            if kind in log:
                exc = kind.split(": ", 1)[1]
                break
    frames = [(f, int(n)) for f, n, _ in _FILE_LINE.findall(log) if "/fuzz/targets.py" not in f and "/fuzz/run.py" not in f]
    ours = [(f, n) for f, n in frames if "/egressaudit/" in f]
    where = ours[-1] if ours else (frames[-1] if frames else ("?", 0))
    path = where[0]
    if "/egressaudit/" in path:
        path = "egressaudit/" + path.split("/egressaudit/", 1)[1]
    else:
        path = path.split("site-packages/", 1)[-1]
    etype = exc.split(":", 1)[0].strip() or "crash"
    return exc[:300], f"{etype} at {path}:{where[1]}"


def _stat(log: str, key: str) -> float | None:
    m = re.search(rf"stat::{key}:\s+(\d+(?:\.\d+)?)", log)
    return float(m.group(1)) if m else None


def _corpus_size(name: str) -> tuple[int, int]:
    files = [p for p in (CORPUS / name).glob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _adopt(name: str, work: Path) -> int:
    """Move the merged new inputs into the committed corpus, smallest first, within the budget; returns how many."""
    merged = work / name / "merged"
    have = {hashlib.sha1(p.read_bytes()).hexdigest() for p in (CORPUS / name).glob("*") if p.is_file()}
    added = total = 0
    for p in sorted(merged.glob("*"), key=lambda p: (p.stat().st_size, p.name)):
        data = p.read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        if digest in have or len(data) > NEW_FILE_MAX or added >= NEW_FILES_MAX or total + len(data) > NEW_BYTES_MAX:
            continue
        (CORPUS / name / f"found-{digest[:16]}").write_bytes(data)
        have.add(digest)
        added += 1
        total += len(data)
    return added


def run_target(name: str, cases: int, seconds: float, seed: int, work: Path, merge: bool, collect: bool = False) -> dict[str, Any]:
    """Fuzz one target in a worker process, then merge what it found; ``collect``: read the log a worker left instead."""
    (work / name).mkdir(parents=True, exist_ok=True)
    base = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--work", str(work)]
    started = time.monotonic()
    log_path = work / name / "log.txt"
    returncode = 0
    if not collect:
        with open(log_path, "w") as log_file:  # streamed: `tail -f fuzz/work/<target>/log.txt` shows progress
            returncode = subprocess.run(
                [*base, "--cases", str(cases), "--seconds", str(seconds), "--seed", str(seed)], stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT
            ).returncode
    elapsed = time.monotonic() - started
    log = log_path.read_text(errors="replace")
    interrupted = "KeyboardInterrupt: stopping" in log or "libFuzzer: run interrupted" in log  # SIGINT: stopped, not a crash
    if collect:
        done = re.search(r"Done (\d+) runs in (\d+) second", log)
        rates = re.findall(r"exec/s: (\d+)", log)
        marks = re.findall(r"^#(\d+)\s", log, re.M)
        units, rate = (float(marks[-1]) if marks else 0.0), (float(rates[-1]) if rates else 0.0)
        elapsed = float(done.group(2)) if done else (units / rate if rate else 0.0)
        returncode = 0 if done or interrupted else 1
    executed = _stat(log, "number_of_executed_units")
    if executed is None:  # a crash: libFuzzer prints no final stats; its last status line counts the cases before it
        marks = re.findall(r"^#(\d+)\s", log, re.M)
        executed = float(marks[-1]) if marks else None
    result: dict[str, Any] = {
        "target": name,
        "cases": int(executed) if executed is not None else None,
        "seconds": round(elapsed, 1),
        "exec_per_s": _stat(log, "average_exec_per_sec"),
        "peak_rss_mb": _stat(log, "peak_rss_mb"),
        "new_units": _stat(log, "new_units_added"),
        "coverage_guided": "FALLBACK:" not in log,
        "seed": seed,
        "crashes": [],
        "exit": 0 if interrupted else returncode,
    }
    written = _WRITTEN.findall(log)
    if interrupted:
        result["interrupted"] = True
    if not interrupted and (returncode != 0 or written):
        exc, where = _cause(log)
        result["crashes"].append({"file": os.path.relpath(written[-1], ROOT) if written else None, "exception": exc, "cause": where})
    elif merge:
        shutil.rmtree(work / name / "merged", ignore_errors=True)
        (work / name / "merged").mkdir(parents=True)
        m = subprocess.run([*base, "--merge"], capture_output=True, text=True, errors="replace", cwd=ROOT)
        (work / name / "merge.txt").write_text(m.stdout + m.stderr)
        result["added_to_corpus"] = _adopt(name, work) if m.returncode == 0 else 0
    result["corpus_files"], result["corpus_bytes"] = _corpus_size(name)
    return result


def run_all(
    names: list[str],
    cases: int,
    seconds: float,
    seed: int,
    jobs: int,
    work: Path,
    merge: bool,
    quiet: bool = False,
    collect: bool = False,
    save: bool = True,
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    def one(name: str) -> dict[str, Any]:
        r = run_target(name, cases, seconds, seed, work, merge, collect)
        if not quiet:
            print(_row(r), flush=True)
            if save:
                _save([r])  # as each target ends: a long run interrupted keeps what it measured
        return r

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = list(pool.map(one, names))
    return results


def _row(r: dict[str, Any]) -> str:
    crash = r["crashes"][0]["cause"] + f" ({r['crashes'][0]['file']})" if r["crashes"] else "no crash"
    cases = f"{r['cases']:,}" if r["cases"] is not None else "?"
    size = f"corpus {r['corpus_files']:>3} files {r['corpus_bytes'] / 1024:>6.1f} KB"
    return f"{r['target']:<18} {cases:>9} cases {r['seconds']:>8.1f} s  {size}  {crash}"


def run(work_dir: Path, cases: int, seed: int) -> dict[str, Any]:
    """Every target for ``cases`` executions (the RELIABILITY.md runner interface); the committed corpus is not changed."""
    started = time.monotonic()
    targets = _targets_module()
    results = run_all(list(targets.TARGETS), cases, 0, seed, 2, Path(work_dir), merge=False, quiet=True)
    causes: dict[str, int] = {}
    for r in results:
        for c in r["crashes"]:
            causes[c["cause"]] = causes.get(c["cause"], 0) + 1
    return {
        "target": "fuzz",
        "inputs": sum(r["cases"] or 0 for r in results),
        "exit_codes": {},
        "tracebacks": sum(len(r["crashes"]) for r in results),
        "causes": causes,
        "seconds": round(time.monotonic() - started, 1),
        "targets": results,
    }


def reproduce(paths: list[Path]) -> int:
    """Run each file through its target (named by its folder) without atheris; 1 if any crashes."""
    targets = _targets_module()
    bad = 0
    for p in paths:
        name = targets.target_of(p.resolve())
        try:
            targets.check(name, p.read_bytes())
        except Exception:
            bad += 1
            print(f"CRASH {name} {p}", flush=True)
            traceback.print_exc()
        else:
            print(f"ok    {name} {p}")
    return 1 if bad else 0


def _save(results: list[dict[str, Any]]) -> None:
    """Merge results into fuzz/results.json (targets not run keep their last result and its date); runs may overlap."""
    import fcntl

    with open(FUZZ / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge_results(results)


def _merge_results(results: list[dict[str, Any]]) -> None:
    doc: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            doc = json.loads(RESULTS.read_text())
        except ValueError:
            doc = {}
    old = doc.get("targets", {})
    by = {r["target"]: r for r in old} if isinstance(old, list) else dict(old)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for r in results:
        by[r["target"]] = {**r, "corpus": r.get("corpus_files"), "date": now}
    try:
        import atheris  # noqa: F401

        engine = "atheris (libFuzzer)"
    except ImportError:
        engine = "fallback mutation loop"
    doc = {
        "command": "python fuzz/run.py " + " ".join(sys.argv[1:]),
        "date": now,
        "engine": engine,
        "python": sys.version.split()[0],
        "targets": {k: by[k] for k in sorted(by)},
        "totals": {
            "targets": len(by),
            "cases": sum(r.get("cases") or 0 for r in by.values()),
            "crashes": sum(len(r["crashes"]) for r in by.values()),
            "corpus_bytes": sum(r.get("corpus_bytes", 0) for r in by.values()),
        },
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000, help="executions per target (default 100,000)")
    ap.add_argument("--targets", help="comma-separated target names (default: all; --list shows them)")
    ap.add_argument("--seconds", type=float, default=0, help="stop a target after this many seconds even before --cases")
    ap.add_argument("--jobs", type=int, default=2, help="targets run at once (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=WORK, help="scratch folder for new inputs and logs (default fuzz/work)")
    ap.add_argument("--no-merge", action="store_true", help="leave the committed corpus as it is")
    ap.add_argument("--no-save", action="store_true", help="leave fuzz/results.json as it is (a short check run)")
    ap.add_argument("--reproduce", nargs="+", type=Path, metavar="FILE", help="run crash or corpus files through their target")
    ap.add_argument("--list", action="store_true", help="list the targets")
    ap.add_argument("--collect", action="store_true", help="record the runs whose logs are in --work (workers that outlived their runner)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--merge", action="store_true", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.worker:
        return worker(args.worker, args.cases, args.seconds, args.seed, args.work, args.merge, rest)
    if rest:
        ap.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.reproduce:
        return reproduce(args.reproduce)
    targets = _targets_module()
    if args.list:
        for name, t in targets.TARGETS.items():
            print(f"{name:<18} {t.doc}")
        return 0
    names = list(targets.TARGETS)
    if args.targets:
        names = [n.strip() for n in args.targets.split(",") if n.strip()]
        unknown = [n for n in names if n not in targets.TARGETS]
        if unknown:
            ap.error(f"unknown targets: {', '.join(unknown)} (see --list)")
    results = run_all(
        names, args.cases, args.seconds, args.seed, args.jobs, args.work, not args.no_merge, collect=args.collect, save=not args.no_save
    )
    crashed = [r for r in results if r["crashes"]]
    total = sum(r["cases"] or 0 for r in results)
    where = "not saved" if args.no_save else f"results in {os.path.relpath(RESULTS)}"
    print(f"{len(results)} targets, {total:,} cases, {len(crashed)} crashed; {where}")
    for r in crashed:
        c = r["crashes"][0]
        print(f"  {r['target']}: {c['cause']}: {c['exception']}\n    python fuzz/run.py --reproduce {c['file']}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
