"""`SeveralBrokers`: one bus over several brokers (RabbitMQ and Azure Service Bus at once).

Every event reaches each broker through that broker's own transport, whose relay keeps its
own position in the store, so a broker that is down delays only its own messages: when it is
back its relay catches up from where it stopped. Each transport also consumes, so every
subscription receives each event once per broker; the subscriptions' inboxes (and the
sagas' handled ids) give the event one effect. Inside one process the second copy of a
message waits while the first is being handled, then finds it handled and does nothing.

A broker unreachable at start does not stop the others: its transport is started again in
the background, with backoff, until it answers (or the bus stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mussikon.ports.transport import DeadLetter, Envelope, Replayed, Subscription, Transport

log = logging.getLogger("mussikon.brokers")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds between tries to start a broker's transport that could not connect (the last
repeats)."""


@dataclass
class Broker:
    """One broker of the bus: a name for logs and errors, and how to make its transport."""

    name: str
    open: Callable[[], Transport]


class SeveralBrokers(Transport):
    """The Transport port over several brokers' transports (see the module)."""

    replays_in_place = False

    def __init__(self, brokers: Sequence[Broker], *,
                 restart_delays: Sequence[float] = RESTART_DELAYS) -> None:
        if len(brokers) < 2:
            raise ValueError("SeveralBrokers needs two brokers or more")
        self.brokers = list(brokers)
        self.transports = [broker.open() for broker in self.brokers]
        if any(t.replays_in_place for t in self.transports):
            raise ValueError("every transport of SeveralBrokers must be a broker's "
                             "(one that does not replay in place)")
        self.restart_delays = tuple(restart_delays)
        self.started = [asyncio.Event() for _ in self.brokers]
        self.unreachable: dict[int, str] = {}
        """Why a broker's transport could not start, by index, while it is started again."""
        self._restarts: list[asyncio.Task[None]] = []
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"SeveralBrokers({', '.join(map(repr, self.transports))})"

    async def start(self, subscriptions: Sequence[Subscription]) -> None:
        """Start every broker's transport; one that cannot connect is started again in the
        background. Raises the first broker's error if none can be reached, and any other
        error of a transport's start (having stopped them all)."""
        wrapped = [self._one_copy_at_a_time(s) for s in subscriptions]
        failures: list[tuple[int, ConnectionError]] = []
        for index, transport in enumerate(self.transports):
            try:
                await transport.start(wrapped)
                self.started[index].set()
            except ConnectionError as exc:
                failures.append((index, exc))
            except BaseException:
                await self.stop()
                raise
        if len(failures) == len(self.transports):
            await self.stop()
            raise failures[0][1]
        for index, failure in failures:
            self.unreachable[index] = str(failure)
            log.warning("%s: %s; its messages wait in the store until it answers (tried "
                        "again in the background)", self.brokers[index].name, failure)
            self._restarts.append(asyncio.create_task(
                self._restart(index, wrapped), name=f"start {self.brokers[index].name}"))

    async def _restart(self, index: int, subscriptions: Sequence[Subscription]) -> None:
        """Start broker `index` anew (a fresh transport each try) until it connects."""
        broker, tries = self.brokers[index], 0
        while True:
            await asyncio.sleep(self.restart_delays[min(tries, len(self.restart_delays) - 1)])
            tries += 1
            with contextlib.suppress(Exception):
                await self.transports[index].stop()
            self.transports[index] = broker.open()
            try:
                await self.transports[index].start(subscriptions)
            except ConnectionError as exc:
                self.unreachable[index] = str(exc)
                log.info("%s still unreachable (try %d): %s", broker.name, tries, exc)
                continue
            self.unreachable.pop(index, None)
            self.started[index].set()
            log.warning("%s reached: its relay catches up", broker.name)
            return

    def _one_copy_at_a_time(self, subscription: Subscription) -> Subscription:
        """The subscription, whose handler takes one copy of a message at a time in this
        process: a copy from another broker waits for the one being handled."""
        inner, name = subscription.handler, subscription.name

        async def handle(envelope: Envelope) -> None:
            key = (name, envelope.message_id)
            while (running := self._in_flight.get(key)) is not None:
                await asyncio.shield(running)
            done = asyncio.get_running_loop().create_future()
            self._in_flight[key] = done
            try:
                await inner(envelope)
            finally:
                del self._in_flight[key]
                done.set_result(None)

        return Subscription(subscription.name, subscription.event_types, handle)

    async def open_for_operations(self, subscriptions: Sequence[Subscription]) -> None:
        """Open every broker's dead-letter tools (a broker that cannot be reached is an
        error naming it: an operator's command needs them all)."""
        for broker, transport in zip(self.brokers, self.transports, strict=True):
            try:
                await transport.open_for_operations(subscriptions)
            except ConnectionError as exc:
                raise ConnectionError(f"{broker.name}: {exc}") from exc

    async def ready(self) -> str | None:
        """None if every broker's transport is ready; otherwise each one's reason, or, for a
        broker not reached since the start, that it is tried again and why it failed."""
        reasons = []
        for index, (broker, transport) in enumerate(zip(self.brokers, self.transports,
                                                         strict=True)):
            if not self.started[index].is_set() and index in self.unreachable:
                reasons.append(f"{broker.name}: not reached ({self.unreachable[index]}); "
                               "tried again in the background")
            elif (reason := await transport.ready()) is not None:
                reasons.append(reason)
        return "; ".join(reasons) or None

    def wake(self) -> None:
        for transport in self.transports:
            transport.wake()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every broker's transport is started and idle (one that is down never
        is)."""
        async def idle(index: int) -> None:
            await self.started[index].wait()  # its transport is replaced until it starts
            await self.transports[index].wait_idle(timeout)

        async with asyncio.timeout(timeout):
            await asyncio.gather(*(idle(index) for index in range(len(self.transports))))

    async def stop(self) -> None:
        """Stop trying unreachable brokers, then stop every transport at once."""
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        self._restarts.clear()
        results = await asyncio.gather(*(t.stop() for t in self.transports),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def dead_letters(self, limit: int | None = None,
                           after: str | None = None) -> list[DeadLetter]:
        """The first broker's letters, then the next's (each in its own order)."""
        start, after_in = 0, after
        if after is not None:
            start = await self._holding(after)
        letters: list[DeadLetter] = []
        for transport in self.transports[start:]:
            left = None if limit is None else limit - len(letters)
            if left is not None and left <= 0:
                break
            letters += await transport.dead_letters(left, after_in)
            after_in = None
        return letters

    async def _holding(self, dead_letter_id: str) -> int:
        """Which broker holds this letter (KeyError if none does)."""
        for index, transport in enumerate(self.transports):
            if await transport.find_dead_letter(dead_letter_id) is not None:
                return index
        raise KeyError(dead_letter_id)

    async def find_dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        for transport in self.transports:
            if (letter := await transport.find_dead_letter(dead_letter_id)) is not None:
                return letter
        return None

    async def dead_letter_ids(self, prefix: str, limit: int) -> list[str]:
        ids: list[str] = []
        for transport in self.transports:
            ids += await transport.dead_letter_ids(prefix, limit)
        return sorted(ids)[:limit]

    async def replay(self, dead_letter_id: str) -> bool:
        return await self.transports[await self._holding(dead_letter_id)].replay(dead_letter_id)

    async def replay_all_dead_letters(self) -> list[Replayed]:
        replayed: list[Replayed] = []
        for transport in self.transports:
            replayed += await transport.replay_all_dead_letters()
        return replayed

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        await self.transports[await self._holding(dead_letter_id)].delete_dead_letter(
            dead_letter_id)

    async def purge_dead_letters(self) -> int:
        return sum([await t.purge_dead_letters() for t in self.transports])
