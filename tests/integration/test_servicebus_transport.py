"""The Service Bus transport through the official SDK against the local peer: the relay
publishes the store's global order to the topic in batches, each subscription receives
only its event types, completes after its handler, retries, schedules a copy, dead-letters
with the reason (a .NET service's message, recorded once and handled: test_servicebus_live); a
malformed body is dead-lettered at once. No ordinary settle goes through `$management`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from prometheus_client.parser import text_string_to_metric_families

from mussikon import metrics
from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.relay import RELAY
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import ContractSignedEvent, MusicianRegisteredEvent
from mussikon.followers.unpublishable import UNPUBLISHABLE_EVENTS
from mussikon.ports.transport import Subscription
from mussikon.wire import EventCodec
from tests.fakes import UnavailableAtFirst
from tests.integration.rabbitmq_kit import Recorder, append, eventually, sample_event
from tests.servicebus_peer import EntityOptions, ServiceBusPeer

pytestmark = pytest.mark.servicebus

TOPIC = "mussikon-events"
FAST: dict[str, Any] = {"retry_delays": (0.01,), "delayed_retry_delays": (0.3,),
                        "lease_seconds": 1.5, "poll_interval": 0.02, "poll_max_interval": 0.2,
                        "timeout": 10.0, "stop_grace": 5.0}


class Bus:
    """A store, a transport on the peer, and the entities its subscriptions need."""

    def __init__(self, peer: ServiceBusPeer) -> None:
        self.peer = peer
        self.codec = EventCodec()
        self.store, self.documents = InMemoryEventStore(self.codec), InMemoryDocumentStore()
        self.transport: ServiceBusTransport | None = None

    async def start(self, subscriptions: Iterable[Subscription], **options: Any
                    ) -> ServiceBusTransport:
        subscriptions = list(subscriptions)
        self.provision(subscriptions)
        self.transport = ServiceBusTransport(self.peer.connection_string, self.store,
                                             self.documents, self.codec,
                                             **(FAST | options))
        await self.transport.start(subscriptions)
        return self.transport

    def provision(self, subscriptions: Iterable[Subscription]) -> None:
        """The topic and the subscriptions' entities, those not there yet."""
        if TOPIC not in self.peer.topics():
            self.peer.create_topic(TOPIC)
        existing = self.peer.subscriptions(TOPIC)
        for name, subjects in subscription_rules(list(subscriptions),
                                                 self.codec.event_types).items():
            if name.lower() not in existing:
                self.peer.create_subscription(TOPIC, name, set(subjects))

    async def dead_letters(self, subscription: str, count: int = 1) -> list[Any]:
        """Exactly `count` messages of the subscription's dead-letter sub-queue, once there."""
        letters: list[Any] = []

        async def there() -> bool:
            async with (ServiceBusClient.from_connection_string(self.peer.connection_string)
                        as c, c.get_subscription_receiver(
                            TOPIC, subscription, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as r):
                letters[:] = await r.peek_messages(50)
            return len(letters) >= count

        await eventually(there, 30, what=f"{count} dead letters in {subscription}")
        assert len(letters) == count
        return letters


@pytest.fixture
async def bus(servicebus_peer: ServiceBusPeer) -> AsyncIterator[Bus]:
    bus = Bus(servicebus_peer)
    yield bus
    if bus.transport is not None:
        await bus.transport.stop()
    assert servicebus_peer.management_settlements == 0


async def test_the_relay_publishes_and_each_subscription_gets_only_its_types(bus: Bus) -> None:
    musicians, contracts = Recorder(), Recorder()
    transport = await bus.start([
        musicians.subscription("musicians", ["MusicianRegisteredEvent"], bus.documents),
        contracts.subscription("contracts", ["ContractSignedEvent"], bus.documents)])
    registered = [sample_event(MusicianRegisteredEvent, n) for n in range(30)]
    signed = [sample_event(ContractSignedEvent, n) for n in range(5)]
    await append(bus.store, [*registered, *signed])
    transport.wake()
    await transport.wait_idle(30)
    assert sorted(e.message_id for e in musicians.handled) == sorted(str(e.id) for e in registered)
    assert sorted(e.message_id for e in contracts.handled) == sorted(str(e.id) for e in signed)
    assert all(e.position for e in musicians.handled)
    assert transport.relay is not None
    assert await transport.relay.position() == await bus.store.head_position()
    assert await bus.documents.checkpoint(RELAY) == await bus.store.head_position()


async def test_a_failing_handler_is_retried_then_scheduled_then_dead_lettered(bus: Bus) -> None:
    counted_before = counted()
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians",
                                                       ["MusicianRegisteredEvent"])])
    bad, good = sample_event(MusicianRegisteredEvent, 1), sample_event(MusicianRegisteredEvent, 2)
    recorder.fail_for.add(str(bad.id))
    await append(bus.store, [bad, good])
    transport.wake()
    [letter] = await bus.dead_letters("musicians")
    # Two tries in process, a scheduled copy, two tries again.
    assert recorder.calls[str(bad.id)] == 4
    assert [e.message_id for e in recorder.handled] == [str(good.id)]
    assert letter.dead_letter_reason == "handler-failed"
    assert letter.dead_letter_error_description.startswith(
        "ValueError: cannot handle MusicianRegisteredEvent")
    assert letter.dead_letter_error_description.endswith("(4 attempts)")
    await transport.wait_idle(30)
    # The same story in `/metrics`, on Service Bus.
    moved_by = {name: value - counted_before[name] for name, value in counted().items()}
    assert moved_by == {"handled": 1, "failures": 4, "in_process": 2, "delayed": 1,
                        "dead_lettered": 1, "published": 2}


