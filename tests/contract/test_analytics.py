"""Analytics over every store: the projection counts each event once, however often the global
order is read and by however many runners; the summary adds money up exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from mussikon.application.projections import View
from mussikon.application.projections.analytics import (
    APPLICATION_SUBMITTED,
    CONTRACT_SIGNED,
    GIG_CREATED,
    PAYMENT_COMPLETED,
    PAYMENT_FAILED,
    USER_REGISTERED,
    AnalyticsProjection,
    ProjectionAnalytics,
)
from mussikon.application.projections.runner import (
    ProjectionBusy,
    ProjectionRunner,
    checkpoint_name,
)
from mussikon.domain.events import (
    ContractSignedEvent,
    DomainEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
)
from tests.contract.store_adapters import ADAPTERS, StoresUnderTest, open_stores
from tests.polling import eventually

WHEN = datetime(2030, 5, 1, 22, 0, tzinfo=UTC)


@pytest.fixture(params=ADAPTERS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoresUnderTest]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield opened


async def store(stores: StoresUnderTest, *events: DomainEvent) -> None:
    for event in events:
        await stores.events.append(event.stream_id, [event], 0)
    await stores.settle()


def runner(stores: StoresUnderTest) -> ProjectionRunner:
    return ProjectionRunner(stores.events, stores.documents, [AnalyticsProjection()])


def gig(n: int, genre: str, location: str) -> EventCreatedEvent:
    return EventCreatedEvent(gig_id=f"g{n}", organizer_id="o", title="T", event_date=WHEN,
                             location=location, genre=genre, budget=Decimal(100))


def payment(n: int, status: str, amount: str) -> PaymentProcessedEvent:
    return PaymentProcessedEvent(payment_id=f"p{n}", contract_id=f"c{n}",
                                 amount=Decimal(amount), status=status, transaction_id=f"t{n}")


async def test_events_are_counted_by_kind_genre_and_location(stores: StoresUnderTest) -> None:
    await store(stores,
                MusicianRegisteredEvent(musician_id="m1", email="a@b.io", name="A",
                                        genres=("Jazz", "Salsa"), location="Santiago"),
                gig(1, "Jazz", "Santiago"), gig(2, "Jazz", "Santo Domingo"),
                gig(3, "Salsa", "Santiago"),
                MusicianApplicationSubmittedEvent(application_id="a1", musician_id="m1",
                                                  gig_id="g2", message="",
                                                  proposed_fee=Decimal(50)))
    await runner(stores).catch_up("analytics")
    summary = await ProjectionAnalytics(stores.documents).summary()
    assert summary.by_kind[USER_REGISTERED] == 1
    assert summary.by_kind[GIG_CREATED] == 3
    assert summary.by_kind[APPLICATION_SUBMITTED] == 1
    assert summary.by_genre == {"Jazz": 1 + 2 + 1, "Salsa": 1 + 1}
    assert summary.by_location == {"Santiago": 1 + 2, "Santo Domingo": 2}


async def test_money_contracted_and_paid_adds_up_exactly(stores: StoresUnderTest) -> None:
    await store(stores,
                ContractSignedEvent(contract_id="c1", musician_id="m", gig_id="g",
                                    amount=Decimal("1200.50"), event_date=WHEN),
                payment(1, "Completed", "1200.50"), payment(2, "Completed", "0.10"),
                payment(3, "Declined", "99.99"))
    await runner(stores).catch_up("analytics")
    summary = await ProjectionAnalytics(stores.documents).summary()
    assert summary.contracted == Decimal("1200.50")
    assert summary.revenue == Decimal("1200.60")
    assert summary.by_kind[CONTRACT_SIGNED] == 1
    assert summary.by_kind[PAYMENT_COMPLETED] == 2
    assert summary.by_kind[PAYMENT_FAILED] == 1


async def test_reading_the_order_again_or_from_two_runners_counts_each_event_once(
        stores: StoresUnderTest) -> None:
    await store(stores, *(gig(n, "Jazz", "Santiago") for n in range(30)))
    first, second = runner(stores), runner(stores)
    await asyncio.gather(first.catch_up("analytics"), second.catch_up("analytics"))
    await first.catch_up("analytics")
    summary = await ProjectionAnalytics(stores.documents).summary()
    assert summary.by_kind[GIG_CREATED] == 30


async def test_an_empty_store_has_an_empty_summary(stores: StoresUnderTest) -> None:
    summary = await ProjectionAnalytics(stores.documents).summary()
    assert summary.by_kind == {}
    assert summary.revenue == 0


class StallingAnalytics(AnalyticsProjection):
    """The analytics projection of a runner that stalls (a pause, a slow batch) before the
    event after its first `applied` ones, until `resume` is set; `stalled` tells it got
    there."""

    def __init__(self, applied: int) -> None:
        self.left = applied
        self.stalled, self.resume = asyncio.Event(), asyncio.Event()

    async def apply(self, event: DomainEvent, view: View) -> None:
        if self.left == 0 and not self.resume.is_set():
            self.stalled.set()
            await self.resume.wait()
        self.left -= 1
        await super().apply(event, view)


async def register_many(stores: StoresUnderTest, count: int) -> None:
    """Store `count` musicians' registrations, many streams per transaction."""
    for start in range(0, count, 250):
        await stores.events.append_streams([(f"musician-{n}", [MusicianRegisteredEvent(
            musician_id=f"m{n}", email="a@b.io", name="A", genres=("Jazz",),
            location="Santiago")], 0) for n in range(start, min(start + 250, count))])
    await stores.settle()


