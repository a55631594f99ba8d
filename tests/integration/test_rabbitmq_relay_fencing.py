"""Two relays on one lease never publish side by side: a relay that stalls past its lease (a
paused process, a store it cannot reach, a broker that does not answer) and loses it to
another publishes nothing more once it resumes, and moves no checkpoint."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from tests.integration.rabbitmq_kit import BrokerNamespace, append, eventually, sample_event
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

RELAY = "relay"


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


class StoreView(DocumentStore):
    """The shared document store as one process reaches it. `cut()`: every call waits until
    `heal()` (a network partition, or the process paused). `hold_checkpoints()`: checkpoint
    writes wait (`checkpoint_waiting` is set then) until `release_checkpoints()`."""

    def __init__(self, shared: DocumentStore) -> None:
        self.shared = shared
        self._reachable, self._checkpoints = asyncio.Event(), asyncio.Event()
        self._reachable.set()
        self._checkpoints.set()
        self.checkpoint_waiting = asyncio.Event()

    def cut(self) -> None:
        self._reachable.clear()

    def heal(self) -> None:
        self._reachable.set()

    def hold_checkpoints(self) -> None:
        self._checkpoints.clear()

    def release_checkpoints(self) -> None:
        self._checkpoints.set()

    async def get(self, collection: str, key: str) -> Document | None:
        await self._reachable.wait()
        return await self.shared.get(collection, key)

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        await self._reachable.wait()
        return await self.shared.scan(collection, prefix)

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        await self._reachable.wait()
        if checkpoint is not None and not self._checkpoints.is_set():
            self.checkpoint_waiting.set()
            await self._checkpoints.wait()
        return await self.shared.commit(changes, checkpoint=checkpoint, inbox=inbox,
                                        expected=expected, fence=fence)

    async def checkpoint(self, name: str) -> int:
        await self._reachable.wait()
        return await self.shared.checkpoint(name)

    async def checkpoints(self) -> dict[str, int]:
        await self._reachable.wait()
        return await self.shared.checkpoints()

    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        await self._reachable.wait()
        await self.shared.reset_checkpoint(name, collections)

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        await self._reachable.wait()
        return await self.shared.try_lease(name, owner, seconds)

    async def release_lease(self, name: str, owner: str) -> None:
        await self._reachable.wait()
        await self.shared.release_lease(name, owner)

    async def has_seen(self, consumer: str, message_id: str) -> bool:
        await self._reachable.wait()
        return await self.shared.has_seen(consumer, message_id)

    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        await self._reachable.wait()
        return await self.shared.prune_inbox(older_than, limit)

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        await self._reachable.wait()
        return await self.shared.scan_page(collection, after=after, limit=limit, prefix=prefix,
                                           before=before)


def relay_of(transport: RabbitMqTransport) -> RabbitMqTransport:
    """The transport, its relay made to save each confirmed batch at once, one batch in
    flight, and a confirm wait far longer than the lease (the broker may be slow)."""
    assert transport.relay is not None
    transport.relay.checkpoint_interval = 0.0
    transport.relay.batches_in_flight = 1
    transport.broker.timeout = 30.0
    return transport


async def queued_ids(broker: BrokerNamespace, transport: RabbitMqTransport) -> Counter[str]:
    """How often each message id reached the events' queue (a spy: nobody consumes it)."""
    channel = await broker.channel()
    queue = transport.topology.queue("MusicianRegisteredEvent")
    ids: Counter[str] = Counter()
    while (message := await channel.basic_get(queue, no_ack=False)).delivery_tag is not None:
        ids[str(message.header.properties.message_id)] += 1
    await channel.close()  # the messages go back to the queue
    return ids


async def queued(broker: BrokerNamespace, transport: RabbitMqTransport) -> int:
    channel = await broker.channel()
    queue = transport.topology.queue("MusicianRegisteredEvent")
    count = (await channel.queue_declare(queue, passive=True)).message_count
    await channel.close()
    return int(count or 0)


