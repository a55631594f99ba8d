"""The saga timeout scheduler over every document store: the timeouts are kept in due order,
so a round reads the timeouts due by now and no others, a bounded batch at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mussikon.adapters.clock import FakeClock
from mussikon.application.sagas import timeouts
from mussikon.application.sagas.timeouts import TIMEOUTS, ScheduledTimeout, TimeoutScheduler
from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from tests.contract.store_adapters import ADAPTERS, open_stores


class CountingReads(DocumentStore):
    """A document store that counts the timeouts its scans return."""

    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner
        self.read = 0

    def _counted(self, rows: list[tuple[str, Document]], collection: str
                 ) -> list[tuple[str, Document]]:
        if collection == TIMEOUTS:
            self.read += len(rows)
        return rows

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        return self._counted(await self.inner.scan(collection, prefix), collection)

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        return self._counted(await self.inner.scan_page(
            collection, after=after, limit=limit, prefix=prefix, before=before), collection)

    async def get(self, collection: str, key: str) -> Document | None:
        return await self.inner.get(collection, key)

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        return await self.inner.commit(changes, checkpoint=checkpoint, inbox=inbox,
                                       expected=expected, fence=fence)

    async def checkpoint(self, name: str) -> int:
        return await self.inner.checkpoint(name)

    async def checkpoints(self) -> dict[str, int]:
        return await self.inner.checkpoints()

    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        await self.inner.reset_checkpoint(name, collections)

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        return await self.inner.try_lease(name, owner, seconds)

    async def release_lease(self, name: str, owner: str) -> None:
        await self.inner.release_lease(name, owner)

    async def has_seen(self, consumer: str, message_id: str) -> bool:
        return await self.inner.has_seen(consumer, message_id)

    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        return await self.inner.prune_inbox(older_than, limit)


@pytest.fixture(params=ADAPTERS)
async def docs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CountingReads]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield CountingReads(opened.documents)


async def _schedule(docs: DocumentStore, clock: FakeClock, ids_and_delays: Any) -> None:
    changes = Changes()
    for timeout_id, delay in ids_and_delays:
        timeout = ScheduledTimeout(timeout_id, "booking", f"b-{timeout_id}", "signatures",
                                   "sign", clock.now() + delay)
        changes.put(TIMEOUTS, timeout.key, timeout.to_document())
    await docs.commit(changes)


def _scheduler(docs: CountingReads, clock: FakeClock, fired: list[str],
               failing: frozenset[str] = frozenset()) -> TimeoutScheduler:
    async def fire(timeout: ScheduledTimeout) -> None:
        if timeout.id in failing:
            raise RuntimeError("the handler failed")
        fired.append(timeout.id)
        changes = Changes()
        changes.delete(TIMEOUTS, timeout.key)
        await docs.commit(changes)

    return TimeoutScheduler(docs, clock, fire)


async def test_a_round_reads_only_the_timeouts_due(docs: CountingReads) -> None:
    clock, fired = FakeClock(), list[str]()
    # 300 due in the days to come, 3 due now (one without microseconds, which sorts apart)
    await _schedule(docs, clock, [(f"later-{n:03d}", timedelta(hours=1 + n, microseconds=n))
                                  for n in range(300)])
    await _schedule(docs, clock, [("now-a", timedelta(seconds=-1, microseconds=5)),
                                  ("now-b", timedelta(0)), ("now-c", timedelta(minutes=-3))])
    scheduler = _scheduler(docs, clock, fired)
    docs.read = 0
    assert await scheduler.fire_due() == 3
    assert fired == ["now-c", "now-a", "now-b"]  # in due order
    assert docs.read == 3  # the 300 later ones were not read
    docs.read = 0
    assert await scheduler.fire_due() == 0
    assert docs.read == 0
    clock.advance(timedelta(hours=2, seconds=1))  # later-000 and later-001 fall due
    assert await scheduler.fire_due() == 2
    assert fired[3:] == ["later-000", "later-001"] and docs.read == 2


async def test_many_due_timeouts_fire_a_batch_at_a_time(docs: CountingReads,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "BATCH", 4)
    clock, fired = FakeClock(), list[str]()
    await _schedule(docs, clock, [(f"t{n:02d}", timedelta(seconds=-n)) for n in range(10)])
    scheduler = _scheduler(docs, clock, fired)
    docs.read = 0
    assert len(await scheduler.ready()) == 4 and docs.read == 4  # one batch, not all ten
    assert await scheduler.fire_due() == 10
    assert fired == [f"t{n:02d}" for n in reversed(range(10))]


async def test_a_timeout_waiting_out_a_backoff_is_passed_over_not_in_the_way(
        docs: CountingReads, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "BATCH", 2)
    clock, fired = FakeClock(), list[str]()
    await _schedule(docs, clock, [("a", timedelta(seconds=-3)), ("b", timedelta(seconds=-2)),
                                  ("c", timedelta(seconds=-1))])
    scheduler = _scheduler(docs, clock, fired, failing=frozenset({"a", "b"}))
    assert await scheduler.fire_due() == 1  # a and b failed, c behind them still fired
    assert fired == ["c"]
    assert [t.id for t in await scheduler.pending()] == ["a", "b"]
    assert await scheduler.ready() == []  # both wait out their backoff
