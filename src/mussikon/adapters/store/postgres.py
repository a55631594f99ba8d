"""The production store: PostgreSQL through asyncpg, one connection pool shared by the event
store and the document store, tables in one schema (default `mussikon`) so tenants and tests
isolate.

Many writers, one global order, no table lock
---------------------------------------------
A global position handed out by a sequence is taken when a writer inserts, but becomes
visible when it commits, and commits happen in any order. A reader that has returned
position 11 and only then sees position 10 commit would skip 10 forever; locking the table
for the whole of every append (what pyeventsourcing does) prevents it by letting one writer
in at a time.

We order events by the id of the transaction that wrote them and read only below the
oldest transaction still running. PostgreSQL hands out transaction ids in increasing order
and `pg_snapshot_xmin(pg_current_snapshot())` is the oldest one still in progress, so
every transaction with a smaller id has finished for good: its rows are all visible (or
were rolled back) and no new row can ever appear below that bound. A later read's bound
is never lower, so rows that become readable later always sort after the ones already
returned. A writer that took its id first and commits last holds the bound back until it
commits; it is never passed over.

To keep `read_all(from_position)` a single number that a checkpoint can store, the position
*is* that order: `position = transaction id × 2^20 + index of the event in its append`
(one append per transaction, at most 2^20 events in it). Positions therefore increase in
the global order and no reader can skip one, but they are not consecutive: between two
neighbours there are numbers no event will ever take, so `head_position() - checkpoint`
is not a count of events behind (`count_after` counts them). `head_position` is the largest
position below the bound, consistent with what `read_all` and `read_last` return. The
transaction id is the 64-bit `xid8` (it never wraps around); a position fits a bigint until
2^43 transactions.

The other known answer, numbering events after they commit, needs a sequencer that writes
every event a second time and leaves fresh events without a position; this one costs a
writer nothing.

Writers never wait for each other, except on the same stream, where the unique index on
(stream_id, version) lets exactly one of them take each version. The price: a transaction
left open anywhere in the cluster (with a transaction id) holds the global order back,
never breaks it; `idle_in_transaction_session_timeout` bounds that. Streams are not
affected: `read_stream` sees every committed event at once.

An append is one INSERT (one round trip, one implicit transaction, prepared once per
connection by asyncpg's statement cache) that checks the expected version itself; a batch
is inserted from arrays, unnested. A connection lost mid-way leaves all of it or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from mussikon.adapters.store.decoding import batch_before, undecodable, until_undecodable
from mussikon.adapters.store.document_json import decode_document, encode_document
from mussikon.adapters.store.key_range import KeyRange
from mussikon.adapters.store.postgres_pool import Connection, ConnectionPool
from mussikon.config import mask_url
from mussikon.domain.events import DomainEvent
from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from mussikon.ports.event_store import (
    ANY_VERSION,
    ConcurrencyError,
    EventStore,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
    StreamAppend,
    UndecodableEventError,
    check_batch,
    check_origin,
    refused_batch,
)
from mussikon.tracing import traceparent
from mussikon.wire import EventCodec, may_have_ticks

DEFAULT_SCHEMA = "mussikon"


POSITION_BITS = 20
"""Bits of a position below the transaction id: the index of the event in its append."""

MAX_EVENTS_PER_APPEND = 2**POSITION_BITS

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a new connection before StoreUnavailable."""

STATEMENT_TIMEOUT = 30.0
"""Seconds a statement may run before the server cancels it (`statement_timeout`)."""

LOCK_TIMEOUT = 10.0
"""Seconds a statement may wait for a lock before the server cancels it (`lock_timeout`)."""

