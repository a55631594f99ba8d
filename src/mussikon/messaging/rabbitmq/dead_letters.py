"""The dead-letter queue, for operators: list without losing, replay, purge.

Listing takes every message without acknowledging it, then closes the channel, which
hands them all back to the queue in order. Replaying publishes the message to the queue
it failed in (through the default exchange: a message sent back through the topic
exchange would reach every other queue bound to its routing key, other services' too),
waits for the broker's confirm, and only then removes it from the dead-letter queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiormq.abc import AbstractChannel, DeliveredMessage

from mussikon.messaging import DeadLetter
from mussikon.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.messaging.rabbitmq.properties import (
    ORIGINAL_ROUTING_KEY,
    dead_letter_id,
    dead_letter_of,
    headers_of,
    original_queue_of,
    replay_properties,
    text,
)
from mussikon.messaging.rabbitmq.topology import Topology


class DeadLetterQueue:
    """`mussikon.dlq`, browsed and replayed."""

    def __init__(self, broker: BrokerConnection, topology: Topology,
                 publish_timeout: float = 30.0) -> None:
        self.broker, self.topology = broker, topology
        self.publish_timeout = publish_timeout

    async def list(self, limit: int = 10_000) -> list[DeadLetter]:
        """The dead letters, oldest first, left in the queue."""
        async with self._browsing() as (channel, count):
            letters = []
            for _ in range(min(count, limit)):
                message = await _take(channel, self.topology.dead_letter_queue)
                if message is None:
                    break
                letters.append(dead_letter_of(message))
            return letters

    async def replay(self, dead_letter_id_: str) -> None:
        """Send one dead letter back to its queue (KeyError if no dead letter has this id)."""
        async with self._browsing() as (channel, count):
            for _ in range(count):
                message = await _take(channel, self.topology.dead_letter_queue)
                if message is None:
                    break
                if dead_letter_id(message) == dead_letter_id_:
                    await self._send_back(channel, message)
                    return
        raise KeyError(f"no dead letter {dead_letter_id_!r}")

    async def replay_all(self) -> int:
        """Send every dead letter back to its queue; return how many."""
        replayed = 0
        async with self._browsing() as (channel, count):
            for _ in range(count):
                message = await _take(channel, self.topology.dead_letter_queue)
                if message is None:
                    break
                await self._send_back(channel, message)
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

    async def _send_back(self, channel: AbstractChannel, message: DeliveredMessage) -> None:
        queue = original_queue_of(message)
        exchange, routing_key = "", queue
        if not queue:
            exchange = self.topology.events_exchange
            routing_key = text(headers_of(message).get(ORIGINAL_ROUTING_KEY))
        if not routing_key:
            raise ValueError("the dead letter names neither its queue nor its routing key")
        await channel.basic_publish(message.body, exchange=exchange, routing_key=routing_key,
                                    properties=replay_properties(message), mandatory=True,
                                    timeout=self.publish_timeout)
        assert message.delivery_tag is not None
        await channel.basic_ack(message.delivery_tag)

    @contextlib.asynccontextmanager
    async def _browsing(self) -> AsyncIterator[tuple[AbstractChannel, int]]:
        """A confirming channel and how many dead letters there are; closing the channel at
        the end returns every message taken and not acknowledged."""
        connection = await self.broker.connection()
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            ok = await channel.queue_declare(self.topology.dead_letter_queue, passive=True)
            yield channel, ok.message_count or 0
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.close()


async def _take(channel: AbstractChannel, queue: str) -> DeliveredMessage | None:
    message = await channel.basic_get(queue, no_ack=False)
    return message if message.delivery_tag is not None else None
