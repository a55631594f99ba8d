"""Sagas under two workers: two `mussikon worker` processes on one store (a SQLite file, a
PostgreSQL schema) with the in-process bus, so each of them delivers every event to the
sagas and they race on every instance, and their timeout schedulers share one lease. Many
bookings: some signed, some signed with a card that is declined (their payment is retried
on a timeout), some left to their signature deadline. Every step is decided once, every
timeout fires once, every charge and every email happens once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from tests.command_line import ROOT, environment, line_with
from tests.polling import eventually

from mussikon.application.sagas.state import SagaState
from mussikon.bootstrap import App, open_app
from mussikon.config import Settings
from mussikon.domain.contract import Contract, contract_id_for
from mussikon.domain.instant import utc_now

SIGNED, DECLINED, UNSIGNED = 6, 2, 4
"""Bookings signed and paid; signed, with a card declined every time; never signed."""
RETRIES = 1
"""Retries of a declined payment, each after a timeout."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """Where the workers and the test keep everything: a new SQLite file or PostgreSQL
    schema (dropped afterwards)."""
    if request.param == "sqlite":
        yield Settings(store_url=f"sqlite:///{tmp_path / 'mussikon.db'}",
                       broker_url="memory://")
        return
    url, schema = request.getfixturevalue("postgres_url"), request.getfixturevalue("unique_name")
    yield Settings(store_url=url, postgres_schema=schema, broker_url="memory://")
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def workers(store: Settings, logs: list[Path]) -> AsyncIterator[None]:
    """A worker per log file, on `store`, until the block ends (then SIGTERM)."""
    env = environment(store_url=store.store_url, postgres_schema=store.postgres_schema,
                      broker_url="memory://", sqlite_synchronous="NORMAL",
                      poll_interval="0.01", poll_max_interval="0.1",
                      saga_signature_timeout="2", saga_payment_retries=str(RETRIES),
                      saga_payment_retry_delay="0.3", log_level="INFO")
    running = []
    try:
        for log in logs:
            with log.open("w") as stderr:  # a file: a pipe nobody reads would fill and block
                running.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mussikon", "worker", cwd=ROOT, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=stderr))
        for worker in running:
            await line_with(worker.stdout, "worker running")
        yield
    finally:
        for worker in running:
            worker.send_signal(signal.SIGTERM)
        for worker in running:
            try:
                await asyncio.wait_for(worker.communicate(), 30)
            except TimeoutError:
                worker.kill()
                await worker.wait()
    for worker, log in zip(running, logs, strict=True):
        assert worker.returncode == 0, log.read_text()


async def book(app: App, n: int, source: str) -> str:
    """Organizer, musician, gig and an accepted application; the contract id."""
    m = app.marketplace
    organizer = await m.register_organizer(email=f"org{n}@casa.example", name=f"Casa {n}",
                                           payment_source=source)
    musician = await m.register_musician(email=f"m{n}@x.example", name=f"Musician {n}",
                                         genres=["Jazz"], location="Santo Domingo")
    gig = await m.create_gig(organizer_id=organizer, title=f"Night {n}",
                             event_date=utc_now() + timedelta(days=30 + n),
                             location="Santo Domingo", genre="Jazz", budget=Decimal(1500))
    application = await m.submit_application(musician_id=musician, gig_id=gig, message="Trio",
                                              proposed_fee=Decimal("1000.25"))
    await m.accept_application(application, organizer_id=organizer)
    return contract_id_for(application)


async def booking(app: App, contract_id: str) -> SagaState | None:
    assert app.sagas is not None
    return await app.sagas.journal.find(f"booking-{contract_id}")


async def test_two_workers_decide_each_step_once_fire_each_timeout_once_and_charge_once(
        store: Settings, tmp_path: Path) -> None:
    app = await open_app(store)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    try:
        async with workers(store, logs):
            sources = (["tok_visa"] * SIGNED + ["tok_chargeDeclined"] * DECLINED
                       + ["tok_visa"] * UNSIGNED)
            contracts = []
            for n, source in enumerate(sources):
                contract_id = await book(app, n, source)
                contracts.append(contract_id)
                if n >= SIGNED + DECLINED:
                    continue  # left to its signature deadline

                async def drafted(contract_id: str = contract_id) -> bool:
                    found = await booking(app, contract_id)
                    return found is not None and found.current_step == "signatures"

                # Signed as soon as it can be, well within the deadline.
                await eventually(drafted, 30)
                contract = await app.repository.load(Contract, contract_id)
                await app.marketplace.sign_contract(contract_id, contract.musician_id)
                await app.marketplace.sign_contract(contract_id, contract.organizer_id)

            async def finished() -> bool:
                states = [await booking(app, c) for c in contracts]
                return all(s is not None and s.finished for s in states)

            await eventually(finished, 60, interval=0.1)
        await check_sagas(app, contracts)
        await check_effects(app, contracts)
    finally:
        await app.close()
    # Both workers decided something: they did race.
    for log in logs:
        assert "saga booking-" in log.read_text(), log.read_text()[-2000:]


async def check_sagas(app: App, contracts: list[str]) -> None:
    """Every instance (bookings and applications) started once, decided each step once,
    had each compensation once, fired each timeout once and ended once."""
    assert app.sagas is not None
    journal = app.sagas.journal
    instances = await journal.instances()
    assert sorted(s.instance for s in instances if s.kind == "booking") == sorted(contracts)
    assert len(instances) == 2 * len(contracts)  # an application saga and a booking each
    for saga in instances:
        history = await journal.history(saga.saga_id)
        kinds = Counter(h.kind for h in history)
        assert (kinds["Started"], kinds["Completed"] + kinds["Compensated"]) == (1, 1), history
        decided = Counter(h.step for h in history if h.kind in ("StepCompleted", "StepFailed"))
        assert set(decided.values()) == {1}, history
        undone = Counter(h.step for h in history if h.kind == "StepCompensated")
        assert set(undone.values()) <= {1}, history
        fired = Counter(h.message_id for h in history if h.kind == "TimeoutFired")
        assert set(fired.values()) <= {1}, history
        if saga.kind != "booking":
            continue
        deadlines = [h for h in history if h.kind == "TimeoutFired"
                     and h.detail == "signature-deadline"]
        retries = [h for h in history if h.kind == "TimeoutFired" and h.detail == "payment-retry"]
        n = contracts.index(saga.instance)
        if n < SIGNED:
            assert (saga.status, retries) == ("Completed", []), history
        elif n < SIGNED + DECLINED:
            assert (saga.status, len(retries)) == ("Compensated", RETRIES), history
        else:
            assert (saga.status, len(deadlines), retries) == ("Compensated", 1, []), history
    assert await app.sagas.scheduler.pending() == []


async def check_effects(app: App, contracts: list[str]) -> None:
    """Each payment attempt charged once, each payment processed once, each email sent once."""
    charges = Counter(c.metadata["contract_id"]
                      for c in await app.gateway.charges())  # type: ignore[attr-defined]
    processed = Counter(r.event.contract_id  # type: ignore[attr-defined]
                        for r in await app.store.read_by_type("PaymentProcessedEvent"))
    expected = Counter({c: 1 for c in contracts[:SIGNED]}
                       | {c: 1 + RETRIES for c in contracts[SIGNED:SIGNED + DECLINED]})
    assert charges == expected
    assert processed == expected
    sent = await app.notifier.sent(10_000)
    emails = Counter((s.notification.kind, s.notification.recipient, s.notification.about)
                     for s in sent)
    # One of each to each person about each contract, but a payment failure notice per
    # declined attempt.
    assert emails and {(kind == "payment-failed", count) for (kind, _, _), count
                       in emails.items()} == {(False, 1), (True, 1 + RETRIES)}, emails
    cancelled = [s for s in sent if s.notification.kind == "contract-cancelled"]
    assert len(cancelled) == 2 * (DECLINED + UNSIGNED)  # both parties of each, once
