"""Query strings of recorded paths: their keys (for the field inventory), and their values redacted.

One place for both the recorder, which redacts a path before it is stored, and
the report, which redacts again the paths of a session that kept its query
values.  A path redacted once is left as it is by a second redaction: the
``…`` marker (``?…`` for a query without keys, ``&…`` for the keys past the
limit) is read as a marker, and keys, percent-quoted the first time, are
unquoted and quoted back to the same text.
"""

from __future__ import annotations

from urllib.parse import quote

from egressaudit.http.bodies import _form_pairs

MAX_QUERY_KEYS = 1000
"""Query keys kept per request, in the redacted path and in the field inventory; further ones are cut (a final ``&…``
in the path) and the exchange is counted as ``query_keys_cut``."""
MARK = "…"
"""What stands for a redacted value, for a query without keys (``?…``) and for the keys cut (``&…``)."""


def query_keys(query: str, limit: int = MAX_QUERY_KEYS) -> tuple[list[tuple[str, str]], int]:
    """The first ``limit`` key/value pairs of a query string, and how many more pieces it has (not parsed)."""
    return _form_pairs(query, limit)


def redact_query(path: str, keep: bool = False, limit: int = MAX_QUERY_KEYS) -> str:
    """``/a?x=1&y=2`` -> ``/a?x=…&y=…``: keys stay (percent-quoted: they say what kind of value was sent), values go;
    past ``limit`` keys, ``&…``; a query without keys, ``?…``.  ``keep``: the path as it is.

    Idempotent: ``redact_query(redact_query(p)) == redact_query(p)``.
    """
    if keep or "?" not in path:
        return path
    base, _, query = path.partition("?")
    cut = False
    if query == MARK:
        query = ""
    elif query.endswith("&" + MARK):
        query, cut = query[: -len(MARK) - 1], True
    pairs, more = query_keys(query, limit)
    keys = [quote(k, safe="", errors="backslashreplace") for k, _ in pairs]
    if not keys:
        return f"{base}?{MARK}"
    return base + "?" + "&".join(f"{k}={MARK}" for k in keys) + (f"&{MARK}" if more or cut else "")
