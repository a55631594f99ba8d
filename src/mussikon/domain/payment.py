"""Payment: money moving for a signed contract, through a payment gateway."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.contract import Contract, ContractStatus
from mussikon.domain.errors import AmountMismatch, ContractNotSigned, IllegalTransition
from mussikon.domain.events import (
    PAYMENT_COMPLETED,
    PAYMENT_DECLINED,
    PAYMENT_FAILED,
    DomainEvent,
    PaymentProcessedEvent,
    PaymentRequestedEvent,
)
from mussikon.domain.rules import require_positive_amount, require_text


class PaymentStatus(StrEnum):
    NEW = "New"
    REQUESTED = "Requested"
    COMPLETED = PAYMENT_COMPLETED
    DECLINED = PAYMENT_DECLINED
    FAILED = PAYMENT_FAILED


_OUTCOMES = {s.value: s for s in (PaymentStatus.COMPLETED, PaymentStatus.DECLINED,
                                   PaymentStatus.FAILED)}


class Payment(Aggregate):
    """Requested once, then processed once: Completed, Declined or Failed."""

    stream_prefix = "payment"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = PaymentStatus.NEW
        self.contract_id = ""
        self.amount = Decimal(0)
        self.idempotency_key = ""
        self.transaction_id = ""

    def request(self, *, contract: Contract, amount: Decimal) -> None:
        """Ask for a payment. Rules: the contract is signed (or its last payment failed) and the
        amount is the contract's."""
        if self.exists:
            raise IllegalTransition(f"payment {self.id} was already requested")
        if contract.status not in (ContractStatus.SIGNED, ContractStatus.PAYMENT_FAILED):
            raise ContractNotSigned(f"contract {contract.id} is {contract.status}, not signed")
        amount = require_positive_amount("payment amount", amount)
        if amount != contract.amount:
            raise AmountMismatch(f"payment {amount} differs from contract amount {contract.amount}")
        self._record(
            PaymentRequestedEvent(
                payment_id=self.id, contract_id=contract.id, amount=amount,
                idempotency_key=f"payment-{self.id}",
            )
        )

    def record_outcome(self, *, status: str, transaction_id: str) -> None:
        """The gateway's answer. Only a requested payment gets one, and only once."""
        if self.status is not PaymentStatus.REQUESTED:
            raise IllegalTransition(
                f"payment {self.id} is {self.status}; only a requested payment gets an outcome"
            )
        if status not in _OUTCOMES:
            raise IllegalTransition(f"unknown payment status {status!r}")
        self._record(
            PaymentProcessedEvent(
                payment_id=self.id, contract_id=self.contract_id, amount=self.amount,
                status=status, transaction_id=require_text("transaction id", transaction_id),
            )
        )

    def apply(self, event: DomainEvent) -> None:
        match event:
            case PaymentRequestedEvent():
                self.status = PaymentStatus.REQUESTED
                self.contract_id, self.amount = event.contract_id, event.amount
                self.idempotency_key = event.idempotency_key
            case PaymentProcessedEvent():
                self.status = _OUTCOMES.get(event.status, PaymentStatus.FAILED)
                self.transaction_id = event.transaction_id
            case _:
                raise TypeError(f"Payment cannot apply {event.event_type}")