NO_ANSWER_MARGIN = 5.0
"""Seconds past the statement timeout after which the client gives up on a server that has
not answered at all (a network that drops everything) and closes the connection: the
server's own cancellation, which leaves the connection usable, comes first whenever the
server is there to send it."""

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""What a timestamptz counts its microseconds from."""

_READABLE_BOUND = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {POSITION_BITS})"
"""The first position no reader may see yet: that of the oldest transaction still running."""

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.events (
        position       bigint      PRIMARY KEY,
        event_id       uuid        NOT NULL,
        stream_id      text        COLLATE "C" NOT NULL,
        version        integer     NOT NULL,
        event_type     text        COLLATE "C" NOT NULL,
        data           text        NOT NULL,
        occurred_at    timestamptz NOT NULL,
        correlation_id uuid,
        causation_id   uuid,
        recorded_at    timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT events_event_id UNIQUE (event_id),
        CONSTRAINT events_stream_version UNIQUE (stream_id, version)
    );
    CREATE INDEX events_by_type ON {s}.events (event_type, position);
    COMMENT ON COLUMN {s}.events.position IS
        'transaction id * 2^20 + index in the append: the global order (see store/postgres.py)';
    COMMENT ON COLUMN {s}.events.data IS 'the event JSON exactly as the wire codec wrote it';

    CREATE TABLE {s}.documents (
        collection text COLLATE "C" NOT NULL,
        key        text COLLATE "C" NOT NULL,
        body       text NOT NULL,
        PRIMARY KEY (collection, key)
    );
    CREATE TABLE {s}.checkpoints (
        name     text PRIMARY KEY,
        position bigint NOT NULL
    );
    CREATE TABLE {s}.inbox (
        consumer   text NOT NULL,
        message_id text NOT NULL,
        handled_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, message_id)
    );
    CREATE TABLE {s}.leases (
        name    text PRIMARY KEY,
        owner   text NOT NULL,
        expires timestamptz NOT NULL
    );

    -- One round trip for a projection's update: inbox entry, checkpoint move, deletes and
    -- puts commit together, or (returning false) nothing does.
    CREATE FUNCTION {s}.commit_documents(
        p_consumer text, p_message_id text, p_checkpoint text, p_position bigint,
        p_delete_collections text[], p_delete_keys text[],
        p_put_collections text[], p_put_keys text[], p_put_bodies text[]
    ) RETURNS boolean LANGUAGE plpgsql AS $body$
    BEGIN
        IF p_consumer IS NOT NULL THEN
            INSERT INTO {s}.inbox (consumer, message_id) VALUES (p_consumer, p_message_id)
                ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
        END IF;
        IF p_checkpoint IS NOT NULL THEN
            INSERT INTO {s}.checkpoints AS c (name, position) VALUES (p_checkpoint, p_position)
                ON CONFLICT (name) DO UPDATE SET position = excluded.position
                WHERE c.position < excluded.position;
            IF NOT FOUND THEN
                -- the inbox entry was written by this very call: take it back
                DELETE FROM {s}.inbox WHERE consumer = p_consumer AND message_id = p_message_id;
                RETURN false;
            END IF;
        END IF;
        DELETE FROM {s}.documents d
            USING unnest(p_delete_collections, p_delete_keys) AS x(collection, key)
            WHERE d.collection = x.collection AND d.key = x.key;
        INSERT INTO {s}.documents (collection, key, body)
            SELECT * FROM unnest(p_put_collections, p_put_keys, p_put_bodies)
            ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body;
        RETURN true;
    END
    $body$;
    """,
    # 2: whether an event's JSON may hold a time with a seventh fraction digit, written with
    # it (see `may_have_ticks`): reads then let msgspec parse the other events' times.
    # Events stored before are found by the same test. The default is true for what a
    # program from before this version still appends (during a rolling upgrade): it names
    # no has_ticks, and its events are then read by the exact path.
    r"""
    ALTER TABLE {s}.events ADD COLUMN has_ticks boolean NOT NULL DEFAULT false;
    UPDATE {s}.events SET has_ticks = true WHERE data ~ '\.[0-9]{{7}}';
    ALTER TABLE {s}.events ALTER COLUMN has_ticks SET DEFAULT true;
    COMMENT ON COLUMN {s}.events.has_ticks IS
        'the data may hold a time with a seventh fraction digit (100 ns), which only the exact'
        ' readers keep';
    """,
    # 3: where an event another service published was received ("" for our own events).
    """
    ALTER TABLE {s}.events ADD COLUMN origin text NOT NULL DEFAULT '';
    COMMENT ON COLUMN {s}.events.origin IS
        'where an event another service published was received (rabbitmq); empty for ours';
    """,
    # 4: a projection's commit as a compare-and-set of its checkpoint (`p_expected`: it
    # applies only if the checkpoint stands there). A new overload: a program from before
    # this version still calls the nine-argument function during a rolling upgrade.
    """
    CREATE OR REPLACE FUNCTION {s}.commit_documents(
        p_consumer text, p_message_id text, p_checkpoint text, p_position bigint,
        p_expected bigint,
        p_delete_collections text[], p_delete_keys text[],
        p_put_collections text[], p_put_keys text[], p_put_bodies text[]
    ) RETURNS boolean LANGUAGE plpgsql AS $body$
    BEGIN
        IF p_consumer IS NOT NULL THEN
            INSERT INTO {s}.inbox (consumer, message_id) VALUES (p_consumer, p_message_id)
                ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
        END IF;
        IF p_checkpoint IS NOT NULL THEN
            IF p_expected IS NULL THEN
                INSERT INTO {s}.checkpoints AS c (name, position)
                    VALUES (p_checkpoint, p_position)
                    ON CONFLICT (name) DO UPDATE SET position = excluded.position
                    WHERE c.position < excluded.position;
            ELSE
                -- the row lock makes a concurrent move wait, then see the new position
                UPDATE {s}.checkpoints SET position = p_position
                    WHERE name = p_checkpoint AND position = p_expected
                    AND p_position > p_expected;
                IF NOT FOUND AND p_expected = 0 AND p_position > 0 THEN
                    -- a checkpoint never set stands at 0
                    INSERT INTO {s}.checkpoints (name, position)
                        VALUES (p_checkpoint, p_position) ON CONFLICT DO NOTHING;
                END IF;
            END IF;
            IF NOT FOUND THEN
                -- the inbox entry was written by this very call: take it back
                DELETE FROM {s}.inbox WHERE consumer = p_consumer AND message_id = p_message_id;
                RETURN false;
            END IF;
        END IF;
        DELETE FROM {s}.documents d
            USING unnest(p_delete_collections, p_delete_keys) AS x(collection, key)
            WHERE d.collection = x.collection AND d.key = x.key;
        INSERT INTO {s}.documents (collection, key, body)
            SELECT * FROM unnest(p_put_collections, p_put_keys, p_put_bodies)
            ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body;
        RETURN true;
    END
    $body$;
    """,
    # 5: leases get a generation, the fencing token: new (from the sequence) each time an
    # owner takes a lease it did not hold, kept by its renewals. A commit can be fenced
    # (`p_fence_*`): it applies only if the lease is still that owner's at that generation.
    # A new overload again, for the programs still calling the older ones; a lease such a
    # program takes keeps the generation it had, and its owner differs: fences still refuse.
    """
    ALTER TABLE {s}.leases ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;
    CREATE SEQUENCE IF NOT EXISTS {s}.lease_generations;
    COMMENT ON COLUMN {s}.leases.generation IS
        'new each time an owner takes the lease it did not hold: the fencing token of commits';
    CREATE OR REPLACE FUNCTION {s}.commit_documents(
        p_consumer text, p_message_id text, p_checkpoint text, p_position bigint,
        p_expected bigint, p_fence_lease text, p_fence_owner text, p_fence_generation bigint,
        p_delete_collections text[], p_delete_keys text[],
        p_put_collections text[], p_put_keys text[], p_put_bodies text[]
    ) RETURNS boolean LANGUAGE plpgsql AS $body$
    BEGIN
        IF p_fence_lease IS NOT NULL THEN
            -- the share lock makes a takeover wait for this commit, and this wait for a
            -- takeover under way, then see its new owner
            PERFORM 1 FROM {s}.leases
                WHERE name = p_fence_lease AND owner = p_fence_owner
                AND generation = p_fence_generation
                FOR SHARE;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
        END IF;
        IF p_consumer IS NOT NULL THEN
            INSERT INTO {s}.inbox (consumer, message_id) VALUES (p_consumer, p_message_id)
                ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN false;
            END IF;
        END IF;
        IF p_checkpoint IS NOT NULL THEN
            IF p_expected IS NULL THEN
                INSERT INTO {s}.checkpoints AS c (name, position)
                    VALUES (p_checkpoint, p_position)
                    ON CONFLICT (name) DO UPDATE SET position = excluded.position
                    WHERE c.position < excluded.position;
            ELSE
                -- the row lock makes a concurrent move wait, then see the new position
                UPDATE {s}.checkpoints SET position = p_position
                    WHERE name = p_checkpoint AND position = p_expected
                    AND p_position > p_expected;
                IF NOT FOUND AND p_expected = 0 AND p_position > 0 THEN
                    -- a checkpoint never set stands at 0
                    INSERT INTO {s}.checkpoints (name, position)
                        VALUES (p_checkpoint, p_position) ON CONFLICT DO NOTHING;
                END IF;
            END IF;
            IF NOT FOUND THEN
                -- the inbox entry was written by this very call: take it back
                DELETE FROM {s}.inbox WHERE consumer = p_consumer AND message_id = p_message_id;
                RETURN false;
            END IF;
        END IF;
        DELETE FROM {s}.documents d
            USING unnest(p_delete_collections, p_delete_keys) AS x(collection, key)
            WHERE d.collection = x.collection AND d.key = x.key;
        INSERT INTO {s}.documents (collection, key, body)
            SELECT * FROM unnest(p_put_collections, p_put_keys, p_put_bodies)
            ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body;
        RETURN true;
    END
    $body$;
    """,
    # 6: documents that lists and loops read a range of. Pending saga timeouts move to a
    # collection keyed by due time (`sagas.timeouts.due_key`: the ISO time as the document
    # has it, then the id). Each saga gets its entries in the listing of `sagas list`
    # (`sagas.journal.LISTING`: the filter, the latest start first, the id). Notifications
    # are numbered in the order sent (`notifications.BY_NUMBER`), the count kept as a
    # checkpoint. A program from before this version writes none of these: every process
    # sharing the schema is upgraded together.
    """
    INSERT INTO {s}.documents (collection, key, body)
        SELECT 'saga-timeouts-by-due', (body::jsonb ->> 'due_at') || '/' || key, body
        FROM {s}.documents WHERE collection = 'saga-timeouts'
        ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body;
    DELETE FROM {s}.documents WHERE collection = 'saga-timeouts';
    INSERT INTO {s}.documents (collection, key, body)
        SELECT 'saga-listing',
               f.filter || '/' || lpad((100000000000000000 - (extract(epoch FROM
                   (d.body::jsonb ->> 'started_at')::timestamptz) * 1000000)::bigint)::text,
                   17, '0') || '/' || d.key,
               json_build_object('id', d.key)::text
        FROM {s}.documents d, LATERAL (VALUES ('all'),
                ('status=' || (d.body::jsonb ->> 'status')),
                ('kind=' || (d.body::jsonb ->> 'kind')),
                ('kind=' || (d.body::jsonb ->> 'kind') || '&status='
                 || (d.body::jsonb ->> 'status'))) AS f (filter)
        WHERE d.collection = 'sagas' AND d.body::jsonb ->> 'started_at' IS NOT NULL
        ON CONFLICT (collection, key) DO NOTHING;
    INSERT INTO {s}.documents (collection, key, body)
        SELECT 'notifications-by-number', lpad(number::text, 20, '0'),
               jsonb_set(body::jsonb, '{{number}}', to_jsonb(number))::text
        FROM (SELECT body, row_number() OVER (
                  ORDER BY (body::jsonb ->> 'sequence')::bigint, key) AS number
              FROM {s}.documents WHERE collection = 'notifications') AS numbered
        ON CONFLICT (collection, key) DO NOTHING;
    UPDATE {s}.documents d SET body = n.body FROM {s}.documents n
        WHERE d.collection = 'notifications' AND n.collection = 'notifications-by-number'
        AND d.key = n.body::jsonb ->> 'key';
    INSERT INTO {s}.checkpoints (name, position)
        SELECT 'notification-numbers', count(*) FROM {s}.documents
        WHERE collection = 'notifications-by-number' HAVING count(*) > 0
        ON CONFLICT (name) DO UPDATE SET position = excluded.position;
    """,
    # 7: inbox entries found by age, for pruning them (`DocumentStore.prune_inbox`).
    """
    CREATE INDEX IF NOT EXISTS inbox_by_time ON {s}.inbox (handled_at);
    """,
    # 8: the trace context an event was appended in (a W3C traceparent; NULL with tracing
    # off), which the relay publishes it in (`mussikon.tracing`). A program from before this
    # version names no traceparent: its events are stored without one.
    """
    ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS traceparent text;
    COMMENT ON COLUMN {s}.events.traceparent IS
        'the W3C trace context the event was appended in; NULL with tracing off';
    """,
)
"""Schema versions, applied in order; `schema_version` records which ran. `{s}` is the schema."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError is one)
    TimeoutError,  # connecting took too long
    asyncpg.PostgresConnectionError,  # class 08: the connection is gone
    asyncpg.exceptions.AdminShutdownError,  # our backend was terminated, or the server stops
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # class 40: deadlock, serialization failure
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    # asyncpg raises a bare InterfaceError for a connection closed under it, and an
    # InternalClientError for one left mid-protocol by a server that went away; their other
    # subclasses (DataError, …) are our own mistakes, not the server's absence.
    return type(exc) in (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


def _where(url: str) -> str:
    parts = urlsplit(mask_url(url))
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _quoted_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name must match {_SCHEMA_NAME.pattern}, got {schema!r}")
    return f'"{schema}"'


def create_pool(url: str, pool_size: int = 10,
                application_name: str = "mussikon", *, read_only: bool = False,
                statement_timeout: float = STATEMENT_TIMEOUT,
                lock_timeout: float = LOCK_TIMEOUT) -> ConnectionPool:
    """A pool of up to `pool_size` connections to `url`, opened when first needed, named
    `application_name` in pg_stat_activity; `read_only`: their transactions cannot write.

    On every connection a statement is cancelled by the server after `statement_timeout`
    seconds, or after `lock_timeout` seconds waiting for a lock (both more than 0); a
    connection the server does not answer on at all is closed by the pool
    `NO_ANSWER_MARGIN` seconds later, which fails the operation waiting on it."""
    if not (statement_timeout > 0 and lock_timeout > 0):
        raise ValueError("statement and lock timeouts must be more than 0 seconds")
    settings = {"application_name": application_name[:63],
                "statement_timeout": _milliseconds(statement_timeout),
                "lock_timeout": _milliseconds(lock_timeout)}
    if read_only:
        settings["default_transaction_read_only"] = "on"

    async def connect() -> Connection:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, server_settings=settings)
        _read_in_small_chunks(conn)
        return conn

    return ConnectionPool(connect, pool_size, where=_where(url),
                          answer_within=statement_timeout + NO_ANSWER_MARGIN)


def _milliseconds(seconds: float) -> str:
    """A duration as PostgreSQL's settings take it (at least 1 ms: 0 would mean none)."""
    return str(max(1, round(seconds * 1000)))


