"""The `Analytics` port: what the marketplace's analytics say, counted once per event."""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from mussikon.ports.documents import Document


@dataclass(slots=True)
class AnalyticsSummary:
    """Counts by kind, genre and location; money contracted and money paid."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_genre: Counter[str] = field(default_factory=Counter)
    by_location: Counter[str] = field(default_factory=Counter)
    revenue: Decimal = Decimal(0)
    contracted: Decimal = Decimal(0)

    @classmethod
    def from_document(cls, doc: Document | None) -> AnalyticsSummary:
        """The summary as stored (an empty one if nothing was counted yet)."""
        if doc is None:
            return cls()
        return cls(Counter(doc["by_kind"]), Counter(doc["by_genre"]),
                   Counter(doc["by_location"]), Decimal(doc["revenue"]),
                   Decimal(doc["contracted"]))

    def to_document(self) -> Document:
        """As stored (decimals as strings, so their scale survives every store)."""
        return {"by_kind": dict(self.by_kind), "by_genre": dict(self.by_genre),
                "by_location": dict(self.by_location), "revenue": str(self.revenue),
                "contracted": str(self.contracted)}

    def count(self, kind: str, genre: str = "", location: str = "") -> None:
        """One more of `kind`, in `genre` and `location` when they are known."""
        self.by_kind[kind] += 1
        if genre:
            self.by_genre[genre] += 1
        if location:
            self.by_location[location] += 1


class Analytics(abc.ABC):
    """What the marketplace's analytics say."""

    @abc.abstractmethod
    async def summary(self) -> AnalyticsSummary:
        """Everything counted so far."""
