"""Events through RabbitMQ: every type published by the relay and handled, with the
specification's properties and headers; interoperability both ways with pika playing the
specification's .NET `RabbitMQService`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore, StoredRow
from mussikon.domain.events import MusicianApplicationSubmittedEvent, MusicianRegisteredEvent
from mussikon.domain.instant import epoch_micros, utc_now
from mussikon.followers.undecodable import UNDECODABLE_EVENTS
from tests.integration.rabbitmq_kit import (
    BrokerNamespace,
    Recorder,
    append,
    dotnet_publish,
    eventually,
    every_event_type,
    pika_channel,
    sample_event,
)
from tests.polling import wait_until

pytestmark = pytest.mark.rabbitmq

GOLDEN = Path(__file__).parent.parent / "golden"

DOTNET_APPLICATION = """{
  "ApplicationId": "7d8e9f0a-1b2c-4d3e-9f4a-5b6c7d8e9f0a",
  "MusicianId": "3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11",
  "EventId": "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
  "Message": "Tr\\u00EDo de jazz con repertorio de standards y bolero.",
  "ProposedFee": 1200.50,
  "Id": "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a",
  "OccurredAt": "2026-11-27T22:01:10.0000001Z",
  "EventType": "MusicianApplicationSubmittedEvent",
  "Version": 1
}"""
"""What the specification's .NET service sends for an application (System.Text.Json)."""


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


