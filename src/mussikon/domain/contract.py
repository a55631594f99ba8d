"""Contract: the agreement after an application is accepted: amount, date, parties."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.application import Application, ApplicationStatus
from mussikon.domain.errors import (
    AmountMismatch,
    ApplicationNotAccepted,
    IllegalTransition,
    NotAParty,
    NotFound,
)
from mussikon.domain.events import (
    ContractCancelledEvent,
    ContractDraftedEvent,
    ContractPaidEvent,
    ContractPartySignedEvent,
    ContractPaymentFailedEvent,
    ContractSignedEvent,
    DomainEvent,
)
from mussikon.domain.gig import Gig
from mussikon.domain.rules import require_positive_amount, require_text

_CONTRACT_IDS = uuid.UUID("0a7d5c2e-93b1-4f6e-8d20-4c9b1e7a3f55")


def contract_id_for(application_id: str) -> str:
    """The one contract an application can lead to (a retried draft finds the same stream)."""
    return str(uuid.uuid5(_CONTRACT_IDS, application_id))


class ContractStatus(StrEnum):
    NEW = "New"
    DRAFTED = "Drafted"
    SIGNED = "Signed"
    PAYMENT_FAILED = "PaymentFailed"
    PAID = "Paid"
    CANCELLED = "Cancelled"


MUSICIAN = "Musician"
ORGANIZER = "Organizer"

_PAYABLE = (ContractStatus.SIGNED, ContractStatus.PAYMENT_FAILED)
_CANCELLABLE = (ContractStatus.DRAFTED, ContractStatus.SIGNED, ContractStatus.PAYMENT_FAILED)


class Contract(Aggregate):
    """Drafted → signed by both parties → paid; a failed payment may be retried; cancel unpaid."""

    stream_prefix = "contract"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = ContractStatus.NEW
        self.application_id = ""
        self.musician_id = ""
        self.organizer_id = ""
        self.gig_id = ""
        self.amount = Decimal(0)
        self.event_date: datetime | None = None
        self.signed_by: set[str] = set()
        self.payment_id = ""
        self.reason = ""

    def draft(self, *, application: Application, gig: Gig, amount: Decimal) -> None:
        """Draw up the contract. Rules: the application is accepted, the amount is the agreed fee
        (a Decimal: a float is refused), the gig is the application's."""
        if self.exists:
            raise IllegalTransition(f"contract {self.id} is already drafted")
        if application.status is not ApplicationStatus.ACCEPTED:
            raise ApplicationNotAccepted(
                f"application {application.id} is {application.status.lower()}, not accepted"
            )
        application.check_gig(gig)
        if gig.event_date is None:
            raise NotFound(f"gig {gig.id} does not exist")
        amount = require_positive_amount("contract amount", amount)
        if amount != application.agreed_fee:
            raise AmountMismatch(
                f"contract amount {amount} differs from the agreed fee {application.agreed_fee}"
            )
        self._record(
            ContractDraftedEvent(
                contract_id=self.id,
                application_id=application.id,
                musician_id=application.musician_id,
                organizer_id=gig.organizer_id,
                gig_id=gig.id,
                amount=amount,
                event_date=gig.event_date,
            )
        )

    def sign(self, party_id: str) -> None:
        """A party signs; when both have, the contract is signed (ContractSignedEvent)."""
        if self.status is not ContractStatus.DRAFTED:
            raise IllegalTransition(f"contract {self.id} is {self.status}; only a draft is signed")
        roles = {self.musician_id: MUSICIAN, self.organizer_id: ORGANIZER}
        role = roles.get(party_id)
        if role is None:
            raise NotAParty(f"{party_id} is not a party to contract {self.id}")
        if party_id in self.signed_by:
            return  # signing twice changes nothing
        self._record(ContractPartySignedEvent(contract_id=self.id, party_id=party_id, role=role))
        if self.signed_by >= {self.musician_id, self.organizer_id}:
            assert self.event_date is not None
            self._record(
                ContractSignedEvent(
                    contract_id=self.id,
                    musician_id=self.musician_id,
                    gig_id=self.gig_id,
                    amount=self.amount,
                    event_date=self.event_date,
                )
            )

    def mark_paid(self, *, payment_id: str, transaction_id: str) -> None:
        """The payment went through. Only a signed contract (or one whose payment failed) is."""
        if self.status not in _PAYABLE:
            raise IllegalTransition(f"contract {self.id} is {self.status}; cannot be marked paid")
        self._record(
            ContractPaidEvent(
                contract_id=self.id,
                payment_id=require_text("payment id", payment_id),
                transaction_id=transaction_id,
            )
        )

    def mark_payment_failed(self, *, payment_id: str, reason: str) -> None:
        """A payment was declined or failed; the contract waits for another attempt or a cancel."""
        if self.status not in _PAYABLE:
            raise IllegalTransition(f"contract {self.id} is {self.status}; payment cannot fail")
        self._record(
            ContractPaymentFailedEvent(
                contract_id=self.id, payment_id=payment_id, reason=require_text("reason", reason)
            )
        )

    def cancel(self, reason: str) -> None:
        """Cancel before it is paid."""
        if self.status not in _CANCELLABLE:
            raise IllegalTransition(f"contract {self.id} is {self.status}; cannot be cancelled")
        self._record(ContractCancelledEvent(contract_id=self.id, reason=require_text("reason",
                                                                                      reason)))

    def apply(self, event: DomainEvent) -> None:
        match event:
            case ContractDraftedEvent():
                self.status = ContractStatus.DRAFTED
                self.application_id, self.musician_id = event.application_id, event.musician_id
                self.organizer_id, self.gig_id = event.organizer_id, event.gig_id
                self.amount, self.event_date = event.amount, event.event_date
            case ContractPartySignedEvent():
                self.signed_by.add(event.party_id)
            case ContractSignedEvent():
                self.status = ContractStatus.SIGNED
            case ContractPaidEvent():
                self.status = ContractStatus.PAID
                self.payment_id = event.payment_id
            case ContractPaymentFailedEvent():
                self.status = ContractStatus.PAYMENT_FAILED
                self.payment_id, self.reason = event.payment_id, event.reason
            case ContractCancelledEvent():
                self.status = ContractStatus.CANCELLED
                self.reason = event.reason
            case _:
                raise TypeError(f"Contract cannot apply {event.event_type}")
