"""Several processes run a timeout scheduler; one fires at a time, the others stand by."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mussikon.adapters.clock import FakeClock
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.sagas import timeouts
from mussikon.application.sagas.timeouts import (
    LEASE,
    TIMEOUTS,
    ScheduledTimeout,
    TimeoutScheduler,
)
from mussikon.ports.documents import Changes


async def test_only_the_lease_holder_fires_and_another_takes_over_when_it_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "LEASE_SECONDS", 60.0)
    documents, clock = InMemoryDocumentStore(), FakeClock()
    fired: list[tuple[str, str]] = []

    def scheduler(name: str) -> TimeoutScheduler:
        async def fire(timeout: ScheduledTimeout) -> None:
            fired.append((name, timeout.id))
            changes = Changes()
            changes.delete(TIMEOUTS, timeout.key)
            await documents.commit(changes)
        return TimeoutScheduler(documents, clock, fire)

    async def schedule(timeout_id: str) -> None:
        timeout = ScheduledTimeout(timeout_id, "booking", "b1", "signatures", "sign",
                                   clock.now() - timedelta(seconds=1))
        await documents.commit(Changes(puts={(TIMEOUTS, timeout.key): timeout.to_document()}))

    first, second = scheduler("first"), scheduler("second")
    await schedule("t1")
    assert await first.fire_due() == 1
    await schedule("t2")
    assert await second.fire_due() == 0  # the first one holds the lease
    await first.stop()  # a clean stop gives the lease up
    assert await second.fire_due() == 1
    assert fired == [("first", "t1"), ("second", "t2")]


async def test_a_holder_that_loses_the_lease_while_firing_a_list_stops_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "LEASE_SECONDS", 60.0)
    wall = [1_000.0]
    documents, clock = InMemoryDocumentStore(wall_clock=lambda: wall[0]), FakeClock()
    fired: list[str] = []

    async def slow_fire(timeout: ScheduledTimeout) -> None:
        fired.append(timeout.id)
        wall[0] += 61  # each handling outlasts the lease; another scheduler takes it over
        assert await documents.try_lease(LEASE, "another", 60.0)

    scheduler = TimeoutScheduler(documents, clock, slow_fire)
    scheduler._lease._monotonic = lambda: wall[0]  # the lease's own clock, moved with the store's
    for timeout_id in ("t1", "t2", "t3"):
        timeout = ScheduledTimeout(timeout_id, "booking", "b1", "signatures", "sign",
                                   clock.now() - timedelta(seconds=1))
        await documents.commit(Changes(puts={(TIMEOUTS, timeout.key): timeout.to_document()}))
    assert await scheduler.fire_due() == 1
    assert fired == ["t1"]
