"""The transport contract: at-least-once delivery per subscription, acknowledgement after the
handler, bounded retries then a dead letter with the reason, bounded concurrency, nothing lost
when the process dies. Runs over the in-process transport on every store it can sit on, over
the RabbitMQ transport (each test in a broker namespace of its own, deleted afterwards) and
over the Service Bus transport against the local peer (a peer of its own per test, which must
not have seen a settlement fall back to `$management`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.application.inbox import idempotent
from mussikon.domain.events import DomainEvent, EventClosedEvent, MusicianRegisteredEvent
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.ports.transport import Envelope, Subscription, Transport
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import BrokerNamespace
from tests.polling import eventually
from tests.tcp_proxy import TcpProxy

Stores = tuple[EventStore, DocumentStore]

BROKER_RETRY_DELAYS = (0.05, 0.1, 0.15)
"""The RabbitMQ transport's retries go through TTL queues, one per delay: short ones here."""


@dataclass
class Bus:
    """A transport adapter under test, over its stores.

    `transport(retries=…, concurrency=…)` makes a transport (called again, another process's
    over the same stores and broker) that retries a failing handler `retries` times, shortly,
    before dead-lettering it; `in_process_delays=…` gives the delays of the retries made in
    the process before those (on RabbitMQ, before the retry queues' `retries`).
    `stop_grace=…` is what `stop` gives the handlers running before it cancels them.
    `crash(transport)` stops one as a killed process stops. `cut()` takes the broker away
    (its connections close, new ones are refused) and `restore()` brings it back, where
    there is a broker (None for the in-process transport).
    """

    store: EventStore
    documents: DocumentStore
    transport: Callable[..., Transport]
    crash: Callable[[Transport], Awaitable[None]]
    cut: Callable[[], Awaitable[None]] | None = None
    restore: Callable[[], Awaitable[None]] | None = None


@pytest.fixture(params=["memory", "sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
                        pytest.param("servicebus", marks=pytest.mark.servicebus)])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus]:
    if request.param == "rabbitmq":
        async with rabbitmq_bus(request) as opened:
            yield opened
        return
    if request.param == "servicebus":
        async with servicebus_bus() as opened:
            yield opened
        return
    async with in_process_stores(request.param, tmp_path) as (store, documents):
        def in_process(retries: int = 2, concurrency: int = 8,
                       in_process_delays: tuple[float, ...] = (),
                       stop_grace: float = 30.0) -> Transport:
            return InProcessTransport(store, documents, EventCodec(),
                                      retry_delays=in_process_delays + (0.01,) * retries,
                                      concurrency=concurrency, stop_grace=stop_grace,
                                      poll_interval=0.01, poll_max_interval=0.05)

        yield Bus(store, documents, in_process, crash_in_process)


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with in_process_stores(request.param, tmp_path) as opened:
        yield opened


@contextlib.asynccontextmanager
async def in_process_stores(kind: str, tmp_path: Path) -> AsyncIterator[Stores]:
    if kind == "memory":
        yield InMemoryEventStore(), InMemoryDocumentStore()
        return
    db = await SqliteDatabase(str(tmp_path / "bus.db")).open()
    try:
        yield SqliteEventStore(db), SqliteDocumentStore(db)
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def rabbitmq_bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """RabbitMQ transports under a prefix of the test's own, reaching the broker through a proxy
    whose connections `crash` cuts; every exchange and queue is deleted at the end."""
    url, unique_name = request.getfixturevalue("rabbitmq_url"), request.getfixturevalue(
        "unique_name")
    namespace = BrokerNamespace(url, f"{unique_name}.")
    proxy = TcpProxy(url)
    proxy_url = await proxy.start()
    store, documents = InMemoryEventStore(namespace.codec), InMemoryDocumentStore()

    def on_rabbitmq(retries: int = 2, concurrency: int = 8,
                    in_process_delays: tuple[float, ...] = (),
                    stop_grace: float = 30.0) -> Transport:
        return namespace.transport(store, documents, url=proxy_url,
                                   retry_delays=in_process_delays,
                                   delayed_retry_delays=BROKER_RETRY_DELAYS[:retries],
                                   concurrency=concurrency, stop_grace=stop_grace)

    async def crash(transport: Transport) -> None:
        assert isinstance(transport, RabbitMqTransport)
        await crash_rabbitmq(transport, proxy)

    async def cut() -> None:
        await proxy.close()

    async def restore() -> None:
        await proxy.start(proxy.listening_port)

    try:
        yield Bus(store, documents, on_rabbitmq, crash, cut, restore)
    finally:
        await namespace.cleanup()
        await proxy.close()