def counted() -> dict[str, float]:
    """The counters of `/metrics` for the subscription "musicians" on Service Bus."""
    families = text_string_to_metric_families(metrics.exposition().decode())
    found = {(s.name, s.labels.get("subscription"), s.labels.get("kind")): s.value
             for family in families for s in family.samples
             if s.labels.get("broker") == "servicebus"}
    keys = {"handled": ("mussikon_messages_handled_total", "musicians", None),
            "failures": ("mussikon_handler_failures_total", "musicians", None),
            "in_process": ("mussikon_messages_retried_total", "musicians", "in_process"),
            "delayed": ("mussikon_messages_retried_total", "musicians", "delayed"),
            "dead_lettered": ("mussikon_messages_dead_lettered_total", "musicians", None),
            "published": ("mussikon_messages_published_total", None, None)}
    return {name: found.get(key, 0.0) for name, key in keys.items()}


async def test_a_malformed_body_is_dead_lettered_at_once(bus: Bus) -> None:
    recorder = Recorder()
    await bus.start([recorder.subscription("musicians", ["MusicianRegisteredEvent"])])
    async with (ServiceBusClient.from_connection_string(bus.peer.connection_string) as client,
                client.get_topic_sender(TOPIC) as sender):
        await sender.send_messages(ServiceBusMessage(b"not json",
                                                     subject="MusicianRegisteredEvent"))
    [letter] = await bus.dead_letters("musicians")
    assert letter.dead_letter_reason == "malformed"
    assert letter.dead_letter_error_description.startswith("WireFormatError")
    assert recorder.calls.total() == 0


async def test_dead_letters_are_listed_replayed_deleted_and_purged(bus: Bus) -> None:
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians",
                                                       ["MusicianRegisteredEvent"],
                                                       bus.documents)],
                                delayed_retry_delays=())
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(4)]
    recorder.fail_for.update(str(e.id) for e in events)
    await append(bus.store, events)
    transport.wake()
    await bus.dead_letters("musicians", 4)
    letters = await transport.dead_letters()
    assert sorted(letter.message_id for letter in letters) == sorted(str(e.id) for e in events)
    assert all(letter.subscription == "musicians" and letter.exception == "ValueError"
               and letter.reason.startswith("handler-failed: ValueError") for letter in letters)
    first, second, *rest = letters
    assert [x.id for x in await transport.dead_letters(limit=2, after=first.id)] == [
        second.id, rest[0].id]
    assert [x.id for x in await transport.dead_letters(limit=1)] == [first.id]
    found = await transport.find_dead_letter(rest[1].id)
    assert found is not None and found.message_id == rest[1].message_id
    for missing in ("musicians:999999", "musicians:x", "nobody:1"):
        assert await transport.find_dead_letter(missing) is None
        with pytest.raises(KeyError):
            await transport.dead_letters(after=missing)
    assert await transport.dead_letter_ids("mus", 2) == sorted(x.id for x in letters)[:2]
    assert await transport.dead_letter_ids(first.id, 5) == [first.id]
    assert await transport.dead_letter_ids("sagas", 5) == []
    recorder.fail_for.clear()
    assert await transport.replay(first.id)
    await eventually(lambda: recorder.effects[first.message_id] == 1, 30, what="the replay")
    await transport.delete_dead_letter(second.id)
    assert [x.id for x in await transport.dead_letters()] == [x.id for x in rest]
    with pytest.raises(KeyError):
        await transport.delete_dead_letter(second.id)
    assert await transport.purge_dead_letters() == 2
    assert await transport.dead_letters() == []


