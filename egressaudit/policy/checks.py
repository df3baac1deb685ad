"""Policy rules checked over session tables: each result names its rule, and each violation its evidence.

:func:`check` runs every rule of a policy (:mod:`egressaudit.policy.model`) over one session, read through the public
API (:func:`egressaudit.open_session`), and returns one :class:`Result` per rule: ``pass``, ``fail`` with its
violations, or ``not_applicable`` with the reason (a rule about call states on a session without markers, a rule about
bodies on a session recorded without the proxy): a rule that could not be checked is said, never counted as kept.

A violation is one destination (vendor and host or address), one call state or one field, with the rows that show
it: flows (``flow_id``, Community ID, remote end, bytes sent), HTTP exchanges (``exchange_id``, method, host, path as
stored, i.e. with query values redacted), fields (key path, detectors; values are never shown).  Local addresses are
not part of the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from egressaudit.policy.model import ContentDestinations, MaxRate, NoCountries, NoIdentifiers, NoThirdParty, Policy
from egressaudit.report.measures import plural, words
from egressaudit.session import Session

Status = Literal["pass", "fail", "not_applicable"]
EXAMPLES = 5
"""Rows of evidence kept per violation (the counts cover them all)."""


@dataclass
class Violation:
    summary: str
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Result:
    policy: str
    rule: str
    kind: str
    session: str
    status: Status
    why: str | None = None
    checked: str = ""
    reason: str | None = None
    violations: list[Violation] = field(default_factory=list)
    source: dict[str, str] | None = None


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} kB"


def _egress(s: Session) -> pd.DataFrame:
    f = s.flows
    return f[~f["is_local"].astype(bool)] if len(f) else f


def _sent(s: Session) -> pd.DataFrame:
    """HTTP exchanges and the WebSocket messages the client sent (not those it received)."""
    h = s.http
    return h[(h["kind"] != "websocket") | (h["direction"] != "in")] if len(h) else h


def _opt(v: Any) -> Any:
    """A table value for JSON: None for a null, a plain int for an integer."""
    if v is None or (not isinstance(v, list | tuple) and pd.isna(v)):
        return None
    return int(v) if isinstance(v, int) or hasattr(v, "__index__") else v


FLOW_EVIDENCE = ("flow_id", "community_id", "transport", "remote_ip", "remote_port", "hostname", "category", "rule", "bytes_out")
HTTP_EVIDENCE = ("exchange_id", "kind", "method", "host", "path", "category", "flow_id", "bytes_out")


def _flow_evidence(f: pd.DataFrame) -> list[dict[str, Any]]:
    rows = f.sort_values("bytes_out", ascending=False).head(EXAMPLES)
    return [{"row": "flow", **{k: _opt(r[k]) for k in FLOW_EVIDENCE}} for r in rows.to_dict("records")]


def _http_evidence(h: pd.DataFrame) -> list[dict[str, Any]]:
    rows = h.sort_values("ts_start").head(EXAMPLES)
    return [{"row": "http", **{k: _opt(r[k]) for k in HTTP_EVIDENCE}} for r in rows.to_dict("records")]


def _by_destination(flows: pd.DataFrame, http: pd.DataFrame, what: Callable[[str, str], str]) -> list[Violation]:
    """One violation per (vendor, destination): the flows and the exchanges that went there."""
    f = flows.assign(_dest=flows["hostname"].fillna(flows["remote_ip"]).astype(str), _vendor=flows["vendor"].fillna("(none)").astype(str))
    h = http.assign(_dest=http["host"].fillna(http["remote_ip"]).astype(str), _vendor=http["vendor"].fillna("(none)").astype(str))
    keys = sorted(set(zip(f["_vendor"], f["_dest"], strict=True)) | set(zip(h["_vendor"], h["_dest"], strict=True)))
    out = []
    for vendor, dest in keys:
        ff = f[(f["_vendor"] == vendor) & (f["_dest"] == dest)]
        hh = h[(h["_vendor"] == vendor) & (h["_dest"] == dest)]
        cats = sorted(set(ff["category"].astype(str)) | set(hh["category"].astype(str)))
        parts = []
        if len(ff):
            parts.append(f"{plural(len(ff), 'flow')} ({_kb(float(ff['bytes_out'].sum()))} sent)")
        if len(hh):
            ex = hh.sort_values("ts_start").iloc[0]
            eg = f"{ex['method']} {ex['path']}" if isinstance(ex["method"], str) else str(ex["kind"])
            parts.append(f"{plural(len(hh), 'request')} ({_kb(float(hh['bytes_out'].sum()))} sent; e.g. {eg})")
        summary = f"{what(vendor, dest)}: {', '.join(words(c) for c in cats)}, {' and '.join(parts)}"
        out.append(Violation(summary, _flow_evidence(ff) + _http_evidence(hh)))
    return out


def _checked(s: Session, flows: pd.DataFrame, http: pd.DataFrame) -> str:
    parts = [f"{plural(len(flows), 'flow')} leaving the host"] if s.has("flows") else []
    if s.has("http"):
        parts.append(f"{plural(len(http), 'HTTP request and WebSocket message', 'HTTP requests and WebSocket messages')} sent")
    return " and ".join(parts)


def check_no_third_party(s: Session, r: NoThirdParty) -> tuple[Status, str, str | None, list[Violation]]:
    flows, http = _egress(s), _sent(s)
    if flows.empty and http.empty:
        return "not_applicable", "", "the session has no egress (no flows or HTTP exchanges)", []
    cats = {c.value for c in r.categories}

    def bad(t: pd.DataFrame) -> pd.DataFrame:
        keep = (t["party"] == "third") & t["category"].isin(cats) & ~t["vendor"].isin(r.allow)
        return t[keep.fillna(False).astype(bool)]

    v = _by_destination(bad(flows), bad(http), lambda vendor, dest: f"{vendor} (third party) at {dest}")
    return ("fail" if v else "pass"), _checked(s, flows, http), None, v


def check_content_destinations(s: Session, r: ContentDestinations) -> tuple[Status, str, str | None, list[Violation]]:
    flows, http = _egress(s), _sent(s)
    if flows.empty and http.empty:
        return "not_applicable", "", "the session has no egress (no flows or HTTP exchanges)", []
    cats, parties = {c.value for c in r.categories}, {p.value for p in r.parties}

    def bad(t: pd.DataFrame) -> pd.DataFrame:
        keep = t["category"].isin(cats) & ~t["party"].fillna("unknown").isin(parties)
        return t[keep.fillna(False).astype(bool)]

    def what(vendor: str, dest: str) -> str:
        party = set(bad(flows).loc[lambda t: t["vendor"].fillna("(none)") == vendor, "party"]) | set(
            bad(http).loc[lambda t: t["vendor"].fillna("(none)") == vendor, "party"]
        )
        return f"{vendor} ({', '.join(sorted(map(str, party)))} party) at {dest}"

    v = _by_destination(bad(flows), bad(http), what)
    return ("fail" if v else "pass"), _checked(s, flows, http), None, v


def check_max_rate(s: Session, r: MaxRate) -> tuple[Status, str, str | None, list[Violation]]:
    from egressaudit.report.measures import epoch_seconds
    from egressaudit.report.states import egress_by_state

    flows = _egress(s)
    if flows.empty:
        return "not_applicable", "", "the session has no packet flows (the rate is measured on captured packets)", []
    limit = r.max_kb_per_min * 1000
    cls = r.data_class.value
    if r.while_ is None:
        t0, t1 = float(epoch_seconds(flows["ts_start"]).min()), float(epoch_seconds(flows["ts_end"]).max())
        minutes = max(t1 - t0, 1.0) / 60
        sent = float(flows.loc[flows["data_class"] == cls, "bytes_out"].sum())
        checked = f"{words(cls)} over the whole session ({minutes:.1f} min)"
        if sent / minutes <= limit:
            return "pass", checked, None, []
        rows = flows[flows["data_class"] == cls]
        summary = f"{_kb(sent / minutes)}/min of {words(cls)} over {minutes:.1f} min (limit {r.max_kb_per_min:g} kB/min)"
        return "fail", checked, None, [Violation(summary, _flow_evidence(rows))]
    if s.markers.empty:
        return "not_applicable", "", f"the session has no call-state markers, so 'while {', '.join(r.while_)}' cannot be checked", []
    by = egress_by_state(flows, s.markers, s.http if len(s.http) else None, s.streams if len(s.streams) else None)
    by = by[by["state"].isin(r.while_)]
    if by.empty or float(by["seconds"].sum()) <= 0:
        return "not_applicable", "", f"the call was never in {', '.join(r.while_)} (no such marker)", []
    out = []
    for state, g in by.groupby("state", sort=False):
        seconds = float(g["seconds"].sum())
        if seconds <= 0:
            continue
        rate = float(g[cls].sum()) / (seconds / 60)
        if rate > limit:
            ev = [
                {"row": "state", "state": state, "from": str(x["from"]), "seconds": round(float(x["seconds"]), 1), "bytes_out": int(x[cls])}
                for x in g.to_dict("records")
            ]
            summary = f"while {state}: {_kb(rate)}/min of {words(cls)} over {seconds:.0f} s (limit {r.max_kb_per_min:g} kB/min)"
            out.append(Violation(summary, ev[:EXAMPLES]))
    checked = f"{words(cls)} while {', '.join(r.while_)} ({float(by['seconds'].sum()):.0f} s)"
    return ("fail" if out else "pass"), checked, None, out


def check_no_identifiers(s: Session, r: NoIdentifiers) -> tuple[Status, str, str | None, list[Violation]]:
    fields = s.fields
    if not s.has("fields") and not s.has("http"):
        return "not_applicable", "", "the session has no HTTP bodies inventoried (record the client through the proxy)", []
    cats, wanted = {c.value for c in r.categories}, set(r.detectors)
    f = fields[fields["category"].isin(cats)] if len(fields) else fields
    hit = f[f["detectors"].map(lambda d: d is not None and bool(wanted & set(d)))] if len(f) else f
    out = []
    for (host, key), g in hit.groupby(["host", "key_path"], sort=True):
        found = sorted({d for ds in g["detectors"] for d in ds} & wanted)
        ev = [{"row": "field", "exchange_id": _opt(x), "host": host, "key_path": key, "detectors": found} for x in g["exchange_id"].head(EXAMPLES)]
        summary = f"{', '.join(found)} in {key} sent to {host} ({plural(int(g['count'].sum()), 'value')} in {plural(len(g), 'body', 'bodies')})"
        out.append(Violation(summary, ev))
    checked = f"{plural(len(f), 'field')} of {', '.join(sorted(cats))} bodies"
    return ("fail" if out else "pass"), checked, None, out


def check_no_countries(s: Session, r: NoCountries) -> tuple[Status, str, str | None, list[Violation]]:
    from egressaudit.classify import geo

    flows, http = _egress(s), _sent(s)
    if flows.empty and http.empty:
        return "not_applicable", "", "the session has no egress (no flows or HTTP exchanges)", []
    ips = pd.concat([flows["remote_ip"], http["remote_ip"]]) if len(http) else flows["remote_ip"]
    where = geo.places(ips).set_index("ip")
    country = where["country"].to_dict()
    operator = where["operator"].to_dict()
    banned = set(r.countries)

    def bad(t: pd.DataFrame) -> pd.DataFrame:
        return t[np.array([country.get(ip) in banned for ip in t["remote_ip"].astype(object)], dtype=bool)]

    def what(vendor: str, dest: str) -> str:
        ips = set(bad(flows).loc[lambda t: t["hostname"].fillna(t["remote_ip"]).astype(str) == dest, "remote_ip"])
        ips |= set(bad(http).loc[lambda t: t["host"].fillna(t["remote_ip"]).astype(str) == dest, "remote_ip"]) if len(http) else set()
        places = sorted({f"{country.get(ip)}, {operator.get(ip) or 'operator unknown'}" for ip in ips})
        return f"{dest} ({'; '.join(places)}; vendor {vendor})"

    v = _by_destination(bad(flows), bad(http), what)
    known = sum(1 for c in country.values() if isinstance(c, str))
    checked = f"{plural(len(country), 'remote address', 'remote addresses')} ({known:,} with a country)"
    return ("fail" if v else "pass"), checked, None, v


CHECKS: dict[type[Any], Callable[[Session, Any], tuple[Status, str, str | None, list[Violation]]]] = {
    NoThirdParty: check_no_third_party,
    ContentDestinations: check_content_destinations,
    MaxRate: check_max_rate,
    NoIdentifiers: check_no_identifiers,
    NoCountries: check_no_countries,
}


def check(session: Session, policy: Policy) -> list[Result]:
    """Every rule of ``policy`` over ``session``: one :class:`Result` per rule, in the policy's order."""
    results = []
    for rule in policy.rules:
        status, checked, reason, violations = CHECKS[type(rule)](session, rule)
        res = Result(policy.name, rule.id, rule.kind, session.session_id, status, rule.why, checked, reason, violations)
        if isinstance(rule, NoCountries):
            from egressaudit.classify import geo

            res.source = geo.info()
        results.append(res)
    return results
