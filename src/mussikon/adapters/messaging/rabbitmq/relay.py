"""The outbox relay: publishes the store's global order to the events exchange.

The store is the outbox. The relay reads events after its checkpoint, publishes a batch
with publisher confirms (many in flight at once), and moves the checkpoint only when the
broker has confirmed the whole batch. A crash re-publishes at most the unconfirmed batch;
every message's id is its event's id, so consumers recognise the repeats.

Events another service published (recorded with an origin, `EventStore.record_foreign`)
are never published again: the checkpoint moves past them, so no event echoes back to the
bus it came from.

One relay is active among all the processes sharing a store: the holder of a lease in
the document store, renewed while it works. The others stand by and take over when the
lease expires or is released.

A batch the broker does not confirm within its timeout (`BrokerConnection.answer`) is
published again, on a new connection; the position moves only past confirmed batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import PublishError

from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.adapters.messaging.rabbitmq.properties import event_properties
from mussikon.adapters.messaging.rabbitmq.publisher import Outgoing, publish_batch
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop
from mussikon.followers.undecodable import skip_undecodable
from mussikon.ports.documents import Changes, DocumentStore
from mussikon.ports.event_store import EventStore, RecordedEvent, StoreError, UndecodableEventError
from mussikon.wire import EventCodec

_RETRYABLE: tuple[type[BaseException], ...] = (*BROKER_ERRORS, StoreError)
"""What a lost connection or an unreachable store raises: the relay tries again later."""


class OutboxRelay:
    """Moves events from the store to RabbitMQ, in order, each confirmed before it counts."""

    def __init__(self, store: EventStore, documents: DocumentStore, codec: EventCodec,
                 topology: Topology, broker: BrokerConnection, *, name: str = "relay",
                 batch_size: int = 500, batches_in_flight: int = 4,
                 lease_seconds: float = 10.0,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 checkpoint_interval: float = 0.25, owner: str | None = None) -> None:
        self.store, self.documents, self.codec = store, documents, codec
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
        self._confirmed = 0
        self._saved = 0
        self._saved_at = -checkpoint_interval

    @property
    def is_active(self) -> bool:
        """True while this relay holds the lease (the others are standing by)."""
        return self._lease.held

    async def position(self) -> int:
        """The store position up to which every event was published and confirmed, by this
        relay or, as saved in the store, by any."""
        return max(self._confirmed, await self.documents.checkpoint(self.name))

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

    async def _publish_step(self) -> bool:
        """Publish what is pending if this relay holds the lease; True if it published."""
        if not await self._lease.hold():
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
        if self._confirmed <= self._saved:
            return None
        return self._saved_at + self.checkpoint_interval - time.monotonic()

    async def _save_checkpoint(self) -> None:
        # Saved at most every `checkpoint_interval`, not per batch: under a trickle of events
        # every batch is one event, and a write per event would double the store's commits.
        # A crash re-publishes what was confirmed since; consumers recognise the repeats.
        position = self._confirmed
        if position > self._saved:
            await self.documents.commit(Changes(), checkpoint=(self.name, position))
            self._saved, self._saved_at = position, time.monotonic()

    async def publish_pending(self) -> int:
        """Publish every event after the checkpoint, moving the checkpoint batch by batch.

        Up to `batches_in_flight` batches await their confirms at once, so the broker never
        waits for the relay; a batch's position is saved only when it and every batch before
        it are confirmed, and at most every `checkpoint_interval` seconds. Returns how many
        events it went through, those of other services passed by included (0: nothing
        new). Raises a broker error if a message was not confirmed; the position stays at
        the last batch confirmed in full.
        """
        next_position = await self.position() + 1
        # (last position, events, messages published, their confirms, the channel's
        # connection) per batch in flight
        window: deque[tuple[int, int, int, asyncio.Future[list[Any]],
                           AbstractConnection | None]] = deque()
        published = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < self.batches_in_flight:
                    try:
                        records = await self.store.read_all(next_position, self.batch_size)
                    except UndecodableEventError as exc:
                        if window:  # settle what is in flight first
                            exhausted = True
                            break
                        await self._skip_undecodable(exc)
                        next_position, published = exc.position + 1, published + 1
                        continue
                    if not records:
                        exhausted = True
                        break
                    outgoing = [self._outgoing(r) for r in records if not r.origin]
                    connection: AbstractConnection | None = None
                    sent: list[asyncio.Future[Any]] = []
                    if outgoing:
                        channel = await self._publishing_channel()
                        connection = channel.connection
                        sent = await self.broker.answer(publish_batch(channel, outgoing),
                                                        "taking events to publish", connection)
                    confirms = asyncio.gather(*sent)
                    window.append((records[-1].position, len(records), len(outgoing),
                                   confirms, connection))
                    next_position = records[-1].position + 1
                if not window:
                    return published
                position, count, messages, confirms, connection = window[0]
                await self.broker.answer(asyncio.shield(confirms), "confirming published "
                                         "events", connection)
                window.popleft()
                self.published += messages
                published += count
                self._confirmed = max(self._confirmed, position)
                due = self._checkpoint_due()
                if due is not None and due <= 0:
                    await self._save_checkpoint()
                if self._poll.stopping or not await self._lease.hold():
                    exhausted = True  # finish the batches in flight, start no more
        finally:
            for _, _, _, unconfirmed, _ in window:
                unconfirmed.cancel()
                with contextlib.suppress(BaseException):
                    await unconfirmed

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

    async def _skip_undecodable(self, error: UndecodableEventError) -> None:
        # No body to publish: one bad row must not stop every event after it.
        await skip_undecodable(self.documents, self.name, error)
        self._confirmed = self._saved = max(self._confirmed, error.position)
