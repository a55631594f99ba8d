"""The dead letters on RabbitMQ: the dead-letter queue is the broker's inbox for failures, the
document store their home.

Consumers (and the broker itself, at a quorum queue's delivery limit) put the messages given
up on into the dead-letter queue, with why in their headers. `move` takes them off the queue
in batches of at most `batch_size`, unacknowledged, keeps them in the store's index of dead
letters (`dead_letter_store`), and only then acknowledges them: a letter leaves the broker
only once it is in the store. A failure between the two gives the batch back to the queue,
and taking it again keeps each letter in its place again (by its id): nothing is lost or
doubled. Each letter is read off the broker once: each is acknowledged on its own, and the
channel is closed only once the queue has applied the acknowledgements (`_settled`). Every
operator's command moves first, and a worker every few seconds (`RabbitMqTransport`);
listing and looking a letter up are then bounded reads of the store, whatever the number of
letters.

Replaying publishes the letter to the queue it failed in (through the default exchange: a
message sent back through the topic exchange would reach every other queue bound to its
routing key, other services' too), waits for the broker's confirm, and only then removes it
from the store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from datetime import UTC, datetime
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import DeliveryError

from mussikon.adapters.messaging.dead_letter_store import (
    DeadLetterIndex,
    letter_document,
    letter_of,
)
from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.adapters.messaging.rabbitmq.properties import (
    ORIGINAL_ROUTING_KEY,
    dead_letter_of,
    headers_of,
    original_queue_of,
    properties_from,
    replay_properties,
    stored_properties,
    text,
)
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.ports.documents import Document, DocumentStore
from mussikon.ports.transport import DeadLetter, Replayed

_NO_TIME = datetime.fromtimestamp(0, UTC)

_AGAIN_AFTER = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""Seconds between asking again a queue that answered empty before its count was taken."""


