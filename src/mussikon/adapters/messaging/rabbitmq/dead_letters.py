"""The dead-letter queue, for operators: list without losing, replay, purge.

Listing takes every message without acknowledging it, then closes the channel, which
hands them all back to the queue in order. Replaying publishes the message to the queue
it failed in (through the default exchange: a message sent back through the topic
exchange would reach every other queue bound to its routing key, other services' too),
waits for the broker's confirm, and only then removes it from the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiormq.abc import AbstractChannel, DeliveredMessage

from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.adapters.messaging.rabbitmq.properties import (
    ORIGINAL_ROUTING_KEY,
    dead_letter_id,
    dead_letter_of,
    headers_of,
    original_queue_of,
    replay_properties,
    text,
)
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.ports.transport import DeadLetter


class DeadLetterQueue:
    """`mussikon.dlq`, browsed and replayed."""

    def __init__(self, broker: BrokerConnection, topology: Topology,
                 publish_timeout: float = 30.0) -> None:
        self.broker, self.topology = broker, topology
        self.publish_timeout = publish_timeout

    async def list(self, limit: int = 10_000) -> list[DeadLetter]:
        """The dead letters, oldest first, left in the queue."""
        async with self._browsing() as browse:
            letters = []
            for _ in range(browse.count):
                message = await browse.take()
                if message is None:
                    break
                letters.append(dead_letter_of(message))
        # A quorum queue puts returned messages at its back, so its order drifts as letters
        # are browsed and replayed: the time of failure is the order that means something.
        letters.sort(key=lambda letter: letter.failed_at)
        return letters[:limit]

    async def replay(self, dead_letter_id_: str) -> None:
        """Send one dead letter back to its queue (KeyError if no dead letter has this id)."""
        async with self._browsing() as browse:
            for _ in range(browse.count):
                message = await browse.take()
                if message is None:
                    break
                if dead_letter_id(message) == dead_letter_id_:
                    await self._send_back(browse, message)
                    return
        raise KeyError(f"no dead letter {dead_letter_id_!r}")

    async def replay_all(self) -> int:
        """Send every dead letter back to its queue; return how many."""
        replayed = 0
        async with self._browsing() as browse:
            for _ in range(browse.count):
                message = await browse.take()
                if message is None:
                    break
                await self._send_back(browse, message)
                replayed += 1
        return replayed

    async def purge(self) -> int:
        """Drop every dead letter; return how many."""
        connection = await self.broker.connection()
        channel = await connection.channel(publisher_confirms=False)
        try:
            ok = await channel.queue_purge(self.topology.dead_letter_queue)
            return ok.message_count or 0
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()

    async def _send_back(self, browse: _Browse, message: DeliveredMessage) -> None:
        queue = original_queue_of(message)
        exchange, routing_key = "", queue
        if not queue:
            exchange = self.topology.events_exchange
            routing_key = text(headers_of(message).get(ORIGINAL_ROUTING_KEY))
        if not routing_key:
            raise ValueError("the dead letter names neither its queue nor its routing key")
        await browse.channel.basic_publish(
            message.body, exchange=exchange, routing_key=routing_key,
            properties=replay_properties(message), mandatory=True, timeout=self.publish_timeout)
        await browse.remove(message)

    @contextlib.asynccontextmanager
    async def _browsing(self) -> AsyncIterator[_Browse]:
        """A confirming channel on the dead-letter queue. Closing it at the end returns every
        message taken and not removed; this waits until the queue shows them again, because a
        quorum queue takes them back asynchronously and the next listing would miss them."""
        connection = await self.broker.connection()
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = self.topology.dead_letter_queue
        ok = await channel.queue_declare(queue, passive=True)
        browse = _Browse(channel, queue, ok.message_count or 0)
        try:
            yield browse
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()
        if browse.taken > browse.removed:
            await self._until_returned(browse.count - browse.removed)

    async def _until_returned(self, expected: int, timeout: float = 5.0) -> None:
        connection = await self.broker.connection()
        channel = await connection.channel(publisher_confirms=False)
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                ok = await channel.queue_declare(self.topology.dead_letter_queue, passive=True)
                if (ok.message_count or 0) >= expected:
                    return
                await asyncio.sleep(0.02)
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()


class _Browse:
    """Messages taken from the dead-letter queue on one channel, unacknowledged until removed."""

    def __init__(self, channel: AbstractChannel, queue: str, count: int) -> None:
        self.channel, self.queue, self.count = channel, queue, count
        self.taken = self.removed = 0

    async def take(self) -> DeliveredMessage | None:
        """The next message, or None if the queue has no more."""
        message = await self.channel.basic_get(self.queue, no_ack=False)
        if message.delivery_tag is None:
            return None
        self.taken += 1
        return message

    async def remove(self, message: DeliveredMessage) -> None:
        """Acknowledge a taken message: it leaves the queue for good."""
        assert message.delivery_tag is not None
        await self.channel.basic_ack(message.delivery_tag)
        self.removed += 1
