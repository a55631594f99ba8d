"""Events another MussikOn service publishes, with pika playing the .NET service (PascalCase
JSON from tests/golden/, a new GUID as `message_id` on every publish, headers `EventType` and
`Version`), on SQLite and on PostgreSQL: recorded once in our store with origin `rabbitmq`,
handled like our own, one effect however often they come, and never published back to the
events exchange."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.application.projections.analytics import USER_REGISTERED
from mussikon.application.projections.directory import PROFILES
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.domain.events import SPECIFICATION_EVENT_TYPES
from tests.integration.rabbitmq_kit import BrokerNamespace, dotnet_publish
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq

GOLDEN = Path(__file__).parent.parent / "golden"
REGISTERED = (GOLDEN / "MusicianRegisteredEvent.json").read_bytes()
REGISTERED_ID = json.loads(REGISTERED)["Id"]
MUSICIAN_ID = json.loads(REGISTERED)["MusicianId"]


@dataclass
class Bus:
    """The application on SQLite with its RabbitMQ transport, and a spy queue that sees every
    message on the events exchange (the .NET service's and any we publish)."""

    app: App
    transport: RabbitMqTransport
    namespace: BrokerNamespace
    spy: str

    @property
    def exchange(self) -> str:
        return self.transport.topology.events_exchange

    async def publish(self, routing_key: str, body: bytes, event_type: str) -> str:
        """Publish as the .NET service does; the message's GUID."""
        return await asyncio.to_thread(dotnet_publish, self.namespace.url, self.exchange,
                                       routing_key, body, event_type)

    async def on_exchange(self) -> int:
        """Messages the spy queue got from the events exchange."""
        channel = await self.namespace.channel()
        return (await channel.queue_declare(self.spy, passive=True)).message_count or 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def bus(request: pytest.FixtureRequest, rabbitmq_url: str, unique_name: str,
              tmp_path: Path) -> AsyncIterator[Bus]:
    """The application on SQLite or PostgreSQL (a schema of its own, dropped afterwards)."""
    settings = Settings(poll_interval=0.01, poll_max_interval=0.1)
    if request.param == "sqlite":
        settings = settings.model_copy(update={
            "store_url": f"sqlite:///{tmp_path / 'foreign.db'}", "sqlite_synchronous": "NORMAL"})
    else:
        settings = settings.model_copy(update={
            "store_url": request.getfixturevalue("postgres_url"), "postgres_schema": unique_name})
    app = await open_app(settings, OffsetClock())
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    transport = namespace.transport(app.store, app.documents, queue_type="classic")
    app.transport = transport
    spy = f"{namespace.prefix}spy"
    try:
        await app.start()
        channel = await namespace.channel()
        await channel.queue_declare(spy, durable=False)
        await channel.queue_bind(spy, transport.topology.events_exchange, routing_key="#")
        yield Bus(app, transport, namespace, spy)
    finally:
        await app.close()
        channel = await namespace.channel()
        await channel.queue_delete(spy)
        await namespace.cleanup()
        if request.param == "postgres":
            admin = await asyncpg.connect(settings.store_url)
            await admin.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
            await admin.close()


async def welcome_emails(app: App) -> int:
    sent = await app.notifier.sent()
    return sum(1 for s in sent if s.notification.recipient == "ana.perez@example.org")


@pytest.mark.parametrize("routing_key", ["musician.registered", "musicianregisteredevent"],
                         ids=["RabbitMQService", "EventBus"])
async def test_a_registration_from_another_service_is_handled_and_not_echoed(
        bus: Bus, routing_key: str) -> None:
    app = bus.app
    await bus.publish(routing_key, REGISTERED, "MusicianRegisteredEvent")

    async def handled() -> bool:
        summary = await app.analytics.summary()
        return (await welcome_emails(app) == 1 and summary.by_kind[USER_REGISTERED] == 1
                and await app.documents.get(PROFILES, MUSICIAN_ID) is not None)

    await eventually(handled, timeout=20)
    await app.settle()
    [stored] = await app.store.read_all()
    assert (str(stored.event.id), stored.origin) == (REGISTERED_ID, "rabbitmq")
    profile = await app.documents.get(PROFILES, MUSICIAN_ID)
    assert profile is not None and profile["name"] == "Ana Pérez"
    assert await bus.transport.dead_letters() == []
    # Only the .NET service's message went through the exchange: none of ours followed it.
    assert await bus.on_exchange() == 1
    assert bus.transport.relay is not None and bus.transport.relay.published == 0


async def test_the_same_event_published_twice_with_new_guids_has_one_effect(bus: Bus) -> None:
    app = bus.app
    guids = [await bus.publish("musician.registered", REGISTERED, "MusicianRegisteredEvent"),
             await bus.publish("musicianregisteredevent", REGISTERED, "MusicianRegisteredEvent")]
    assert guids[0] != guids[1]

    async def both_delivered() -> bool:
        consumer = bus.transport.consumer
        return consumer is not None and consumer.delivered >= 2

    await eventually(both_delivered, timeout=20)
    await app.settle()
    assert await welcome_emails(app) == 1
    assert (await app.analytics.summary()).by_kind[USER_REGISTERED] == 1
    assert [str(r.event.id) for r in await app.store.read_all()] == [REGISTERED_ID]
    assert await bus.on_exchange() == 2


async def test_every_seed_event_type_from_outside_is_recorded_once(bus: Bus) -> None:
    app, topology = bus.app, bus.transport.topology
    types = [cls.__name__ for cls in SPECIFICATION_EVENT_TYPES]
    bodies = {t: (GOLDEN / f"{t}.json").read_bytes() for t in types}
    for _ in range(2):  # each twice, a new GUID each time
        for event_type in types:
            await bus.publish(topology.routing_key(event_type), bodies[event_type], event_type)

    async def all_delivered() -> bool:
        consumer = bus.transport.consumer
        return consumer is not None and consumer.delivered >= 2 * len(types)

    await eventually(all_delivered, timeout=20)
    await bus.transport.wait_idle(30)
    stored = await app.store.read_all()
    foreign = [r for r in stored if r.origin]
    assert sorted((r.event.event_type, str(r.event.id), r.origin) for r in foreign) == sorted(
        (t, json.loads(bodies[t])["Id"], "rabbitmq") for t in types)
    # What our handlers wrote in reply is ours, and our relay publishes it; nothing else.
    ours = len(stored) - len(foreign)

    async def ours_alone_published() -> bool:
        return await bus.on_exchange() == 2 * len(types) + ours

    await eventually(ours_alone_published)
    assert bus.transport.relay is not None and bus.transport.relay.published == ours
