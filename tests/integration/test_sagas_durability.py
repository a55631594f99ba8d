"""Sagas across process deaths, on the real application over one SQLite file: a worker killed
between two steps resumes and finishes exactly once, a timeout scheduled before a restart
fires after it, a compensation cut off by a kill resumes, and bookings racing for one
musician's day give one contract."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mussikon.adapters.clock import FakeClock
from mussikon.adapters.messaging.memory import InProcessTransport
from mussikon.application.sagas import timeouts
from mussikon.application.sagas.runtime import open_sagas
from mussikon.application.sagas.state import SagaState, SagaStatus
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.domain.contract import Contract, ContractStatus, contract_id_for
from mussikon.ports.notifier import Notification, Notifier, SentNotification
from mussikon.ports.payments import ChargeRequest, ChargeResult, PaymentGateway

START = FakeClock().now()


def settings_for(path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{path}", sqlite_synchronous="NORMAL",
                    poll_interval=0.01, poll_max_interval=0.05, bus_retry_delays="0.01,0.02",
                    lease_seconds=0.3)


class StuckAfterCharging(PaymentGateway):
    """Charges through the real gateway, then never returns: the process dies right after the
    money moved and before anyone recorded it."""

    def __init__(self, inner: PaymentGateway) -> None:
        self.inner = inner
        self.charged = asyncio.Event()

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        await self.inner.charge(request)
        self.charged.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def with_saga_services(app: App, *, gateway: PaymentGateway | None = None,
                       notifier: Notifier | None = None) -> None:
    """Run the app's sagas with another gateway or notifier (before `start`)."""
    app.sagas = open_sagas(app.settings, documents=app.documents, marketplace=app.marketplace,
                           repository=app.repository, notifier=notifier or app.notifier,
                           gateway=gateway or app.gateway, clock=app.clock)
    app.subscriptions = [s for s in app.subscriptions if not s.name.startswith("sagas.")]
    app.subscriptions += app.sagas.subscriptions()


async def kill(app: App) -> None:
    """Die like a killed process: every task stops where it is, nothing is drained or saved."""
    transport = app.transport
    assert isinstance(transport, InProcessTransport)
    tasks = [t for r in transport.readers.values() for t in (r.task, *r.workers.tasks) if t]
    tasks += app.projections._tasks
    if app.sagas is not None and app.sagas.scheduler._task is not None:
        tasks.append(app.sagas.scheduler._task)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await app.store.close()


@contextlib.asynccontextmanager
async def running(path: Path, clock: FakeClock) -> AsyncIterator[App]:
    app = await open_app(settings_for(path), clock)
    await app.start()
    try:
        yield app
    finally:
        await app.close()


async def booked(app: App, *, source: str = "tok_visa", days: int = 30) -> tuple[str, str, str]:
    """Organizer, musician, gig, application accepted: returns organizer, musician, contract."""
    m = app.marketplace
    organizer = await m.register_organizer(email="org@casa.example", name="Casa",
                                           payment_source=source)
    musician = await m.register_musician(email="ana@x.example", name="Ana", genres=["Jazz"],
                                         location="Santo Domingo")
    gig = await m.create_gig(organizer_id=organizer, title="Jazz night",
                             event_date=app.clock.now() + timedelta(days=days),
                             location="Santo Domingo", genre="Jazz", budget=Decimal(1500))
    application = await m.submit_application(musician_id=musician, gig_id=gig, message="Trio",
                                              proposed_fee=Decimal("1200.50"))
    await m.accept_application(application, organizer_id=organizer)
    return organizer, musician, contract_id_for(application)


async def saga(app: App, contract_id: str) -> SagaState:
    assert app.sagas is not None
    found = await app.sagas.journal.find(f"booking-{contract_id}")
    assert found is not None
    return found


async def test_a_worker_killed_between_charging_and_recording_resumes_and_charges_once(
        tmp_path: Path) -> None:
    # The killed worker cannot release its lease on the read models; the next waits it out
    # (a short lease: settings_for).
    path = tmp_path / "sagas.db"
    first = await open_app(settings_for(path), FakeClock(START))
    stuck = StuckAfterCharging(first.gateway)
    with_saga_services(first, gateway=stuck)
    await first.start()
    organizer, musician, contract_id = await booked(first)
    await first.settle()
    await first.marketplace.sign_contract(contract_id, musician)
    await first.marketplace.sign_contract(contract_id, organizer)
    await asyncio.wait_for(stuck.charged.wait(), 10)
    halfway = await saga(first, contract_id)
    assert (halfway.status, halfway.current_step) == (SagaStatus.RUNNING, "initial-payment")
    assert halfway.completed == ["accepted", "reserve-date", "draft-contract", "signatures"]
    await kill(first)

    async with running(path, FakeClock(START)) as second:
        await second.settle()
        done = await saga(second, contract_id)
        assert done.status is SagaStatus.COMPLETED
        assert (await second.repository.load(Contract, contract_id)).status is \
            ContractStatus.PAID
        charges = await second.gateway.charges()  # type: ignore[attr-defined]
        assert len(charges) == 1  # the second run found the first charge by its key
        processed = await second.store.read_by_type("PaymentProcessedEvent")
        assert len(processed) == 1
        assert second.sagas is not None
        history = await second.sagas.journal.history(done.saga_id)
        assert [h.step for h in history if h.kind == "StepCompleted"] == [
            "accepted", "reserve-date", "draft-contract", "signatures", "initial-payment",
            "contract-paid"]


