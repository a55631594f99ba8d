"""Projections over every store: the checkpoint moves with the update in one transaction, so an
event is applied once; rebuild starts from zero and ends where a live run ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from mussikon.application.projections import Projection, View
from mussikon.application.projections.runner import (
    ProjectionBusy,
    ProjectionRunner,
    checkpoint_name,
)
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from tests.contract.store_adapters import ADAPTERS, StoresUnderTest, open_stores


class CountMusicians(Projection):
    """Counts registrations per location; fails on demand to simulate a crash mid-batch."""

    name = "count"
    collections: ClassVar[tuple[str, ...]] = ("counts",)
    event_types = frozenset({MusicianRegisteredEvent.__name__})
    fail_on: ClassVar[set[str]] = set()

    async def apply(self, event: DomainEvent, view: View) -> None:
        assert isinstance(event, MusicianRegisteredEvent)
        if event.musician_id in self.fail_on:
            raise RuntimeError("the process died here")
        doc = await view.get("counts", event.location) or {"n": 0}
        view.put("counts", event.location, {"n": doc["n"] + 1})


@pytest.fixture(params=ADAPTERS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoresUnderTest]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield opened


async def register(stores: StoresUnderTest, n: int, location: str = "Santiago") -> None:
    event = MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name="A",
                                    genres=("Jazz",), location=location)
    await stores.events.append(event.stream_id, [event], 0)


async def count(stores: StoresUnderTest, location: str = "Santiago") -> int:
    doc = await stores.documents.get("counts", location)
    return 0 if doc is None else int(doc["n"])


async def test_catch_up_applies_each_event_once_and_records_the_position(
        stores: StoresUnderTest) -> None:
    for n in range(5):
        await register(stores, n)
    await stores.settle()
    runner = ProjectionRunner(stores.events, stores.documents, [CountMusicians()], batch_size=2)
    head = await stores.events.head_position()
    assert await runner.catch_up("count") == head
    assert await runner.catch_up("count") == head  # nothing new: nothing applied again
    assert await count(stores) == 5
    assert await stores.documents.checkpoint(checkpoint_name("count")) == head


async def test_a_crash_mid_batch_writes_nothing_of_that_batch(stores: StoresUnderTest) -> None:
    for n in range(4):
        await register(stores, n)
    await stores.settle()
    runner = ProjectionRunner(stores.events, stores.documents, [CountMusicians()], batch_size=10)
    CountMusicians.fail_on = {"m2"}
    try:
        with pytest.raises(RuntimeError, match="died"):
            await runner.catch_up("count")
        assert await count(stores) == 0
        assert await stores.documents.checkpoint(checkpoint_name("count")) == 0
    finally:
        CountMusicians.fail_on = set()
    await runner.catch_up("count")
    assert await count(stores) == 4


async def test_status_shows_lag_and_rebuild_starts_from_zero(stores: StoresUnderTest) -> None:
    for n in range(3):
        await register(stores, n, "Santiago")
    await register(stores, 9, "Punta Cana")
    await stores.settle()
    runner = ProjectionRunner(stores.events, stores.documents, [CountMusicians()])
    [before] = await runner.status()
    assert (before.position, before.lag, before.lag_capped) == (0, 4, False)
    await runner.catch_up("count")
    [after] = await runner.status()
    assert after.lag == 0
    # An empty view commits nothing, and moves nothing.
    assert await stores.documents.commit(View(stores.documents).changes)
    assert await count(stores) == 3
    assert await stores.documents.checkpoint(checkpoint_name("count")) == after.head
    progress: list[tuple[int, int]] = []
    position = await runner.rebuild("count", lambda read, at: progress.append((read, at)))
    assert position == after.head
    assert progress == [(4, position)]  # one batch, reported once
    assert await count(stores) == 3
    assert await count(stores, "Punta Cana") == 1


async def test_lag_is_a_count_of_events_not_of_positions(stores: StoresUnderTest) -> None:
    for n in range(3):
        await register(stores, n)
    await stores.settle()
    runner = ProjectionRunner(stores.events, stores.documents, [CountMusicians()])
    await runner.catch_up("count")
    for n in range(3, 5):  # two appends, two transactions: far apart positions on PostgreSQL
        await register(stores, n)
    await stores.settle()
    [status] = await runner.status()
    assert status.lag == 2
    assert status.head == await stores.events.head_position() > status.position


async def test_rebuild_refuses_while_another_runner_holds_the_lease(
        stores: StoresUnderTest) -> None:
    for n in range(3):
        await register(stores, n)
    await stores.settle()
    worker = ProjectionRunner(stores.events, stores.documents, [CountMusicians()])
    position = await worker.catch_up("count")  # and keeps the lease, as a running worker does
    operator = ProjectionRunner(stores.events, stores.documents, [CountMusicians()])
    with pytest.raises(ProjectionBusy, match="'count' is being applied by another process"):
        await operator.rebuild("count")
    assert await count(stores) == 3  # nothing was reset
    assert await stores.documents.checkpoint(checkpoint_name("count")) == position
    await stores.documents.release_lease(checkpoint_name("count"), worker.owner)
    assert await operator.rebuild("count") == position
    assert await count(stores) == 3
    # the rebuild let go of the lease: the worker goes on at once, from where it ended
    await register(stores, 3)
    await stores.settle()
    assert await worker.catch_up("count") == await stores.events.head_position()
    assert await count(stores) == 4