async def registrations(stores: StoresUnderTest) -> int:
    return (await ProjectionAnalytics(stores.documents).summary()).by_kind[USER_REGISTERED]


async def take_lease_over(stores: StoresUnderTest, runner: ProjectionRunner) -> None:
    """Wait until the lease on the analytics projection expires, and take it for `runner`."""
    async def taken() -> bool:
        return await stores.documents.try_lease(checkpoint_name("analytics"), runner.owner,
                                                10) is not None

    await eventually(taken)


EVENTS = 2_000


async def test_a_runner_whose_lease_was_taken_over_mid_batch_commits_nothing_of_it(
        stores: StoresUnderTest) -> None:
    await register_many(stores, EVENTS)
    # The first holds the lease briefly, commits its first batch (1-500), then stalls
    # before it applies anything of the next (501-1000), past the end of its lease.
    stalling = StallingAnalytics(applied=500)
    first = ProjectionRunner(stores.events, stores.documents, [stalling], batch_size=500,
                             lease_seconds=0.3)
    first_run = asyncio.create_task(first.catch_up("analytics"))
    await stalling.stalled.wait()
    # The second takes the lease over, commits 501-600, and stalls in its next batch.
    taking_over = StallingAnalytics(applied=100)
    second = ProjectionRunner(stores.events, stores.documents, [taking_over], batch_size=100)
    await take_lease_over(stores, second)
    second_run = asyncio.create_task(second.catch_up("analytics"))
    await taking_over.stalled.wait()
    checkpoint = await stores.documents.checkpoint(checkpoint_name("analytics"))
    assert await registrations(stores) == 600
    # The first wakes, applies 501-1000 over the second's 600 counted: refused.
    stalling.resume.set()
    assert await first_run == checkpoint  # and it stopped: the second holds the lease
    assert await registrations(stores) == 600
    taking_over.resume.set()
    assert await second_run == await stores.events.head_position()
    assert await registrations(stores) == EVENTS


async def test_a_worker_whose_lease_expired_mid_batch_commits_nothing_over_a_rebuild(
        stores: StoresUnderTest) -> None:
    await register_many(stores, EVENTS)
    worker_analytics = StallingAnalytics(applied=500)
    worker = ProjectionRunner(stores.events, stores.documents, [worker_analytics],
                              batch_size=500, lease_seconds=0.3)
    worker_run = asyncio.create_task(worker.catch_up("analytics"))
    await worker_analytics.stalled.wait()
    # The rebuild takes the lease once the worker's expires, resets, replays 1-600 and
    # stalls in its next batch.
    rebuilding = StallingAnalytics(applied=600)
    operator = ProjectionRunner(stores.events, stores.documents, [rebuilding], batch_size=300)

    async def rebuild_started() -> bool:
        try:
            await operator.rebuild("analytics")
        except ProjectionBusy:
            return False
        return True

    rebuild = asyncio.create_task(eventually(rebuild_started))
    await rebuilding.stalled.wait()
    checkpoint = await stores.documents.checkpoint(checkpoint_name("analytics"))
    assert await registrations(stores) == 600
    # The worker wakes, applies 501-1000 over the rebuild's 600 counted: refused.
    worker_analytics.resume.set()
    assert await worker_run == checkpoint
    assert await registrations(stores) == 600
    rebuilding.resume.set()
    await rebuild
    assert await stores.documents.checkpoint(checkpoint_name("analytics")) == \
        await stores.events.head_position()
    assert await registrations(stores) == EVENTS
