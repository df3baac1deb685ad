"""What the report's flows part (:mod:`~egressaudit.report.summary`), its HTTP part
(:mod:`~egressaudit.report.http_summary`) and ``egressaudit inventory`` share: the orders, how a missing value is
labelled, shares, byte and percent formats, the address redactor, and the field inventory's counts.

It imports nothing of the report, so every part can import it: the parts no longer import each other to reach it.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from egressaudit.taxonomy import Category, DataClass, Party

#: Placeholder for a missing vendor / service / hostname in tables.
NONE = "(none)"

#: Order of the data classes in tables and figures.
DATA_CLASS_ORDER: list[str] = [d.value for d in DataClass]
CATEGORY_ORDER: list[str] = [c.value for c in Category]
PARTY_ORDER: list[str] = [p.value for p in Party]

#: Detectors whose values look like customer content (a leak when found outside content uploads).
CONTENT_DETECTORS = frozenset(("meeting_title", "chat_text", "file_name", "transcript"))
#: Order in which content-leak detectors are listed.
CONTENT_ORDER: tuple[str, ...] = ("meeting_title", "chat_text", "file_name", "transcript")


def label(s: pd.Series) -> pd.Series:
    """Strings with nulls (None, NaN) and empty strings shown as :data:`NONE`."""
    out = s.astype(object).where(s.notna(), NONE)
    return out.map(lambda v: NONE if v == "" else str(v))


def order(values: Iterable[Any], known: list[str]) -> list[int]:
    """The rank of each value in ``known`` (values not in it after all of them)."""
    rank = {v: i for i, v in enumerate(known)}
    return [rank.get(str(v), len(known)) for v in values]


def share(part: float, total: float) -> float | None:
    """``part / total``, or None when there is nothing to divide."""
    return part / total if total else None


def human_bytes(n: float | int | None) -> str:
    """Bytes in decimal units: "0 B", "950 B", "1.2 kB", "3.4 MB", "1.0 GB"."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    v = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if unit == "B" and abs(v) < 1000:
            return f"{int(v)} B"
        if round(abs(v), 1) < 1000 or unit == "TB":
            return f"{v:.1f} {unit}"
        v /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def percent(x: float | None) -> str:
    """A share as "12.3%", or "-" when undefined."""
    return "-" if x is None else f"{100 * x:.1f}%"


class Redactor:
    """Replaces the local host's addresses by stable tokens ("local-1", "local-2", ...).

    The local addresses are those of the audited host (``local_ip``), of the
    remote ends on the local network (``remote_ip`` of local flows), the
    session's ``local_hosts`` and any further ``addresses`` (the HTTP
    clients' ``client_ip``); they are numbered in the order of
    ``local_hosts`` first, then by address.  Remote addresses (the vendors'
    servers) are left as they are.  A disabled redactor changes nothing.
    """

    def __init__(self, flows: pd.DataFrame, session: dict[str, Any] | None = None, enabled: bool = True, addresses: Iterable[Any] = ()) -> None:
        self.enabled = enabled
        hosts = [str(h) for h in (session or {}).get("local_hosts") or [] if h]
        found: set[str] = {str(a) for a in addresses if isinstance(a, str) and a}
        if not flows.empty:
            found.update(str(x) for x in flows["local_ip"].dropna())
            found.update(str(x) for x in flows.loc[flows["is_local"].astype(bool), "remote_ip"].dropna())
        rest = sorted(found - set(hosts), key=_ip_sort_key)
        self.tokens: dict[str, str] = {}
        for ip in [*hosts, *rest]:
            self.tokens.setdefault(ip, f"local-{len(self.tokens) + 1}")

    def __call__(self, value: Any) -> Any:
        if self.enabled and isinstance(value, str):
            return self.tokens.get(value, value)
        return value

    def frame(self, df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
        """``df`` with the addresses in ``columns`` replaced."""
        if not self.enabled or df.empty:
            return df
        return df.assign(**{c: df[c].astype(object).map(self) for c in columns if c in df.columns})


def _ip_sort_key(s: str) -> tuple[int, int, str]:
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        return (9, 0, s)
    return (a.version, int(a), s)
