"""The `PaymentGateway` port: charge a card once per idempotency key, and what it answers."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

ChargeStatus = Literal["Completed", "Declined", "Failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """Take `amount` in `currency` from the card behind `source` (a card token)."""

    amount: Decimal
    source: str
    idempotency_key: str
    currency: str = "USD"
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeResult:
    """What the provider answered: `decline_code` is "" unless the charge was declined
    or failed; `message` is the provider's human-readable reason."""

    status: ChargeStatus
    transaction_id: str
    decline_code: str = ""
    message: str = ""

    @property
    def completed(self) -> bool:
        """True when the money was taken."""
        return self.status == "Completed"


class PaymentError(Exception):
    """A payment request the gateway refused to process."""


class InvalidPaymentRequest(PaymentError, ValueError):
    """The request is malformed (unknown token, bad amount, …); retrying it cannot help."""


class IdempotencyConflict(PaymentError):
    """The idempotency key was used before for a different charge."""


class PaymentGateway(abc.ABC):
    """A payment provider that charges cards."""

    @abc.abstractmethod
    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge the card once per idempotency key.

        A retry with the same key returns the first result and charges nothing more;
        the same key with another amount, currency or source raises IdempotencyConflict;
        a malformed request raises InvalidPaymentRequest and is not recorded.
        """
