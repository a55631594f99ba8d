"""The embedded default: SQLite in WAL mode.

Statements of a single writer run on the event loop's own thread, on a connection that
never waits for a lock: SQLite's work for one append (a few B-tree inserts and, at
`synchronous=FULL`, one fsync of the write-ahead log) costs less than handing it to
another thread and back, which takes two thread wake-ups (docs/performance-notes.md).
Concurrent writers share transactions
(group commit, `group_commit.py`): their writes run together on a worker thread, one
fsync for all, while the event loop serves the other tasks. When the file is locked by
another connection (another process), the operation goes to the worker thread, which
tries again every half millisecond, so the event loop never sleeps on a lock.
`SqliteDatabase(inline=False)` sends everything to the worker thread (for a disk whose
fsync is slow enough that the event loop should not wait for it even once).

SQLite allows one writer at a time; a position (the rowid) is taken inside the writer's
transaction, so the global order is commit order and a reader can never skip an event.
`synchronous=FULL` by default: a committed event survives a power cut (NORMAL is faster
and may lose the last commits).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from mussikon.adapters.store.decoding import undecodable, until_undecodable
from mussikon.adapters.store.document_json import decode_document, encode_document
from mussikon.adapters.store.group_commit import GroupCommit, is_busy
from mussikon.adapters.store.key_range import KeyRange
from mussikon.domain.events import DomainEvent
from mussikon.domain.instant import epoch_micros
from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from mussikon.ports.event_store import (
    ANY_VERSION,
    NO_STREAM,
    ConcurrencyError,
    EventStore,
    RecordedEvent,
    StoreUnavailable,
    StreamAppend,
    check_batch,
    check_origin,
    refused_batch,
)
from mussikon.tracing import traceparent
from mussikon.wire import EventCodec

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        position       INTEGER PRIMARY KEY,
        event_id       TEXT    NOT NULL UNIQUE,
        stream_id      TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        event_type     TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        occurred_at    INTEGER NOT NULL,
        correlation_id TEXT,
        causation_id   TEXT,
        recorded_at    INTEGER NOT NULL,
        UNIQUE (stream_id, version)
    );
    CREATE INDEX events_by_type ON events (event_type, occurred_at);
    CREATE TABLE documents (
        collection TEXT NOT NULL,
        key        TEXT NOT NULL,
        body       TEXT NOT NULL,
        PRIMARY KEY (collection, key)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE inbox (
        consumer   TEXT NOT NULL,
        message_id TEXT NOT NULL,
        handled_at INTEGER NOT NULL,
        PRIMARY KEY (consumer, message_id)
    ) WITHOUT ROWID;
    CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)
        WITHOUT ROWID;
    """,
    # 2: where an event another service published was received ("" for our own events).
    """
    ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT ''
    """,
    # 3: a lease's generation, the fencing token of a fenced commit, new (from the counter)
    # each time an owner takes a lease it did not hold. A program from before this version
    # cannot take leases on the file any more (it inserts three columns): every process
    # sharing a file is upgraded together.
    """
    ALTER TABLE leases ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE lease_generations (last INTEGER NOT NULL);
    INSERT INTO lease_generations VALUES (0)
    """,
    # 4: documents that lists and loops read a range of. Pending saga timeouts move to a
    # collection keyed by due time (`sagas.timeouts.due_key`: the ISO time as the document
    # has it, then the id). Each saga gets its entries in the listing of `sagas list`
    # (`sagas.journal.LISTING`: the filter, the latest start first, the id). Notifications
    # are numbered in the order sent (`notifications.BY_NUMBER`), the count kept as a
    # checkpoint. A program from before this version writes none of these: every process
    # sharing a file is upgraded together.
    """
    INSERT OR REPLACE INTO documents (collection, key, body)
        SELECT 'saga-timeouts-by-due', json_extract(body, '$.due_at') || '/' || key, body
        FROM documents WHERE collection = 'saga-timeouts';
    DELETE FROM documents WHERE collection = 'saga-timeouts';
    WITH started AS (
        SELECT key, json_extract(body, '$.kind') AS kind, json_extract(body, '$.status') AS status,
               json_extract(body, '$.started_at') AS at
        FROM documents WHERE collection = 'sagas' AND json_extract(body, '$.started_at') NOT NULL
    ), filters (n) AS (VALUES (0), (1), (2), (3))
    INSERT OR REPLACE INTO documents (collection, key, body)
        SELECT 'saga-listing',
               CASE n WHEN 0 THEN 'all' WHEN 1 THEN 'status=' || status
                      WHEN 2 THEN 'kind=' || kind ELSE 'kind=' || kind || '&status=' || status
               END || '/' || printf('%017d', 100000000000000000 - unixepoch(at) * 1000000
                   - CASE WHEN substr(at, 20, 1) = '.' THEN CAST(substr(at, 21, 6) AS INTEGER)
                     ELSE 0 END) || '/' || key,
               json_object('id', key)
        FROM started, filters;
    INSERT OR REPLACE INTO documents (collection, key, body)
        SELECT 'notifications-by-number', printf('%020d', number),
               json_set(body, '$.number', number)
        FROM (SELECT body, row_number() OVER (ORDER BY json_extract(body, '$.sequence'), key)
                  AS number
              FROM documents WHERE collection = 'notifications');
    UPDATE documents SET body = numbered.body
        FROM (SELECT body FROM documents WHERE collection = 'notifications-by-number')
            AS numbered
        WHERE documents.collection = 'notifications'
        AND documents.key = json_extract(numbered.body, '$.key');
    INSERT OR REPLACE INTO checkpoints (name, position)
        SELECT 'notification-numbers', count(*) FROM documents
        WHERE collection = 'notifications-by-number' HAVING count(*) > 0
    """,
    # 5: inbox entries found by age, for pruning them (`DocumentStore.prune_inbox`).
    """
    CREATE INDEX inbox_by_time ON inbox (handled_at)
    """,
    # 6: the trace context an event was appended in (a W3C traceparent; NULL with tracing
    # off), which the relay publishes it in (`mussikon.tracing`).
    """
    ALTER TABLE events ADD COLUMN traceparent TEXT
    """,
)
"""Schema versions, applied in order; `PRAGMA user_version` records how many ran."""

