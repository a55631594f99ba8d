"""Recovery on RabbitMQ: connections lost under load, a broker that stops answering, a relay
dying between publishing and saving its position, a worker killed mid-handler, two relays
sharing one lease, a graceful stop. Nothing is lost and no effect happens twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.documents import Changes, Fence
from tests.integration.rabbitmq_kit import (
    BrokerNamespace,
    Recorder,
    append,
    close_broker_connections,
    eventually,
    sample_event,
)
from tests.integration.rabbitmq_worker import EFFECTS, effect_writer
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

MUSICIANS = ["MusicianRegisteredEvent"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[TcpProxy]:
    tcp = TcpProxy(rabbitmq_url)
    yield tcp
    await tcp.close()


async def test_network_loss_under_load_loses_nothing_and_duplicates_no_effect(
        broker: BrokerNamespace, proxy: TcpProxy) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder(delay=0.002)
    url = await proxy.start()
    transport = broker.transport(store, documents, url=url, relay_batch_size=50, prefetch=20)
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(300)]
    await append(store, events)
    transport.wake()
    for cut_after in (60, 180):
        async def progressed(count: int = cut_after) -> bool:
            return len(recorder.handled) >= count

        await eventually(progressed)
        proxy.cut()  # both the relay's and the consumer's connections die mid-stream
    await transport.wait_idle(30)
    assert transport.broker.reconnections >= 2
    assert set(recorder.effects) == {str(e.id) for e in events}
    assert max(recorder.effects.values()) == 1


async def test_the_heartbeat_finds_a_silent_connection_dead_within_about_the_timeout(
        broker: BrokerNamespace) -> None:
    transport = broker.transport(timeout=30, relay=False)
    await transport.start([])
    connection = await transport.broker.connection()
    # aiormq gives up after three heartbeat intervals and a second each: (9 + 1) * 3 = 30 s
    assert connection.connection_tune.heartbeat == 9


async def test_a_broker_that_stops_answering_fails_the_publish_in_time_and_is_reconnected(
        broker: BrokerNamespace, proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    # A long heartbeat: what finds the broker silent here is the operation's timeout.
    url = await proxy.start() + "?heartbeat=60"
    transport = broker.transport(store, documents, url=url, timeout=0.5)
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(6)]
    await append(store, events[:1])
    transport.wake()
    await eventually(lambda: len(recorder.handled) == 1)

    proxy.stall()  # the connection stays open, and the broker is never heard from again
    loop = asyncio.get_running_loop()
    began = loop.time()
    await append(store, events[1:])
    transport.wake()  # the relay publishes, and waits for confirms that never come
    await eventually(lambda: transport.broker.reconnections >= 1, timeout=10)
    took = loop.time() - began
    # The timeout, then the close of the silent connection (aiormq waits 2 s for the broker's
    # last word), then a new connection: not the minutes of the heartbeat, never forever.
    assert 0.5 <= took < 6
    assert any("no answer within 0.5 s (confirming published events)" in r.getMessage()
               for r in caplog.records)
    await transport.wait_idle(15)
    assert set(recorder.effects) == {str(e.id) for e in events}
    assert max(recorder.effects.values()) == 1


async def test_a_stop_returns_when_the_broker_stops_answering(
        broker: BrokerNamespace, proxy: TcpProxy) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    url = await proxy.start() + "?heartbeat=60"
    transport = broker.transport(store, documents, url=url, timeout=0.5, relay=False)
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    proxy.stall()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(transport.stop(), 20)  # cancelling the consumers is never answered
    assert loop.time() - began < 6


async def test_connections_closed_by_the_broker_are_reopened(broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder(delay=0.002)
    transport = broker.transport(store, documents)
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(100)]
    await append(store, events[:50])
    transport.wake()

    async def some_handled() -> bool:
        return len(recorder.handled) >= 10

    await eventually(some_handled)
    closed = await asyncio.to_thread(close_broker_connections, f"test-{broker.prefix}")
    if closed < 0:
        pytest.skip("rabbitmqctl is not usable here")
    assert closed >= 1
    await append(store, events[50:])
    transport.wake()
    await transport.wait_idle(30)
    assert transport.broker.reconnections >= 1
    assert set(recorder.effects) == {str(e.id) for e in events}
    assert max(recorder.effects.values()) == 1


async def test_a_consuming_channel_closed_by_the_broker_is_reopened(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder()
    transport = broker.transport(store, documents)
    await transport.start([recorder.subscription("welcome", MUSICIANS, documents)])
    first = sample_event(MusicianRegisteredEvent, 1)
    await append(store, [first])
    transport.wake()
    await transport.wait_idle(10)
    assert transport.consumer is not None
    channel = transport.consumer._channel
    assert channel is not None
    # A channel-level error: the broker closes the channel and leaves the connection open.
    await channel.basic_ack(10_000)

    async def channel_closed() -> bool:
        return channel.is_closed

    await eventually(channel_closed)
    later = sample_event(MusicianRegisteredEvent, 2)
    await append(store, [later])
    transport.wake()
    await transport.wait_idle(15)
    assert [e.message_id for e in recorder.handled] == [str(first.id), str(later.id)]
    assert transport.broker.reconnections >= 1


class StallingCheckpoints(InMemoryDocumentStore):
    """A document store on which the relay's checkpoint write hangs while `stall` is set: the
    relay has published and had its batch confirmed, and dies before saving its position."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = True
        self.stalled = asyncio.Event()

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        if checkpoint is not None and checkpoint[0] == "relay" and self.stall:
            self.stalled.set()
            await asyncio.Event().wait()
        return await super().commit(changes, checkpoint=checkpoint, inbox=inbox,
                                    expected=expected, fence=fence)