async def test_a_relay_stalled_in_a_publish_past_its_lease_neither_publishes_nor_saves_after(
        broker: BrokerNamespace, proxy: TcpProxy) -> None:
    """The first relay sends a batch whose confirms do not come (the proxy holds the
    broker's replies) and cannot reach the store to renew its lease. The second takes over
    and publishes from the checkpoint, that batch included, but cannot save its position
    yet. The first resumes: its confirms arrive and the store answers, and still it moves
    the checkpoint no further, nor publishes anything more.

    What is guaranteed, and asserted exactly: the events of the batch in flight at the
    takeover are published by both relays (at least once; consumers recognise a repeat by
    its message id), every other event by one relay, once; the stale relay never moves the
    checkpoint."""
    store, shared = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    first_view, second_view = StoreView(shared), StoreView(shared)
    url = await proxy.start()
    first = relay_of(broker.transport(store, first_view, url=url, lease_seconds=1.0))
    second = relay_of(broker.transport(store, second_view, lease_seconds=5.0))
    stale, taking_over = first.relay, second.relay
    assert stale is not None and taking_over is not None
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(21)]

    await first.start([])
    await append(store, events[:1])
    first.wake()

    async def saved(position: int) -> bool:
        return await shared.checkpoint(RELAY) == position

    await eventually(lambda: saved(1))
    await second.start([])  # stands by: the first holds the lease
    assert (stale.is_active, taking_over.is_active) == (True, False)

    proxy.hold_replies()
    await append(store, events[1:11])
    first.wake()

    async def at_broker(count: int) -> bool:
        return await queued(broker, first) >= count

    await eventually(lambda: at_broker(11), what="the stalled batch at the broker")
    first_view.cut()  # no renewal reaches the store: the lease runs out
    second_view.hold_checkpoints()
    await eventually(lambda: at_broker(21), what="the second relay to take over")
    await asyncio.wait_for(second_view.checkpoint_waiting.wait(), 10)
    assert taking_over.is_active

    proxy.release_replies()  # the first's confirms arrive
    first_view.heal()  # and the store answers it again
    await eventually(lambda: not stale.is_active, what="the first to see it lost")
    assert await shared.checkpoint(RELAY) == 1  # the stale relay saved nothing
    assert stale.published == 1  # and counts nothing of the batch it gave up

    second_view.release_checkpoints()
    await eventually(lambda: saved(11))
    await append(store, events[11:])
    first.wake()
    second.wake()
    await eventually(lambda: saved(21))
    assert stale.published == 1 and not stale.is_active
    assert await queued_ids(broker, first) == Counter(
        {str(e.id): 2 if 1 <= n <= 10 else 1 for n, e in enumerate(events)})


async def test_a_relay_stalled_before_it_publishes_past_its_lease_publishes_nothing_after(
        broker: BrokerNamespace, proxy: TcpProxy) -> None:
    """The first relay has read a batch and waits for the broker to open its channel (the
    proxy holds the broker's replies) past its lease; the second takes over and publishes
    everything. When the first's channel opens, it sends nothing: no batch was in flight at
    the takeover, so every event is published exactly once."""
    store, documents = InMemoryEventStore(broker.codec), InMemoryDocumentStore()
    url = await proxy.start()
    first = relay_of(broker.transport(store, documents, url=url, lease_seconds=1.0))
    second = relay_of(broker.transport(store, documents, lease_seconds=5.0))
    assert first.relay is not None and second.relay is not None
    await first.start([])
    await eventually(lambda: first.relay is not None and first.relay.is_active)
    await second.start([])
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(10)]

    proxy.hold_replies()
    await append(store, events)
    first.wake()

    async def saved_by_second() -> bool:
        return second.relay is not None and second.relay.is_active and \
            await documents.checkpoint(RELAY) == len(events)

    await eventually(saved_by_second)
    proxy.release_replies()
    await eventually(lambda: first.relay is not None and not first.relay.is_active,
                     what="the first to see it lost")
    assert first.relay.published == 0
    assert await queued_ids(broker, first) == Counter({str(e.id): 1 for e in events})
