"""A marketplace whose sagas run when told, on memory stores, with a fake clock, a recording
notifier and a scripted payment gateway."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from mussikon.adapters.clock import FakeClock
from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore
from mussikon.application.marketplace import Marketplace
from mussikon.application.repository import Repository
from mussikon.application.sagas.application import MusicianApplicationSaga
from mussikon.application.sagas.booking import BookingPolicy, BookingSaga
from mussikon.application.sagas.engine import SagaEngine
from mussikon.application.sagas.reservations import MusicianDays
from mussikon.application.sagas.runtime import SagaRuntime
from mussikon.application.sagas.services import SagaServices
from mussikon.application.sagas.state import SagaState
from mussikon.domain.contract import contract_id_for
from mussikon.ports.documents import Changes, Document, Fence
from mussikon.ports.payments import (
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    InvalidPaymentRequest,
    PaymentGateway,
)
from mussikon.ports.transport import Envelope
from tests.fakes import FakeNotifier


@dataclass
class ScriptedGateway(PaymentGateway):
    """Answers from `script` in order (then `Completed`), once per idempotency key; a source
    of "" is refused as a malformed request."""

    script: deque[ChargeStatus] = field(default_factory=deque)
    charges: dict[str, tuple[ChargeRequest, ChargeResult]] = field(default_factory=dict)
    calls: int = 0

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.calls += 1
        if not request.source:
            raise InvalidPaymentRequest("no card token")
        if request.idempotency_key in self.charges:
            return self.charges[request.idempotency_key][1]
        status: ChargeStatus = self.script.popleft() if self.script else "Completed"
        result = ChargeResult(status=status, transaction_id=f"txn_{len(self.charges) + 1}",
                              decline_code="" if status == "Completed" else "card_declined")
        self.charges[request.idempotency_key] = (request, result)
        return result


class YieldingDocumentStore(InMemoryDocumentStore):
    """Memory documents that let other tasks run at every call, as a database round trip does,
    so that concurrent handlers really interleave."""

    async def get(self, collection: str, key: str) -> Document | None:
        await asyncio.sleep(0)
        return await super().get(collection, key)

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        await asyncio.sleep(0)
        return await super().commit(changes, checkpoint=checkpoint, inbox=inbox,
                                    expected=expected, fence=fence)


ORGANIZER = "org@casa.example"
MUSICIAN = "ana@x.example"


class SagaWorld:
    """The marketplace with both sagas; `deliver` runs them over every event not yet seen."""

    def __init__(self, policy: BookingPolicy | None = None) -> None:
        self.clock = FakeClock()
        self.store = InMemoryEventStore()
        self.documents = YieldingDocumentStore()
        self.repository = Repository(self.store)
        self.marketplace = Marketplace(self.repository, self.clock.now)
        self.notifier = FakeNotifier()
        self.gateway = ScriptedGateway()
        self.days = MusicianDays(self.documents, self.clock)
        self.services = SagaServices(self.marketplace, self.repository, self.notifier,
                                     self.gateway, self.days)
        self.policy = policy or BookingPolicy()
        self.runtime = SagaRuntime(self.documents, self.clock, [
            MusicianApplicationSaga(self.services), BookingSaga(self.services, self.policy)],
            store=self.store)
        self.seen = 0

    @property
    def booking(self) -> SagaEngine:
        return self.runtime.engines["booking"]

    @property
    def application(self) -> SagaEngine:
        return self.runtime.engines["musician-application"]

    async def deliver(self) -> None:
        """Give every saga every new event it listens to, including those the sagas write."""
        while batch := await self.store.read_all(self.seen + 1):
            for record in batch:
                self.seen = record.position
                await self.redeliver(Envelope(str(record.event.id), record.event,
                                              record.position))

    async def redeliver(self, envelope: Envelope) -> None:
        """Give one event to every saga that listens to it."""
        for engine in self.runtime.engines.values():
            if envelope.event.event_type in engine.definition.event_types:
                await engine.handle_event(envelope)

    async def later(self, delta: timedelta) -> int:
        """Let time pass: fire the timeouts that fell due, deliver what they caused."""
        self.clock.advance(delta)
        fired = await self.runtime.scheduler.fire_due()
        await self.deliver()
        return fired

    async def saga(self, saga_id: str) -> SagaState:
        state = await self.runtime.journal.find(saga_id)
        assert state is not None, f"no saga {saga_id}"
        return state

    async def organizer(self, source: str = "tok_visa") -> str:
        return await self.marketplace.register_organizer(email=ORGANIZER, name="Casa",
                                                         payment_source=source)

    async def musician(self, email: str = MUSICIAN, name: str = "Ana") -> str:
        return await self.marketplace.register_musician(email=email, name=name,
                                                        genres=["Jazz"], location="SD")

    async def gig(self, organizer: str, *, days: int = 30, title: str = "Jazz night",
                  budget: str = "1500.00") -> str:
        when = self.clock.now().replace(hour=21, minute=0) + timedelta(days=days)
        return await self.marketplace.create_gig(
            organizer_id=organizer, title=title, event_date=when, location="SD", genre="Jazz",
            budget=Decimal(budget))

    async def apply(self, musician: str, gig: str, fee: str = "1200.50") -> str:
        return await self.marketplace.submit_application(
            musician_id=musician, gig_id=gig, message="Trio", proposed_fee=Decimal(fee))

    async def accepted(self, source: str = "tok_visa") -> tuple[str, str, str, str]:
        """An organizer, a musician, a gig and an accepted application; returns their ids
        and the contract id the booking saga uses."""
        organizer = await self.organizer(source)
        musician = await self.musician()
        gig = await self.gig(organizer)
        application = await self.apply(musician, gig)
        await self.deliver()
        await self.marketplace.accept_application(application, organizer_id=organizer)
        await self.deliver()
        return organizer, musician, application, contract_id_for(application)

    async def sign(self, contract_id: str, *parties: str) -> None:
        for party in parties:
            await self.marketplace.sign_contract(contract_id, party)
        await self.deliver()
