"""Regenerate the golden flow tables that tests/test_golden_flows.py compares every real capture's analysis with.

    python tests/golden/flows/regenerate.py                      # every capture (needs ../shared/captures)
    python tests/golden/flows/regenerate.py calls/wechat.pcap    # only these (keys as in index.json)

Run it ONLY when a change is MEANT to change results (a new signature, a fixed
dissector, a new column's meaning...), never to make a failing test pass after
a refactor: the goldens are the proof that a refactor changed nothing.  Review
the diff of the CSVs (``git diff --word-diff tests/golden/flows``) and say in
the commit message which results changed and why.

The first goldens were taken at 25300ed, before the session-model refactor
(issue 12, point 7).  Layout: ``<group>/<capture file>.csv`` (``.csv.gz`` above
3 MB), group ``public-ndpi``, ``public-nfstream`` (../shared/captures/public),
``calls`` (../shared/captures/calls) or ``sample-<folder>`` (captures/ of this
repository); ``index.json`` holds each capture's audited client, flow and
packet counts and sha256.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))  # this checkout's egressaudit and tests, whatever is installed

from tests.test_golden_flows import GOLDEN, SHARED_CAPTURES, _found, write  # noqa: E402


def main(argv: list[str]) -> int:
    keys = argv or list(_found)
    unknown = [k for k in keys if k not in _found]
    if unknown:
        print(f"no such capture: {' '.join(unknown)}; known: {' '.join(_found)}", file=sys.stderr)
        return 2
    if not argv and not (SHARED_CAPTURES / "public").is_dir():
        print(f"{SHARED_CAPTURES} is absent: regenerating every golden would cover the sample alone; name captures instead", file=sys.stderr)
        return 2
    total = 0
    for key, flows, size in write(keys):
        total += size
        print(f"{key:50} {flows:6} flows {size:10,} bytes")
    print(f"{len(keys)} goldens, {total:,} bytes, in {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
