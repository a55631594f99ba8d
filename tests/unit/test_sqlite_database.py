"""SqliteDatabase's two paths: statements on the event loop's thread, and the worker thread
that waits when another connection holds the file's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from mussikon.adapters.store.sqlite import (
    MIGRATIONS,
    SqliteDatabase,
    SqliteDocumentStore,
    SqliteEventStore,
)
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.documents import Changes
from mussikon.ports.event_store import ANY_VERSION, NO_STREAM, ConcurrencyError
from mussikon.wire import EventCodec


def registered(musician_id: str = "m-1") -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=musician_id, email="ana@example.com",
                                   name="Ana", genres=("jazz",), location="Santo Domingo")


@pytest.mark.parametrize("inline", [True, False])
async def test_both_paths_store_and_read_the_same(tmp_path: Path, inline: bool) -> None:
    db = await SqliteDatabase(str(tmp_path / "e.db"), inline=inline).open()
    store = SqliteEventStore(db)
    try:
        first, second, third = registered(), registered(), registered()
        assert await store.append("s", [first], NO_STREAM) == 1
        assert await store.append("s", [second], 1) == 2
        assert await store.append("s", [third], ANY_VERSION) == 3
        assert await store.append("s", [second], 1) == 3  # a retry
        with pytest.raises(ConcurrencyError) as caught:
            await store.append("s", [registered()], 1)
        assert (caught.value.expected, caught.value.actual) == (1, 3)
        assert [r.event for r in await store.read_stream("s")] == [first, second, third]
    finally:
        await db.close()


async def test_a_locked_file_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "e.db")
    db = await SqliteDatabase(path).open()
    store = SqliteEventStore(db)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    try:
        assert await store.append("s", [registered()], NO_STREAM) == 1
        assert await store.append("s", [registered(), registered()], 1) == 3
        assert ticks >= 10  # the loop went on while the append waited for the lock
        assert len(await store.read_stream("s")) == 3
    finally:
        ticking.cancel()
        other.close()
        await db.close()


async def test_document_writes_wait_for_a_locked_file_too(tmp_path: Path) -> None:
    path = str(tmp_path / "e.db")
    db = await SqliteDatabase(path).open()
    documents = SqliteDocumentStore(db)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def lock_for_a_moment() -> None:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock …
        threading.Timer(0.1, lambda: other.execute("COMMIT")).start()  # … for 0.1 s

    try:
        changes = Changes()
        changes.put("profiles", "m-1", {"name": "Ana"})
        lock_for_a_moment()
        assert await documents.commit(changes, checkpoint=("profiles", 3))
        lock_for_a_moment()
        await documents.reset_checkpoint("profiles", ["profiles"])
        lock_for_a_moment()
        assert await documents.try_lease("relay", "me", 5.0)
        assert await documents.checkpoint("profiles") == 0
        assert await documents.get("profiles", "m-1") is None
    finally:
        other.close()
        await db.close()


async def test_a_task_running_many_operations_lets_the_others_run(tmp_path: Path) -> None:
    db = await SqliteDatabase(str(tmp_path / "e.db"), synchronous="OFF").open()
    store = SqliteEventStore(db)
    other_ran = asyncio.Event()

    async def other() -> None:
        other_ran.set()

    task = asyncio.create_task(other())
    try:
        await store.stream_version("s")
        assert other_ran.is_set()
        await task
    finally:
        await db.close()


async def test_events_stored_before_the_origin_column_are_ours(tmp_path: Path) -> None:
    """Migration 2 adds `origin`: an event written by the first schema reads as one of ours."""
    path = tmp_path / "old.db"
    event = registered()
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    old.execute("INSERT INTO events (event_id, stream_id, version, event_type, data,"
                " occurred_at, recorded_at) VALUES (?, 's', 1, ?, ?, 0, 0)",
                (str(event.id), event.event_type, EventCodec().encode(event).decode()))
    old.close()
    db = await SqliteDatabase(str(path)).open()
    try:
        assert await db.schema_version() == len(MIGRATIONS)
        store = SqliteEventStore(db)
        [record] = await store.read_all()
        assert (record.event, record.origin) == (event, "")
        foreign = registered("m-2")
        assert (await store.record_foreign(foreign, "rabbitmq")).origin == "rabbitmq"
    finally:
        await db.close()
