"""Failures on RabbitMQ: bounded retries in process and through TTL queues, then the dead-letter
queue with the reason; malformed bodies dead-lettered at once; dead letters listed, replayed,
purged; the worker keeps going throughout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mussikon import metrics
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import EventCreatedEvent, MusicianRegisteredEvent
from tests.integration.rabbitmq_kit import (
    BrokerNamespace,
    Recorder,
    append,
    dotnet_publish,
    eventually,
    sample_event,
)

pytestmark = pytest.mark.rabbitmq

MUSICIANS = ["MusicianRegisteredEvent"]


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


async def test_a_poison_message_is_retried_a_bounded_number_of_times_then_dead_lettered(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(4)]
    poison = str(events[1].id)
    recorder.fail_for.add(poison)
    # The worker does not move the dead letters into the store while the test looks at the
    # dead-letter queue: the listing below moves it.
    transport = broker.transport(store, documents, retry_delays=(0.01, 0.01),
                                 delayed_retry_delays=(0.2, 0.3), dead_letter_interval=3600)
    counted_before = counted()
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    await append(store, events)
    transport.wake()
    dead_letter_queue = transport.topology.dead_letter_queue

    async def in_the_dead_letter_queue() -> bool:
        monitor = await broker.channel()
        ok = await monitor.queue_declare(dead_letter_queue, passive=True)
        await monitor.close()
        return ok.message_count == 1

    await eventually(in_the_dead_letter_queue)
    # The raw headers name the queue and routing key it came from.
    channel = await broker.channel()
    raw = await channel.basic_get(dead_letter_queue, no_ack=False)
    headers = raw.header.properties.headers or {}
    assert headers["x-original-queue"] == f"{broker.prefix}musician.registered"
    assert headers["x-original-routing-key"] == "musician.registered"
    assert headers["x-exception-type"] == "ValueError"
    assert headers["x-attempts"] == 9
    assert headers["x-subscription"] == "welcome"
    assert headers["x-failure-reason"] == "handler-failed"
    await channel.close()  # hands the letter back to the dead-letter queue
    await eventually(in_the_dead_letter_queue)

    await transport.wait_idle(10)
    # 3 tries in process, in each of 3 rounds (the first delivery and 2 delayed retries).
    assert recorder.calls[poison] == 9
    assert sorted(e.message_id for e in recorder.handled) == sorted(
        str(e.id) for e in events if str(e.id) != poison)
    [letter] = await transport.dead_letters()  # moved from the queue into the store
    assert letter.message_id == poison
    assert letter.subscription == "welcome"
    assert letter.exception == "ValueError"
    assert "cannot handle MusicianRegisteredEvent" in letter.reason
    assert letter.attempts == 9
    assert letter.event_type == "MusicianRegisteredEvent"
    assert letter.position == 2
    assert json.loads(letter.body)["Id"] == poison

    # Nothing loops afterwards, and the letter left the queue for the store.
    async def moved() -> bool:
        monitor = await broker.channel()
        ok = await monitor.queue_declare(dead_letter_queue, passive=True)
        await monitor.close()
        return ok.message_count == 0

    await eventually(moved)
    await transport.wait_idle(10)
    assert recorder.calls[poison] == 9
    assert [d.message_id for d in await transport.dead_letters()] == [poison]
    # The same story in `/metrics`: per subscription, on RabbitMQ.
    moved_by = {name: value - counted_before[name] for name, value in counted().items()}
    assert moved_by == {"handled": 3, "failures": 9, "in_process": 6, "delayed": 2,
                        "dead_lettered": 1, "published": 4}


def counted() -> dict[str, float]:
    """The counters of `/metrics` for the subscription "welcome" on RabbitMQ."""
    families = text_string_to_metric_families(metrics.exposition().decode())
    found = {(s.name, s.labels.get("subscription"), s.labels.get("kind")): s.value
             for family in families for s in family.samples
             if s.labels.get("broker") == "rabbitmq"}
    welcome = {"handled": found.get(("mussikon_messages_handled_total", "welcome", None)),
               "failures": found.get(("mussikon_handler_failures_total", "welcome", None)),
               "in_process": found.get(("mussikon_messages_retried_total", "welcome",
                                        "in_process")),
               "delayed": found.get(("mussikon_messages_retried_total", "welcome", "delayed")),
               "dead_lettered": found.get(("mussikon_messages_dead_lettered_total", "welcome",
                                           None)),
               "published": found.get(("mussikon_messages_published_total", None, None))}
    return {name: value or 0.0 for name, value in welcome.items()}


async def test_only_the_failing_subscription_runs_again(broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    steady, flaky = Recorder(), Recorder()
    event = sample_event(MusicianRegisteredEvent)
    flaky.fail_for.add(str(event.id))
    transport = broker.transport(store, documents, retry_delays=(),
                                 delayed_retry_delays=(0.2,))
    await transport.start([steady.subscription("steady", MUSICIANS),
                           flaky.subscription("flaky", MUSICIANS)])
    await append(store, [event])
    transport.wake()

    async def dead_lettered() -> bool:
        return len(await transport.dead_letters()) == 1

    await eventually(dead_lettered)
    assert steady.calls[str(event.id)] == 1
    assert flaky.calls[str(event.id)] == 2
    [letter] = await transport.dead_letters()
    assert letter.subscription == "flaky"

    flaky.fail_for.clear()
    assert await transport.replay(letter.id) is True
    await transport.wait_idle(10)
    assert steady.calls[str(event.id)] == 1
    assert [e.message_id for e in flaky.handled] == [str(event.id)]
    assert await transport.dead_letters() == []


@pytest.mark.parametrize(("body", "event_type", "reason"), [
    (b"not json at all", "MusicianRegisteredEvent", "not valid JSON"),
    (b'{"Id": "x"}', "NoSuchEvent", "'NoSuchEvent' is not registered"),
    (b'{"Id": "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a", "Email": "a@b.io"}',
     "MusicianRegisteredEvent", "'MusicianId'"),
    (b'{"Id": "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a", "MusicianId": "m", "Email": "a@b.io",'
     b' "Name": "Ana", "Genres": "jazz", "Location": "SD"}',
     "MusicianRegisteredEvent", "'Genres'"),
])
async def test_a_malformed_body_goes_straight_to_the_dead_letter_queue_and_the_worker_goes_on(
        broker: BrokerNamespace, body: bytes, event_type: str, reason: str) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    transport = broker.transport(store, documents)
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    await asyncio.to_thread(dotnet_publish, broker.url, f"{broker.prefix}mussikon.events",
                            "musician.registered", body, event_type)
    good = sample_event(MusicianRegisteredEvent)
    await append(store, [good])
    transport.wake()
    await transport.wait_idle(10)
    assert [e.message_id for e in recorder.handled] == [str(good.id)]
    [letter] = await transport.dead_letters()
    assert letter.reason.startswith("malformed")
    assert reason in letter.reason
    assert letter.attempts == 0
    assert letter.body == body.decode()
    assert letter.exception in {"WireFormatError", "UnknownEventType"}


async def test_dead_letters_are_listed_without_being_lost_replayed_and_purged(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    events = [sample_event(EventCreatedEvent, n) for n in range(3)]
    recorder.fail_for |= {str(e.id) for e in events}
    transport = broker.transport(store, documents, retry_delays=(), delayed_retry_delays=(),
                                 concurrency=1)
    await transport.start([recorder.subscription("gigs", ["EventCreatedEvent"], documents)])
    await append(store, events)
    transport.wake()
    await transport.wait_idle(10)

    letters = await transport.dead_letters()
    assert [d.message_id for d in letters] == [str(e.id) for e in events]  # oldest first
    assert await transport.dead_letters() == letters  # listing took nothing away

    recorder.fail_for.clear()
    assert await transport.replay(letters[1].id) is True
    await transport.wait_idle(10)
    assert [e.message_id for e in recorder.handled] == [letters[1].message_id]
    assert [d.id for d in await transport.dead_letters()] == [letters[0].id, letters[2].id]
    with pytest.raises(KeyError):
        await transport.replay("no-such-letter")

    assert await transport.purge_dead_letters() == 2
    assert await transport.dead_letters() == []


async def test_a_replayed_letter_that_fails_again_keeps_its_id_and_adds_up_attempts(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    event = sample_event(MusicianRegisteredEvent)
    recorder.fail_for.add(str(event.id))
    transport = broker.transport(store, documents, retry_delays=(0.01,), delayed_retry_delays=())
    await transport.start([recorder.subscription("s", MUSICIANS, documents)])
    await append(store, [event])
    transport.wake()
    await transport.wait_idle(10)
    [letter] = await transport.dead_letters()
    assert letter.attempts == 2
    await transport.replay(letter.id)

    async def back() -> bool:
        return [d.attempts for d in await transport.dead_letters()] == [4]

    await eventually(back)
    [again] = await transport.dead_letters()
    assert again.id == letter.id


async def test_replay_all_sends_every_letter_back(broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(3)]
    recorder.fail_for |= {str(e.id) for e in events}
    transport = broker.transport(store, documents, retry_delays=(), delayed_retry_delays=())
    await transport.start([recorder.subscription("s", MUSICIANS, documents)])
    await append(store, events)
    transport.wake()
    await transport.wait_idle(10)
    recorder.fail_for.clear()
    letters = await transport.dead_letters()
    results = await transport.replay_all_dead_letters()
    assert [(r.dead_letter_id, r.ok) for r in results] == [(d.id, True) for d in letters]
    await transport.wait_idle(10)
    assert sorted(e.message_id for e in recorder.handled) == sorted(str(e.id) for e in events)
    assert await transport.dead_letters() == []


async def test_dead_letter_tools_work_without_starting_a_worker(broker: BrokerNamespace) -> None:
    documents = InMemoryDocumentStore()  # the store all three share
    worker = broker.transport(documents=documents, retry_delays=(), delayed_retry_delays=())
    await worker.start([])
    await asyncio.to_thread(dotnet_publish, broker.url, f"{broker.prefix}mussikon.events",
                            "musician.registered", b"{", "MusicianRegisteredEvent")
    recorder = Recorder()
    await worker.stop()
    consumer = broker.transport(documents=documents, relay=False, retry_delays=(),
                                delayed_retry_delays=())
    await consumer.start([recorder.subscription("s", MUSICIANS)])

    tools = broker.transport(documents=documents, relay=False, retry_delays=(),
                             delayed_retry_delays=())

    async def listed() -> bool:
        return len(await tools.dead_letters()) == 1

    await eventually(listed)
    assert await tools.purge_dead_letters() == 1