READ_CHUNK = 64 * 1024
"""Bytes asyncio's socket transport asks the kernel for at a time (its default: 256 KiB)."""


def _read_in_small_chunks(conn: Connection) -> None:
    """Make the connection's socket reads allocate from reused memory.

    asyncio's socket transport receives each read into a new `bytes` of `max_size` (256
    KiB), which glibc, above its mmap threshold (128 KiB), maps afresh and unmaps when it is
    freed: every page the kernel writes the data into is a page fault, a cost paid per event
    read (docs/performance-notes.md). Reads of 64 KiB come from the heap and take no more
    system calls: on a local socket a read rarely finds more than that waiting. A transport
    without `max_size` (another event loop) is left as it is."""
    transport = getattr(conn, "_transport", None)  # asyncpg has no public handle on it
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_CHUNK  # type: ignore[union-attr]


class _CollectorPaused:
    """`with _CollectorPaused():` the cyclic garbage collector does not run (if it ran), for
    at most `LONGEST` seconds at a time.

    Reads pause it while they make a page's events: every object the page adds (event,
    GUID, record) outlives the read and none is in a cycle, so every collection it would
    trigger (one per 700 of them, a full one now and then) would go through the page made
    so far and free nothing (docs/performance-notes.md). Allocations still count while it
    is paused, so it runs once the read is over, if it is due. `read_all` keeps it paused
    across the awaits between the parts of its page (a few milliseconds), where a
    collection would go through the part before. Pauses nest and overlap: the collector
    runs again when the last one ends (an explicit `gc.disable()` made during a pause is
    undone by its end). Readers that overlap without end (several followers of the global
    order under load) would keep it off for good, and cycles made meanwhile elsewhere would
    never be freed: a pause that begins or ends after the collector has been off for
    `LONGEST` seconds runs a full collection first, and the count starts again."""

    __slots__ = ("_paused",)
    LONGEST = 1.0
    active = 0
    off_since = 0.0
    clock: Callable[[], float] = time.monotonic

    def __enter__(self) -> None:
        self._paused = _CollectorPaused.active > 0 or gc.isenabled()
        if self._paused:
            if not _CollectorPaused.active:
                gc.disable()
                _CollectorPaused.off_since = _CollectorPaused.clock()
            else:
                _CollectorPaused._collect_if_long()
            _CollectorPaused.active += 1

    def __exit__(self, *exc_info: object) -> None:
        if self._paused:
            _CollectorPaused.active -= 1
            if not _CollectorPaused.active:
                gc.enable()
            else:
                _CollectorPaused._collect_if_long()

    @staticmethod
    def _collect_if_long() -> None:
        now = _CollectorPaused.clock()
        if now - _CollectorPaused.off_since >= _CollectorPaused.LONGEST:
            gc.collect()
            _CollectorPaused.off_since = now


