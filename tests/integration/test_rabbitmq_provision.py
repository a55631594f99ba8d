"""`mussikon broker provision` on RabbitMQ declares the transport's exchanges and queues and
says what it declared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.command_line import environment, mussikon
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.servicebus_peer import ServiceBusPeer

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    # Not started: it names the topology the command declares, for the test and the cleanup.
    namespace.transport(relay=False, delayed_retry_delays=(0.2, 0.4))
    yield namespace
    await namespace.cleanup()


async def test_provision_declares_the_topology(broker: BrokerNamespace, tmp_path: Path) -> None:
    result = mussikon("broker", "provision", cwd=tmp_path, env=environment(
        broker_url=broker.url, store_url="memory://", rabbitmq_prefix=broker.prefix,
        rabbitmq_retry_delays="0.2,0.4"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    topology = broker.transports[0].topology
    assert f"declared exchange {topology.events_exchange} (topic)" in lines
    assert f"declared queue {topology.queue('MusicianRegisteredEvent')}, bound by 2 keys" in lines
    assert lines[-1].endswith("declared (RabbitMQ keeps what exists; the worker declares the "
                              "same at every connect)")
    assert "guest:guest" not in result.stdout
    channel = await broker.channel()
    for queue in topology.event_queues():
        await channel.queue_declare(queue, passive=True)  # fails if it was not declared


@pytest.mark.servicebus
def test_provision_provisions_each_broker_of_a_list(broker: BrokerNamespace, tmp_path: Path,
                                                    servicebus_peer: ServiceBusPeer) -> None:
    result = mussikon("broker", "provision", cwd=tmp_path, env=environment(
        broker_url=f"{broker.url},{servicebus_peer.connection_string}", store_url="memory://",
        rabbitmq_prefix=broker.prefix, rabbitmq_retry_delays="0.2,0.4"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    topology = broker.transports[0].topology
    assert f"declared exchange {topology.events_exchange} (topic)" in lines
    assert "created topic mussikon-events (duplicate detection 600 s)" in lines
    assert lines[-1].endswith(" changes made")
    assert "mussikon-events" in servicebus_peer.topics()
