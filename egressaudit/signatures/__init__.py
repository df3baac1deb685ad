"""Vendor knowledge as data: one YAML file per vendor, validated at load time.

A signature file (``egressaudit/signatures/data/<vendor>.yaml``)::

    vendor: zoom                      # id used in the tables
    display_name: Zoom Video Communications
    kind: conferencing                # conferencing | analytics | crash_reporting | push | platform
    default_service: meetings
    sources:                          # named citations, referred to by rules
      zoom-fw: "Zoom support, 'Zoom network firewall or proxy server settings'"
    rules:
      - id: telemetry-log
        domains: [log.zoom.us]        # suffix match: the name and all its subdomains
        category: telemetry
        source: zoom-fw               # a key of `sources` or a citation in full
      - id: media-udp
        cidrs: [3.7.35.0/25]
        transport: udp
        ports: ["8801-8810", 3478]    # remote ports
        category: media
        source: zoom-fw

A rule matches when every condition it names holds: ``domains`` (suffix) or
``patterns`` (regular expressions matched against the whole host name),
``cidrs`` (remote address), ``ports`` and ``transport``.  Among matching rules
the most specific wins: a host-name match beats an address match, a longer
domain beats a shorter one, a longer prefix beats a shorter one, and a rule
that also names ports beats one that does not.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from egressaudit.errors import EXIT_SIGNATURES, EgressAuditError
from egressaudit.taxonomy import Category

VendorKind = Literal["conferencing", "analytics", "crash_reporting", "push", "platform", "other"]


class SignatureError(EgressAuditError, ValueError):
    """A signature file is missing or invalid; the message names the file and the rule (exit 5)."""

    exit_code = EXIT_SIGNATURES


def _parse_port(spec: int | str) -> tuple[int, int]:
    if isinstance(spec, int):
        lo = hi = spec
    else:
        parts = str(spec).split("-")
        if len(parts) == 1:
            lo = hi = int(parts[0])
        elif len(parts) == 2:
            lo, hi = int(parts[0]), int(parts[1])
        else:
            raise ValueError(f"bad port range {spec!r}")
    if not (0 <= lo <= hi <= 65535):
        raise ValueError(f"bad port range {spec!r}")
    return lo, hi


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    domains: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    ports: tuple[int | str, ...] = ()
    transport: Literal["tcp", "udp", "any"] = "any"
    #: HTTP rules: regular expressions searched in the request path (query removed), and methods.
    #: A rule with ``paths`` only applies to HTTP exchanges, where it beats host-only rules.
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    service: str | None = None
    category: Category | None = None
    source: str
    note: str | None = None

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for d in v:
            d = d.strip().lower().rstrip(".")
            if d.startswith("*."):
                d = d[2:]
            if not d or " " in d or "*" in d or "/" in d:
                raise ValueError(f"bad domain {d!r} (use `patterns` for wildcards inside a name)")
            out.append(d)
        return tuple(out)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"bad pattern {p!r}: {e}") from e
        return v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"bad path pattern {p!r}: {e}") from e
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m.upper() for m in v)

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_network(c, strict=False)) for c in v)

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: tuple[int | str, ...]) -> tuple[int | str, ...]:
        for p in v:
            _parse_port(p)
        return v

    @model_validator(mode="after")
    def _has_condition(self) -> Rule:
        if not (self.domains or self.patterns or self.cidrs or self.ports or self.paths):
            raise ValueError("a rule needs at least one of domains, patterns, cidrs, ports, paths")
        return self


class VendorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vendor: str = Field(pattern=r"^[a-z0-9_]+$")
    display_name: str
    kind: VendorKind
    default_service: str | None = None
    #: vendors whose endpoints count as first party when this vendor's client is audited
    affiliates: tuple[str, ...] = ()
    sources: dict[str, str] = {}
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_ids(self) -> VendorFile:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule {r.id!r} is defined twice")
            seen.add(r.id)
        return self


@dataclass(frozen=True)
class Match:
    vendor: str
    kind: str
    service: str | None
    category: Category | None
    rule_id: str  # "<vendor>/<rule>"
    source: str
    reason: str  # what matched: "host log.zoom.us ~ log.zoom.us", "ip 52.114.1.1 in 52.112.0.0/14"


@dataclass(frozen=True)
class _Compiled:
    vendor: VendorFile
    rule: Rule
    ports: tuple[tuple[int, int], ...]
    regexes: tuple[re.Pattern[str], ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class SignatureDB:
    """All vendor files, compiled for matching."""

    def __init__(self, vendors: Iterable[VendorFile], version: str = "") -> None:
        self.vendors: dict[str, VendorFile] = {}
        self._rules: list[_Compiled] = []
        self._domain_index: dict[str, list[_Compiled]] = {}
        self._net_index: dict[tuple[int, int], dict[int, list[tuple[_Compiled, str]]]] = {}
        self._pattern_rules: list[_Compiled] = []
        self._port_only: list[_Compiled] = []
        self._http_rules: list[tuple[_Compiled, tuple[re.Pattern[str], ...]]] = []
        self.version = version
        for v in vendors:
            if v.vendor in self.vendors:
                raise SignatureError(f"vendor {v.vendor!r} is defined twice")
            self.vendors[v.vendor] = v
            for r in v.rules:
                c = _Compiled(
                    v,
                    r,
                    tuple(_parse_port(p) for p in r.ports),
                    tuple(re.compile(p, re.IGNORECASE) for p in r.patterns),
                    tuple(ipaddress.ip_network(n) for n in r.cidrs),
                )
                self._rules.append(c)
                if r.paths:
                    self._http_rules.append((c, tuple(re.compile(p, re.IGNORECASE) for p in r.paths)))
                    continue
                for d in r.domains:
                    self._domain_index.setdefault(d, []).append(c)
                if r.patterns:
                    self._pattern_rules.append(c)
                for n in c.networks:
                    key = (n.version, n.prefixlen)
                    self._net_index.setdefault(key, {}).setdefault(int(n.network_address), []).append((c, str(n)))
                if not (r.domains or r.patterns or r.cidrs):
                    self._port_only.append(c)
        # per IP version, longest prefixes first: (bits to drop, prefix length, network >> bits -> rules)
        self._nets: dict[int, list[tuple[int, int, dict[int, list[tuple[_Compiled, str]]]]]] = {4: [], 6: []}
        for ipv, plen in sorted(self._net_index, key=lambda k: -k[1]):
            shift = (32 if ipv == 4 else 128) - plen
            self._nets[ipv].append((shift, plen, {net >> shift: hits for net, hits in self._net_index[(ipv, plen)].items()}))

    def __len__(self) -> int:
        return len(self._rules)

    def vendor_kind(self, vendor: str | None) -> str | None:
        v = self.vendors.get(vendor or "")
        return v.kind if v else None

    @staticmethod
    def _conditions_hold(c: _Compiled, port: int | None, transport: str | None) -> bool:
        if c.rule.transport != "any" and transport is not None and c.rule.transport != transport:
            return False
        if c.rule.transport != "any" and transport is None:
            return False
        if c.ports:
            if port is None or not any(lo <= port <= hi for lo, hi in c.ports):
                return False
        return True

    def _ip_in_rule(self, c: _Compiled, ip: str | None) -> str | None:
        if not c.networks:
            return ""
        if ip is None:
            return None
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for n in c.networks:
            if addr.version == n.version and addr in n:
                return str(n)
        return None

    def match(self, hostname: str | None = None, ip: str | None = None, port: int | None = None, transport: str | None = None) -> Match | None:
        """The most specific rule for a remote end, or None."""
        return _match_cached(self, (hostname or "").lower().rstrip(".") or None, ip, port, transport)

    def _match(self, hostname: str | None, ip: str | None, port: int | None, transport: str | None) -> Match | None:
        best: tuple[tuple[int, int, int], Match] | None = None

        def consider(score: tuple[int, int, int], c: _Compiled, reason: str) -> None:
            nonlocal best
            if best is None or score > best[0]:
                r = c.rule
                src = c.vendor.sources.get(r.source, r.source)
                best = (
                    score,
                    Match(
                        c.vendor.vendor, c.vendor.kind, r.service or c.vendor.default_service, r.category, f"{c.vendor.vendor}/{r.id}", src, reason
                    ),
                )

        if hostname:
            labels = hostname.split(".")
            for i in range(len(labels)):
                suffix = ".".join(labels[i:])
                for c in self._domain_index.get(suffix, ()):
                    if not self._conditions_hold(c, port, transport):
                        continue
                    net = self._ip_in_rule(c, ip)
                    if net is None:
                        continue
                    exact = 1 if i == 0 else 0
                    consider((3, len(suffix) * 2 + exact, 1 if c.ports else 0), c, f"host {hostname} ~ {suffix}")
            for c in self._pattern_rules:
                if any(rx.fullmatch(hostname) for rx in c.regexes) and self._conditions_hold(c, port, transport):
                    if self._ip_in_rule(c, ip) is not None:
                        consider((3, 1, 1 if c.ports else 0), c, f"host {hostname} ~ /{c.rule.patterns[0]}/")
        if best is not None:
            return best[1]  # a host-name rule outranks every address and port rule
        parsed = _ip_int(ip) if ip else None
        if parsed is not None:
            version, a = parsed
            for shift, plen, table in self._nets[version]:
                for c, net in table.get(a >> shift, ()):
                    if c.rule.domains or c.rule.patterns:
                        continue  # host-name rules with cidrs are handled above
                    if self._conditions_hold(c, port, transport):
                        consider((2, plen, 1 if c.ports else 0), c, f"ip {ip} in {net}")
        for c in self._port_only:
            if self._conditions_hold(c, port, transport):
                consider((1, 0, 1), c, f"port {transport or ''}/{port}")
        return best[1] if best else None

    def match_http(self, hostname: str | None, ip: str | None, port: int | None, method: str | None, path: str | None) -> Match | None:
        """The most specific rule for an HTTP exchange: HTTP (path) rules first, then the host's rule."""
        host = (hostname or "").lower().rstrip(".") or None
        best: tuple[tuple[int, int], Match] | None = None
        bare_path = (path or "").split("?", 1)[0]
        for c, rxs in self._http_rules:
            r = c.rule
            if r.methods and (method or "").upper() not in r.methods:
                continue
            if not any(rx.search(bare_path) for rx in rxs):
                continue
            if not self._conditions_hold(c, port, "tcp") or self._ip_in_rule(c, ip) is None:
                continue
            spec = 0
            if r.domains or r.patterns:
                if not host:
                    continue
                hit = [d for d in r.domains if host == d or host.endswith("." + d)]
                if hit:
                    spec = 2 + max(len(d) for d in hit)
                elif any(rx.fullmatch(host) for rx in c.regexes):
                    spec = 1
                else:
                    continue
            score = (spec, max(len(p) for p in r.paths))
            if best is None or score > best[0]:
                src = c.vendor.sources.get(r.source, r.source)
                reason = f"path {bare_path} ~ {'|'.join(r.paths)}" + (f" on {host}" if spec else "")
                m = Match(c.vendor.vendor, c.vendor.kind, r.service or c.vendor.default_service, r.category, f"{c.vendor.vendor}/{r.id}", src, reason)
                best = (score, m)
        host_match = self.match(host, ip, port, "tcp")
        if best is None:
            return host_match
        if best[0][0] == 0 and host_match is not None and host_match.vendor != best[1].vendor:
            # a generic path rule (no host condition) says what, the host rule says who
            return Match(
                host_match.vendor,
                host_match.kind,
                host_match.service,
                best[1].category,
                best[1].rule_id,
                best[1].source,
                f"{best[1].reason}; {host_match.reason}",
            )
        return best[1]


