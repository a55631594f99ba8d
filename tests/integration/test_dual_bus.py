"""One bus over RabbitMQ and Azure Service Bus at once (the specification's dual write): every
event reaches both brokers, each through its own relay position; both deliver to every
subscription and the event has one effect (one email each, over SMTP); a broker that is down,
from the start or for a while, delays only its own messages, and its relay catches up when
it is back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.brokers import SeveralBrokers
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.relay import RELAY as SERVICEBUS_RELAY
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.entrypoints.demo import run_demo
from tests.conftest import MailBox
from tests.integration.rabbitmq_kit import delete_topology, eventually
from tests.servicebus_peer import ServiceBusPeer
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.servicebus]

TOPIC = "mussikon-events"
RABBITMQ_RELAY = "relay"


def _settings(tmp_path: Path, broker_url: str, unique_name: str, **more: Any) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path / 'bus.db'}", broker_url=broker_url,
                    rabbitmq_prefix=f"{unique_name}.", rabbitmq_events_exchange="",
                    poll_interval=0.01, lease_seconds=2.0, bus_retry_delays="0.01,0.05",
                    rabbitmq_retry_delays="0.3", servicebus_retry_delays="0.3",
                    broker_connect_timeout=2.0, **more)


async def _open(settings: Settings, peer: ServiceBusPeer) -> App:
    """The app, with the peer holding the topic and every subscription it receives from."""
    app = await open_app(settings, OffsetClock())
    if TOPIC not in peer.topics():
        peer.create_topic(TOPIC)
    for name, subjects in subscription_rules(app.subscriptions, app.codec.event_types).items():
        peer.create_subscription(TOPIC, name, set(subjects))
    return app


def _parts(app: App) -> tuple[RabbitMqTransport, ServiceBusTransport]:
    bus = app.transport
    assert isinstance(bus, SeveralBrokers)
    rabbitmq, servicebus = bus.transports
    assert isinstance(rabbitmq, RabbitMqTransport)
    assert isinstance(servicebus, ServiceBusTransport)
    return rabbitmq, servicebus


async def _delete_topology(app: App, rabbitmq_url: str) -> None:
    rabbitmq, _ = _parts(app)
    await delete_topology(rabbitmq, rabbitmq_url)


async def _positions(app: App) -> tuple[int, int, int]:
    """The store's head, and how far the RabbitMQ and the Service Bus relays have published."""
    return (await app.store.head_position(), await app.documents.checkpoint(RABBITMQ_RELAY),
            await app.documents.checkpoint(SERVICEBUS_RELAY))


async def test_the_demo_over_both_brokers_sends_each_email_once(
        rabbitmq_url: str, servicebus_peer: ServiceBusPeer, unique_name: str,
        smtp_server: tuple[MailBox, str], tmp_path: Path) -> None:
    box, smtp_url = smtp_server
    app = await _open(_settings(tmp_path, f"{rabbitmq_url},{servicebus_peer.connection_string}",
                                unique_name, smtp_url=smtp_url), servicebus_peer)
    try:
        out = await run_demo(app, Console(quiet=True))
        assert len(out.contracts) >= 3
        await eventually(lambda: _both_caught_up(app), 10)
        head = await app.store.head_position()
        rabbitmq, servicebus = _parts(app)
        assert rabbitmq.consumer is not None and servicebus.consumer is not None
        # Both brokers delivered every event; each had one effect.
        assert rabbitmq.consumer.delivered >= head and servicebus.consumer.delivered >= head
        sent = await app.notifier.sent(limit=100_000)
        assert len(box.message_ids) == len(sent) > 20
        assert [m for m, n in Counter(box.message_ids).items() if n > 1] == []
    finally:
        await app.close()
        await _delete_topology(app, rabbitmq_url)
    assert servicebus_peer.management_settlements == 0


async def _servicebus_caught_up(app: App) -> bool:
    head, _, servicebus_sent = await _positions(app)
    return servicebus_sent == head


async def _both_caught_up(app: App) -> bool:
    """Both relays saved the store's head as their position (each saves at most every
    0.25 s)."""
    head, rabbitmq_sent, servicebus_sent = await _positions(app)
    return rabbitmq_sent == servicebus_sent == head


async def _register(app: App, count: int, start: int = 0) -> list[str]:
    return [await app.marketplace.register_musician(
        email=f"m{n}@musicos.example", name=f"Musician {n}", genres=["Jazz"], location="Lima")
        for n in range(start, start + count)]


async def _welcomed_at_least(app: App, count: int) -> bool:
    return await _welcomed(app) >= count


async def _welcomed(app: App) -> int:
    return sum(s.notification.kind == "welcome"
               for s in await app.notifier.sent(limit=100_000))


async def test_a_broker_down_for_a_while_delays_only_its_own_messages(
        rabbitmq_url: str, servicebus_peer: ServiceBusPeer, unique_name: str,
        tmp_path: Path) -> None:
    proxy = TcpProxy(rabbitmq_url)
    through_proxy = await proxy.start()
    app = await _open(_settings(tmp_path, f"{through_proxy},{servicebus_peer.connection_string}",
                                unique_name), servicebus_peer)
    try:
        await app.start()
        await _register(app, 3)
        await eventually(lambda: _welcomed_at_least(app, 3), 30)
        await proxy.close()  # RabbitMQ is gone
        await _register(app, 5, start=3)
        # Service Bus delivers them; the RabbitMQ relay stays behind.
        await eventually(lambda: _welcomed_at_least(app, 8), 30)
        await eventually(lambda: _servicebus_caught_up(app), 10)  # saved every 0.25 s
        head, rabbitmq_sent, servicebus_sent = await _positions(app)
        assert servicebus_sent == head > rabbitmq_sent
        await proxy.start(proxy.listening_port)  # RabbitMQ is back
        await app.settle(60)
        await eventually(lambda: _both_caught_up(app), 10)
        assert await _welcomed(app) == 8
        assert await app.transport.dead_letters() == []
    finally:
        await app.close()
        await proxy.close()
        await _delete_topology(app, rabbitmq_url)


async def test_a_broker_down_at_start_is_started_when_it_answers(
        rabbitmq_url: str, servicebus_peer: ServiceBusPeer, unique_name: str,
        tmp_path: Path) -> None:
    proxy = TcpProxy(rabbitmq_url)
    through_proxy = await proxy.start()
    await proxy.close()  # nothing listens where RabbitMQ is expected
    app = await _open(_settings(tmp_path, f"{through_proxy},{servicebus_peer.connection_string}",
                                unique_name), servicebus_peer)
    try:
        await app.start()
        await _register(app, 4)
        await eventually(lambda: _welcomed_at_least(app, 4), 30)
        _, rabbitmq_sent, _ = await _positions(app)
        assert rabbitmq_sent == 0
        await proxy.start(proxy.listening_port)
        await app.settle(60)
        await eventually(lambda: _both_caught_up(app), 10)
        rabbitmq, _ = _parts(app)
        assert rabbitmq.consumer is not None and rabbitmq.consumer.delivered >= 4
        assert await _welcomed(app) == 4
    finally:
        await app.close()
        await proxy.close()
        await _delete_topology(app, rabbitmq_url)
