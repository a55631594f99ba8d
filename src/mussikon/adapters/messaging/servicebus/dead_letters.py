"""The subscriptions' dead-letter sub-queues, for operators: list (peeked: nothing is taken
off), replay, delete, purge.

A letter's id is `<subscription>:<sequence number>` (the number the sub-queue gave it), its
order the subscriptions' in turn, each in sequence order. Replaying sends a copy to the
topic for its subscription alone (`messages.redelivery`), then completes the letter: a
worker handles it, with fresh delayed retries; failing again, it comes back under the same
id (the copy carries it), its attempts added up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from mussikon.adapters.messaging.message_contract import EVENT_TYPE, int_or
from mussikon.adapters.messaging.servicebus.messages import (
    ATTEMPTS_MADE,
    RETRIES,
    body_of,
    properties_of,
    redelivery,
)
from mussikon.ports.transport import DeadLetter, Replayed
from mussikon.wire import EventCodec, WireFormatError

_PAGE = 100
_WAIT = 1.0
"""Seconds a receive from a sub-queue waits for its next message."""


_ATTEMPTS = re.compile(r"\((\d+) attempts\)$")
"""How the consumer's `DeadLetterErrorDescription` ends: every attempt, in every round (the
dead-lettered message's own properties count only the rounds before its last)."""


def _attempts(description: str) -> int:
    found = _ATTEMPTS.search(description)
    return int(found.group(1)) if found else 0


DEAD_LETTER_ID = "x-dead-letter-id"
"""The id a replayed letter had, carried by its copy (and the copies scheduled after it), so
that failing again it is dead-lettered under the same id."""


def _letter_id(name: str, message: ServiceBusReceivedMessage) -> str:
    """`<subscription>:<sequence number>` the first time a message is dead-lettered; the same
    again for the copy of a replayed letter."""
    return str(properties_of(message).get(DEAD_LETTER_ID) or f"{name}:{message.sequence_number}")


class DeadLetterSubQueues:
    """The dead-letter sub-queues of the subscriptions `names` to `topic`."""

    def __init__(self, client: ServiceBusClient, topic: str, codec: EventCodec,
                 names: Sequence[str], timeout: float = 30.0) -> None:
        self.client, self.topic, self.codec = client, topic, codec
        self.names, self.timeout = list(names), timeout

    def _receiver(self, name: str, mode: ServiceBusReceiveMode = ServiceBusReceiveMode.PEEK_LOCK
                  ) -> ServiceBusReceiver:
        return self.client.get_subscription_receiver(
            self.topic, name, sub_queue=ServiceBusSubQueue.DEAD_LETTER, receive_mode=mode)

    async def _peek_all(self, name: str) -> list[ServiceBusReceivedMessage]:
        letters: list[ServiceBusReceivedMessage] = []
        async with self._receiver(name) as receiver:
            while True:
                start = (letters[-1].sequence_number or 0) + 1 if letters else 0
                async with asyncio.timeout(self.timeout):
                    page = await receiver.peek_messages(_PAGE, sequence_number=start)
                letters += page
                if len(page) < _PAGE:
                    return letters

    async def page(self, limit: int | None, after: str | None) -> list[DeadLetter]:
        every = [self._letter(name, m) for name in self.names for m in await self._peek_all(name)]
        start = 0
        if after is not None:
            ids = [letter.id for letter in every]
            if after not in ids:
                raise KeyError(after)
            start = ids.index(after) + 1
        return every[start:] if limit is None else every[start:start + limit]

    def _letter(self, name: str, message: ServiceBusReceivedMessage) -> DeadLetter:
        properties = properties_of(message)
        body = body_of(message)
        event_type = str(properties.get(EVENT_TYPE) or message.subject or "")
        message_id = str(message.message_id or "")
        try:
            event = self.codec.decode(body)
            event_type, message_id = event.event_type, str(event.id)
        except WireFormatError:
            pass
        description = message.dead_letter_error_description or ""
        return DeadLetter(
            id=_letter_id(name, message), subscription=name, message_id=message_id,
            event_type=event_type, position=int_or(properties.get("Position"), 0) or None,
            attempts=_attempts(description) or int_or(properties.get(ATTEMPTS_MADE), 0)
            or (message.delivery_count or 0),
            exception=description.partition(":")[0],
            reason=f"{message.dead_letter_reason or ''}: {description}".strip(": "),
            body=body.decode("utf-8", "replace"),
            failed_at=message.enqueued_time_utc or datetime.fromtimestamp(0, UTC))

    async def _take(self, letter_id: str) -> tuple[str, ServiceBusReceiver,
                                                   ServiceBusReceivedMessage]:
        """The letter, locked, with its open receiver (KeyError if there is no such letter)."""
        name, _, number = letter_id.rpartition(":")
        if name not in self.names or not number.isdigit():
            raise KeyError(letter_id)
        receiver = self._receiver(name)
        try:
            while True:
                async with asyncio.timeout(self.timeout):
                    batch = await receiver.receive_messages(_PAGE, _WAIT)
                if not batch:
                    raise KeyError(letter_id)
                for message in batch:
                    if _letter_id(name, message) == letter_id:
                        return name, receiver, message
        except BaseException:
            await receiver.close()  # the others' locks go with the link: they stay
            raise

    async def delete(self, letter_id: str) -> None:
        _, receiver, message = await self._take(letter_id)
        async with receiver:
            await receiver.complete_message(message)

    async def replay(self, letter_id: str) -> None:
        name, receiver, message = await self._take(letter_id)
        async with receiver, self.client.get_topic_sender(self.topic) as sender:
            copy = redelivery(message, name, f"{message.message_id}/{name}/replay"
                              f"{message.sequence_number}",
                              {DEAD_LETTER_ID: _letter_id(name, message), RETRIES: 0,
                               ATTEMPTS_MADE: self._letter(name, message).attempts})
            await sender.send_messages(copy)
            await receiver.complete_message(message)

    async def replay_all(self) -> list[Replayed]:
        results = []
        for letter in await self.page(None, None):
            try:
                await self.replay(letter.id)
                results.append(Replayed(letter.id, True))
            except KeyError:
                results.append(Replayed(letter.id, False, "gone meanwhile"))
        return results

    async def purge(self) -> int:
        count = 0
        for name in self.names:
            async with self._receiver(name, ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
                while batch := await r.receive_messages(_PAGE, _WAIT):
                    count += len(batch)
        return count