def _ip_int(ip: str) -> tuple[int, int] | None:
    """(version, address as an integer) of a textual address, or None."""
    try:
        if ":" in ip:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0]), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except OSError:
        return None


@lru_cache(maxsize=65536)
def _match_cached(db: SignatureDB, hostname: str | None, ip: str | None, port: int | None, transport: str | None) -> Match | None:
    return db._match(hostname, ip, port, transport)


def load_file(path: Path) -> VendorFile:
    """Load and validate one vendor file; errors name the file and the rule."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, yaml.YAMLError, RecursionError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise SignatureError(f"{path}: cannot read: {first}") from e
    if not isinstance(raw, dict):
        raise SignatureError(f"{path}: not a mapping")
    try:
        vf = VendorFile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]
        where = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = raw.get("rules") or []
            rid = rules[loc[1]].get("id", f"#{loc[1]}") if loc[1] < len(rules) and isinstance(rules[loc[1]], dict) else f"#{loc[1]}"
            where = f" rule {rid!r}"
            field = ".".join(str(x) for x in loc[2:])
        else:
            field = ".".join(str(x) for x in loc)
        raise SignatureError(f"{path}:{where} {field + ': ' if field else ''}{err['msg']}") from e
    if path.stem != vf.vendor:
        raise SignatureError(f"{path}: file name must be {vf.vendor}.yaml")
    return vf


def data_dir() -> Path:
    return Path(str(resources.files("egressaudit.signatures") / "data"))


def load(paths: Iterable[Path] | None = None, extra: Iterable[Path] = ()) -> SignatureDB:
    """Load vendor files: ``paths``, or the packaged ones, and ``extra`` files (see :func:`expand`)."""
    files = sorted([*(paths if paths is not None else data_dir().glob("*.yaml")), *extra])
    vendors = [load_file(p) for p in files]
    import hashlib

    h = hashlib.sha256()
    for p in files:
        h.update(p.read_bytes())
    return SignatureDB(vendors, version=h.hexdigest()[:12])


@lru_cache(maxsize=1)
def default_db() -> SignatureDB:
    return load()


def expand(paths: Iterable[Path]) -> list[Path]:
    """The vendor files a user named (``--signatures``, ``egressaudit_signatures``): a folder stands for its ``*.yaml``;
    absolute, so that a session can name them.  SignatureError for a path that does not exist."""
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise SignatureError(f"{p}: no such signature file or folder")
        files += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    return [f.resolve() for f in files]


def database(extra: Sequence[Path] = ()) -> SignatureDB:
    """The packaged vendor files plus a user's own (``extra``, from :func:`expand`); the default database when there
    are none.  What the CLI, the proxy addon and its recorder process classify with."""
    return load(extra=extra) if extra else default_db()
