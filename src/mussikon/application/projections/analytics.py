"""Analytics: a real read model of what happens on the marketplace.

`AnalyticsProjection` counts events by kind, genre and location and adds up the money
contracted and paid, in one summary document it updates together with its checkpoint
(so each event counts exactly once, however often it is read, and by however many
processes). The `Analytics` port is its query side.
"""

from __future__ import annotations

from typing import Any

from mussikon.application.projections import Projection, View
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
from mussikon.ports.analytics import Analytics, AnalyticsSummary
from mussikon.ports.documents import DocumentStore

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
                view.put(GIG_DIMENSIONS, event.gig_id,
                         {"genre": event.genre, "location": event.location})
            case MusicianApplicationSubmittedEvent():
                gig: dict[str, Any] = await view.get(GIG_DIMENSIONS, event.gig_id) or {}
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