_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, event_type, data, occurred_at,"
    " correlation_id, causation_id, recorded_at, traceparent) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_IF_AT = (
    "INSERT INTO events (event_id, stream_id, version, event_type, data, occurred_at,"
    " correlation_id, causation_id, recorded_at, traceparent) SELECT ?,?,?,?,?,?,?,?,?,?"
    " WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?) = ?"
)
"""One event, written only if its stream is at the expected version: one statement, atomic."""
_RECORD_FOREIGN = (
    "INSERT INTO events (event_id, stream_id, version, event_type, data, occurred_at,"
    " correlation_id, causation_id, recorded_at, origin, traceparent) SELECT ?, ?,"
    " coalesce(max(version), 0) + 1, ?,?,?,?,?,?,?,? FROM events WHERE stream_id = ?"
    " ON CONFLICT (event_id) DO NOTHING RETURNING position, version"
)
"""A foreign event at the end of its stream, unless its id is stored: one statement, atomic;
its position and version if it was recorded now (no row if it was stored already)."""
_STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
_COLUMNS = ("position, stream_id, version, event_type, data, correlation_id, causation_id,"
            " recorded_at, origin, traceparent")
_READ_STREAM = (f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version >= ?"
                " ORDER BY version")
_FIND_EVENT = f"SELECT {_COLUMNS} FROM events WHERE event_id = ?"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(value: datetime) -> int:
    """`epoch_micros` in one C-level division: microseconds since the Unix epoch."""
    return (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


_perf_counter = time.perf_counter
_text = msgspec.json.Encoder().encode
"""`_text(uuid)[1:-1].decode()` is `str(uuid)` (the JSON string's inside), made in C where
`UUID.__str__` formats in Python."""


def _now_micros() -> int:
    """The current time in microseconds since the Unix epoch (`epoch_micros(utc_now())`)."""
    return time.time_ns() // 1000


_NO_SHARED_MEMORY_FILE = ("SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_CANTINIT",
                          "SQLITE_CANTOPEN")
"""What reading a WAL database raises when its `-shm` file can be neither created nor used
(a read-only directory; a read-only file system: CANTOPEN)."""


class SqliteDatabase:
    """One SQLite file: a non-waiting connection used on the event loop, and a waiting one
    on a worker thread for when the file is locked (or for everything, if not `inline`)."""

    def __init__(self, path: str, synchronous: str = "FULL", *, inline: bool = True,
                 read_only: bool = False) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.read_only = read_only
        """Open the file for reading only: never create it, migrate it or write to it (a
        write raises); it may be on read-only media."""
        self.inline = inline and path != ":memory:"  # a second connection would be another db
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mussikon-sqlite")
        self._conn: sqlite3.Connection | None = None
        """The worker thread's connection: `_call` retries on it for up to `BUSY_TIMEOUT_MS`
        while another connection holds the lock."""
        self._fast: sqlite3.Connection | None = None
        """The event loop's connection: never waits for a lock (`busy_timeout=0`)."""
        self._yielded = 0.0
        """When `run` last let the event loop go round (`time.perf_counter`)."""
        self._group = GroupCommit(lambda: self._fast, self._call, self._executor)

    BUSY_TIMEOUT_MS = 10_000

    async def open(self) -> SqliteDatabase:
        """Connect, switch to WAL and apply pending migrations (on the worker thread); if
        `read_only`, only connect (the file must exist)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)
        return self

    async def schema_version(self) -> int:
        """How many of the MIGRATIONS the file has had (0: none, it holds no store)."""
        return int(await self.run(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0]))

    def _open(self) -> None:
        if self._conn is None:
            self._conn = self._connect(0, migrations=not self.read_only)
        if self.inline and self._fast is None:
            self._fast = self._connect(0, migrations=False)

    def _connect(self, busy_timeout_ms: int, *, migrations: bool) -> sqlite3.Connection:
        try:
            if self.read_only:
                conn = self._connect_read_only()
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={self.BUSY_TIMEOUT_MS}")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if migrations:
                migrate(conn)
            conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from None
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that cannot write. Reading a WAL database needs its `-shm` file,
        which SQLite creates beside it when missing; where it cannot (a read-only directory),
        the file is opened as immutable: nothing else can be writing to it there."""
        uri = f"{Path(self.path).absolute().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA user_version").fetchone()  # reads the file: finds the WAL
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname not in _NO_SHARED_MEMORY_FILE:
                raise
            conn.close()
            conn = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
        return conn

    YIELD_EVERY = 0.001
    """Seconds of operations run back to back on the event loop before `run` lets it go round."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)`: on the event loop's thread, or on the worker thread if the file
        is locked (then `fn` runs again there, so it must be atomic: one statement, or one
        transaction that it rolls back when it raises, as every function here is).

        Yields to the event loop first if it has not for `YIELD_EVERY` (a millisecond), so a
        task that runs many operations in a row does not starve the others; not before every
        operation, as a round of the event loop costs a good part of a commit at
        `synchronous=NORMAL` (docs/performance-notes.md).
        """
        if _perf_counter() - self._yielded >= self.YIELD_EVERY:
            await asyncio.sleep(0)
            self._yielded = _perf_counter()
        fast = self._fast
        if fast is None:
            if not self.inline or self._conn is not None:
                return await self._in_thread(fn)
            await self.open()
            fast = self._fast
            assert fast is not None
        try:
            return fn(fast)
        except Exception as exc:
            if not is_busy(exc):
                raise
        return await self._in_thread(fn)  # locked: wait for the lock off the event loop

    async def write(self, body: Callable[[sqlite3.Connection], T], *,
                    one_statement: bool = False) -> T:
        """Run `body` in a write transaction that this begins and commits (`body` must not),
        shared with concurrent writers' (group commit, see `group_commit`); its result
        once committed. If `body` raises, nothing it wrote remains and the error is raised
        here. `one_statement`: `body` writes with a single statement."""
        if self._fast is None and self.inline and self._conn is None:
            await self.open()
        return await self._group.write(body, one_statement=one_statement)

    @property
    def commits(self) -> int:
        """Write transactions committed through `write` (writes ÷ commits: the batching)."""
        return self._group.commits

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    LOCK_POLL_INTERVAL = 0.0005
    """Seconds between tries while another connection holds the lock. SQLite's own busy
    handler sleeps 1, 2, 5, 10, 15… ms between tries: two processes writing one file would
    spend most of their time asleep."""

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the worker thread's connection, tried again while the file is locked by
        another connection, for up to `BUSY_TIMEOUT_MS`."""
        if self._conn is None:
            self._open()
        assert self._conn is not None
        deadline = 0.0
        while True:
            try:
                return fn(self._conn)
            except Exception as exc:
                if not is_busy(exc):
                    raise
                now = _perf_counter()
                if not deadline:
                    deadline = now + self.BUSY_TIMEOUT_MS / 1000
                elif now >= deadline:
                    raise StoreUnavailable(
                        f"SQLite database {self.path!r} stayed locked by another connection "
                        f"for {self.BUSY_TIMEOUT_MS / 1000:g} s") from exc
            time.sleep(self.LOCK_POLL_INTERVAL)

    async def close(self) -> None:
        """Finish the writes handed in, close the connections and stop the thread."""
        await self._group.wait_idle()
        if self._conn is not None or self._fast is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        for conn in (self._fast, self._conn):
            if conn is not None:
                conn.close()
        self._fast = self._conn = None


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the schema versions not applied yet; return the schema version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] < number:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


class SqliteEventStore(EventStore):
    """The event store on SQLite."""

    def __init__(self, db: SqliteDatabase, codec: EventCodec | None = None) -> None:
        self.db = db
        self.codec = codec or EventCodec()

    async def append(self, stream_id: str, events: Sequence[DomainEvent],
                     expected_version: int) -> int:
        if not events:
            return await self.stream_version(stream_id)
        encode = self.codec.encode
        now = _now_micros()
        context = traceparent()
        if len(events) == 1 and expected_version != ANY_VERSION:
            e = events[0]
            row = (_text(e.id)[1:-1].decode(), stream_id, expected_version + 1, e.event_type,
                   encode(e).decode(), _micros(e.occurred_at),
                   None if e.correlation_id is None else str(e.correlation_id),
                   None if e.causation_id is None else str(e.causation_id), now, context)
            return await self.db.write(
                lambda c: self._append_one(c, stream_id, row, expected_version),
                one_statement=True)
        # Versions follow from the expected version (an append at any other version fails);
        # only ANY_VERSION must read the stream's version first, inside the transaction.
        first = 1 if expected_version == ANY_VERSION else expected_version + 1
        text = _text
        rows = [
            (text(e.id)[1:-1].decode(), stream_id, version, e.event_type, encode(e).decode(),
             _micros(e.occurred_at), None if e.correlation_id is None else str(e.correlation_id),
             None if e.causation_id is None else str(e.causation_id), now, context)
            for version, e in enumerate(events, start=first)
        ]
        try:
            return await self.db.write(
                lambda c: self._append(c, stream_id, rows, expected_version))
        except (sqlite3.IntegrityError, ConcurrencyError):
            # Undone: an idempotent retry of events already stored, or a conflict.
            return await self.db.run(
                lambda c: self._retry_or_conflict(c, stream_id, rows, expected_version))

    async def append_streams(self, batch: Sequence[StreamAppend]) -> list[int]:
        check_batch(batch)
        encode = self.codec.encode
        now = _now_micros()
        context = traceparent()
        text = _text
        rows = [
            (text(e.id)[1:-1].decode(), stream_id, version, e.event_type, encode(e).decode(),
             _micros(e.occurred_at), None if e.correlation_id is None else str(e.correlation_id),
             None if e.causation_id is None else str(e.causation_id), now, context)
            for stream_id, events, expected in batch
            for version, e in enumerate(events, start=1 if expected == ANY_VERSION
                                        else expected + 1)
        ]
        try:
            return await self.db.write(lambda c: self._append_streams(c, batch, rows))
        except (sqlite3.IntegrityError, ConcurrencyError):
            # Undone: find out whether it was an idempotent retry, or which stream conflicts.
            return await self.db.run(lambda c: self._refused(c, batch, rows))

    @staticmethod
    def _append_streams(conn: sqlite3.Connection, batch: Sequence[StreamAppend],
                        rows: list[tuple[Any, ...]]) -> list[int]:
        """Every stream's rows, in the transaction `SqliteDatabase.write` runs it in (which
        undoes them if this raises); a stream new to the store needs no read (version 1 is
        UNIQUE in it), the others are checked against their expected version."""
        versions: list[int] = []
        start = 0
        for stream_id, events, expected in batch:
            count = len(events)
            if expected == NO_STREAM and count:
                versions.append(count)
            else:
                actual = conn.execute(_STREAM_VERSION, (stream_id,)).fetchone()[0]
                if not count:
                    versions.append(actual)
                elif expected == ANY_VERSION:
                    rows[start:start + count] = [
                        (r[0], r[1], actual + n, *r[3:])
                        for n, r in enumerate(rows[start:start + count], start=1)]
                    versions.append(actual + count)
                elif expected != actual:
                    raise ConcurrencyError(stream_id, expected, actual)
                else:
                    versions.append(expected + count)
            start += count
        conn.executemany(_INSERT, rows)
        return versions

    @staticmethod
    def _refused(conn: sqlite3.Connection, batch: Sequence[StreamAppend],
                 rows: list[tuple[Any, ...]]) -> list[int]:
        """After a refused `_append_streams`: the versions if every event was stored already
        (an idempotent retry), else the error naming what conflicts."""
        actual_versions = {s: conn.execute(_STREAM_VERSION, (s,)).fetchone()[0]
                           for s, _, _ in batch}
        ids = [r[0] for r in rows]
        stored: dict[str, tuple[str, int]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            stored.update((event_id, (stream_id, version)) for event_id, stream_id, version in
                          conn.execute("SELECT event_id, stream_id, version FROM events WHERE"
                                       f" event_id IN ({','.join('?' * len(chunk))})", chunk))
        result = refused_batch(batch, actual_versions, stored, last_try=True)
        assert result is not None  # with last_try it returns or raises
        return result

    @staticmethod
    def _append_one(conn: sqlite3.Connection, stream_id: str, row: tuple[Any, ...],
                    expected: int) -> int:
        """One event: one statement, which fails whole or succeeds whole."""
        try:
            if expected == NO_STREAM:  # version 1 is UNIQUE in the stream: that is the check
                conn.execute(_INSERT, row)
                return 1
            if conn.execute(_INSERT_IF_AT, (*row, stream_id, expected)).rowcount == 1:
                return expected + 1
        except sqlite3.IntegrityError:
            pass
        return SqliteEventStore._retry_or_conflict(conn, stream_id, [row], expected)

    @staticmethod
    def _append(conn: sqlite3.Connection, stream_id: str, rows: list[tuple[Any, ...]],
                expected: int) -> int:
        """The rows, in the transaction `SqliteDatabase.write` runs it in (which undoes them
        if this raises)."""
        if expected != NO_STREAM:
            actual = conn.execute(_STREAM_VERSION, (stream_id,)).fetchone()[0]
            if expected == ANY_VERSION:
                rows[:] = [(r[0], r[1], actual + n, *r[3:]) for n, r in enumerate(rows, start=1)]
            elif expected != actual:
                raise ConcurrencyError(stream_id, expected, actual)
        conn.executemany(_INSERT, rows)
        return int(rows[-1][2])

    @staticmethod
    def _retry_or_conflict(conn: sqlite3.Connection, stream_id: str, rows: list[tuple[Any, ...]],
                           expected: int) -> int:
        ids = [r[0] for r in rows]
        found = conn.execute(
            f"SELECT event_id FROM events WHERE stream_id = ? AND event_id IN"
            f" ({','.join('?' * len(ids))}) ORDER BY version", (stream_id, *ids),
        ).fetchall()
        actual = conn.execute(_STREAM_VERSION, (stream_id,)).fetchone()[0]
        if [f[0] for f in found] == ids:
            return int(actual)  # the same events again: an idempotent retry
        raise ConcurrencyError(stream_id, expected, actual)

    def _records(self, rows: list[tuple[Any, ...]], out: list[RecordedEvent] | None = None
                 ) -> list[RecordedEvent]:
        """Rows (`_COLUMNS`) into recorded events, appended to `out` (a new list by default),
        which is returned; a bad row raises UndecodableEventError."""
        decode = self.codec.decode
        recorded_at: dict[int, datetime] = {}  # the rows of one append share their time
        if out is None:
            out = []
        append = out.append
        make = RecordedEvent
        for position, stream_id, version, event_type, data, correlation, causation, at, origin, \
                context in rows:
            try:
                event = decode(data, event_type,
                               correlation_id=UUID(correlation) if correlation else None,
                               causation_id=UUID(causation) if causation else None)
                when = recorded_at.get(at)
                if when is None:
                    when = recorded_at[at] = _from_micros(at)
            except Exception as exc:
                raise undecodable(position, stream_id, version, exc) from None
            append(make(position, stream_id, version, event, when, origin, context))
        return out

    async def record_foreign(self, event: DomainEvent, origin: str) -> RecordedEvent:
        check_origin(origin)
        stream_id = event.stream_id
        row = (str(event.id), stream_id, event.event_type, self.codec.encode(event).decode(),
               _micros(event.occurred_at),
               None if event.correlation_id is None else str(event.correlation_id),
               None if event.causation_id is None else str(event.causation_id),
               _now_micros(), origin, traceparent(), stream_id)
        now, context = row[7], row[9]
        inserted = await self.db.write(lambda c: c.execute(_RECORD_FOREIGN, row).fetchall(),
                                       one_statement=True)
        if inserted:  # the event as given is the event as stored: no need to read it back
            [(position, version)] = inserted
            return RecordedEvent(position, stream_id, version, event, _from_micros(now),
                                 origin, context)
        stored = await self.find_event(event.id)
        assert stored is not None  # recorded before
        return stored

    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        rows = await self.db.run(lambda c: c.execute(_FIND_EVENT, (str(event_id),))
                                 .fetchall())
        return self._records(rows)[0] if rows else None

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        rows = await self.db.run(lambda c: c.execute(_READ_STREAM, (stream_id, from_version))
                                 .fetchall())
        return self._records(rows)

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        rows = await self.db.run(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position >= ? ORDER BY position LIMIT ?",
            (from_position, limit)).fetchall())
        return until_undecodable(lambda out: self._records(rows, out))

    async def read_last(self, limit: int, before: int | None = None) -> list[RecordedEvent]:
        below = 2**63 - 1 if before is None else before
        rows = await self.db.run(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position < ? ORDER BY position DESC LIMIT ?",
            (below, limit)).fetchall())
        return until_undecodable(lambda out: self._records(rows, out))[::-1]

    async def count_after(self, position: int, limit: int = 1_000_000) -> int:
        return int(await self.db.run(lambda c: c.execute(
            "SELECT count(*) FROM (SELECT 1 FROM events WHERE position > ? LIMIT ?)",
            (position, limit)).fetchone()[0]))

    async def read_by_type(self, event_type: str, since: datetime | None = None,
                           limit: int = 10_000, from_position: int = 1) -> list[RecordedEvent]:
        floor = epoch_micros(since) if since else -(2**62)
        rows = await self.db.run(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM events WHERE event_type = ? AND occurred_at >= ?"
            " AND position >= ? ORDER BY position LIMIT ?",
            (event_type, floor, from_position, limit)).fetchall())
        return self._records(rows)

    async def stream_version(self, stream_id: str) -> int:
        return int(await self.db.run(lambda c: c.execute(_STREAM_VERSION, (stream_id,))
                                     .fetchone()[0]))

    async def head_position(self) -> int:
        return int(await self.db.run(
            lambda c: c.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]))

    async def close(self) -> None:
        await self.db.close()


class _Refused(Exception):
    """A document commit refused (its checkpoint is behind): undone, reported as False."""


def _fence_holds(conn: sqlite3.Connection, fence: Fence) -> bool:
    """True if the lease is still the fence's owner's, at the fence's generation."""
    return conn.execute(
        "SELECT 1 FROM leases WHERE name = ? AND owner = ? AND generation = ?",
        (fence.lease, fence.owner, fence.generation)).fetchone() is not None


