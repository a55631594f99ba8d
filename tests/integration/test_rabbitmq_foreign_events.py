"""Events another MussikOn service publishes, with pika playing the .NET service (PascalCase
JSON from tests/golden/, a new GUID as `message_id` on every publish, headers `EventType` and
`Version`), on SQLite and on PostgreSQL: recorded once in our store with origin `rabbitmq`,
handled like our own, one effect however often they come, and never published back to the
events exchange."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from mussikon.adapters.clock import OffsetClock
from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport, Topology
from mussikon.application.projections.analytics import (
    APPLICATION_SUBMITTED,
    CONTRACT_SIGNED,
    GIG_CREATED,
    PAYMENT_COMPLETED,
    USER_REGISTERED,
)
from mussikon.application.projections.directory import (
    APPLICATIONS,
    CONTRACTS,
    GIGS,
    ORGANIZERS,
    PROFILES,
)
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.domain.events import ContractDraftedEvent, OrganizerRegisteredEvent
from mussikon.wire import EventCodec
from tests.integration.rabbitmq_kit import BrokerNamespace, dotnet_publish
from tests.polling import eventually

pytestmark = pytest.mark.rabbitmq

GOLDEN = Path(__file__).parent.parent / "golden"
REGISTERED = (GOLDEN / "MusicianRegisteredEvent.json").read_bytes()
REGISTERED_ID = json.loads(REGISTERED)["Id"]
MUSICIAN_ID = json.loads(REGISTERED)["MusicianId"]


@dataclass
class Bus:
    """The application on SQLite with its RabbitMQ transport, and a spy queue that sees every
    message on the events exchange (the .NET service's and any we publish)."""

    app: App
    transport: RabbitMqTransport
    namespace: BrokerNamespace
    spy: str

    @property
    def exchange(self) -> str:
        return self.transport.topology.events_exchange

    async def publish(self, routing_key: str, body: bytes, event_type: str) -> str:
        """Publish as the .NET service does; the message's GUID."""
        return await asyncio.to_thread(dotnet_publish, self.namespace.url, self.exchange,
                                       routing_key, body, event_type)

    async def on_exchange(self) -> int:
        """Messages the spy queue got from the events exchange."""
        channel = await self.namespace.channel()
        return (await channel.queue_declare(self.spy, passive=True)).message_count or 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def bus(request: pytest.FixtureRequest, rabbitmq_url: str, unique_name: str,
              tmp_path: Path) -> AsyncIterator[Bus]:
    """The application on SQLite or PostgreSQL (a schema of its own, dropped afterwards)."""
    settings = Settings(poll_interval=0.01, poll_max_interval=0.1)
    if request.param == "sqlite":
        settings = settings.model_copy(update={
            "store_url": f"sqlite:///{tmp_path / 'foreign.db'}", "sqlite_synchronous": "NORMAL"})
    else:
        settings = settings.model_copy(update={
            "store_url": request.getfixturevalue("postgres_url"), "postgres_schema": unique_name})
    app = await open_app(settings, OffsetClock())
    namespace = BrokerNamespace(rabbitmq_url, f"{unique_name}.")
    transport = namespace.transport(app.store, app.documents, queue_type="classic")
    app.transport = transport
    spy = f"{namespace.prefix}spy"
    try:
        await app.start()
        channel = await namespace.channel()
        await channel.queue_declare(spy, durable=False)
        await channel.queue_bind(spy, transport.topology.events_exchange, routing_key="#")
        yield Bus(app, transport, namespace, spy)
    finally:
        await app.close()
        channel = await namespace.channel()
        await channel.queue_delete(spy)
        await namespace.cleanup()
        if request.param == "postgres":
            admin = await asyncpg.connect(settings.store_url)
            await admin.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
            await admin.close()


async def welcome_emails(app: App) -> int:
    sent = await app.notifier.sent()
    return sum(1 for s in sent if s.notification.recipient == "ana.perez@example.org")


@pytest.mark.parametrize("routing_key", ["musician.registered", "musicianregisteredevent"],
                         ids=["RabbitMQService", "EventBus"])
async def test_a_registration_from_another_service_is_handled_and_not_echoed(
        bus: Bus, routing_key: str) -> None:
    app = bus.app
    await bus.publish(routing_key, REGISTERED, "MusicianRegisteredEvent")

    async def handled() -> bool:
        summary = await app.analytics.summary()
        return (await welcome_emails(app) == 1 and summary.by_kind[USER_REGISTERED] == 1
                and await app.documents.get(PROFILES, MUSICIAN_ID) is not None)

    await eventually(handled, timeout=20)
    await app.settle()
    [stored] = await app.store.read_all()
    assert (str(stored.event.id), stored.origin) == (REGISTERED_ID, "rabbitmq")
    profile = await app.documents.get(PROFILES, MUSICIAN_ID)
    assert profile is not None and profile["name"] == "Ana Pérez"
    assert await bus.transport.dead_letters() == []
    # Only the .NET service's message went through the exchange: none of ours followed it.
    assert await bus.on_exchange() == 1
    assert bus.transport.relay is not None and bus.transport.relay.published == 0


async def test_the_same_event_published_twice_with_new_guids_has_one_effect(bus: Bus) -> None:
    app = bus.app
    guids = [await bus.publish("musician.registered", REGISTERED, "MusicianRegisteredEvent"),
             await bus.publish("musicianregisteredevent", REGISTERED, "MusicianRegisteredEvent")]
    assert guids[0] != guids[1]

    async def both_delivered() -> bool:
        consumer = bus.transport.consumer
        return consumer is not None and consumer.delivered >= 2

    await eventually(both_delivered, timeout=20)
    await app.settle()
    assert await welcome_emails(app) == 1
    assert (await app.analytics.summary()).by_kind[USER_REGISTERED] == 1
    assert [str(r.event.id) for r in await app.store.read_all()] == [REGISTERED_ID]
    assert await bus.on_exchange() == 2


ORGANIZER_ID = json.loads((GOLDEN / "EventCreatedEvent.json").read_bytes())["OrganizerId"]


def _golden(event_type: str) -> bytes:
    return (GOLDEN / f"{event_type}.json").read_bytes()


def _world() -> list[tuple[str, bytes]]:
    """The golden events of the specification, plus what they presuppose that the
    specification has no event for (the organizer, the contract's draft), as .NET writes
    them: (event type, body), in causal order."""
    application = json.loads(_golden("MusicianApplicationSubmittedEvent"))
    signed = json.loads(_golden("ContractSignedEvent"))
    codec = EventCodec()
    organizer = OrganizerRegisteredEvent(
        organizer_id=ORGANIZER_ID, email="lucia.gomez@example.org", name="Lucía Gómez",
        payment_source="tok_sandbox_visa")
    draft = ContractDraftedEvent(
        contract_id=signed["ContractId"], application_id=application["ApplicationId"],
        musician_id=MUSICIAN_ID, organizer_id=ORGANIZER_ID, gig_id=signed["EventId"],
        amount=Decimal(str(signed["Amount"])),
        event_date=datetime.fromisoformat(signed["EventDate"]))
    return [("MusicianRegisteredEvent", REGISTERED),
            ("OrganizerRegisteredEvent", codec.encode(organizer)),
            ("EventCreatedEvent", _golden("EventCreatedEvent")),
            ("MusicianApplicationSubmittedEvent", _golden("MusicianApplicationSubmittedEvent")),
            ("ContractDraftedEvent", codec.encode(draft)),
            ("ContractSignedEvent", _golden("ContractSignedEvent")),
            ("PaymentProcessedEvent", _golden("PaymentProcessedEvent"))]


CAUSES = [("EventCreatedEvent", "MusicianApplicationSubmittedEvent"),
          ("MusicianRegisteredEvent", "MusicianApplicationSubmittedEvent"),
          ("MusicianApplicationSubmittedEvent", "ContractDraftedEvent"),
          ("ContractDraftedEvent", "ContractSignedEvent"),
          ("ContractSignedEvent", "PaymentProcessedEvent")]


def _key(style: str, topology: Topology, event_type: str) -> str:
    return topology.routing_key(event_type) if style == "RabbitMQService" else \
        event_type.lower()


@pytest.mark.parametrize("style", ["RabbitMQService", "EventBus"])
async def test_every_seed_event_type_from_outside_is_handled_into_the_read_models(
        bus: Bus, style: str) -> None:
    """Published in reverse causal order, each twice with a new GUID: each event waits for
    what it presupposes, is recorded once in causal order, handled, and applied by every
    read model; nothing is dead-lettered and only what our handlers wrote is published."""
    app, topology = bus.app, bus.transport.topology
    world = _world()
    for _ in range(2):
        for event_type, body in reversed(world):
            await bus.publish(_key(style, topology, event_type), body, event_type)
    ids = [json.loads(body)["Id"] for _, body in world]
    contract_id = json.loads(_golden("ContractSignedEvent"))["ContractId"]

    async def paid() -> bool:
        contract = await app.documents.get(CONTRACTS, contract_id)
        return contract is not None and contract["status"] == "Paid"

    await eventually(paid, timeout=30)
    await bus.transport.wait_idle(30)
    await app.settle()
    stored = await app.store.read_all()
    foreign = [r for r in stored if r.origin]
    assert sorted((str(r.event.id), r.origin) for r in foreign) == sorted(
        (i, "rabbitmq") for i in ids)
    at = {r.event.event_type: r.position for r in foreign}
    for before, after in CAUSES:  # each recorded after what it presupposes
        assert at[before] < at[after], (before, after)
    assert await bus.transport.dead_letters() == []
    documents = app.documents
    assert await documents.get(PROFILES, MUSICIAN_ID) is not None
    assert await documents.get(ORGANIZERS, ORGANIZER_ID) is not None
    gig = json.loads(_golden("EventCreatedEvent"))["EventId"]
    assert (await documents.get(GIGS, gig) or {}).get("title") == "Noche de Jazz en la Zona " \
                                                                  "Colonial"
    application = json.loads(_golden("MusicianApplicationSubmittedEvent"))["ApplicationId"]
    assert await documents.get(APPLICATIONS, application) is not None
    summary = await app.analytics.summary()
    assert {kind: summary.by_kind[kind] for kind in (
        USER_REGISTERED, GIG_CREATED, APPLICATION_SUBMITTED, CONTRACT_SIGNED,
        PAYMENT_COMPLETED)} == {USER_REGISTERED: 2,  # the musician and the organizer
                                GIG_CREATED: 1, APPLICATION_SUBMITTED: 1, CONTRACT_SIGNED: 1,
                                PAYMENT_COMPLETED: 1}
    kinds = sorted(s.notification.kind for s in await app.notifier.sent())
    assert kinds.count("welcome") == 1 and kinds.count("application-received") == 1
    assert kinds.count("contract-confirmation") == 2 and kinds.count("payment-confirmation") == 2
    # What our handlers wrote in reply is ours, and our relay publishes it; nothing else.
    ours = len(stored) - len(foreign)
    assert ours >= 1  # the contract marked paid, at least

    async def ours_alone_published() -> bool:
        return await bus.on_exchange() == 2 * len(world) + ours

    await eventually(ours_alone_published)
    assert bus.transport.relay is not None and bus.transport.relay.published == ours


async def test_an_application_published_before_its_gig_is_handled_once_the_gig_arrives(
        bus: Bus) -> None:
    app = bus.app
    await bus.publish("musician.registered", REGISTERED, "MusicianRegisteredEvent")
    await bus.publish("application.submitted", _golden("MusicianApplicationSubmittedEvent"),
                      "MusicianApplicationSubmittedEvent")
    application = json.loads(_golden("MusicianApplicationSubmittedEvent"))["ApplicationId"]

    async def waiting() -> bool:  # went round a delayed queue at least once, not recorded
        consumer = bus.transport.consumer
        return consumer is not None and consumer.delivered >= 3
    await eventually(waiting, timeout=20)
    assert await app.documents.get(APPLICATIONS, application) is None
    organizer = OrganizerRegisteredEvent(
        organizer_id=ORGANIZER_ID, email="lucia.gomez@example.org", name="Lucía Gómez",
        payment_source="tok_sandbox_visa")
    await bus.publish("organizer.registered", EventCodec().encode(organizer),
                      "OrganizerRegisteredEvent")
    await bus.publish("event.created", _golden("EventCreatedEvent"), "EventCreatedEvent")

    async def organizer_told() -> bool:
        sent = await app.notifier.sent()
        return any(s.notification.kind == "application-received" for s in sent)

    await eventually(organizer_told, timeout=20)
    await bus.transport.wait_idle(30)
    types = [r.event.event_type for r in await app.store.read_all() if r.origin]
    assert types.index("EventCreatedEvent") < types.index("MusicianApplicationSubmittedEvent")
    assert await app.documents.get(APPLICATIONS, application) is not None
    assert await bus.transport.dead_letters() == []


async def test_a_signature_whose_draft_never_comes_is_dead_lettered_naming_it(
        bus: Bus) -> None:
    consumer = bus.transport.consumer
    assert consumer is not None
    consumer.prerequisite_wait = 0.5
    signed = _golden("ContractSignedEvent")
    await bus.publish("contract.signed", signed, "ContractSignedEvent")

    async def dead_lettered() -> bool:
        return bool(await bus.transport.dead_letters())

    await eventually(dead_lettered, timeout=20)
    [letter] = await bus.transport.dead_letters()
    contract_id = json.loads(signed)["ContractId"]
    assert letter.reason.startswith("prerequisite-missing: ContractSignedEvent ")
    assert letter.reason.endswith(f"not known: contract {contract_id} (ContractDraftedEvent)")
    assert letter.attempts == 0
    assert await bus.app.store.find_event(uuid.UUID(json.loads(signed)["Id"])) is None
    assert not any(s.notification.kind == "contract-confirmation"
                   for s in await bus.app.notifier.sent())