async def test_a_signature_deadline_scheduled_before_a_restart_fires_after_it(
        tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    async with running(path, FakeClock(START)) as first:
        _, musician, contract_id = await booked(first)
        await first.settle()
        await first.marketplace.sign_contract(contract_id, musician)
        await first.settle()
        waiting = await saga(first, contract_id)
        assert (waiting.status, waiting.current_step) == (SagaStatus.WAITING, "signatures")
        [deadline] = waiting.timeouts.values()
        assert deadline.due_at == START + timedelta(hours=48)

    # The process is gone; another one starts two days later.
    later = FakeClock(START)
    later.advance(timedelta(hours=48, minutes=1))
    async with running(path, later) as second:
        await second.settle()
        ended = await saga(second, contract_id)
        assert ended.status is SagaStatus.COMPENSATED
        assert ended.reason == "not signed by both parties within 48 h (missing: the organizer)"
        contract = await second.repository.load(Contract, contract_id)
        assert contract.status is ContractStatus.CANCELLED
        assert second.sagas is not None
        assert await second.sagas.scheduler.pending() == []


class StuckOnCancellationNotices(Notifier):
    """Sends through the real notifier, but never gets a cancellation notice out: the process
    dies while the saga is undoing a booking."""

    def __init__(self, inner: Notifier) -> None:
        self.inner = inner
        self.stuck = asyncio.Event()

    async def send(self, notification: Notification) -> bool:
        if notification.kind == "contract-cancelled":
            self.stuck.set()
            await asyncio.sleep(3600)
        return await self.inner.send(notification)

    async def sent(self, limit: int = 100, after: int | None = None) -> list[SentNotification]:
        return await self.inner.sent(limit, after)


async def test_killed_while_compensating_after_a_deadline_the_compensation_resumes_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The killed process cannot release its leases; the next one waits them out (a short lease
    # on the read models: settings_for).
    monkeypatch.setattr(timeouts, "LEASE_SECONDS", 0.3)
    path = tmp_path / "sagas.db"
    async with running(path, FakeClock(START)) as first:
        _, _, contract_id = await booked(first)
        await first.settle()
    late = FakeClock(START)
    late.advance(timedelta(days=3))
    second = await open_app(settings_for(path), late)
    stuck = StuckOnCancellationNotices(second.notifier)
    with_saga_services(second, notifier=stuck)
    await second.start()
    await asyncio.wait_for(stuck.stuck.wait(), 10)
    halfway = await saga(second, contract_id)
    assert (halfway.status, halfway.compensated) == (SagaStatus.COMPENSATING, [])
    await kill(second)

    async with running(path, late) as third:
        await third.settle()
        ended = await saga(third, contract_id)
        assert ended.status is SagaStatus.COMPENSATED
        assert ended.compensated == ["draft-contract", "reserve-date", "accepted"]
        assert len(await third.store.read_by_type("ContractCancelledEvent")) == 1
        notices = [s.notification.recipient for s in await third.notifier.sent(1000)
                   if s.notification.kind == "contract-cancelled"]
        assert sorted(notices) == ["ana@x.example", "org@casa.example"]
        assert third.sagas is not None
        assert await third.sagas.scheduler.pending() == []


@pytest.mark.parametrize("bookings", [2, 4])
async def test_bookings_racing_for_one_musicians_day_give_one_contract(
        tmp_path: Path, bookings: int) -> None:
    async with running(tmp_path / "race.db", FakeClock(START)) as app:
        m = app.marketplace
        organizer = await m.register_organizer(email="org@casa.example", name="Casa",
                                               payment_source="tok_visa")
        musician = await m.register_musician(email="ana@x.example", name="Ana",
                                             genres=["Jazz"], location="Santo Domingo")
        night = app.clock.now() + timedelta(days=20)
        applications = []
        for n in range(bookings):
            gig = await m.create_gig(organizer_id=organizer, title=f"Gig {n}",
                                     event_date=night + timedelta(minutes=n),
                                     location="Santo Domingo", genre="Jazz",
                                     budget=Decimal(1000))
            applications.append(await m.submit_application(
                musician_id=musician, gig_id=gig, message="Me", proposed_fee=Decimal(900)))
        await app.settle()
        await asyncio.gather(*(m.accept_application(a, organizer_id=organizer)
                               for a in applications))
        await app.settle()
        states = [await saga(app, contract_id_for(a)) for a in applications]
        assert sorted(s.status.value for s in states) == \
            ["Compensated"] * (bookings - 1) + ["Waiting"]
        contracts = [await app.repository.load(Contract, contract_id_for(a))
                     for a in applications]
        assert sum(c.exists for c in contracts) == 1
        for lost in (s for s in states if s.status is SagaStatus.COMPENSATED):
            assert lost.failed_step == "reserve-date"
            assert "is already booked on" in lost.reason
        assert len(await app.transport.dead_letters()) == 0
