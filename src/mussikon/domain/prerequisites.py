"""What an event presupposes: the earlier events it makes sense only after.

An application is about a gig and a musician, so it presupposes the gig's
`EventCreatedEvent` and the musician's `MusicianRegisteredEvent`; a draft presupposes its
application; a contract's signature presupposes its draft; a payment presupposes the signed
contract. Our own commands check this before they write, so our own history is always in
this order. Events that other
services publish can arrive in any order (the broker does not order messages across
queues): the consumer records one only once everything it presupposes is in the store,
so that projections, sagas and handlers see one history in causal order.
"""

from __future__ import annotations

from dataclasses import dataclass

from mussikon.domain.events import (
    ApplicationAcceptedEvent,
    ApplicationRejectedEvent,
    ContractCancelledEvent,
    ContractDraftedEvent,
    ContractPaidEvent,
    ContractPartySignedEvent,
    ContractPaymentFailedEvent,
    ContractSignedEvent,
    DomainEvent,
    EventClosedEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
    PaymentRequestedEvent,
)


@dataclass(frozen=True, slots=True)
class Prerequisite:
    """An event of type `event_type` must be in stream `stream_id`."""

    stream_id: str
    event_type: str
    what: str
    """How a person names it: `gig 9a1b… (EventCreatedEvent)`."""

    @property
    def opens_stream(self) -> bool:
        """True if it is the stream's first event: the stream existing is enough."""
        return self.event_type in _OPENING


_OPENING = frozenset(cls.__name__ for cls in (
    EventCreatedEvent, MusicianRegisteredEvent, MusicianApplicationSubmittedEvent,
    ContractDraftedEvent))


def _needs(kind: str, aggregate_id: str, event: type[DomainEvent]) -> Prerequisite:
    return Prerequisite(f"{event.aggregate_type}-{aggregate_id}", event.__name__,
                        f"{kind} {aggregate_id} ({event.__name__})")


def prerequisites(event: DomainEvent) -> tuple[Prerequisite, ...]:
    """What `event` presupposes (nothing for an event that opens a history of its own)."""
    match event:
        case MusicianApplicationSubmittedEvent():
            return (_needs("gig", event.gig_id, EventCreatedEvent),
                    _needs("musician", event.musician_id, MusicianRegisteredEvent))
        case ApplicationAcceptedEvent() | ApplicationRejectedEvent():
            return (_needs("application", event.application_id,
                           MusicianApplicationSubmittedEvent),)
        case EventClosedEvent():
            return (_needs("gig", event.gig_id, EventCreatedEvent),)
        case ContractDraftedEvent():  # the application presupposes the gig and musician
            return (_needs("application", event.application_id,
                           MusicianApplicationSubmittedEvent),)
        case ContractPartySignedEvent() | ContractSignedEvent() | ContractCancelledEvent():
            return (_needs("contract", event.contract_id, ContractDraftedEvent),)
        case (ContractPaidEvent() | ContractPaymentFailedEvent() | PaymentRequestedEvent()
              | PaymentProcessedEvent()):
            return (_needs("signed contract", event.contract_id, ContractSignedEvent),)
    return ()


class PrerequisitesMissing(Exception):
    """An event waited for what it presupposes longer than it may, and is given up on."""
