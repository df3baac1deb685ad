"""The CI slice of the fuzzing: every file of ``fuzz/corpus/<target>/`` through its target (``fuzz/targets.py``).

The corpus holds real payloads, scapy-built packets, the inputs atheris found new coverage with (``found-*``) and
every reproducer of issue 11 (``repro-*``): pcapng timestamps past int64 microseconds, 12-byte last blocks, a gzip
capture whose first deflate block is bad, HAR and .mitm files with non-UTF-8 text, integers too large for their
column, NaN times, deep nesting, an 11-digit tnetstring length, 10k-part multipart, decompression bombs.  A file
passes when its target gives the documented outcome within the CPU limit (see fuzz/targets.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
CORPUS = FUZZ / "corpus"


def _load(name: str, file: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FUZZ / file)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


T = _load("fuzz_targets", "targets.py")

#: Reproducers that still crash code another change is fixing: "target/file" -> what and where.  Strict: one that
#: passes fails the test, so the entry is removed when the fix lands.
KNOWN_OPEN: dict[str, str] = {}

FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file())


def _param(p: Path) -> object:
    rel = f"{p.parent.name}/{p.name}"
    marks = [pytest.mark.xfail(reason=KNOWN_OPEN[rel], strict=True)] if rel in KNOWN_OPEN else []
    return pytest.param(p, id=rel, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_corpus_file_gives_the_documented_outcome(path: Path) -> None:
    T.check(T.target_of(path), path.read_bytes())


def test_every_target_has_a_corpus_and_every_folder_a_target() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == set(T.TARGETS)
    assert all(any((CORPUS / t).glob("seed-*")) or any((CORPUS / t).glob("repro-*")) for t in T.TARGETS)


REPRODUCERS = [
    "pcapng/repro-tsresol-10e1.pcapng",
    "pcapng/repro-tsresol-2e0.pcapng",
    "pcapng/repro-tsresol-2e1.pcapng",
    "pcapng/repro-huge-tsoffset.pcapng",
    "pcapng/repro-epb-high-word-ffffffff.pcapng",
    "pcapng/repro-last-block-12-byte-epb.pcapng",
    "pcapng/repro-last-block-12-byte-idb.pcapng",
    "pcapng/repro-last-block-12-byte-pb.pcapng",
    "pcap/repro-gzip-bad-first-deflate-block.pcap.gz",
    "har/repro-non-utf8-text.har",
    "har/repro-status-2e31.har",
    "har/repro-time-inf.har",
    "har/repro-time-nan.har",
    "har/repro-query-many-keys.har",
    "mitm/repro-id-not-a-string.mitm",
    "mitm/repro-nested-1100.mitm",
    "mitm/repro-11-digit-length.mitm",
    "mitm/repro-empty.mitm",
    "mitm/repro-timestamps-nan-inf.mitm",
    "mitm/repro-non-utf8-request.mitm",
    "multipart/repro-10k-parts",
    "form/repro-many-keys",
]


def test_the_reproducers_of_issue_11_are_in_the_corpus() -> None:
    missing = [r for r in REPRODUCERS if not (CORPUS / r).is_file()]
    assert not missing
    assert len((CORPUS / "mitm/repro-11-digit-length.mitm").read_bytes()) == 16


@pytest.mark.parametrize("version", ["v4", "v6"])
def test_both_flow_tables_agree_on_a_fragment_after_the_idle_timeout(version: str) -> None:
    """A later fragment more than the idle timeout after its first fragment is an orphan in both tables (the columnar one
    counted it into the flow: found by the ip target)."""
    data = (CORPUS / "ip" / f"repro-fragment-after-idle-timeout-{version}").read_bytes()
    T.frames_target(data, T.fr.LINKTYPE_RAW)


def test_a_crash_a_broken_outcome_and_a_slow_case_all_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself can fail: an exception, a wrong result type and a case over the CPU limit are crashes."""
    seed = (CORPUS / "dns_udp" / "seed-scapy-1").read_bytes()
    T.check("dns_udp", seed)
    monkeypatch.setattr(T.dns, "parse_dns", lambda b: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        T.check("dns_udp", seed)
    monkeypatch.setattr(T.dns, "parse_dns", lambda b: "a message")
    with pytest.raises(T.Broken, match="DNS parser returned str"):
        T.check("dns_udp", seed)
    monkeypatch.undo()
    monkeypatch.setattr(T, "CASE_CPU_S", 0.0)
    with pytest.raises(T.Broken, match="of CPU"):
        T.check("inventory", (CORPUS / "inventory" / "seed-deep").read_bytes())


def test_a_body_over_its_ceiling_counts_as_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = (CORPUS / "gzip" / "repro-bomb-4x").read_bytes()
    T.check("gzip", bomb)
    real = T.bodies.decode_content
    monkeypatch.setattr(T.bodies, "decode_content", lambda raw, enc, limit, partial=False: real(raw, enc, limit * 8, partial=partial))
    with pytest.raises(T.Broken, match="over the"):
        T.check("gzip", bomb)


def test_reproduce_names_the_crashing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = _load("fuzz_run", "run.py")
    monkeypatch.setitem(sys.modules, "targets", T)
    ok = CORPUS / "stun" / "seed-binding"
    assert run.reproduce([ok]) == 0
    crash = tmp_path / "stun" / "crash-1"
    crash.parent.mkdir()
    crash.write_bytes(ok.read_bytes())
    monkeypatch.setattr(T.stun, "parse_stun", lambda b: [])
    assert run.reproduce([crash]) == 1
    assert f"CRASH stun {crash}" in capsys.readouterr().out
