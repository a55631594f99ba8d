"""Payment gateways: the port, and a sandbox that behaves like a real provider's test mode.

`SandboxGateway` takes test card tokens, as Stripe's test mode does, and answers each one
the way the provider would:

=======================================  ===========  ===================
source token                             status       decline code
=======================================  ===========  ===================
``tok_visa``                             Completed
``tok_mastercard``                       Completed
``tok_amex``                             Completed
``tok_chargeDeclined``                   Declined     card_declined
``tok_chargeDeclinedInsufficientFunds``  Declined     insufficient_funds
``tok_chargeDeclinedExpiredCard``        Declined     expired_card
``tok_processingError``                  Failed       processing_error
=======================================  ===========  ===================

Any other token is refused with `InvalidPaymentRequest`. Every request carries an
idempotency key: a retry with the same key gets the same result and transaction id and
charges nothing more (a `Failed` result is replayed too, as providers do: retry a failure
with a new key); the same key with another amount, currency or source is refused with
`IdempotencyConflict`. Charges are kept in the document store (collection
``sandbox-charges``), so with SQLite the ledger survives a restart.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import cast

from mussikon.ports.documents import Changes, Document, DocumentStore
from mussikon.ports.payments import (
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    IdempotencyConflict,
    InvalidPaymentRequest,
    PaymentError,
    PaymentGateway,
)


@dataclass(frozen=True, slots=True)
class SandboxCard:
    """How the sandbox answers a test card token."""

    status: ChargeStatus
    decline_code: str = ""
    message: str = "Payment completed."


TEST_CARDS: dict[str, SandboxCard] = {
    "tok_visa": SandboxCard("Completed"),
    "tok_mastercard": SandboxCard("Completed"),
    "tok_amex": SandboxCard("Completed"),
    "tok_chargeDeclined": SandboxCard("Declined", "card_declined", "Your card was declined."),
    "tok_chargeDeclinedInsufficientFunds": SandboxCard(
        "Declined", "insufficient_funds", "Your card has insufficient funds."),
    "tok_chargeDeclinedExpiredCard": SandboxCard(
        "Declined", "expired_card", "Your card has expired."),
    "tok_processingError": SandboxCard(
        "Failed", "processing_error",
        "An error occurred while processing your card. Try again with a new idempotency key."),
}
"""The sandbox's test card tokens, as documented in the module docstring."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxCharge:
    """One entry of the sandbox ledger: the request and its result."""

    transaction_id: str
    idempotency_key: str
    amount: Decimal
    currency: str
    source: str
    status: ChargeStatus
    decline_code: str
    message: str
    description: str
    metadata: dict[str, str]
    created_at: datetime

    @property
    def result(self) -> ChargeResult:
        """The answer the charge gave."""
        return ChargeResult(status=self.status, transaction_id=self.transaction_id,
                            decline_code=self.decline_code, message=self.message)


COLLECTION = "sandbox-charges"
_CLAIMS = "mussikon.sandbox-gateway"  # inbox consumer whose entries claim idempotency keys
_CURRENCY = re.compile(r"[A-Z]{3}")
_CENT = Decimal("0.01")
_ID_ALPHABET = string.ascii_letters + string.digits


def new_transaction_id() -> str:
    """`txn_` and 24 random letters and digits."""
    return "txn_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def validate(request: ChargeRequest) -> SandboxCard:
    """The test card the request names, or InvalidPaymentRequest saying what is wrong."""
    amount = request.amount
    try:
        exact = isinstance(amount, Decimal) and amount.is_finite() and \
            amount == amount.quantize(_CENT)
    except InvalidOperation:
        exact = False
    if not exact or amount <= 0:
        raise InvalidPaymentRequest(
            f"amount {amount!s} is invalid: it must be a positive Decimal with at most"
            " 2 decimal places")
    if not _CURRENCY.fullmatch(request.currency):
        raise InvalidPaymentRequest(
            f"currency {request.currency!r} is invalid: use a three-letter ISO code like 'USD'")
    if not request.idempotency_key or len(request.idempotency_key) > 255:
        raise InvalidPaymentRequest("idempotency_key must be 1 to 255 characters long")
    card = TEST_CARDS.get(request.source)
    if card is None:
        raise InvalidPaymentRequest(
            f"unknown card token {request.source!r}; the sandbox accepts "
            + ", ".join(TEST_CARDS))
    return card


class SandboxGateway(PaymentGateway):
    """Test mode: answers by test card token and keeps its ledger in the document store."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents
        self._last_micros = 0

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        card = validate(request)
        previous = await self._charge_for(request)
        if previous is not None:
            return previous.result
        charge = SandboxCharge(
            transaction_id=new_transaction_id(), idempotency_key=request.idempotency_key,
            amount=request.amount, currency=request.currency, source=request.source,
            status=card.status, decline_code=card.decline_code, message=card.message,
            description=request.description, metadata=dict(request.metadata),
            created_at=datetime.now(UTC),
        )
        changes = Changes()
        changes.put(COLLECTION, request.idempotency_key, self._to_document(charge))
        # The inbox entry makes claiming the key atomic, also between processes sharing
        # one database: of two concurrent requests with one key, only one records a charge.
        if await self.documents.commit(changes, inbox=(_CLAIMS, request.idempotency_key)):
            return charge.result
        winner = await self._charge_for(request)
        if winner is None:  # the claim exists without its record: only if the store lost it
            raise PaymentError(f"idempotency key {request.idempotency_key!r} is claimed but"
                               " no charge is recorded for it")
        return winner.result

    async def charges(self) -> list[SandboxCharge]:
        """The ledger, oldest first."""
        rows = await self.documents.scan(COLLECTION)
        rows.sort(key=lambda row: (row[1]["sequence"], row[0]))
        return [self._from_document(doc) for _, doc in rows]

    async def _charge_for(self, request: ChargeRequest) -> SandboxCharge | None:
        """The charge recorded under the request's key, after checking it is the same charge."""
        doc = await self.documents.get(COLLECTION, request.idempotency_key)
        if doc is None:
            return None
        charge = self._from_document(doc)
        if (charge.amount, charge.currency, charge.source) != \
                (request.amount, request.currency, request.source):
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was used for {charge.amount}"
                f" {charge.currency} from {charge.source}; this request is for"
                f" {request.amount} {request.currency} from {request.source}."
                " Use a new key for a new charge")
        return charge

    def _to_document(self, charge: SandboxCharge) -> Document:
        # Strictly increasing within this process, so the ledger lists charges in the order
        # they were made even when two fall in the same microsecond.
        self._last_micros = max(time.time_ns() // 1000, self._last_micros + 1)
        return {
            "transaction_id": charge.transaction_id, "idempotency_key": charge.idempotency_key,
            "amount": str(charge.amount),  # a string: JSON would turn 10.00 into the integer 10
            "currency": charge.currency, "source": charge.source, "status": charge.status,
            "decline_code": charge.decline_code, "message": charge.message,
            "description": charge.description, "metadata": charge.metadata,
            "created_at": charge.created_at.isoformat(), "sequence": self._last_micros,
        }

    @staticmethod
    def _from_document(doc: Document) -> SandboxCharge:
        return SandboxCharge(
            transaction_id=doc["transaction_id"], idempotency_key=doc["idempotency_key"],
            amount=Decimal(doc["amount"]), currency=doc["currency"], source=doc["source"],
            status=cast(ChargeStatus, doc["status"]), decline_code=doc["decline_code"],
            message=doc["message"], description=doc["description"],
            metadata=dict(doc["metadata"]), created_at=datetime.fromisoformat(doc["created_at"]),
        )
