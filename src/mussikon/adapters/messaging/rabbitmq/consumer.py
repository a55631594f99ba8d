"""The consumer: takes messages from the event queues and runs the subscriptions' handlers.

Every message's event is first looked up in the store by its id: one this service wrote
(coming back from the broker) or recorded before gets its stored position; one another
service published is recorded (`EventStore.record_foreign`, origin `rabbitmq`) before any
handler runs, so the projections, which follow the store's global order, apply it too, and
a handler waiting for them (`read_models_at`) waits for its position. A foreign event is
recorded only once what it presupposes is in the store (`mussikon.domain.prerequisites`: an
application its gig and musician, a signature its contract's draft…), since the broker
does not order messages across queues: until then it waits in the delayed-retry queues
(settled here, so it holds no handler, no prefetch room and none of its stream's later
messages), and after `prerequisite_wait` seconds it goes to the dead-letter queue with the
reason `prerequisite-missing`, naming what was not known. Then, for each message,
every subscription that wants its event type runs; the message is
acknowledged only after all of them succeeded (or it was handed on to a retry or to the
dead-letter queue, confirmed by the broker). A failing handler is retried in process a
few times, then the message waits in a TTL queue and comes back (1 s, 10 s, 60 s by
default), then it goes to the dead-letter queue with the reason. Only the subscriptions
that failed run again. A body that is not a valid event goes to the dead-letter queue at
once: retrying cannot fix it.

Handlers run in `concurrency` worker tasks owned by the consumer rather than by the
channel, so a lost connection does not cut a handler off halfway: it finishes, its
acknowledgement is lost with the channel, and the broker redelivers the message, which
the subscription's inbox recognises. Messages received on a channel that has closed
since are not started at all: they come again on the new one. `stop(grace)` gives the
handlers running `grace` seconds, then cancels them and hands their messages back to the
broker, which delivers them again (to this or another consumer).

The workers are `StreamOrderedWorkers`: the messages of one stream (the event's
`stream_id`) are handled one after another in the order this consumer received them,
other streams in parallel. The broker does not order messages across queues, nor a
message coming back from a retry queue among the others: the order kept is that of
receipt, on whichever queue. A message waiting for its next in-process attempt gives its
worker back and holds back only the later messages of its stream (a message handed on
to a delayed retry is settled here and holds back nothing: it comes back after them,
as any message from another queue may); it stays
unacknowledged meanwhile, so it counts against the prefetch of its queue: at most
`prefetch` messages per consumed queue are held in memory, whether queued, running or
waiting for a retry. The consumer takes every event type's queue, so `max_in_flight`
bounds them together: each queue's prefetch is its share of it (at least 1), so the
process holds at most `max_in_flight` messages (or one per queue, if there are more
queues), whatever the number of event types. So that failing messages cannot fill that
window and pause their queue, at most `retry_wait_limit` (half the prefetch) messages
wait in process at once: a message failing beyond that skips the rest of its in-process
retries and goes on at once to its next delayed retry (the TTL queue), or in its last
round to the dead-letter queue (with the number of attempts it did have). In-process
retries are for a passing blip; that many messages failing at once is not one, and the
healthy ones keep flowing.
The same event delivered again while its first delivery is still in progress here
(after a reconnect) is of the same stream, so it waits for it and the inbox sees the
first one's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.exceptions import PublishError
from pamqp.commands import Basic

from mussikon import metrics, tracing
from mussikon.adapters.messaging.foreign import as_stored, wait_delay_index, waited_enough
from mussikon.adapters.messaging.rabbitmq.acknowledgements import Acknowledgements
from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.adapters.messaging.rabbitmq.properties import (
    HANDLER_FAILED,
    MALFORMED,
    PREREQUISITE_MISSING,
    DeliveryState,
    Failure,
    dead_letter_properties,
    read_envelope,
    retry_properties,
    wait_properties,
)
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.adapters.messaging.retries import (
    next_retry_delay,
    store_wait_delay,
    try_handler,
)
from mussikon.adapters.messaging.stream_order import StreamOrderedWorkers
from mussikon.domain.events import DomainEvent
from mussikon.domain.prerequisites import Prerequisite
from mussikon.logs import handling
from mussikon.ports.event_store import EventStore, StoreError
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec, WireFormatError

log = logging.getLogger("mussikon.rabbitmq.consumer")

SYSTEM: metrics.Broker = "rabbitmq"
"""The `messaging.system` of the trace spans."""
FOREIGN_ORIGIN = "rabbitmq"
"""The origin of the events other services published that this consumer records."""


@dataclass(slots=True, eq=False)
class _Delivery:
    """A message received, decoded on receipt (`envelope` None: it carries no valid event,
    `malformed` says why), and where it stands in its in-process attempts."""

    acks: Acknowledgements
    queue: str
    message: DeliveredMessage
    tag: int
    state: DeliveryState
    envelope: Envelope | None
    malformed: WireFormatError | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    """Those still to run its handler (all that want it, until some succeeded)."""
    tries: int = 0
    """In-process attempts made so far, in this delivery."""
    store_waits: int = 0
    """Times the store could not be asked whether it holds the event, in this delivery."""
    error: Exception | None = None
    stream: str | None = None
    """The event's stream, whose order it keeps (None for a malformed message)."""




