"""The specification's handlers against fakes of the outbound ports: each step does its thing,
and handling an event twice has no second effect."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.application.handlers import Dependencies, subscriptions
from mussikon.application.marketplace import Marketplace
from mussikon.application.projections.analytics import AnalyticsProjection, ProjectionAnalytics
from mussikon.application.projections.availability import Availability
from mussikon.application.projections.directory import PROFILES, Directory
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.application.repository import Repository
from mussikon.domain.application import Application, ApplicationStatus
from mussikon.domain.contract import Contract, ContractStatus
from mussikon.domain.events import (
    PAYMENT_COMPLETED,
    PAYMENT_DECLINED,
    ContractSignedEvent,
    DomainEvent,
    PaymentProcessedEvent,
)
from mussikon.ports.event_store import RecordedEvent
from mussikon.ports.payments import ChargeRequest, ChargeResult, ChargeStatus, PaymentGateway
from mussikon.ports.transport import Envelope
from tests.fakes import FakeNotifier


@dataclass
class FakeGateway(PaymentGateway):
    """Charges by idempotency key; declines the token `tok_chargeDeclined`."""

    charges: dict[str, ChargeRequest] = field(default_factory=dict)
    calls: int = 0

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls += 1
        self.charges.setdefault(request.idempotency_key, request)
        status: ChargeStatus = ("Declined" if request.source == "tok_chargeDeclined"
                                else "Completed")
        return ChargeResult(status=status, transaction_id=f"txn_{request.idempotency_key[-6:]}",
                            decline_code="card_declined" if status == "Declined" else "")


class World:
    """A marketplace on memory stores whose handlers run when `handle_new` is called."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.documents = InMemoryDocumentStore()
        self.repository = Repository(self.store)
        self.marketplace = Marketplace(self.repository)
        self.notifier = FakeNotifier()
        self.gateway = FakeGateway()
        self.projections = ProjectionRunner(self.store, self.documents,
                                            [Directory(), Availability(),
                                             AnalyticsProjection()])
        self.deps = Dependencies(self.marketplace, self.repository, self.documents,
                                 self.notifier, ProjectionAnalytics(self.documents), self.gateway,
                                 self.projections)
        self.handlers = {next(iter(s.event_types)): s for s in subscriptions(self.deps)}
        self.handled_up_to = 0

    async def handle(self, record: RecordedEvent) -> None:
        sub = self.handlers.get(record.event.event_type)
        if sub is not None:
            await sub.handler(Envelope(str(record.event.id), record.event, record.position))

    async def handle_new(self) -> list[RecordedEvent]:
        """Run the handlers over every event not handled yet, including those they write."""
        done: list[RecordedEvent] = []
        while batch := await self.store.read_all(self.handled_up_to + 1):
            for record in batch:
                await self.handle(record)
                self.handled_up_to = record.position
            done.extend(batch)
        return done

    async def pay(self, contract_id: str, status: str) -> None:
        """Record a payment of the contract with the gateway's answer, as the booking saga does."""
        payment = await self.marketplace.request_payment(contract_id, "pay-1")
        await self.marketplace.record_payment_outcome(payment.id, status=status,
                                                      transaction_id="txn_test")

    async def last(self, event_type: type[DomainEvent]) -> RecordedEvent:
        records = await self.store.read_by_type(event_type.__name__)
        return records[-1]

    async def booked_contract(self, source: str = "tok_visa") -> tuple[str, str, str]:
        """An organizer, a musician, a gig, an accepted application and a drafted contract."""
        m = self.marketplace
        organizer = await m.register_organizer(email="org@casa.example", name="Casa",
                                               payment_source=source)
        musician = await m.register_musician(email="ana@x.example", name="Ana",
                                             genres=["Jazz"], location="Santo Domingo")
        gig = await m.create_gig(organizer_id=organizer, title="Jazz night",
                                 event_date=datetime.now(UTC) + timedelta(days=10),
                                 location="Santo Domingo", genre="Jazz",
                                 budget=Decimal("1500.00"))
        application = await m.submit_application(musician_id=musician, gig_id=gig,
                                                 message="Trio", proposed_fee=Decimal("1200.50"))
        await m.accept_application(application, organizer_id=organizer)
        contract = await m.draft_contract(application)
        return organizer, musician, contract


@pytest.fixture
def world() -> World:
    return World()


async def test_a_registered_musician_is_welcomed_tracked_and_gets_a_profile(world: World) -> None:
    musician = await world.marketplace.register_musician(
        email="ana@x.example", name="Ana", genres=["Jazz", "Salsa"], location="Santo Domingo")
    await world.handle_new()
    assert world.notifier.kinds_to("ana@x.example") == ["welcome"]
    profile = await world.documents.get(PROFILES, musician)
    assert profile is not None
    assert profile["genres"] == ["Jazz", "Salsa"]
    summary = await world.deps.analytics.summary()
    assert summary.by_kind["user-registered"] == 1
    assert summary.by_genre == {"Jazz": 1, "Salsa": 1}


async def test_handling_the_same_registration_twice_sends_one_welcome(world: World) -> None:
    await world.marketplace.register_musician(email="ana@x.example", name="Ana",
                                              genres=["Jazz"], location="Santo Domingo")
    [record] = await world.handle_new()
    await world.handle(record)
    assert world.notifier.kinds_to("ana@x.example") == ["welcome"]
    assert (await world.deps.analytics.summary()).by_kind["user-registered"] == 1


