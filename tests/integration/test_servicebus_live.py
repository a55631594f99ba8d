"""The core Service Bus scenarios against a real namespace: publish through the relay and
consume, dead-lettering with the reason, duplicate suppression by MessageId, and a lock that
runs out. Run only when MUSSIKON_TEST_SERVICEBUS_CONNECTION names a namespace whose key may
manage entities (skipped with that reason otherwise, also under MUSSIKON_REQUIRE_SERVICES=1);
each run creates a topic of its own and deletes it afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import Recorder, append, eventually, sample_event

pytestmark = pytest.mark.servicebus_live

CONNECTION = "MUSSIKON_TEST_SERVICEBUS_CONNECTION"
FAST = {"retry_delays": (0.05,), "delayed_retry_delays": (1.0,), "lease_seconds": 5.0,
        "poll_interval": 0.05, "poll_max_interval": 0.5, "stop_grace": 5.0}


@pytest.fixture
def servicebus_connection() -> str:
    """The real namespace's connection string; skipped without it, whatever
    MUSSIKON_REQUIRE_SERVICES says (a cloud account is not a local service)."""
    connection = os.environ.get(CONNECTION)
    if not connection:
        pytest.skip(f"{CONNECTION} is not set (a real Service Bus namespace)")
    return connection


@pytest.fixture
async def live_topic(servicebus_connection: str) -> AsyncIterator[str]:
    """A topic of this run's own, with duplicate detection, deleted afterwards."""
    # Here, not at the top: the asyncio administration client needs aiohttp.
    from azure.servicebus.aio.management import ServiceBusAdministrationClient

    name = f"mussikon-test-{uuid.uuid4().hex[:12]}"
    async with ServiceBusAdministrationClient.from_connection_string(
            servicebus_connection) as admin:
        await admin.create_topic(name, requires_duplicate_detection=True)
        try:
            yield name
        finally:
            await admin.delete_topic(name)


async def provision(connection: str, topic: str, subscription: str, subjects: frozenset[str],
                    lock_seconds: int = 5) -> None:
    from datetime import timedelta

    from azure.servicebus.aio.management import ServiceBusAdministrationClient
    from azure.servicebus.management import SqlRuleFilter

    async with ServiceBusAdministrationClient.from_connection_string(connection) as admin:
        await admin.create_subscription(topic, subscription, max_delivery_count=10,
                                        lock_duration=timedelta(seconds=lock_seconds))
        await admin.delete_rule(topic, subscription, "$Default")
        listed = ", ".join(f"'{s}'" for s in sorted(subjects))
        await admin.create_rule(topic, subscription, "mussikon",
                                filter=SqlRuleFilter(f"sys.Label IN ({listed})"))


async def test_published_events_are_consumed_failures_dead_lettered_repeats_dropped(
        servicebus_connection: str, live_topic: str) -> None:
    codec = EventCodec()
    store, documents = InMemoryEventStore(codec), InMemoryDocumentStore()
    recorder = Recorder()  # no inbox: it counts every delivery
    subscription = recorder.subscription("musicians", ["MusicianRegisteredEvent"])
    for name, subjects in subscription_rules([subscription], codec.event_types).items():
        await provision(servicebus_connection, live_topic, name, subjects)
    transport = ServiceBusTransport(servicebus_connection, store, documents, codec,
                                    topic=live_topic, **FAST)  # type: ignore[arg-type]
    await transport.start([subscription])
    try:
        events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
        recorder.fail_for.add(str(events[0].id))
        await append(store, events)
        transport.wake()
        await eventually(lambda: len(recorder.effects) == 4, 60, what="four handled")
        # The relay's message for an event sent again: duplicate detection drops it.
        async with (ServiceBusClient.from_connection_string(servicebus_connection) as client,
                    client.get_topic_sender(live_topic) as sender):
            await sender.send_messages(ServiceBusMessage(
                codec.encode(events[1]), message_id=str(events[1].id),
                subject="MusicianRegisteredEvent"))

        async def dead_lettered() -> bool:
            return len(await transport.dead_letters()) == 1

        await eventually(dead_lettered, 60)
        await transport.wait_idle(60)
        [letter] = await transport.dead_letters()
        assert letter.message_id == str(events[0].id)
        assert letter.reason.startswith("handler-failed: ValueError")
        assert recorder.effects == {str(e.id): 1 for e in events[1:]}
        assert recorder.calls[str(events[1].id)] == 1
    finally:
        await transport.stop()
