"""Two Service Bus relays on one lease never publish side by side: a relay that stalls past
its lease (the namespace does not answer) and loses it to another publishes nothing more once
it resumes, and moves no checkpoint. The first relay reaches the peer through a proxy that
holds the peer's replies back; a subscription nobody receives from counts what reached the
topic."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.servicebus.aio import ServiceBusClient

from mussikon.adapters.messaging.servicebus.relay import RELAY
from mussikon.adapters.messaging.servicebus.transport import ServiceBusTransport
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import append, eventually, sample_event
from tests.integration.test_rabbitmq_relay_fencing import StoreView
from tests.integration.test_servicebus_transport import TOPIC
from tests.servicebus_peer import ServiceBusPeer
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.servicebus


SPY = "spy"


@pytest.fixture
async def peer(servicebus_peer: ServiceBusPeer) -> ServiceBusPeer:
    servicebus_peer.create_topic(TOPIC)
    servicebus_peer.create_subscription(TOPIC, SPY, {"MusicianRegisteredEvent"})
    return servicebus_peer


@pytest.fixture
async def proxy(peer: ServiceBusPeer) -> AsyncIterator[TcpProxy]:
    tcp = TcpProxy(f"sb://127.0.0.1:{peer.port}")
    yield tcp
    await tcp.close()


class Relays:
    """Relay-only transports over one event store, stopped at the end."""

    def __init__(self, peer: ServiceBusPeer) -> None:
        self.peer, self.codec = peer, EventCodec()
        self.store: EventStore = InMemoryEventStore(self.codec)
        self.made: list[ServiceBusTransport] = []

    async def start(self, documents: DocumentStore, lease_seconds: float,
                    port: int | None = None) -> ServiceBusTransport:
        """A relay saving each batch's position at once, an answer awaited far longer than
        the lease (the namespace may be slow), reaching the peer on `port` if given."""
        connection = self.peer.connection_string
        if port is not None:
            connection = connection.replace(f":{self.peer.port};", f":{port};")
        transport = ServiceBusTransport(connection, self.store, documents, self.codec,
                                        lease_seconds=lease_seconds, poll_interval=0.02,
                                        poll_max_interval=0.2, timeout=30.0, stop_grace=5.0)
        assert transport.relay is not None
        transport.relay.checkpoint_interval = 0.0
        self.made.append(transport)
        await transport.start([])
        return transport

    async def stop(self) -> None:
        for transport in self.made:
            await transport.stop()


@pytest.fixture
async def relays(peer: ServiceBusPeer) -> AsyncIterator[Relays]:
    made = Relays(peer)
    yield made
    await made.stop()


async def at_topic(peer: ServiceBusPeer) -> Counter[str]:
    """How often each message id reached the topic (the spy subscription's messages)."""
    async with (ServiceBusClient.from_connection_string(peer.connection_string) as client,
                client.get_subscription_receiver(TOPIC, SPY) as receiver):
        ids: Counter[str] = Counter()
        after = 1
        while page := await receiver.peek_messages(250, sequence_number=after):
            ids.update(str(m.message_id) for m in page)
            after = max(m.sequence_number or 0 for m in page) + 1
        return ids


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_a_relay_stalled_before_it_sends_past_its_lease_sends_nothing_after(
        peer: ServiceBusPeer, proxy: TcpProxy, relays: Relays) -> None:
    """The first relay has read a batch and waits for the namespace to open its sender link
    (the proxy holds the peer's replies) past its lease; the second takes over and sends
    everything. When the first's link opens, it sends nothing: every event reaches the topic
    exactly once."""
    documents = InMemoryDocumentStore()
    first = await relays.start(documents, 1.0, port_of(await proxy.start()))
    await eventually(lambda: first.relay is not None and first.relay.is_active)
    second = await relays.start(documents, 5.0)
    assert first.relay is not None and second.relay is not None
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(10)]

    proxy.hold_replies()
    await append(relays.store, events)
    first.wake()

    async def saved_by_second() -> bool:
        return second.relay is not None and second.relay.is_active and \
            await documents.checkpoint(RELAY) == len(events)

    await eventually(saved_by_second, 15)
    proxy.release_replies()
    await eventually(lambda: first.relay is not None and not first.relay.is_active,
                     what="the first to see it lost")
    assert first.relay.published == 0
    assert await at_topic(peer) == Counter({str(e.id): 1 for e in events})


async def test_a_relay_stalled_in_a_send_past_its_lease_neither_sends_nor_saves_after(
        peer: ServiceBusPeer, proxy: TcpProxy, relays: Relays) -> None:
    """The first relay sends a batch whose acknowledgement does not come (the proxy holds
    the peer's replies) until its lease ran out. The second takes over and sends from the
    checkpoint, that batch included, but cannot save its position yet. The first's
    acknowledgement arrives: it moves the checkpoint no further, nor sends anything more.
    The events of the batch in flight at the takeover reach the topic twice (the topic's
    duplicate detection, off here, would drop the repeat), every other event once."""
    shared = InMemoryDocumentStore()
    second_view = StoreView(shared)
    first = await relays.start(shared, 1.0, port_of(await proxy.start()))
    stale = first.relay
    assert stale is not None
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(21)]
    await append(relays.store, events[:1])
    first.wake()

    async def saved(position: int) -> bool:
        return await shared.checkpoint(RELAY) == position

    await eventually(lambda: saved(1))
    second = await relays.start(second_view, 5.0)  # stands by: the first holds the lease
    taking_over = second.relay
    assert taking_over is not None
    assert (stale.is_active, taking_over.is_active) == (True, False)

    proxy.hold_replies()
    second_view.hold_checkpoints()
    await append(relays.store, events[1:11])
    first.wake()

    async def reached(count: int) -> bool:
        return (await at_topic(peer)).total() >= count

    await eventually(lambda: reached(11), 15, what="the stalled batch at the topic")
    await eventually(lambda: reached(21), 15, what="the second relay to take over")
    await eventually(second_view.checkpoint_waiting.is_set, 15)
    assert taking_over.is_active

    proxy.release_replies()  # the first's acknowledgement arrives
    await eventually(lambda: not stale.is_active, 15, what="the first to see it lost")
    assert await shared.checkpoint(RELAY) == 1  # the stale relay saved nothing
    sent_by_stale = stale.published

    second_view.release_checkpoints()
    await eventually(lambda: saved(11))
    await append(relays.store, events[11:])
    first.wake()
    second.wake()
    await eventually(lambda: saved(21))
    assert stale.published == sent_by_stale and not stale.is_active
    expected: dict[str, Any] = {str(e.id): 2 if 1 <= n <= 10 else 1
                                for n, e in enumerate(events)}
    assert await at_topic(peer) == Counter(expected)
