"""Policies: what an organisation allows a client to send, as YAML files (:mod:`.model`), checked over session
tables (:mod:`.checks`), reported as text, JSON or JUnit XML (:mod:`.output`).  What ``egressaudit check`` runs::

    import egressaudit as ea
    results = ea.check_policies(["audits/zoom-1"], ["policies/no-third-party-telemetry.yaml"])
    failed = [r for r in results if r.status == "fail"]      # each with .violations[i].summary and .evidence
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from egressaudit.policy.checks import Result, Violation, check
from egressaudit.policy.model import Policy, PolicyError, load

__all__ = ["Policy", "PolicyError", "Result", "Violation", "check", "check_policies", "load", "policy_files"]


def policy_files(paths: Iterable[str | Path]) -> list[Path]:
    """The policy files named: a folder stands for its ``*.yaml`` (sorted); PolicyError for a path that is missing."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise PolicyError(f"{p}: no policy files (*.yaml) in this folder")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise PolicyError(f"{p}: no such policy file")
    return out


def check_policies(sessions: Iterable[str | Path], policies: Iterable[str | Path]) -> list[Result]:
    """Every rule of every policy over every session (read with :func:`egressaudit.open_session`), in that order."""
    from egressaudit.session import open_session

    loaded = [load(p) for p in policy_files(policies)]
    results: list[Result] = []
    for path in sessions:
        s = open_session(path)
        for pol in loaded:
            results += check(s, pol)
    return results
