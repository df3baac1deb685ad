"""What ``egressaudit check`` prints: text for a person, JSON for a program, JUnit XML for an organisation's CI.

JUnit: one ``<testsuite>`` per session, one ``<testcase>`` per policy rule (``classname`` the policy, ``name`` the
rule), a ``<failure>`` per failed rule whose message is its first violation and whose text lists all of them with
their evidence, ``<skipped>`` for a rule that could not be checked on that session.  The XML is written with the
standard library's ElementTree (escaping included).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any
from xml.etree import ElementTree as ET

from egressaudit import __version__
from egressaudit.policy.checks import Result, Violation
from egressaudit.report.measures import plural

FORMATS = ("text", "json", "junit")


def _evidence_line(e: dict[str, Any]) -> str:
    kind = e.get("row")
    if kind == "flow":
        name = f" {e['hostname']}" if e.get("hostname") else ""
        to = f"{e['transport']} to {e['remote_ip']}:{e['remote_port']}{name}"
        return f"flow {e['flow_id']} {to}, {e['bytes_out']:,} B sent, rule {e['rule']} [{e['community_id']}]"
    if kind == "http":
        what = f"{e['method']} {e['host']}{e['path'] or ''}" if e.get("method") else f"{e['kind']} {e['host']}"
        return f"request {e['exchange_id']}: {what}, {e['bytes_out']:,} B sent" + (f" (flow {e['flow_id']})" if e.get("flow_id") is not None else "")
    if kind == "field":
        return f"field {e['key_path']} in request {e['exchange_id']} to {e['host']} ({', '.join(e['detectors'])})"
    if kind == "state":
        return f"{e['state']} from {e['from']} for {e['seconds']} s: {e['bytes_out']:,} B"
    return json.dumps(e, sort_keys=True)


def _violation_lines(v: Violation, indent: str) -> list[str]:
    return [f"{indent}{v.summary}", *(f"{indent}    {_evidence_line(e)}" for e in v.evidence)]


def counts(results: Sequence[Result]) -> dict[str, int]:
    out = {"rules": len(results), "pass": 0, "fail": 0, "not_applicable": 0, "violations": 0}
    for r in results:
        out[r.status] += 1
        out["violations"] += len(r.violations)
    return out


def text(results: Sequence[Result]) -> str:
    lines: list[str] = []
    session = None
    for r in results:
        if r.session != session:
            session = r.session
            lines.append(f"session {session}")
        head = {"pass": "pass", "fail": "FAIL", "not_applicable": "not checked"}[r.status]
        what = f"  {head:<11} {r.policy} / {r.rule} ({r.kind})"
        if r.status == "pass":
            lines.append(f"{what}: {r.checked}")
        elif r.status == "not_applicable":
            lines.append(f"{what}: {r.reason}")
        else:
            lines.append(f"{what}: {plural(len(r.violations), 'violation')} in {r.checked}" + (f" ({r.why})" if r.why else ""))
            for v in r.violations:
                lines += _violation_lines(v, "      ")
        if r.source and r.status != "not_applicable":
            lines.append(f"      (countries and operators: {r.source['source']}, {r.source['package']})")
    c = counts(results)
    sessions = len({r.session for r in results})
    lines.append(
        f"{c['fail']} of {c['rules']} rule checks failed ({plural(c['violations'], 'violation')}) "
        f"in {plural(sessions, 'session')}; {c['pass']} passed, {c['not_applicable']} could not be checked"
    )
    return "\n".join(lines) + "\n"


def as_json(results: Sequence[Result], policies: Sequence[str]) -> str:
    doc = {"tool": f"egressaudit {__version__}", "policies": list(policies), "summary": counts(results), "results": [asdict(r) for r in results]}
    return json.dumps(doc, indent=2, default=str) + "\n"


def junit(results: Sequence[Result]) -> str:
    c = counts(results)
    root = ET.Element("testsuites", name="egressaudit check", tests=str(c["rules"]), failures=str(c["fail"]), skipped=str(c["not_applicable"]))
    by_session: dict[str, list[Result]] = {}
    for r in results:
        by_session.setdefault(r.session, []).append(r)
    for session, rs in by_session.items():
        cs = counts(rs)
        suite = ET.SubElement(
            root, "testsuite", name=session, tests=str(cs["rules"]), failures=str(cs["fail"]), skipped=str(cs["not_applicable"]), errors="0"
        )
        for r in rs:
            case = ET.SubElement(suite, "testcase", classname=r.policy, name=r.rule)
            if r.status == "fail":
                body = "\n".join(line for v in r.violations for line in _violation_lines(v, ""))
                first = r.violations[0].summary if r.violations else ""
                msg = f"{plural(len(r.violations), 'violation')}: {first}"
                ET.SubElement(case, "failure", message=msg, type=r.kind).text = body
            elif r.status == "not_applicable":
                ET.SubElement(case, "skipped", message=r.reason or "")
            else:
                ET.SubElement(case, "system-out").text = f"checked {r.checked}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render(results: Sequence[Result], fmt: str, policies: Sequence[str]) -> str:
    if fmt == "json":
        return as_json(results, policies)
    if fmt == "junit":
        return junit(results)
    return text(results)
