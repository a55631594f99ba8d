"""The broker given as a list of nodes (`amqp://n1,amqp://n2`): the transport connects to the
first that answers and, when its node goes away, goes on through the next one, losing no
message and doubling no effect. Two proxies in front of the one broker play two nodes of a
cluster: closing one is that node dying (its connections cut, new ones refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mussikon.domain.events import MusicianRegisteredEvent
from tests.integration.rabbitmq_kit import (
    BrokerNamespace,
    Recorder,
    append,
    eventually,
    sample_event,
)
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

MUSICIANS = ["MusicianRegisteredEvent"]


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


@pytest.fixture
async def nodes(rabbitmq_url: str) -> AsyncIterator[list[TcpProxy]]:
    proxies = [TcpProxy(rabbitmq_url), TcpProxy(rabbitmq_url)]
    yield proxies
    for proxy in proxies:
        await proxy.close()


async def test_a_lost_node_is_left_for_the_next_one_and_nothing_is_lost_or_doubled(
        broker: BrokerNamespace, nodes: list[TcpProxy]) -> None:
    first, second = [await node.start() for node in nodes]
    recorder = Recorder(delay=0.002)
    transport = broker.transport(url=f"{first},{second}", relay_batch_size=50, prefetch=20)
    store, documents = transport.store, transport.documents
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    assert transport.broker.node_url == first
    assert (nodes[0].accepted, nodes[1].accepted) == (1, 0)

    events = [sample_event(MusicianRegisteredEvent, n) for n in range(300)]
    await append(store, events)
    transport.wake()
    await eventually(lambda: len(recorder.handled) >= 100, 30, what="100 events handled")
    await nodes[0].close()  # the first node dies mid-stream and stays down

    await transport.wait_idle(60)
    assert transport.broker.node_url == second
    assert transport.broker.reconnections == 1
    assert set(recorder.effects) == {str(e.id) for e in events}
    assert max(recorder.effects.values()) == 1


async def test_a_first_node_down_at_start_is_passed_over(
        broker: BrokerNamespace, nodes: list[TcpProxy]) -> None:
    first, second = [await node.start() for node in nodes]
    await nodes[0].close()  # refuses connections from the start
    recorder = Recorder()
    transport = broker.transport(url=f"{first},{second}")
    await transport.start([recorder.subscription("welcome", MUSICIANS, transport.documents)])
    assert transport.broker.node_url == second

    events = [sample_event(MusicianRegisteredEvent, n) for n in range(20)]
    await append(transport.store, events)
    transport.wake()
    await transport.wait_idle(30)
    assert set(recorder.effects) == {str(e.id) for e in events}


async def test_after_a_loss_the_next_node_is_tried_first_then_round_again(
        broker: BrokerNamespace, nodes: list[TcpProxy]) -> None:
    first, second = [await node.start() for node in nodes]
    transport = broker.transport(url=f"{first},{second}", relay=False)
    await transport.start([])
    nodes[0].cut()  # a network blip: the first node is still there
    await eventually(lambda: transport.broker.reconnections == 1, 30, what="a reconnection")
    assert transport.broker.node_url == second
    nodes[1].cut()
    await eventually(lambda: transport.broker.reconnections == 2, 30, what="a second one")
    assert transport.broker.node_url == first
