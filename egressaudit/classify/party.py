"""The party policy: which vendor's client a session audits, decided once from all its tables, and who is first party.

A flow or an exchange is *first party* when its vendor is the audited client's vendor or one of its affiliates (its
signature file's ``affiliates``), *third party* for any other vendor, *unknown* without one.  The audited client is
the one the user named (``--client``), else the conferencing vendor the session is most about: most bytes of media
(counted twice), signaling and telemetry, summed over the flows and the HTTP exchanges alike, so a session holding
both tables names one client.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from egressaudit.signatures import SignatureDB
from egressaudit.taxonomy import Category, Party

#: categories that say what a session is about, and how much a byte of each counts
WEIGHTS = {Category.media: 2, Category.signaling: 1, Category.telemetry: 1}

Usage = tuple[str | None, Category | str, int]
"""(vendor, category, bytes) of one flow or exchange."""


def choose_audited_client(rows: Iterable[Usage], db: SignatureDB) -> str | None:
    """The conferencing vendor with the highest weighted bytes (:data:`WEIGHTS`), or None when none is seen.  Ties go
    to the vendor seen first."""
    score: dict[str, int] = {}
    for vendor, category, nbytes in rows:
        if not vendor:
            continue
        weight = WEIGHTS.get(Category(category), 0)
        if weight and db.vendor_kind(vendor) == "conferencing":
            score[vendor] = score.get(vendor, 0) + weight * nbytes
    if not score:
        return None
    return max(score.items(), key=lambda kv: kv[1])[0]


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
