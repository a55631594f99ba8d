"""Idempotent consumers: an inbox of message ids each subscription has handled."""

from __future__ import annotations

from mussikon.ports.documents import Changes, DocumentStore
from mussikon.ports.transport import Envelope, Handler, Subscription


def idempotent(subscription: Subscription, documents: DocumentStore) -> Subscription:
    """The same subscription, whose handler skips a message id it has handled before.

    The id is recorded only after the handler succeeded, so a crash in between
    redelivers the message; the handler's own effects are keyed (notification keys,
    payment idempotency keys, deterministic event ids) so the second run changes nothing.
    """
    name, inner = subscription.name, subscription.handler

    async def handle(envelope: Envelope) -> None:
        if await documents.has_seen(name, envelope.message_id):
            return
        await inner(envelope)
        await documents.commit(Changes(), inbox=(name, envelope.message_id))

    handler: Handler = handle
    return Subscription(subscription.name, subscription.event_types, handler)
