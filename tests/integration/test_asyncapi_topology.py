"""The AsyncAPI document against what the transports really make: on RabbitMQ the exchanges,
queues (arguments included) and bindings the transport declares when it connects, and a
message published with each binding key of the document lands in the queue the document
says; on Service Bus the topic, subscriptions and rules `mussikon broker provision` creates
on the local peer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mussikon.bootstrap import open_app, provision_broker
from mussikon.config import Settings
from mussikon.entrypoints.asyncapi import asyncapi_document
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.polling import eventually
from tests.servicebus_peer import ServiceBusPeer
from tests.servicebus_peer.broker import Topic


@dataclass
class Declared:
    exchanges: set[tuple[str, str, bool]] = field(default_factory=set)
    queues: dict[str, tuple[bool, dict[str, Any]]] = field(default_factory=dict)
    bindings: set[tuple[str, str, str]] = field(default_factory=set)


class RecordingChannel:
    """A channel that notes each declaration before making it on the broker."""

    def __init__(self, channel: Any, declared: Declared) -> None:
        self.channel, self.declared = channel, declared

    def exchange_declare(self, name: str, *, exchange_type: str, durable: bool) -> Any:
        self.declared.exchanges.add((name, exchange_type, durable))
        return self.channel.exchange_declare(name, exchange_type=exchange_type, durable=durable)

    def queue_declare(self, name: str, *, durable: bool, arguments: dict[str, Any]) -> Any:
        self.declared.queues[name] = (durable, dict(arguments))
        return self.channel.queue_declare(name, durable=durable, arguments=arguments)

    def queue_bind(self, queue: str, exchange: str, *, routing_key: str) -> Any:
        self.declared.bindings.add((queue, exchange, routing_key))
        return self.channel.queue_bind(queue, exchange, routing_key=routing_key)


def in_document(document: dict[str, Any]) -> Declared:
    """The RabbitMQ exchanges, queues and bindings the document describes."""
    described = Declared()
    for channel in document["channels"].values():
        amqp = channel.get("bindings", {}).get("amqp")
        if amqp is None:
            continue
        if amqp["is"] == "routingKey":
            exchange = amqp["exchange"]
            described.exchanges.add((exchange["name"], exchange["type"], exchange["durable"]))
            continue
        queue = amqp["queue"]
        described.queues[queue["name"]] = (queue["durable"], channel["x-amqp-queue-arguments"])
        for bound in channel["x-amqp-bindings"]:
            described.exchanges.add((bound["exchange"], bound["exchangeType"], True))
            described.bindings.add((queue["name"], bound["exchange"], bound["routingKey"]))
    return described


@pytest.mark.rabbitmq
async def test_the_document_is_the_topology_the_rabbitmq_transport_declares(
        rabbitmq_url: str, unique_name: str) -> None:
    prefix = f"{unique_name}."
    settings = Settings(store_url="memory://", broker_url=rabbitmq_url, rabbitmq_prefix=prefix,
                        rabbitmq_retry_delays="1,10")
    document = await asyncapi_document(settings)
    namespace = BrokerNamespace(rabbitmq_url, prefix)
    declared = Declared()
    app = await open_app(settings)
    try:
        transport: Any = namespace.track(app.transport)  # type: ignore[arg-type]
        declare: Callable[..., Awaitable[None]] = transport.topology.declare

        async def recording(channel: Any, *args: Any) -> None:
            await declare(RecordingChannel(channel, declared), *args)

        transport.topology.declare = recording
        await app.open_for_operations()  # connects, which declares the topology

        described = in_document(document)
        assert described.exchanges == declared.exchanges
        assert described.queues == declared.queues
        assert described.bindings == declared.bindings
        assert len(declared.queues) == 15 + 2 + 1  # every event type, the retries, the dlq

        # What the broker does with them: each key of the document reaches its queue.
        channel = await namespace.channel()
        events = {(q, e, k) for q, e, k in described.bindings if e == f"{prefix}mussikon.events"}
        assert len(events) == 30
        for queue, exchange, key in sorted(events):
            await channel.basic_publish(f"{queue}|{key}".encode(), exchange=exchange,
                                        routing_key=key)
        expected = {queue: sorted(f"{queue}|{k}" for q, _, k in events if q == queue)
                    for queue, _, _ in events}
        received: dict[str, list[str]] = {queue: [] for queue in expected}

        async def all_arrived() -> bool:
            for queue in expected:
                message = await channel.basic_get(queue, no_ack=True)
                if message.delivery_tag is not None:
                    received[queue].append(message.body.decode())
            return all(sorted(received[q]) == expected[q] for q in expected)

        await eventually(all_arrived, 10)
        publishing = {op["channel"]["$ref"].rsplit("/", 1)[1]
                      for key, op in document["operations"].items()
                      if key.startswith("rabbitmq.send.") and "Event" in key}
        routing_keys = {document["channels"][name.replace("~1", "/")]["address"]
                        for name in publishing}
        assert routing_keys <= {k for _, _, k in events}  # what we publish with is bound
    finally:
        await app.close()
        await namespace.cleanup()


@pytest.mark.servicebus
async def test_the_document_is_what_broker_provision_creates_on_service_bus(
        servicebus_peer: ServiceBusPeer) -> None:
    settings = Settings(store_url="memory://", broker_url=servicebus_peer.connection_string,
                        servicebus_topic="asyncapi-events", servicebus_lock_duration=30)
    document = await asyncapi_document(settings)
    lines: list[str] = []
    await provision_broker(settings, lines.append)
    topic = servicebus_peer._targets["asyncapi-events"]
    assert isinstance(topic, Topic)

    described = document["channels"]["servicebus.topic"]
    assert described["address"] == "asyncapi-events"
    assert topic.options.duplicate_detection_window == 600
    assert described["x-servicebus-entity"]["duplicateDetectionHistoryTimeWindow"] == "PT600S"
    subscriptions = {channel["x-servicebus-entity"]["name"]: channel
                     for key, channel in document["channels"].items()
                     if key.startswith("servicebus.subscription.")}
    assert {name.lower() for name in subscriptions} == set(topic.subscriptions)
    for name, channel in subscriptions.items():
        made = topic.subscriptions[name.lower()]
        entity = channel["x-servicebus-entity"]
        assert channel["address"] == f"asyncapi-events/Subscriptions/{name}"
        assert {rule["name"]: rule["sqlFilter"] for rule in entity["rules"]} == {
            rule: sql.expression for rule, sql in made.rules.items()}
        assert made.options.max_delivery_count == entity["maxDeliveryCount"] == 10
        assert made.options.lock_duration == 30 and entity["lockDuration"] == "PT30S"
        for event_type in channel["messages"]:
            assert f"'{event_type}'" in entity["rules"][0]["sqlFilter"]
