"""Group commit: concurrent writes share a transaction, each still succeeds or fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mussikon.adapters.store.sqlite import SqliteDatabase


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = await SqliteDatabase(str(tmp_path / "group.db")).open()
    await database.run(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)"))
    yield database
    await database.close()


def insert(key: str, n: int = 0) -> Callable[[sqlite3.Connection], str]:
    def body(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES (?, ?)", (key, n))
        return key
    return body


async def keys(db: SqliteDatabase) -> list[str]:
    rows = await db.run(lambda c: c.execute("SELECT k FROM t ORDER BY k").fetchall())
    return [r[0] for r in rows]


async def test_concurrent_writers_share_commits_and_each_gets_its_own_result(
        db: SqliteDatabase) -> None:
    async def writer(w: int) -> list[str]:
        return [await db.write(insert(f"{w:02}-{i:02}")) for i in range(20)]

    before = db.commits
    results = await asyncio.gather(*(writer(w) for w in range(16)))

    assert results == [[f"{w:02}-{i:02}" for i in range(20)] for w in range(16)]
    assert len(await keys(db)) == 320
    assert db.commits - before < 320 / 4  # batched: many writes per commit


async def test_a_single_writer_commits_each_write_at_once(db: SqliteDatabase) -> None:
    before = db.commits
    for i in range(50):
        await db.write(insert(f"k{i:02}"))

    assert db.commits - before == 50
    assert len(await keys(db)) == 50


async def test_a_failing_write_in_a_group_leaves_nothing_and_fails_only_its_caller(
        db: SqliteDatabase) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES ('bad-1', 1)")
        conn.execute("INSERT INTO t VALUES ('good-0', 1)")  # a duplicate key: fails

    async def write(body: Callable[[sqlite3.Connection], object]) -> object:
        return await db.write(body)

    results = await asyncio.gather(write(insert("good-0")), write(half_then_fail),
                                   write(insert("good-1")), return_exceptions=True)

    assert results[0] == "good-0" and results[2] == "good-1"
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await keys(db) == ["good-0", "good-1"]  # bad-1 was undone with its write


async def test_writes_wait_for_another_process_lock_and_then_commit(
        db: SqliteDatabase, tmp_path: Path) -> None:
    other = sqlite3.connect(str(tmp_path / "group.db"), isolation_level=None,
                            check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        done = await asyncio.wait_for(asyncio.gather(
            *(db.write(insert(f"w{i}")) for i in range(5))), 10)
    finally:
        release.join()
        other.close()

    assert sorted(done) == [f"w{i}" for i in range(5)]
    assert await keys(db) == [f"w{i}" for i in range(5)]


async def test_a_write_whose_caller_gave_up_before_its_turn_is_not_run(
        db: SqliteDatabase) -> None:
    async def other_task_writes() -> None:
        await db.write(insert("first"))

    await asyncio.create_task(other_task_writes())  # another task wrote: the next one waits
    waiting = asyncio.ensure_future(db.write(insert("abandoned")))
    await asyncio.sleep(0)  # its write is handed in
    waiting.cancel()
    await db.write(insert("next"))  # handed in after it: done once its turn has passed

    assert waiting.cancelled()
    assert await keys(db) == ["first", "next"]


async def test_a_failing_one_statement_write_in_a_group_fails_alone(db: SqliteDatabase) -> None:
    async def write(key: str) -> object:
        return await db.write(insert(key), one_statement=True)

    await db.write(insert("taken"))
    results = await asyncio.gather(write("a"), write("taken"), write("b"),
                                   return_exceptions=True)

    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await keys(db) == ["a", "b", "taken"]


async def test_closing_the_database_finishes_the_writes_handed_in(tmp_path: Path) -> None:
    path = str(tmp_path / "closing.db")
    database = await SqliteDatabase(path).open()
    await database.run(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)"))
    writes = [asyncio.ensure_future(database.write(insert(f"k{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # the writes are handed in (queued, or on the worker thread)

    await database.close()

    assert sorted(await asyncio.gather(*writes)) == sorted(f"k{i}" for i in range(20))
    # They ran before the connections closed: none was reopened to run a late write.
    assert database._conn is None and database._fast is None
    reopened = await SqliteDatabase(path).open()
    assert len(await keys(reopened)) == 20
    await reopened.close()
