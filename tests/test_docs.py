"""The documentation generated from code stays in step with it."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from egressaudit.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_schema_doc_is_generated_from_the_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert (ROOT / "docs" / "schema.md").read_text() == result.output, "regenerate: egressaudit schema > docs/schema.md"


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", quick, re.S)
    lines = [ln for block in commands for ln in block.strip().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 2, lines
    assert "egressaudit analyze" in lines[0] and "egressaudit report" in lines[0]
    assert lines[1] in (ROOT / ".ci" / "run").read_text()


def test_the_exit_codes_are_the_same_in_the_readme_and_the_cli() -> None:
    from egressaudit import errors

    readme = (ROOT / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    in_readme = {int(c) for c in re.findall(r"^\| (\d+) \|", readme, re.M)}
    in_doc = {int(c) for c in re.findall(r"^\* (\d+) ", errors.__doc__ or "", re.M)}
    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert in_readme == in_doc == constants
