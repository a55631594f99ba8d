"""The Service Bus transport through the official SDK against the local peer, in the
situations a deployment meets: a message abandoned at a stop, a relay that publishes again
after a crash (the topic's duplicate detection drops the repeat), a .NET service's event
that arrives before what it presupposes, the namespace going away and coming back, a
worker process killed mid-handler (two relays on one lease: test_servicebus_relay_fencing).
No ordinary settle goes through `$management`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from mussikon.adapters.messaging.servicebus.relay import RELAY
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.domain.events import ContractDraftedEvent, MusicianRegisteredEvent
from mussikon.ports.transport import Envelope, Subscription
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import Recorder, append, eventually, sample_event
from tests.integration.rabbitmq_worker import EFFECTS, SUBSCRIPTION, effect_writer
from tests.integration.test_rabbitmq_relay_fencing import StoreView
from tests.integration.test_servicebus_transport import FAST, TOPIC, Bus
from tests.servicebus_peer import EntityOptions, ServiceBusPeer

pytestmark = pytest.mark.servicebus

GOLDEN = Path(__file__).parent.parent / "golden"
ROOT = Path(__file__).resolve().parents[2]
LOCK = 5.0
"""Seconds of a lock where a killed worker's message must come back (long enough for the
SDK's AutoLockRenewer, see test_servicebus_transport)."""
MUSICIANS = ["MusicianRegisteredEvent"]


@pytest.fixture
async def bus(servicebus_peer: ServiceBusPeer) -> AsyncIterator[Bus]:
    bus = Bus(servicebus_peer)
    yield bus
    if bus.transport is not None:
        await bus.transport.stop()
    assert servicebus_peer.management_settlements == 0, "a settle fell back to $management"


async def peeked(peer: ServiceBusPeer, subscription: str) -> list[Any]:
    """The messages a subscription holds (available, locked or deferred)."""
    async with (ServiceBusClient.from_connection_string(peer.connection_string) as client,
                client.get_subscription_receiver(TOPIC, subscription) as receiver):
        return list(await receiver.peek_messages(50, sequence_number=1))


async def send_as_dotnet(peer: ServiceBusPeer, body: bytes, event_type: str) -> None:
    """As `ServiceBusEventService.PublishEventAsync` sends an event: a new GUID MessageId."""
    async with (ServiceBusClient.from_connection_string(peer.connection_string) as client,
                client.get_topic_sender(TOPIC) as sender):
        await sender.send_messages(ServiceBusMessage(
            body, content_type="application/json", message_id=str(uuid.uuid4()),
            subject=event_type, time_to_live=timedelta(hours=24),
            application_properties={"EventType": event_type, "Version": "1.0",
                                    "Timestamp": datetime.now(UTC)}))  # type: ignore[dict-item]


async def test_a_message_abandoned_at_a_stop_comes_back_counted_and_is_handled_once(
        bus: Bus) -> None:
    """The handler fails and the message waits in the worker for an in-process retry an hour
    away when the worker stops: it is abandoned (its delivery count grows), and the next
    worker handles it once."""
    recorder = Recorder()
    subscription = recorder.subscription("musicians", MUSICIANS, bus.documents)
    first = await bus.start([subscription], retry_delays=(3600.0,))
    event = sample_event(MusicianRegisteredEvent)
    recorder.fail_for.add(str(event.id))
    await append(bus.store, [event])
    first.wake()
    await eventually(lambda: recorder.calls[str(event.id)] == 1, 30, what="the first try")
    await first.stop()
    [message] = await peeked(bus.peer, "musicians")
    assert message.delivery_count == 1  # abandoned once, not completed nor dead-lettered

    recorder.fail_for.clear()
    bus.transport = second = await bus.start([subscription])
    await eventually(lambda: recorder.effects[str(event.id)] == 1, 30, what="the handling")
    await second.wait_idle(30)
    assert recorder.calls[str(event.id)] == 2 and recorder.effects[str(event.id)] == 1
    assert await second.dead_letters() == []


async def test_a_relay_crashing_before_its_checkpoint_publishes_again_and_the_topic_drops_it(
        bus: Bus) -> None:
    """The relay sends, then dies before it saves its position: the next relay sends the same
    events again from the saved position, and the topic's duplicate detection (MessageId is
    the event's id) drops them: each is delivered once."""
    bus.peer.create_topic(TOPIC, EntityOptions(lock_duration=5.0,
                                               duplicate_detection_window=600.0))
    shared = bus.documents
    view = StoreView(shared)
    view.hold_checkpoints()  # the crash comes before the position is saved
    bus.documents = view  # type: ignore[assignment]
    recorder = Recorder()  # no inbox: it counts every delivery
    subscription = recorder.subscription("musicians", MUSICIANS)
    bus.provision([subscription])
    first = await bus.start([])  # the relay alone: nothing consumes yet
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(bus.store, events)
    first.wake()
    await eventually(lambda: first.relay is not None and first.relay.published == 5,
                     what="the first relay's sends")
    relay = first.relay
    assert relay is not None and relay._task is not None
    relay._task.cancel()  # dies here: sent, position not saved
    await first.client.close()
    assert await shared.checkpoint(RELAY) == 0
    bus.transport = None

    bus.documents = shared
    second = await bus.start([subscription])
    await second.wait_idle(30)
    assert second.relay is not None and second.relay.published == 5  # sent again
    assert recorder.calls == {str(e.id): 1 for e in events}  # delivered once


