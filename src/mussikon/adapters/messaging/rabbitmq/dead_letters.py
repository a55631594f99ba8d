"""The dead-letter queue, for operators: list a page without losing anything, replay, delete,
purge.

A queue cannot be read without taking messages off it. Browsing takes messages from the
head without acknowledging them, then gives back those it keeps, one negative
acknowledgement each, in the order it took them (`basic.nack`, never `basic.reject`, which a
quorum queue counts toward a delivery limit). A classic queue puts each one back where it
was. A quorum queue of RabbitMQ 3.x puts returned messages at its back instead (and, when
they come back with the channel's closing, in no particular order), which would turn the
queue and change the order of the next page; a browse that sees this goes on to take the
rest of the queue, one message at a time, and gives each back behind the others, which
brings the queue round to the order it had. So the queue's order, the order in which
letters were given up on, is the same before and after every browse.

Replaying publishes the message to the queue it failed in (through the default exchange: a
message sent back through the topic exchange would reach every other queue bound to its
routing key, other services' too), waits for the broker's confirm, and only then removes it
from the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import DeliveryError

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
from mussikon.ports.transport import DeadLetter, Replayed


class DeadLetterQueue:
    """`mussikon.dlq`, browsed, replayed and pruned without changing its order."""

    def __init__(self, broker: BrokerConnection, topology: Topology) -> None:
        self.broker, self.topology = broker, topology

    async def page(self, limit: int | None = None, after: str | None = None) -> list[DeadLetter]:
        """Up to `limit` dead letters in queue order, after the letter `after` (KeyError if it
        is not in the queue) or from the head; they stay in the queue, in their places.

        Cost: the messages in front of `after`, `after` itself and the `limit` letters are
        taken from the broker (bodies included) and held unacknowledged by this command until
        it gives them back, plus one more to see where the broker put them. On a queue that
        puts returned messages at its back (a quorum queue of RabbitMQ 3.x), the rest of the
        queue is then read too, one message at a time, to restore the order: a full pass.
        Without `limit` the whole queue is read.
        """
        letters: list[DeadLetter] = []
        async with self._browsing() as browse:
            found = after is None
            while (message := await browse.next()) is not None:
                if found:
                    letters.append(dead_letter_of(message))
                    if limit is not None and len(letters) >= limit:
                        break
                elif dead_letter_id(message) == after:
                    found = True
            if not found:
                raise KeyError(f"no dead letter {after!r}")
        return letters

    async def replay(self, dead_letter_id_: str) -> None:
        """Send one dead letter back to its queue (KeyError if no dead letter has this id;
        ValueError naming why if the broker cannot route it there)."""
        async with self._browsing() as browse:
            while (message := await browse.next()) is not None:
                if dead_letter_id(message) == dead_letter_id_:
                    await self._send_back(browse, message)
                    return
        raise KeyError(f"no dead letter {dead_letter_id_!r}")

    async def replay_all(self) -> list[Replayed]:
        """Send every dead letter back to its queue, in one pass over the queue; a letter that
        cannot be sent back stays, in its place, with the reason in its result."""
        results = []
        async with self._browsing() as browse:
            while (message := await browse.next()) is not None:
                letter_id = dead_letter_id(message)
                try:
                    await self._send_back(browse, message)
                except ValueError as exc:
                    results.append(Replayed(letter_id, False, str(exc)))
                else:
                    results.append(Replayed(letter_id, True))
        return results

    async def delete(self, dead_letter_id_: str) -> None:
        """Drop one dead letter (KeyError if no dead letter has this id)."""
        async with self._browsing() as browse:
            while (message := await browse.next()) is not None:
                if dead_letter_id(message) == dead_letter_id_:
                    await browse.remove(message)
                    return
        raise KeyError(f"no dead letter {dead_letter_id_!r}")

    async def purge(self) -> int:
        """Drop every dead letter; return how many."""
        channel = await self._channel(publisher_confirms=False)
        try:
            ok = await self.broker.answer(channel.queue_purge(self.topology.dead_letter_queue),
                                          "purging the dead letters", channel.connection)
            return ok.message_count or 0
        finally:
            await self._close(channel)

    async def _channel(self, *, publisher_confirms: bool) -> AbstractChannel:
        connection = await self.broker.connection()
        return await self.broker.answer(
            connection.channel(publisher_confirms=publisher_confirms, on_return_raises=True),
            "opening a channel", connection)

    async def _close(self, channel: AbstractChannel) -> None:
        with contextlib.suppress(*BROKER_ERRORS):
            await self.broker.answer(channel.close(), "closing a channel", channel.connection)

    async def _send_back(self, browse: _Browse, message: DeliveredMessage) -> None:
        queue = original_queue_of(message)
        exchange, routing_key = "", queue
        if not queue:
            exchange = self.topology.events_exchange
            routing_key = text(headers_of(message).get(ORIGINAL_ROUTING_KEY))
        letter = dead_letter_id(message)
        if not routing_key:
            raise ValueError(f"dead letter {letter} names neither its queue nor its "
                             "routing key")
        try:
            await self.broker.answer(browse.channel.basic_publish(
                message.body, exchange=exchange, routing_key=routing_key,
                properties=replay_properties(message), mandatory=True),
                f"confirming a dead letter sent back to {routing_key}",
                browse.channel.connection)
        except DeliveryError as exc:
            where = f"queue {queue!r}" if queue else f"routing key {routing_key!r}"
            raise ValueError(f"dead letter {letter} cannot be sent back to {where}: the broker "
                             f"refused it ({_refusal(exc)})") from None
        await browse.remove(message)

    @contextlib.asynccontextmanager
    async def _browsing(self) -> AsyncIterator[_Browse]:
        """A confirming channel on the dead-letter queue. At the end, every message taken and
        not removed is given back, and the queue's order restored (see the module's
        docstring); this then waits until the queue shows them all again, because a quorum
        queue takes them back asynchronously and the next command would miss them."""
        channel = await self._channel(publisher_confirms=True)
        queue = self.topology.dead_letter_queue
        try:
            ok = await self.broker.answer(channel.queue_declare(queue, passive=True),
                                          "counting the dead letters", channel.connection)
        except BaseException:
            await self._close(channel)
            raise
        browse = _Browse(channel, queue, ok.message_count or 0, self.broker)
        try:
            yield browse
        finally:
            with contextlib.suppress(*BROKER_ERRORS):  # a broken channel gave them back
                await browse.give_back_in_order()
            await self._close(channel)
            if browse.taken > browse.removed:  # also when the command failed midway
                with contextlib.suppress(*BROKER_ERRORS):
                    await self._until_returned(browse.count - browse.removed)

    async def _until_returned(self, expected: int, timeout: float = 5.0) -> None:
        channel = await self._channel(publisher_confirms=False)
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                ok = await self.broker.answer(
                    channel.queue_declare(self.topology.dead_letter_queue, passive=True),
                    "counting the dead letters", channel.connection)
                if (ok.message_count or 0) >= expected:
                    return
                await asyncio.sleep(0.02)
        finally:
            await self._close(channel)


_AGAIN_AFTER = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""Seconds between asking again a queue that answered empty before its count was taken."""