READ_ALL_FIRST_PART = 250
READ_ALL_PART = 1000
"""`read_all` asks the server for its page in parts: `READ_ALL_FIRST_PART` events first,
then up to `READ_ALL_PART` at a time, each part asked for before the one before is decoded.
A small first part gets decoding going early; the later parts are large because each query
costs this process CPU of its own, mostly the kernel delivering it to the server (the
sizes were chosen by measurement: docs/performance-notes.md)."""


def _recorded_at(raw: bytes) -> datetime:
    """A recording time from its binary form; ValueError for one Python has no datetime for
    (before year 1, after 9999, infinity)."""
    try:
        return _POSTGRES_EPOCH + timedelta(microseconds=int.from_bytes(raw, "big", signed=True))
    except OverflowError:
        raise ValueError("its recording time is out of the range of Python's datetime") \
            from None


async def _settled(task: asyncio.Future[Any]) -> None:
    """Wait for a query no longer wanted, whatever its outcome (the connection is then free
    again; a failure shows on its next use)."""
    with contextlib.suppress(Exception):
        await task


_CANCELLED: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.QueryCanceledError,  # statement_timeout (or an operator's cancel)
    asyncpg.exceptions.LockNotAvailableError,  # lock_timeout (or NOWAIT)
)
"""What a statement the server gave up on raises: the connection stays usable."""


def _unavailable(pool: ConnectionPool, doing: str, exc: BaseException) -> StoreUnavailable:
    # asyncpg's messages name host and port at most, never the password
    return StoreUnavailable(f"PostgreSQL at {pool.where} is unavailable ({doing}):"
                            f" {type(exc).__name__}: {exc}")


def _given_up(pool: ConnectionPool, doing: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"PostgreSQL at {pool.where} gave up on a statement ({doing}):"
                            f" {exc}")


class _Using:
    """`async with`: a pooled connection; errors that mean "the server is gone", and a
    statement the server cancelled (a timeout), come out as StoreUnavailable saying what was
    being done. A class, as it is on every operation's path.
    """

    __slots__ = ("_conn", "_doing", "_pool")

    def __init__(self, pool: ConnectionPool, doing: str) -> None:
        self._pool, self._doing = pool, doing
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        try:
            self._conn = await self._pool.take()
        except Exception as exc:
            if _is_unavailable(exc):
                raise _unavailable(self._pool, self._doing, exc) from None
            if isinstance(exc, asyncpg.PostgresError):  # refused: no such database, bad login
                raise StoreError(f"PostgreSQL at {self._pool.where} refused the connection"
                                 f" ({self._doing}): {type(exc).__name__}: {exc}") from None
            raise
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # A connection the server dropped may not know it yet: never hand it out again.
            self._pool.give_back(conn, reusable=exc is None or (
                isinstance(exc, Exception) and not _is_unavailable(exc)))
        if exc is not None and _is_unavailable(exc):
            raise _unavailable(self._pool, self._doing, exc) from None
        if isinstance(exc, _CANCELLED):
            raise _given_up(self._pool, self._doing, exc) from None


async def migrate(pool_or_url: ConnectionPool | str, schema: str = DEFAULT_SCHEMA) -> int:
    """Create the schema or bring it up to date; return its version.

    Idempotent, and safe when several processes start at once: an advisory lock keyed on
    the schema name lets one of them migrate while the others wait, then find nothing to do.
    """
    quoted = _quoted_schema(schema)
    if isinstance(pool_or_url, str):
        pool = create_pool(pool_or_url, 1, "mussikon-migrate")
        try:
            return await migrate(pool, schema)
        finally:
            await pool.close()
    async with _Using(pool_or_url, f"migrating schema {schema!r}") as conn, conn.transaction():
        # Several statements, each within the statement timeout: together they may take longer.
        pool_or_url.unwatched(conn)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                           f"mussikon-migrate:{schema}")
        await conn.execute(
            f"CREATE SCHEMA IF NOT EXISTS {quoted};"
            f" CREATE TABLE IF NOT EXISTS {quoted}.schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        current = await conn.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {quoted}.schema_version")
        if current > len(MIGRATIONS):
            raise StoreError(f"schema {schema!r} is at version {current}, newer than this"
                             f" program knows ({len(MIGRATIONS)}): upgrade MussikOn")
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute(script.format(s=quoted))
            await conn.execute(f"INSERT INTO {quoted}.schema_version (version) VALUES ($1)",
                               number)
    return len(MIGRATIONS)


