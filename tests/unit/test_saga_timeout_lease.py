"""Several processes run a timeout scheduler; one fires at a time, the others stand by."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mussikon.adapters.clock import FakeClock
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.sagas import timeouts
from mussikon.application.sagas.timeouts import TIMEOUTS, ScheduledTimeout, TimeoutScheduler
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
            changes.delete(TIMEOUTS, timeout.id)
            await documents.commit(changes)
        return TimeoutScheduler(documents, clock, fire)

    async def schedule(timeout_id: str) -> None:
        timeout = ScheduledTimeout(timeout_id, "booking", "b1", "signatures", "sign",
                                   clock.now() - timedelta(seconds=1))
        await documents.commit(Changes(puts={(TIMEOUTS, timeout_id): timeout.to_document()}))

    first, second = scheduler("first"), scheduler("second")
    await schedule("t1")
    assert await first.fire_due() == 1
    await schedule("t2")
    assert await second.fire_due() == 0  # the first one holds the lease
    await first.stop()  # a clean stop gives the lease up
    assert await second.fire_due() == 1
    assert fired == [("first", "t1"), ("second", "t2")]
