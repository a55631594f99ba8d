"""Subscription rules as the peer applies them: a SQL filter in the subset Service Bus rules
are written in here, a disjunction of comparisons with text constants:

    sys.Label IN ('A', 'B') OR EventType = 'C' OR 1=1

`sys.Label` is the message's Subject, `sys.MessageId` and `sys.CorrelationId` its ids, any
other name (bare or in brackets) an application property. `1=1` admits everything, `1=0`
nothing. Anything else (AND, NOT, LIKE, numbers, functions) is refused with `Unsupported`:
the peer does not pretend to filter by what it cannot read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .codec import Envelope

_SYSTEM = {"sys.label": "subject", "sys.messageid": "message_id"}
_TEXT = r"'(?:[^']|'')*'"
_NAME = r"\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_.]*"
_TERM = re.compile(
    rf"\s*(?:(?P<true>1\s*=\s*1)|(?P<false>1\s*=\s*0)|"
    rf"(?P<name>{_NAME})\s*(?:=\s*(?P<one>{_TEXT})|IN\s*\((?P<many>\s*{_TEXT}(?:\s*,\s*{_TEXT})*)\s*\)))"
    r"\s*", re.IGNORECASE)
_OR = re.compile(r"OR\b", re.IGNORECASE)


class Unsupported(ValueError):
    """A filter the peer does not model."""


@dataclass(frozen=True)
class Comparison:
    """`name IN (values)` (or `name = value`); `name` None: a constant (`1=1`: values empty
    and `admit_all`)."""

    name: str | None
    values: frozenset[str]
    admit_all: bool = False

    def admits(self, envelope: Envelope) -> bool:
        if self.name is None:
            return self.admit_all
        attribute = _SYSTEM.get(self.name.lower())
        if attribute is not None:
            value = getattr(envelope, attribute)
        elif self.name.lower().startswith("sys."):
            raise Unsupported(f"the peer does not model {self.name}")
        else:
            found = envelope.application_properties.get(self.name)
            value = None if found is None else str(found)
        return value in self.values


@dataclass(frozen=True)
class SqlFilter:
    """A parsed SQL filter: admits a message if any comparison does."""

    expression: str
    comparisons: tuple[Comparison, ...]

    @classmethod
    def parse(cls, expression: str) -> SqlFilter:
        comparisons, rest = [], expression
        while True:
            term = _TERM.match(rest)
            if term is None:
                raise Unsupported(f"the peer does not model the SQL filter {expression!r}")
            comparisons.append(_comparison(term))
            rest = rest[term.end():]
            if not rest:
                return cls(expression, tuple(comparisons))
            joined = _OR.match(rest)
            if joined is None:
                raise Unsupported(f"the peer does not model the SQL filter {expression!r}")
            rest = rest[joined.end():]

    def admits(self, envelope: Envelope) -> bool:
        return any(comparison.admits(envelope) for comparison in self.comparisons)


def _comparison(term: re.Match[str]) -> Comparison:
    if term["true"] or term["false"]:
        return Comparison(None, frozenset(), admit_all=bool(term["true"]))
    name = term["name"].strip("[]")
    if name.lower().startswith("sys.") and name.lower() not in _SYSTEM:
        raise Unsupported(f"the peer does not model {name}")
    texts = [term["one"]] if term["one"] else re.findall(_TEXT, term["many"])
    return Comparison(name, frozenset(t[1:-1].replace("''", "'") for t in texts))


TRUE = SqlFilter.parse("1=1")
"""The filter of the rule `$Default` that a new subscription gets."""


def subjects_filter(subjects: set[str] | frozenset[str]) -> SqlFilter:
    """Admits a message whose Subject or EventType property is one of `subjects`."""
    if not subjects:
        return SqlFilter.parse("1=0")
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sorted(subjects))
    return SqlFilter.parse(f"sys.Label IN ({quoted}) OR EventType IN ({quoted})")
