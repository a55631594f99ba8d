"""The directory: musician profiles, organizers, gigs, applications and contracts as read models,
and the genre-and-location index that matching reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mussikon.application.projections import Projection, View
from mussikon.domain.events import (
    ApplicationAcceptedEvent,
    ApplicationRejectedEvent,
    ContractCancelledEvent,
    ContractDraftedEvent,
    ContractPaidEvent,
    ContractPaymentFailedEvent,
    ContractSignedEvent,
    DomainEvent,
    EventClosedEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    OrganizerRegisteredEvent,
)
from mussikon.domain.instant import format_dotnet
from mussikon.ports.documents import Document, DocumentStore

PROFILES = "profiles"
ORGANIZERS = "organizers"
GIGS = "gigs"
APPLICATIONS = "applications"
CONTRACTS = "contracts"
MATCHING_INDEX = "musicians-by-genre-location"


def matching_prefix(genre: str, location: str) -> str:
    """The index key prefix of musicians who play `genre` in `location` (case-insensitive)."""
    return f"{genre.strip().casefold()}|{location.strip().casefold()}|"


class Directory(Projection):
    """Who and what is on the marketplace, kept current from the events."""

    name = "directory"
    collections = (PROFILES, ORGANIZERS, GIGS, APPLICATIONS, CONTRACTS, MATCHING_INDEX)
    event_types = frozenset(cls.__name__ for cls in (
        MusicianRegisteredEvent, OrganizerRegisteredEvent, EventCreatedEvent, EventClosedEvent,
        MusicianApplicationSubmittedEvent, ApplicationAcceptedEvent, ApplicationRejectedEvent,
        ContractDraftedEvent, ContractSignedEvent, ContractPaidEvent, ContractPaymentFailedEvent,
        ContractCancelledEvent,
    ))

    async def apply(self, event: DomainEvent, view: View) -> None:
        match event:
            case MusicianRegisteredEvent():
                # The initial profile: what the musician told us, nothing booked yet.
                view.put(PROFILES, event.musician_id, {
                    "musician_id": event.musician_id, "name": event.name, "email": event.email,
                    "genres": list(event.genres), "location": event.location,
                    "registered_at": format_dotnet(event.occurred_at),
                    "applications": 0, "contracts": 0,
                })
                for genre in event.genres:
                    view.put(MATCHING_INDEX,
                             matching_prefix(genre, event.location) + event.musician_id,
                             {"musician_id": event.musician_id})
            case OrganizerRegisteredEvent():
                view.put(ORGANIZERS, event.organizer_id, {
                    "organizer_id": event.organizer_id, "name": event.name, "email": event.email,
                    "payment_source": event.payment_source,
                })
            case EventCreatedEvent():
                view.put(GIGS, event.gig_id, {
                    "gig_id": event.gig_id, "organizer_id": event.organizer_id,
                    "title": event.title, "event_date": format_dotnet(event.event_date),
                    "location": event.location, "genre": event.genre, "budget": event.budget,
                    "status": "Open",
                })
            case EventClosedEvent():
                await self._update(view, GIGS, event.gig_id, status="Closed")
            case MusicianApplicationSubmittedEvent():
                view.put(APPLICATIONS, event.application_id, {
                    "application_id": event.application_id, "musician_id": event.musician_id,
                    "gig_id": event.gig_id, "proposed_fee": event.proposed_fee,
                    "status": "Submitted", "reason": "",
                })
                await self._count(view, event.musician_id, "applications")
            case ApplicationAcceptedEvent():
                await self._update(view, APPLICATIONS, event.application_id, status="Accepted",
                                   agreed_fee=event.agreed_fee)
            case ApplicationRejectedEvent():
                await self._update(view, APPLICATIONS, event.application_id, status="Rejected",
                                   reason=event.reason)
            case ContractDraftedEvent():
                view.put(CONTRACTS, event.contract_id, {
                    "contract_id": event.contract_id, "application_id": event.application_id,
                    "musician_id": event.musician_id, "organizer_id": event.organizer_id,
                    "gig_id": event.gig_id, "amount": event.amount,
                    "event_date": format_dotnet(event.event_date), "status": "Drafted",
                    "reason": "",
                })
                await self._count(view, event.musician_id, "contracts")
            case ContractSignedEvent():
                await self._update(view, CONTRACTS, event.contract_id, status="Signed")
            case ContractPaidEvent():
                await self._update(view, CONTRACTS, event.contract_id, status="Paid",
                                   transaction_id=event.transaction_id)
            case ContractPaymentFailedEvent():
                await self._update(view, CONTRACTS, event.contract_id, status="PaymentFailed",
                                   reason=event.reason)
            case ContractCancelledEvent():
                await self._update(view, CONTRACTS, event.contract_id, status="Cancelled",
                                   reason=event.reason)

    @staticmethod
    async def _update(view: View, collection: str, key: str, **fields: Any) -> None:
        doc = await view.get(collection, key)
        if doc is not None:
            view.put(collection, key, {**doc, **fields})

    @staticmethod
    async def _count(view: View, musician_id: str, field: str) -> None:
        doc = await view.get(PROFILES, musician_id)
        if doc is not None:
            view.put(PROFILES, musician_id, {**doc, field: doc.get(field, 0) + 1})


BATCH = 200
"""Documents read from the store at a time while a filter picks a page out of them."""

Keep = Callable[[Document], bool]


async def filtered_page(documents: DocumentStore, collection: str, keep: Keep | None, *,
                        limit: int, after: str, prefix: str = "", batch: int = BATCH
                        ) -> tuple[list[tuple[str, Document]], bool]:
    """Up to `limit` documents that `keep` accepts, in key order after the key `after`, and
    whether there are more: the store is read `batch` documents at a time, never whole."""
    found: list[tuple[str, Document]] = []
    size = limit + 1 if keep is None else max(limit + 1, batch)
    while len(found) <= limit:
        read = await documents.scan_page(collection, after=after, limit=size, prefix=prefix)
        found.extend(item for item in read if keep is None or keep(item[1]))
        if len(read) < size:
            break
        after = read[-1][0]
    return found[:limit], len(found) > limit
