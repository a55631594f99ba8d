"""The outbox relay to a Service Bus topic: the store's global order, in batches.

The relay reads the events after its checkpoint, packs them into `ServiceBusMessageBatch`es
(each within the size the namespace allows), sends each and moves its position past a batch
only once the send returned; the position is saved at most every `checkpoint_interval`, so
a crash sends again what was sent since, which the namespace's duplicate detection (the
`MessageId` is the event's id) and the consumers' inbox drop. Events recorded from other
services (an origin) are passed by: no echo. An event larger than the largest message the
namespace takes is passed by too, logged and recorded (`followers/unpublishable.py`, reason
`too-large`): retried, it would hold back every event after it.

As the RabbitMQ relay: one relay among all processes sharing the store holds a lease and
publishes, the others stand by; a batch is sent only with a third of the lease's term surely
left, looked at just before each send (opening the link may take long), and the checkpoint
writes are fenced by its generation, so a relay that stalled past its lease publishes
nothing more and moves no checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError

from mussikon import metrics, tracing
from mussikon.adapters.messaging.relays import LeasedRelay
from mussikon.adapters.messaging.servicebus.messages import event_message
from mussikon.followers.undecodable import skip_undecodable
from mussikon.followers.unpublishable import TOO_LARGE, skip_unpublishable
from mussikon.ports.documents import DocumentStore, Fence
from mussikon.ports.event_store import (
    EventStore,
    RecordedEvent,
    StoreError,
    UndecodableEventError,
)
from mussikon.ports.feed import Feed
from mussikon.wire import EventCodec

SYSTEM: metrics.Broker = "servicebus"
"""The `messaging.system` of the trace spans."""

RELAY = "servicebus-relay"
"""The relay's name: its position and lease in the document store (the RabbitMQ relay's is
`relay`, so that both brokers of one bus keep positions of their own)."""

_RETRYABLE: tuple[type[BaseException], ...] = (ServiceBusError, StoreError, TimeoutError)


class ServiceBusRelay(LeasedRelay):
    """Moves events from the store to a Service Bus topic, in order, each batch sent before
    its position counts."""

    def __init__(self, store: EventStore, documents: DocumentStore, codec: EventCodec,
                 client: ServiceBusClient, topic: str, *, name: str = RELAY,
                 batch_size: int = 500, lease_seconds: float = 10.0,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 checkpoint_interval: float = 0.25, timeout: float = 30.0,
                 owner: str | None = None, feed: Feed | None = None) -> None:
        super().__init__(store, documents, name=name, lease_seconds=lease_seconds,
                         poll_interval=poll_interval, poll_max_interval=poll_max_interval,
                         checkpoint_interval=checkpoint_interval, owner=owner, feed=feed,
                         expected_errors=_RETRYABLE)
        self.codec, self.client, self.topic = codec, client, topic
        self.batch_size, self.timeout = batch_size, timeout
        self._sender: ServiceBusSender | None = None
        self.failing: str | None = None
        """Why the last send failed, until one works."""

    async def _close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(ServiceBusError, TimeoutError):
                await asyncio.wait_for(sender.close(), self.timeout)

    async def _publish(self) -> int:
        try:
            sent = await self.publish_pending()
        except ServiceBusError as exc:
            self.failing = type(exc).__name__
            await self._close()  # a new link at the next try
            raise
        self.failing = None
        return sent

    async def publish_pending(self) -> int:
        """Send every event after the position, a batch at a time, while this relay holds the
        lease; returns how many events it went through (0: nothing new)."""
        term = self._lease.fence
        if term is None:
            return 0
        done = 0
        while not self._poll.stopping:
            after = await self.checkpoint()
            try:
                page = await self.feed.read(after, self.batch_size)
            except UndecodableEventError as exc:
                if not await self._skip_undecodable(exc, term):
                    return done
                done += 1
                continue
            records = page.events
            for unreadable in page.undecodable:  # no body to send: recorded, passed
                await skip_undecodable(self.documents, self.name, unreadable)
            if not records and not page.undecodable:
                return done
            pending = [(r, event_message(self.codec, r.event, r.position))
                       for r in records if not r.origin]
            spans = self._traced(pending) if tracing.enabled() else []
            with tracing.sending(spans):
                sent = not pending or await self._send(pending, term)
            if not sent:
                return done
            done += len(records) + len(page.undecodable)
            await self._relayed_up_to(page.checkpoint)
        return done

    def _traced(self, pending: list[tuple[RecordedEvent, ServiceBusMessage]]
                ) -> list[tracing.Publication]:
        """Start a PRODUCER span per message, each a child of the context its event was
        appended in, and put its context in the message's application properties
        (`traceparent`, `tracestate`, and `Diagnostic-Id` as .NET's SDK reads it)."""
        spans = []
        for record, message in pending:
            span = tracing.publication(SYSTEM, self.topic, record.event,
                                       parent=record.traceparent)
            if span is not None:
                properties = message.application_properties
                assert properties is not None  # event_message sets them
                properties.update(span.headers)
                properties[tracing.DIAGNOSTIC_ID] = span.headers[tracing.TRACEPARENT]
                spans.append(span)
        return spans

    async def _send(self, pending: list[tuple[RecordedEvent, ServiceBusMessage]],
                    term: Fence) -> bool:
        """Send the messages in as few batches as their sizes allow, in order; pass by, and
        record, an event too large for any message (`_skip_too_large`). False, sending no
        more, once the lease is lost or nearly over (what is left is the next holder's)."""
        if self._sender is None:
            self._sender = self.client.get_topic_sender(self.topic)
        sender = self._sender
        batch = await self._new_batch(sender)
        for record, message in pending:
            if _added(batch, message):
                continue
            if len(batch):
                if not await self._send_batch(sender, batch, term):
                    return False
                batch = await self._new_batch(sender)
                if _added(batch, message):
                    continue
            if not await self._skip_too_large(record, message, batch.max_size_in_bytes, term):
                return False
        return not len(batch) or await self._send_batch(sender, batch, term)

    async def _send_batch(self, sender: ServiceBusSender, batch: ServiceBusMessageBatch,
                          term: Fence) -> bool:
        """Send `batch` if the lease is still held at `term` with a third of its term left,
        looked at just before the send (opening the link or the send before may have taken
        long); False if not."""
        if not await self._may_publish(term):
            return False
        await sender.send_messages(batch, timeout=self.timeout)
        self.published += len(batch)
        metrics.published(SYSTEM, len(batch))
        return True

    async def _skip_too_large(self, record: RecordedEvent, message: ServiceBusMessage,
                              limit: int, term: Fence) -> bool:
        """Pass by an event larger than the largest message the namespace takes: sent again
        and again it would hold back every event after it. Recorded as unpublishable (the
        record is the operator's to act on); False if the lease was lost."""
        size = sum(len(part) for part in message.body)
        return await skip_unpublishable(
            self.documents, self.name, record, TOO_LARGE,
            f"its message body is {size} bytes; the topic {self.topic!r} takes messages of"
            f" at most {limit} bytes", fence=term)

    async def _new_batch(self, sender: ServiceBusSender) -> ServiceBusMessageBatch:
        # The first opens the link, which tells the largest message the namespace takes.
        async with asyncio.timeout(self.timeout):
            return await sender.create_message_batch()


def _added(batch: ServiceBusMessageBatch, message: ServiceBusMessage) -> bool:
    """Add `message` to `batch`; False if it does not fit."""
    try:
        batch.add_message(message)
    except MessageSizeExceededError:
        return False
    return True
