"""The specification's event handlers, each step doing a real thing.

Handlers are plain async functions `(envelope, deps)`; `subscriptions(deps)` is the one
explicit map from event types to handlers. Every subscription is made idempotent by
the inbox, and each effect has its own key (notification keys, payment idempotency
keys, deterministic event ids), so a redelivered event has no second effect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mussikon.adapters.analytics import Analytics
from mussikon.adapters.notifications import Notifier
from mussikon.adapters.payments import PaymentGateway
from mussikon.domain.events import DomainEvent
from mussikon.messaging import Envelope, Handler, Subscription
from mussikon.projections.runner import ProjectionRunner
from mussikon.service.marketplace import Marketplace
from mussikon.service.repository import Repository
from mussikon.store.documents import DocumentStore

reactions = logging.getLogger("mussikon.reactions")


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What the handlers need, wired once by bootstrap."""

    marketplace: Marketplace
    repository: Repository
    documents: DocumentStore
    notifier: Notifier
    analytics: Analytics
    gateway: PaymentGateway
    projections: ProjectionRunner


def react(envelope: Envelope, handler: str, what: str) -> None:
    """Say what a handler did about an event (the demo's timeline listens to this logger)."""
    event = envelope.event
    reactions.info("%s: %s", handler, what,
                   extra={"event_type": event.event_type, "event_id": str(event.id),
                          "handler": handler, "reaction": what})


async def read_models_at(envelope: Envelope, deps: Dependencies, *names: str) -> None:
    """Wait until the read models have applied this event, so a handler reads its own past."""
    if envelope.position is not None:
        for name in names:
            await deps.projections.wait_for(name, envelope.position)


HandlerFn = Callable[[Envelope, Dependencies], Awaitable[None]]


def subscriptions(deps: Dependencies) -> list[Subscription]:
    """Every handler subscription, by the event type it reacts to."""
    from mussikon.handlers import contracts, gigs, musicians

    table: list[tuple[str, type[DomainEvent], HandlerFn]] = [
        ("musicians.on-registered", musicians.MusicianRegisteredEvent,
         musicians.on_musician_registered),
        ("musicians.on-application-submitted", musicians.MusicianApplicationSubmittedEvent,
         musicians.on_application_submitted),
        ("gigs.on-created", gigs.EventCreatedEvent, gigs.on_gig_created),
        ("contracts.on-signed", contracts.ContractSignedEvent, contracts.on_contract_signed),
        ("contracts.on-payment-processed", contracts.PaymentProcessedEvent,
         contracts.on_payment_processed),
    ]
    return [Subscription(name, frozenset({event.__name__}), bind(handler, deps))
            for name, event, handler in table]


def bind(handler: HandlerFn, deps: Dependencies) -> Handler:
    """The handler with its dependencies, as a transport calls it."""
    async def handle(envelope: Envelope) -> None:
        await handler(envelope, deps)

    return handle
