"""Analytics: a real read model of what happens on the marketplace.

`AnalyticsProjection` counts events by kind, genre and location and adds up the money
contracted and paid, in one summary document it updates together with its checkpoint
(so each event counts exactly once, however often it is read, and by however many
processes). The `Analytics` port is its query side.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mussikon.domain.events import (
    PAYMENT_COMPLETED as COMPLETED_STATUS,
)
from mussikon.domain.events import (
    ContractSignedEvent,
    DomainEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    OrganizerRegisteredEvent,
    PaymentProcessedEvent,
)
from mussikon.projections import Projection, View
from mussikon.store.documents import Document, DocumentStore

ANALYTICS = "analytics"
SUMMARY = "summary"
GIG_DIMENSIONS = "analytics-gigs"

USER_REGISTERED = "user-registered"
MUSICIAN_GENRE = "musician-genre"
GIG_CREATED = "gig-created"
APPLICATION_SUBMITTED = "application-submitted"
CONTRACT_SIGNED = "contract-signed"
PAYMENT_COMPLETED = "payment-completed"
PAYMENT_FAILED = "payment-failed"


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


class ProjectionAnalytics(Analytics):
    """Reads the summary the analytics projection keeps in the document store."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents

    async def summary(self) -> AnalyticsSummary:
        return AnalyticsSummary.from_document(await self.documents.get(ANALYTICS, SUMMARY))


class AnalyticsProjection(Projection):
    """Counts registrations, gigs, applications, contracts and payments."""

    name = "analytics"
    collections = (ANALYTICS, GIG_DIMENSIONS)
    event_types = frozenset(cls.__name__ for cls in (
        MusicianRegisteredEvent, OrganizerRegisteredEvent, EventCreatedEvent,
        MusicianApplicationSubmittedEvent, ContractSignedEvent, PaymentProcessedEvent))

    async def apply(self, event: DomainEvent, view: View) -> None:
        summary = AnalyticsSummary.from_document(await view.get(ANALYTICS, SUMMARY))
        match event:
            case MusicianRegisteredEvent():
                summary.count(USER_REGISTERED, location=event.location)
                for genre in event.genres:
                    summary.count(MUSICIAN_GENRE, genre=genre)
            case OrganizerRegisteredEvent():
                summary.count(USER_REGISTERED)
            case EventCreatedEvent():
                summary.count(GIG_CREATED, event.genre, event.location)
                view.put(GIG_DIMENSIONS, event.event_id,
                         {"genre": event.genre, "location": event.location})
            case MusicianApplicationSubmittedEvent():
                gig: dict[str, Any] = await view.get(GIG_DIMENSIONS, event.event_id) or {}
                summary.count(APPLICATION_SUBMITTED, gig.get("genre", ""),
                              gig.get("location", ""))
            case ContractSignedEvent():
                summary.count(CONTRACT_SIGNED)
                summary.contracted += event.amount
            case PaymentProcessedEvent():
                if event.status == COMPLETED_STATUS:
                    summary.count(PAYMENT_COMPLETED)
                    summary.revenue += event.amount
                else:
                    summary.count(PAYMENT_FAILED)
        view.put(ANALYTICS, SUMMARY, summary.to_document())
