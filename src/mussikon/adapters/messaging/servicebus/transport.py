"""`ServiceBusTransport`: the Transport port over Azure Service Bus, on the official SDK.

`start(subscriptions)` starts the relay (store → topic) unless `relay=False` and a consumer
on the topic's subscriptions (`entities.subscription_rules`), which must exist: the
transport creates no entity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import ServiceBusError

from mussikon.adapters.messaging.relays import relays_caught_up
from mussikon.adapters.messaging.servicebus.consumer import ServiceBusConsumer
from mussikon.adapters.messaging.servicebus.dead_letters import DeadLetterSubQueues
from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.relay import RELAY, ServiceBusRelay
from mussikon.config import ServiceBusConnectionString, describe_broker
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.feed import Feed
from mussikon.ports.transport import DeadLetter, Replayed, Subscription, Transport
from mussikon.wire import EventCodec

# The SDK logs every AMQP frame and state change at INFO: quiet unless asked for by name.
if logging.getLogger("azure").level == logging.NOTSET:
    logging.getLogger("azure").setLevel(logging.WARNING)


class ServiceBusTransport(Transport):
    """Events from the store's global order to subscriptions, through a Service Bus topic.

    `retry_delays`: the in-process retries (seconds between tries); `delayed_retry_delays`:
    the scheduled copies after those; then the dead-letter sub-queue. `prefetch`: messages
    held per subscription; `concurrency`: handlers at once in this process; `lock_renewal`:
    seconds a message's lock is renewed for at most; `timeout`: seconds an operation may
    take; `stop_grace`: seconds `stop` gives the handlers running before it cancels them.
    """

    replays_in_place = False

    def __init__(self, connection: str, store: EventStore, documents: DocumentStore,
                 codec: EventCodec, *, topic: str = "mussikon-events", prefetch: int = 100,
                 concurrency: int = 8, retry_delays: Iterable[float] = (0.05, 0.25, 1.0),
                 delayed_retry_delays: Iterable[float] = (1.0, 10.0, 60.0),
                 lock_renewal: float = 300.0, relay: bool = True, relay_name: str = RELAY,
                 lease_seconds: float = 10.0, poll_interval: float = 0.05,
                 poll_max_interval: float = 1.0, timeout: float = 30.0,
                 stop_grace: float = 30.0, prerequisite_wait: float = 600.0,
                 feed: Feed | None = None) -> None:
        self.connection = ServiceBusConnectionString.parse(connection)
        self.store, self.documents, self.codec = store, documents, codec
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        """What the relay sends (by default the store's global order)."""
        self.topic, self.timeout, self.stop_grace = topic, timeout, stop_grace
        self.relay_name = relay_name
        self._options: dict[str, Any] = dict(prefetch=prefetch, concurrency=concurrency,
                             retry_delays=tuple(retry_delays),
                             delayed_retry_delays=tuple(delayed_retry_delays),
                             lock_renewal=lock_renewal, prerequisite_wait=prerequisite_wait,
                             timeout=timeout)
        self.client = ServiceBusClient.from_connection_string(connection)
        self._relay_options: dict[str, Any] = dict(
            lease_seconds=lease_seconds, poll_interval=poll_interval,
            poll_max_interval=poll_max_interval, timeout=timeout)
        self.relay: ServiceBusRelay | None = self._new_relay(self.feed) if relay else None
        """The relay of the feed, or of its first part (`Feed.parts`)."""
        self.relays: list[ServiceBusRelay] = [self.relay] if self.relay is not None else []
        """One relay per part of the feed, each with its lease and checkpoint (known at
        `start`: one on a store with a global order)."""
        self.consumer: ServiceBusConsumer | None = None
        self._dead_letters: DeadLetterSubQueues | None = None
        self._started = False

    def _new_relay(self, part: Feed) -> ServiceBusRelay:
        return ServiceBusRelay(self.store, self.documents, self.codec, self.client, self.topic,
                               name=part.name(self.relay_name), feed=part,
                               **self._relay_options)

    def __repr__(self) -> str:
        return f"ServiceBusTransport({self.connection}, topic={self.topic!r})"

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        """Start the relay and receive for these subscriptions."""
        await self.open_for_operations(subscriptions)
        if subscriptions:
            self.consumer = ServiceBusConsumer(self.client, self.topic, self.codec,
                                               subscriptions, store=self.store,
                                               **self._options)
            await self.consumer.start()
        if self.relay is not None:
            parts = await self.feed.parts()
            if list(parts) != [self.feed]:
                self.relays = [self._new_relay(part) for part in parts]
                self.relay = self.relays[0]
            for relay in self.relays:
                relay.start()
        self._started = True

    async def open_for_operations(self, subscriptions: Sequence[Subscription]) -> None:
        """Know the subscriptions, whose dead-letter sub-queues the tools work on (the client
        connects when first used)."""
        names = subscription_rules(subscriptions, self.codec.event_types)
        if self._dead_letters is not None:
            await self._dead_letters.close()
        self._dead_letters = DeadLetterSubQueues(self.client, self.topic, self.codec,
                                                 list(names), self.timeout)

    async def ready(self) -> str | None:
        """None while started and neither the receivers nor the relay found the namespace
        failing at their last try (the receivers try at least once a second); otherwise
        why not, naming the namespace by its endpoint."""
        where = describe_broker(self.connection.value)
        consumer = self.consumer
        if not self._started:
            return f"{where}: not started"
        if consumer is not None and consumer.failing:
            return f"{where}: " + "; ".join(
                f"receiving from {name}: {why}" for name, why in sorted(consumer.failing.items()))
        failing = [relay.failing for relay in self.relays if relay.failing]
        if failing:
            return f"{where}: sending to topic {self.topic}: {failing[0]}"
        return None

    def wake(self) -> None:
        for relay in self.relays:
            relay.wake()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until everything stored was sent, nothing received is unsettled, no copy
        scheduled here is still due, and the subscriptions show no message; twice in a row."""
        async with asyncio.timeout(timeout):
            quiet, delivered = 0, -1
            while quiet < 2:
                self.wake()
                now_delivered = self.consumer.delivered if self.consumer else 0
                quiet = quiet + 1 if (await self._is_idle() and now_delivered == delivered) \
                    else 0
                delivered = now_delivered
                await asyncio.sleep(0.05)

    async def _is_idle(self) -> bool:
        consumer = self.consumer
        if not await relays_caught_up(self.relays, self.feed, self.relay_name):
            return False
        if consumer is None:
            return True
        if consumer.unsettled or consumer.scheduled_until > time.time():
            return False
        try:
            return not await consumer.anything_queued()
        except ServiceBusError:
            return False

    async def stop(self) -> None:
        """Stop the relay and the consumer (settling or abandoning what is in flight), close
        the client."""
        self._started = False
        parts = [part.stop(self.stop_grace) for part in (*self.relays, self.consumer)
                 if part is not None]
        if self._dead_letters is not None:
            parts.append(self._dead_letters.close())
        results = await asyncio.gather(*parts, return_exceptions=True)
        with contextlib.suppress(ServiceBusError, TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self.client.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _dead_letter_queues(self) -> DeadLetterSubQueues:
        if self._dead_letters is None:
            raise RuntimeError("start or open_for_operations first: the subscriptions name "
                               "the dead-letter sub-queues")
        return self._dead_letters

    async def dead_letters(self, limit: int | None = None,
                           after: str | None = None) -> list[DeadLetter]:
        """The letters of the subscriptions' dead-letter sub-queues in turn (peeked: they
        stay), as many as asked for."""
        return await self._dead_letter_queues().page(limit, after)

    async def find_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        """The letter with this id: one peek at its sequence number in its sub-queue."""
        return await self._dead_letter_queues().find(dead_letter_id)

    async def dead_letter_ids(self, prefix: str, limit: int) -> list[str]:
        """Ids starting with `prefix`: the sub-queues of the subscriptions it can name."""
        return await self._dead_letter_queues().ids(prefix, limit)

    async def replay(self, dead_letter_id: str) -> bool:
        """Send the letter back to its subscription alone, then remove it (a worker handles
        it, with fresh retries)."""
        await self._dead_letter_queues().replay(dead_letter_id)
        return True

    async def replay_all_dead_letters(self) -> list[Replayed]:
        return await self._dead_letter_queues().replay_all()

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        await self._dead_letter_queues().delete(dead_letter_id)

    async def purge_dead_letters(self) -> int:
        return await self._dead_letter_queues().purge()
