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
import contextlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender

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
        self._peekers: dict[str, ServiceBusReceiver] = {}
        """A receiver per sub-queue that peeks, kept open: the SDK takes about a second to
        open and close one."""
        self._peeking: dict[str, asyncio.Lock] = {}
        """One peek at a time per receiver (the SDK's management requests on one link must
        not overlap)."""
        self._sender: ServiceBusSender | None = None
        """What replays send with, kept open likewise."""

    async def close(self) -> None:
        """Close the receivers and the sender kept open."""
        links: list[ServiceBusReceiver | ServiceBusSender] = list(self._peekers.values())
        if self._sender is not None:
            links.append(self._sender)
        self._peekers, self._sender = {}, None
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    def _receiver(self, name: str, mode: ServiceBusReceiveMode = ServiceBusReceiveMode.PEEK_LOCK
                  ) -> ServiceBusReceiver:
        return self.client.get_subscription_receiver(
            self.topic, name, sub_queue=ServiceBusSubQueue.DEAD_LETTER, receive_mode=mode)

    async def _peek(self, name: str, start: int, count: int | None
                    ) -> list[ServiceBusReceivedMessage]:
        """Up to `count` letters of one sub-queue (all if None) from sequence number `start`
        on, a page of peeks at a time."""
        letters: list[ServiceBusReceivedMessage] = []
        async with self._peeking.setdefault(name, asyncio.Lock()):
            receiver = self._peekers.get(name)
            if receiver is None:
                receiver = self._peekers[name] = self._receiver(name)
            try:
                while count is None or len(letters) < count:
                    size = _PAGE if count is None else min(_PAGE, count - len(letters))
                    async with asyncio.timeout(self.timeout):
                        # `start` at least 1: without a number (or 0) the SDK goes on after
                        # the last one this receiver peeked.
                        page = await receiver.peek_messages(size, sequence_number=max(start, 1))
                    letters += page
                    if len(page) < size:
                        break
                    start = (page[-1].sequence_number or 0) + 1
            except BaseException:
                self._peekers.pop(name, None)  # a new one next time
                with contextlib.suppress(Exception):
                    await receiver.close()
                raise
        return letters

    @staticmethod
    def _split(letter_id: str) -> tuple[str, int]:
        """The subscription and sequence number an id names (KeyError if it names none)."""
        name, _, number = letter_id.rpartition(":")
        if not number.isdigit():
            raise KeyError(letter_id)
        return name, int(number)

    async def _locate(self, letter_id: str) -> tuple[str, ServiceBusReceivedMessage] | None:
        """The letter's sub-queue and message, or None. One peek at the sequence number its id
        names finds it, unless it was replayed and dead-lettered again (its id kept, at a later
        number): then its sub-queue is read, no other."""
        try:
            name, number = self._split(letter_id)
        except KeyError:
            return None
        if name not in self.names:
            return None
        found = await self._peek(name, number, 1)
        if found and _letter_id(name, found[0]) == letter_id:
            return name, found[0]
        return next(((name, m) for m in await self._peek(name, 1, None)
                     if _letter_id(name, m) == letter_id), None)

    async def page(self, limit: int | None, after: str | None) -> list[DeadLetter]:
        """Up to `limit` letters after the letter `after` (KeyError if there is none): the
        subscriptions in turn, each in sequence order; peeks only what it returns."""
        names, start = self.names, 1
        if after is not None:
            located = await self._locate(after)
            if located is None:
                raise KeyError(after)
            name, message = located
            names, start = self.names[self.names.index(name):], (message.sequence_number or 0) + 1
        letters: list[DeadLetter] = []
        for name in names:
            left = None if limit is None else limit - len(letters)
            if left is not None and left <= 0:
                break
            letters += [self._letter(name, m) for m in await self._peek(name, start, left)]
            start = 1
        return letters

    async def find(self, letter_id: str) -> DeadLetter | None:
        """The letter with this id, or None (see `_locate`)."""
        located = await self._locate(letter_id)
        return None if located is None else self._letter(*located)

    async def ids(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids starting with `prefix`, in id order: the sub-queues whose ids can
        start so are read whole, no other."""
        ids = [_letter_id(name, m) for name in self.names
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
        name, _ = self._split(letter_id)
        if name not in self.names:
            raise KeyError(letter_id)
        # Where it is, peeked first: a receive returns once it has as many messages as asked
        # for, or else after its whole wait.
        ids = [_letter_id(name, m) for m in await self._peek(name, 1, None)]
        if letter_id not in ids:
            raise KeyError(letter_id)
        count = ids.index(letter_id) + 1
        receiver = self._receiver(name)
        others: list[ServiceBusReceivedMessage] = []
        found: ServiceBusReceivedMessage | None = None
        try:
            while found is None and count > 0:
                async with asyncio.timeout(self.timeout):
                    batch = await receiver.receive_messages(min(count, _PAGE), _WAIT)
                if not batch:
                    break
                count -= len(batch)
                for message in batch:
                    if found is None and _letter_id(name, message) == letter_id:
                        found = message
                    else:
                        others.append(message)
            # The letters received beside it are given back at once: their locks would
            # outlive the link, and hide them from the next receive until they ran out.
            for other in others:
                async with asyncio.timeout(self.timeout):
                    await receiver.abandon_message(other)
        except BaseException:
            await receiver.close()
            raise
        if found is None:
            await receiver.close()
            raise KeyError(letter_id)
        return name, receiver, found

    async def delete(self, letter_id: str) -> None:
        _, receiver, message = await self._take(letter_id)
        async with receiver:
            await receiver.complete_message(message)

    async def replay(self, letter_id: str) -> None:
        name, receiver, message = await self._take(letter_id)
        async with receiver:
            copy = redelivery(message, name, f"{message.message_id}/{name}/replay"
                              f"{message.sequence_number}",
                              {DEAD_LETTER_ID: _letter_id(name, message), RETRIES: 0,
                               ATTEMPTS_MADE: self._letter(name, message).attempts})
            if self._sender is None:
                self._sender = self.client.get_topic_sender(self.topic)
            async with asyncio.timeout(self.timeout):
                await self._sender.send_messages(copy)
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
        """Remove the letters each sub-queue shows (peeked first: a receive that asks for
        more than there are waits its whole wait); how many were removed."""
        count = 0
        for name in self.names:
            left = len(await self._peek(name, 1, None))
            if not left:
                continue
            async with self._receiver(name, ServiceBusReceiveMode.RECEIVE_AND_DELETE) as r:
                while left > 0 and (batch := await r.receive_messages(min(left, _PAGE), _WAIT)):
                    count += len(batch)
                    left -= len(batch)
        return count
