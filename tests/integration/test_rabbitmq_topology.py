"""The topology as the broker holds it: names, types, durability, arguments and bindings, declared
idempotently, and the specification's own declarations accepted on classic queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelPreconditionFailed

from mussikon.adapters.messaging.rabbitmq import QueueType, Topology
from tests.integration.rabbitmq_kit import BrokerNamespace, pika_channel
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq

SPECIFICATION_QUEUES = ["musician.registered", "event.created", "application.submitted",
                        "contract.signed", "payment.processed"]


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_start_declares_exactly_the_topology(broker: BrokerNamespace,
                                                   queue_type: QueueType) -> None:
    transport = broker.transport(queue_type=queue_type)
    await transport.start([])
    await transport.start([])  # a second declaration changes nothing and fails nothing
    topology = transport.topology
    p = broker.prefix

    # Redeclaring with the expected type, durability and arguments succeeds only if the
    # broker holds exactly that (any difference is PRECONDITION_FAILED).
    channel = await broker.channel()
    for exchange in topology.exchanges():
        await channel.exchange_declare(exchange.name, exchange_type=exchange.type, durable=True)
    for queue in topology.queues():
        ok = await channel.queue_declare(queue.name, durable=True,
                                         arguments=dict(queue.arguments))
        assert ok.message_count == 0
    assert {e.name: e.type for e in topology.exchanges()}[f"{p}mussikon.events"] == "topic"
    assert {e.name: e.type for e in topology.exchanges()}[
        f"{p}mussikon.notifications"] == "direct"
    with pytest.raises(ChannelPreconditionFailed):
        await channel.exchange_declare(f"{p}mussikon.events", exchange_type="direct",
                                       durable=True)

    # Each queue is bound to the events exchange by its own name: a message published with
    # that key lands in that queue and in no other.
    channel = await broker.channel()
    queues = [f"{p}{name}" for name in SPECIFICATION_QUEUES]
    assert all(q in topology.event_queues() for q in queues)
    keys = [topology.routing_key(t) for t in topology.event_types]
    for key in keys:
        await channel.basic_publish(key.encode(), exchange=f"{p}mussikon.events",
                                    routing_key=key)

    async def every_queue_holds_one() -> bool:
        return all([(await channel.queue_declare(f"{p}{key}", passive=True)).message_count == 1
                    for key in keys])

    await eventually(every_queue_holds_one)
    for key in keys:
        message = await channel.basic_get(f"{p}{key}", no_ack=True)
        assert message.body == key.encode()
        assert (await channel.queue_declare(f"{p}{key}", passive=True)).message_count == 0


async def test_queue_types_are_what_was_configured(broker: BrokerNamespace) -> None:
    quorum = broker.transport(queue_type="quorum")
    await quorum.start([])
    channel = await broker.channel()
    name = f"{broker.prefix}contract.signed"
    [spec] = [q for q in quorum.topology.queues() if q.name == name]
    # Redeclared with every argument but a classic type, the queue refuses: it is quorum.
    with pytest.raises(ChannelPreconditionFailed, match="x-queue-type"):
        await channel.queue_declare(name, durable=True,
                                    arguments={**spec.arguments, "x-queue-type": "classic"})


async def test_a_dotnet_service_can_declare_the_classic_topology_too(
        broker: BrokerNamespace) -> None:
    transport = broker.transport(queue_type="classic")
    await transport.start([])
    p = broker.prefix

    def declare_as_the_specification_does() -> list[str]:
        """Declare and bind as the specification's `SetupQueues` does (PRECONDITION_FAILED, if
        anything differed from ours), then publish one message with each queue's key."""
        connection, channel = pika_channel(broker.url)
        try:
            channel.confirm_delivery()  # an unroutable message raises
            channel.exchange_declare(f"{p}mussikon.events", "topic", durable=True)
            channel.exchange_declare(f"{p}mussikon.notifications", "direct", durable=True)
            declared = []
            for name in SPECIFICATION_QUEUES:
                ok = channel.queue_declare(f"{p}{name}", durable=True, exclusive=False,
                                           auto_delete=False)
                declared.append(ok.method.queue)
                channel.queue_bind(f"{p}{name}", f"{p}mussikon.events", name)
                channel.basic_publish(f"{p}mussikon.events", name, name.encode(),
                                      mandatory=True)
            return declared
        finally:
            connection.close()

    declared = await asyncio.to_thread(declare_as_the_specification_does)
    # The specification's queues are the ones we consume, and its messages land in them.
    assert set(declared) <= set(transport.topology.event_queues())
    channel = await broker.channel()
    for queue, name in zip(declared, SPECIFICATION_QUEUES, strict=True):
        message = await channel.basic_get(queue, no_ack=True)
        assert message.body == name.encode()


async def test_retry_queues_send_messages_back_to_their_queue_after_the_delay(
        broker: BrokerNamespace) -> None:
    transport = broker.transport(delayed_retry_delays=(0.2,))
    await transport.start([])
    stage = transport.topology.retry_stages[0]
    queue = transport.topology.queue("ContractSignedEvent")
    channel = await broker.channel()
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await channel.basic_publish(b"later", exchange=stage.exchange, routing_key=queue)
    came_back: list[DeliveredMessage] = []

    async def back_in_its_queue() -> bool:
        message = await channel.basic_get(queue, no_ack=True)
        came_back.extend([message] if message.delivery_tag is not None else [])
        return bool(came_back)

    await eventually(back_in_its_queue, 5)
    assert loop.time() - sent_at >= 0.2 * 0.9  # not before its delay (timers are coarse)
    assert [m.body for m in came_back] == [b"later"]
    # Back in its own queue only, not in the other event queues.
    other = transport.topology.queue("PaymentProcessedEvent")
    assert (await channel.queue_declare(other, passive=True)).message_count == 0


def test_topology_type_is_importable_from_the_package() -> None:
    assert Topology(["ContractSignedEvent"]).queue_type == "quorum"


async def test_both_dotnet_routing_key_styles_reach_the_queue_after_every_declaration(
        broker: BrokerNamespace) -> None:
    """`RabbitMQService` publishes with the queue's name, the exercise's `EventBus` with
    `EventType.ToLower()`: pika publishing both ways fills the same queue."""
    transport = broker.transport()
    await transport.start([])
    await transport.start([])  # declared again: the bindings are still there, once each
    p = broker.prefix
    queue = f"{p}musician.registered"

    def publish_both_ways() -> None:
        connection, channel = pika_channel(broker.url)
        try:
            channel.confirm_delivery()
            for key in ("musician.registered", "musicianregisteredevent"):
                channel.basic_publish(f"{p}mussikon.events", key, key.encode(),
                                      mandatory=True)
        finally:
            connection.close()

    await asyncio.to_thread(publish_both_ways)
    channel = await broker.channel()

    async def both_arrived() -> bool:
        return (await channel.queue_declare(queue, passive=True)).message_count == 2

    await eventually(both_arrived)
    bodies = {(await channel.basic_get(queue, no_ack=True)).body for _ in range(2)}
    assert bodies == {b"musician.registered", b"musicianregisteredevent"}
