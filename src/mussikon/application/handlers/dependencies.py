"""What every handler is given (`Dependencies`), and what handlers share: saying what they
did (`react`) and reading their own past (`read_models_at`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mussikon.application.marketplace import Marketplace
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.application.repository import Repository
from mussikon.ports.analytics import Analytics
from mussikon.ports.documents import DocumentStore
from mussikon.ports.notifier import Notifier
from mussikon.ports.payments import PaymentGateway
from mussikon.ports.transport import Envelope, Handler

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
    """Say what a handler did about an event (the demo's timeline listens to this logger). At
    debug: what it says is made of the event's body (names, addresses, amounts)."""
    event = envelope.event
    reactions.debug("%s: %s", handler, what,
                   extra={"event_type": event.event_type, "event_id": str(event.id),
                          "handler": handler, "reaction": what})


async def read_models_at(envelope: Envelope, deps: Dependencies, *names: str) -> None:
    """Wait until the read models have applied this event, so a handler reads its own past."""
    if envelope.position is not None:
        for name in names:
            await deps.projections.wait_for(name, envelope.position)


HandlerFn = Callable[[Envelope, Dependencies], Awaitable[None]]


def bind(handler: HandlerFn, deps: Dependencies) -> Handler:
    """The handler with its dependencies, as a transport calls it."""
    async def handle(envelope: Envelope) -> None:
        await handler(envelope, deps)

    return handle
