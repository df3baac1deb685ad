"""The party policy: which vendor's client a session audits, decided once from all its tables, and who is first party.

A flow or an exchange is *first party* when its vendor is the audited client's vendor or one of its affiliates (its
signature file's ``affiliates``), *third party* for any other vendor, *unknown* without one.  The audited client is
the one the user named (``--client``), else the conferencing vendor whose *call* the session carries, summed over the
flows and the HTTP exchanges alike, so a session holding both tables names one client (issue 16, point 5):

- only media (counted twice) and signalling say whose call it is.  Telemetry, sign-in, static assets and updates are
  what every app sends to the platforms and SDKs it embeds (Google's Firebase, Crashlytics and Analytics, Microsoft's
  App Center ...), whatever it is: they do not make a vendor the client, and only break ties;
- a vendor's media counts only when it is a real part of the session's media (:data:`MIN_MEDIA_SHARE`): a STUN binding
  to a public STUN server (Google's stun.l.google.com serves many apps) is probing, not where the call went;
- no such vendor, no client: a call whose media and signalling reach no known vendor is not given to whoever sent
  telemetry along.

:func:`decide_audited_client` says why it chose (:class:`ClientChoice`); :func:`choose_audited_client` gives the
vendor alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from egressaudit.signatures import SignatureDB
from egressaudit.taxonomy import Category, Party

#: categories that say whose call a session is, and how much a byte of each counts
WEIGHTS = {Category.media: 2, Category.signaling: 1}
#: a vendor's share of the session's media bytes below which its media is probing, not the call (see the docstring)
MIN_MEDIA_SHARE = 0.05

Usage = tuple[str | None, Category | str, int]
"""(vendor, category, bytes) of one flow or exchange."""


@dataclass(frozen=True)
class ClientChoice:
    """The audited client :func:`decide_audited_client` found (None: none), and why, in a sentence for the manifest."""

    vendor: str | None
    reason: str


@dataclass
class _Seen:
    order: int
    media: int = 0
    signaling: int = 0
    telemetry: int = 0
    other: int = 0


def decide_audited_client(rows: Iterable[Usage], db: SignatureDB) -> ClientChoice:
    """The conferencing vendor with the most weighted call bytes (:data:`WEIGHTS`, :data:`MIN_MEDIA_SHARE`), and why.
    Ties go to the vendor with more telemetry, then to the vendor seen first."""
    seen: dict[str, _Seen] = {}
    media_total = 0
    for vendor, category, nbytes in rows:
        cat = Category(category)
        if cat == Category.media:
            media_total += nbytes
        if not vendor or db.vendor_kind(vendor) != "conferencing":
            continue
        v = seen.get(vendor)
        if v is None:
            v = seen[vendor] = _Seen(len(seen))
        if cat == Category.media:
            v.media += nbytes
        elif cat == Category.signaling:
            v.signaling += nbytes
        elif cat == Category.telemetry:
            v.telemetry += nbytes
        else:
            v.other += nbytes
    scores: dict[str, int] = {}
    left_out: list[str] = []
    for vendor, v in seen.items():
        media = v.media if v.media >= MIN_MEDIA_SHARE * media_total else 0
        if v.media and not media:
            left_out.append(f"{vendor}'s {v.media:,} B of media (under {MIN_MEDIA_SHARE:.0%} of the session's {media_total:,} B: probing)")
        score = WEIGHTS[Category.media] * media + WEIGHTS[Category.signaling] * v.signaling
        if score:
            scores[vendor] = score
        if v.telemetry or v.other:
            left_out.append(f"{vendor}'s {_what(v)}")
    tail = [f"not counted: {', '.join(left_out)}"] if left_out else []
    if not scores:
        return ClientChoice(None, "; ".join(["no conferencing vendor carries the session's media or signalling", *tail]))
    ranked = sorted(scores, key=lambda k: (-scores[k], -seen[k].telemetry, seen[k].order))
    best = ranked[0]
    reason = [f"{best}: the most call traffic of the conferencing vendors ({_call(seen[best], media_total)})"]
    if len(ranked) > 1:
        reason.append(f"next: {ranked[1]} ({_call(seen[ranked[1]], media_total)})")
    return ClientChoice(best, "; ".join([*reason, *tail]))


def choose_audited_client(rows: Iterable[Usage], db: SignatureDB) -> str | None:
    """The vendor of :func:`decide_audited_client`, or None when no conferencing vendor carries a call."""
    return decide_audited_client(rows, db).vendor


def _call(v: _Seen, media_total: int) -> str:
    parts = []
    if v.media and v.media >= MIN_MEDIA_SHARE * media_total:
        parts.append(f"{v.media:,} B of media, counted twice")
    if v.signaling:
        parts.append(f"{v.signaling:,} B of signalling")
    return "; ".join(parts)


def _what(v: _Seen) -> str:
    """A vendor's bytes that say nothing about whose call it is (telemetry, sign-in, assets, updates, unknown)."""
    parts = [f"{v.telemetry:,} B of telemetry"] if v.telemetry else []
    if v.other:
        parts.append(f"{v.other:,} B of other traffic")
    return " and ".join(parts)


def first_party_vendors(client: str | None, db: SignatureDB) -> frozenset[str]:
    if not client:
        return frozenset()
    vf = db.vendors.get(client)
    return frozenset({client, *(vf.affiliates if vf else ())})


def party_of(vendor: str | None, first: frozenset[str]) -> Party:
    if vendor is None:
        return Party.unknown
    if vendor in first:
        return Party.first
    return Party.third


def party_array(vendors: pa.Array | pa.ChunkedArray, first: frozenset[str]) -> pa.Array:
    """:func:`party_of` over a whole column at once (a session's tables hold millions of rows)."""
    vendors = vendors.combine_chunks() if isinstance(vendors, pa.ChunkedArray) else vendors
    is_first = pc.is_in(vendors, value_set=pa.array(sorted(first), pa.string()))
    named = pc.if_else(is_first, Party.first.value, Party.third.value)
    return pc.if_else(pc.is_null(vendors), Party.unknown.value, named).cast(pa.string())