def _stream_of(delivery: _Delivery) -> str | None:
    return delivery.stream


class EventConsumer:
    """Runs subscriptions as RabbitMQ consumers, with bounded prefetch and concurrency."""

    def __init__(self, broker: BrokerConnection, topology: Topology, codec: EventCodec,
                 subscriptions: Sequence[Subscription], *, store: EventStore,
                 prefetch: int = 100, max_in_flight: int | None = None,
                 concurrency: int = 8, retry_delays: Iterable[float] = (0.05, 0.25, 1.0),
                 prerequisite_wait: float = 600.0) -> None:
        self.broker, self.topology, self.codec = broker, topology, codec
        self.store = store
        self.prerequisite_wait = prerequisite_wait
        """Seconds an event from another service may wait for what it presupposes."""
        self.concurrency = concurrency
        self.retry_delays = tuple(retry_delays)
        self._by_type: dict[str, list[Subscription]] = {}
        names: set[str] = set()
        for subscription in subscriptions:
            if subscription.name in names:
                raise ValueError(f"two subscriptions are named {subscription.name!r}")
            names.add(subscription.name)
            for event_type in sorted(subscription.event_types):
                topology.routing_key(event_type)  # fails early for a type with no queue
                self._by_type.setdefault(event_type, []).append(subscription)
        self.queues = sorted(topology.event_queues())
        """The queues consumed: every event type's, those no subscription wants included, so
        that every event another service publishes is recorded (the projections follow
        more types than the handlers) and no queue fills up unread."""
        self.prefetch = prefetch if max_in_flight is None else max(
            1, min(prefetch, max_in_flight // max(len(self.queues), 1)))
        """Unacknowledged messages per queue consumed: `prefetch`, or less to share
        `max_in_flight` among the queues."""
        self.delivered = 0
        """Messages received so far (redeliveries included)."""
        self._workers = StreamOrderedWorkers("consumer", concurrency, self._attempt,
                                             _stream_of)
        self._unsettled = 0
        self.retry_wait_limit = max(1, self.prefetch // 2)
        """Messages that may wait for an in-process retry at once (see the module's doc)."""
        self._retry_waits = 0
        self._channel: AbstractChannel | None = None
        self._acks: Acknowledgements | None = None
        self._consumer_tags: list[str] = []
        self._publisher: AbstractChannel | None = None
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled (acknowledged, retried or dead-lettered)."""
        return self._unsettled

    async def attach(self, connection: AbstractConnection) -> None:
        """Start consuming on a (new) connection; the broker calls this after every reconnect."""
        if self._stopping or not self.queues:
            return
        answer = self.broker.answer
        channel = await answer(connection.channel(publisher_confirms=False),
                               "opening a channel", connection)
        # Per consumer, that is per queue: quorum queues do not support a channel-wide limit.
        await answer(channel.basic_qos(prefetch_count=self.prefetch), "setting the prefetch",
                     connection)
        self._publisher = await answer(
            connection.channel(publisher_confirms=True, on_return_raises=True),
            "opening a channel", connection)
        self._channel = channel
        channel.closing.add_done_callback(
            functools.partial(self._on_channel_closed, connection))
        self._acks = acks = Acknowledgements(channel)
        # Handlers run in these tasks, not in the channel's: a lost connection does not
        # cut a handler off halfway.
        self._workers.start()
        self._consumer_tags = []
        for queue in self.queues:
            ok = await answer(channel.basic_consume(
                queue, functools.partial(self._on_message, acks, queue)),
                f"consuming {queue}", connection)
            if ok.consumer_tag:
                self._consumer_tags.append(ok.consumer_tag)

    def _on_channel_closed(self, connection: AbstractConnection,
                           closing: asyncio.Future[Any]) -> None:
        if self._stopping:
            return
        reason = closing.exception() if not closing.cancelled() else None
        # The broker closes a channel on a channel-level error and leaves the connection
        # open: nothing would be consumed again. A new connection sets everything up anew.
        self.broker.drop(f"the consuming channel was closed ({reason})", connection)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking messages, finish the handlers running, settle their messages.

        Messages received but not started yet, or waiting for their next in-process attempt,
        are handed back to the broker; so are those whose handlers are still running after
        `grace` seconds (if given), which are cancelled.
        """
        self._stopping = True
        channel = self._channel
        if channel is not None and not channel.is_closed:
            try:
                for tag in self._consumer_tags:
                    await self.broker.answer(channel.basic_cancel(tag),
                                             "cancelling a consumer", channel.connection)
            except BROKER_ERRORS as exc:  # the channel is gone: the broker takes them back
                log.debug("could not cancel the consumers: %s", exc)
        for delivery in await self._workers.stop(grace):
            if delivery.acks.is_open:
                delivery.acks.reject(delivery.tag, requeue=True)
        # Every delivery is settled or handed back now.
        self._unsettled = self._retry_waits = 0
        if self._acks is not None:
            with contextlib.suppress(TimeoutError):  # a silent broker: they are lost with it
                await asyncio.wait_for(self._acks.drain(), self.broker.timeout)
        for open_channel in (self._channel, self._publisher):
            if open_channel is not None and not open_channel.is_closed:
                with contextlib.suppress(*BROKER_ERRORS):
                    await self.broker.answer(open_channel.close(), "closing a channel",
                                             open_channel.connection)

    async def _on_message(self, acks: Acknowledgements, queue: str,
                          message: DeliveredMessage) -> None:
        tag = message.delivery_tag
        if tag is None:
            return
        self.delivered += 1
        acks.received(tag)
        if self._stopping:
            acks.reject(tag, requeue=True)
            return
        self._unsettled += 1
        # Decoded here, in the order received, so that it joins its stream in that order.
        self._workers.submit(self._receive(acks, queue, message, tag))

    def _receive(self, acks: Acknowledgements, queue: str, message: DeliveredMessage,
                 tag: int) -> _Delivery:
        state = DeliveryState.of(message, queue)
        try:
            envelope = read_envelope(self.codec, message)
        except WireFormatError as exc:
            return _Delivery(acks, queue, message, tag, state, None, exc)
        subscriptions = [s for s in self._by_type.get(envelope.event.event_type, [])
                         if state.pending is None or s.name in state.pending]
        return _Delivery(acks, queue, message, tag, state, envelope, None, subscriptions,
                         stream=envelope.event.stream_id)

    async def _attempt(self, delivery: _Delivery) -> float | None:
        """One attempt at a delivery: None once it is settled (or its channel is gone),
        else the seconds before the next attempt."""
        if delivery.tries or delivery.store_waits:
            self._retry_waits -= 1  # it waited for this attempt
        envelope = delivery.envelope
        with handling(envelope.event if envelope is not None else None):
            delay = await self._handle(delivery)
        if delay is None:
            self._unsettled -= 1
        else:
            self._retry_waits += 1
        return delay

    async def _handle(self, delivery: _Delivery) -> float | None:
        acks, queue, tag = delivery.acks, delivery.queue, delivery.tag
        if not acks.is_open:
            return None  # its channel is gone: the broker delivers it again on the new one
        if self._stopping:
            acks.reject(tag, requeue=True)
            return None
        try:
            delay = await self._process(delivery)
        except BROKER_ERRORS as exc:
            # A retry or a dead letter could not be published (nor confirmed in time, and the
            # connection is being reopened): leave the message to be delivered again rather
            # than acknowledge what was not handed on.
            log.warning("could not settle a message from %s: %s", queue, exc)
            if isinstance(exc, PublishError):
                # The retry or dead-letter queue is gone: declare the topology again.
                self.broker.drop(f"a retry or dead letter could not be routed ({exc})")
            acks.reject(tag, requeue=True)
            return None
        except StoreError as exc:
            # The store could not say whether it holds the event (a database restarting). Not
            # the message's fault and no attempt of a handler: it waits here, unacknowledged,
            # and is tried again. Handed back at once, it would come straight back, each time
            # counted by the quorum queue, which dead-letters it after its delivery limit: a
            # few seconds without the database would send every message then arriving to
            # the dead letters.
            delivery.store_waits += 1
            delay = store_wait_delay(delivery.store_waits)
            log.warning("a message from %s waits %.2g s for the store: %s", queue, delay, exc)
            return delay
        except Exception:
            log.exception("unexpected failure handling a message from %s", queue)
            acks.reject(tag, requeue=True)
            return None
        if delay is None:
            acks.ack(tag)
        return delay

    async def _process(self, delivery: _Delivery) -> float | None:
        """Run the handlers still to run once: None once the message is handled or handed
        on (retry queue, dead letter), else the seconds before its next in-process attempt."""
        queue, message, state, envelope = (delivery.queue, delivery.message, delivery.state,
                                           delivery.envelope)
        if envelope is None:
            exc = delivery.malformed
            assert exc is not None
            log.error("malformed message in %s goes to the dead-letter queue: %s", queue,
                      exc.summary)
            await self._dead_letter(message, state, Failure(MALFORMED, exc, attempts=0))
            return None
        if delivery.tries == 0:  # once, before the first attempt, in the stream's order
            with tracing.continued(envelope.headers):  # a foreign event: stored in its trace
                stored = await as_stored(self.store, envelope, FOREIGN_ORIGIN)
            if isinstance(stored, list):
                await self._wait(delivery, envelope.event, stored)
                return None  # gone round a delayed queue to wait, or dead-lettered
            envelope = delivery.envelope = stored
        if not delivery.subscriptions:
            log.debug("no subscription here wants %s", envelope.event.event_type)
            return None
        failed, error = await self._run(delivery)
        if not failed:
            return None
        assert error is not None
        delay = next_retry_delay(self.retry_delays, delivery.tries)
        if delay is not None and self._retry_waits < self.retry_wait_limit:
            for subscription in failed:
                metrics.retried(subscription.name, SYSTEM, "in_process")
            return delay
        tries = self._earlier_attempts(state) + delivery.tries
        if state.retries < len(self.topology.retry_stages):
            await self._retry_later(message, state, failed, error, tries)
            for subscription in failed:
                metrics.retried(subscription.name, SYSTEM, "delayed")
            return None
        log.error("giving up on %s %s after %d attempts (%s): %s", envelope.event.event_type,
                  envelope.message_id, tries, ", ".join(s.name for s in failed), error)
        await self._dead_letter(message, state, Failure(
            HANDLER_FAILED, error, tries, frozenset(s.name for s in failed)))
        return None

    async def _wait(self, delivery: _Delivery, event: DomainEvent,
                    missing: list[Prerequisite]) -> None:
        """Send the message round a delayed queue to wait for what it presupposes, or to the
        dead-letter queue once it waited `prerequisite_wait` seconds."""
        message, state = delivery.message, delivery.state
        now = time.time()
        since = state.waiting_since if state.waiting_since is not None else now
        what = ", ".join(m.what for m in missing)
        stages = self.topology.retry_stages
        limit = self.prerequisite_wait if stages else 0.0
        if error := waited_enough(event, missing, now - since, limit):
            log.error("giving up on %s", error)
            await self._dead_letter(message, state, Failure(
                PREREQUISITE_MISSING, error, attempts=0,
                subscriptions=frozenset(s.name for s in delivery.subscriptions)))
            return
        stage = stages[wait_delay_index(state.waits, len(stages))]
        log.info("%s %s waits for %s (round %d)", event.event_type, event.id, what,
                 state.waits + 1)
        await self._publish(message.body, stage.exchange, state.original_queue,
                            wait_properties(message, state, since, what))

    async def _run(self, delivery: _Delivery) -> tuple[list[Subscription], Exception | None]:
        """Run once each handler still to run; keep those that failed as the ones still to
        run, and return them with the last exception."""
        envelope = delivery.envelope
        assert envelope is not None
        delivery.tries += 1
        attempt = self._earlier_attempts(delivery.state) + delivery.tries
        failed: list[Subscription] = []
        event = envelope.event
        for subscription in delivery.subscriptions:
            span = tracing.processing(
                SYSTEM, delivery.queue, subscription.name, event, headers=envelope.headers,
                attempt=attempt, routing_key=delivery.state.original_routing_key)
            error = await try_handler(subscription.name, subscription.handler, envelope,
                                      attempt, SYSTEM, span)
            if error is not None:
                failed.append(subscription)
                delivery.error = error
        if failed:
            delivery.subscriptions = failed
        return failed, delivery.error

    def _earlier_attempts(self, state: DeliveryState) -> int:
        """Attempts made in the message's earlier delayed-retry rounds."""
        if state.attempts_made is not None:
            return state.attempts_made
        return state.retries * (1 + len(self.retry_delays))  # each round made them all

    async def _retry_later(self, message: DeliveredMessage, state: DeliveryState,
                           failed: list[Subscription], error: Exception,
                           attempts_made: int) -> None:
        stage = self.topology.retry_stages[state.retries]
        await self._publish(message.body, stage.exchange, state.original_queue,
                            retry_properties(message, state, (s.name for s in failed), error,
                                             attempts_made))

    async def _dead_letter(self, message: DeliveredMessage, state: DeliveryState,
                           failure: Failure) -> None:
        for subscription in failure.subscriptions or ("-",):  # "-": malformed, no handler ran
            metrics.dead_lettered(subscription, SYSTEM)
        await self._publish(message.body, "", self.topology.dead_letter_queue,
                            dead_letter_properties(message, state, failure))

    async def _publish(self, body: bytes, exchange: str, routing_key: str,
                       properties: Basic.Properties) -> None:
        answer = self.broker.answer
        publisher = self._publisher
        if publisher is None or publisher.is_closed:
            connection = await self.broker.connection()
            publisher = self._publisher = await answer(
                connection.channel(publisher_confirms=True, on_return_raises=True),
                "opening a channel", connection)
        await answer(publisher.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                             properties=properties, mandatory=True),
                     f"confirming a message to {routing_key}", publisher.connection)
