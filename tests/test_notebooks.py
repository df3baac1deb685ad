"""The notebooks in notebooks/ run headless with papermill (parameters as a user passes them), on the sessions in
captures/ and, when ../shared is here, on real captures analysed first; twice, with the same tables and figures; and
export to HTML.  They hold no analysis of their own: every cell is a call into the package."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

papermill = pytest.importorskip("papermill", reason="papermill is a test dependency (pip install -e '.[dev]')")
nbconvert = pytest.importorskip("nbconvert", reason="nbconvert is a test dependency (pip install -e '.[dev]')")

from egressaudit.audit.files import analyze_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
LAB = ROOT / "captures" / "lab-call"
NDPI = ROOT.parent / "shared" / "captures" / "public" / "ndpi"
pytestmark = pytest.mark.timeout(300)


def _run(name: str, out: Path, **parameters: Any) -> dict[str, Any]:
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, cwd=str(ROOT), progress_bar=False, kernel_name="python3")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def _outputs(nb: dict[str, Any]) -> list[dict[str, str]]:
    """Each output's data by MIME type, hashed: what a reader sees (execution counts and times left out)."""
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            data = o.get("data") or {"stream": o.get("text", "")}
            out.append({k: hashlib.sha256(("".join(v) if isinstance(v, list) else str(v)).encode()).hexdigest() for k, v in data.items()})
    return out


def _text(nb: dict[str, Any]) -> str:
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            parts += ["".join(v) for k, v in (o.get("data") or {}).items() if k.startswith("text/")]
    return "\n".join(parts)


def _html(nb_path: Path) -> str:
    body, _ = nbconvert.HTMLExporter().from_filename(str(nb_path))
    return str(body)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_a_notebook_holds_no_logic_of_its_own(name: str) -> None:
    """Code cells are imports, assignments of calls into the package, and displays: no def, class, loop over rows,
    or arithmetic on the tables."""
    nb = json.loads((NOTEBOOKS / name).read_text())
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), "papermill needs a cell tagged parameters"
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs"), f"{name}: commit notebooks without outputs"
        src = "\n".join(ln for ln in "".join(cell["source"]).splitlines() if not ln.startswith("%"))
        tree = ast.parse(src)
        banned = (ast.FunctionDef, ast.ClassDef, ast.Lambda, ast.BinOp, ast.While, ast.ListComp, ast.DictComp, ast.GeneratorExp)
        assert not [n for n in ast.walk(tree) if isinstance(n, banned)], f"{name}: {src}"


def test_audit_one_session_on_the_lab_sample(tmp_path: Path) -> None:
    a = _run("audit-one-session.ipynb", tmp_path / "a.ipynb", session=str(LAB))
    b = _run("audit-one-session.ipynb", tmp_path / "b.ipynb", session=str(LAB))
    assert _outputs(a) == _outputs(b)  # deterministic: same session, same tables and figures
    text = _text(a)
    assert "In this 41-second session, 5.1% of the 1.2 MB that left the host was service-generated data" in text
    assert "muted" in text and "api2.amplitude.com" in text and "10.199." not in text  # states, third parties; redacted
    pngs = [o for c in a["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 4
    html = _html(tmp_path / "a.ipynb")
    assert "service-generated data" in html and html.count("data:image/png;base64,") >= 4  # (the figures, embedded: the page stands alone)


def test_audit_one_session_on_a_real_capture(tmp_path: Path) -> None:
    if not (NDPI / "teams.pcap").exists():
        pytest.skip(f"the real captures are not here ({NDPI})")
    analyze_files([NDPI / "teams.pcap"], tmp_path / "teams")
    nb = _run("audit-one-session.ipynb", tmp_path / "t.ipynb", session=str(tmp_path / "teams"))
    text = _text(nb)
    assert "left the host" in text and "microsoft" in text


def test_compare_vendors_on_the_shipped_sessions(tmp_path: Path) -> None:
    """As the README runs it: ``-p sessions 'captures/*'`` (a pattern; captures/janus-echo is not a session folder)."""
    a = _run("compare-vendors.ipynb", tmp_path / "a.ipynb", sessions="captures/*")
    b = _run("compare-vendors.ipynb", tmp_path / "b.ipynb", sessions="captures/*")
    assert _outputs(a) == _outputs(b)
    text = _text(a)
    assert "Across 1 vendor and 1 session, service-generated data was 5.1%" in text and "amplitude" in text
    html = _html(tmp_path / "a.ipynb")
    assert "Across 1 vendor" in html and html.count("data:image/png;base64,") >= 4


def test_compare_vendors_on_real_captures_with_both_engines(tmp_path: Path) -> None:
    if not (NDPI / "teams.pcap").exists():
        pytest.skip(f"the real captures are not here ({NDPI})")
    for name in ("teams", "webex", "zoom2"):
        analyze_files([NDPI / f"{name}.pcap"], tmp_path / "sessions" / name)
    analyze_files([LAB], tmp_path / "sessions" / "lab")
    pattern = str(tmp_path / "sessions" / "*")
    duck = _run("compare-vendors.ipynb", tmp_path / "duck.ipynb", sessions=pattern)
    dask = _run("compare-vendors.ipynb", tmp_path / "dask.ipynb", sessions=pattern, engine="dask")
    tables = [o for o in _outputs(duck)[:-1] if "image/png" not in o]  # (the figures and the last cell name the engine)
    assert tables == [o for o in _outputs(dask)[:-1] if "image/png" not in o] and len(tables) >= 7  # the same tables
    text = _text(duck)
    assert "Across 4 vendors and 4 sessions" in text and "crittercism" in text and "'name': 'dask'" in _text(dask)
