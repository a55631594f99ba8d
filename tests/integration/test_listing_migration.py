"""SQLite migration 4 and PostgreSQL migration 6 bring what was stored before into the
collections read by ranges: a pending timeout under its due time, each saga in the listings
of `sagas list`, the notifications numbered in the order sent. The keys they write are the
ones the program computes (it deletes and moves them by those keys)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from mussikon.adapters.clock import FakeClock
from mussikon.adapters.notifications import RecordingNotifier
from mussikon.adapters.store.postgres import migrate as migrate_postgres
from mussikon.adapters.store.postgres import open_postgres
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore
from mussikon.application.sagas.journal import LISTING, SagaJournal
from mussikon.application.sagas.state import SagaState, SagaStatus
from mussikon.application.sagas.timeouts import TIMEOUTS, ScheduledTimeout, TimeoutScheduler
from mussikon.ports.documents import Document, DocumentStore

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

OLD_TIMEOUTS = [
    ScheduledTimeout("t-late", "booking", "c-1", "signatures", "sign", START + timedelta(days=2)),
    ScheduledTimeout("t-due", "booking", "c-2", "signatures", "sign",
                     START - timedelta(seconds=1, microseconds=-25)),
]
OLD_SAGAS = [
    SagaState("booking", "c-1", ["a", "b"], version=3, status=SagaStatus.WAITING,
              started_at=START - timedelta(hours=1, microseconds=-123), updated_at=START),
    SagaState("booking", "c-2", ["a", "b"], version=2, status=SagaStatus.COMPENSATED,
              started_at=(START - timedelta(hours=2)).astimezone(timezone(timedelta(hours=-4))),
              updated_at=START),
    SagaState("musician-application", "a-1", ["a"], version=5, status=SagaStatus.COMPLETED,
              started_at=START - timedelta(minutes=5), updated_at=START),
]


def _old_documents() -> list[tuple[str, str, Document]]:
    """As a program from before the migration stored them."""
    docs: list[tuple[str, str, Document]] = [
        ("saga-timeouts", t.id, t.to_document()) for t in OLD_TIMEOUTS]
    docs += [("sagas", s.saga_id, {**s.to_document(), "version": s.version}) for s in OLD_SAGAS]
    for n, sequence in enumerate((30, 10, 20)):
        key = f"welcome:e-{n}:ana@example.com"
        docs.append(("notifications", key, {
            "key": key, "kind": "welcome", "recipient": "ana@example.com",
            "recipient_name": "Ana", "subject": f"sent {sequence}", "body": "hi", "about": "",
            "created_at": START.isoformat(), "sent_at": START.isoformat(), "channel": "log",
            "sequence": sequence}))
    return docs


async def _check(documents: DocumentStore, expected_listing: set[str]) -> None:
    fired: list[str] = []

    async def fire(timeout: ScheduledTimeout) -> None:
        fired.append(timeout.id)

    scheduler = TimeoutScheduler(documents, FakeClock(START), fire)
    assert [t.id for t in await scheduler.ready()] == ["t-due"]
    assert sorted(k for k, _ in await documents.scan(TIMEOUTS)) == sorted(
        t.key for t in OLD_TIMEOUTS)
    assert await documents.scan("saga-timeouts") == []
    assert {k for k, _ in await documents.scan(LISTING)} == expected_listing
    journal = SagaJournal(documents)
    assert [s.saga_id for s in await journal.page(limit=10)] == [
        "musician-application-a-1", "booking-c-1", "booking-c-2"]
    assert [s.saga_id for s in await journal.page(SagaStatus.COMPENSATED, "booking",
                                                   limit=10)] == ["booking-c-2"]
    sent = await RecordingNotifier(documents).sent(10)
    assert [(s.number, s.notification.subject) for s in sent] == [
        (1, "sent 10"), (2, "sent 20"), (3, "sent 30")]


async def _listing_as_written(documents: DocumentStore) -> set[str]:
    """The listing keys the program writes for the same sagas."""
    journal = SagaJournal(documents)
    for state in OLD_SAGAS:
        await journal.commit(SagaState(state.kind, state.instance, state.steps), state, [],
                             "", START)
    return {k for k, _ in await documents.scan(LISTING)}


async def test_sqlite_migration_4(tmp_path: Path) -> None:
    fresh = await SqliteDatabase(str(tmp_path / "fresh.db")).open()
    try:
        expected = await _listing_as_written(SqliteDocumentStore(fresh))
    finally:
        await fresh.close()
    db = await SqliteDatabase(str(tmp_path / "old.db")).open()

    def downgrade(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO documents VALUES (?, ?, ?)",
                         [(c, k, json.dumps(d)) for c, k, d in _old_documents()])
        conn.execute("DROP INDEX inbox_by_time")  # migration 5's, absent at version 3
        conn.execute("ALTER TABLE events DROP COLUMN traceparent")  # migration 6's
        conn.execute("PRAGMA user_version = 3")

    await db.run(downgrade)
    await db.close()
    db = await SqliteDatabase(str(tmp_path / "old.db")).open()
    try:
        await _check(SqliteDocumentStore(db), expected)
    finally:
        await db.close()


@pytest.mark.postgres
async def test_postgres_migration_6(postgres_url: str) -> None:
    schema = f"t{uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    stores: list[Callable[[], Awaitable[None]]] = []
    try:
        events, documents = await open_postgres(postgres_url, schema, pool_size=2)
        stores.append(events.close)
        expected = await _listing_as_written(documents)
        await admin.execute(f'DELETE FROM "{schema}".documents')
        await admin.executemany(
            f'INSERT INTO "{schema}".documents VALUES ($1, $2, $3)',
            [(c, k, json.dumps(d)) for c, k, d in _old_documents()])
        await admin.execute(f'DELETE FROM "{schema}".schema_version WHERE version >= 6')
        assert await migrate_postgres(postgres_url, schema) >= 6
        await _check(documents, expected)
    finally:
        for close in stores:
            await close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