async def test_a_dotnet_event_waits_for_what_it_presupposes_and_is_handled_once_it_arrives(
        bus: Bus) -> None:
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("contracts", ["ContractSignedEvent"],
                                                       bus.documents)],
                                delayed_retry_delays=(0.3,), prerequisite_wait=60.0)
    signed = (GOLDEN / "ContractSignedEvent.json").read_bytes()
    await send_as_dotnet(bus.peer, signed, "ContractSignedEvent")
    consumer = transport.consumer
    assert consumer is not None
    await eventually(lambda: consumer.delivered >= 3, 30, what="a few rounds of waiting")
    assert recorder.calls.total() == 0
    assert await transport.dead_letters() == []

    contract_id = json.loads(signed)["ContractId"]
    await append(bus.store, [sample_event(ContractDraftedEvent, contract_id=contract_id)])
    event_id = json.loads(signed)["Id"]
    await eventually(lambda: recorder.effects[event_id] == 1, 30, what="the signature handled")
    await transport.wait_idle(30)
    assert recorder.calls[event_id] == 1
    stored = await bus.store.find_event(uuid.UUID(event_id))
    assert stored is not None and stored.origin == "servicebus"
    assert await transport.dead_letters() == []


async def test_a_dotnet_event_whose_prerequisite_never_comes_is_dead_lettered_naming_it(
        bus: Bus) -> None:
    recorder = Recorder()
    await bus.start([recorder.subscription("contracts", ["ContractSignedEvent"])],
                    delayed_retry_delays=(0.2,), prerequisite_wait=0.5)
    signed = (GOLDEN / "ContractSignedEvent.json").read_bytes()
    await send_as_dotnet(bus.peer, signed, "ContractSignedEvent")
    [letter] = await bus.dead_letters("contracts")
    contract_id = json.loads(signed)["ContractId"]
    assert letter.dead_letter_reason == "prerequisite-missing"
    assert letter.dead_letter_error_description.endswith(
        f"not known: contract {contract_id} (ContractDraftedEvent)")
    assert recorder.calls.total() == 0
    assert await bus.store.find_event(uuid.UUID(json.loads(signed)["Id"])) is None


async def test_the_worker_carries_on_when_the_namespace_goes_away_and_comes_back(
        bus: Bus) -> None:
    """The peer stops (its connections close) and starts again on the same port, keeping its
    messages, while the worker runs: what was published before and after is handled, once."""
    bus.peer.create_topic(TOPIC, EntityOptions(lock_duration=5.0))
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians", MUSICIANS,
                                                       bus.documents)])
    before = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(bus.store, before)
    transport.wake()
    await eventually(lambda: len(recorder.effects) == 5, 30, what="the first five handled")

    bus.peer.stop()
    during = [sample_event(MusicianRegisteredEvent, n) for n in range(5, 10)]
    await append(bus.store, during)
    transport.wake()
    bus.peer.start()
    after = [sample_event(MusicianRegisteredEvent, n) for n in range(10, 15)]
    await append(bus.store, after)
    transport.wake()
    await eventually(lambda: len(recorder.effects) == 15, 60, what="all fifteen handled")
    await transport.wait_idle(30)
    assert recorder.effects == {str(e.id): 1 for e in [*before, *during, *after]}
    assert transport.relay is not None
    assert await bus.documents.checkpoint(RELAY) == await bus.store.head_position()


async def test_a_worker_killed_mid_handler_has_its_message_redelivered_after_the_lock_once(
        servicebus_peer: ServiceBusPeer, tmp_path: Path) -> None:
    """A worker process is killed (SIGKILL) while its handler runs: nothing settles the
    message nor renews its lock, so the namespace delivers it again once the lock ran out,
    to the next worker, which handles it; every event has one effect."""
    servicebus_peer.create_topic(TOPIC, EntityOptions(lock_duration=LOCK))
    path = str(tmp_path / "worker.db")
    db = await SqliteDatabase(path).open()
    store, documents = SqliteEventStore(db), SqliteDocumentStore(db)
    bus = Bus(servicebus_peer)
    bus.provision([effect_writer(documents)])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(store, events)
    victim = str(events[2].id)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.servicebus_worker", path,
        servicebus_peer.connection_string, victim, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 20)
        assert line.decode().strip() == f"handling {victim}"
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    killed_at = time.monotonic()
    assert await documents.get(EFFECTS, victim) is None

    calls: Counter[str] = Counter()
    writer = effect_writer(documents)

    async def counted(envelope: Envelope) -> None:
        calls[envelope.message_id] += 1
        await writer.handler(envelope)

    survivor = ServiceBusTransport(servicebus_peer.connection_string, store, documents,
                                   EventCodec(), **FAST)
    try:
        await survivor.start([Subscription(writer.name, writer.event_types, counted)])
        await eventually(lambda: calls[victim] == 1, 20, what="the victim delivered again")
        # Not at once: the killed worker's lock holds it (renewed until the kill, it runs
        # out between a quarter and the whole of its term after).
        assert time.monotonic() - killed_at > LOCK / 4
        await survivor.wait_idle(20)
    finally:
        await survivor.stop()
    assert calls[victim] == 1
    assert sorted(key for key, _ in await documents.scan(EFFECTS)) == sorted(
        str(e.id) for e in events)
    for event in events:
        assert await documents.has_seen(SUBSCRIPTION, str(event.id))
    assert servicebus_peer.management_settlements == 0
    await db.close()
