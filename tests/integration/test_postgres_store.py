"""The PostgreSQL store under what only a server brings: many writers committing out of
order, races on one stream, connections dropped mid-append, concurrent migrations."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from uuid import UUID

import asyncpg
import pytest

from mussikon.adapters.store.postgres import (
    READ_ALL_FIRST_PART,
    READ_ALL_PART,
    READ_CHUNK,
    PostgresEventStore,
    _CollectorPaused,
    migrate,
    open_postgres,
)
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.domain.instant import Instant, ticks_of
from mussikon.ports.documents import Changes, Fence
from mussikon.ports.event_store import (
    ANY_VERSION,
    NO_STREAM,
    ConcurrencyError,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
    UndecodableEventError,
)
from tests.polling import eventually

pytestmark = pytest.mark.postgres


@dataclass
class Server:
    """Stores in a fresh schema, and a connection of our own to reach behind them."""

    url: str
    schema: str
    events: PostgresEventStore
    admin: asyncpg.Connection

    async def delay_commits(self, min_seconds: float, max_seconds: float) -> None:
        """Make every append sleep inside its transaction, after taking its position."""
        s = f'"{self.schema}"'
        await self.admin.execute(f"""
            CREATE FUNCTION {s}.delay_commit() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                PERFORM pg_sleep({min_seconds} + random() * {max_seconds - min_seconds});
                RETURN NULL;
            END $body$;
            CREATE TRIGGER delay_commit AFTER INSERT ON {s}.events
                FOR EACH STATEMENT EXECUTE FUNCTION {s}.delay_commit();
        """)

    async def settle(self) -> None:
        """Wait until every transaction that began before now has ended."""
        started = await self.admin.fetchval(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")

        async def transactions_begun_before_ended() -> bool:
            return bool(await self.admin.fetchval(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint") >= started)

        await eventually(transactions_begun_before_ended, interval=0.005)

    async def commit_at_once(self) -> None:
        await self.admin.execute(f'DROP TRIGGER delay_commit ON "{self.schema}".events')

    async def appends_waiting_to_commit(self) -> int:
        """How many of the stores' connections are in an append held up by `delay_commits`."""
        return int(await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event = 'PgSleep'", f"mussikon:{self.schema}"))

    async def stores_are_quiet(self) -> bool:
        """True when none of the stores' connections is running a statement or holds a
        transaction open (a statement cut off by the client may still run on the server)."""
        return not await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
            " AND state <> 'idle'", f"mussikon:{self.schema}")

    async def terminate_our_connections(self) -> int:
        return int(await self.admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1", f"mussikon:{self.schema}"))


@pytest.fixture
async def server(postgres_url: str, unique_name: str) -> AsyncIterator[Server]:
    events, _ = await open_postgres(postgres_url, unique_name, pool_size=24)
    admin = await asyncpg.connect(postgres_url)
    try:
        yield Server(postgres_url, unique_name, events, admin)
    finally:
        await events.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        await admin.close()


def registered(tag: str) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=tag, email=f"{tag}@example.com", name=tag,
                                   genres=("jazz",), location="Cali")


