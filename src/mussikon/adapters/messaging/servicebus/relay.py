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
import logging
import time

from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError, ServiceBusError

from mussikon import metrics, tracing
from mussikon.adapters.messaging.servicebus.messages import event_message
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop
from mussikon.followers.undecodable import skip_undecodable
from mussikon.followers.unpublishable import TOO_LARGE, skip_unpublishable
from mussikon.ports.documents import DocumentStore, Fence
from mussikon.ports.event_store import (
    EventStore,
    RecordedEvent,
    StoreError,
    UndecodableEventError,
)
from mussikon.ports.feed import Checkpoint, Feed
from mussikon.wire import EventCodec

log = logging.getLogger("mussikon.servicebus.relay")

SYSTEM: metrics.Broker = "servicebus"
"""The `messaging.system` of the trace spans."""

RELAY = "servicebus-relay"
"""The relay's name: its position and lease in the document store (the RabbitMQ relay's is
`relay`, so that both brokers of one bus keep positions of their own)."""

_RETRYABLE: tuple[type[BaseException], ...] = (ServiceBusError, StoreError, TimeoutError)


class ServiceBusRelay:
    """Moves events from the store to a Service Bus topic, in order, each batch sent before
    its position counts."""

    def __init__(self, store: EventStore, documents: DocumentStore, codec: EventCodec,
                 client: ServiceBusClient, topic: str, *, name: str = RELAY,
                 batch_size: int = 500, lease_seconds: float = 10.0,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 checkpoint_interval: float = 0.25, timeout: float = 30.0,
                 owner: str | None = None, feed: Feed | None = None) -> None:
        self.store, self.documents, self.codec = store, documents, codec
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        self.client, self.topic, self.name = client, topic, name
        self.batch_size, self.timeout = batch_size, timeout
        self.checkpoint_interval = checkpoint_interval
        self.published = 0
        """Messages this relay sent (repeats included)."""
        self._lease = Lease(documents, name, seconds=lease_seconds, owner=owner)
        self._poll = PollLoop(f"relay {name}", interval=poll_interval,
                              max_interval=poll_max_interval, expected_errors=_RETRYABLE)
        self._task: asyncio.Task[None] | None = None
        self._sender: ServiceBusSender | None = None
        self._sent: Checkpoint | None = None
        """Up to where everything was sent, since this relay took the lease."""
        self._saved: Checkpoint | None = None
        self._saved_at = -checkpoint_interval
        self.failing: str | None = None
        """Why the last send failed, until one works."""

    @property
    def is_active(self) -> bool:
        """True while this relay holds the lease."""
        return self._lease.held

    async def checkpoint(self) -> Checkpoint:
        """The feed's checkpoint before which every event was sent: by this relay while it
        holds the lease, else as saved in the store (by any)."""
        if self._sent is not None:
            return self._sent
        return await self.feed.saved(self.name)

    async def position(self) -> int:
        """`checkpoint()` as a global position (0 on a store without a global order)."""
        return self.feed.position(await self.checkpoint())

    def start(self) -> None:
        """Run in the background until `stop()`."""
        if self._task is None:
            self._task = asyncio.create_task(self._poll.run(self._step),
                                             name=f"relay:{self.name}")

    def wake(self) -> None:
        """Look for new events now rather than at the next poll."""
        self._poll.wake()

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the send in progress (or give it up after `timeout`), save the position,
        release the lease, close the sender."""
        self._poll.stop()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(self._save_checkpoint(), timeout)
        await self._lease.release()
        await self._close_sender()

    async def _close_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(ServiceBusError, TimeoutError):
                await asyncio.wait_for(sender.close(), self.timeout)

    async def _hold(self, *, recheck: bool = False) -> bool:
        """Keep the lease; if it was lost meanwhile, forget what was sent and not saved (the
        next holder sends it again)."""
        before = self._lease.fence
        held = await self._lease.hold(recheck=recheck)
        if not held or self._lease.fence != before:
            self._sent = self._saved = None
        return held

    async def _may_publish(self, term: Fence) -> bool:
        """Not stopping, and the lease held at `term` with a third of its term left."""
        return (not self._poll.stopping and await self._hold() and self._lease.fence == term
                and self._lease.remaining() > self._lease.seconds / 3)

    async def _step(self) -> bool:
        if not await self._hold():
            self._poll.look_again_within(self._lease.seconds / 3)
            return False
        try:
            sent = await self.publish_pending()
        except ServiceBusError as exc:
            self.failing = type(exc).__name__
            await self._close_sender()  # a new link at the next try
            raise
        self.failing = None
        if sent:
            return True
        if self._sent is not None and self._sent != self._saved:
            due = self._saved_at + self.checkpoint_interval - time.monotonic()
            if due <= 0:
                await self._save_checkpoint()
            else:
                self._poll.look_again_within(due)
        return False

    async def _save_checkpoint(self) -> None:
        # Forward-only and fenced, as the RabbitMQ relay's: a stale relay moves it no more.
        checkpoint, fence = self._sent, self._lease.fence
        if checkpoint is None or checkpoint == self._saved or fence is None:
            return
        if await self.feed.save(self.name, checkpoint, fence=fence):
            self._saved, self._saved_at = checkpoint, time.monotonic()
        elif await self._hold(recheck=True) and self._lease.fence == fence:
            self._saved = checkpoint  # already past it
        else:
            log.warning("relay %s lost its lease before saving position %d", self.name,
                        self.feed.position(checkpoint))

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
                if not await skip_undecodable(self.documents, self.name, exc, feed=self.feed,
                                              fence=term):
                    return done
                self._sent = self._saved = exc.checkpoint
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
            self._sent = page.checkpoint
            done += len(records) + len(page.undecodable)
            if time.monotonic() - self._saved_at >= self.checkpoint_interval:
                await self._save_checkpoint()
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
