"""The dead-letter queue browsed page by page on RabbitMQ, quorum and classic: every letter
seen once, the queue's order the same after every page, a delete or a replay taking one
letter and leaving the others in their places, and a page reading no more of a classic queue
than the letters up to the cursor and the page."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pamqp.commands import Basic

from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.messaging.rabbitmq import dead_letters as dead_letter_module
from mussikon.domain.events import MusicianRegisteredEvent
from tests.integration.rabbitmq_kit import BrokerNamespace, sample_event
from tests.polling import eventually

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


async def test_a_page_of_a_classic_queue_reads_only_up_to_the_cursor_and_the_page(
        broker: BrokerNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = broker.transport(relay=False, queue_type="classic")
    await tools.dead_letters()
    letters = await made(broker, tools, 20)
    taken = 0
    take = dead_letter_module._Browse._take

    async def counting(browse: dead_letter_module._Browse) -> object:
        nonlocal taken
        taken += 1
        return await take(browse)

    monkeypatch.setattr(dead_letter_module._Browse, "_take", counting)
    page = await tools.dead_letters(limit=3, after=letters[4])
    assert [d.id for d in page] == letters[5:8]
    # Five up to the cursor, three for the page, one to see the queue kept its order.
    assert taken == 5 + 3 + 1