class PostgresDatabase:
    """The pool and the schema both stores use."""

    def __init__(self, pool: ConnectionPool, schema: str = DEFAULT_SCHEMA) -> None:
        self.pool = pool
        self.schema = schema
        self.table_prefix = _quoted_schema(schema)

    def connection(self, doing: str) -> _Using:
        """`async with db.connection("reading x") as conn`: a pooled connection; a lost
        server comes out as StoreUnavailable saying what was being done."""
        return _Using(self.pool, doing)

    async def schema_version(self) -> int:
        """How many of the MIGRATIONS the schema has had (0: there is no such schema)."""
        async with self.connection(f"reading the version of schema {self.schema!r}") as conn:
            table = f"{self.table_prefix}.schema_version"
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                return int(await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}"))
            return 0

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self.pool.close()


def _event_columns(events: Sequence[DomainEvent], codec: EventCodec
                   ) -> tuple[list[list[Any]], bool]:
    """The batch insert's columns (a list each, after the stream id), and whether any body
    may have ticks (the `has_ticks` of every row)."""
    ids, types, bodies, times, correlations, causations = [], [], [], [], [], []
    for event in events:
        ids.append(event.id)
        types.append(event.event_type)
        bodies.append(codec.encode(event).decode())
        times.append(event.occurred_at)
        correlations.append(event.correlation_id)
        causations.append(event.causation_id)
    return ([ids, types, bodies, times, correlations, causations],
            any(map(may_have_ticks, bodies)))


