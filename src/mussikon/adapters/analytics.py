"""Analytics: a real read model of what happens on the marketplace.

Each tracked fact is written once under its own key (insert-only, so concurrent
handlers never race and a redelivered event counts once); the summary counts them by
type, genre and location and adds up revenue.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from mussikon.store.documents import Changes, DocumentStore

FACTS = "analytics-facts"


@dataclass(frozen=True, slots=True)
class Fact:
    """Something worth counting. `key` makes tracking it idempotent."""

    key: str
    kind: str
    subject_id: str
    genre: str = ""
    location: str = ""
    amount: Decimal = Decimal(0)


@dataclass(slots=True)
class AnalyticsSummary:
    """Counts by kind, genre and location; revenue from completed payments."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_genre: Counter[str] = field(default_factory=Counter)
    by_location: Counter[str] = field(default_factory=Counter)
    revenue: Decimal = Decimal(0)
    contracted: Decimal = Decimal(0)


USER_REGISTERED = "user-registered"
GIG_CREATED = "gig-created"
APPLICATION_SUBMITTED = "application-submitted"
CONTRACT_SIGNED = "contract-signed"
PAYMENT_COMPLETED = "payment-completed"
PAYMENT_FAILED = "payment-failed"


class Analytics(abc.ABC):
    """Tracks facts and summarises them."""

    @abc.abstractmethod
    async def track(self, fact: Fact) -> bool:
        """Record a fact once; False if its key was tracked before."""

    @abc.abstractmethod
    async def summary(self) -> AnalyticsSummary:
        """Everything tracked so far, counted."""


class DocumentAnalytics(Analytics):
    """Facts in the document store (the embedded default and the production adapter alike)."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents

    async def track(self, fact: Fact) -> bool:
        changes = Changes()
        changes.put(FACTS, fact.key, {
            "kind": fact.kind, "subject_id": fact.subject_id, "genre": fact.genre,
            "location": fact.location, "amount": fact.amount,
        })
        return await self.documents.commit(changes, inbox=(FACTS, fact.key))

    async def summary(self) -> AnalyticsSummary:
        summary = AnalyticsSummary()
        for _, doc in await self.documents.scan(FACTS):
            summary.by_kind[doc["kind"]] += 1
            if doc["genre"]:
                summary.by_genre[doc["genre"]] += 1
            if doc["location"]:
                summary.by_location[doc["location"]] += 1
            if doc["kind"] == PAYMENT_COMPLETED:
                summary.revenue += Decimal(doc["amount"])
            if doc["kind"] == CONTRACT_SIGNED:
                summary.contracted += Decimal(doc["amount"])
        return summary
