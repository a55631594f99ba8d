"""`RabbitMqTransport`: the Transport port over RabbitMQ, with the specification's topology.

One process may run any of the three parts: the relay (store → exchange), the consumer
(queues → handlers) and the dead-letter tools. `start(subscriptions)` declares the
topology, starts the relay (unless `relay=False`) and consumes the queues of the event
types the subscriptions want; every part comes back after a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection

from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.adapters.messaging.rabbitmq.consumer import EventConsumer
from mussikon.adapters.messaging.rabbitmq.dead_letters import DeadLetterQueue
from mussikon.adapters.messaging.rabbitmq.relay import OutboxRelay
from mussikon.adapters.messaging.rabbitmq.topology import QueueType, Topology
from mussikon.adapters.messaging.relays import relays_caught_up
from mussikon.config import mask_url
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.leases import Lease
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.feed import Feed
from mussikon.ports.transport import DeadLetter, Replayed, Subscription, Transport
from mussikon.wire import EventCodec

log = logging.getLogger("mussikon.bus")


class RabbitMqTransport(Transport):
    """Events from the store's global order to subscriptions, through RabbitMQ.

    `retry_delays` are the in-process retries of a failing handler (seconds between tries);
    `delayed_retry_delays` the waits in TTL queues after those are used up; then the message
    goes to the dead-letter queue. `prefetch` is per queue consumed, and `max_in_flight`
    (None: no bound beyond the prefetch) bounds the unacknowledged messages of all the queues
    together (`EventConsumer`); `concurrency` bounds the handlers running at once in this
    process. `events_exchange`: the exchange shared with
    the other services, by its full name (empty: `<prefix>mussikon.events`). `timeout`: seconds
    the broker may take to answer an operation or confirm a publish before the connection is
    dropped and opened again (`BrokerConnection.answer`). `stop_grace`: seconds `stop` gives
    the handlers running before it cancels them (their messages are delivered again).
    `dead_letter_interval`: seconds between the moves of the dead-letter queue into the store
    that a started transport makes (`DeadLetterQueue.move`), one process at a time.
    """

    replays_in_place = False  # a replayed letter goes back to its queue, for any consumer

    def __init__(self, url: str, store: EventStore, documents: DocumentStore,
                 codec: EventCodec, *, prefix: str = "", queue_type: QueueType = "quorum",
                 prefetch: int = 100, max_in_flight: int | None = None, concurrency: int = 8,
                 retry_delays: Iterable[float] = (0.05, 0.25, 1.0),
                 delayed_retry_delays: Iterable[float] = (1.0, 10.0, 60.0),
                 relay: bool = True, relay_name: str = "relay", relay_batch_size: int = 500,
                 lease_seconds: float = 10.0, poll_interval: float = 0.05,
                 poll_max_interval: float = 1.0, delivery_limit: int = 20,
                 events_exchange: str = "",
                 notifications_exchange: str = "mussikon.notifications",
                 dead_letter_queue: str = "mussikon.dlq",
                 routing_keys: Mapping[str, str] | None = None,
                 connection_name: str = "mussikon", connect_timeout: float = 10.0,
                 timeout: float = 30.0, stop_grace: float = 30.0,
                 prerequisite_wait: float = 600.0, dead_letter_interval: float = 5.0,
                 feed: Feed | None = None) -> None:
        self.store, self.documents, self.codec = store, documents, codec
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        """What the relay publishes (by default the store's global order)."""
        self.topology = Topology(
            codec.event_types, prefix=prefix, queue_type=queue_type,
            delayed_retry_delays=delayed_retry_delays, events_exchange=events_exchange,
            notifications_exchange=notifications_exchange, dead_letter_queue=dead_letter_queue,
            routing_keys=routing_keys, delivery_limit=delivery_limit)
        self.broker = BrokerConnection(url, name=connection_name,
                                       connect_timeout=connect_timeout, timeout=timeout)
        self.stop_grace = stop_grace
        self.broker.on_connected(self._declare_topology)
        self._relay_options: dict[str, Any] = dict(
            batch_size=relay_batch_size, lease_seconds=lease_seconds,
            poll_interval=poll_interval, poll_max_interval=poll_max_interval)
        self.relay_name = relay_name
        self.relay: OutboxRelay | None = self._new_relay(self.feed) if relay else None
        """The relay of the feed, or of its first part (`Feed.parts`)."""
        self.relays: list[OutboxRelay] = [self.relay] if self.relay is not None else []
        """One relay per part of the feed, each with its lease and checkpoint (known at
        `start`: one on a store with a global order)."""
        self.consumer: EventConsumer | None = None
        self.prefetch, self.concurrency = prefetch, concurrency
        self.max_in_flight = max_in_flight
        self.retry_delays = tuple(retry_delays)
        self.prerequisite_wait = prerequisite_wait
        self.dead_letter_queue = DeadLetterQueue(self.broker, self.topology, documents)
        self.dead_letter_interval = dead_letter_interval
        self._mover: asyncio.Task[None] | None = None
        self._opened = False
        self._monitor: AbstractChannel | None = None

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        """Declare the topology, start the relay, consume for these subscriptions.

        Raises BrokerUnavailable (its message names the URL without the password) if the
        broker cannot be reached.
        """
        if subscriptions:
            self.consumer = EventConsumer(
                self.broker, self.topology, self.codec, subscriptions, store=self.store,
                prefetch=self.prefetch, max_in_flight=self.max_in_flight,
                concurrency=self.concurrency,
                retry_delays=self.retry_delays, prerequisite_wait=self.prerequisite_wait)
            self.broker.on_connected(self.consumer.attach)
            if self._opened:  # connected already, for the dead-letter tools
                await self.consumer.attach(await self.broker.connection())
        await self._open()
        if self.relay is not None:
            parts = await self.feed.parts()
            if list(parts) != [self.feed]:
                self.relays = [self._new_relay(part) for part in parts]
                self.relay = self.relays[0]
            for relay in self.relays:
                relay.start()
        self._mover = asyncio.create_task(self._move_dead_letters(),
                                          name="dead letters into the store")

    async def open_for_operations(self, subscriptions: Sequence[Subscription]) -> None:
        """Connect and declare the topology for the dead-letter tools: no relay, no consumer
        (`replay` sends a letter back to its queue, for a worker; the subscriptions are not
        needed)."""
        await self._open()

    async def _open(self) -> None:
        if not self._opened:
            await self.broker.open()
            self._opened = True

    async def _declare_topology(self, connection: AbstractConnection) -> None:
        answer = self.broker.answer
        channel = await answer(connection.channel(publisher_confirms=False),
                               "opening a channel", connection)
        try:
            await self.topology.declare(
                channel, lambda operation, doing: answer(operation, doing, connection))
        finally:
            await answer(channel.close(), "closing a channel", connection)

    async def ready(self) -> str | None:
        """None while the connection to the broker is up (the consumer and the relay work on
        it, set up again on every new connection); otherwise why not."""
        if not self._opened:
            return f"RabbitMQ at {mask_url(self.broker.url)}: not started"
        return self.broker.not_ready()

    def _new_relay(self, part: Feed) -> OutboxRelay:
        return OutboxRelay(self.store, self.documents, self.codec, self.topology, self.broker,
                           name=part.name(self.relay_name), feed=part, **self._relay_options)

    def wake(self) -> None:
        """Tell the relays new events were appended."""
        for relay in self.relays:
            relay.wake()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until the relay (here or in another process) has published everything stored,
        the queues consumed here and the retry queues are empty, and no handler is running here.

        The quiet state must hold twice in a row, a short interval apart, so a message on its
        way from the broker to this process is not missed.
        """
        await asyncio.wait_for(self._until_idle(), timeout)

    async def _until_idle(self) -> None:
        quiet = 0
        delivered = -1
        while quiet < 2:
            self.wake()
            now_delivered = self.consumer.delivered if self.consumer else 0
            if await self._is_idle() and now_delivered == delivered:
                quiet += 1
            else:
                quiet = 0
            delivered = now_delivered
            await asyncio.sleep(0.02)

    async def _is_idle(self) -> bool:
        if not await relays_caught_up(self.relays, self.feed, self.relay_name):
            return False
        if self.consumer is not None and self.consumer.in_flight:
            return False
        queues = list(self.consumer.queues) if self.consumer else []
        queues += [stage.queue for stage in self.topology.retry_stages]
        try:
            return await self._queued(queues) == 0
        except BROKER_ERRORS:
            return False

    async def _queued(self, queues: Iterable[str]) -> int:
        answer = self.broker.answer
        if self._monitor is None or self._monitor.is_closed:
            connection = await self.broker.connection()
            self._monitor = await answer(connection.channel(publisher_confirms=False),
                                         "opening a channel", connection)
        monitor = self._monitor
        total = 0
        for queue in queues:
            ok = await answer(monitor.queue_declare(queue, passive=True),
                              f"counting the messages of {queue}", monitor.connection)
            total += ok.message_count or 0
        return total

    async def stop(self) -> None:
        """Stop the relay and stop consuming, finish and settle the messages in flight (the
        handlers still running after `stop_grace` seconds are cancelled, their messages
        handed back to the broker, which delivers them again), disconnect."""
        if self._mover is not None:
            self._mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mover
            self._mover = None
        parts = [part.stop(self.stop_grace) for part in (*self.relays, self.consumer)
                 if part is not None]
        results = await asyncio.gather(*parts, return_exceptions=True)
        if self._monitor is not None and not self._monitor.is_closed:
            with contextlib.suppress(*BROKER_ERRORS):
                await self.broker.answer(self._monitor.close(), "closing a channel",
                                         self._monitor.connection)
        await self.broker.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def dead_letters(self, limit: int | None = None,
                           after: str | None = None) -> list[DeadLetter]:
        """The dead letters in the order they were given up on: those in the dead-letter
        queue are moved into the store first (`DeadLetterQueue.move`), then a page is one
        range read of the store's index, whatever the number of letters."""
        await self._moved()
        return await self.dead_letter_queue.page(limit, after)

    async def find_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        await self._moved()
        return await self.dead_letter_queue.find(dead_letter_id)

    async def dead_letter_ids(self, prefix: str, limit: int) -> list[str]:
        await self._moved()
        return await self.dead_letter_queue.ids(prefix, limit)

    async def replay(self, dead_letter_id: str) -> bool:
        """Send a dead letter back to the queue it failed in, with fresh retries, for the
        subscriptions that failed (KeyError if there is no such dead letter; ValueError naming
        why if the broker cannot route it there, and it stays).

        Returns True once the broker has it and it left the dead letters; a consumer
        handles it asynchronously, and if it fails again it comes back under the same id with
        its attempts added up.
        """
        await self._moved()
        await self.dead_letter_queue.replay(dead_letter_id)
        return True

    async def replay_all_dead_letters(self) -> list[Replayed]:
        """Send every dead letter back to its queue, oldest first."""
        await self._moved()
        return await self.dead_letter_queue.replay_all()

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Drop one dead letter; the others stay."""
        await self._moved()
        await self.dead_letter_queue.delete(dead_letter_id)

    async def purge_dead_letters(self) -> int:
        """Drop every dead letter, those still in the dead-letter queue too (moved into the
        store first); return how many. Letters arriving meanwhile stay."""
        await self._open()
        return await self.dead_letter_queue.purge()

    async def _moved(self) -> None:
        await self._open()
        await self.dead_letter_queue.move()

    async def _move_dead_letters(self) -> None:
        """Every `dead_letter_interval` seconds, move the dead-letter queue into the store,
        under a lease: one process of those sharing the queue and the store does it."""
        lease = Lease(self.documents, f"dead-letters:{self.topology.dead_letter_queue}",
                      seconds=max(3 * self.dead_letter_interval, 10.0))
        try:
            while True:
                try:
                    if await lease.hold():
                        await self.dead_letter_queue.move()
                except Exception as exc:  # the broker or the store away: next time
                    log.warning("could not move the dead letters into the store: %s", exc)
                await asyncio.sleep(self.dead_letter_interval)
        finally:
            await lease.release()