SERVICEBUS_LOCK = 5.0
"""Seconds of the peer's locks in the contract (Service Bus's shortest): short, for a crashed
process's messages to come again soon, yet long enough for the SDK's AutoLockRenewer (it
looks once a second and renews a lock shorter than ten seconds in its last three quarters;
a shorter lock is lost when the event loop is busy with a thousand messages)."""

SERVICEBUS_PREFETCH = 20
"""Messages held per subscription, and as many more in the SDK's own prefetch buffer, where
their locks run without renewal. With one handler at a time and a 5 s lock, the default's
hundred in that buffer outlive their locks and come again, which makes the cases with
hundreds of messages slow; twenty do not."""


@contextlib.asynccontextmanager
async def servicebus_bus() -> AsyncIterator[Bus]:
    from mussikon.adapters.messaging.servicebus.entities import subscription_rules
    from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
    from tests.servicebus_peer import EntityOptions, ServiceBusPeer

    store, documents, codec = InMemoryEventStore(), InMemoryDocumentStore(), EventCodec()
    peer = ServiceBusPeer(defaults=EntityOptions(lock_duration=SERVICEBUS_LOCK))
    peer.create_topic("mussikon-events")
    made: list[ServiceBusTransport] = []

    class OnPeer(ServiceBusTransport):
        """Creates on the peer the subscriptions it is started with (as `mussikon broker
        provision` would), then starts."""

        async def start(self, subscriptions: Sequence[Subscription]) -> None:
            existing = peer.subscriptions("mussikon-events")
            for name, subjects in subscription_rules(subscriptions, codec.event_types).items():
                if name.lower() not in existing:
                    peer.create_subscription("mussikon-events", name, set(subjects))
            await super().start(subscriptions)

    def on_servicebus(retries: int = 2, concurrency: int = 8,
                      in_process_delays: tuple[float, ...] = (),
                      stop_grace: float = 30.0) -> Transport:
        transport = OnPeer(peer.connection_string, store, documents, codec,
                           retry_delays=in_process_delays,
                           delayed_retry_delays=BROKER_RETRY_DELAYS[:retries],
                           concurrency=concurrency, stop_grace=stop_grace, lease_seconds=1.5,
                           poll_interval=0.01, poll_max_interval=0.05, timeout=10.0,
                           prefetch=SERVICEBUS_PREFETCH)
        made.append(transport)
        return transport

    crashed: list[Transport] = []

    async def crash(transport: Transport) -> None:
        crashed.append(transport)
        await crash_servicebus(transport)

    async def cut() -> None:
        await asyncio.to_thread(peer.stop)

    async def restore() -> None:
        await asyncio.to_thread(peer.start)

    with peer:
        try:
            yield Bus(store, documents, on_servicebus, crash, cut, restore)
        finally:
            for transport in made:  # stopped again if the test did (a no-op), or not at all
                if transport not in crashed:
                    await transport.stop()
    assert peer.management_settlements == 0, "a settlement fell back to $management"


async def crash_servicebus(transport: Transport) -> None:
    """Die like a killed process: the relay and the handlers stop where they are, nothing is
    settled or saved, the lock renewals stop; the peer keeps the messages locked until their
    locks expire, then delivers them again."""
    from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport

    assert isinstance(transport, ServiceBusTransport)
    consumer = transport.consumer
    tasks = [transport.relay._task if transport.relay else None,
             *(consumer._loops if consumer else []),
             *(consumer._workers.tasks if consumer else [])]
    for task in tasks:
        if task is not None:
            task.cancel()
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    if consumer is not None and consumer._renewer is not None:
        await consumer._renewer.close()
    await transport.client.close()


async def crash_in_process(transport: Transport) -> None:
    """Die like a killed process: every task stops where it is, nothing is drained or saved."""
    assert isinstance(transport, InProcessTransport)
    tasks = [t for r in transport.readers.values() for t in (r.task, *r.workers.tasks) if t]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def crash_rabbitmq(transport: RabbitMqTransport, proxy: TcpProxy) -> None:
    """Die like a killed process: the relay and the handlers stop where they are, nothing is
    acknowledged or saved, and the connection vanishes without a word (the broker gives the
    unacknowledged messages to the next consumer)."""
    tasks = [transport.broker._supervisor,  # no reconnecting
             transport.relay._task if transport.relay else None,
             *(transport.consumer._workers.tasks if transport.consumer else [])]
    for task in tasks:
        if task is not None:
            task.cancel()
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    proxy.cut()


