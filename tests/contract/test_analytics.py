"""The Analytics port: each fact counts once, whatever the concurrency; the summary adds up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from mussikon.adapters.analytics import (
    CONTRACT_SIGNED,
    GIG_CREATED,
    PAYMENT_COMPLETED,
    Analytics,
    DocumentAnalytics,
    Fact,
)
from tests.contract.store_adapters import ADAPTERS, open_stores


@pytest.fixture(params=ADAPTERS)
async def analytics(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Analytics]:
    async with open_stores(request.param, tmp_path, request) as stores:
        yield DocumentAnalytics(stores.documents)


async def test_facts_are_counted_by_kind_genre_and_location(analytics: Analytics) -> None:
    await analytics.track(Fact("g1", GIG_CREATED, "gig-1", genre="Jazz", location="Santiago"))
    await analytics.track(Fact("g2", GIG_CREATED, "gig-2", genre="Jazz", location="Santo Domingo"))
    await analytics.track(Fact("g3", GIG_CREATED, "gig-3", genre="Salsa", location="Santiago"))
    summary = await analytics.summary()
    assert summary.by_kind == {GIG_CREATED: 3}
    assert summary.by_genre == {"Jazz": 2, "Salsa": 1}
    assert summary.by_location == {"Santiago": 2, "Santo Domingo": 1}


async def test_revenue_adds_completed_payments_exactly(analytics: Analytics) -> None:
    await analytics.track(Fact("p1", PAYMENT_COMPLETED, "pay-1", amount=Decimal("1200.50")))
    await analytics.track(Fact("p2", PAYMENT_COMPLETED, "pay-2", amount=Decimal("0.10")))
    await analytics.track(Fact("c1", CONTRACT_SIGNED, "c-1", amount=Decimal("99.99")))
    summary = await analytics.summary()
    assert summary.revenue == Decimal("1200.60")
    assert summary.contracted == Decimal("99.99")


async def test_a_fact_tracked_twice_counts_once(analytics: Analytics) -> None:
    fact = Fact("once", PAYMENT_COMPLETED, "pay-1", amount=Decimal(10))
    assert await analytics.track(fact) is True
    assert await analytics.track(fact) is False
    assert (await analytics.summary()).revenue == Decimal(10)


async def test_concurrent_tracking_loses_nothing_and_doubles_nothing(analytics: Analytics) -> None:
    facts = [Fact(f"f{n}", GIG_CREATED, f"gig-{n}", genre="Jazz") for n in range(30)]
    await asyncio.gather(*(analytics.track(f) for f in facts + facts))
    assert (await analytics.summary()).by_genre == {"Jazz": 30}