def _move_checkpoint(conn: sqlite3.Connection, name: str, position: int,
                     expected: int | None) -> bool:
    """Move checkpoint `name` forward to `position` (from exactly `expected`, if given);
    False if it is not moved."""
    if expected is None:
        return conn.execute(
            "INSERT INTO checkpoints VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
            " SET position = excluded.position WHERE position < excluded.position",
            (name, position)).rowcount > 0
    if position <= expected:
        return False
    if conn.execute("UPDATE checkpoints SET position = ? WHERE name = ? AND position = ?",
                    (position, name, expected)).rowcount > 0:
        return True
    # A checkpoint never set stands at 0.
    return expected == 0 and conn.execute(
        "INSERT OR IGNORE INTO checkpoints VALUES (?, ?)", (name, position)).rowcount > 0


class SqliteDocumentStore(DocumentStore):
    """Read models, checkpoints and inboxes in the same SQLite file as the events.

    `now_micros` stamps inbox entries and ages them for `prune_inbox` (microseconds since
    the Unix epoch; the machine's time unless given)."""

    def __init__(self, db: SqliteDatabase, *,
                 now_micros: Callable[[], int] = _now_micros) -> None:
        self.db = db
        self._now_micros = now_micros

    async def get(self, collection: str, key: str) -> Document | None:
        row = await self.db.run(lambda c: c.execute(
            "SELECT body FROM documents WHERE collection = ? AND key = ?",
            (collection, key)).fetchone())
        return None if row is None else decode_document(row[0])

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        return await self._scan(collection, KeyRange.of(prefix), None)

    async def _scan(self, collection: str, keys: KeyRange,
                    limit: int | None) -> list[tuple[str, Document]]:
        """The documents in a range of the primary key, in key order."""
        sql, values = self.scan_query(collection, keys, limit)
        rows = await self.db.run(lambda c: c.execute(sql, values).fetchall())
        return [(k, decode_document(b)) for k, b in rows]

    @staticmethod
    def scan_query(collection: str, keys: KeyRange,
                   limit: int | None) -> tuple[str, list[str]]:
        """The statement that reads a range of keys, and its values (tests EXPLAIN it)."""
        condition, values = keys.sql(itertools.repeat("?"))
        sql = f"SELECT key, body FROM documents WHERE collection = ? AND {condition} ORDER BY key"
        if limit is not None:
            sql += f" LIMIT {max(int(limit), 0)}"
        return sql, [collection, *values]

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        if expected is not None and checkpoint is None:
            raise ValueError("an expected checkpoint position needs a checkpoint to move")
        puts = [(c, k, encode_document(d).decode()) for (c, k), d in changes.puts.items()]
        deletes = list(changes.deletes)
        now = self._now_micros()

        def write(conn: sqlite3.Connection) -> bool:
            # In the write transaction: a lease taken over commits after this, or before it
            # (and this sees the new owner).
            if fence is not None and not _fence_holds(conn, fence):
                return False
            if inbox is not None and conn.execute(
                "INSERT OR IGNORE INTO inbox VALUES (?,?,?)", (*inbox, now)
            ).rowcount == 0:
                return False  # handled before: nothing written
            if checkpoint is not None and not _move_checkpoint(conn, *checkpoint, expected):
                raise _Refused  # the checkpoint is elsewhere: undo the inbox entry too
            if deletes:
                conn.executemany("DELETE FROM documents WHERE collection = ? AND key = ?",
                                 deletes)
            if puts:
                conn.executemany("INSERT OR REPLACE INTO documents VALUES (?,?,?)", puts)
            return True

        # An inbox entry alone (an idempotent handler that wrote nothing else) is one
        # statement: no savepoint needed around it.
        alone = (inbox is not None and checkpoint is None and fence is None and not puts
                 and not deletes)
        try:
            return await self.db.write(write, one_statement=alone)
        except _Refused:
            return False

    async def checkpoint(self, name: str) -> int:
        row = await self.db.run(lambda c: c.execute(
            "SELECT position FROM checkpoints WHERE name = ?", (name,)).fetchone())
        return 0 if row is None else int(row[0])

    async def checkpoints(self) -> dict[str, int]:
        rows = await self.db.run(lambda c: c.execute("SELECT name, position FROM checkpoints")
                                 .fetchall())
        return {n: int(p) for n, p in rows}

    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        def reset(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM documents WHERE collection = ?",
                             [(c,) for c in collections])
            conn.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, 0)", (name,))

        await self.db.write(reset)

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        def take(conn: sqlite3.Connection) -> int | None:
            now = time.time()
            # fetchall: a statement with RETURNING is finished only once read to the end
            renewed = conn.execute(
                "UPDATE leases SET expires = ? WHERE name = ? AND owner = ? RETURNING generation",
                (now + seconds, name, owner)).fetchall()
            if renewed:
                return int(renewed[0][0])
            holder = conn.execute("SELECT expires FROM leases WHERE name = ?",
                                  (name,)).fetchone()
            if holder is not None and holder[0] > now:
                return None
            generation = int(conn.execute(
                "UPDATE lease_generations SET last = last + 1 RETURNING last").fetchall()[0][0])
            conn.execute("INSERT OR REPLACE INTO leases (name, owner, expires, generation)"
                         " VALUES (?, ?, ?, ?)", (name, owner, now + seconds, generation))
            return generation

        return await self.db.write(take)

    async def release_lease(self, name: str, owner: str) -> None:
        await self.db.write(lambda c: c.execute(
            "DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner)),
            one_statement=True)

    async def has_seen(self, consumer: str, message_id: str) -> bool:
        row = await self.db.run(lambda c: c.execute(
            "SELECT 1 FROM inbox WHERE consumer = ? AND message_id = ?",
            (consumer, message_id)).fetchone())
        return row is not None

    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        cutoff = self._now_micros() - older_than // _MICROSECOND
        # by the index on handled_at: the oldest `limit` entries, then their rows
        return await self.db.write(lambda c: c.execute(
            "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id"
            " FROM inbox WHERE handled_at < ? ORDER BY handled_at LIMIT ?)",
            (cutoff, limit)).rowcount, one_statement=True)

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        return await self._scan(collection, KeyRange.of(prefix, after=after, before=before),
                                limit)
