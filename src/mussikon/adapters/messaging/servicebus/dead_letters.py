"""The subscriptions' dead-letter sub-queues, for operators: list (peeked: nothing is taken
off), replay, delete, purge.

A letter's id is `<subscription>:<sequence number>` (the number the sub-queue gave it), its
order the subscriptions' in turn, each in sequence order. Replaying sends a copy to the
topic for its subscription alone (`messages.redelivery`), then completes the letter: a
worker handles it, with fresh retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from mussikon.adapters.messaging.message_contract import EVENT_TYPE, int_or
from mussikon.adapters.messaging.servicebus.messages import (
    ATTEMPTS_MADE,
    body_of,
    properties_of,
    redelivery,
)
from mussikon.ports.transport import DeadLetter, Replayed
from mussikon.wire import EventCodec, WireFormatError

_PAGE = 100
_WAIT = 1.0
"""Seconds a receive from a sub-queue waits for its next message."""


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

    async def _peek(self, name: str, start: int, count: int | None
                    ) -> list[ServiceBusReceivedMessage]:
        """Up to `count` letters of one sub-queue (all if None) from sequence number `start`
        on, a page of peeks at a time."""
        letters: list[ServiceBusReceivedMessage] = []
        async with self._receiver(name) as receiver:
            while count is None or len(letters) < count:
                size = _PAGE if count is None else min(_PAGE, count - len(letters))
                async with asyncio.timeout(self.timeout):
                    page = await receiver.peek_messages(size, sequence_number=start)
                letters += page
                if len(page) < size:
                    break
                start = (page[-1].sequence_number or 0) + 1
        return letters

    @staticmethod
    def _split(letter_id: str) -> tuple[str, int]:
        """The subscription and sequence number an id names (KeyError if it names none)."""
        name, _, number = letter_id.rpartition(":")
        if not number.isdigit():
            raise KeyError(letter_id)
        return name, int(number)

    async def page(self, limit: int | None, after: str | None) -> list[DeadLetter]:
        """Up to `limit` letters after the letter `after` (KeyError if there is none): the
        subscriptions in turn, each in sequence order; peeks only what it returns."""
        names, start = self.names, 1
        if after is not None:
            name, number = self._split(after)
            if name not in self.names or await self.find(after) is None:
                raise KeyError(after)
            names, start = self.names[self.names.index(name):], number + 1
        letters: list[DeadLetter] = []
        for name in names:
            left = None if limit is None else limit - len(letters)
            if left is not None and left <= 0:
                break
            letters += [self._letter(name, m) for m in await self._peek(name, start, left)]
            start = 1
        return letters

    async def find(self, letter_id: str) -> DeadLetter | None:
        """The letter with this id, or None: one peek."""
        try:
            name, number = self._split(letter_id)
        except KeyError:
            return None
        if name not in self.names:
            return None
        found = await self._peek(name, number, 1)
        if not found or found[0].sequence_number != number:
            return None
        return self._letter(name, found[0])

    async def ids(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids starting with `prefix`, in id order: the sub-queues whose ids can
        start so are read whole, no other."""
        ids = [f"{name}:{m.sequence_number}" for name in self.names
               if name.startswith(prefix) or prefix.startswith(f"{name}:")
               for m in await self._peek(name, 1, None)]
        return sorted(i for i in ids if i.startswith(prefix))[:limit]

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
            id=f"{name}:{message.sequence_number}", subscription=name, message_id=message_id,
            event_type=event_type, position=int_or(properties.get("Position"), 0) or None,
            attempts=int_or(properties.get(ATTEMPTS_MADE), 0) or (message.delivery_count or 0),
            exception=description.partition(":")[0],
            reason=f"{message.dead_letter_reason or ''}: {description}".strip(": "),
            body=body.decode("utf-8", "replace"),
            failed_at=message.enqueued_time_utc or datetime.fromtimestamp(0, UTC))

    async def _take(self, letter_id: str) -> tuple[str, ServiceBusReceiver,
                                                   ServiceBusReceivedMessage]:
        """The letter, locked, with its open receiver (KeyError if there is no such letter)."""
        name, number = self._split(letter_id)
        if name not in self.names:
            raise KeyError(letter_id)
        receiver = self._receiver(name)
        try:
            while True:
                async with asyncio.timeout(self.timeout):
                    batch = await receiver.receive_messages(_PAGE, _WAIT)
                if not batch:
                    raise KeyError(letter_id)
                for message in batch:
                    if message.sequence_number == number:
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
                              f"{message.sequence_number}", {})
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