async def test_a_message_waits_for_the_store_rather_than_reach_its_max_delivery_count(
        bus: Bus) -> None:
    """The store cannot answer for a while (a database restarting) when a message arrives:
    the message waits in the consumer, its lock held, and is handled once the store is back.
    Abandoned instead, it would be dead-lettered after MaxDeliveryCount deliveries."""
    # A lock of Service Bus's usual length (at least 5 s there): the SDK's AutoLockRenewer
    # looks once a second and, for a 2 s lock (the fixture's), renews only in its last 0.75 s,
    # so it can miss it.
    bus.peer.create_topic(TOPIC, EntityOptions(lock_duration=30.0, max_delivery_count=3))
    store = bus.store = UnavailableAtFirst(bus.codec, failures=6)
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians",
                                                       ["MusicianRegisteredEvent"],
                                                       bus.documents)])
    event = sample_event(MusicianRegisteredEvent)
    await append(store, [event])
    transport.wake()
    await transport.wait_idle(30)

    assert store.failures == 0  # it did fail six times, twice the delivery limit
    assert recorder.effects == {str(event.id): 1}
    assert await transport.dead_letters() == []


async def test_an_event_too_large_for_a_message_is_passed_by_and_recorded(
        bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    """The topic takes messages of 256 KiB at most: an event larger than that is logged and
    recorded as unpublishable (reason `too-large`), and the events after it go on."""
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians",
                                                       ["MusicianRegisteredEvent"])])
    before, after = (sample_event(MusicianRegisteredEvent, n) for n in (1, 2))
    huge = sample_event(MusicianRegisteredEvent, 3, name="x" * (300 * 1024))
    await append(bus.store, [before, huge, after])
    transport.wake()
    await transport.wait_idle(30)
    assert [e.message_id for e in recorder.handled] == [str(before.id), str(after.id)]
    assert await bus.documents.checkpoint(RELAY) == 3
    [(key, record)] = await bus.documents.scan(UNPUBLISHABLE_EVENTS)
    assert key == f"{RELAY}:2"
    assert (record["event_id"], record["event_type"], record["position"], record["reason"]) == (
        str(huge.id), "MusicianRegisteredEvent", 2, "too-large")
    assert "at most 262144 bytes" in record["detail"]
    assert any(r.levelname == "ERROR" and str(huge.id) in r.getMessage()
               and "MusicianRegisteredEvent" in r.getMessage() for r in caplog.records)


async def test_a_consumer_whose_client_is_closed_under_it_stops_receiving_without_spinning(
        bus: Bus) -> None:
    """The client closed while the consumer still runs: its receivers answer at once, empty,
    then refuse. The receive loops back off, then end, and the event loop keeps its turns."""
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians",
                                                       ["MusicianRegisteredEvent"])])
    consumer = transport.consumer
    assert consumer is not None
    await transport.wait_idle(10)  # the receivers' links are open
    cpu = time.process_time()
    await asyncio.wait_for(transport.client.close(), 5)
    await eventually(lambda: all(loop.done() for loop in consumer._loops), 10,
                     what="the receive loops to end")
    assert time.process_time() - cpu < 2.0  # a spinning loop burns every second waited
    assert all(loop.exception() is None for loop in consumer._loops)

