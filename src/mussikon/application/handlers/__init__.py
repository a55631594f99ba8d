"""The specification's event handlers, each step doing a real thing.

Handlers are plain async functions `(envelope, deps)`; `subscriptions(deps)` is the one
explicit map from event types to handlers. Every subscription is made idempotent by
the inbox, and each effect has its own key (notification keys, payment idempotency
keys, deterministic event ids), so a redelivered event has no second effect.
"""

from __future__ import annotations

from mussikon.application.handlers import contracts, gigs, musicians
from mussikon.application.handlers.dependencies import Dependencies, HandlerFn, bind

__all__ = ["Dependencies", "subscriptions"]
from mussikon.domain.events import (
    ContractSignedEvent,
    DomainEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
)
from mussikon.ports.transport import Subscription


def subscriptions(deps: Dependencies) -> list[Subscription]:
    """Every handler subscription, by the event type it reacts to."""
    table: list[tuple[str, type[DomainEvent], HandlerFn]] = [
        ("musicians.on-registered", MusicianRegisteredEvent,
         musicians.on_musician_registered),
        ("musicians.on-application-submitted", MusicianApplicationSubmittedEvent,
         musicians.on_application_submitted),
        ("gigs.on-created", EventCreatedEvent, gigs.on_gig_created),
        ("contracts.on-signed", ContractSignedEvent, contracts.on_contract_signed),
        ("contracts.on-payment-processed", PaymentProcessedEvent,
         contracts.on_payment_processed),
    ]
    return [Subscription(name, frozenset({event.__name__}), bind(handler, deps))
            for name, event, handler in table]

