"""Every statement of the PostgreSQL store is bounded: a lock another connection holds, a
statement running too long or a server that stops answering fails the operation with
StoreUnavailable after its timeout (the caller retries, as for any store failure), never
hangs it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from mussikon.adapters.store import postgres
from mussikon.adapters.store.postgres import open_postgres
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.documents import Changes
from mussikon.ports.event_store import NO_STREAM, StoreUnavailable
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
async def admin(postgres_url: str, unique_name: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of our own, to hold locks; the test's schema is dropped afterwards."""
    connection = await asyncpg.connect(postgres_url)
    try:
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        await connection.close()


def registered(tag: str) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=tag, email=f"{tag}@example.com", name=tag,
                                   genres=("jazz",), location="Cali")


async def test_a_write_waiting_for_a_lock_fails_within_the_lock_timeout_then_goes_through(
        postgres_url: str, unique_name: str, admin: asyncpg.Connection) -> None:
    events, documents = await open_postgres(postgres_url, unique_name, pool_size=1,
                                            lock_timeout=0.2, statement_timeout=10)
    s = f'"{unique_name}"'
    try:
        await documents.commit(Changes(), checkpoint=("relay", 1))
        async with admin.transaction():
            await admin.execute(f"LOCK TABLE {s}.events IN ACCESS EXCLUSIVE MODE;"
                                f" SELECT FROM {s}.checkpoints WHERE name = 'relay' FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as append_failed:
                await events.append("s", [registered("m")], NO_STREAM)
            with pytest.raises(StoreUnavailable) as commit_failed:
                await documents.commit(Changes(), checkpoint=("relay", 2))
            took = time.monotonic() - started
        assert 0.4 <= took < 3  # two waits of 0.2 s, not ten seconds each
        for failed in (append_failed, commit_failed):
            assert "gave up on a statement" in str(failed.value)
            assert "lock timeout" in str(failed.value)
        assert "appending to stream 's'" in str(append_failed.value)
        # The lock released, the same connection (the pool holds one) does the retries.
        assert await events.append("s", [registered("m")], NO_STREAM) == 1
        await documents.commit(Changes(), checkpoint=("relay", 2))
        assert await documents.checkpoint("relay") == 2
    finally:
        await events.close()


async def test_a_statement_running_past_the_statement_timeout_is_cancelled(
        postgres_url: str, unique_name: str, admin: asyncpg.Connection) -> None:
    events, _ = await open_postgres(postgres_url, unique_name, pool_size=1,
                                    statement_timeout=0.3, lock_timeout=10)
    try:
        async with admin.transaction():
            await admin.execute(f'LOCK TABLE "{unique_name}".events IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                await events.stream_version("s")
            took = time.monotonic() - started
        assert 0.3 <= took < 3
        assert await events.stream_version("s") == 0
    finally:
        await events.close()


async def test_a_server_that_stops_answering_is_given_up_on_and_the_connection_replaced(
        postgres_url: str, unique_name: str, admin: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(postgres, "NO_ANSWER_MARGIN", 0.3)
    proxy = TcpProxy(postgres_url, default_port=5432)
    url = await proxy.start()
    events, _ = await open_postgres(url, unique_name, pool_size=1, statement_timeout=0.2)
    try:
        assert await events.append("s", [registered("a")], NO_STREAM) == 1
        proxy.stall()  # the connection stays open; nothing goes through it any more
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await events.append("s", [registered("b")], 1)
        took = time.monotonic() - started
        assert 0.5 <= took < 3  # the statement timeout and the margin
        assert any("no answer from PostgreSQL" in r.getMessage() for r in caplog.records)
        # The silent connection was dropped: a new one (forwarded again) does the retry.
        assert await events.append("s", [registered("b")], 1) == 2
        assert proxy.accepted >= 2
    finally:
        await events.close()
        await proxy.close()
