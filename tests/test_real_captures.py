"""egressaudit against nDPI's independent verdicts on real captures of conferencing clients.

For every capture in ../shared/captures/public: it is analysed without error;
flows that nDPI attributes to a vendor get the same vendor for >= 95% of
their bytes; nDPI's media flows are `media` for >= 95% of their bytes; and
the known telemetry hosts are `telemetry`.

DNS flows are left out of the vendor comparison: nDPI names a DNS flow after
the name queried (DNS.Teams), egressaudit after the operator of the remote
end, which is the resolver.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from egressaudit.audit.analyze import AnalyzeOptions, analyze
from tests.ndpi_expected import NDPI, SHARED, SKIP_REASON, parse

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=SKIP_REASON)

CAPTURES = sorted(p.name for p in NDPI.glob("*.pcap*")) if NDPI.is_dir() else []
TELEMETRY_HOSTS = ("pipe.aria.microsoft.com", "events.data.microsoft.com", "log.zoom.us")

_cache: dict[str, list[dict[str, Any]]] = {}


def rows_of(name: str) -> list[dict[str, Any]]:
    if name not in _cache:
        path = NDPI / name if (NDPI / name).exists() else SHARED / "nfstream" / name
        _cache[name] = analyze([path], AnalyzeOptions(session_id=name)).rows
    return _cache[name]


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, frozenset[tuple[str, int]]], list[dict[str, Any]]]:
    out: dict[tuple[str, frozenset[tuple[str, int]]], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[(r["transport"], frozenset({(r["local_ip"], r["local_port"]), (r["remote_ip"], r["remote_port"])}))].append(r)
    return out


@pytest.mark.parametrize("name", [*CAPTURES, "skype.pcap"])
def test_every_real_capture_is_analysed(name: str) -> None:
    rows = rows_of(name)
    assert rows, f"{name}: no flows"
    for r in rows:
        assert r["category"] and r["data_class"] and r["rule"] and r["evidence"]
        assert r["bytes_out"] + r["bytes_in"] > 0


def _weighted_agreement(name: str, want: str) -> tuple[int, int, list[str]]:
    ours = by_key(rows_of(name))
    agree = total = 0
    misses: list[str] = []
    for nf in parse(NDPI / "expected" / f"{name}.out"):
        if want == "vendor":
            if nf.vendor is None or nf.names[0] in ("DNS", "MDNS"):
                continue
            target = nf.vendor
        else:
            if not nf.is_media:
                continue
            target = "media"
        total += nf.bytes_total
        mine = ours.get(nf.key, [])
        got = {(r["vendor"] if want == "vendor" else r["category"]) for r in mine}
        if got == {target}:
            agree += nf.bytes_total
        else:
            misses.append(f"{nf.transport} {nf.a}<->{nf.b} {'.'.join(nf.names)} sni={nf.sni} {nf.bytes_total}B: ours={got or 'no flow'}")
    return agree, total, misses


@pytest.mark.parametrize("name", CAPTURES)
def test_vendor_agrees_with_ndpi(name: str) -> None:
    agree, total, misses = _weighted_agreement(name, "vendor")
    if total == 0:
        pytest.skip(f"nDPI attributes no flow of {name} to a vendor we cover")
    assert agree / total >= 0.95, f"{name}: {agree}/{total} bytes agree\n" + "\n".join(misses)


@pytest.mark.parametrize("name", CAPTURES)
def test_media_agrees_with_ndpi(name: str) -> None:
    agree, total, misses = _weighted_agreement(name, "media")
    if total == 0:
        pytest.skip(f"nDPI sees no media flow in {name}")
    assert agree / total >= 0.95, f"{name}: {agree}/{total} bytes agree\n" + "\n".join(misses)


@pytest.mark.parametrize("name", ["teams.pcap", "zoom.pcap"])
def test_known_telemetry_hosts_are_telemetry(name: str) -> None:
    hits = [r for r in rows_of(name) if r["hostname"] and r["hostname"].endswith(TELEMETRY_HOSTS)]
    assert hits, f"{name}: no flow to a known telemetry host"
    for r in hits:
        assert (r["category"], r["data_class"]) == ("telemetry", "service_generated"), r