class DeadLetterQueue:
    """`mussikon.dlq` moved into the store, and the letters kept there listed, replayed and
    dropped."""

    def __init__(self, broker: BrokerConnection, topology: Topology, documents: DocumentStore,
                 *, batch_size: int = 500) -> None:
        self.broker, self.topology = broker, topology
        self.index = DeadLetterIndex(documents)
        self.batch_size = batch_size

    async def move(self) -> int:
        """Move the letters the queue holds now into the store, a batch at a time, each
        acknowledged once kept; return how many. Letters arriving meanwhile wait for the next
        move. A failure midway leaves the batch not kept in the queue (those kept stay)."""
        channel = await self._channel(publisher_confirms=False)
        queue = self.topology.dead_letter_queue
        moved = 0
        try:
            ok = await self.broker.answer(channel.queue_declare(queue, passive=True),
                                          "counting the dead letters", channel.connection)
            count = ok.message_count or 0
            while moved < count:
                wanted = min(self.batch_size, count - moved)
                batch: list[DeliveredMessage] = []
                while len(batch) < wanted and \
                        (message := await self._take(channel)) is not None:
                    batch.append(message)
                if not batch:
                    break
                await self.index.keep([self._document(message) for message in batch])
                for message in batch:  # one by one: see the module's docstring
                    assert message.delivery_tag is not None
                    await self.broker.answer(channel.basic_ack(message.delivery_tag),
                                             "acknowledging a dead letter kept",
                                             channel.connection)
                moved += len(batch)
                if len(batch) < wanted:
                    break
            if moved:
                await self._settled(channel)
        finally:
            await self._close(channel)  # hands back to the queue what was not acknowledged
        return moved

    async def _settled(self, channel: AbstractChannel) -> None:
        """Wait until the queue has applied the acknowledgements sent on `channel`: one more
        `basic.get`, which a quorum queue answers only after the channel's earlier commands.
        Closed at once, a channel of a quorum queue of RabbitMQ 3.10 under load can drop
        acknowledgements it had not passed on yet, and their letters come back to be moved
        again. A letter that this get takes is given back."""
        message = await self.broker.answer(
            channel.basic_get(self.topology.dead_letter_queue, no_ack=False),
            "waiting for the dead letters' acknowledgements", channel.connection)
        if message.delivery_tag is not None:
            await self.broker.answer(
                channel.basic_nack(message.delivery_tag, multiple=False, requeue=True),
                "giving back a dead letter", channel.connection)

    async def _take(self, channel: AbstractChannel) -> DeliveredMessage | None:
        """The next message from the head of the queue, unacknowledged; None if it has none.
        A quorum queue that counted a message may answer empty a moment longer: an empty
        answer is asked again a few times, for about a second at most."""
        for pause in (*_AGAIN_AFTER, None):
            message = await self.broker.answer(
                channel.basic_get(self.topology.dead_letter_queue, no_ack=False),
                "taking a dead letter", channel.connection)
            if message.delivery_tag is not None:
                return message
            if pause is not None:
                await asyncio.sleep(pause)
        return None

    def _document(self, message: DeliveredMessage) -> Document:
        """A message of the dead-letter queue as the store keeps it: the letter, and how to
        send it back. A letter that says not when it failed is kept as failed now."""
        letter = dead_letter_of(message)
        if letter.failed_at == _NO_TIME:
            letter = dataclasses.replace(letter, failed_at=datetime.now(UTC))
        queue = original_queue_of(message)
        routing_key = queue or text(headers_of(message).get(ORIGINAL_ROUTING_KEY))
        replay: dict[str, Any] = {"queue": queue, "routing_key": routing_key,
                                  "properties": stored_properties(replay_properties(message))}
        if letter.body.encode() != message.body:  # not UTF-8: kept as it came too
            replay["body64"] = base64.b64encode(message.body).decode()
        return letter_document(letter, replay=replay)

    async def page(self, limit: int | None = None, after: str | None = None) -> list[DeadLetter]:
        """Up to `limit` letters (all if None) in the order they were given up on, after the
        letter `after` (KeyError if there is none) or from the first: a range read."""
        return [letter_of(doc) for doc in await self.index.page(limit, after)]

    async def find(self, letter_id: str) -> DeadLetter | None:
        found = await self.index.get(letter_id)
        return None if found is None else letter_of(found[1])

    async def ids(self, prefix: str, limit: int) -> list[str]:
        return await self.index.ids(prefix, limit)

    async def replay(self, letter_id: str) -> None:
        """Send one dead letter back to its queue (KeyError if no dead letter has this id;
        ValueError naming why if the broker cannot route it there, and it stays)."""
        found = await self.index.get(letter_id)
        if found is None:
            raise KeyError(f"no dead letter {letter_id!r}")
        channel = await self._channel(publisher_confirms=True)
        try:
            await self._send_back(channel, *found)
        finally:
            await self._close(channel)

    async def replay_all(self) -> list[Replayed]:
        """Send every dead letter back to its queue, oldest first, a page read at a time; a
        letter that cannot be sent back stays, with the reason in its result."""
        results = []
        seen: set[str] = set()
        channel = await self._channel(publisher_confirms=True)
        try:
            async for page in self.index.pages():
                for key, doc in page:
                    if doc["id"] in seen:
                        continue
                    seen.add(doc["id"])
                    try:
                        await self._send_back(channel, key, doc)
                    except ValueError as exc:
                        results.append(Replayed(doc["id"], False, str(exc)))
                    else:
                        results.append(Replayed(doc["id"], True))
        finally:
            await self._close(channel)
        return results

    async def delete(self, letter_id: str) -> None:
        """Drop one dead letter (KeyError if no dead letter has this id)."""
        found = await self.index.get(letter_id)
        if found is None:
            raise KeyError(f"no dead letter {letter_id!r}")
        await self.index.remove(found[0], letter_id)

    async def purge(self) -> int:
        """Move what the queue holds into the store, then drop every dead letter of the
        store; return how many."""
        await self.move()
        return await self.index.purge()

    async def _send_back(self, channel: AbstractChannel, key: str, doc: Document) -> None:
        replay = doc["replay"]
        queue, routing_key = replay["queue"], replay["routing_key"]
        exchange = "" if queue else self.topology.events_exchange
        letter = doc["id"]
        if not routing_key:
            raise ValueError(f"dead letter {letter} names neither its queue nor its "
                             "routing key")
        body = base64.b64decode(replay["body64"]) if "body64" in replay \
            else doc["body"].encode()
        try:
            await self.broker.answer(channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key,
                properties=properties_from(replay["properties"]), mandatory=True),
                f"confirming a dead letter sent back to {routing_key}", channel.connection)
        except DeliveryError as exc:
            where = f"queue {queue!r}" if queue else f"routing key {routing_key!r}"
            raise ValueError(f"dead letter {letter} cannot be sent back to {where}: the broker "
                             f"refused it ({_refusal(exc)})") from None
        await self.index.remove(key, letter)

    async def _channel(self, *, publisher_confirms: bool) -> AbstractChannel:
        connection = await self.broker.connection()
        return await self.broker.answer(
            connection.channel(publisher_confirms=publisher_confirms, on_return_raises=True),
            "opening a channel", connection)

    async def _close(self, channel: AbstractChannel) -> None:
        with contextlib.suppress(*BROKER_ERRORS):
            await self.broker.answer(channel.close(), "closing a channel", channel.connection)


def _refusal(exc: DeliveryError) -> str:
    frame = exc.frame
    reply = getattr(frame, "reply_text", "") or ""
    return reply or type(exc).__name__
