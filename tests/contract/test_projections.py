"""Projections over every store: the checkpoint moves with the update in one transaction, so an
event is applied once; rebuild starts from zero and ends where a live run ends."""

from __future__ import annotations

import asyncio
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
from tests.polling import eventually


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


class Tagged(Projection):
    """One document per registration naming the code that wrote it (`tag`: an old version of
    the projection, or the new one a rebuild runs); stalls before its `stall_at`-th event
    (from 0) until `resume` is set, and sets `stalled` when it gets there."""

    name = "tagged"
    collections: ClassVar[tuple[str, ...]] = ("tagged",)
    event_types = frozenset({MusicianRegisteredEvent.__name__})

    def __init__(self, tag: str, stall_at: int) -> None:
        self.tag, self.stall_at, self.applied = tag, stall_at, 0
        self.stalled, self.resume = asyncio.Event(), asyncio.Event()

    async def apply(self, event: DomainEvent, view: View) -> None:
        assert isinstance(event, MusicianRegisteredEvent)
        if self.applied == self.stall_at and not self.resume.is_set():
            self.stalled.set()
            await self.resume.wait()
        self.applied += 1
        view.put("tagged", event.musician_id, {"by": self.tag})


async def test_a_stale_batch_does_not_land_where_a_rebuild_brought_the_checkpoint_back_to(
        stores: StoresUnderTest) -> None:
    """A worker stalls in a batch begun at position P past its lease; a rebuild takes the
    lease, resets, and replays exactly up to P. The checkpoint stands where the stale batch
    began, so its compare-and-set alone would let it land, old documents in the rebuilt
    model: the lease fence refuses it."""
    for n in range(8):
        await register(stores, n)
    await stores.settle()
    positions = [r.position for r in await stores.events.read_all(1, 8)]
    old = Tagged("old", stall_at=4)
    worker = ProjectionRunner(stores.events, stores.documents, [old], batch_size=4,
                              lease_seconds=0.3)
    worker_run = asyncio.create_task(worker.catch_up("tagged"))
    await asyncio.wait_for(old.stalled.wait(), 10)  # committed 1-4, stalled in 5-8
    new = Tagged("new", stall_at=4)
    operator = ProjectionRunner(stores.events, stores.documents, [new], batch_size=4)

    async def rebuild_started() -> bool:
        try:
            await operator.rebuild("tagged")
        except ProjectionBusy:
            return False  # the worker's lease has not run out yet
        return True

    rebuild = asyncio.create_task(eventually(rebuild_started))
    await asyncio.wait_for(new.stalled.wait(), 10)  # reset, replayed 1-4, stalled in 5-8
    assert await stores.documents.checkpoint(checkpoint_name("tagged")) == positions[3]
    old.resume.set()
    assert await worker_run == positions[3]  # refused, and it stopped: not its lease
    assert sorted(await stores.documents.scan("tagged")) == [
        (f"m{n}", {"by": "new"}) for n in range(4)]
    new.resume.set()
    await rebuild
    assert await stores.documents.scan("tagged") == [(f"m{n}", {"by": "new"}) for n in range(8)]
    assert await stores.documents.checkpoint(checkpoint_name("tagged")) == positions[7]
