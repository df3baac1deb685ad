"""Dependency audit (pip-audit) of exactly what egressaudit installs: its runtime and dev dependencies, as pinned now.

Policy (SECURITY.md): a known vulnerability in any of them fails CI, unless its advisory id is listed in
.ci/pip-audit-ignore.toml with the reason it does not apply to egressaudit and a date by which it is reviewed again
(an entry past that date fails CI too).  A vulnerability service that cannot be reached is not a finding: the
audit says in one line how many packages it could not audit, and CI goes on.

Usage: python .ci/audit_deps.py  (exit 0: no finding, or the service unreachable; 1: findings; 2: broken setup)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
IGNORE_FILE = HERE / "pip-audit-ignore.toml"
ROOT_EXTRAS = {"dev", "test"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "egressaudit", extras: set[str] = ROOT_EXTRAS) -> dict[str, str]:
    """Installed name -> version of ``root`` and everything it requires (with ``extras`` at the root), transitively."""
    seen: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, extras)]
    while todo:
        name, want = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency for another platform or Python
        key = _norm(dist.metadata["Name"])
        first = key not in seen
        seen[key] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (want or {""})):
                continue
            if _norm(req.name) == _norm(root):  # egressaudit[dev] -> egressaudit[test]
                todo.append((req.name, set(req.extras)))
            elif first or req.extras:
                todo.append((req.name, set(req.extras)))
    seen.pop(_norm(root), None)
    return seen


def ignored(today: dt.date) -> tuple[list[str], list[str]]:
    """(advisory ids to ignore, problems with the ignore file)."""
    if not IGNORE_FILE.exists():
        return [], []
    data = tomllib.loads(IGNORE_FILE.read_text(encoding="utf-8"))
    ids, problems = [], []
    for entry in data.get("ignore", []):
        vid, reason, review = entry.get("id"), entry.get("reason"), entry.get("review_by")
        if not vid or not reason or not isinstance(review, dt.date):
            problems.append(f"{IGNORE_FILE.name}: entry {entry!r} needs id, reason and review_by (a date)")
        elif review < today:
            problems.append(f"{IGNORE_FILE.name}: {vid} was to be reviewed by {review}: review it, then move the date or remove it")
        else:
            ids.append(vid)
    return ids, problems


def main() -> int:
    pins = closure()
    if not pins:
        print("dependency audit: egressaudit is not installed (pip install -e '.[dev]' first)")
        return 2
    ids, problems = ignored(dt.date.today())
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        reqs = f.name
    cmd = [sys.executable, "-m", "pip_audit", "--disable-pip", "--no-deps", "-r", reqs, "--format", "json", "--progress-spinner", "off"]
    for vid in ids:
        cmd += ["--ignore-vuln", vid]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    Path(reqs).unlink()
    try:
        report = json.loads(r.stdout)
    except ValueError:
        print(f"dependency audit: pip-audit failed ({r.returncode}): {' '.join(r.stderr.split())[:400]}")
        return 2
    deps = report.get("dependencies", [])
    findings = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    for name, version, v in findings:
        fixes = ", ".join(v.get("fix_versions") or []) or "no fixed release yet"
        print(f"VULNERABLE {name} {version}: {v['id']} ({', '.join(v.get('aliases') or [])}) fixed in: {fixes}")
    for p in problems:
        print(f"IGNORE FILE {p}")
    print(
        f"dependency audit: {len(pins)} packages (egressaudit's runtime and dev dependencies), {audited} audited, "
        f"{len(findings)} known vulnerabilities, {len(ids)} advisories ignored by policy"
        + (f"; {len(skipped)} could not be audited ({skipped[0]['skip_reason']}, ...)" if skipped else "")
    )
    if skipped and not audited:
        print("dependency audit: the vulnerability service could not be reached from this machine; nothing was audited (not a failure)")
    return 1 if findings or problems else 0


if __name__ == "__main__":
    sys.exit(main())
