"""Inbox retention: entries older than MUSSIKON_INBOX_RETENTION are removed, a batch at a time,
by one process at a time (a lease), in the background of every worker; the setting refuses
a window too short to outlast a redelivery."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.application.retention import InboxRetention, prune_interval
from mussikon.bootstrap import open_app
from mussikon.config import Settings, SettingsError, load_settings
from mussikon.domain.instant import epoch_micros, utc_now
from mussikon.ports.documents import Changes
from tests.polling import eventually

DAY = timedelta(days=1)


class WallClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def handled(documents: InMemoryDocumentStore, count: int, prefix: str) -> None:
    for n in range(count):
        assert await documents.commit(Changes(), inbox=("musicians.on-registered",
                                                        f"{prefix}-{n}"))


async def test_prune_removes_what_is_older_than_the_retention_a_batch_at_a_time() -> None:
    clock = WallClock()
    documents = InMemoryDocumentStore(wall_clock=clock)
    await handled(documents, 25, "old")
    clock.now += 8 * 86_400
    await handled(documents, 3, "new")
    retention = InboxRetention(documents, timedelta(days=7), batch=10)
    assert await retention.prune() == 25
    assert await retention.prune() == 0
    assert not await documents.has_seen("musicians.on-registered", "old-0")
    assert await documents.has_seen("musicians.on-registered", "new-2")


async def test_of_two_workers_pruning_one_store_one_prunes() -> None:
    clock = WallClock()
    documents = InMemoryDocumentStore(wall_clock=clock)
    await handled(documents, 25, "old")
    clock.now += 8 * 86_400
    first, second = (InboxRetention(documents, timedelta(days=7), batch=10, interval=0.01)
                     for _ in range(2))
    await first.start()
    await second.start()
    try:
        async def all_pruned() -> bool:
            return not await documents.has_seen("musicians.on-registered", "old-24")

        await eventually(all_pruned)
        await handled(documents, 5, "later")
        clock.now += 8 * 86_400  # the holder keeps its lease: it prunes these too
        await eventually(lambda: first.removed + second.removed == 30, what="30 removed")
        assert sorted((first.removed, second.removed)) == [0, 30]
    finally:
        await first.stop()
        await second.stop()


def test_the_pruning_interval_is_half_the_retention_at_most_a_minute() -> None:
    assert prune_interval(timedelta(seconds=10)) == 5.0
    assert prune_interval(timedelta(days=7)) == 60.0


async def test_a_running_worker_prunes_the_inbox(tmp_path: Path) -> None:
    app = await open_app(Settings(_env_file=None, store_url=f"sqlite:///{tmp_path}/w.db"))
    try:
        db = app.documents.db  # type: ignore[attr-defined]
        eight_days_ago = epoch_micros(utc_now() - 8 * DAY)
        await db.write(lambda c: c.executemany(
            "INSERT INTO inbox VALUES (?, ?, ?)",
            [("musicians.on-registered", f"old-{n}", eight_days_ago) for n in range(3)]))
        await app.documents.commit(Changes(), inbox=("musicians.on-registered", "new"))
        await app.start()

        async def old_ones_pruned() -> bool:
            return not await app.documents.has_seen("musicians.on-registered", "old-2")

        await eventually(old_ones_pruned)
        assert await app.documents.has_seen("musicians.on-registered", "new")
    finally:
        await app.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("P7D", timedelta(days=7)), ("PT10S", timedelta(seconds=10)), ("3600", timedelta(hours=1)),
    ("P1DT12H", timedelta(days=1, hours=12))])
def test_the_retention_is_an_iso_duration_or_seconds(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str,
        expected: timedelta) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUSSIKON_INBOX_RETENTION", value)
    assert load_settings().inbox_retention == expected


def test_the_retention_is_seven_days_by_default(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("MUSSIKON_")]:
        monkeypatch.delenv(name)
    assert load_settings().inbox_retention == timedelta(days=7)


@pytest.mark.parametrize("value", ["PT9S", "5", "PT0S"])
def test_a_retention_under_ten_seconds_is_refused_in_one_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUSSIKON_INBOX_RETENTION", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("MUSSIKON_INBOX_RETENTION")
    assert "must be at least 10 s" in message
    assert "\n" not in message
