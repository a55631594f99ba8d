"""The outbox relay: publishes the store's feed (`ports.feed`) to the events exchange.

The store is the outbox. The relay reads events after its checkpoint, publishes a batch
with publisher confirms (many in flight at once), and moves the checkpoint only when the
broker has confirmed the whole batch. A crash re-publishes at most the unconfirmed batch;
every message's id is its event's id, so consumers recognise the repeats.

Events another service published (recorded with an origin, `EventStore.record_foreign`)
are never published again: the checkpoint moves past them, so no event echoes back to the
bus it came from.

One relay is active among all the processes sharing a store: the holder of a lease in
the document store, renewed while it works. The others stand by and take over when the
lease expires or is released. A relay that stalls (a paused process, a store it cannot
reach) may lose the lease without knowing; it still never publishes alongside the one
that took over: it sends a batch only with a third of its term surely left (counted on its
own clock from before it last renewed), waits for confirms no longer than until the next
renewal, and gives the batches in flight up as soon as a renewal fails. Its checkpoint
writes are fenced (`DocumentStore.commit(fence=...)`): once another relay took the lease
over, nothing the stale one had confirmed moves the checkpoint. So no event is published by
two relays but those the stale one had sent and not saved when the lease changed hands: the
new holder starts from the saved checkpoint.

A batch the broker does not confirm within its timeout (`BrokerConnection.timeout`) is
published again, on a new connection; the position moves only past confirmed batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import PublishError

from mussikon import metrics, tracing
from mussikon.adapters.messaging.rabbitmq.connection import (
    BROKER_ERRORS,
    BrokerConnection,
    BrokerTimeout,
)
from mussikon.adapters.messaging.rabbitmq.properties import event_properties
from mussikon.adapters.messaging.rabbitmq.publisher import Outgoing, publish_batch
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.adapters.messaging.relays import LeasedRelay
from mussikon.followers.undecodable import skip_undecodable
from mussikon.ports.documents import DocumentStore, Fence
from mussikon.ports.event_store import EventStore, RecordedEvent, StoreError, UndecodableEventError
from mussikon.ports.feed import Checkpoint, Feed
from mussikon.wire import EventCodec

log = logging.getLogger("mussikon.relay")

SYSTEM: metrics.Broker = "rabbitmq"
"""The `messaging.system` of the trace spans."""

_RETRYABLE: tuple[type[BaseException], ...] = (*BROKER_ERRORS, StoreError)
"""What a lost connection or an unreachable store raises: the relay tries again later."""


class OutboxRelay(LeasedRelay):
    """Moves events from the store to RabbitMQ, in order, each confirmed before it counts."""

    def __init__(self, store: EventStore, documents: DocumentStore, codec: EventCodec,
                 topology: Topology, broker: BrokerConnection, *, name: str = "relay",
                 batch_size: int = 500, batches_in_flight: int = 4,
                 lease_seconds: float = 10.0,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 checkpoint_interval: float = 0.25, owner: str | None = None,
                 feed: Feed | None = None) -> None:
        super().__init__(store, documents, name=name, lease_seconds=lease_seconds,
                         poll_interval=poll_interval, poll_max_interval=poll_max_interval,
                         checkpoint_interval=checkpoint_interval, owner=owner, feed=feed,
                         expected_errors=_RETRYABLE)
        self.codec, self.topology, self.broker = codec, topology, broker
        self.batch_size = batch_size
        self.batches_in_flight = batches_in_flight
        self._channel: AbstractChannel | None = None

    async def _close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*BROKER_ERRORS):
                await self.broker.answer(self._channel.close(), "closing a channel",
                                         self._channel.connection)

    async def _publish(self) -> int:
        try:
            return await self.publish_pending()
        except PublishError as exc:
            # Unroutable: a queue of the topology is gone. A new connection declares it again.
            self.broker.drop(f"an event could not be routed ({exc})")
            raise

    async def publish_pending(self) -> int:
        """Publish every event after the checkpoint, moving the checkpoint batch by batch,
        while this relay holds the lease (nothing if it does not).

        Up to `batches_in_flight` batches await their confirms at once, so the broker never
        waits for the relay; a batch's position is saved only when it and every batch before
        it are confirmed, and at most every `checkpoint_interval` seconds. Returns how many
        events it went through, those of other services passed by included (0: nothing
        new). Raises a broker error if a message was not confirmed; the position stays at
        the last batch confirmed in full. Stops, giving up the batches in flight, when the
        lease is lost.
        """
        term = self._lease.fence
        if term is None:
            return 0
        after = await self.checkpoint()
        # (checkpoint after it, events, messages published, their confirms, the channel's
        # connection) per batch in flight
        window: deque[tuple[Checkpoint, int, int, asyncio.Future[list[Any]],
                           AbstractConnection | None]] = deque()
        published = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < self.batches_in_flight:
                    try:
                        page = await self.feed.read(after, self.batch_size)
                    except UndecodableEventError as exc:
                        if window:  # settle what is in flight first
                            exhausted = True
                            break
                        if not await self._skip_undecodable(exc, term):
                            return published
                        after, published = exc.checkpoint, published + 1
                        continue
                    records = page.events
                    for unreadable in page.undecodable:  # no body to publish: passed
                        await skip_undecodable(self.documents, self.name, unreadable)
                    if not records and not page.undecodable:
                        exhausted = True
                        break
                    outgoing = [self._outgoing(r) for r in records if not r.origin]
                    connection: AbstractConnection | None = None
                    sent: list[asyncio.Future[Any]] = []
                    if outgoing:
                        channel = await self._publishing_channel()
                        if not await self._may_publish(term):
                            exhausted = True  # the lease is lost or nearly over: send no more
                            break
                        connection = channel.connection
                        spans = self._traced(outgoing, records) if tracing.enabled() else []
                        with tracing.sending(spans):
                            sent = await self.broker.answer(
                                publish_batch(channel, outgoing), "taking events to publish",
                                connection)
                    confirms = asyncio.gather(*sent)
                    window.append((page.checkpoint, len(records) + len(page.undecodable),
                                   len(outgoing), confirms, connection))
                    after = page.checkpoint
                if not window:
                    return published
                checkpoint, count, messages, confirms, connection = window[0]
                if not await self._confirmed_while_leased(confirms, term, connection):
                    return published  # lost the lease: the batches in flight are given up
                window.popleft()
                self.published += messages
                metrics.published(SYSTEM, messages)
                published += count
                await self._relayed_up_to(checkpoint)  # confirmed in the order read
                if self._poll.stopping:
                    exhausted = True  # finish the batches in flight, start no more
        finally:
            for _, _, _, unconfirmed, _ in window:
                unconfirmed.cancel()
                with contextlib.suppress(BaseException):
                    await unconfirmed

    async def _confirmed_while_leased(self, confirms: asyncio.Future[list[Any]],
                                      term: Fence,
                                      connection: AbstractConnection | None) -> bool:
        """Wait for a batch's confirms, at most the broker's timeout (then BrokerTimeout, and
        the connection is dropped to be opened again); each
        wait lasts only until the lease is due for renewal, then it is renewed, so the lease
        never runs out while this waits. False as soon as the lease is lost (not held at the
        generation `term` any more)."""
        give_up = time.monotonic() + self.broker.timeout
        while True:
            left = give_up - time.monotonic()
            if left <= 0:
                reason = f"no answer within {self.broker.timeout:g} s (confirming published events)"
                self.broker.drop(reason, connection)
                raise BrokerTimeout(f"RabbitMQ gave {reason}")
            due = self._lease.renewal_due()
            if due > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(confirms), min(left, due))
                    return True
                continue
            if not await self._hold() or self._lease.fence != term:
                log.warning("relay %s lost its lease while waiting for the broker's confirms;"
                            " the batches in flight are the new holder's to publish", self.name)
                return False

    def _traced(self, outgoing: list[Outgoing], records: Sequence[RecordedEvent]
                ) -> list[tracing.Publication]:
        """Start a PRODUCER span per message, each a child of the context its event was
        appended in, and put its context in the message's headers (`traceparent`,
        `tracestate`)."""
        spans = []
        ours = (r for r in records if not r.origin)
        for message, record in zip(outgoing, ours, strict=True):
            span = tracing.publication(SYSTEM, message.exchange, record.event,
                                       parent=record.traceparent,
                                       routing_key=message.routing_key)
            if span is not None:
                message.properties.headers = {**(message.properties.headers or {}),
                                              **span.headers}
                spans.append(span)
        return spans

    def _outgoing(self, record: RecordedEvent) -> Outgoing:
        event = record.event
        # Mandatory: unroutable means the topology is missing a queue, an error rather than a
        # silent drop.
        return Outgoing(self.codec.encode(event), self.topology.events_exchange,
                        self.topology.routing_key(event.event_type),
                        event_properties(event, record.position), mandatory=True)

    async def _publishing_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            connection = await self.broker.connection()
            self._channel = await self.broker.answer(
                connection.channel(publisher_confirms=True, on_return_raises=True),
                "opening a channel", connection)
        return self._channel
