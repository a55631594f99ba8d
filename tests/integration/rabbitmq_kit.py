"""What the RabbitMQ transport tests share: sample events, a per-test broker namespace that
cleans up after itself, and pika playing the .NET service."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import subprocess
import typing
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiormq
import pika

from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport, Topology
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.application.inbox import idempotent
from mussikon.domain.events import ALL_EVENT_TYPES, DomainEvent
from mussikon.domain.instant import utc_now
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.transport import Envelope, Handler, Subscription
from mussikon.wire import EventCodec
from tests import polling

FAST: dict[str, Any] = {"retry_delays": (0.01,), "delayed_retry_delays": (0.2, 0.4),
                        "lease_seconds": 1.5, "poll_interval": 0.02, "poll_max_interval": 0.2}
"""Transport options that keep the tests quick: short retries, short lease, quick polling."""

CLEANUP_TIMEOUT = 60.0
"""Seconds a namespace's clean-up may take: stopping its transports (each gives its handlers
up to their stop grace) and deleting its exchanges and queues."""

eventually = polling.eventually
"""The tests' polling helper (tests/polling.py), for the tests that take it from this kit."""

_SAMPLES: dict[Any, Callable[[int], Any]] = {
    str: lambda n: f"value-{n}",
    int: lambda n: n,
    Decimal: lambda n: Decimal(f"{n}.50"),
    uuid.UUID: lambda n: uuid.uuid4(),
    datetime: lambda n: utc_now(),
    tuple[str, ...]: lambda n: ("jazz", "bolero"),
}


def sample_event(cls: type[DomainEvent], n: int = 1, **values: Any) -> DomainEvent:
    """An event of any type, its own fields filled with plausible values."""
    hints = typing.get_type_hints(cls)
    base = {f.name for f in dataclasses.fields(DomainEvent)}
    for f in dataclasses.fields(cls):
        if f.name not in base and f.name not in values:
            values[f.name] = _SAMPLES[hints[f.name]](n)
    return cls(**values)


def every_event_type() -> list[type[DomainEvent]]:
    """The event types the default codec routes."""
    return list(ALL_EVENT_TYPES)


async def append(store: EventStore, events: Iterable[DomainEvent]) -> None:
    """Append each event to its own stream (appended after whatever the stream holds)."""
    for event in events:
        version = await store.stream_version(event.stream_id)
        await store.append(event.stream_id, [event], version)


class Recorder:
    """A subscription handler that records what it handled and can be told to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.handled: list[Envelope] = []
        self.effects: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.fail_for: set[str] = set()
        self.delay = delay

    async def __call__(self, envelope: Envelope) -> None:
        self.calls[envelope.message_id] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if envelope.message_id in self.fail_for:
            raise ValueError(f"cannot handle {envelope.event.event_type}")
        self.handled.append(envelope)
        self.effects[envelope.message_id] += 1

    def subscription(self, name: str, event_types: Iterable[str],
                     documents: DocumentStore | None = None) -> Subscription:
        """This recorder as a subscription; made idempotent when given a document store."""
        handler: Handler = self
        subscription = Subscription(name, frozenset(event_types), handler)
        return idempotent(subscription, documents) if documents is not None else subscription


class BrokerNamespace:
    """One test's slice of the broker: a unique prefix, the transports it started, and the
    exchanges and queues they declared, all removed at the end."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.codec = EventCodec()
        self.transports: list[RabbitMqTransport] = []
        self._topologies: dict[tuple[str, str, str, tuple[float, ...]], Topology] = {}

    def transport(self, store: EventStore | None = None, documents: DocumentStore | None = None,
                  url: str | None = None, **options: Any) -> RabbitMqTransport:
        """A transport in this namespace (not started); stopped and cleaned up at the end."""
        settings = {**FAST, "prefix": self.prefix, "connection_name": f"test-{self.prefix}",
                    **options}
        transport = RabbitMqTransport(url or self.url, store or InMemoryEventStore(self.codec),
                                      documents or InMemoryDocumentStore(), self.codec,
                                      **settings)
        return self.track(transport)

    def track(self, transport: RabbitMqTransport) -> RabbitMqTransport:
        """A transport made elsewhere (by `open_app`), stopped and cleaned up at the end with
        this namespace's: its exchanges and queues too, a shared events exchange included."""
        self.transports.append(transport)
        topology = transport.topology
        self._topologies[(topology.prefix, topology.events_exchange, topology.queue_type,
                          tuple(s.delay for s in topology.retry_stages))] = topology
        return transport

    async def channel(self) -> aiormq.abc.AbstractChannel:
        """A raw channel on a connection of its own (closed by `cleanup`)."""
        self._raw = getattr(self, "_raw", None) or await aiormq.connect(self.url)
        return await self._raw.channel()

    async def cleanup(self) -> None:
        """Stop every transport, then delete every exchange and queue of the namespace; a
        broker that stopped answering fails the test's teardown within a minute."""
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            for transport in self.transports:
                with contextlib.suppress(Exception):
                    await transport.stop()
            channel = await self.channel()
            for topology in self._topologies.values():
                await topology.delete(channel)
            await self._raw.close()


async def delete_topology(transport: object, url: str) -> None:
    """Delete every exchange and queue a RabbitMQ transport declared: the clean-up of a test
    that ran a whole app on RabbitMQ under a prefix of its own."""
    assert isinstance(transport, RabbitMqTransport)
    connection = await aiormq.connect(url)
    try:
        await transport.topology.delete(await connection.channel())
    finally:
        await connection.close()


def pika_channel(url: str) -> tuple[pika.BlockingConnection, Any]:
    """A blocking pika connection and channel: the independent client playing .NET."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


def dotnet_publish(url: str, exchange: str, routing_key: str, body: bytes,
                   event_type: str, headers: dict[str, str] | None = None) -> str:
    """Publish as the specification's `RabbitMQService.PublishEventAsync` does (with
    `headers` besides its own, such as the `traceparent` .NET's instrumentation adds);
    return the message id (a new GUID, unrelated to the event's id)."""
    [message_id] = dotnet_publish_all(url, exchange, routing_key, [body], event_type, headers)
    return message_id


def dotnet_publish_all(url: str, exchange: str, routing_key: str, bodies: Iterable[bytes],
                       event_type: str, headers: dict[str, str] | None = None) -> list[str]:
    """Publish each body as `dotnet_publish` does, one after another on one connection and
    channel, each confirmed by the broker; return their message ids."""
    message_ids = []
    connection, channel = pika_channel(url)
    try:
        channel.confirm_delivery()
        for body in bodies:
            message_id = str(uuid.uuid4())
            channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(
                delivery_mode=2, message_id=message_id,
                timestamp=int(utc_now().timestamp()),
                headers={"EventType": event_type, "Version": "1.0", **(headers or {})}))
            message_ids.append(message_id)
    finally:
        connection.close()
    return message_ids


def close_broker_connections(name: str) -> int:
    """Close, from the broker's side, every connection named `name` (rabbitmqctl); returns
    how many, or -1 if rabbitmqctl is not usable here."""
    if shutil.which("rabbitmqctl") is None:
        return -1
    listing = subprocess.run(["rabbitmqctl", "list_connections", "-q", "pid",
                              "client_properties"], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        return -1
    closed = 0
    for line in listing.stdout.splitlines():
        if f'"connection_name","{name}"' in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(["rabbitmqctl", "close_connection", pid, "closed by a test"],
                           capture_output=True, check=False)
            closed += 1
    return closed
