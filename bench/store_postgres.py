"""`mussikon bench store --backend postgres`: our PostgreSQL event store beside its peers.

Contenders, each in its own schema (created for the workload, dropped after it) of the
same database:

- ours: `PostgresEventStore`, through the async port, with its own connection pool;
- `raw-asyncpg`: plain asyncpg inserts of the rows our store writes (encoded before the
  clock starts) into a table of the same columns and indexes whose position is a plain
  sequence: the ceiling, with no encoding, no concurrency check and no global order;
- `pyeventsourcing`: the `eventsourcing` package on PostgreSQL (psycopg), the same
  workloads its way.

As for SQLite, each workload runs in rounds; in each round every contender runs its share
right after the others, in an order that turns round by round, and a contender's figure
is its events over its time summed over the rounds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench import store_workloads as w
from bench.peer_eventsourcing import EsPeer, available, postgres_env
from bench.report import Report, Result
from mussikon.adapters.store.postgres import PostgresEventStore, open_postgres
from mussikon.domain.events import DomainEvent
from mussikon.wire import EventCodec, may_have_ticks

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

OURS = "ours"
RAW = "raw-asyncpg"
ES = "pyeventsourcing"

APPEND_ONE_WRITER = "append-one-writer"
APPEND_16_WRITERS = "append-16-writers"
APPEND_BATCH_100 = "append-batch-100"
READ_STREAM_10000 = "read-stream-10000"
READ_ALL = "read-all"
LAG_P50 = "subscriber-lag-p50"
LAG_P99 = "subscriber-lag-p99"

WRITERS = 16
LONG_STREAM = 10_000
GLOBAL_STREAMS = 100
"""The global order read by `read-all`: 100 streams of 100 events, 10,000 events."""

TARGETS: dict[str, dict[str, float]] = {
    APPEND_ONE_WRITER: {RAW: 0.85, ES: 2.5},
    APPEND_16_WRITERS: {RAW: 0.8, ES: 6.0},
    APPEND_BATCH_100: {RAW: 0.8, ES: 2.0},
    READ_STREAM_10000: {ES: 3.0},
    READ_ALL: {ES: 3.0},
}
"""Issue 3's targets: the least ours/peer ratio wanted."""

Row = tuple[Any, ...]
Progress = Callable[[str], None]

_RAW_TABLE = """
    CREATE TABLE {s}.events (
        position       bigserial   PRIMARY KEY,
        event_id       uuid        NOT NULL,
        stream_id      text        COLLATE "C" NOT NULL,
        version        integer     NOT NULL,
        event_type     text        COLLATE "C" NOT NULL,
        data           text        NOT NULL,
        occurred_at    timestamptz NOT NULL,
        correlation_id uuid,
        causation_id   uuid,
        recorded_at    timestamptz NOT NULL DEFAULT now(),
        has_ticks      boolean     NOT NULL DEFAULT false,
        UNIQUE (event_id),
        UNIQUE (stream_id, version)
    );
    CREATE INDEX ON {s}.events (event_type, position);
"""
"""Our events table (store/postgres.py), but for the position: a sequence."""

_RAW_INSERT = ("INSERT INTO {s}.events (event_id, stream_id, version, event_type, data,"
               " occurred_at, correlation_id, causation_id, has_ticks)"
               " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)")


@dataclass(frozen=True, slots=True)
class Options:
    """What to run: sizes, rounds, where, and whether to run the peers."""

    events: int = 1000
    rounds: int = 10
    url: str = DEFAULT_URL
    peers: bool = True


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each workload does in all (split over the rounds), from `events`."""

    events: int = 1000

    @property
    def one_writer(self) -> int:
        return self.events

    @property
    def concurrent(self) -> int:
        """Events appended by the 16 writers: 4 × `events`, so that each writer's share of a
        round (25 appends by default) outweighs starting and finishing together."""
        return 4 * self.events

    @property
    def batches(self) -> int:
        """Appends of 100 events: 5 × `events` events in all, at least 10 appends."""
        return max(10, self.events * 5 // w.BATCH)

    @property
    def loads(self) -> int:
        """Loads of the 10,000-event stream, and reads of the 10,000-event global order."""
        return max(3, self.events // 100)

    @property
    def lag_events(self) -> int:
        return 2 * self.events


class RawAsyncpg:
    """The ceiling: our rows, our columns and indexes, plain asyncpg, nothing else."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.insert_sql = _RAW_INSERT.format(s=f'"{schema}"')
        self.codec = EventCodec()
        self.conns: list[asyncpg.Connection[asyncpg.Record]] = []

    async def open(self, connections: int) -> RawAsyncpg:
        self.conns = [await asyncpg.connect(self.url) for _ in range(connections)]
        await self.conns[0].execute(_RAW_TABLE.format(s=f'"{self.schema}"'))
        return self

    def rows(self, stream_id: str, events: Sequence[DomainEvent]) -> list[Row]:
        """The rows our store writes for these events (encoded before the clock starts)."""
        bodies = [self.codec.encode(e).decode() for e in events]
        return [(e.id, stream_id, version, e.event_type, body, e.occurred_at, e.correlation_id,
                 e.causation_id, may_have_ticks(body))
                for version, (e, body) in enumerate(zip(events, bodies, strict=True), start=1)]

    async def insert(self, batches: list[list[Row]]) -> w.Timing:
        """Each batch one transaction, on one connection: a lone row as one INSERT (its own
        transaction), more rows as one `executemany` (atomic: one transaction)."""
        conn, sql = self.conns[0], self.insert_sql

        async def run() -> int:
            n = 0
            for rows in batches:
                if len(rows) == 1:
                    await conn.execute(sql, *rows[0])
                else:
                    await conn.executemany(sql, rows)
                n += len(rows)
            return n
        return await w.timed(run)

    async def insert_concurrently(self, rows: list[Row]) -> w.Timing:
        """One INSERT per row (one transaction each), from every connection at once."""
        sql = self.insert_sql
        parts: list[list[Row]] = []
        start = 0
        for k in w.shares(len(rows), len(self.conns)):
            parts.append(rows[start:start + k])
            start += k

        async def writer(conn: asyncpg.Connection[asyncpg.Record], part: list[Row]) -> None:
            for row in part:
                await conn.execute(sql, *row)

        async def run() -> int:
            await asyncio.gather(*(writer(c, p) for c, p in zip(self.conns, parts, strict=True)))
            return len(rows)
        return await w.timed(run)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


