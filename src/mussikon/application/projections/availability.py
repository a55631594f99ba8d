"""Availability: which dates each musician is booked, from contracts not cancelled."""

from __future__ import annotations

from datetime import UTC, datetime

from mussikon.application.projections import Projection, View
from mussikon.domain.events import ContractCancelledEvent, ContractDraftedEvent, DomainEvent

BOOKINGS = "bookings"
CONTRACT_BOOKINGS = "contract-bookings"


def booking_key(musician_id: str, when: datetime) -> str:
    """A musician's day, in UTC: one contract at most per day."""
    return f"{musician_id}|{when.astimezone(UTC).date().isoformat()}"


class Availability(Projection):
    """A drafted contract holds the musician's date until it is cancelled."""

    name = "availability"
    collections = (BOOKINGS, CONTRACT_BOOKINGS)
    event_types = frozenset({ContractDraftedEvent.__name__, ContractCancelledEvent.__name__})

    async def apply(self, event: DomainEvent, view: View) -> None:
        match event:
            case ContractDraftedEvent():
                key = booking_key(event.musician_id, event.event_date)
                view.put(BOOKINGS, key, {"contract_id": event.contract_id,
                                         "gig_id": event.gig_id})
                view.put(CONTRACT_BOOKINGS, event.contract_id, {"booking": key})
            case ContractCancelledEvent():
                held = await view.get(CONTRACT_BOOKINGS, event.contract_id)
                if held is not None:
                    booking = await view.get(BOOKINGS, held["booking"])
                    if booking is not None and booking["contract_id"] == event.contract_id:
                        view.delete(BOOKINGS, held["booking"])
                    view.delete(CONTRACT_BOOKINGS, event.contract_id)
