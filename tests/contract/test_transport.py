"""The transport contract: at-least-once delivery per subscription, acknowledgement after the
handler, bounded retries then a dead letter with the reason, bounded concurrency, nothing lost
when the process dies. Runs over every store the in-process transport can sit on."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.application.inbox import idempotent
from mussikon.domain.events import DomainEvent, EventClosedEvent, MusicianRegisteredEvent
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.transport import Envelope, Subscription, Transport
from mussikon.wire import EventCodec

Stores = tuple[EventStore, DocumentStore]


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        yield InMemoryEventStore(), InMemoryDocumentStore()
        return
    db = await SqliteDatabase(str(tmp_path / "bus.db")).open()
    yield SqliteEventStore(db), SqliteDocumentStore(db)
    await db.close()


def make_transport(stores: Stores, **options: object) -> InProcessTransport:
    store, documents = stores
    settings: dict[str, object] = {"retry_delays": (0.01, 0.01), "poll_interval": 0.01,
                                   "poll_max_interval": 0.05}
    settings.update(options)
    return InProcessTransport(store, documents, EventCodec(), **settings)  # type: ignore[arg-type]


def musician(n: int) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=f"m{n}", email=f"m{n}@x.io", name=f"M{n}",
                                   genres=("Jazz",), location="Santo Domingo")


async def append_musicians(store: EventStore, count: int, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        event = musician(n)
        await store.append(event.stream_id, [event], 0)
        ids.append(str(event.id))
    return ids


def subscription(name: str, handler: Callable[[Envelope], Awaitable[None]],
                 *types: type[DomainEvent]) -> Subscription:
    return Subscription(name, frozenset(t.__name__ for t in types or (MusicianRegisteredEvent,)),
                        handler)


async def test_each_subscription_gets_every_event_of_its_types(stores: Stores) -> None:
    store, _ = stores
    seen: dict[str, list[str]] = {"a": [], "b": [], "closed": []}

    def recorder(name: str) -> Callable[[Envelope], Awaitable[None]]:
        async def handle(envelope: Envelope) -> None:
            seen[name].append(envelope.message_id)
        return handle

    ids = await append_musicians(store, 5)
    closed = EventClosedEvent(gig_id="g1", reason="booked")
    await store.append(closed.stream_id, [closed], 0)
    transport = make_transport(stores)
    await transport.start([subscription("a", recorder("a")), subscription("b", recorder("b")),
                           subscription("closed", recorder("closed"), EventClosedEvent)])
    await transport.wait_idle(5)
    await transport.stop()
    assert sorted(seen["a"]) == sorted(ids)
    assert sorted(seen["b"]) == sorted(ids)
    assert seen["closed"] == [str(closed.id)]


async def test_live_events_after_start_are_delivered(stores: Stores) -> None:
    store, _ = stores
    got: list[str] = []

    async def handle(envelope: Envelope) -> None:
        got.append(envelope.message_id)

    transport = make_transport(stores)
    await transport.start([subscription("live", handle)])
    ids = await append_musicians(store, 3)
    transport.wake()
    await transport.wait_idle(5)
    await transport.stop()
    assert got == ids


async def test_a_failing_handler_is_retried_until_it_succeeds(stores: Stores) -> None:
    store, _ = stores
    attempts: list[int] = []

    async def flaky(envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        if envelope.attempt < 3:
            raise ConnectionError("mail server busy")

    await append_musicians(store, 1)
    transport = make_transport(stores)
    await transport.start([subscription("flaky", flaky)])
    await transport.wait_idle(5)
    await transport.stop()
    assert attempts == [1, 2, 3]
    assert await transport.dead_letters() == []


async def test_a_poison_message_is_dead_lettered_with_the_reason_and_blocks_nothing(
        stores: Stores) -> None:
    store, _ = stores
    handled: list[str] = []
    ids = await append_musicians(store, 4)
    poison = ids[1]

    async def handle(envelope: Envelope) -> None:
        if envelope.message_id == poison:
            raise ValueError("cannot render the welcome email")
        handled.append(envelope.message_id)

    transport = make_transport(stores)
    await transport.start([subscription("welcome", handle)])
    await transport.wait_idle(5)
    await transport.stop()
    assert handled == [i for i in ids if i != poison]
    [letter] = await transport.dead_letters()
    assert letter.message_id == poison
    assert letter.subscription == "welcome"
    assert letter.exception == "ValueError"
    assert "cannot render the welcome email" in letter.reason
    assert letter.attempts == 3  # one try and the two configured retries
    assert letter.event_type == "MusicianRegisteredEvent"
    assert '"MusicianId"' in letter.body


async def test_dead_letters_replay_and_purge(stores: Stores) -> None:
    store, _ = stores
    broken = True
    handled: list[str] = []

    async def handle(envelope: Envelope) -> None:
        if broken:
            raise RuntimeError("down")
        handled.append(envelope.message_id)

    ids = await append_musicians(store, 2)
    transport = make_transport(stores, retry_delays=())
    await transport.start([subscription("s", handle)])
    await transport.wait_idle(5)
    letters = await transport.dead_letters()
    assert len(letters) == 2
    assert await transport.replay(letters[0].id) is False  # still broken: stays, attempts grow
    again = {d.id: d for d in await transport.dead_letters()}
    assert again[letters[0].id].attempts == 2
    broken = False
    assert await transport.replay(letters[0].id) is True
    assert handled == [letters[0].message_id]
    assert await transport.purge_dead_letters() == 1
    assert await transport.dead_letters() == []
    with pytest.raises(KeyError):
        await transport.replay("s:no-such-letter")
    await transport.stop()
    assert set(handled) <= set(ids)


async def test_concurrency_per_subscription_is_bounded(stores: Stores) -> None:
    store, _ = stores
    running = 0
    peak = 0

    async def slow(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    await append_musicians(store, 20)
    transport = make_transport(stores, concurrency=3)
    await transport.start([subscription("slow", slow)])
    await transport.wait_idle(10)
    await transport.stop()
    assert 1 < peak <= 3


async def crash(transport: InProcessTransport) -> None:
    """Die like a killed process: every task stops where it is, nothing is drained or saved."""
    tasks = [t for r in transport.readers.values() for t in (r.task, *r.in_flight.values()) if t]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_message_in_flight_when_the_process_dies_is_delivered_again_and_has_one_effect(
        stores: Stores) -> None:
    store, documents = stores
    ids = await append_musicians(store, 3)
    effects: Counter[str] = Counter()
    release = asyncio.Event()

    async def stuck_on_second(envelope: Envelope) -> None:
        if envelope.message_id == ids[1] and not release.is_set():
            await asyncio.sleep(3600)  # the process dies while this runs
        effects[envelope.message_id] += 1

    sub = idempotent(subscription("effects", stuck_on_second), documents)
    first = make_transport(stores)
    await first.start([sub])
    for _ in range(200):
        if effects[ids[0]] and effects[ids[2]]:
            break
        await asyncio.sleep(0.01)
    await crash(first)
    assert effects[ids[1]] == 0

    release.set()
    second = make_transport(stores)
    await second.start([sub])
    await second.wait_idle(5)
    await second.stop()
    assert effects == Counter({ids[0]: 1, ids[1]: 1, ids[2]: 1})


async def test_a_graceful_stop_keeps_the_checkpoint_so_nothing_is_delivered_twice(
        stores: Stores) -> None:
    store, _ = stores
    got: list[str] = []

    async def handle(envelope: Envelope) -> None:
        got.append(envelope.message_id)

    await append_musicians(store, 3)
    first: Transport = make_transport(stores)
    await first.start([subscription("once", handle)])
    await first.wait_idle(5)
    await first.stop()
    later = await append_musicians(store, 2, start=10)
    second = make_transport(stores)
    await second.start([subscription("once", handle)])
    await second.wait_idle(5)
    await second.stop()
    assert len(got) == 5
    assert got[-2:] == later


async def test_the_inbox_turns_a_redelivery_into_a_no_op(stores: Stores) -> None:
    store, documents = stores
    effects: list[str] = []

    async def handle(envelope: Envelope) -> None:
        effects.append(envelope.message_id)

    sub = idempotent(subscription("inbox", handle), documents)
    [event_id] = await append_musicians(store, 1)
    [record] = await store.read_all()
    envelope = Envelope(event_id, record.event, record.position)
    await sub.handler(envelope)
    await sub.handler(envelope)
    assert effects == [event_id]
    assert await documents.has_seen("inbox", event_id)


async def test_two_subscriptions_with_one_name_are_refused(stores: Stores) -> None:
    async def handle(envelope: Envelope) -> None:
        return None

    transport = make_transport(stores)
    with pytest.raises(ValueError, match="two subscriptions are named 'x'"):
        await transport.start([subscription("x", handle), subscription("x", handle)])
    await transport.stop()


async def test_dead_letters_page_in_a_stable_order_and_one_can_be_deleted(
        stores: Stores) -> None:
    store, _ = stores

    async def refuse(envelope: Envelope) -> None:
        raise RuntimeError("down")

    await append_musicians(store, 5)
    transport = make_transport(stores, retry_delays=())
    await transport.start([subscription("s", refuse)])
    await transport.wait_idle(5)
    everything = [d.id for d in await transport.dead_letters()]
    assert len(everything) == 5
    seen: list[str] = []
    after: str | None = None
    while page := await transport.dead_letters(limit=2, after=after):
        seen += [d.id for d in page]
        after = page[-1].id
    assert seen == everything
    with pytest.raises(KeyError):
        await transport.dead_letters(limit=2, after="s:no-such-letter")
    await transport.delete_dead_letter(everything[2])
    assert [d.id for d in await transport.dead_letters()] == everything[:2] + everything[3:]
    with pytest.raises(KeyError):
        await transport.delete_dead_letter(everything[2])
    await transport.stop()


async def test_replay_all_runs_each_letter_once_and_reports_each(stores: Stores) -> None:
    store, _ = stores
    failing: set[str] = set()
    handled: Counter[str] = Counter()

    async def handle(envelope: Envelope) -> None:
        if not handled and not failing:
            raise RuntimeError("down")
        if envelope.message_id in failing:
            raise RuntimeError("still down")
        handled[envelope.message_id] += 1

    ids = await append_musicians(store, 3)
    transport = make_transport(stores, retry_delays=())
    await transport.start([subscription("s", handle)])
    await transport.wait_idle(5)
    letters = await transport.dead_letters()
    assert len(letters) == 3
    failing.add(ids[1])
    results = await transport.replay_all_dead_letters()
    assert [(r.dead_letter_id, r.ok) for r in results] == [
        (d.id, d.message_id != ids[1]) for d in letters]
    [failed] = [r for r in results if not r.ok]
    assert "still down" in failed.reason
    assert handled == {ids[0]: 1, ids[2]: 1}
    [left] = await transport.dead_letters()
    assert (left.message_id, left.attempts) == (ids[1], 2)
    await transport.stop()