class _Browse:
    """Messages taken from the dead-letter queue on one channel, unacknowledged until removed
    or given back. `count` is how many the queue held when the browse began."""

    def __init__(self, channel: AbstractChannel, queue: str, count: int,
                 broker: BrokerConnection) -> None:
        self.channel, self.queue, self.count = channel, queue, count
        self.broker = broker
        self.held: list[DeliveredMessage] = []
        self.taken = self.removed = 0

    async def next(self) -> DeliveredMessage | None:
        """The next message from the head of the queue; None once the `count` it held at the
        start were taken (letters arriving meanwhile are left for the next command) or it has
        no more. A quorum queue that counted a message may answer empty a moment longer (a
        message given back by an earlier browse comes back after its nack is applied): an
        empty answer before `count` is asked again a few times, for about a second at most."""
        if self.taken >= self.count:
            return None
        for pause in _AGAIN_AFTER:
            message = await self._take()
            if message is not None:
                return message
            await asyncio.sleep(pause)
        return await self._take()

    async def _take(self) -> DeliveredMessage | None:
        message = await self.broker.answer(self.channel.basic_get(self.queue, no_ack=False),
                                           "taking a dead letter", self.channel.connection)
        if message.delivery_tag is None:
            return None
        self.taken += 1
        self.held.append(message)
        return message

    async def remove(self, message: DeliveredMessage) -> None:
        """Acknowledge a taken message: it leaves the queue for good."""
        assert message.delivery_tag is not None
        await self.broker.answer(self.channel.basic_ack(message.delivery_tag),
                                 "removing a dead letter", self.channel.connection)
        self.held.remove(message)
        self.removed += 1

    async def give_back_in_order(self) -> None:
        """Give back every message held, in the order taken, and make sure the queue's order
        is what it was before the browse."""
        if not self.held:
            return
        first = self.held[0]
        untouched = self.count - self.taken
        await self._give_back()
        if untouched <= 0:
            return  # every message went round once: the order is as it was
        head = await self._take()
        if head is None:
            return
        await self._give_back()
        if _same(head, first):
            return  # the broker put them back in their places
        # The broker put them at its back, behind the messages not taken yet: take those too,
        # one by one, each given back behind the others, until the queue has come round.
        for _ in range(untouched - 1):
            if await self._take() is None:
                return
            await self._give_back()

    async def _give_back(self) -> None:
        for message in self.held:
            assert message.delivery_tag is not None
            await self.channel.basic_nack(message.delivery_tag, multiple=False, requeue=True)
        self.held.clear()


def _same(one: DeliveredMessage, other: DeliveredMessage) -> bool:
    return dead_letter_id(one) == dead_letter_id(other) and one.body == other.body


def _refusal(exc: DeliveryError) -> str:
    frame = exc.frame
    reply = getattr(frame, "reply_text", "") or ""
    return reply or type(exc).__name__
