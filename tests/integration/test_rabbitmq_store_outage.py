"""A store that cannot answer for a while (a database restarting) when a message arrives: the
message waits in the consumer and is handled once the store is back. Handed back to the broker
at once instead, it came straight back, each return counted by the quorum queue, and the
broker dead-lettered it after its delivery limit, within a second."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.domain.events import MusicianRegisteredEvent
from tests.fakes import UnavailableAtFirst
from tests.integration.rabbitmq_kit import BrokerNamespace, Recorder, append, sample_event

pytestmark = pytest.mark.rabbitmq


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
