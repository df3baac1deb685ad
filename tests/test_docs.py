"""The documentation generated from code stays in step with it."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
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
    _import_every_error()
    from egressaudit import errors

    readme = (ROOT / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    in_readme = {int(c) for c in re.findall(r"^\| (\d+) \|", readme, re.M)}
    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    tree = {cls.exit_code for cls in _subclasses(errors.EgressAuditError)} - {errors.EXIT_INTERNAL}
    in_doc = {int(c) for c in re.findall(r"^ +[├└│ ]*── \w+ +(\d+) ", errors.__doc__ or "", re.M)}
    assert tree == in_doc == constants - {errors.EXIT_OK, errors.EXIT_INTERNAL, errors.EXIT_INTERRUPTED}
    assert in_readme == constants


def _import_every_error() -> None:
    """Every module of the package (error classes are defined beside the code that raises them)."""
    import pkgutil

    import egressaudit

    for mod in pkgutil.walk_packages(egressaudit.__path__, "egressaudit."):
        if mod.name not in ("egressaudit.__main__", "egressaudit.http.mitm_script"):  # (one runs the CLI, one is mitmdump's script)
            importlib.import_module(mod.name)


def _subclasses(cls: type) -> set[type]:
    out = set(cls.__subclasses__())
    for c in list(out):
        out |= _subclasses(c)
    return out


def test_every_error_of_the_package_is_in_the_tree_drawn_in_errors_py() -> None:
    """The tree in errors.py's docstring names every error class a command can meet, each under its exit code."""
    _import_every_error()
    from egressaudit import errors

    drawn = set(re.findall(r"── (\w+)", errors.__doc__ or ""))
    named = {c.__name__ for c in _subclasses(errors.EgressAuditError)}
    assert named <= drawn, f"not drawn in errors.py: {sorted(named - drawn)}"


def test_the_readme_python_api_example_runs(tmp_path: Path) -> None:
    """The README's Python example, run as a user would (from a folder holding the repository's captures)."""
    readme = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    (tmp_path / "captures").symlink_to(ROOT / "captures")
    (tmp_path / "example.py").write_text(code)
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("selfhosted 20 flows"), r.stdout
    assert "customer_content" in r.stdout and "selfhosted" in r.stdout.splitlines()[-1] or "selfhosted" in r.stdout
    assert (tmp_path / "audits" / "api-example" / "flows.parquet").exists()
