"""Every adapter of the event store and document store ports, opened the same way for the
contract suites: memory, SQLite on a temporary file, PostgreSQL in a unique schema."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from mussikon.adapters.store.memory import InMemoryDocumentStore, InMemoryEventStore, StoredRow
from mussikon.adapters.store.postgres import POSITION_BITS, open_postgres
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
from mussikon.domain.instant import epoch_micros, utc_now
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore, RecordedEvent
from mussikon.wire import EventCodec
from tests.conftest import COSMOS_KEY
from tests.polling import eventually

ADAPTERS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
]
"""Parameters of the fixtures that run a contract suite over every adapter with a global
order (what the projections, sagas and relay read)."""

STORE_ADAPTERS = [*ADAPTERS, pytest.param("cosmos", marks=pytest.mark.cosmos)]
"""Parameters of the event store's and document store's own contract suites: every adapter,
Cosmos DB too (it has no global order: docs/cosmos.md)."""

RawInsert = Callable[[str, int, str, str], Awaitable[None]]


@dataclass
class StoresUnderTest:
    """An adapter's two stores, plus what the suite needs to reach below the port."""

    events: EventStore
    documents: DocumentStore
    insert_raw: RawInsert
    """Store a row as-is (stream id, version, event type, data): a way to plant a bad row."""
    settle: Callable[[], Awaitable[None]]
    """Wait until every committed event is readable in the global order."""
    codec: EventCodec
    """The codec the event store reads with (a test may register an upcaster on it)."""
    everything: Callable[[], Awaitable[list[RecordedEvent]]] | None = None
    """Every stored event, for a store without a global order (Cosmos DB): what a test
    reads to see what was written, in place of `read_all`."""
    global_order: bool = True
    """False: the store has no order across streams (`read_all` and positions)."""
    atomic_across_streams: bool = True
    """False: one transaction writes one stream (`append_streams` of several is refused)."""
    ids_unique_across_streams: bool = True
    """False: an event id is unique within its stream only."""


async def _nothing_to_wait_for() -> None:
    return None


@asynccontextmanager
async def open_stores(kind: str, tmp_path: Path,
                      request: pytest.FixtureRequest) -> AsyncIterator[StoresUnderTest]:
    """Fresh, empty stores of one adapter; closed (and dropped) afterwards."""
    if kind == "memory":
        async with _memory() as stores:
            yield stores
    elif kind == "sqlite":
        async with _sqlite(tmp_path / "events.db") as stores:
            yield stores
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        async with postgres_stores(url, f"t{uuid4().hex[:12]}") as stores:
            yield stores
    elif kind == "cosmos":
        endpoint = request.getfixturevalue("cosmos_endpoint")
        async with cosmos_stores(endpoint, f"t{uuid4().hex[:12]}") as stores:
            yield stores
    else:
        raise ValueError(f"unknown adapter {kind!r}")


@asynccontextmanager
async def _memory() -> AsyncIterator[StoresUnderTest]:
    codec = EventCodec()
    events = InMemoryEventStore(codec)

    async def insert_raw(stream_id: str, version: int, event_type: str, data: str) -> None:
        row = StoredRow(
            position=len(events.rows) + 1, event_id=str(uuid4()), stream_id=stream_id,
            version=version, event_type=event_type, data=data.encode(),
            occurred_at=epoch_micros(utc_now()), correlation_id=None, causation_id=None,
            recorded_at=utc_now())
        events.rows.append(row)
        events._streams.setdefault(stream_id, []).append(row)  # as an append keeps it

    yield StoresUnderTest(events, InMemoryDocumentStore(), insert_raw, _nothing_to_wait_for,
                          codec)


@asynccontextmanager
async def _sqlite(path: Path) -> AsyncIterator[StoresUnderTest]:
    db = await SqliteDatabase(str(path)).open()
    codec = EventCodec()

    async def insert_raw(stream_id: str, version: int, event_type: str, data: str) -> None:
        now = epoch_micros(utc_now())
        await db.run(lambda c: c.execute(
            "INSERT INTO events (event_id, stream_id, version, event_type, data, occurred_at,"
            " recorded_at) VALUES (?,?,?,?,?,?,?)",
            (str(uuid4()), stream_id, version, event_type, data, now, now)))

    try:
        yield StoresUnderTest(SqliteEventStore(db, codec), SqliteDocumentStore(db), insert_raw,
                              _nothing_to_wait_for, codec)
    finally:
        await db.close()


@asynccontextmanager
async def postgres_stores(url: str, schema: str,
                          pool_size: int = 4) -> AsyncIterator[StoresUnderTest]:
    """PostgreSQL stores in their own schema, dropped afterwards."""
    codec = EventCodec()
    events, documents = await open_postgres(url, schema, pool_size=pool_size, codec=codec)
    admin = await asyncpg.connect(url)

    async def insert_raw(stream_id: str, version: int, event_type: str, data: str) -> None:
        await admin.execute(
            f'INSERT INTO "{schema}".events (position, event_id, stream_id, version, event_type,'
            f" data, occurred_at) VALUES ((pg_current_xact_id()::text::bigint << {POSITION_BITS}),"
            " gen_random_uuid(), $1, $2, $3, $4, now())", stream_id, version, event_type, data)

    async def settle() -> None:
        # every transaction that began before now has ended: the global order is complete
        started = await admin.fetchval(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")

        async def transactions_begun_before_ended() -> bool:
            return bool(await admin.fetchval(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint") >= started)

        await eventually(transactions_begun_before_ended, interval=0.005)

    try:
        yield StoresUnderTest(events, documents, insert_raw, settle, codec)
    finally:
        await events.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@asynccontextmanager
async def cosmos_stores(endpoint: str, database: str) -> AsyncIterator[StoresUnderTest]:
    """Cosmos DB stores in a database of their own on the local server, dropped afterwards."""
    from mussikon.adapters.store.cosmos.account import open_account
    from mussikon.adapters.store.cosmos.documents import CosmosDocumentStore
    from mussikon.adapters.store.cosmos.events import CosmosEventStore

    codec = EventCodec()
    account = await open_account(endpoint, COSMOS_KEY, database=database,
                                 events_container="Events", documents_container="Documents",
                                 verify_tls=False)
    events = CosmosEventStore(account, codec)

    async def insert_raw(stream_id: str, version: int, event_type: str, data: str) -> None:
        await account.events.create_item({
            "id": str(uuid4()), "aggregateId": stream_id, "eventType": event_type,
            "eventData": data, "version": version, "timestamp": "2026-11-27T21:54:02.5Z",
            "partitionKey": stream_id})

    async def everything() -> list[RecordedEvent]:
        items = [item async for item in account.events.query_items("SELECT * FROM c")]
        records = [events.decode(item) for item in items]
        return sorted(records, key=lambda r: (r.recorded_at, r.stream_id, r.version))

    try:
        yield StoresUnderTest(events, CosmosDocumentStore(account), insert_raw,
                              _nothing_to_wait_for, codec, everything, global_order=False,
                              atomic_across_streams=False, ids_unique_across_streams=False)
    finally:
        await account.client.delete_database(database)
        await events.close()