def _musician_rows(raw: RawAsyncpg, n: int) -> list[list[Row]]:
    """n registrations' rows, one list (one transaction) each."""
    return [raw.rows(stream_id, events) for stream_id, events in w.registrations(n)]


def _batches_of_rows(raw: RawAsyncpg, batches: int) -> list[list[Row]]:
    """`batches` lists (transactions) of 100 registrations' rows."""
    return [[row for rows in _musician_rows(raw, w.BATCH) for row in rows]
            for _ in range(batches)]


class Contenders:
    """Ours and the peers for one workload, each in its own schema; every round uses them."""

    def __init__(self, options: Options, workload: str) -> None:
        self.options = options
        tag = f"bench_{uuid.uuid4().hex[:8]}_{workload.replace('-', '_')[:30]}"
        self.schemas = {OURS: f"{tag}_ours", RAW: f"{tag}_raw", ES: f"{tag}_es"}
        self.admin: asyncpg.Connection[asyncpg.Record] | None = None
        self.ours: PostgresEventStore | None = None
        self.raw: RawAsyncpg | None = None
        self.es: EsPeer | None = None
        self.prepared: dict[str, Any] = {}

    async def open(self, connections: int) -> Contenders:
        """Create the schemas; `connections` per contender (its writers at once)."""
        url = self.options.url
        self.admin = await asyncpg.connect(url)
        self.ours, _ = await open_postgres(url, self.schemas[OURS], pool_size=connections)
        if self.options.peers:
            await self.admin.execute(f'CREATE SCHEMA "{self.schemas[RAW]}"')
            self.raw = await RawAsyncpg(url, self.schemas[RAW]).open(connections)
            if available("eventsourcing.postgres"):
                await self.admin.execute(f'CREATE SCHEMA "{self.schemas[ES]}"')
                self.es = EsPeer(postgres_env(url, self.schemas[ES], pool_size=connections))
        return self

    async def close(self) -> None:
        """Close every connection and drop the schemas."""
        try:
            if self.ours is not None:
                await self.ours.close()
            if self.raw is not None:
                await self.raw.close()
            if self.es is not None:
                self.es.close()
        finally:
            if self.admin is not None:
                for schema in self.schemas.values():
                    await self.admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await self.admin.close()

    # One method per workload: {contender: Timing}, contenders in the given order.

    async def append_one_writer(self, order: list[str], n: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS and self.ours is not None:
                out[who] = await w.append_new_streams(self.ours, n)
            elif who == RAW and self.raw is not None:
                out[who] = await self.raw.insert(_musician_rows(self.raw, n))
            elif who == ES and self.es is not None:
                out[who] = self.es.append_new_streams(n)
        return out

    async def append_16_writers(self, order: list[str], n: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS and self.ours is not None:
                out[who] = await w.append_new_streams_concurrently(self.ours, n, WRITERS)
            elif who == RAW and self.raw is not None:
                rows = [r for rs in _musician_rows(self.raw, n) for r in rs]
                out[who] = await self.raw.insert_concurrently(rows)
            elif who == ES and self.es is not None:
                out[who] = self.es.append_new_streams_threads(n, WRITERS)
        return out

    async def append_batch_100(self, order: list[str], batches: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS and self.ours is not None:
                out[who] = await w.append_batches(self.ours, batches)
            elif who == RAW and self.raw is not None:
                out[who] = await self.raw.insert(_batches_of_rows(self.raw, batches))
            elif who == ES and self.es is not None:
                out[who] = self.es.append_batches(batches)
        return out

    async def read_stream_10000(self, order: list[str], loads: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS and self.ours is not None:
                if OURS not in self.prepared:
                    self.prepared[OURS] = await w.prepare_long_stream(self.ours, LONG_STREAM)
                out[who] = await w.load_long_stream(self.ours, self.prepared[OURS], loads,
                                                    LONG_STREAM)
            elif who == ES and self.es is not None:
                if ES not in self.prepared:
                    self.prepared[ES] = self.es.prepare_long_stream(LONG_STREAM)
                out[who] = self.es.load_long_stream(self.prepared[ES], loads, LONG_STREAM)
        return out

    async def read_all(self, order: list[str], reads: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS and self.ours is not None:
                if OURS not in self.prepared:
                    self.prepared[OURS] = await w.prepare_global_order(
                        self.ours, GLOBAL_STREAMS, w.BATCH)
                out[who] = await w.read_global_order(self.ours, self.prepared[OURS], reads)
            elif who == ES and self.es is not None:
                if ES not in self.prepared:
                    self.prepared[ES] = self.es.prepare_global_order(GLOBAL_STREAMS, w.BATCH)
                out[who] = self.es.read_global_order(self.prepared[ES], reads)
        return out


async def measure(options: Options, progress: Progress | None = None) -> Report:
    """Run every workload in `options.rounds` rounds, contenders taking turns in each (see the
    module's docstring); then the subscriber's lag, ours alone."""
    sizes = Sizes(options.events)
    rounds = options.rounds

    def share(total: int) -> int:
        return max(1, round(total / rounds))

    runs: list[tuple[str, str, int, int]] = [  # workload, method, size per round, connections
        (APPEND_ONE_WRITER, "append_one_writer", share(sizes.one_writer), 1),
        (APPEND_16_WRITERS, "append_16_writers", share(sizes.concurrent), WRITERS),
        (APPEND_BATCH_100, "append_batch_100", share(sizes.batches), 1),
        (READ_STREAM_10000, "read_stream_10000", share(sizes.loads), 1),
        (READ_ALL, "read_all", share(sizes.loads), 1),
    ]
    names = [OURS, RAW, ES]
    totals: dict[str, dict[str, tuple[int, float]]] = {run[0]: {} for run in runs}
    peers_missing = False
    for workload, method, size, connections in runs:
        # Fresh schemas for every workload: each contender's table holds the same rows.
        contenders = Contenders(options, workload)
        try:
            await contenders.open(connections)
            peers_missing = options.peers and contenders.es is None
            # An untimed round first: every contender's connections opened and statements
            # prepared before the clock starts (the peers open theirs when they are made).
            await getattr(contenders, method)(names, max(connections, size // 10))
            for round_no in range(rounds):
                order = names[round_no % 3:] + names[: round_no % 3]
                timings: dict[str, w.Timing] = await getattr(contenders, method)(order, size)
                for who, (n, seconds) in timings.items():
                    done, spent = totals[workload].get(who, (0, 0.0))
                    totals[workload][who] = (done + n, spent + seconds)
        finally:
            await contenders.close()
        if progress is not None:
            progress(f"{workload}: " + ", ".join(
                f"{who} {n / s:,.0f}" for who, (n, s) in totals[workload].items()))
    results = []
    for name, figures in totals.items():
        rates = {who: n / s for who, (n, s) in figures.items()}
        results.append(Result(workload=name, unit=w.UNIT, ours=rates.get(OURS, 0.0),
                              peers={p: rates[p] for p in (RAW, ES) if p in rates},
                              targets={p: t for p, t in TARGETS[name].items() if p in rates}))
    lags = await measure_lag(options, sizes.lag_events)
    if progress is not None:
        progress(f"subscriber lag: p50 {w.percentile(lags, 0.5):.2f} ms,"
                 f" p99 {w.percentile(lags, 0.99):.2f} ms")
    results.append(Result(workload=LAG_P50, unit="ms", ours=w.percentile(lags, 0.5)))
    results.append(Result(workload=LAG_P99, unit="ms", ours=w.percentile(lags, 0.99)))
    settings = {"events": str(options.events), "rounds": str(rounds),
                **await server_settings(options.url)}
    if peers_missing:
        settings["pyeventsourcing"] = "not installed (pip install -e '.[bench]')"
    return Report("store-postgres", results, settings)


async def measure_lag(options: Options, events: int) -> list[float]:
    """The catch-up reader's lag behind 16 writers (ms, one figure per event), in rounds."""
    contenders = Contenders(Options(options.events, options.rounds, options.url, peers=False),
                            "lag")
    lags: list[float] = []
    try:
        await contenders.open(WRITERS + 1)
        assert contenders.ours is not None
        for _ in range(options.rounds):
            lags += await w.subscriber_lag(contenders.ours, max(WRITERS, events // options.rounds),
                                           WRITERS)
    finally:
        await contenders.close()
    return lags


async def server_settings(url: str) -> dict[str, str]:
    """The server's version and durability settings, for the report."""
    conn = await asyncpg.connect(url)
    try:
        out = {"server": str(await conn.fetchval("SHOW server_version"))}
        for name in ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay"):
            out[name] = str(await conn.fetchval(f"SHOW {name}"))
        return out
    finally:
        await conn.close()


def run(options: Options, progress: Progress | None = None) -> Report:
    """Measure, from synchronous code."""
    return asyncio.run(measure(options, progress))
