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
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop
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


class OutboxRelay:
    """Moves events from the store to RabbitMQ, in order, each confirmed before it counts."""

    def __init__(self, store: EventStore, documents: DocumentStore, codec: EventCodec,
                 topology: Topology, broker: BrokerConnection, *, name: str = "relay",
                 batch_size: int = 500, batches_in_flight: int = 4,
                 lease_seconds: float = 10.0,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 checkpoint_interval: float = 0.25, owner: str | None = None,
                 feed: Feed | None = None) -> None:
        self.store, self.documents, self.codec = store, documents, codec
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        self.topology, self.broker = topology, broker
        self.name = name
        self.batch_size = batch_size
        self.batches_in_flight = batches_in_flight
        self.checkpoint_interval = checkpoint_interval
        self.published = 0
        """Messages this relay had confirmed by the broker (repeats included)."""
        self._lease = Lease(documents, name, seconds=lease_seconds, owner=owner)
        self._poll = PollLoop(f"relay {name}", interval=poll_interval,
                              max_interval=poll_max_interval, expected_errors=_RETRYABLE)
        self._task: asyncio.Task[None] | None = None
        self._channel: AbstractChannel | None = None
        self._confirmed: Checkpoint | None = None
        """Up to where the broker confirmed everything, since this relay took the lease."""
        self._saved: Checkpoint | None = None
        self._saved_at = -checkpoint_interval

    @property
    def is_active(self) -> bool:
        """True while this relay holds the lease (the others are standing by)."""
        return self._lease.held

    async def checkpoint(self) -> Checkpoint:
        """The feed's checkpoint before which every event was published and confirmed: by
        this relay while it holds the lease, else as saved in the store (by any)."""
        if self._confirmed is not None:
            return self._confirmed
        return await self.feed.saved(self.name)

    async def position(self) -> int:
        """`checkpoint()` as a global position (0 on a store without a global order)."""
        return self.feed.position(await self.checkpoint())

    def start(self) -> None:
        """Run in the background until `stop()`."""
        if self._task is None:
            self._task = asyncio.create_task(self._poll.run(self._publish_step),
                                             name=f"relay:{self.name}")

    def wake(self) -> None:
        """Look for new events now rather than at the next poll."""
        self._poll.wake()

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight (or give it up after `timeout`) and release the lease."""
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
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(*BROKER_ERRORS):
                await self.broker.answer(self._channel.close(), "closing a channel",
                                         self._channel.connection)

    async def _hold(self, *, recheck: bool = False) -> bool:
        """Keep the lease. If it was lost (even if taken back since, at a new generation),
        forget what was confirmed and not saved: that was the next holder's to publish
        again, and the checkpoint is the holders' since to move."""
        before = self._lease.fence
        held = await self._lease.hold(recheck=recheck)
        if not held or self._lease.fence != before:
            self._confirmed = self._saved = None
        return held

    async def _may_publish(self, term: Fence) -> bool:
        """True if a batch may be sent now: not stopping, and the lease still held at the
        generation `term` with a third of its term surely left (a holder that renewed lately
        has two thirds)."""
        return (not self._poll.stopping and await self._hold() and self._lease.fence == term
                and self._lease.remaining() > self._lease.seconds / 3)

    async def _publish_step(self) -> bool:
        """Publish what is pending if this relay holds the lease; True if it published."""
        if not await self._hold():
            # Standing by: the active relay's lease is checked a few times per term.
            self._poll.look_again_within(self._lease.seconds / 3)
            return False
        try:
            published = await self.publish_pending()
        except PublishError as exc:
            # Unroutable: a queue of the topology is gone. A new connection declares it again.
            self.broker.drop(f"an event could not be routed ({exc})")
            raise
        if published:
            return True
        due = self._checkpoint_due()
        if due is not None and due <= 0:
            with contextlib.suppress(StoreError):
                await self._save_checkpoint()
            due = None
        if due is not None:
            self._poll.look_again_within(due)
        return False

    def _checkpoint_due(self) -> float | None:
        """Seconds until the confirmed position should be saved (None: nothing to save)."""
        if self._confirmed is None or self._confirmed == self._saved:
            return None
        return self._saved_at + self.checkpoint_interval - time.monotonic()

    async def _save_checkpoint(self) -> None:
        # Saved at most every `checkpoint_interval`, not per batch: under a trickle of events
        # every batch is one event, and a write per event would double the store's commits.
        # A crash re-publishes what was confirmed since; consumers recognise the repeats.
        # Forward-only where the feed can tell, no compare-and-set: the checkpoint only says
        # "published up to here", and this relay had everything before it confirmed. Fenced:
        # a stale relay (its lease taken over) moves it no more.
        checkpoint, fence = self._confirmed, self._lease.fence
        if checkpoint is None or checkpoint == self._saved or fence is None:
            return
        if await self.feed.save(self.name, checkpoint, fence=fence):
            self._saved, self._saved_at = checkpoint, time.monotonic()
        elif await self._hold(recheck=True) and self._lease.fence == fence:
            # Held all along, and the checkpoint is past this one already: nothing to save.
            self._saved = checkpoint
        else:
            log.warning("relay %s lost its lease before saving position %d", self.name,
                        self.feed.position(checkpoint))

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
                self._confirmed = checkpoint  # the batches are confirmed in the order read
                due = self._checkpoint_due()
                if due is not None and due <= 0:
                    await self._save_checkpoint()
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

    async def _skip_undecodable(self, error: UndecodableEventError, term: Fence) -> bool:
        """Pass a row nobody can publish (no body): one bad row must not stop every event
        after it. Forward-only, as `_save_checkpoint`: moving past it loses nothing. False
        if the lease was lost (the row is left to the new holder)."""
        if not await skip_undecodable(self.documents, self.name, error, feed=self.feed,
                                      fence=term) and (
                not await self._hold(recheck=True) or self._lease.fence != term):
            return False  # refused by the fence, not because the checkpoint is past the row
        # Skipped only with no batch in flight: everything before the row is confirmed.
        self._confirmed = self._saved = error.checkpoint
        return True
