"""The consumer: one peek-lock receiver per Service Bus subscription, handlers in
`StreamOrderedWorkers` (each stream's messages in the order received, streams in parallel,
`concurrency` handlers at once in this process).

A message is received under a lock, which an `AutoLockRenewer` renews while it is held,
from a third of the lock's term on, until it is settled (up to `lock_renewal` seconds after
its receipt), and completed only after its subscription's handler succeeded; the
completions go on apart from the handlers, in groups (the SDK waits for the service's echo
of every settlement), so that a handler's slot is free as soon as its handler returns. At
most `prefetch` messages per subscription are held (received and not settled, completions
in progress included). Its event is first looked up in the store by its id: one
that another service published (a .NET `ServiceBusEventService` message, with a new GUID
`MessageId`) is recorded once (`EventStore.record_foreign`, origin `servicebus`) before any
handler runs, and only once what it presupposes is stored: until then a copy of it is
scheduled for later and the original completed, as on RabbitMQ (after `prerequisite_wait`
seconds it is dead-lettered with the reason `prerequisite-missing`).

Failures: the handler is retried in process (`retry_delays`, the message still locked and
its worker free meanwhile), then a copy of the message is scheduled for its subscription
alone after each of `delayed_retry_delays` (`schedule_messages`; the original is then
completed, so the lock is not held while it waits), then the message is dead-lettered
with `DeadLetterReason` `handler-failed` and a `DeadLetterErrorDescription` naming the
exception, its message and the attempts. A body that is not an event is dead-lettered at
once (`malformed`). A settlement that fails (the lock was lost) leaves the message to be
delivered again, which the subscription's inbox recognises; the subscription's
`MaxDeliveryCount` dead-letters a message that kills its consumer every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusReceiver,
    ServiceBusSender,
)
from azure.servicebus.exceptions import MessagingEntityNotFoundError, ServiceBusError

from mussikon import metrics, tracing
from mussikon.adapters.messaging.foreign import as_stored, wait_delay_index, waited_enough
from mussikon.adapters.messaging.message_contract import (
    HANDLER_FAILED,
    MALFORMED,
    PREREQUISITE_MISSING,
    clip,
)
from mussikon.adapters.messaging.retries import (
    exception_name,
    failure_message,
    next_retry_delay,
    store_wait_delay,
    try_handler,
)
from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.messages import (
    ATTEMPTS_MADE,
    RETRIES,
    WAITING_SINCE,
    WAITS,
    DeliveryState,
    read_envelope,
    redelivery,
)
from mussikon.adapters.messaging.stream_order import StreamOrderedWorkers
from mussikon.domain.events import DomainEvent
from mussikon.domain.prerequisites import Prerequisite
from mussikon.logs import handling
from mussikon.ports.event_store import EventStore, StoreError
from mussikon.ports.transport import Envelope, Subscription, TransportNotReady
from mussikon.wire import EventCodec, WireFormatError

log = logging.getLogger("mussikon.servicebus.consumer")

SYSTEM: metrics.Broker = "servicebus"
"""The `messaging.system` of the trace spans."""
FOREIGN_ORIGIN = "servicebus"
"""The origin of the events other services published that this consumer records."""

SOCKET_TIMEOUT = 0.05
"""Seconds the receivers' connections wait on the socket at a time. A settlement sent
learns of the service's echo only when its own wait on the socket ends, even when another
wait read the echo meanwhile: this bounds how long a completion takes (the SDK's default,
0.2 s, holds each message that long after its handler)."""
_RECEIVE_WAIT = 1.0
"""Seconds one receive call waits for messages when none came last time (the loop then
looks whether to stop)."""
_RECEIVE_WAIT_BUSY = 0.05
"""Seconds one receive call may take while messages come: once it has a first message, the
SDK waits for as many as asked until the call's time is up, which would keep what is
already in hand from the handlers."""


async def _no_handler(envelope: Envelope) -> None:
    """The recorder subscription's: recording happens before any handler."""


