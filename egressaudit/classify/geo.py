"""Where a destination is: country and network operator (autonomous system) of a remote address, offline.

The data is what the ``geoip2fast`` package ships (a GeoLite2-derived country + ASN file for IPv4 and IPv6, dated in
its own header; see :func:`info`): no lookup ever leaves the host, and the answer for an address is the same for
everyone with the same package version, so a published comparison can be re-run.  Loading the file takes about
0.2 s and a lookup about 6 us (measured on this project's 2-core machine), so it is done when a reader asks (report,
compare, check), once per distinct address, not at analysis time.

Private, loopback, link-local and documentation addresses have no country (``None``); so do addresses the file does
not know.  An address's operator is its autonomous system's registered name (``GOOGLE``, ``MICROSOFT-CORP-MSN-AS-BLOCK``, ...).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pandas as pd

DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"
"""The package's country + ASN file for IPv4 and IPv6."""


@dataclass(frozen=True)
class Place:
    country: str | None  # ISO 3166-1 alpha-2
    operator: str | None  # the AS's registered name (the file holds no AS number)


NOWHERE = Place(None, None)


@functools.cache
def _db() -> Any:
    from geoip2fast import GeoIP2Fast

    return GeoIP2Fast(geoip2fast_data_file=DATA_FILE)


@functools.cache
def info() -> dict[str, str]:
    """Which data answered: the package and its version, the data file and its source with the date in it (e.g.
    ``MAXMIND:GeoLite2-CountryASN-IPv4IPv6-en-20240618``); for manifests and figure captions."""
    d = _db().get_database_info()
    return {"package": f"geoip2fast {metadata.version('geoip2fast')}", "file": DATA_FILE, "source": str(d.get("source_info", ""))}


def _public(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_global


@functools.lru_cache(maxsize=65536)
def place(ip: str) -> Place:
    """Country and operator of one address (:data:`NOWHERE` for one that is not public or not known)."""
    if not _public(ip):
        return NOWHERE
    r = _db().lookup(ip)
    cc = getattr(r, "country_code", "") or ""
    asn = getattr(r, "asn_name", "") or ""
    return Place(cc if len(cc) == 2 and cc != "--" else None, asn or None)


def places(ips: Iterable[str | None]) -> pd.DataFrame:
    """One row per distinct address: ``ip``, ``country``, ``operator`` (nulls where unknown)."""
    distinct = sorted({ip for ip in ips if isinstance(ip, str) and ip})
    rows = [(ip, *vars(place(ip)).values()) for ip in distinct]
    out = pd.DataFrame(rows, columns=["ip", "country", "operator"])
    return out.astype({"ip": "string", "country": "string", "operator": "string"})