class PostgresEventStore(EventStore):
    """The event store on PostgreSQL (see the module's docstring for the global order)."""

    def __init__(self, db: PostgresDatabase, codec: EventCodec | None = None) -> None:
        self.db = db
        self.codec = codec or EventCodec()
        t = f"{db.table_prefix}.events"
        # The recording time as its 8 bytes (see `_decode_rows`)
        columns = ("position, stream_id, version, event_type, data, event_id, correlation_id,"
                   " causation_id, timestamptz_send(recorded_at), has_ticks, origin, traceparent")
        insert = (f"INSERT INTO {t} (position, event_id, stream_id, version, event_type, data,"
                  " occurred_at, correlation_id, causation_id, has_ticks, traceparent)")
        this_transaction = f"(pg_current_xact_id()::text::bigint << {POSITION_BITS})"
        batch = ("unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::uuid[],"
                 " $7::uuid[]) WITH ORDINALITY"
                 " AS e(id, type, data, occurred_at, correlation_id, causation_id, n)")
        # At a known version the new one is expected + 1 (+ 2 …): the unique index refuses it
        # if the stream is further on, and EXISTS if it is not that far yet.
        at_expected = (f"WHERE $8::integer = 0 OR EXISTS"
                       f" (SELECT FROM {t} WHERE stream_id = $1 AND version = $8::integer)")
        self._append_one_sql = (
            f"{insert} SELECT {this_transaction}, $2, $1, $8::integer + 1, $3, $4, $5, $6, $7,"
            f" $9::boolean, $10::text {at_expected}")
        # A foreign event at the end of its stream; its id already stored, nothing.
        self._record_foreign_sql = (
            f"INSERT INTO {t} (position, event_id, stream_id, version, event_type, data,"
            " occurred_at, correlation_id, causation_id, has_ticks, origin, traceparent)"
            f" SELECT {this_transaction}, $2, $1, (SELECT coalesce(max(version), 0) FROM {t}"
            " WHERE stream_id = $1) + 1, $3, $4, $5, $6, $7, $8, $9, $10"
            " ON CONFLICT (event_id) DO NOTHING")
        self._find_event_sql = f"SELECT {columns} FROM {t} WHERE event_id = $1"
        self._append_batch_sql = (
            f"{insert} SELECT {this_transaction} + e.n - 1, e.id, $1, $8::integer + e.n, e.type,"
            f" e.data, e.occurred_at, e.correlation_id, e.causation_id, $9::boolean, $10::text"
            f" FROM {batch}"
            f" {at_expected}")
        self._append_at_end_sql = (
            f"{insert} SELECT {this_transaction} + e.n - 1, e.id, $1, head.version + e.n, e.type,"
            f" e.data, e.occurred_at, e.correlation_id, e.causation_id, $8::boolean, $9::text"
            f" FROM (SELECT coalesce(max(version), 0) AS version FROM {t} WHERE stream_id = $1)"
            f" AS head, {batch} RETURNING version")
        # Several streams in one statement: a stream's expected version is checked like a
        # single append's (EXISTS for a known version, the unique index for the next ones),
        # but all at once, so either every row goes in or none does.
        streams = (
            "unnest($1::text[], $2::integer[], $3::integer[], $4::uuid[], $5::text[],"
            " $6::text[], $7::timestamptz[], $8::uuid[], $9::uuid[]) WITH ORDINALITY"
            " AS e(stream_id, expected, k, id, type, data, occurred_at, correlation_id,"
            " causation_id, n)")
        base = (f"CASE WHEN e.expected >= 0 THEN e.expected ELSE (SELECT coalesce(max(version), 0)"
                f" FROM {t} WHERE stream_id = e.stream_id) END")
        self._append_streams_sql = (
            f"WITH e AS MATERIALIZED (SELECT * FROM {streams})"
            f" {insert} SELECT {this_transaction} + e.n - 1, e.id, e.stream_id, {base} + e.k,"
            " e.type, e.data, e.occurred_at, e.correlation_id, e.causation_id, $10::boolean,"
            " $11::text FROM e"
            " WHERE NOT EXISTS (SELECT FROM e AS f WHERE f.k = 1 AND f.expected > 0"
            f" AND NOT EXISTS (SELECT FROM {t} WHERE stream_id = f.stream_id"
            " AND version = f.expected))")
        self._append_streams_at_end_sql = (
            f"{self._append_streams_sql} RETURNING stream_id, version")
        self._stream_versions_sql = (
            f"SELECT s, (SELECT coalesce(max(version), 0) FROM {t} WHERE stream_id = s)"
            " FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n) ORDER BY n")
        self._stored_where_sql = (f"SELECT event_id::text, stream_id, version FROM {t}"
                                  " WHERE event_id = ANY($1::uuid[])")
        self._stored_ids_sql = f"""
            SELECT (SELECT coalesce(max(version), 0) FROM {t} WHERE stream_id = $1),
                   (SELECT coalesce(array_agg(event_id ORDER BY version), '{{}}')
                      FROM {t} WHERE stream_id = $1 AND event_id = ANY($2::uuid[]))
        """
        self._read_stream_sql = (f"SELECT {columns} FROM {t} WHERE stream_id = $1"
                                 " AND version >= $2 ORDER BY version")
        self._read_all_sql = (f"SELECT {columns} FROM {t} WHERE position >= $1"
                              f" AND position < {_READABLE_BOUND} ORDER BY position LIMIT $2")
        # `least` passes over a NULL: no `before` means below the bound alone
        self._read_last_sql = (f"SELECT {columns} FROM {t}"
                               f" WHERE position < least($1::bigint, {_READABLE_BOUND})"
                               " ORDER BY position DESC LIMIT $2")
        self._count_after_sql = (f"SELECT count(*) FROM (SELECT 1 FROM {t} WHERE position > $1"
                                 f" AND position < {_READABLE_BOUND} LIMIT $2) AS behind")
        self._read_by_type_sql = (
            f"SELECT {columns} FROM {t} WHERE event_type = $1"
            f" AND ($2::timestamptz IS NULL OR occurred_at >= $2) AND position >= $4"
            f" AND position < {_READABLE_BOUND} ORDER BY position LIMIT $3")
        self._version_sql = f"SELECT coalesce(max(version), 0) FROM {t} WHERE stream_id = $1"
        self._head_sql = (f"SELECT coalesce(max(position), 0) FROM {t}"
                          f" WHERE position < {_READABLE_BOUND}")
        self._committed_sql = f"SELECT coalesce(max(position), 0) FROM {t}"

    async def append(self, stream_id: str, events: Sequence[DomainEvent],
                     expected_version: int) -> int:
        if not events:
            return await self.stream_version(stream_id)
        if len(events) > MAX_EVENTS_PER_APPEND:
            raise ValueError(f"at most {MAX_EVENTS_PER_APPEND} events per append")
        doing = (f"appending to stream {stream_id!r}; the append is all or nothing, and"
                 " retrying it with the same events is safe")
        async with self.db.connection(doing) as conn:
            if expected_version == ANY_VERSION:
                return await self._append_at_end(conn, stream_id, events)
            try:
                if len(events) == 1:
                    e = events[0]
                    body = self.codec.encode(e).decode()
                    status = await conn.execute(
                        self._append_one_sql, stream_id, e.id, e.event_type, body,
                        e.occurred_at, e.correlation_id, e.causation_id, expected_version,
                        may_have_ticks(body), traceparent())
                else:
                    columns, ticks = _event_columns(events, self.codec)
                    status = await conn.execute(self._append_batch_sql, stream_id, *columns,
                                                expected_version, ticks, traceparent())
            except asyncpg.UniqueViolationError:
                status = "INSERT 0 0"
            if status != "INSERT 0 0":
                return expected_version + len(events)
            return await self._retry_or_conflict(conn, stream_id, events, expected_version)

    async def append_streams(self, batch: Sequence[StreamAppend]) -> list[int]:
        check_batch(batch)
        encode = self.codec.encode
        columns: list[list[Any]] = [[], [], [], [], [], [], [], [], []]
        stream_ids, expected_versions, indexes, ids, types, bodies, times, correlations, \
            causations = columns
        at_end = False
        for stream_id, events, expected in batch:
            at_end = at_end or expected == ANY_VERSION
            for k, e in enumerate(events, start=1):
                stream_ids.append(stream_id)
                expected_versions.append(expected)
                indexes.append(k)
                ids.append(e.id)
                types.append(e.event_type)
                bodies.append(encode(e).decode())
                times.append(e.occurred_at)
                correlations.append(e.correlation_id)
                causations.append(e.causation_id)
        total = len(ids)
        ticks = any(map(may_have_ticks, bodies))
        context = traceparent()
        if total > MAX_EVENTS_PER_APPEND:
            raise ValueError(f"at most {MAX_EVENTS_PER_APPEND} events per append")
        doing = (f"appending to {len(batch)} streams; the append is all or nothing, and"
                 " retrying it with the same events is safe")
        async with self.db.connection(doing) as conn:
            if not total:
                return await self._stream_versions(conn, batch)
            for attempt in range(3):
                try:
                    if at_end:
                        rows = await conn.fetch(self._append_streams_at_end_sql, *columns,
                                                ticks, context)
                        if len(rows) == total:
                            heads: dict[str, int] = {}
                            for stream_id, version in rows:
                                heads[stream_id] = max(version, heads.get(stream_id, 0))
                            return [heads.get(s) or await self._version_of(conn, s)
                                    for s, _, _ in batch]
                    elif await conn.execute(self._append_streams_sql, *columns, ticks,
                                            context) \
                            == f"INSERT 0 {total}":
                        return [expected + len(events) if events else
                                await self._version_of(conn, stream_id)
                                for stream_id, events, expected in batch]
                except asyncpg.UniqueViolationError:
                    pass
                # Refused: a retry, a conflict, or (ANY_VERSION) another writer got further
                actual = dict(zip([s for s, _, _ in batch],
                                  await self._stream_versions(conn, batch), strict=True))
                stored = {event_id: (stream_id, version) for event_id, stream_id, version in
                          await conn.fetch(self._stored_where_sql, ids)}
                result = refused_batch(batch, actual, stored, last_try=attempt == 2)
                if result is not None:
                    return result
            raise AssertionError("unreachable: the last try returns or raises")

    async def _stream_versions(self, conn: Connection, batch: Sequence[StreamAppend]
                               ) -> list[int]:
        rows = await conn.fetch(self._stream_versions_sql, [s for s, _, _ in batch])
        return [int(version) for _, version in rows]

    async def _version_of(self, conn: Connection, stream_id: str) -> int:
        return int(await conn.fetchval(self._version_sql, stream_id))

    async def _append_at_end(self, conn: Connection, stream_id: str,
                             events: Sequence[DomainEvent]) -> int:
        columns, ticks = _event_columns(events, self.codec)
        context = traceparent()
        # Losing the race for the next version means another writer got further: each try
        # starts from a newer head, so this ends.
        while True:
            try:
                rows = await conn.fetch(self._append_at_end_sql, stream_id, *columns, ticks,
                                        context)
                return max(int(r[0]) for r in rows)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "events_stream_version":
                    return await self._retry_or_conflict(conn, stream_id, events, ANY_VERSION)

    async def _retry_or_conflict(self, conn: Connection, stream_id: str,
                                 events: Sequence[DomainEvent], expected: int) -> int:
        """After a refused append: the same events already stored here in this order are an
        idempotent retry (return the version); anything else is a conflict."""
        ids = [e.id for e in events]
        row = await conn.fetchrow(self._stored_ids_sql, stream_id, ids)
        assert row is not None  # a SELECT without FROM returns one row
        actual, found = row
        if list(found) == ids:
            return int(actual)
        raise ConcurrencyError(stream_id, expected, int(actual))

    def _records(self, rows: list[asyncpg.Record],
                 out: list[RecordedEvent] | None = None) -> list[RecordedEvent]:
        """Rows into recorded events, appended to `out` (a new list by default), which is
        returned; a bad row raises UndecodableEventError. The cyclic garbage collector is
        paused meanwhile (see `_CollectorPaused`)."""
        if out is None:
            out = []
        if not rows:
            return out
        with _CollectorPaused():
            return self._decode_rows(rows, out)

    def _decode_rows(self, rows: list[asyncpg.Record],
                     out: list[RecordedEvent]) -> list[RecordedEvent]:
        """`_records`, with the collector as it is.

        The recording time comes as the server's binary form (`timestamptz_send`: 8 bytes,
        microseconds since 2000 in UTC, whatever the session's time zone) and is made a
        datetime once per append, whose events share it: asyncpg's own decoding of a
        timestamptz builds a `timedelta` for each row, and the text form would cost the
        server a formatting and the client a string to compare, per row.

        An event written without a time of seven fraction digits (`has_ticks` false, nearly
        all) is read by msgspec's own time parsing, its id taken from its column
        (`stored_readers`); the others go through `decode`, which keeps the seventh digit.
        GUIDs come as asyncpg's `UUID`, a subclass of `uuid.UUID` whose integer is made only
        when asked for."""
        fast = self.codec.stored_readers.get
        decode = self.codec.decode
        append = out.append
        make = RecordedEvent
        last_raw: bytes | None = None
        at = datetime.min  # replaced at the first row
        last_type: str | None = None
        read = None
        for position, stream_id, version, event_type, data, event_id, correlation, causation, \
                raw, ticks, origin, context in rows:
            try:
                if raw != last_raw:  # the events of one append share their recording time
                    at = _recorded_at(raw)
                    last_raw = raw
                if event_type != last_type:  # runs of one type are common: skip hashing it
                    read, last_type = fast(event_type), event_type
                if read is None or ticks or \
                        (event := read(data, event_id, correlation, causation)) is None:
                    event = decode(data, event_type, correlation_id=correlation,
                                   causation_id=causation)
            except Exception as exc:
                raise undecodable(position, stream_id, version, exc) from None
            append(make(position, stream_id, version, event, at, origin, context))
        return out

    async def record_foreign(self, event: DomainEvent, origin: str) -> RecordedEvent:
        check_origin(origin)
        body = self.codec.encode(event).decode()
        doing = f"recording event {event.id} from {origin}; retrying it is safe"
        async with self.db.connection(doing) as conn:
            # Losing the race for the stream's next version to another writer: try again at
            # the new end. Losing it to this very event (recorded meanwhile): nothing to do.
            while True:
                try:
                    await conn.execute(
                        self._record_foreign_sql, event.stream_id, event.id, event.event_type,
                        body, event.occurred_at, event.correlation_id, event.causation_id,
                        may_have_ticks(body), origin, traceparent())
                    break
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name != "events_stream_version":
                        raise
            rows = await conn.fetch(self._find_event_sql, event.id)
        return self._records(rows)[0]

    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        async with self.db.connection(f"finding event {event_id}") as conn:
            rows = await conn.fetch(self._find_event_sql, event_id)
        return self._records(rows)[0] if rows else None

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        async with self.db.connection(f"reading stream {stream_id!r}") as conn:
            rows = await conn.fetch(self._read_stream_sql, stream_id, from_version)
        return self._records(rows)

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        """The page in parts (`READ_ALL_FIRST_PART` events, then `READ_ALL_PART` at a time),
        each asked for before the previous one is decoded: the server finds and sends a part
        while this process decodes the one before (two cores busy instead of taking turns).
        A part starts after the last position of the one before, as a following `read_all`
        would: positions below a bound are final (see the module's docstring), so the parts
        together are what one query at the last part's bound returns. A bad row ends the
        page as it would end one query's page (or raises, first in it); the part in flight
        is awaited first."""
        sql = self._read_all_sql
        out: list[RecordedEvent] = []
        try:
            with _CollectorPaused():  # across the parts (see there)
                return await self._read_all_parts(sql, from_position, limit, out)
        except UndecodableEventError as error:
            return batch_before(error, out)

    async def _read_all_parts(self, sql: str, from_position: int, limit: int,
                              out: list[RecordedEvent]) -> list[RecordedEvent]:
        async with self.db.connection("reading the global order") as conn:
            part = min(limit, READ_ALL_FIRST_PART)
            rows = await conn.fetch(sql, from_position, part)
            left = limit - len(rows)
            while rows:
                following = None
                if len(rows) == part and left > 0:  # more may follow: ask for it now
                    part = min(left, READ_ALL_PART)
                    following = asyncio.ensure_future(conn.fetch(sql, rows[-1][0] + 1, part))
                    try:
                        await asyncio.sleep(0)  # the query goes out
                    except BaseException:
                        following.cancel()
                        raise
                try:
                    self._records(rows, out)
                except BaseException:  # a bad row among them, or a cancellation
                    if following is not None:
                        await _settled(following)
                    raise
                if following is None:
                    break
                rows = await following
                left -= len(rows)
        return out

    async def read_last(self, limit: int, before: int | None = None) -> list[RecordedEvent]:
        async with self.db.connection("reading the newest events of the global order") as conn:
            rows = await conn.fetch(self._read_last_sql, before, limit)
        return until_undecodable(lambda out: self._records(rows, out))[::-1]

    async def count_after(self, position: int, limit: int = 1_000_000) -> int:
        async with self.db.connection("counting events of the global order") as conn:
            return int(await conn.fetchval(self._count_after_sql, position, limit))

    async def read_by_type(self, event_type: str, since: datetime | None = None,
                           limit: int = 10_000, from_position: int = 1) -> list[RecordedEvent]:
        async with self.db.connection(f"reading events of type {event_type!r}") as conn:
            rows = await conn.fetch(self._read_by_type_sql, event_type, since, limit,
                                    from_position)
        return self._records(rows)

    async def stream_version(self, stream_id: str) -> int:
        async with self.db.connection(f"reading the version of stream {stream_id!r}") as conn:
            return int(await conn.fetchval(self._version_sql, stream_id))

    async def head_position(self) -> int:
        async with self.db.connection("reading the head of the global order") as conn:
            return int(await conn.fetchval(self._head_sql))

    async def committed_position(self) -> int:
        async with self.db.connection("reading the newest committed position") as conn:
            return int(await conn.fetchval(self._committed_sql))

    async def close(self) -> None:
        await self.db.close()