async def replay(transport: Transport, dead_letter_id: str) -> bool:
    """Replay a dead letter and wait for the outcome: True if it was handled and left the dead
    letters. (A transport that does not replay in place sends it back to its queue, where a
    consumer handles it; failing again, it comes back.)"""
    sent_back = await transport.replay(dead_letter_id)
    if transport.replays_in_place:
        return sent_back
    assert sent_back is True
    await transport.wait_idle(10)
    return dead_letter_id not in {letter.id for letter in await transport.dead_letters()}


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


async def test_each_subscription_gets_every_event_of_its_types(bus: Bus) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": [], "closed": []}

    def recorder(name: str) -> Callable[[Envelope], Awaitable[None]]:
        async def handle(envelope: Envelope) -> None:
            seen[name].append(envelope.message_id)
        return handle

    ids = await append_musicians(bus.store, 5)
    closed = EventClosedEvent(gig_id="g1", reason="booked")
    await bus.store.append(closed.stream_id, [closed], 0)
    transport = bus.transport()
    await transport.start([subscription("a", recorder("a")), subscription("b", recorder("b")),
                           subscription("closed", recorder("closed"), EventClosedEvent)])
    await transport.wait_idle(5)
    await transport.stop()
    assert sorted(seen["a"]) == sorted(ids)
    assert sorted(seen["b"]) == sorted(ids)
    assert seen["closed"] == [str(closed.id)]


async def test_live_events_after_start_are_delivered(bus: Bus) -> None:
    got: list[str] = []

    async def handle(envelope: Envelope) -> None:
        got.append(envelope.message_id)

    transport = bus.transport()
    await transport.start([subscription("live", handle)])
    ids = await append_musicians(bus.store, 3)
    transport.wake()
    await transport.wait_idle(5)
    await transport.stop()
    assert got == ids