async def test_every_event_type_is_published_and_handled(broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    types = [cls.__name__ for cls in every_event_type()]
    transport = broker.transport(store, documents)
    await transport.start([recorder.subscription("all", types, documents)])
    events = [sample_event(cls, n) for n, cls in enumerate(every_event_type())]
    await append(store, events)
    transport.wake()
    await transport.wait_idle(15)
    assert sorted(e.message_id for e in recorder.handled) == sorted(str(e.id) for e in events)
    by_id = {e.message_id: e for e in recorder.handled}
    for position, event in enumerate(events, start=1):
        envelope = by_id[str(event.id)]
        assert envelope.event == event
        assert type(envelope.event) is type(event)
        assert envelope.position == position
        assert envelope.attempt == 1
    assert await transport.relay.position() == len(events)  # type: ignore[union-attr]


async def test_each_subscription_runs_for_its_own_types(broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    musicians, everything = Recorder(), Recorder()
    transport = broker.transport(store, documents)
    await transport.start([
        musicians.subscription("musicians", ["MusicianRegisteredEvent"]),
        everything.subscription("everything", ["MusicianRegisteredEvent", "EventCreatedEvent"]),
    ])
    registered = sample_event(MusicianRegisteredEvent)
    await append(store, [registered, sample_event(every_event_type()[2])])
    transport.wake()
    await transport.wait_idle(10)
    assert [e.message_id for e in musicians.handled] == [str(registered.id)]
    assert len(everything.handled) == 2


def _get_with_pika(url: str, queue: str) -> tuple[Any, Any, bytes]:
    connection, channel = pika_channel(url)
    got: list[tuple[Any, Any, bytes]] = []

    def arrived() -> bool:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        got.extend([(method, properties, body)] if method is not None else [])
        return bool(got)

    try:
        wait_until(arrived, 5, what=f"a message in {queue}")
        return got[0]
    finally:
        connection.close()


async def test_what_we_publish_is_what_the_dotnet_consumer_reads(broker: BrokerNamespace) -> None:
    store = InMemoryEventStore(broker.codec)
    transport = broker.transport(store)
    await transport.start([])  # relay only: the message waits in the queue for "the .NET side"
    correlation, causation = uuid.uuid4(), uuid.uuid4()
    event = MusicianApplicationSubmittedEvent(
        application_id="a-1", musician_id="m-1", gig_id="g-1", message="Trío de jazz",
        proposed_fee=Decimal("1200.50"), correlation_id=correlation, causation_id=causation)
    await append(store, [event])
    transport.wake()

    method, properties, body = await asyncio.to_thread(
        _get_with_pika, broker.url, f"{broker.prefix}application.submitted")
    assert method.exchange == f"{broker.prefix}mussikon.events"
    assert method.routing_key == "application.submitted"
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.message_id == str(event.id)
    assert properties.timestamp == int(event.occurred_at.timestamp())
    assert properties.correlation_id == str(correlation)
    headers = dict(properties.headers)
    headers.pop("x-delivery-count", None)  # the quorum queue's own count, not ours
    assert headers == {
        "EventType": "MusicianApplicationSubmittedEvent", "Version": "1.0",
        "CorrelationId": str(correlation), "CausationId": str(causation), "Position": 1}
    # The body is the PascalCase JSON the .NET class deserialises, decimals exact.
    document = json.loads(body, parse_float=Decimal)
    assert document == {
        "ApplicationId": "a-1", "MusicianId": "m-1", "EventId": "g-1",
        "Message": "Trío de jazz", "ProposedFee": Decimal("1200.50"), "Id": str(event.id),
        "OccurredAt": document["OccurredAt"], "EventType": "MusicianApplicationSubmittedEvent",
        "Version": 1}
    occurred = datetime.fromisoformat(document["OccurredAt"].replace("Z", "+00:00"))
    assert document["OccurredAt"].endswith("Z")
    assert abs((occurred - event.occurred_at.astimezone(UTC)).total_seconds()) < 1e-6


async def test_a_message_published_by_the_dotnet_service_is_handled(
        broker: BrokerNamespace) -> None:
    documents = InMemoryDocumentStore()
    recorder = Recorder()
    # with a relay, which passes the recorded event by (wait_idle waits for it to)
    transport = broker.transport(documents=documents)
    await transport.start([recorder.subscription(
        "applications", ["MusicianApplicationSubmittedEvent"], documents)])
    # What the application presupposes, from the .NET services too.
    for routing_key, event_type in (("musician.registered", "MusicianRegisteredEvent"),
                                    ("event.created", "EventCreatedEvent")):
        await asyncio.to_thread(
            dotnet_publish, broker.url, f"{broker.prefix}mussikon.events", routing_key,
            (GOLDEN / f"{event_type}.json").read_bytes(), event_type)
    message_id = await asyncio.to_thread(
        dotnet_publish, broker.url, f"{broker.prefix}mussikon.events", "application.submitted",
        DOTNET_APPLICATION.encode(), "MusicianApplicationSubmittedEvent")

    async def handled() -> bool:
        return len(recorder.handled) == 1

    await eventually(handled)
    [envelope] = recorder.handled
    event = envelope.event
    assert isinstance(event, MusicianApplicationSubmittedEvent)
    assert str(event.id) == "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"
    assert envelope.message_id == str(event.id)  # deduplicated by the event, not the GUID
    assert envelope.headers["EventType"] == "MusicianApplicationSubmittedEvent"
    assert message_id != envelope.message_id
    assert event.proposed_fee == Decimal("1200.50")
    assert event.message == "Trío de jazz con repertorio de standards y bolero."
    assert event.correlation_id is None and event.causation_id is None
    # recorded in the store before any handler ran, as another service's event
    *presupposed, stored = await transport.store.read_all()
    assert sorted(r.event.event_type for r in presupposed) == ["EventCreatedEvent",
                                                              "MusicianRegisteredEvent"]
    assert (stored.event, stored.origin, envelope.position) == (event, "rabbitmq", 3)

    # The .NET service publishing the same event again (a new GUID) has no second effect.
    await asyncio.to_thread(
        dotnet_publish, broker.url, f"{broker.prefix}mussikon.events", "application.submitted",
        DOTNET_APPLICATION.encode(), "MusicianApplicationSubmittedEvent")
    await transport.wait_idle(10)
    assert len(recorder.handled) == 1
    assert await transport.dead_letters() == []


def _upcaster_reading_a_field_old_bodies_lack(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "Genres": body["Instruments"]}


async def test_the_relay_skips_an_undecodable_row_records_why_and_publishes_what_follows(
        broker: BrokerNamespace, caplog: pytest.LogCaptureFixture) -> None:
    """The relay's side of the one policy for undecodable rows (the projections' and the
    in-process transport's: tests/contract/test_undecodable_events.py)."""
    broker.codec.register_upcaster("MusicianRegisteredEvent", 0,
                                   _upcaster_reading_a_field_old_bodies_lack)
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    transport = broker.transport(store, documents)
    await transport.start([recorder.subscription("welcome", ["MusicianRegisteredEvent"],
                                                 documents)])
    first, last = sample_event(MusicianRegisteredEvent, 1), sample_event(MusicianRegisteredEvent, 2)
    await append(store, [first])
    store.rows.append(StoredRow(
        position=2, event_id=str(uuid.uuid4()), stream_id="musician-old", version=1,
        event_type="MusicianRegisteredEvent", data=b'{"MusicianId": "old", "Version": 0}',
        occurred_at=epoch_micros(utc_now()), correlation_id=None, causation_id=None,
        recorded_at=utc_now()))
    await append(store, [last])
    transport.wake()
    await transport.wait_idle(15)

    assert [e.message_id for e in recorder.handled] == [str(first.id), str(last.id)]
    assert await transport.relay.position() == 3  # type: ignore[union-attr]
    [(key, skipped)] = await documents.scan(UNDECODABLE_EVENTS)
    assert key == "relay:2"
    assert (skipped["reader"], skipped["position"], skipped["stream_id"],
            skipped["version"]) == ("relay", 2, "musician-old", 1)
    assert "KeyError: 'Instruments'" in skipped["reason"]
    assert any("relay skips the event at position 2" in r.getMessage() for r in caplog.records)


async def test_the_relay_never_publishes_an_event_another_service_published(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    foreign = [sample_event(MusicianRegisteredEvent, n) for n in range(3)]
    ours = sample_event(MusicianRegisteredEvent, 9)
    for event in foreign[:2]:
        await store.record_foreign(event, "rabbitmq")
    await append(store, [ours])
    await store.record_foreign(foreign[2], "rabbitmq")
    transport = broker.transport(store, documents)
    await transport.start([])  # relay only: what it publishes waits in the queue
    transport.wake()
    assert transport.relay is not None

    async def passed_everything() -> bool:
        assert transport.relay is not None
        return await transport.relay.position() == 4

    await eventually(passed_everything)
    _, properties, _ = await asyncio.to_thread(
        _get_with_pika, broker.url, f"{broker.prefix}musician.registered")
    assert properties.message_id == str(ours.id)
    channel = await broker.channel()
    queue = await channel.queue_declare(f"{broker.prefix}musician.registered", passive=True)
    assert queue.message_count == 0
    assert transport.relay.published == 1