class PostgresDocumentStore(DocumentStore):
    """Read models, checkpoints, inboxes and leases in the event store's schema.

    Lease times come from the database's clock, so processes on hosts whose clocks differ
    still agree on when a lease expires."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        s = db.table_prefix
        self._get_sql = f"SELECT body FROM {s}.documents WHERE collection = $1 AND key = $2"
        self._commit_sql = (f"SELECT {s}.commit_documents($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                            " $10, $11, $12, $13)")
        self._checkpoint_sql = f"SELECT position FROM {s}.checkpoints WHERE name = $1"
        self._checkpoints_sql = f"SELECT name, position FROM {s}.checkpoints"
        self._drop_collections_sql = f"DELETE FROM {s}.documents WHERE collection = ANY($1)"
        self._zero_checkpoint_sql = (
            f"INSERT INTO {s}.checkpoints (name, position) VALUES ($1, 0)"
            " ON CONFLICT (name) DO UPDATE SET position = 0")
        # The proposed row takes a number from the sequence, which a renewal leaves unused.
        self._lease_sql = f"""
            INSERT INTO {s}.leases AS l (name, owner, expires, generation)
                VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3),
                        nextval('{s}.lease_generations'))
            ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires,
                generation = CASE WHEN l.owner = excluded.owner THEN l.generation
                                  ELSE excluded.generation END
                WHERE l.owner = excluded.owner OR l.expires <= clock_timestamp()
            RETURNING generation
        """
        self._release_sql = f"DELETE FROM {s}.leases WHERE name = $1 AND owner = $2"
        self._seen_sql = f"SELECT 1 FROM {s}.inbox WHERE consumer = $1 AND message_id = $2"
        # by the index on handled_at: the oldest `limit` entries, then their rows
        self._prune_inbox_sql = (
            f"DELETE FROM {s}.inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id"
            f" FROM {s}.inbox WHERE handled_at < now() - $1::interval ORDER BY handled_at"
            " LIMIT $2)")

    async def get(self, collection: str, key: str) -> Document | None:
        async with self.db.connection(f"reading document {collection}/{key}") as conn:
            body = await conn.fetchval(self._get_sql, collection, key)
        return None if body is None else decode_document(body)

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        return await self._scan(collection, KeyRange.of(prefix), None)

    async def _scan(self, collection: str, keys: KeyRange,
                    limit: int | None) -> list[tuple[str, Document]]:
        """The documents in a range of the primary key, in key order."""
        sql, values = self.scan_query(collection, keys, limit)
        async with self.db.connection(f"scanning collection {collection!r}") as conn:
            rows = await conn.fetch(sql, *values)
        return [(key, decode_document(body)) for key, body in rows]

    def scan_query(self, collection: str, keys: KeyRange,
                   limit: int | None) -> tuple[str, list[str]]:
        """The statement that reads a range of keys, and its values (tests EXPLAIN it)."""
        condition, values = keys.sql(f"${n}" for n in itertools.count(2))
        sql = (f"SELECT key, body FROM {self.db.table_prefix}.documents WHERE collection = $1"
               f" AND {condition} ORDER BY key")
        if limit is not None:
            sql += f" LIMIT {max(int(limit), 0)}"
        return sql, [collection, *values]

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        if expected is not None and checkpoint is None:
            raise ValueError("an expected checkpoint position needs a checkpoint to move")
        deletes = list(changes.deletes)
        puts = [(c, k, encode_document(doc).decode()) for (c, k), doc in changes.puts.items()]
        consumer, message_id = inbox if inbox is not None else (None, None)
        name, position = checkpoint if checkpoint is not None else (None, None)
        lease, owner, generation = ((fence.lease, fence.owner, fence.generation)
                                    if fence is not None else (None, None, None))
        async with self.db.connection("committing documents") as conn:
            applied = await conn.fetchval(
                self._commit_sql, consumer, message_id, name, position, expected,
                lease, owner, generation,
                [c for c, _ in deletes], [k for _, k in deletes],
                [c for c, _, _ in puts], [k for _, k, _ in puts], [b for _, _, b in puts])
        return bool(applied)

    async def checkpoint(self, name: str) -> int:
        async with self.db.connection(f"reading checkpoint {name!r}") as conn:
            position = await conn.fetchval(self._checkpoint_sql, name)
        return 0 if position is None else int(position)

    async def checkpoints(self) -> dict[str, int]:
        async with self.db.connection("reading checkpoints") as conn:
            rows = await conn.fetch(self._checkpoints_sql)
        return {name: int(position) for name, position in rows}

    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        async with self.db.connection(f"resetting checkpoint {name!r}") as conn, \
                conn.transaction():
            await conn.execute(self._drop_collections_sql, collections)
            await conn.execute(self._zero_checkpoint_sql, name)

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        async with self.db.connection(f"taking lease {name!r}") as conn:
            generation = await conn.fetchval(self._lease_sql, name, owner, float(seconds))
        return None if generation is None else int(generation)

    async def release_lease(self, name: str, owner: str) -> None:
        async with self.db.connection(f"releasing lease {name!r}") as conn:
            await conn.execute(self._release_sql, name, owner)

    async def has_seen(self, consumer: str, message_id: str) -> bool:
        async with self.db.connection(f"reading inbox of {consumer!r}") as conn:
            return await conn.fetchval(self._seen_sql, consumer, message_id) is not None

    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        async with self.db.connection("pruning the inbox") as conn:
            status = await conn.execute(self._prune_inbox_sql, older_than, limit)
        return int(status.rsplit(" ", 1)[1])  # "DELETE <count>"

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        return await self._scan(collection, KeyRange.of(prefix, after=after, before=before),
                                limit)


async def open_postgres(url: str, schema: str = DEFAULT_SCHEMA, pool_size: int = 10,
                        codec: EventCodec | None = None, *, read_only: bool = False,
                        statement_timeout: float = STATEMENT_TIMEOUT,
                        lock_timeout: float = LOCK_TIMEOUT
                        ) -> tuple[PostgresEventStore, PostgresDocumentStore]:
    """Connect, migrate the schema, and return both stores over one pool. `read_only`: only
    connect, on connections whose transactions cannot write (the schema is neither created
    nor migrated: `PostgresDatabase.schema_version` tells whether it is there).

    Connections are named `mussikon:<schema>` (pg_stat_activity's application_name); their
    statements have the timeouts given (see `create_pool`), the migration's included: a
    statement cancelled by one raises StoreUnavailable, and the operation may be retried.
    Closing the event store closes the pool.
    """
    _quoted_schema(schema)
    pool = create_pool(url, pool_size, f"mussikon:{schema}", read_only=read_only,
                       statement_timeout=statement_timeout, lock_timeout=lock_timeout)
    try:
        if not read_only:
            await migrate(pool, schema)
    except BaseException:
        await pool.close()
        raise
    db = PostgresDatabase(pool, schema)
    return PostgresEventStore(db, codec), PostgresDocumentStore(db)