async def test_a_failing_handler_is_retried_until_it_succeeds(bus: Bus) -> None:
    attempts: list[int] = []

    async def flaky(envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        if envelope.attempt < 3:
            raise ConnectionError("mail server busy")

    await append_musicians(bus.store, 1)
    transport = bus.transport(retries=2)
    await transport.start([subscription("flaky", flaky)])
    await transport.wait_idle(5)
    assert await transport.dead_letters() == []
    await transport.stop()
    assert attempts == [1, 2, 3]


async def test_a_poison_message_is_dead_lettered_with_the_reason_and_blocks_nothing(
        bus: Bus) -> None:
    handled: list[str] = []
    ids = await append_musicians(bus.store, 4)
    poison = ids[1]

    async def handle(envelope: Envelope) -> None:
        if envelope.message_id == poison:
            raise ValueError("cannot render the welcome email")
        handled.append(envelope.message_id)

    transport = bus.transport(retries=2)
    await transport.start([subscription("welcome", handle)])
    await transport.wait_idle(5)
    [letter] = await transport.dead_letters()
    await transport.stop()
    assert handled == [i for i in ids if i != poison]
    assert letter.message_id == poison
    assert letter.subscription == "welcome"
    assert letter.exception == "ValueError"
    assert "cannot render the welcome email" in letter.reason
    assert letter.attempts == 3  # one try and the two configured retries
    assert letter.event_type == "MusicianRegisteredEvent"
    assert '"MusicianId"' in letter.body


async def test_dead_letters_replay_and_purge(bus: Bus) -> None:
    broken = True
    handled: list[str] = []

    async def handle(envelope: Envelope) -> None:
        if broken:
            raise RuntimeError("down")
        handled.append(envelope.message_id)

    ids = await append_musicians(bus.store, 2)
    transport = bus.transport(retries=0)
    await transport.start([subscription("s", handle)])
    await transport.wait_idle(5)
    letters = await transport.dead_letters()
    assert sorted(d.message_id for d in letters) == sorted(ids)
    assert await replay(transport, letters[0].id) is False  # still broken: stays, attempts grow
    again = {d.id: d for d in await transport.dead_letters()}
    assert set(again) == {d.id for d in letters}
    assert again[letters[0].id].attempts == 2
    broken = False
    assert await replay(transport, letters[0].id) is True
    assert handled == [letters[0].message_id]
    assert [d.id for d in await transport.dead_letters()] == [letters[1].id]
    assert await transport.purge_dead_letters() == 1
    assert await transport.dead_letters() == []
    with pytest.raises(KeyError):
        await transport.replay("s:no-such-letter")
    await transport.stop()


async def test_concurrency_per_subscription_is_bounded(bus: Bus) -> None:
    running = 0
    peak = 0

    async def slow(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)  # the handler's work: others may start meanwhile
        running -= 1

    await append_musicians(bus.store, 20)
    transport = bus.transport(concurrency=3)
    await transport.start([subscription("slow", slow)])
    await transport.wait_idle(10)
    await transport.stop()
    assert 1 < peak <= 3


async def test_a_message_waiting_for_its_retry_holds_no_handler_slot(bus: Bus) -> None:
    ids = await append_musicians(bus.store, 201)
    failing, others = ids[0], 0
    others_handled_at_each_attempt: list[int] = []

    async def handle(envelope: Envelope) -> None:
        nonlocal others
        if envelope.message_id != failing:
            others += 1
            return
        others_handled_at_each_attempt.append(others)
        if envelope.attempt == 1:
            raise ConnectionError("mail server busy")

    # One handler slot, and the failing message comes first: the 200 others can only be
    # handled before its second attempt if it gave its slot back while it waits.
    transport = bus.transport(retries=0, concurrency=1, in_process_delays=(2.0,))
    await transport.start([subscription("welcome", handle)])
    await transport.wait_idle(20)
    await transport.stop()
    assert others_handled_at_each_attempt == [0, 200]


async def test_the_events_of_each_stream_are_handled_in_stream_order(bus: Bus) -> None:
    handled: dict[str, list[str]] = {}
    running = peak = 0

    async def handle(envelope: Envelope) -> None:
        nonlocal running, peak
        event = envelope.event
        assert isinstance(event, MusicianRegisteredEvent)
        running += 1
        peak = max(peak, running)
        # The handler's work, longer for some events than others: without the order kept
        # per stream, a later event of a stream would often overtake an earlier one.
        await asyncio.sleep(0.002 * (int(event.name[1:]) % 3))
        running -= 1
        handled.setdefault(event.stream_id, []).append(event.name)

    versions = [f"v{n}" for n in range(20)]
    for stream in range(50):
        events = [MusicianRegisteredEvent(musician_id=f"m{stream}", email=f"m{stream}@x.io",
                                          name=version, genres=("Jazz",),
                                          location="Santo Domingo") for version in versions]
        await bus.store.append(events[0].stream_id, events, 0)
    transport = bus.transport(concurrency=8)
    await transport.start([subscription("ordered", handle)])
    await transport.wait_idle(30)
    await transport.stop()
    assert len(handled) == 50
    assert all(names == versions for names in handled.values())
    assert 1 < peak <= 8


async def test_a_message_waiting_for_its_retry_at_a_stop_is_delivered_again_after(
        bus: Bus) -> None:
    ids = await append_musicians(bus.store, 10)
    attempts: Counter[str] = Counter()

    async def fails_once(envelope: Envelope) -> None:
        attempts[envelope.message_id] += 1
        if envelope.message_id == ids[0] and attempts[ids[0]] == 1:
            raise ConnectionError("mail server busy")

    first = bus.transport(retries=0, in_process_delays=(3600.0,))
    await first.start([subscription("welcome", fails_once)])
    await eventually(lambda: sum(attempts.values()) == 10)
    await first.stop()  # the first message is waiting for its retry, an hour away
    assert attempts[ids[0]] == 1
    second = bus.transport(retries=0)
    await second.start([subscription("welcome", fails_once)])
    await eventually(lambda: attempts[ids[0]] == 2)
    await second.wait_idle(5)
    assert await second.dead_letters() == []
    await second.stop()


async def test_a_message_in_flight_when_the_process_dies_is_delivered_again_and_has_one_effect(
        bus: Bus) -> None:
    ids = await append_musicians(bus.store, 3)
    effects: Counter[str] = Counter()
    release = asyncio.Event()

    async def stuck_on_second(envelope: Envelope) -> None:
        if envelope.message_id == ids[1] and not release.is_set():
            await asyncio.sleep(3600)  # the process dies while this runs
        effects[envelope.message_id] += 1

    sub = idempotent(subscription("effects", stuck_on_second), bus.documents)
    first = bus.transport()
    await first.start([sub])

    async def the_others_handled_and_in_the_inbox() -> bool:
        return all([await bus.documents.has_seen("effects", ids[0]),
                    await bus.documents.has_seen("effects", ids[2])])

    await eventually(the_others_handled_and_in_the_inbox)
    await bus.crash(first)
    assert effects == Counter({ids[0]: 1, ids[2]: 1})

    release.set()
    second = bus.transport()
    await second.start([sub])
    # A broker may hold the dead process's message until its lock runs out (Service Bus).
    await second.wait_idle(15)
    await second.stop()
    assert effects == Counter({ids[0]: 1, ids[1]: 1, ids[2]: 1})


async def test_a_handler_still_running_after_the_stop_grace_is_cancelled_and_comes_again(
        bus: Bus) -> None:
    ids = await append_musicians(bus.store, 3)
    effects: Counter[str] = Counter()
    hanging, cancelled = asyncio.Event(), asyncio.Event()

    async def hangs_on_second(envelope: Envelope) -> None:
        if envelope.message_id == ids[1] and not cancelled.is_set():
            hanging.set()
            try:
                await asyncio.Event().wait()  # never returns by itself
            except asyncio.CancelledError:
                cancelled.set()
                raise
        effects[envelope.message_id] += 1

    sub = idempotent(subscription("effects", hangs_on_second), bus.documents)
    first = bus.transport(stop_grace=0.3)
    await first.start([sub])

    async def the_others_handled_the_second_hanging() -> bool:
        return hanging.is_set() and all([await bus.documents.has_seen("effects", ids[0]),
                                         await bus.documents.has_seen("effects", ids[2])])

    await eventually(the_others_handled_the_second_hanging)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await first.stop()
    took = loop.time() - began
    assert 0.3 <= took < 3  # the grace, not the handler's forever
    assert cancelled.is_set()
    assert effects == Counter({ids[0]: 1, ids[2]: 1})
    assert not await bus.documents.has_seen("effects", ids[1])

    # The next process gets it again: the broker redelivers the message handed back, the
    # in-process bus starts again from its checkpoint, which stayed before it.
    second = bus.transport()
    await second.start([sub])
    await second.wait_idle(5)
    await second.stop()
    assert effects == Counter({ids[0]: 1, ids[1]: 1, ids[2]: 1})


async def test_a_graceful_stop_keeps_the_checkpoint_so_nothing_is_delivered_twice(
        bus: Bus) -> None:
    got: list[str] = []

    async def handle(envelope: Envelope) -> None:
        got.append(envelope.message_id)

    earlier = await append_musicians(bus.store, 3)
    first = bus.transport()
    await first.start([subscription("once", handle)])
    await first.wait_idle(5)
    await first.stop()
    later = await append_musicians(bus.store, 2, start=10)
    second = bus.transport()
    await second.start([subscription("once", handle)])
    await second.wait_idle(5)
    await second.stop()
    assert sorted(got[:3]) == sorted(earlier)
    assert got[3:] == later


async def test_two_subscriptions_with_one_name_are_refused(bus: Bus) -> None:
    async def handle(envelope: Envelope) -> None:
        return None

    transport = bus.transport()
    with pytest.raises(ValueError, match="two subscriptions are named 'x'"):
        await transport.start([subscription("x", handle), subscription("x", handle)])
    await transport.stop()


# --- not about a transport: the inbox a subscription keeps in its document store ------------


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


async def test_dead_letters_page_in_a_stable_order_and_one_can_be_deleted(bus: Bus) -> None:
    store = bus.store

    async def refuse(envelope: Envelope) -> None:
        raise RuntimeError("down")

    await append_musicians(store, 5)
    transport = bus.transport(retries=0)
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


async def test_replay_all_in_place_runs_each_letter_once_and_reports_each(
        stores: Stores) -> None:
    store, documents = stores
    failing: set[str] = set()
    handled: Counter[str] = Counter()

    async def handle(envelope: Envelope) -> None:
        if not handled and not failing:
            raise RuntimeError("down")
        if envelope.message_id in failing:
            raise RuntimeError("still down")
        handled[envelope.message_id] += 1

    ids = await append_musicians(store, 3)
    transport = InProcessTransport(store, documents, EventCodec(), retry_delays=(),
                                   poll_interval=0.01, poll_max_interval=0.05)
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


async def test_ready_says_why_not_until_started_while_its_broker_is_away_and_once_stopped(
        bus: Bus) -> None:
    async def handle(envelope: Envelope) -> None:
        pass

    transport = bus.transport()
    reasons: list[str | None] = []

    async def ready() -> bool:
        reasons.append(await transport.ready())
        return reasons[-1] is None

    async def not_ready() -> bool:
        return not await ready()

    assert "not started" in (await transport.ready() or "")
    await transport.start([subscription("musicians", handle)])
    await eventually(ready, 10, what="ready once started")
    if bus.cut is not None and bus.restore is not None:
        await bus.cut()
        await eventually(not_ready, 30, what="not ready with the broker away")
        reason = reasons[-1] or ""
        assert "RabbitMQ" in reason or "Service Bus" in reason, reason
        assert ":guest@" not in reason and "SharedAccessKey" not in reason, reason
        await bus.restore()
        await eventually(ready, 30, what="ready with the broker back")
    await transport.stop()
    assert await transport.ready() is not None