async def test_sixteen_writers_committing_out_of_order_never_make_a_reader_skip(
        server: Server) -> None:
    await server.delay_commits(0.0, 0.03)
    store = server.events
    rng = random.Random(7)
    completed: list[UUID] = []  # event ids in the order their appends returned
    writers_done = asyncio.Event()

    async def writer(w: int) -> None:
        versions = [0, 0, 0]
        for n in range(10):
            s = n % 3
            batch = [registered(f"w{w}-{n}-{k}") for k in range(rng.randint(1, 3))]
            versions[s] = await store.append(f"w{w}-s{s}", batch, versions[s])
            completed.extend(e.id for e in batch)

    seen: list[RecordedEvent] = []

    async def subscriber() -> None:
        position = 1
        while True:
            batch = await store.read_all(position, limit=40)
            seen.extend(batch)
            if batch:
                position = batch[-1].position + 1
            elif writers_done.is_set():
                return  # caught up after everything was committed and readable
            else:
                await asyncio.sleep(0.002)

    async def all_writers() -> None:
        await asyncio.gather(*(writer(w) for w in range(16)))
        await server.settle()
        writers_done.set()

    await asyncio.wait_for(asyncio.gather(all_writers(), subscriber()), timeout=60)

    seen_ids = [r.event.id for r in seen]
    assert len(seen_ids) == len(set(seen_ids)), "an event was delivered twice"
    assert set(seen_ids) == set(completed), "an event was skipped"
    positions = [r.position for r in seen]
    assert positions == sorted(positions)
    for stream in {r.stream_id for r in seen}:
        versions = [r.version for r in seen if r.stream_id == stream]
        assert versions == list(range(1, len(versions) + 1)), stream
    # the hazard did happen: some append took an earlier position and returned later
    position_of = {r.event.id: r.position for r in seen}
    finished = [position_of[i] for i in completed]
    assert any(a > b for a, b in itertools.pairwise(finished))
    assert await store.read_all(positions[-1] + 1) == []
    assert await store.head_position() == positions[-1]


async def test_the_newest_events_and_their_count_stop_where_read_all_stops(
        server: Server) -> None:
    """`read_last` and `count_after` see what `read_all` sees: nothing at or above the oldest
    transaction still running, so a tail that follows on from the newest event it showed
    never passes over one that commits later at a lower position."""
    store = server.events
    for n in range(3):
        await store.append(f"early-{n}", [registered(f"early-{n}")], NO_STREAM)
    await server.settle()
    early = await store.read_all(limit=10)
    open_writer = await asyncpg.connect(server.url)
    try:
        writing = open_writer.transaction()
        await writing.start()  # takes its position now, commits at the end
        await open_writer.execute(
            f'INSERT INTO "{server.schema}".events (position, event_id, stream_id, version,'
            " event_type, data, occurred_at) VALUES ((pg_current_xact_id()::text::bigint"
            " << 20), gen_random_uuid(), 'slow', 1, 'MusicianRegisteredEvent', $1, now())",
            '{"EventType": "MusicianRegisteredEvent"}')
        await store.append("late", [registered("late")], NO_STREAM)  # committed, above it
        assert await store.read_last(10) == early
        assert await store.count_after(0) == 3
        assert await store.count_after(early[0].position) == 2
        assert await store.head_position() == early[-1].position
        await writing.rollback()
    finally:
        await open_writer.close()
    await server.settle()
    [late] = await store.read_last(1)
    assert late.stream_id == "late"
    assert await store.count_after(early[-1].position) == 1


async def test_twenty_racing_writers_one_wins_each_version(server: Server) -> None:
    await server.delay_commits(0.0, 0.01)
    store = server.events
    await store.append("race", [registered("first")], NO_STREAM)
    for version in range(1, 4):
        results = await asyncio.gather(
            *(store.append("race", [registered(f"{version}-{n}")], version) for n in range(20)),
            return_exceptions=True)
        assert results.count(version + 1) == 1
        losers = [r for r in results if r != version + 1]
        assert len(losers) == 19
        assert all(isinstance(r, ConcurrencyError) and (r.expected, r.actual) == (
            version, version + 1) for r in losers), losers
    assert [r.version for r in await store.read_stream("race")] == [1, 2, 3, 4]


async def test_racing_writers_at_any_version_all_get_in(server: Server) -> None:
    store = server.events
    results = await asyncio.gather(
        *(store.append("many", [registered(f"any-{n}")], ANY_VERSION) for n in range(20)))
    assert sorted(results) == list(range(1, 21))
    assert [r.version for r in await store.read_stream("many")] == list(range(1, 21))