class _Link:
    """One subscription's receiver and how many of its messages are held (not settled).

    Its lock renewals go one at a time (`management`): the SDK's asyncio session numbers a
    transfer before it awaits the write and counts it only after, so two management requests
    at once on one receiver go out with the same delivery-id, a protocol error for which the
    other side closes the connection. Peeks go through a receiver of their own (`peeker`),
    so that they never race the receiving one while it opens or reopens its link."""

    def __init__(self, receiver: ServiceBusReceiver, subscription: Subscription,
                 peeker: ServiceBusReceiver) -> None:
        self.receiver, self.subscription, self.peeker = receiver, subscription, peeker
        self.held = 0
        self.room = asyncio.Event()
        self.management = asyncio.Lock()
        self.peeking = asyncio.Lock()

    async def renew_message_lock(self, message: ServiceBusReceivedMessage) -> datetime:
        """What the `AutoLockRenewer` calls (the link is registered with it as the receiver)."""
        async with self.management:
            return await self.receiver.renew_message_lock(message)

    async def peek(self) -> bool:
        async with self.peeking:
            # From the first: without a number, the SDK goes on after the last one peeked.
            return bool(await self.peeker.peek_messages(1, sequence_number=1))

    def settled(self) -> None:
        self.held -= 1
        self.room.set()


@dataclass(slots=True, eq=False)
class _Delivery:
    """A message received, decoded on receipt (`envelope` None: it carries no valid event,
    `malformed` says why), and its in-process attempts so far."""

    link: _Link
    message: ServiceBusReceivedMessage
    state: DeliveryState
    envelope: Envelope | None
    malformed: WireFormatError | None = None
    tries: int = 0
    store_waits: int = 0
    """Times the store could not be asked whether it holds the event, in this delivery."""
    stream: str | None = None
    completing: bool = False
    """Its handler succeeded and its completion goes on apart from the handlers' slots."""
    renewal: asyncio.TimerHandle | None = None
    """When its lock starts being renewed, if it is still held then (`_hold_lock`)."""


def _stream_of(delivery: _Delivery) -> str | None:
    return delivery.stream


_BEYOND_EVERY_MESSAGE = 2**62
"""A sequence number no message reaches (Service Bus numbers them from 1, in 64 bits)."""


