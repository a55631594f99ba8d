"""The Service Bus transport through the official SDK against the local peer, in the
situations a deployment meets: a relay that publishes again after a crash (the topic's
duplicate detection drops the repeat), a .NET service's event that arrives before what it
presupposes, the namespace going away and coming back. Elsewhere: two relays on one lease
(test_servicebus_relay_fencing); a message abandoned at a stop, a worker killed mid-handler,
a lock that runs out (test_servicebus_live, on the peer and on a real namespace). No
ordinary settle goes through `$management`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mussikon.adapters.messaging.servicebus.relay import RELAY
from mussikon.domain.events import ContractDraftedEvent, MusicianRegisteredEvent
from tests.integration.rabbitmq_kit import Recorder, append, eventually, sample_event
from tests.integration.servicebus_kit import send_as_dotnet
from tests.integration.test_rabbitmq_relay_fencing import StoreView
from tests.integration.test_servicebus_transport import TOPIC, Bus
from tests.servicebus_peer import EntityOptions, ServiceBusPeer

pytestmark = pytest.mark.servicebus

GOLDEN = Path(__file__).parent.parent / "golden"
MUSICIANS = ["MusicianRegisteredEvent"]


@pytest.fixture
async def bus(servicebus_peer: ServiceBusPeer) -> AsyncIterator[Bus]:
    bus = Bus(servicebus_peer)
    yield bus
    if bus.transport is not None:
        await bus.transport.stop()
    assert servicebus_peer.management_settlements == 0, "a settle fell back to $management"


async def test_a_relay_crashing_before_its_checkpoint_publishes_again_and_the_topic_drops_it(
        bus: Bus) -> None:
    """The relay sends, then dies before it saves its position: the next relay sends the same
    events again from the saved position, and the topic's duplicate detection (MessageId is
    the event's id) drops them: each is delivered once."""
    bus.peer.create_topic(TOPIC, EntityOptions(lock_duration=5.0,
                                               duplicate_detection_window=600.0))
    shared = bus.documents
    view = StoreView(shared)
    view.hold_checkpoints()  # the crash comes before the position is saved
    bus.documents = view  # type: ignore[assignment]
    recorder = Recorder()  # no inbox: it counts every delivery
    subscription = recorder.subscription("musicians", MUSICIANS)
    bus.provision([subscription])
    first = await bus.start([])  # the relay alone: nothing consumes yet
    events = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(bus.store, events)
    first.wake()
    await eventually(lambda: first.relay is not None and first.relay.published == 5,
                     what="the first relay's sends")
    relay = first.relay
    assert relay is not None and relay._task is not None
    relay._task.cancel()  # dies here: sent, position not saved
    await first.client.close()
    assert await shared.checkpoint(RELAY) == 0
    bus.transport = None

    bus.documents = shared
    second = await bus.start([subscription])
    await second.wait_idle(30)
    assert second.relay is not None and second.relay.published == 5  # sent again
    assert recorder.calls == {str(e.id): 1 for e in events}  # delivered once


async def test_a_dotnet_event_waits_for_what_it_presupposes_and_is_handled_once_it_arrives(
        bus: Bus) -> None:
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("contracts", ["ContractSignedEvent"],
                                                       bus.documents)],
                                delayed_retry_delays=(0.3,), prerequisite_wait=60.0)
    signed = (GOLDEN / "ContractSignedEvent.json").read_bytes()
    await send_as_dotnet(bus.peer.connection_string, TOPIC, signed, "ContractSignedEvent")
    consumer = transport.consumer
    assert consumer is not None
    await eventually(lambda: consumer.delivered >= 3, 30, what="a few rounds of waiting")
    assert recorder.calls.total() == 0
    assert await transport.dead_letters() == []

    contract_id = json.loads(signed)["ContractId"]
    await append(bus.store, [sample_event(ContractDraftedEvent, contract_id=contract_id)])
    event_id = json.loads(signed)["Id"]
    await eventually(lambda: recorder.effects[event_id] == 1, 30, what="the signature handled")
    await transport.wait_idle(30)
    assert recorder.calls[event_id] == 1
    stored = await bus.store.find_event(uuid.UUID(event_id))
    assert stored is not None and stored.origin == "servicebus"
    assert await transport.dead_letters() == []


async def test_a_dotnet_event_whose_prerequisite_never_comes_is_dead_lettered_naming_it(
        bus: Bus) -> None:
    recorder = Recorder()
    await bus.start([recorder.subscription("contracts", ["ContractSignedEvent"])],
                    delayed_retry_delays=(0.2,), prerequisite_wait=0.5)
    signed = (GOLDEN / "ContractSignedEvent.json").read_bytes()
    await send_as_dotnet(bus.peer.connection_string, TOPIC, signed, "ContractSignedEvent")
    [letter] = await bus.dead_letters("contracts")
    contract_id = json.loads(signed)["ContractId"]
    assert letter.dead_letter_reason == "prerequisite-missing"
    assert letter.dead_letter_error_description.endswith(
        f"not known: contract {contract_id} (ContractDraftedEvent)")
    assert recorder.calls.total() == 0
    assert await bus.store.find_event(uuid.UUID(json.loads(signed)["Id"])) is None


async def test_the_worker_carries_on_when_the_namespace_goes_away_and_comes_back(
        bus: Bus) -> None:
    """The peer stops (its connections close) and starts again on the same port, keeping its
    messages, while the worker runs: what was published before and after is handled, once."""
    bus.peer.create_topic(TOPIC, EntityOptions(lock_duration=5.0))
    recorder = Recorder()
    transport = await bus.start([recorder.subscription("musicians", MUSICIANS,
                                                       bus.documents)])
    before = [sample_event(MusicianRegisteredEvent, n) for n in range(5)]
    await append(bus.store, before)
    transport.wake()
    await eventually(lambda: len(recorder.effects) == 5, 30, what="the first five handled")

    bus.peer.stop()
    during = [sample_event(MusicianRegisteredEvent, n) for n in range(5, 10)]
    await append(bus.store, during)
    transport.wake()
    bus.peer.start()
    after = [sample_event(MusicianRegisteredEvent, n) for n in range(10, 15)]
    await append(bus.store, after)
    transport.wake()
    await eventually(lambda: len(recorder.effects) == 15, 60, what="all fifteen handled")
    await transport.wait_idle(30)
    assert recorder.effects == {str(e.id): 1 for e in [*before, *during, *after]}
    assert transport.relay is not None
    assert await bus.documents.checkpoint(RELAY) == await bus.store.head_position()
