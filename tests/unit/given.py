"""Given-when-then helpers: build aggregates from the events that already happened.

`given(Gig, GIG_ID, gig_created())` is a gig rebuilt from its stored history, as a command
handler would load it. The event factories use one consistent cast (Ana plays Jazz in Santo
Domingo; the organizer's gig has a budget of 1500.00) so each test only states what differs.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.application import application_id_for
from mussikon.domain.contract import MUSICIAN, ORGANIZER, contract_id_for
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
    OrganizerRegisteredEvent,
    PaymentProcessedEvent,
    PaymentRequestedEvent,
)

A = TypeVar("A", bound=Aggregate)

NOW = datetime(2026, 11, 27, 21, 0, tzinfo=UTC)
GIG_DATE = datetime(2027, 1, 15, 23, 0, tzinfo=UTC)
MUSICIAN_ID = "3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11"
ORGANIZER_ID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
GIG_ID = "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
APPLICATION_ID = application_id_for(GIG_ID, MUSICIAN_ID)
CONTRACT_ID = contract_id_for(APPLICATION_ID)
PAYMENT_ID = "4f5a6b7c-8d9e-4f0a-b1c2-d3e4f5a6b7c8"
BUDGET = Decimal("1500.00")
FEE = Decimal("1200.50")


def given(cls: type[A], aggregate_id: str, *history: DomainEvent) -> A:
    """The aggregate as loaded from a stream holding exactly `history`."""
    aggregate = cls.rebuild(aggregate_id, history)
    assert aggregate.version == len(history) and aggregate.pending == []
    return aggregate


# --- the events, with the common cast as defaults ------------------------------------------


def musician_registered(musician_id: str = MUSICIAN_ID) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=musician_id, email="ana.perez@example.org",
                                   name="Ana Pérez", genres=("Jazz", "Salsa"),
                                   location="Santo Domingo")


def organizer_registered(organizer_id: str = ORGANIZER_ID) -> OrganizerRegisteredEvent:
    return OrganizerRegisteredEvent(organizer_id=organizer_id, email="eventos@example.org",
                                    name="Casa de Teatro", payment_source="tok_visa")


def gig_created(gig_id: str = GIG_ID, budget: Decimal = BUDGET) -> EventCreatedEvent:
    return EventCreatedEvent(gig_id=gig_id, organizer_id=ORGANIZER_ID,
                             title="Noche de Jazz en la Zona Colonial", event_date=GIG_DATE,
                             location="Santo Domingo", genre="Jazz", budget=budget)


def gig_closed(gig_id: str = GIG_ID) -> EventClosedEvent:
    return EventClosedEvent(gig_id=gig_id, reason="booked")


def application_submitted(fee: Decimal = FEE) -> MusicianApplicationSubmittedEvent:
    return MusicianApplicationSubmittedEvent(application_id=APPLICATION_ID,
                                             musician_id=MUSICIAN_ID, gig_id=GIG_ID,
                                             message="Trío de jazz", proposed_fee=fee)


def application_accepted(fee: Decimal = FEE) -> ApplicationAcceptedEvent:
    return ApplicationAcceptedEvent(application_id=APPLICATION_ID, musician_id=MUSICIAN_ID,
                                    gig_id=GIG_ID, organizer_id=ORGANIZER_ID, agreed_fee=fee)


def application_rejected() -> ApplicationRejectedEvent:
    return ApplicationRejectedEvent(application_id=APPLICATION_ID, musician_id=MUSICIAN_ID,
                                    gig_id=GIG_ID, reason="another act was chosen")


def contract_drafted(amount: Decimal = FEE) -> ContractDraftedEvent:
    return ContractDraftedEvent(contract_id=CONTRACT_ID, application_id=APPLICATION_ID,
                                musician_id=MUSICIAN_ID, organizer_id=ORGANIZER_ID,
                                gig_id=GIG_ID, amount=amount, event_date=GIG_DATE)


def party_signed(party_id: str) -> ContractPartySignedEvent:
    role = MUSICIAN if party_id == MUSICIAN_ID else ORGANIZER
    return ContractPartySignedEvent(contract_id=CONTRACT_ID, party_id=party_id, role=role)


def contract_signed(amount: Decimal = FEE) -> ContractSignedEvent:
    return ContractSignedEvent(contract_id=CONTRACT_ID, musician_id=MUSICIAN_ID, gig_id=GIG_ID,
                               amount=amount, event_date=GIG_DATE)


def signed_contract_history(amount: Decimal = FEE) -> tuple[DomainEvent, ...]:
    """A contract drafted and signed by both parties."""
    return (contract_drafted(amount), party_signed(MUSICIAN_ID), party_signed(ORGANIZER_ID),
            contract_signed(amount))


def contract_payment_failed() -> ContractPaymentFailedEvent:
    return ContractPaymentFailedEvent(contract_id=CONTRACT_ID, payment_id=PAYMENT_ID,
                                      reason="card declined")


def contract_paid() -> ContractPaidEvent:
    return ContractPaidEvent(contract_id=CONTRACT_ID, payment_id=PAYMENT_ID,
                             transaction_id="txn_01JDQ8Z5K3M9")


def contract_cancelled() -> ContractCancelledEvent:
    return ContractCancelledEvent(contract_id=CONTRACT_ID, reason="gig called off")


def payment_requested(amount: Decimal = FEE) -> PaymentRequestedEvent:
    return PaymentRequestedEvent(payment_id=PAYMENT_ID, contract_id=CONTRACT_ID, amount=amount,
                                 idempotency_key=f"payment-{PAYMENT_ID}")


def payment_processed(status: str, amount: Decimal = FEE) -> PaymentProcessedEvent:
    return PaymentProcessedEvent(payment_id=PAYMENT_ID, contract_id=CONTRACT_ID, amount=amount,
                                 status=status, transaction_id="txn_01JDQ8Z5K3M9")


def fields(event: DomainEvent) -> dict[str, object]:
    """An event's own values, without the id and time every new event gets: what a test states."""
    skip = {"id", "occurred_at", "schema_version", "correlation_id", "causation_id"}
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)
            if f.name not in skip}


def state(aggregate: Aggregate) -> dict[str, object]:
    """Everything an aggregate holds, for comparing a live one with a rebuilt one."""
    return dict(vars(aggregate))