async def test_dropped_connections_fail_appends_cleanly_and_the_store_reconnects(
        server: Server) -> None:
    store = server.events
    await server.delay_commits(2.0, 2.0)
    batches = {f"cut-{n}": [registered(f"cut-{n}-{k}") for k in range(3)] for n in range(6)}
    in_flight = [asyncio.create_task(store.append(s, b, NO_STREAM)) for s, b in batches.items()]

    async def every_append_waits_to_commit() -> bool:
        return await server.appends_waiting_to_commit() == len(batches)

    await eventually(every_append_waits_to_commit)
    assert await server.terminate_our_connections() >= len(batches)
    results = await asyncio.gather(*in_flight, return_exceptions=True)

    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "retrying it with the same events is safe" in str(results[0])
    await server.commit_at_once()
    for stream in batches:  # nothing half-written
        assert await store.stream_version(stream) == 0
    for stream, batch in batches.items():  # the pool reconnects; the retries go through
        assert await store.append(stream, batch, NO_STREAM) == 3
    assert await store.append("after", [registered("after")], NO_STREAM) == 1
    await server.settle()  # a transaction open elsewhere in the cluster holds the order back
    everything = await store.read_all(limit=100)
    assert len(everything) == 3 * len(batches) + 1
    assert len({r.event.id for r in everything}) == len(everything)


async def test_a_cancelled_append_is_whole_or_absent_and_frees_its_connection(
        server: Server) -> None:
    store, _ = await open_postgres(server.url, server.schema, pool_size=1)
    try:
        await server.delay_commits(0.5, 0.5)
        batch = [registered(f"cancelled-{k}") for k in range(3)]
        append = asyncio.create_task(store.append("cancelled", batch, NO_STREAM))

        async def the_append_waits_to_commit() -> bool:
            return await server.appends_waiting_to_commit() == 1

        await eventually(the_append_waits_to_commit)
        append.cancel()
        with pytest.raises(asyncio.CancelledError):
            await append
        await server.commit_at_once()
        # the only connection was given up, not leaked: the pool opens another one
        later = await asyncio.wait_for(store.append("later", [registered("l")], NO_STREAM), 5)
        assert later == 1
        await eventually(server.stores_are_quiet)  # the interrupted statement has ended
        assert await store.stream_version("cancelled") in (0, 3)
        assert await store.append("cancelled", batch, NO_STREAM) == 3  # retrying is safe
    finally:
        await store.close()


