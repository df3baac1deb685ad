"""Policy files: what an organisation allows a conferencing client to send, as data (YAML), validated.

A policy file names itself and lists rules; each rule has an ``id`` (unique in the file), a ``kind`` and the kind's
settings, and may say ``why`` (shown with its violations)::

    name: no-third-party-telemetry
    description: Telemetry goes to the client's vendor only.
    rules:
      - id: third-party-telemetry
        kind: no-third-party
        categories: [telemetry]

Kinds (:data:`RULES`):

``no-third-party``
    nothing of ``categories`` (default: telemetry) goes to a third party (flows and HTTP exchanges); ``allow`` lists
    vendors that are tolerated.
``max-rate``
    ``data_class`` (default: service_generated) sent at most ``max_kb_per_min`` kilobytes (1,000 bytes) a minute,
    over the whole session or only ``while`` the call was in the given states (from the session's markers).
``content-destinations``
    content uploads (and media, with ``categories``) go only to ``parties`` (default: first).
``no-identifiers``
    no field whose detectors include one of ``detectors`` in bodies of ``categories`` (default: telemetry).
``no-countries``
    no egress to addresses in ``countries`` (ISO 3166-1 alpha-2 codes; offline data, see
    :mod:`egressaudit.classify.geo`).

:func:`load` reads and validates a file; a file that cannot be used is one :class:`PolicyError` line naming the file
and the rule (``policies/x.yaml: rules[1] (muted-budget): max_kb_per_min: Input should be greater than 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from egressaudit.errors import UsageError
from egressaudit.http.inventory import DETECTORS
from egressaudit.taxonomy import CallState, Category, DataClass, Party


class PolicyError(UsageError):
    """A policy file that is missing or cannot be used (exit 2); the message names the file and the rule."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    why: str | None = None


class NoThirdParty(_Rule):
    kind: Literal["no-third-party"]
    categories: list[Category] = Field(default_factory=lambda: [Category.telemetry], min_length=1)
    allow: list[str] = Field(default_factory=list)


class MaxRate(_Rule):
    kind: Literal["max-rate"]
    data_class: DataClass = DataClass.service_generated
    max_kb_per_min: float = Field(gt=0)
    while_: list[str] | None = Field(default=None, alias="while", min_length=1)

    @field_validator("while_")
    @classmethod
    def _states(cls, v: list[str] | None) -> list[str] | None:
        """Call states are words; the shipped ones are checked for spelling (a user's own word is allowed too)."""
        known = {s.value for s in CallState}
        for s in v or []:
            near = [k for k in known if k.replace("-", "") == s.replace("-", "").replace("_", "")]
            if s not in known and near:
                raise ValueError(f"{s!r}: did you mean {near[0]!r}?")
        return v


class ContentDestinations(_Rule):
    kind: Literal["content-destinations"]
    parties: list[Party] = Field(default_factory=lambda: [Party.first], min_length=1)
    categories: list[Category] = Field(default_factory=lambda: [Category.content_upload], min_length=1)


class NoIdentifiers(_Rule):
    kind: Literal["no-identifiers"]
    detectors: list[str] = Field(min_length=1)
    categories: list[Category] = Field(default_factory=lambda: [Category.telemetry], min_length=1)

    @field_validator("detectors")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - DETECTORS)
        if unknown:
            raise ValueError(f"unknown detector {', '.join(map(repr, unknown))}; known: {', '.join(sorted(DETECTORS))}")
        return v


class NoCountries(_Rule):
    kind: Literal["no-countries"]
    countries: list[str] = Field(min_length=1)

    @field_validator("countries")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if len(c) != 2 or not c.isalpha()]
        if bad:
            raise ValueError(f"not ISO 3166-1 alpha-2 country codes: {', '.join(map(repr, bad))} (e.g. 'CN', 'US')")
        return [c.upper() for c in v]


Rule = Annotated[NoThirdParty | MaxRate | ContentDestinations | NoIdentifiers | NoCountries, Field(discriminator="kind")]
RULES = ("no-third-party", "max-rate", "content-destinations", "no-identifiers", "no-countries")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str | None = None
    rules: list[Rule] = Field(min_length=1)
    path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule id {r.id!r} is used twice")
            seen.add(r.id)
        return self


def _path(keys: list[int | str]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out.replace("while_", "while")


def _where(loc: tuple[int | str, ...], data: dict[str, object]) -> str:
    """``rules[1] (muted-budget): max_kb_per_min`` for a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules")
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        rid = rule.get("id") if isinstance(rule, dict) else None
        head = f"rules[{loc[1]}]" + (f" ({rid})" if rid else "")
        rest = _path([k for k in loc[2:] if k not in RULES])  # (the discriminator's branch name is not a key of the file)
        return f"{head}: {rest}" if rest else head
    return _path(list(loc))


def load(path: str | Path) -> Policy:
    """The policy in ``path``; PolicyError (one line naming the file and the rule) for one that cannot be used."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        raise PolicyError(f"{p}: cannot read the policy ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"{p}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{p}: a policy is a mapping with name and rules (see policies/ for examples)")
    try:
        return Policy.model_validate({**data, "path": str(p)})
    except ValidationError as e:
        first = e.errors()[0]
        where = _where(tuple(first["loc"]), data)
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid":
            msg = f"unknown kind; known: {', '.join(RULES)}"
        elif first["type"] == "union_tag_not_found":
            msg = f"a rule needs a kind: one of {', '.join(RULES)}"
        raise PolicyError(f"{p}: {where}: {msg}" if where else f"{p}: {msg}") from None
