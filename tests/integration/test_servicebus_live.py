"""The Service Bus transport in the situations a deployment meets, against the local peer
(marker `servicebus`, part of `make test`) and against a real namespace (marker
`servicebus_live`) when MUSSIKON_TEST_SERVICEBUS_CONNECTION names one whose key may manage
entities (skipped with that reason otherwise, also under MUSSIKON_REQUIRE_SERVICES=1): the
relay publishes and the consumer completes, a failure is dead-lettered with its reason and
a repeat dropped by MessageId; a message abandoned at a stop, handled by the next worker; a
retry scheduled through the namespace that then succeeds; a dead letter replayed; a .NET
service's message handled once; a worker killed mid-handler; a lock that runs out; a
handler that outlasts its lock, the lock renewed.

Each test provisions a topic of its own (`mussikon broker provision`'s code, locks of 5 s:
the service's minimum) and deletes it afterwards. Where the peer and the service differ, the
peer is wrong."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from mussikon.adapters.messaging.servicebus.entities import subscription_rules
from mussikon.adapters.messaging.servicebus.provisioning import EntitySettings, provision
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import Recorder, append, eventually, sample_event
from tests.integration.rabbitmq_worker import EFFECTS, SUBSCRIPTION, effect_writer
from tests.integration.servicebus_kit import peeked, send_as_dotnet
from tests.integration.test_servicebus_transport import counted

GOLDEN = Path(__file__).parent.parent / "golden"
ROOT = Path(__file__).resolve().parents[2]
LOCK = timedelta(seconds=5)
"""The subscriptions' lock: the service's minimum (and long enough for the SDK's
AutoLockRenewer, which looks once a second)."""
FAST: dict[str, Any] = {"retry_delays": (0.05,), "delayed_retry_delays": (1.0,),
                        "lease_seconds": 5.0, "poll_interval": 0.05, "poll_max_interval": 0.5,
                        "timeout": 30.0, "stop_grace": 5.0}
MUSICIANS = ["MusicianRegisteredEvent"]


class Deployment:
    """A store, the transports started on the namespace's topic, and the entities their
    subscriptions need, provisioned as `mussikon broker provision` does."""

    def __init__(self, connection: str, topic: str) -> None:
        self.connection, self.topic = connection, topic
        self.codec = EventCodec()
        self.store: EventStore = InMemoryEventStore(self.codec)
        self.documents: DocumentStore = InMemoryDocumentStore()
        self.transports: list[ServiceBusTransport] = []

    async def provision(self, subscriptions: Iterable[Subscription]) -> None:
        rules = subscription_rules(list(subscriptions), self.codec.event_types)
        await provision(self.connection, self.topic, rules, lambda line: None,
                        EntitySettings(lock_duration=LOCK))

    async def start(self, subscriptions: Iterable[Subscription], **options: Any
                    ) -> ServiceBusTransport:
        subscriptions = list(subscriptions)
        await self.provision(subscriptions)
        transport = ServiceBusTransport(self.connection, self.store, self.documents,
                                        self.codec, topic=self.topic, **(FAST | options))
        self.transports.append(transport)
        await transport.start(subscriptions)
        return transport

    async def stop(self, transport: ServiceBusTransport) -> None:
        self.transports.remove(transport)
        await transport.stop()

    async def close(self) -> None:
        for transport in list(self.transports):
            await self.stop(transport)


@pytest.fixture
async def deployment(servicebus_connection: str,
                     servicebus_topic: str) -> AsyncIterator[Deployment]:
    deployment = Deployment(servicebus_connection, servicebus_topic)
    try:
        yield deployment
    finally:
        await deployment.close()


async def test_published_events_are_consumed_failures_dead_lettered_repeats_dropped(
        deployment: Deployment) -> None:
    recorder = Recorder()  # no inbox: it counts every delivery
    transport = await deployment.start([recorder.subscription("musicians", MUSICIANS)])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    recorder.fail_for.add(str(events[0].id))
    await append(deployment.store, events)
    transport.wake()
    await eventually(lambda: len(recorder.effects) == 4, 60, what="four handled")
    # The relay's message for an event sent again: duplicate detection drops it.
    async with (ServiceBusClient.from_connection_string(deployment.connection) as client,
                client.get_topic_sender(deployment.topic) as sender):
        await sender.send_messages(ServiceBusMessage(
            deployment.codec.encode(events[1]), message_id=str(events[1].id),
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


async def test_a_message_abandoned_at_a_stop_comes_back_counted_and_is_handled_once(
        deployment: Deployment) -> None:
    """The handler fails and the message waits in the worker for an in-process retry an hour
    away when the worker stops: it is abandoned (its delivery count grows), and the next
    worker handles it once."""
    recorder = Recorder()
    subscription = recorder.subscription("musicians", MUSICIANS, deployment.documents)
    first = await deployment.start([subscription], retry_delays=(3600.0,))
    event = sample_event(MusicianRegisteredEvent)
    recorder.fail_for.add(str(event.id))
    await append(deployment.store, [event])
    first.wake()
    await eventually(lambda: recorder.calls[str(event.id)] == 1, 30, what="the first try")
    await deployment.stop(first)
    [message] = await peeked(deployment.connection, deployment.topic, "musicians")
    assert message.delivery_count == 1  # abandoned once, not completed nor dead-lettered

    recorder.fail_for.clear()
    second = await deployment.start([subscription])
    await eventually(lambda: recorder.effects[str(event.id)] == 1, 30, what="the handling")
    await second.wait_idle(30)
    assert recorder.calls[str(event.id)] == 2 and recorder.effects[str(event.id)] == 1
    assert await second.dead_letters() == []


async def test_a_retry_scheduled_through_the_namespace_succeeds(
        deployment: Deployment) -> None:
    """The handler fails its two tries in process: a copy is scheduled on the topic for the
    subscription alone, comes back after the delay, and is handled."""
    counted_before = counted()
    attempts: list[int] = []

    async def handle(envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        if envelope.attempt <= 2:
            raise ValueError("not yet")

    transport = await deployment.start([Subscription("musicians", frozenset(MUSICIANS),
                                                     handle)])
    await append(deployment.store, [sample_event(MusicianRegisteredEvent)])
    transport.wake()
    await eventually(lambda: len(attempts) == 3, 30, what="the scheduled copy's try")
    await transport.wait_idle(30)
    assert attempts == [1, 2, 3]
    moved_by = {name: value - counted_before[name] for name, value in counted().items()}
    assert moved_by == {"handled": 1, "failures": 2, "in_process": 1, "delayed": 1,
                        "dead_lettered": 0, "published": 1}
    assert await transport.dead_letters() == []


async def test_a_dead_letter_replayed_is_handled_once(deployment: Deployment) -> None:
    recorder = Recorder()
    transport = await deployment.start([recorder.subscription("musicians", MUSICIANS,
                                                              deployment.documents)],
                                       delayed_retry_delays=())
    event = sample_event(MusicianRegisteredEvent)
    recorder.fail_for.add(str(event.id))
    await append(deployment.store, [event])
    transport.wake()

    async def dead_lettered() -> bool:
        return bool(await transport.dead_letters())

    await eventually(dead_lettered, 30)
    [letter] = await transport.dead_letters()
    assert letter.message_id == str(event.id)
    [message] = await peeked(deployment.connection, deployment.topic, "musicians",
                             dead_letters=True)
    assert message.dead_letter_reason == "handler-failed"
    assert message.dead_letter_error_description.startswith(
        "ValueError: cannot handle MusicianRegisteredEvent")

    recorder.fail_for.clear()
    assert await transport.replay(letter.id)
    await eventually(lambda: recorder.effects[str(event.id)] == 1, 30, what="the replay")
    await transport.wait_idle(30)
    assert recorder.effects == {str(event.id): 1}
    assert recorder.calls[str(event.id)] == 3  # two tries, then the replayed copy
    assert await transport.dead_letters() == []


async def test_a_dotnet_message_sent_twice_is_recorded_once_and_handled_once(
        deployment: Deployment) -> None:
    recorder = Recorder()
    transport = await deployment.start([recorder.subscription("musicians", MUSICIANS,
                                                              deployment.documents)])
    body = (GOLDEN / "MusicianRegisteredEvent.json").read_bytes()
    await send_as_dotnet(deployment.connection, deployment.topic, body,
                         "MusicianRegisteredEvent", times=2)  # a new MessageId each
    await eventually(lambda: len(recorder.handled) == 1, 30, what="the event handled")
    await transport.wait_idle(30)
    event_id = uuid.UUID(json.loads(body)["Id"])
    stored = await deployment.store.find_event(event_id)
    assert stored is not None and stored.origin == "servicebus"
    assert recorder.effects == {str(event_id): 1}
    assert [r.event.id for r in await deployment.store.read_all(1, 10)] == [event_id]
    assert await transport.dead_letters() == []


async def test_a_worker_killed_mid_handler_has_its_message_redelivered_after_the_lock_once(
        deployment: Deployment, tmp_path: Path) -> None:
    """A worker process is killed (SIGKILL) while its handler runs: nothing settles the
    message nor renews its lock, so the namespace delivers it again once the lock ran out,
    to the next worker, which handles it; every event has one effect."""
    path = str(tmp_path / "worker.db")
    db = await SqliteDatabase(path).open()
    deployment.store = store = SqliteEventStore(db)
    deployment.documents = documents = SqliteDocumentStore(db)
    await deployment.provision([effect_writer(documents)])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(store, events)
    victim = str(events[2].id)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.servicebus_worker", path,
        deployment.connection, victim, deployment.topic, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 30)
        assert line.decode().strip() == f"handling {victim}"
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    killed_at = time.monotonic()
    assert await documents.get(EFFECTS, victim) is None

    calls: Counter[str] = Counter()
    writer = effect_writer(documents)

    async def count(envelope: Envelope) -> None:
        calls[envelope.message_id] += 1
        await writer.handler(envelope)

    survivor = await deployment.start([Subscription(writer.name, writer.event_types, count)])
    await eventually(lambda: calls[victim] == 1, 30, what="the victim delivered again")
    # Not at once: the killed worker's lock holds it (renewed until the kill, it runs out
    # between a quarter and the whole of its term after).
    assert time.monotonic() - killed_at > LOCK.total_seconds() / 4
    await survivor.wait_idle(30)
    await deployment.stop(survivor)
    assert calls[victim] == 1
    assert sorted(key for key, _ in await documents.scan(EFFECTS)) == sorted(
        str(e.id) for e in events)
    for event in events:
        assert await documents.has_seen(SUBSCRIPTION, str(event.id))
    await db.close()


async def test_a_message_received_and_not_renewed_comes_back_after_its_lock(
        deployment: Deployment) -> None:
    """A receiver takes a message and neither settles it nor renews its lock: the namespace
    delivers it again once the lock ran out, its delivery count 2. The AMQP header carries the
    deliveries before this one (the service's DeliveryCount less one: the .NET SDK adds the
    one, this SDK's `delivery_count` is the header's), so 0, then 1."""
    await provision(deployment.connection, deployment.topic, {"probe": frozenset({"Probe"})},
                    lambda line: None, EntitySettings(lock_duration=LOCK))
    message_id = str(uuid.uuid4())
    async with ServiceBusClient.from_connection_string(deployment.connection) as client:
        async with client.get_topic_sender(deployment.topic) as sender:
            await sender.send_messages(ServiceBusMessage("{}", message_id=message_id,
                                                         subject="Probe"))
        async with client.get_subscription_receiver(deployment.topic, "probe") as receiver:
            [first] = await receiver.receive_messages(1, max_wait_time=30)
            received_at = time.monotonic()
            assert (first.message_id, first.delivery_count) == (message_id, 0)
            again = await receiver.receive_messages(1, max_wait_time=3 * LOCK.total_seconds())
            waited = time.monotonic() - received_at
            assert [(m.message_id, m.delivery_count) for m in again] == [(message_id, 1)]
            assert waited > LOCK.total_seconds() * 0.8, waited
            await receiver.complete_message(again[0])
    assert await peeked(deployment.connection, deployment.topic, "probe") == []


async def test_a_handler_running_past_its_lock_keeps_its_message(
        deployment: Deployment) -> None:
    """A handler takes longer than the message's lock: the consumer has the lock renewed
    (from a third of its term on), so the message is not delivered again meanwhile and is
    completed once, by the one handler that ran."""
    lock = LOCK.total_seconds()
    calls: list[float] = []
    done: list[float] = []

    async def slow(envelope: Envelope) -> None:
        calls.append(time.monotonic())
        await asyncio.sleep(lock * 1.6)  # the handler's work, past the lock's term
        done.append(time.monotonic())

    transport = await deployment.start([Subscription("slow", frozenset(MUSICIANS), slow)])
    await append(deployment.store, [sample_event(MusicianRegisteredEvent)])
    transport.wake()
    await eventually(lambda: len(done) == 1, 60, what="the slow handler to finish")
    await transport.wait_idle(60)
    assert len(calls) == 1 and done[0] - calls[0] >= lock * 1.6
    assert await transport.dead_letters() == []
    assert await peeked(deployment.connection, deployment.topic, "slow") == []