async def test_concurrent_migrations_agree_and_a_rerun_changes_nothing(
        postgres_url: str, unique_name: str) -> None:
    try:
        versions = await asyncio.gather(*(migrate(postgres_url, unique_name) for _ in range(4)))
        assert len(set(versions)) == 1 and versions[0] >= 1
        assert await migrate(postgres_url, unique_name) == versions[0]
        events, _ = await open_postgres(postgres_url, unique_name, pool_size=2)
        await events.append("s", [registered("m")], NO_STREAM)
        assert await migrate(postgres_url, unique_name) == versions[0]
        assert await events.stream_version("s") == 1
        await events.close()
    finally:
        admin = await asyncpg.connect(postgres_url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        await admin.close()


async def test_events_stored_before_has_ticks_existed_are_marked_by_the_migration(
        server: Server) -> None:
    """Migration 2 adds `has_ticks` and marks the events already stored whose JSON holds a
    seventh fraction digit; they are read back exactly, the others by the faster path. An
    event appended afterwards by an older program (which names no `has_ticks`) is read
    exactly too."""
    exact = Instant(2026, 1, 2, 3, 4, 5, 123456, UTC, tick=7)
    plain, ticked = registered("plain"), dataclasses.replace(registered("ticked"),
                                                            occurred_at=exact)
    await server.events.append("s", [plain], NO_STREAM)
    await server.events.append("s", [ticked], 1)
    s = f'"{server.schema}"'
    await server.admin.execute(f"ALTER TABLE {s}.events DROP COLUMN has_ticks,"
                               " DROP COLUMN origin;"
                               f" DELETE FROM {s}.schema_version WHERE version >= 2")
    assert await migrate(server.url, server.schema) >= 2
    marks = await server.admin.fetch(f"SELECT has_ticks FROM {s}.events ORDER BY version")
    assert [m["has_ticks"] for m in marks] == [False, True]
    # A program from before the column, still running during an upgrade, names no has_ticks:
    # its events are taken to have ticks (read by the exact path).
    older = dataclasses.replace(registered("older"), occurred_at=Instant(
        2026, 1, 2, 3, 4, 5, 654321, UTC, tick=3))
    await server.admin.execute(
        f"INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, data,"
        " occurred_at) VALUES (pg_current_xact_id()::text::bigint << 20, $1, 's', 3, $2, $3,"
        " $4)", older.id, older.event_type, server.events.codec.encode(older).decode(),
        older.occurred_at)
    store, _ = await open_postgres(server.url, server.schema, pool_size=1)
    try:
        read = [r.event for r in await store.read_stream("s")]
    finally:
        await store.close()
    assert read == [plain, ticked, older]
    assert [ticks_of(e.occurred_at) for e in read] == [0, 7, 3]


async def test_a_schema_newer_than_the_program_is_refused(server: Server) -> None:
    await server.admin.execute(
        f'INSERT INTO "{server.schema}".schema_version (version) VALUES (999)')
    with pytest.raises(StoreError, match="newer than this program"):
        await migrate(server.url, server.schema)


async def test_an_unreachable_server_is_unavailable_and_the_password_stays_secret() -> None:
    with pytest.raises(StoreUnavailable) as raised:
        await open_postgres("postgresql://mussikon:s3cret@127.0.0.1:1/test", "x")
    assert "127.0.0.1:1" in str(raised.value)
    assert "s3cret" not in str(raised.value)


async def test_a_missing_database_is_a_clear_store_error(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="refused the connection") as raised:
        await open_postgres(postgres_url.rsplit("/", 1)[0] + "/no_such_database_here", "x")
    assert not isinstance(raised.value, StoreUnavailable)
    assert "no_such_database_here" in str(raised.value)


async def test_a_schema_name_must_be_an_identifier(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        await open_postgres(postgres_url, 'x"; DROP TABLE y; --')


async def test_recording_times_are_read_exactly_whatever_the_session_time_zone(
        server: Server) -> None:
    """Reads take the recording time in its binary form and convert it: the same instant as
    asyncpg's own decoding gives, in UTC, also for a session in another time zone."""
    for n in range(3):
        await server.events.append(f"musician-z{n}", [registered(f"z{n}")], NO_STREAM)
    await server.settle()
    stored = [r["recorded_at"] for r in await server.admin.fetch(
        f'SELECT recorded_at FROM "{server.schema}".events ORDER BY position')]
    one, _ = await open_postgres(server.url, server.schema, pool_size=1)
    try:
        for zone in ("UTC", "America/Santo_Domingo", "Asia/Kolkata"):
            async with one.db.connection("setting the time zone") as conn:
                await conn.execute(f"SET TIME ZONE '{zone}'")
            read = [r.recorded_at for r in await one.read_all()]
            assert read == stored
            assert all(at.tzinfo is UTC for at in read)
            assert [r.recorded_at for r in await one.read_stream("musician-z1")] == stored[1:2]
    finally:
        await one.close()


async def test_a_recording_time_python_cannot_hold_makes_the_event_undecodable(
        server: Server) -> None:
    """The recording time arrives in its binary form; one beyond `datetime` (infinity) makes
    the row undecodable, named by its position, not turned into some other time."""
    await server.events.append("musician-inf", [registered("inf")], NO_STREAM)
    await server.settle()
    position = await server.admin.fetchval(
        f"UPDATE \"{server.schema}\".events SET recorded_at = 'infinity' RETURNING position")
    with pytest.raises(UndecodableEventError, match=f"position {position} .*recording time"):
        await server.events.read_all()


async def test_pages_larger_than_a_socket_read_arrive_whole(server: Server) -> None:
    """Our connections read the socket 64 KiB at a time (`READ_CHUNK`, for the allocator's
    sake): a page of several hundred kilobytes still arrives whole and in order."""
    events = [registered(f"big{n}") for n in range(1500)]
    await server.events.append_streams([(e.stream_id, [e], NO_STREAM) for e in events])
    await server.settle()
    async with server.events.db.connection("looking at the transport") as conn:
        assert conn._transport.max_size == READ_CHUNK  # type: ignore[attr-defined]
    read = await server.events.read_all(limit=2000)
    assert [r.event for r in read] == events
    assert [r.position for r in read] == sorted(r.position for r in read)


async def _many(server: Server, n: int) -> list[RecordedEvent]:
    """n registrations in one append (one transaction, consecutive positions), read back."""
    events = [registered(f"p{k}") for k in range(n)]
    await server.events.append_streams([(e.stream_id, [e], NO_STREAM) for e in events])
    await server.settle()
    read = await server.events.read_all(limit=n)
    assert [r.event for r in read] == events
    return read


FIRST, PART = READ_ALL_FIRST_PART, READ_ALL_PART
"""The parts of a `read_all` page: its edges are where the tests look."""
ENOUGH = FIRST + 2 * PART + 40


@pytest.mark.parametrize("limit", [1, FIRST - 1, FIRST, FIRST + 1, FIRST + PART - 1,
                                   FIRST + PART, FIRST + PART + 1, FIRST + 2 * PART + 17])
async def test_a_page_read_in_parts_is_the_page_read_at_once(server: Server, limit: int) -> None:
    """`read_all` asks for its page a part at a time: any limit gives the same events as
    one query would, and paging on from the last one returned goes on where it ended."""
    stored = await _many(server, ENOUGH)
    read, position = [], 1
    while batch := await server.events.read_all(position, limit):
        assert len(batch) <= limit
        read += batch
        position = batch[-1].position + 1
    assert read == stored


@pytest.mark.parametrize("bad", [0, 1, FIRST - 1, FIRST, FIRST + 3, FIRST + PART - 1,
                                 FIRST + PART, FIRST + PART + 3, FIRST + 2 * PART])
async def test_a_bad_row_in_any_part_ends_the_page_or_is_named(server: Server,
                                                                bad: int) -> None:
    """An undecodable row anywhere in the page (in the first part or a later one, at a part's
    edge or inside it) ends the page before it; first in a page, it is raised with its
    position; reading on after it goes on, on the same connection."""
    stored = await _many(server, ENOUGH)
    position = stored[bad].position
    await server.admin.execute(
        f'UPDATE "{server.schema}".events SET data = \'{{not json\' WHERE position = $1',
        position)
    one, _ = await open_postgres(server.url, server.schema, pool_size=1)
    try:
        start = 1
        if bad:
            page = await one.read_all(limit=len(stored))
            assert page == stored[:bad]
            start = page[-1].position + 1
        with pytest.raises(UndecodableEventError) as raised:
            await one.read_all(start, len(stored))
        assert raised.value.position == position
        assert await one.read_all(position + 1, len(stored)) == stored[bad + 1:]
    finally:
        await one.close()


async def test_a_read_cancelled_while_a_part_is_in_flight_leaves_the_store_usable(
        server: Server) -> None:
    stored = await _many(server, ENOUGH)
    one, _ = await open_postgres(server.url, server.schema, pool_size=1)
    try:
        for delay in (0.0, 0.0005, 0.001, 0.002, 0.004):
            reading = asyncio.ensure_future(one.read_all(limit=len(stored)))
            await asyncio.sleep(delay)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                assert await reading == stored  # it may have finished first
            assert await one.read_all(limit=len(stored)) == stored
    finally:
        await one.close()


def test_collector_pauses_nest_and_overlap_and_leave_a_disabled_collector_alone() -> None:
    assert gc.isenabled()
    first, second = _CollectorPaused(), _CollectorPaused()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__()  # overlapping, not nested: the other pause still holds
    assert not gc.isenabled()
    second.__exit__()
    assert gc.isenabled()
    gc.disable()
    try:
        with _CollectorPaused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


def test_overlapping_pauses_that_never_all_end_collect_once_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    collections: list[float] = []
    monkeypatch.setattr(_CollectorPaused, "clock", staticmethod(lambda: now[0]))

    def collect(*args: int) -> int:
        collections.append(now[0])
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    readers = [_CollectorPaused()]
    readers[0].__enter__()
    for step in range(1, 41):  # a new reader every 0.1 s, each ending after the next began
        now[0] += 0.1
        reader = _CollectorPaused()
        reader.__enter__()
        readers.pop(0).__exit__()
        readers.append(reader)
        assert not gc.isenabled(), step
    readers[0].__exit__()
    assert gc.isenabled()
    assert len(collections) == 3  # in 4 s: the collector never off longer than about a second
    assert all(b - a >= _CollectorPaused.LONGEST - 1e-9
               for a, b in zip([100.0, *collections], collections, strict=False))


async def test_the_committed_position_is_ahead_of_what_readers_see_behind_an_open_transaction(
        server: Server) -> None:
    store = server.events
    await store.append("m-1", [registered("m-1")], NO_STREAM)
    await server.settle()
    assert await store.committed_position() == await store.head_position() > 0
    blocker = await asyncpg.connect(server.url)
    try:
        await blocker.execute("BEGIN")
        await blocker.fetchval("SELECT pg_current_xact_id()")  # older than the next append
        await store.append("m-2", [registered("m-2")], NO_STREAM)
        readable = await store.head_position()
        committed = await store.committed_position()
        assert committed > readable
        assert [r.event.musician_id for r in await store.read_all(1, 10)  # type: ignore[attr-defined]
                ] == ["m-1"]
        await blocker.execute("COMMIT")
        await server.settle()
        assert await store.head_position() == committed
    finally:
        await blocker.close()


async def test_events_stored_before_the_origin_column_are_ours(server: Server) -> None:
    """Migration 3 adds `origin`: the events stored before read as ours."""
    ours = registered("ours")
    await server.events.append("s", [ours], NO_STREAM)
    s = f'"{server.schema}"'
    await server.admin.execute(f"ALTER TABLE {s}.events DROP COLUMN origin;"
                               f" DELETE FROM {s}.schema_version WHERE version >= 3")
    assert await migrate(server.url, server.schema) >= 3
    store, _ = await open_postgres(server.url, server.schema, pool_size=1)
    try:
        assert [(r.event, r.origin) for r in await store.read_all()] == [(ours, "")]
        foreign = registered("foreign")
        assert (await store.record_foreign(foreign, "rabbitmq")).origin == "rabbitmq"
    finally:
        await store.close()


async def test_a_program_from_before_lease_generations_still_commits_and_is_still_fenced(
        server: Server) -> None:
    """Migration 5 adds lease generations and the fenced commit. A program from before it,
    still running during an upgrade, takes leases without a generation and commits through
    the ten-argument function; a fence still refuses the commit of a holder it took the
    lease from, and a holder taking it back gets a new generation."""
    _, documents = await open_postgres(server.url, server.schema, pool_size=1)
    s = f'"{server.schema}"'
    old_lease = f"""
        INSERT INTO {s}.leases AS l (name, owner, expires)
            VALUES ('relay', 'old', clock_timestamp() + interval '50 milliseconds')
        ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
            WHERE l.owner = excluded.owner OR l.expires <= clock_timestamp()
        RETURNING true"""
    try:
        generation = await documents.try_lease("relay", "new", 0.05)
        assert generation is not None and generation > 0
        fence = Fence("relay", "new", generation)

        async def old_took_it() -> bool:
            return bool(await server.admin.fetchval(old_lease))

        await eventually(old_took_it, interval=0.01)
        assert not await documents.commit(Changes(), checkpoint=("relay", 3), fence=fence)
        assert await server.admin.fetchval(
            f"SELECT {s}.commit_documents(NULL, NULL, 'relay', 5, NULL, '{{}}'::text[],"
            " '{}'::text[], '{}'::text[], '{}'::text[], '{}'::text[])")
        assert await documents.checkpoint("relay") == 5

        taken: list[int] = []

        async def new_took_it_back() -> bool:
            again = await documents.try_lease("relay", "new", 30)
            taken.extend([] if again is None else [again])
            return bool(taken)

        await eventually(new_took_it_back, interval=0.01)
        assert taken[0] > generation
        assert not await documents.commit(Changes(), checkpoint=("relay", 6), fence=fence)
        assert await documents.commit(Changes(), checkpoint=("relay", 6),
                                      fence=Fence("relay", "new", taken[0]))
        assert await documents.checkpoint("relay") == 6
    finally:
        await documents.db.pool.close()
