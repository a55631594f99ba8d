"""Two instances of this service, each with its own SQLite store and its own queues
(`MUSSIKON_RABBITMQ_PREFIX`), on one events exchange (`MUSSIKON_RABBITMQ_EVENTS_EXCHANGE`):
each gets every event, records the other's once as foreign, sends its welcome emails once,
and neither publishes the other's event back, so nothing loops."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq


@dataclass
class Instance:
    """One instance: the application, started on its RabbitMQ transport."""

    app: App
    transport: RabbitMqTransport

    async def stored(self) -> list[tuple[str, str]]:
        """(event id, origin) of every event in its store, in store order."""
        return [(str(r.event.id), r.origin) for r in await self.app.store.read_all()]

    async def emailed(self) -> Counter[str]:
        """How many notifications each recipient got from this instance."""
        return Counter(s.notification.recipient for s in await self.app.notifier.sent())


@dataclass
class Bus:
    """Two instances on one shared events exchange, and a spy queue bound to it by `#`."""

    a: Instance
    b: Instance
    namespace: BrokerNamespace
    spy: str

    async def on_exchange(self) -> int:
        """Messages the spy queue got from the shared events exchange."""
        channel = await self.namespace.channel()
        return (await channel.queue_declare(self.spy, passive=True)).message_count or 0


@pytest.fixture
async def bus(rabbitmq_url: str, unique_name: str, tmp_path: Path) -> AsyncIterator[Bus]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    shared = f"{unique_name}.shared.events"
    spy = f"{namespace.prefix}spy"
    started: list[App] = []
    try:
        instances = []
        for name in ("a", "b"):
            app = await open_app(Settings(
                store_url=f"sqlite:///{tmp_path / name}.db", sqlite_synchronous="NORMAL",
                broker_url=rabbitmq_url, rabbitmq_prefix=f"{namespace.prefix}{name}.",
                rabbitmq_events_exchange=shared, rabbitmq_queue_type="classic",
                rabbitmq_retry_delays="0.2,0.4", bus_retry_delays="0.01",
                poll_interval=0.01, poll_max_interval=0.1), OffsetClock())
            started.append(app)
            assert isinstance(app.transport, RabbitMqTransport)
            namespace.track(app.transport)
            await app.start()
            instances.append(Instance(app, app.transport))
        channel = await namespace.channel()
        await channel.queue_declare(spy, durable=False)
        await channel.queue_bind(spy, shared, routing_key="#")
        yield Bus(instances[0], instances[1], namespace, spy)
    finally:
        for app in started:
            await app.close()
        channel = await namespace.channel()
        await channel.queue_delete(spy)
        await namespace.cleanup()  # both instances' queues and exchanges, the shared one too


async def test_two_instances_on_one_events_exchange_each_record_the_others_event_once(
        bus: Bus) -> None:
    a, b = bus.a, bus.b
    assert a.transport.topology.events_exchange == b.transport.topology.events_exchange
    assert not set(a.transport.topology.event_queues()) & set(b.transport.topology.event_queues())
    await a.app.marketplace.register_musician(email="ana@a.example", name="Ana",
                                              genres=["jazz"], location="Madrid")
    await b.app.marketplace.register_musician(email="bea@b.example", name="Bea",
                                              genres=["bolero"], location="Sevilla")
    [(ana, _)] = await a.stored()
    [(bea, _)] = await b.stored()
    both_welcomed = Counter({"ana@a.example": 1, "bea@b.example": 1})

    async def each_has_both() -> bool:
        return (len(await a.stored()) == len(await b.stored()) == 2
                and await a.emailed() == await b.emailed() == both_welcomed)

    async def both_on_the_exchange() -> bool:
        return await bus.on_exchange() == 2

    await eventually(each_has_both, timeout=20)
    await eventually(both_on_the_exchange)
    await a.app.settle()
    await b.app.settle()

    assert await a.stored() == [(ana, ""), (bea, "rabbitmq")]
    assert await b.stored() == [(bea, ""), (ana, "rabbitmq")]
    assert await a.emailed() == await b.emailed() == both_welcomed
    # Idle, and nothing went round again: each relay published its own event alone, each
    # consumer got each event once, and the exchange saw two messages in all.
    for instance in (a, b):
        assert instance.transport.relay is not None and instance.transport.relay.published == 1
        assert instance.transport.consumer is not None
        assert instance.transport.consumer.delivered == 2
        assert await instance.transport.dead_letters() == []
    assert await bus.on_exchange() == 2

