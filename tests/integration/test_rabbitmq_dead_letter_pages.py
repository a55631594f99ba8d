"""The dead letters on RabbitMQ, quorum and classic: moved from the dead-letter queue into the
store, each read off the broker once and acknowledged only once kept (a failure between the
two loses and doubles nothing); listed page by page, every letter seen once in the order
they were given up on; a delete or a replay taking one letter and leaving the others; a
page or one letter reading a few documents of the store however many letters there are."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pamqp.commands import Basic

from mussikon.adapters.messaging import dead_letter_store
from mussikon.adapters.messaging.dead_letter_store import DeadLetterIndex
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.messaging.rabbitmq.dead_letters import DeadLetterQueue
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.domain.events import MusicianRegisteredEvent
from tests.integration.rabbitmq_kit import BrokerNamespace, sample_event
from tests.polling import eventually
from tests.unit.test_saga_listing import CountingDocuments

pytestmark = pytest.mark.rabbitmq

LETTERS = 7


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


@pytest.fixture(params=["quorum", "classic"])
async def tools(request: pytest.FixtureRequest, broker: BrokerNamespace) -> RabbitMqTransport:
    transport = broker.transport(relay=False, queue_type=request.param)
    await transport.dead_letters()  # declares the topology
    return transport


async def dead_letter(broker: BrokerNamespace, tools: RabbitMqTransport, n: int,
                      queue: str | None = None) -> str:
    """Put a letter in the dead-letter queue as a consumer gives one up: its headers name the
    queue it failed in, the subscription and why."""
    topology = tools.topology
    letter_id = uuid.uuid4().hex
    event = sample_event(MusicianRegisteredEvent, n)
    channel = await broker.channel()
    try:
        await channel.basic_publish(
            broker.codec.encode(event), routing_key=topology.dead_letter_queue,
            properties=Basic.Properties(
                message_id=str(event.id), delivery_mode=2, headers={
                    "EventType": event.event_type, "Version": "1.0",
                    "x-dead-letter-id": letter_id, "x-failure-reason": "handler-failed",
                    "x-exception-type": "NotificationError",
                    "x-exception-message": f"letter {n} refused",
                    "x-attempts": 3, "x-subscription": "musicians.on-registered",
                    "x-original-queue": queue or topology.queue(event.event_type),
                    "x-original-routing-key": topology.routing_key(event.event_type),
                    "x-failed-at": (datetime(2026, 1, 1, tzinfo=UTC)
                                    + timedelta(seconds=n)).isoformat()}))
    finally:
        await channel.close()
    return letter_id


async def made(broker: BrokerNamespace, tools: RabbitMqTransport, count: int) -> list[str]:
    """`count` letters, once the broker counts them in the queue (a quorum queue counts a
    confirmed message when its log entry is applied, a moment after the confirm)."""
    letters = [await dead_letter(broker, tools, n) for n in range(count)]
    channel = await broker.channel()
    try:
        async def counted() -> bool:
            ok = await channel.queue_declare(tools.topology.dead_letter_queue, passive=True)
            return (ok.message_count or 0) >= count

        await eventually(counted, 10, what="the letters counted in the dead-letter queue")
    finally:
        await channel.close()
    return letters


async def ids(tools: RabbitMqTransport) -> list[str]:
    return [d.id for d in await tools.dead_letters()]


async def test_paging_visits_every_letter_once_and_leaves_the_order_as_it_was(
        broker: BrokerNamespace, tools: RabbitMqTransport) -> None:
    letters = await made(broker, tools, LETTERS)
    assert await ids(tools) == letters
    seen: list[str] = []
    after: str | None = None
    while page := await tools.dead_letters(limit=3, after=after):
        seen += [d.id for d in page]
        assert await ids(tools) == letters  # each page left the queue as it was
        after = page[-1].id
    assert seen == letters
    with pytest.raises(KeyError):
        await tools.dead_letters(limit=3, after="no-such-letter")
    assert await ids(tools) == letters


async def test_delete_and_replay_take_one_letter_and_leave_the_others_in_their_places(
        broker: BrokerNamespace, tools: RabbitMqTransport) -> None:
    letters = await made(broker, tools, 5)
    await tools.delete_dead_letter(letters[1])
    assert await ids(tools) == [letters[0], *letters[2:]]
    assert await tools.replay(letters[3]) is True
    assert await ids(tools) == [letters[0], letters[2], letters[4]]
    with pytest.raises(KeyError):
        await tools.delete_dead_letter(letters[1])
    queue = tools.topology.queue("MusicianRegisteredEvent")
    channel = await broker.channel()
    try:  # the replayed letter is back in its queue, for a worker
        assert (await channel.queue_declare(queue, passive=True)).message_count == 1
    finally:
        await channel.close()


async def test_replay_all_reports_a_letter_that_cannot_be_sent_back_and_keeps_it(
        broker: BrokerNamespace, tools: RabbitMqTransport) -> None:
    good = await dead_letter(broker, tools, 1)
    stray = await dead_letter(broker, tools, 2, queue=f"{broker.prefix}no-such-queue")
    results = await tools.replay_all_dead_letters()
    assert [(r.dead_letter_id, r.ok) for r in results] == [(good, True), (stray, False)]
    assert "cannot be sent back to queue" in results[1].reason
    assert "NO_ROUTE" in results[1].reason
    assert await ids(tools) == [stray]
    with pytest.raises(ValueError, match="cannot be sent back"):
        await tools.replay(stray)
    assert await ids(tools) == [stray]


MANY = 2000


async def test_two_thousand_letters_are_read_off_the_broker_once_and_a_page_reads_a_few(
        broker: BrokerNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    documents = CountingDocuments()
    tools = broker.transport(documents=documents, relay=False)  # a quorum queue
    await tools.dead_letters()
    letters = await published(broker, tools, MANY)
    taken = 0
    take = DeadLetterQueue._take

    async def counting(queue: DeadLetterQueue, channel: Any) -> object:
        nonlocal taken
        message = await take(queue, channel)
        taken += message is not None
        return message

    monkeypatch.setattr(DeadLetterQueue, "_take", counting)
    first = await tools.dead_letters(limit=10)
    assert [d.id for d in first] == letters[:10]
    assert taken == MANY  # each letter once, into the store
    assert len(await documents.scan(dead_letter_store.LETTERS)) == MANY
    await eventually(lambda: emptied(broker, tools), 30, what="the dead-letter queue emptied")

    taken, documents.read = 0, 0
    page = await tools.dead_letters(limit=10, after=letters[1500])
    assert [d.id for d in page] == letters[1501:1511]
    assert (taken, documents.read) == (0, 1 + 10)  # the cursor's id entry, the page
    documents.read = 0
    found = await tools.find_dead_letter(letters[1999])
    assert found is not None and found.id == letters[1999]
    assert (taken, documents.read) == (0, 2)
    documents.read = 0
    assert await tools.dead_letter_ids(letters[7][:12], 6) == [letters[7]]
    assert (taken, documents.read) == (0, 1)


@pytest.mark.parametrize("fails", ["before keeping", "after keeping"])
async def test_a_failure_between_the_store_and_the_acknowledgement_loses_and_doubles_nothing(
        broker: BrokerNamespace, tools: RabbitMqTransport, monkeypatch: pytest.MonkeyPatch,
        fails: str) -> None:
    letters = await made(broker, tools, 5)
    keep = DeadLetterIndex.keep

    async def failing(index: DeadLetterIndex, docs: Any) -> None:
        if fails == "after keeping":
            await keep(index, docs)
        raise RuntimeError("the process died here")

    monkeypatch.setattr(DeadLetterIndex, "keep", failing)
    with pytest.raises(RuntimeError):
        await tools.dead_letters()
    kept = await tools.documents.scan(dead_letter_store.LETTERS)
    assert [doc["id"] for _, doc in kept] == (letters if fails == "after keeping" else [])

    async def back_in_the_queue() -> bool:
        return await queued(broker, tools) == len(letters)

    await eventually(back_in_the_queue, 10, what="the letters not acknowledged back")
    monkeypatch.setattr(DeadLetterIndex, "keep", keep)
    assert await ids(tools) == letters
    assert len(await tools.documents.scan(dead_letter_store.LETTERS)) == len(letters)
    assert len(await tools.documents.scan(dead_letter_store.IDS)) == len(letters)
    await eventually(lambda: emptied(broker, tools), 10, what="the dead-letter queue emptied")


async def published(broker: BrokerNamespace, tools: RabbitMqTransport, count: int) -> list[str]:
    """`count` letters put in the dead-letter queue on one channel, once the broker counts
    them there."""
    topology = tools.topology
    event = sample_event(MusicianRegisteredEvent, 1)
    body = broker.codec.encode(event)
    letters = [f"{n:06d}-{uuid.uuid4().hex}" for n in range(count)]
    channel = await broker.channel()
    try:
        for n, letter_id in enumerate(letters):
            await channel.basic_publish(
                body, routing_key=topology.dead_letter_queue, properties=Basic.Properties(
                    message_id=str(event.id), delivery_mode=2, headers={
                        "EventType": event.event_type, "x-dead-letter-id": letter_id,
                        "x-failure-reason": "handler-failed", "x-attempts": 3,
                        "x-original-queue": topology.queue(event.event_type),
                        "x-failed-at": (datetime(2026, 1, 1, tzinfo=UTC)
                                        + timedelta(milliseconds=n)).isoformat()}))

        async def counted() -> bool:
            return await queued(broker, tools) >= count

        await eventually(counted, 30, what="the letters counted in the dead-letter queue")
    finally:
        await channel.close()
    return letters


async def emptied(broker: BrokerNamespace, tools: RabbitMqTransport) -> bool:
    """The queue counts no letter (a quorum queue counts an acknowledgement a moment after
    it was given)."""
    return await queued(broker, tools) == 0


async def queued(broker: BrokerNamespace, tools: RabbitMqTransport) -> int:
    channel = await broker.channel()
    try:
        ok = await channel.queue_declare(tools.topology.dead_letter_queue, passive=True)
        return ok.message_count or 0
    finally:
        await channel.close()


async def test_a_worker_moves_the_dead_letter_queue_into_the_store_by_itself(
        broker: BrokerNamespace) -> None:
    documents = InMemoryDocumentStore()  # the store the workers and the tools share
    tools = broker.transport(documents=documents, relay=False)
    await tools.dead_letters()
    letters = await made(broker, tools, 3)
    for _ in range(2):
        worker = broker.transport(documents=documents, relay=False, dead_letter_interval=0.1)
        await worker.start([])

    async def kept() -> bool:
        return [doc["id"] for _, doc in await documents.scan(dead_letter_store.LETTERS)] \
            == letters

    await eventually(kept, 10, what="the letters moved into the store by a worker")
    await eventually(lambda: emptied(broker, tools), 10, what="the dead-letter queue emptied")
    lease = f"dead-letters:{tools.topology.dead_letter_queue}"
    assert await documents.try_lease(lease, "an operator", 1.0) is None  # a worker holds it
