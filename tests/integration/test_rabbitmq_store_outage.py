"""A store that cannot answer for a while (a database restarting) when a message arrives: the
message waits in the consumer and is handled once the store is back. Handed back to the broker
at once instead, it came straight back, each return counted by the quorum queue, and the
broker dead-lettered it after its delivery limit, within a second."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.event_store import RecordedEvent, StoreUnavailable
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import BrokerNamespace, Recorder, append, sample_event

pytestmark = pytest.mark.rabbitmq


class UnavailableAtFirst(InMemoryEventStore):
    """A store whose look-up by event id fails its first `failures` times."""

    def __init__(self, codec: EventCodec, failures: int) -> None:
        super().__init__(codec)
        self.failures = failures

    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("PostgreSQL is restarting")
        return await super().find_event(event_id)


@pytest.fixture
async def broker(rabbitmq_url: str, unique_name: str) -> AsyncIterator[BrokerNamespace]:
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    yield namespace
    await namespace.cleanup()


async def test_a_message_waits_for_the_store_rather_than_reach_its_delivery_limit(
        broker: BrokerNamespace) -> None:
    store = UnavailableAtFirst(broker.codec, failures=6)
    documents = InMemoryDocumentStore()
    recorder = Recorder()
    transport = broker.transport(store, documents, delivery_limit=3)
    await transport.start([recorder.subscription("welcome", ["MusicianRegisteredEvent"],
                                                 documents)])
    event = sample_event(MusicianRegisteredEvent)
    await append(store, [event])
    transport.wake()
    await transport.wait_idle(30)

    assert store.failures == 0  # it did fail six times, twice the delivery limit
    assert recorder.effects == {str(event.id): 1}
    assert await transport.dead_letters() == []