async def test_a_new_gig_notifies_only_musicians_of_its_genre_and_location(world: World) -> None:
    m = world.marketplace
    for email, genres, location in (("jazz-sd@x.example", ["Jazz"], "Santo Domingo"),
                                    ("salsa-sd@x.example", ["Salsa"], "Santo Domingo"),
                                    ("jazz-pc@x.example", ["jazz"], "Punta Cana"),
                                    ("both-sd@x.example", ["Salsa", "JAZZ"], "santo domingo")):
        await m.register_musician(email=email, name="M", genres=genres, location=location)
    organizer = await m.register_organizer(email="org@x.example", name="Org")
    await m.create_gig(organizer_id=organizer, title="Jazz", location="Santo Domingo",
                       event_date=datetime.now(UTC) + timedelta(days=3), genre="Jazz",
                       budget=Decimal(500))
    await world.handle_new()
    told = sorted(n.recipient for n in world.notifier.outbox if n.kind == "new-gig")
    assert told == ["both-sd@x.example", "jazz-sd@x.example"]


async def test_an_application_is_announced_to_the_organizer(world: World) -> None:
    await world.booked_contract()
    await world.handle_new()
    [notice] = [n for n in world.notifier.outbox if n.recipient == "org@casa.example"]
    assert notice.kind == "application-received"
    assert "Ana applied to play Jazz night for 1,200.50 USD" in notice.body
    assert "Trio" in notice.body  # the musician's message


async def test_an_application_for_a_day_the_musician_is_booked_is_rejected(
        world: World) -> None:
    organizer, musician, _ = await world.booked_contract()
    await world.handle_new()
    gig = await world.marketplace.create_gig(
        organizer_id=organizer, title="Same night elsewhere",
        event_date=datetime.now(UTC) + timedelta(days=10), location="Santo Domingo",
        genre="Jazz", budget=Decimal(800))
    second = await world.marketplace.submit_application(
        musician_id=musician, gig_id=gig, message="Me again", proposed_fee=Decimal(700))
    await world.handle_new()
    application = await world.repository.load(Application, second)
    assert application.status is ApplicationStatus.REJECTED
    assert "already has contract" in application.reason
    assert "application-rejected" in world.notifier.kinds_to("ana@x.example")


async def test_an_application_handled_after_its_own_contract_booked_the_day_stands(
        world: World) -> None:
    _, _, contract = await world.booked_contract()  # drafted before any handler ran
    await world.handle_new()
    [submitted] = await world.store.read_by_type("MusicianApplicationSubmittedEvent")
    application = await world.repository.load(Application, submitted.event.application_id)  # type: ignore[attr-defined]
    assert application.status is ApplicationStatus.ACCEPTED
    assert "application-rejected" not in world.notifier.kinds_to("ana@x.example")
    assert (await world.repository.load(Contract, contract)).exists


async def test_a_signed_contract_is_confirmed_once_and_tracked_but_not_charged_here(
        world: World) -> None:
    organizer, musician, contract_id = await world.booked_contract()
    await world.marketplace.sign_contract(contract_id, musician)
    await world.marketplace.sign_contract(contract_id, organizer)
    await world.handle_new()
    signed = await world.last(ContractSignedEvent)
    await world.handle(signed)  # a redelivery
    assert world.gateway.calls == 0  # the booking saga takes the initial payment
    for party in ("ana@x.example", "org@casa.example"):
        assert world.notifier.kinds_to(party).count("contract-confirmation") == 1
    summary = await world.deps.analytics.summary()
    assert summary.by_kind["contract-signed"] == 1
    assert summary.contracted == Decimal("1200.50")


async def test_a_completed_payment_is_confirmed_once_and_marks_the_contract_paid(
        world: World) -> None:
    organizer, musician, contract_id = await world.booked_contract()
    await world.marketplace.sign_contract(contract_id, musician)
    await world.marketplace.sign_contract(contract_id, organizer)
    await world.pay(contract_id, PAYMENT_COMPLETED)
    await world.handle_new()
    await world.handle(await world.last(PaymentProcessedEvent))  # a redelivery
    contract = await world.repository.load(Contract, contract_id)
    assert contract.status is ContractStatus.PAID
    assert contract.payment_id == "pay-1"
    for party in ("ana@x.example", "org@casa.example"):
        assert world.notifier.kinds_to(party).count("payment-confirmation") == 1
    assert (await world.deps.analytics.summary()).revenue == Decimal("1200.50")


async def test_a_declined_payment_tells_both_parties_and_marks_the_contract(
        world: World) -> None:
    organizer, musician, contract_id = await world.booked_contract("tok_chargeDeclined")
    await world.marketplace.sign_contract(contract_id, musician)
    await world.marketplace.sign_contract(contract_id, organizer)
    await world.pay(contract_id, PAYMENT_DECLINED)
    await world.handle_new()
    contract = await world.repository.load(Contract, contract_id)
    assert contract.status is ContractStatus.PAYMENT_FAILED
    assert "declined" in contract.reason
    for party in ("ana@x.example", "org@casa.example"):
        assert world.notifier.kinds_to(party).count("payment-failed") == 1
    summary = await world.deps.analytics.summary()
    assert summary.by_kind["payment-failed"] == 1
    assert summary.revenue == 0


async def test_a_declined_payment_of_a_contract_cancelled_meanwhile_is_still_announced(
        world: World) -> None:
    organizer, musician, contract_id = await world.booked_contract("tok_chargeDeclined")
    await world.marketplace.sign_contract(contract_id, musician)
    await world.marketplace.sign_contract(contract_id, organizer)
    await world.pay(contract_id, PAYMENT_DECLINED)
    # The booking saga gave up and cancelled before this handler ran.
    await world.marketplace.cancel_contract(contract_id, "the payment was declined 3 times")
    await world.handle_new()
    contract = await world.repository.load(Contract, contract_id)
    assert contract.status is ContractStatus.CANCELLED
    for party in ("ana@x.example", "org@casa.example"):
        assert world.notifier.kinds_to(party).count("payment-failed") == 1
