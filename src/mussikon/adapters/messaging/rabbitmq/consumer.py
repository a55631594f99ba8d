"""The consumer: takes messages from the event queues and runs the subscriptions' handlers.

Every message's event is first looked up in the store by its id: one this service wrote
(coming back from the broker) or recorded before gets its stored position; one another
service published is recorded (`EventStore.record_foreign`, origin `rabbitmq`) before any
handler runs, so the projections, which follow the store's global order, apply it too, and
a handler waiting for them (`read_models_at`) waits for its position. Then, for each message,
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
since are not started at all: they come again on the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.exceptions import PublishError
from pamqp.commands import Basic

from mussikon.adapters.messaging.rabbitmq.acknowledgements import Acknowledgements
from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS, BrokerConnection
from mussikon.adapters.messaging.rabbitmq.properties import (
    HANDLER_FAILED,
    MALFORMED,
    DeliveryState,
    Failure,
    dead_letter_properties,
    read_envelope,
    retry_properties,
)
from mussikon.adapters.messaging.rabbitmq.topology import Topology
from mussikon.adapters.messaging.retries import handle_with_retries
from mussikon.ports.event_store import EventStore
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec, WireFormatError

log = logging.getLogger("mussikon.rabbitmq.consumer")

FOREIGN_ORIGIN = "rabbitmq"
"""The origin of the events other services published that this consumer records."""


@dataclass(frozen=True, slots=True)
class _Delivery:
    acks: Acknowledgements
    queue: str
    message: DeliveredMessage
    tag: int


class EventConsumer:
    """Runs subscriptions as RabbitMQ consumers, with bounded prefetch and concurrency."""

    def __init__(self, broker: BrokerConnection, topology: Topology, codec: EventCodec,
                 subscriptions: Sequence[Subscription], *, store: EventStore,
                 prefetch: int = 100,
                 concurrency: int = 8, retry_delays: Iterable[float] = (0.05, 0.25, 1.0),
                 publish_timeout: float = 30.0) -> None:
        self.broker, self.topology, self.codec = broker, topology, codec
        self.store = store
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.retry_delays = tuple(retry_delays)
        self.publish_timeout = publish_timeout
        self._by_type: dict[str, list[Subscription]] = {}
        names: set[str] = set()
        for subscription in subscriptions:
            if subscription.name in names:
                raise ValueError(f"two subscriptions are named {subscription.name!r}")
            names.add(subscription.name)
            for event_type in sorted(subscription.event_types):
                topology.routing_key(event_type)  # fails early for a type with no queue
                self._by_type.setdefault(event_type, []).append(subscription)
        self.queues = sorted({topology.queue(t) for t in self._by_type})
        """The queues consumed: those of every event type some subscription wants."""
        self.delivered = 0
        """Messages received so far (redeliveries included)."""
        self._waiting: asyncio.Queue[_Delivery | None] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._unsettled = 0
        self._running: dict[str, asyncio.Future[None]] = {}
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
        channel = await connection.channel(publisher_confirms=False)
        # Per consumer, that is per queue: quorum queues do not support a channel-wide limit.
        await channel.basic_qos(prefetch_count=self.prefetch)
        self._publisher = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
        self._channel = channel
        channel.closing.add_done_callback(
            functools.partial(self._on_channel_closed, connection))
        self._acks = acks = Acknowledgements(channel)
        if not self._workers:
            # Handlers run in these tasks, not in the channel's: a lost connection does not
            # cut a handler off halfway.
            self._workers = [asyncio.create_task(self._work(), name=f"consumer-{n}")
                             for n in range(self.concurrency)]
        self._consumer_tags = []
        for queue in self.queues:
            ok = await channel.basic_consume(
                queue, functools.partial(self._on_message, acks, queue))
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

    async def stop(self) -> None:
        """Stop taking messages, finish the handlers running, settle their messages.

        Messages received but not started yet are handed back to the broker unprocessed.
        """
        self._stopping = True
        channel = self._channel
        if channel is not None and not channel.is_closed:
            for tag in self._consumer_tags:
                with contextlib.suppress(*BROKER_ERRORS):
                    await channel.basic_cancel(tag)
        for _ in self._workers:
            self._waiting.put_nowait(None)
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._acks is not None:
            await self._acks.drain()
        for open_channel in (self._channel, self._publisher):
            if open_channel is not None and not open_channel.is_closed:
                with contextlib.suppress(*BROKER_ERRORS):
                    await open_channel.close()

    async def _on_message(self, acks: Acknowledgements, queue: str,
                          message: DeliveredMessage) -> None:
        tag = message.delivery_tag
        if tag is None:
            return
        self.delivered += 1
        self._unsettled += 1
        acks.received(tag)
        self._waiting.put_nowait(_Delivery(acks, queue, message, tag))

    async def _work(self) -> None:
        while (delivery := await self._waiting.get()) is not None:
            try:
                await self._handle(delivery)
            finally:
                self._unsettled -= 1

    async def _handle(self, delivery: _Delivery) -> None:
        acks, queue, tag = delivery.acks, delivery.queue, delivery.tag
        if not acks.is_open:
            return  # its channel is gone: the broker delivers it again on the new one
        if self._stopping:
            acks.reject(tag, requeue=True)
            return
        try:
            await self._process(queue, delivery.message)
        except BROKER_ERRORS as exc:
            # A retry or a dead letter could not be published: leave the message to be
            # delivered again rather than acknowledge what was not handed on.
            log.warning("could not settle a message from %s: %s", queue, exc)
            if isinstance(exc, PublishError):
                # The retry or dead-letter queue is gone: declare the topology again.
                self.broker.drop(f"a retry or dead letter could not be routed ({exc})")
            acks.reject(tag, requeue=True)
            return
        except Exception:
            log.exception("unexpected failure handling a message from %s", queue)
            acks.reject(tag, requeue=True)
            return
        acks.ack(tag)

    async def _process(self, queue: str, message: DeliveredMessage) -> None:
        state = DeliveryState.of(message, queue)
        try:
            envelope = read_envelope(self.codec, message)
        except WireFormatError as exc:
            log.error("malformed message in %s goes to the dead-letter queue: %s", queue, exc)
            await self._dead_letter(message, state, Failure(MALFORMED, exc, attempts=0))
            return
        envelope = await self._as_stored(envelope)
        subscriptions = [s for s in self._by_type.get(envelope.event.event_type, [])
                         if state.pending is None or s.name in state.pending]
        if not subscriptions:
            log.debug("no subscription here wants %s", envelope.event.event_type)
            return
        # The same event delivered again while its first delivery is still running here
        # (after a reconnect) waits for it, so the inbox sees the first one's result.
        earlier = self._running.get(envelope.message_id)
        if earlier is not None:
            await asyncio.shield(earlier)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running[envelope.message_id] = done
        try:
            failed, error = await self._run(envelope, subscriptions, state)
        finally:
            if self._running.get(envelope.message_id) is done:
                del self._running[envelope.message_id]
            done.set_result(None)
        if not failed:
            return
        assert error is not None
        if state.retries < len(self.topology.retry_stages):
            await self._retry_later(message, state, failed, error)
            return
        tries = (state.retries + 1) * (1 + len(self.retry_delays))
        log.error("giving up on %s %s after %d attempts (%s): %s", envelope.event.event_type,
                  envelope.message_id, tries, ", ".join(s.name for s in failed), error)
        await self._dead_letter(message, state, Failure(
            HANDLER_FAILED, error, tries, frozenset(s.name for s in failed)))

    async def _as_stored(self, envelope: Envelope) -> Envelope:
        """The envelope of the event as the store holds it, with its position; an event the
        store does not hold (another service published it) is recorded first."""
        stored = await self.store.find_event(envelope.event.id)
        if stored is None:
            stored = await self.store.record_foreign(envelope.event, FOREIGN_ORIGIN)
            log.debug("recorded %s %s from another service at position %d",
                      stored.event.event_type, stored.event.id, stored.position)
        return dataclasses.replace(envelope, event=stored.event, position=stored.position)

    async def _run(self, envelope: Envelope, subscriptions: list[Subscription],
                   state: DeliveryState) -> tuple[list[Subscription], Exception | None]:
        """Run each subscription's handler, retrying it in process while it fails; return
        those still failing after their retries, and the last exception."""
        first_attempt = state.retries * (1 + len(self.retry_delays)) + 1
        failed: list[Subscription] = []
        error: Exception | None = None
        for subscription in subscriptions:
            failure = await handle_with_retries(subscription.name, subscription.handler,
                                                envelope, self.retry_delays,
                                                first_attempt=first_attempt)
            if failure is not None:
                failed.append(subscription)
                error = failure.error
        return failed, error

    async def _retry_later(self, message: DeliveredMessage, state: DeliveryState,
                           failed: list[Subscription], error: Exception) -> None:
        stage = self.topology.retry_stages[state.retries]
        await self._publish(message.body, stage.exchange, state.original_queue,
                            retry_properties(message, state, (s.name for s in failed), error))

    async def _dead_letter(self, message: DeliveredMessage, state: DeliveryState,
                           failure: Failure) -> None:
        await self._publish(message.body, "", self.topology.dead_letter_queue,
                            dead_letter_properties(message, state, failure))

    async def _publish(self, body: bytes, exchange: str, routing_key: str,
                       properties: Basic.Properties) -> None:
        publisher = self._publisher
        if publisher is None or publisher.is_closed:
            connection = await self.broker.connection()
            publisher = self._publisher = await connection.channel(publisher_confirms=True,
                                                                   on_return_raises=True)
        await publisher.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                      properties=properties,
                                      mandatory=True, timeout=self.publish_timeout)