async def test_a_relay_dying_before_saving_its_position_republishes_only_the_unsaved_batch(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), StallingCheckpoints()
    first_recorder = Recorder()
    subscription = first_recorder.subscription("welcome", MUSICIANS, documents)
    saved = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    unsaved = [sample_event(MusicianRegisteredEvent, n) for n in range(5, 25)]
    await append(store, saved)
    documents.stall = False
    await documents.commit(Changes(), checkpoint=("relay", len(saved)))  # published earlier
    documents.stall = True
    await append(store, unsaved)

    first = broker.transport(store, documents)
    await first.start([subscription])
    await asyncio.wait_for(documents.stalled.wait(), 10)
    assert first.relay is not None
    await first.relay.stop(timeout=0.05)  # the relay dies between confirm and checkpoint
    assert await documents.checkpoint("relay") == len(saved)

    async def handled_once() -> bool:
        return len(first_recorder.handled) == len(unsaved)

    await eventually(handled_once)
    await first.stop()

    documents.stall = False
    second = broker.transport(store, documents)
    await second.start([subscription])
    await second.wait_idle(15)
    assert second.relay is not None and second.consumer is not None
    assert second.relay.published == len(unsaved)  # the unconfirmed batch, nothing before it
    assert second.consumer.delivered == len(unsaved)  # the repeats did arrive …
    assert set(first_recorder.effects) == {str(e.id) for e in unsaved}
    assert max(first_recorder.effects.values()) == 1  # … and the inbox made them no-ops
    await second.stop()
    assert await documents.checkpoint("relay") == len(saved) + len(unsaved)


async def test_two_relays_with_one_lease_publish_each_event_once(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    one = broker.transport(store, documents)
    two = broker.transport(store, documents)
    await one.start([])
    await two.start([])
    await append(store, [sample_event(MusicianRegisteredEvent, n) for n in range(10)])
    one.wake()
    two.wake()

    async def published(count: int) -> bool:
        return (one.relay is not None and two.relay is not None
                and max(await one.relay.position(), await two.relay.position()) == count)

    await eventually(lambda: published(10))
    assert one.relay is not None and two.relay is not None
    counts = sorted([one.relay.published, two.relay.published])
    assert counts == [0, 10]
    active, standby = (one, two) if one.relay.published else (two, one)
    assert standby.relay is not None and not standby.relay.is_active

    await active.stop()  # releases the lease: the standby takes over
    await append(store, [sample_event(MusicianRegisteredEvent, n) for n in range(10, 15)])
    standby.wake()
    await eventually(lambda: published(15))
    assert standby.relay.published == 5
    channel = await broker.channel()
    queue = standby.topology.queue("MusicianRegisteredEvent")
    assert (await channel.queue_declare(queue, passive=True)).message_count == 15


async def test_stop_finishes_the_handlers_running_and_hands_back_the_rest(
        broker: BrokerNamespace) -> None:
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    recorder = Recorder(delay=0.3)
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(6)]
    first = broker.transport(store, documents, concurrency=2, prefetch=10)
    await first.start([recorder.subscription("slow", MUSICIANS)])  # no inbox: counts are raw
    await append(store, events)
    first.wake()

    async def started() -> bool:
        return sum(recorder.calls.values()) >= 2

    await eventually(started)
    await first.stop()
    finished = set(recorder.effects)
    assert len(finished) == 2  # the two running finished; the other four were not started

    second = broker.transport(store, documents, relay=False)
    await second.start([recorder.subscription("slow", MUSICIANS)])
    await second.wait_idle(15)
    assert set(recorder.effects) == {str(e.id) for e in events}
    assert max(recorder.effects.values()) == 1  # the finished ones were acknowledged


async def test_a_worker_killed_mid_handler_has_its_message_redelivered_with_one_effect(
        broker: BrokerNamespace, tmp_path: Path) -> None:
    path = str(tmp_path / "worker.db")
    db = await SqliteDatabase(path).open()
    store, documents = SqliteEventStore(db), SqliteDocumentStore(db)
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(store, events)
    victim = str(events[2].id)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.rabbitmq_worker", path, broker.url,
        broker.prefix, victim,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 20)
        assert line.decode().strip() == f"handling {victim}"
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    assert await documents.get(EFFECTS, victim) is None

    survivor = broker.transport(store, documents)
    await survivor.start([effect_writer(documents)])
    await survivor.wait_idle(20)
    effects = await documents.scan(EFFECTS)
    assert sorted(key for key, _ in effects) == sorted(str(e.id) for e in events)
    for event in events:
        assert await documents.has_seen("welcome", str(event.id))
    await survivor.stop()
    await db.close()
