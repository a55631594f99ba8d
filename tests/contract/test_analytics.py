"""Analytics over every store: the projection counts each event once, however often the global
order is read and by however many runners; the summary adds money up exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

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
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.domain.events import (
    ContractSignedEvent,
    DomainEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
)
from tests.contract.store_adapters import ADAPTERS, StoresUnderTest, open_stores

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