class ServiceBusConsumer:
    """Runs subscriptions on their Service Bus subscriptions to `topic`."""

    def __init__(self, client: ServiceBusClient, topic: str, codec: EventCodec,
                 subscriptions: Sequence[Subscription], *, store: EventStore,
                 prefetch: int = 100, concurrency: int = 8,
                 retry_delays: Iterable[float] = (0.05, 0.25, 1.0),
                 delayed_retry_delays: Iterable[float] = (1.0, 10.0, 60.0),
                 lock_renewal: float = 300.0, prerequisite_wait: float = 600.0,
                 timeout: float = 30.0, socket_timeout: float = SOCKET_TIMEOUT) -> None:
        self.client, self.topic, self.codec, self.store = client, topic, codec, store
        self.prefetch, self.concurrency = prefetch, concurrency
        self.retry_delays = tuple(retry_delays)
        self.delayed_retry_delays = tuple(delayed_retry_delays)
        self.prerequisite_wait, self.timeout = prerequisite_wait, timeout
        self.lock_renewal, self.socket_timeout = lock_renewal, socket_timeout
        rules = subscription_rules(subscriptions, codec.event_types)
        by_name = {s.name: s for s in subscriptions}
        self.subscriptions = [by_name.get(name) or Subscription(name, subjects, _no_handler)
                              for name, subjects in rules.items()]
        """Ours, and the recorder's if some event type is wanted by none of ours."""
        self.delivered = 0
        """Messages received so far (redeliveries included)."""
        self.unsettled = 0
        """Messages received and not settled yet."""
        self.scheduled_until = 0.0
        """When (Unix seconds) the last copy scheduled here falls due."""
        self._workers = StreamOrderedWorkers("servicebus", concurrency, self._attempt,
                                             _stream_of)
        self._renewer: AutoLockRenewer | None = None
        self._links: list[_Link] = []
        self._loops: list[asyncio.Task[None]] = []
        self._completions: set[asyncio.Task[None]] = set()
        self._to_complete: list[_Delivery] = []
        """Handled, to be completed with the next group (`_complete`)."""
        self._completing = False
        self._sender: ServiceBusSender | None = None
        self._scheduling = asyncio.Lock()
        self._stopping = False
        self.failing: dict[str, str] = {}
        """Why receiving from a subscription fails, by its name, until a receive works."""

    async def start(self) -> None:
        """Open a receiver per subscription, all at once, then start receiving, one loop per
        subscription. TransportNotReady (nothing left open) if a subscription does not exist;
        a namespace that does not answer is tried again by the loops."""
        for subscription in self.subscriptions:
            self._links.append(_Link(self.client.get_subscription_receiver(
                self.topic, subscription.name, receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
                prefetch_count=self.prefetch, socket_timeout=self.socket_timeout), subscription,
                self.client.get_subscription_receiver(self.topic, subscription.name)))
        opened = await asyncio.gather(*(self._open(link) for link in self._links))
        missing = [link.subscription.name for link, ok in zip(self._links, opened, strict=True)
                   if not ok]
        if missing:
            await asyncio.gather(*(self._close(receiver) for link in self._links
                                   for receiver in (link.receiver, link.peeker)))
            self._links.clear()
            raise TransportNotReady(
                f"Service Bus topic {self.topic!r} has no subscription {', '.join(missing)}: "
                "create the entities with `mussikon broker provision` (`--demo` for the "
                "demo's)")
        self._renewer = AutoLockRenewer(max_lock_renewal_duration=self.lock_renewal)
        self._workers.start()
        for link in self._links:
            self._loops.append(asyncio.create_task(
                self._receive(link), name=f"servicebus:{link.subscription.name}"))

    async def _open(self, link: _Link) -> bool:
        """Open the link's receiver; False if its subscription (or topic) does not exist.

        Opening a receive link does not tell (the service refuses a missing entity on the
        first receive), a peek does: one from a sequence number no message has, which
        returns nothing and so leaves the receiver's peek position as it was."""
        try:
            async with asyncio.timeout(self.timeout):
                await link.receiver.__aenter__()
                await link.receiver.peek_messages(1, sequence_number=_BEYOND_EVERY_MESSAGE)
        except MessagingEntityNotFoundError:
            return False
        except (ServiceBusError, TimeoutError) as exc:
            log.warning("opening a receiver on %s: %s; trying again when receiving",
                        link.subscription.name, exc)
        return True

    async def stop(self, grace: float | None = None) -> None:
        """Stop receiving, let the handlers running finish (cancelled after `grace`
        seconds), abandon the messages not handled (delivered again), close the links."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for delivery in await self._workers.stop(grace):
            await self._settle(delivery, "abandon", delivery.link.receiver.abandon_message(
                delivery.message))
        await asyncio.gather(*self._completions)
        self.unsettled = 0
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await renewer.close()
        # At once: the SDK takes half a second on average to close each (its keep-alive
        # task, which it awaits, sleeps a second at a time).
        await asyncio.gather(*(self._close(link) for link in
                               [*(r for link in self._links for r in (link.receiver,
                                                                       link.peeker)),
                                self._sender]
                               if link is not None))

    async def _close(self, link: ServiceBusReceiver | ServiceBusSender) -> None:
        with contextlib.suppress(ServiceBusError, TimeoutError):
            async with asyncio.timeout(self.timeout):
                await link.close()

    async def anything_queued(self) -> bool:
        """True if a subscription shows a message (active, locked or deferred)."""
        for link in self._links:
            async with asyncio.timeout(self.timeout):
                if await link.peek():
                    return True
        return False

    async def _receive(self, link: _Link) -> None:
        limit = max(self.prefetch, 1)
        pause, wait = 0.1, _RECEIVE_WAIT
        while not self._stopping:
            if link.held >= limit:
                link.room.clear()
                await link.room.wait()
                continue
            started, asked = time.monotonic(), wait
            try:
                messages = await link.receiver.receive_messages(limit - link.held, wait)
            except ServiceBusError as exc:
                self._receiving_failed(link, type(exc).__name__,
                                       f"receiving from %s: {exc}; trying again")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            except ValueError as exc:  # the SDK's word for a receiver shut down for good
                log.error("receiving from %s stopped: %s", link.subscription.name, exc)
                self.failing[link.subscription.name] = "the receiver shut down"
                return
            if not messages and asked == _RECEIVE_WAIT and \
                    time.monotonic() - started < _RECEIVE_WAIT / 2:
                # Nothing, and at once rather than after the wait: the receiver's link is
                # closed (its client closed under it). Asked again at once, it would answer
                # at once again, without ever giving the event loop a turn.
                self._receiving_failed(link, "the receiver is closed",
                                       "receiving from %s: the receiver is closed; trying again")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause, wait = 0.1, _RECEIVE_WAIT_BUSY if messages else _RECEIVE_WAIT
            if self.failing.pop(link.subscription.name, None) is not None:
                log.info("receiving from %s again", link.subscription.name)
            for message in messages:
                self.delivered += 1
                self.unsettled += 1
                link.held += 1
                # Decoded here, in the order received, so that it joins its stream in order.
                delivery = self._decode(link, message)
                self._hold_lock(delivery)
                self._workers.submit(delivery)

    def _receiving_failed(self, link: _Link, reason: str, message: str) -> None:
        """Note why `link` cannot receive; a warning when it starts failing or fails
        otherwise than before, a debug line while it goes on failing the same way (a
        namespace out of reach would otherwise fill the log, every subscription at every
        try)."""
        name = link.subscription.name
        level = logging.DEBUG if self.failing.get(name) == reason else logging.WARNING
        self.failing[name] = reason
        log.log(level, message, name)

    def _hold_lock(self, delivery: _Delivery) -> None:
        """Have the message's lock renewed while it is held, from a third of its term on:
        most messages are settled long before, and the SDK's renewer costs a task per
        message it watches. Its renewals stop `lock_renewal` seconds after the receipt (the
        SDK counts from there) or once the message is settled."""
        locked_until = delivery.message.locked_until_utc
        left = (locked_until - datetime.now(UTC)).total_seconds() if locked_until else 0.0
        delivery.renewal = asyncio.get_running_loop().call_later(
            max(left / 3, 0.0), self._renew, delivery)

    def _renew(self, delivery: _Delivery) -> None:
        delivery.renewal = None
        if self._renewer is not None:  # None: stopped
            self._renewer.register(cast(ServiceBusReceiver, delivery.link), delivery.message)

    def _decode(self, link: _Link, message: ServiceBusReceivedMessage) -> _Delivery:
        state = DeliveryState.of(message)
        try:
            envelope = read_envelope(self.codec, message)
        except WireFormatError as exc:
            return _Delivery(link, message, state, None, exc)
        return _Delivery(link, message, state, envelope, stream=envelope.event.stream_id)

    async def _attempt(self, delivery: _Delivery) -> float | None:
        """One attempt: None once the message is settled (or left to come again), else the
        seconds before the next attempt."""
        envelope = delivery.envelope
        with handling(envelope.event if envelope is not None else None):
            return await self._attempt_delivery(delivery)

    async def _attempt_delivery(self, delivery: _Delivery) -> float | None:
        try:
            delay = await self._process(delivery)
        except StoreError as exc:
            # The store could not say whether it holds the event (a database restarting):
            # the message waits here, its lock renewed, and asks again. Abandoned, it would
            # come straight back, each time counted toward the subscription's
            # MaxDeliveryCount, and be dead-lettered within seconds.
            delivery.store_waits += 1
            delay = store_wait_delay(delivery.store_waits)
            log.warning("a message from %s waits %.2g s for the store: %s",
                        delivery.link.subscription.name, delay, exc)
            return delay
        except Exception:
            # The store or the broker failed: leave the message to be delivered again.
            log.exception("unexpected failure handling a message from %s",
                          delivery.link.subscription.name)
            await self._settle(delivery, "abandon",
                               delivery.link.receiver.abandon_message(delivery.message))
            delay = None
        if delay is None and not delivery.completing:
            self._finished(delivery)
        return delay

    def _finished(self, delivery: _Delivery) -> None:
        self.unsettled -= 1
        delivery.link.settled()
        if delivery.renewal is not None:
            delivery.renewal.cancel()

    def _complete(self, delivery: _Delivery) -> None:
        """Complete the message apart from the handlers: the SDK confirms a settlement only
        once the service echoes it, a wait that would otherwise hold a handler's slot. The
        messages handled meanwhile are completed together, as one group after another: each
        waiting settlement reads the connection's frames until its echo comes, so settling
        a group at once costs the SDK far fewer reads and timers than the same settlements
        one by one. Stopping waits for these completions."""
        delivery.completing = True
        self._to_complete.append(delivery)
        if not self._completing:
            self._completing = True
            task = asyncio.create_task(self._complete_groups())
            self._completions.add(task)
            task.add_done_callback(self._completions.discard)

    async def _complete_groups(self) -> None:
        try:
            while self._to_complete:
                group, self._to_complete = self._to_complete, []
                await asyncio.gather(*(self._completion(delivery) for delivery in group))
        finally:
            self._completing = False

    async def _completion(self, delivery: _Delivery) -> None:
        try:
            await self._settle(delivery, "complete",
                               delivery.link.receiver.complete_message(delivery.message))
        except Exception:
            # Not completed: the message comes again, which the subscription's inbox knows.
            log.exception("could not complete a message of %s",
                          delivery.link.subscription.name)
        finally:
            self._finished(delivery)

    async def _process(self, delivery: _Delivery) -> float | None:
        envelope, subscription = delivery.envelope, delivery.link.subscription
        if envelope is None:
            assert delivery.malformed is not None
            log.error("malformed message in %s is dead-lettered: %s", subscription.name,
                      delivery.malformed.summary)
            await self._dead_letter(delivery, MALFORMED, delivery.malformed, 0)
            return None
        if delivery.tries == 0:  # once, before the first attempt, in the stream's order
            with tracing.continued(envelope.headers):  # a foreign event: stored in its trace
                stored = await as_stored(self.store, envelope, FOREIGN_ORIGIN)
            if isinstance(stored, list):
                await self._wait(delivery, envelope.event, stored)
                return None  # scheduled to wait, or dead-lettered
            envelope = delivery.envelope = stored
        delivery.tries += 1
        attempt = delivery.state.attempts_made + delivery.tries
        span = tracing.processing(SYSTEM, self.topic, subscription.name, envelope.event,
                                  headers=envelope.headers, attempt=attempt)
        error = await try_handler(subscription.name, subscription.handler, envelope, attempt,
                                  SYSTEM, span)
        if error is None:
            self._complete(delivery)
            return None
        delay = next_retry_delay(self.retry_delays, delivery.tries)
        if delay is not None:
            metrics.retried(subscription.name, SYSTEM, "in_process")
            return delay
        retries = delivery.state.retries
        if retries < len(self.delayed_retry_delays):
            await self._schedule(delivery, f"retry{retries + 1}",
                                 self.delayed_retry_delays[retries],
                                 {RETRIES: retries + 1, ATTEMPTS_MADE: attempt})
            metrics.retried(subscription.name, SYSTEM, "delayed")
            return None
        log.error("giving up on %s %s in %s after %d attempts: %s", envelope.event.event_type,
                  envelope.message_id, subscription.name, attempt, error)
        await self._dead_letter(delivery, HANDLER_FAILED, error, attempt)
        return None

    async def _wait(self, delivery: _Delivery, event: DomainEvent,
                    missing: list[Prerequisite]) -> None:
        """Schedule a copy to come back when what it presupposes may be known, or dead-letter
        it once it waited `prerequisite_wait` seconds."""
        state, now = delivery.state, time.time()
        since = state.waiting_since if state.waiting_since is not None else now
        what = ", ".join(m.what for m in missing)
        delays = self.delayed_retry_delays
        limit = self.prerequisite_wait if delays else 0.0
        if error := waited_enough(event, missing, now - since, limit):
            log.error("giving up on %s", error)
            await self._dead_letter(delivery, PREREQUISITE_MISSING, error, 0)
            return
        delay = delays[wait_delay_index(state.waits, len(delays))]
        log.info("%s %s waits for %s (round %d)", event.event_type, event.id, what,
                 state.waits + 1)
        await self._schedule(delivery, f"wait{state.waits + 1}", delay, {
            WAITS: state.waits + 1, WAITING_SINCE: datetime.fromtimestamp(since, UTC)})

    async def _schedule(self, delivery: _Delivery, round_name: str, delay: float,
                        changes: dict[str, object]) -> None:
        """Schedule a copy of the message for its subscription alone, `delay` seconds from
        now, then complete the original (a crash between the two delivers both: the inbox
        takes the repeat)."""
        link, message, envelope = delivery.link, delivery.message, delivery.envelope
        assert envelope is not None
        copy = redelivery(message, link.subscription.name,
                          f"{envelope.message_id}/{link.subscription.name}/{round_name}",
                          changes)
        due = datetime.now(UTC) + timedelta(seconds=delay)
        if self._sender is None:
            self._sender = self.client.get_topic_sender(self.topic)
        async with asyncio.timeout(self.timeout), self._scheduling:  # one at a time, as above
            await self._sender.schedule_messages(copy, due)
        self.scheduled_until = max(self.scheduled_until, due.timestamp())
        await self._settle(delivery, "complete", link.receiver.complete_message(message))

    async def _dead_letter(self, delivery: _Delivery, reason: str, error: BaseException,
                           attempts: int) -> None:
        metrics.dead_lettered(delivery.link.subscription.name, SYSTEM)
        description = f"{exception_name(error)}: {failure_message(error)}"
        if attempts:
            description += f" ({attempts} attempts)"
        await self._settle(delivery, "dead-letter", delivery.link.receiver.dead_letter_message(
            delivery.message, reason=reason, error_description=clip(description, 4000)))

    async def _settle(self, delivery: _Delivery, what: str, settling: Awaitable[None]) -> None:
        """Settle; a settlement that fails (the lock was lost, the link is gone) leaves the
        message to the broker, which delivers it again."""
        try:
            async with asyncio.timeout(self.timeout):
                await settling
        except (ServiceBusError, TimeoutError) as exc:
            log.warning("could not %s a message of %s (it will come again): %s", what,
                        delivery.link.subscription.name, exc)

