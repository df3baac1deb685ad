"""egressaudit: measure what a video-conferencing client sends, to whom, and of what kind.

The public API, the one notebooks and comparisons use (everything else is the package's inside)::

    import egressaudit as ea
    s = ea.open_session("audits/zoom-call")    # Session: .flows .http .fields .markers (DataFrames), .manifest
    many = ea.open_sessions(["audits/*"])      # the same tables over many sessions, with session_id, client, label
    ea.analyze_files(["call.pcapng"], "audits/call-1")   # what `egressaudit analyze` does
    ea.check_policies(["audits/call-1"], ["policies/"])  # what `egressaudit check` does: one result per rule and session
    data = ea.load_report("audits/call-1")               # the report's numbers: data.sentence, ea.report_tables(data),
    ea.report_figures(data)                               # and its figures (what notebooks/audit-one-session.ipynb shows)
    c = ea.compare("audits/*")                           # what `egressaudit compare` does: c.sentence, c.tables, ea.compare_figures(c)

Errors are :class:`EgressAuditError` and its tree (:mod:`egressaudit.errors`); the tables' columns are
:data:`egressaudit.schema.TABLES` (``egressaudit schema`` prints them).  Names are loaded when first used, so that
``import egressaudit`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("egressaudit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from egressaudit.audit.files import analyze_files
    from egressaudit.errors import (
        EgressAuditError,
        IncompleteError,
        InputError,
        NewerSchemaError,
        NotASessionError,
        OutputError,
        PolicyViolation,
        SessionExistsError,
        UsageError,
    )
    from egressaudit.policy import PolicyError, check_policies
    from egressaudit.report import load_report, report_figures
    from egressaudit.report.compare import Comparison, compare
    from egressaudit.report.compare_figures import compare_figures
    from egressaudit.report.export import report_tables
    from egressaudit.schema import SCHEMA_VERSION
    from egressaudit.session import Session, Sessions, open_session, open_sessions
    from egressaudit.session.manifest import Manifest
    from egressaudit.session.markers import add_marker
    from egressaudit.taxonomy import Category, DataClass, Party

_WHERE = {
    "open_session": "egressaudit.session", "open_sessions": "egressaudit.session", "Session": "egressaudit.session",
    "Sessions": "egressaudit.session", "Manifest": "egressaudit.session.manifest", "analyze_files": "egressaudit.audit.files",
    "add_marker": "egressaudit.session.markers",
    "SCHEMA_VERSION": "egressaudit.schema", "Category": "egressaudit.taxonomy", "DataClass": "egressaudit.taxonomy",
    "Party": "egressaudit.taxonomy", "EgressAuditError": "egressaudit.errors", "UsageError": "egressaudit.errors",
    "SessionExistsError": "egressaudit.errors", "InputError": "egressaudit.errors", "NotASessionError": "egressaudit.errors",
    "NewerSchemaError": "egressaudit.errors", "OutputError": "egressaudit.errors", "IncompleteError": "egressaudit.errors",
    "PolicyViolation": "egressaudit.errors", "PolicyError": "egressaudit.policy", "check_policies": "egressaudit.policy",
    "load_report": "egressaudit.report", "report_figures": "egressaudit.report", "report_tables": "egressaudit.report.export",
    "compare": "egressaudit.report.compare", "Comparison": "egressaudit.report.compare", "compare_figures": "egressaudit.report.compare_figures",
}  # fmt: skip

__all__ = [
    "SCHEMA_VERSION", "Category", "Comparison", "DataClass", "EgressAuditError", "IncompleteError", "InputError", "Manifest", "NewerSchemaError",
    "NotASessionError", "OutputError", "Party", "PolicyError", "PolicyViolation", "Session", "SessionExistsError", "Sessions",
    "UsageError", "__version__", "add_marker", "analyze_files", "check_policies", "compare", "compare_figures", "load_report",
    "open_session", "open_sessions", "report_figures", "report_tables",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'egressaudit' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
