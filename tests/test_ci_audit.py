"""The dependency audit's own logic (.ci/audit_deps.py): which packages it audits and how the ignore list is kept honest."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("audit_deps", ROOT / ".ci" / "audit_deps.py")
assert spec is not None and spec.loader is not None
audit_deps = importlib.util.module_from_spec(spec)
sys.modules["audit_deps"] = audit_deps
spec.loader.exec_module(audit_deps)


def test_the_audit_covers_what_egressaudit_installs_and_nothing_else() -> None:
    pins = audit_deps.closure()
    # runtime dependencies, their dependencies, and the dev/test extras
    assert {"mitmproxy", "pyarrow", "scapy", "numpy", "cryptography", "pytest", "ruff", "mypy"} <= set(pins)
    assert "egressaudit" not in pins
    assert "pip-audit" in pins  # (the auditor audits itself)
    assert all(v and v[0].isdigit() for v in pins.values())


def test_an_ignored_advisory_needs_a_reason_and_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "ignore.toml"
    f.write_text(
        '[[ignore]]\nid = "GHSA-aaaa"\nreason = "never called"\nreview_by = 2027-01-01\n'
        '[[ignore]]\nid = "GHSA-bbbb"\nreason = "old"\nreview_by = 2026-01-01\n'
        '[[ignore]]\nid = "GHSA-cccc"\n'
    )
    monkeypatch.setattr(audit_deps, "IGNORE_FILE", f)
    ids, problems = audit_deps.ignored(dt.date(2026, 11, 24))
    assert ids == ["GHSA-aaaa"]
    assert len(problems) == 2 and "GHSA-bbbb was to be reviewed by 2026-01-01" in problems[0] and "needs id, reason" in problems[1]


def test_the_committed_ignore_list_is_valid() -> None:
    ids, problems = audit_deps.ignored(dt.date.today())
    assert problems == []
