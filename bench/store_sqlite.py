"""`mussikon bench store --backend sqlite`: our SQLite event store beside its peers, in one run.

Contenders, each on its own fresh database file in WAL mode at the same `synchronous`:

- ours: `SqliteEventStore`, through the async port: storing events made beforehand
  (encoding them), get-and-append and loads rebuilding aggregates;
- `raw-sqlite3`: plain `sqlite3` inserts of the very rows our store writes (encoded
  beforehand) into the same table, one transaction per append: the ceiling;
- `pyeventsourcing`: the `eventsourcing` package on SQLite, the same workloads its way.

Each workload runs in rounds; in each round every contender runs its share right after
the others, in an order that turns round by round, and a contender's figure is its
events over its time summed over the rounds: on a shared machine, every contender meets
the same disturbances.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import store_workloads as w
from bench.peer_eventsourcing import (
    EsPeer,
    available,
    sqlite_env,
    sqlite_synchronous,
)
from bench.report import Report, Result
from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteEventStore, migrate
from mussikon.domain.events import DomainEvent
from mussikon.domain.instant import epoch_micros, utc_now
from mussikon.wire import EventCodec

OURS = "ours"
RAW = "raw-sqlite3"
ES = "pyeventsourcing"

TARGETS: dict[str, dict[str, float]] = {
    w.APPEND_NEW_STREAM: {RAW: 0.8, ES: 1.3},
    w.APPEND_EXISTING_STREAM: {ES: 2.0},
    w.APPEND_BATCH_100: {RAW: 0.8, ES: 2.5},
    w.READ_STREAM_1000: {ES: 3.0},
}
"""Issue 2's targets: the least ours/peer ratio wanted."""

_INSERT = (
    "INSERT INTO events (event_id, stream_id, version, event_type, data, occurred_at,"
    " correlation_id, causation_id, recorded_at) VALUES (?,?,?,?,?,?,?,?,?)"
)

Row = tuple[Any, ...]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Options:
    """What to run: sizes, durability, rounds, and where the database files go."""

    events: int = 1000
    synchronous: str = "FULL"
    rounds: int = 10
    directory: str | None = None
    peers: bool = True


class RawSqlite:
    """The ceiling: our rows, our table, plain `sqlite3`, nothing else."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        migrate(self.conn)
        self.codec = EventCodec()

    def rows(self, stream_id: str, events: list[DomainEvent]) -> list[Row]:
        """The rows our store writes for these events (encoded before the clock starts)."""
        now = epoch_micros(utc_now())
        return [(str(e.id), stream_id, version, e.event_type, self.codec.encode(e).decode(),
                 epoch_micros(e.occurred_at), None, None, now)
                for version, e in enumerate(events, start=1)]

    def insert(self, batches: list[list[Row]]) -> w.Timing:
        """Each batch in one transaction: a lone row as one autocommit INSERT (SQLite makes it
        its own transaction), more rows as BEGIN IMMEDIATE, executemany, COMMIT."""
        conn = self.conn

        def run() -> int:
            n = 0
            for rows in batches:
                if len(rows) == 1:
                    conn.execute(_INSERT, rows[0])
                else:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
                n += len(rows)
            return n
        return w.timed_sync(run)

    def close(self) -> None:
        self.conn.close()


class Contenders:
    """The three databases of one workload, used by every round."""

    def __init__(self, directory: Path, options: Options, prefix: str = "") -> None:
        self.options = options
        self.directory = directory
        self.db = SqliteDatabase(str(directory / f"{prefix}ours.db"), options.synchronous)
        self.ours = SqliteEventStore(self.db)
        self.raw: RawSqlite | None = None
        self.es: EsPeer | None = None
        self._long: str | None = None
        self._es_long: Any = None
        if options.peers:
            self.raw = RawSqlite(str(directory / f"{prefix}raw.db"), options.synchronous)
            if available():
                with sqlite_synchronous(options.synchronous):
                    self.es = EsPeer(sqlite_env(str(directory / f"{prefix}es.db")))

    async def close(self) -> None:
        await self.ours.close()
        if self.raw is not None:
            self.raw.close()
        if self.es is not None:
            self.es.close()

    def _es_synchronous(self) -> Any:
        return sqlite_synchronous(self.options.synchronous)

    # One method per workload: {contender: Timing}, contenders in the given order.

    async def append_new_stream(self, order: list[str], n: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS:
                out[who] = await w.append_new_streams(self.ours, n)
            elif who == RAW and self.raw is not None:
                raw = self.raw
                out[who] = raw.insert([raw.rows(stream_id, events)
                                       for stream_id, events in w.registrations(n)])
            elif who == ES and self.es is not None:
                with self._es_synchronous():
                    out[who] = self.es.append_new_streams(n)
        return out

    async def append_existing_stream(self, order: list[str], n: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS:
                gig_ids = await w.prepare_gigs(self.ours, n)
                out[who] = await w.get_and_append(self.ours, gig_ids)
            elif who == ES and self.es is not None:
                with self._es_synchronous():
                    es_ids = self.es.prepare_gigs(n)
                    out[who] = self.es.get_and_append(es_ids)
        return out

    async def append_batch_100(self, order: list[str], batches: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS:
                out[who] = await w.append_batches(self.ours, batches)
            elif who == RAW and self.raw is not None:
                raw = self.raw
                out[who] = raw.insert([[row for stream_id, events in w.registrations(w.BATCH)
                                        for row in raw.rows(stream_id, events)]
                                       for _ in range(batches)])
            elif who == ES and self.es is not None:
                with self._es_synchronous():
                    out[who] = self.es.append_batches(batches)
        return out

    async def read_stream_1000(self, order: list[str], loads: int) -> dict[str, w.Timing]:
        out: dict[str, w.Timing] = {}
        for who in order:
            if who == OURS:
                if self._long is None:
                    self._long = await w.prepare_long_stream(self.ours)
                out[who] = await w.load_long_stream(self.ours, self._long, loads)
            elif who == ES and self.es is not None:
                with self._es_synchronous():
                    if self._es_long is None:
                        self._es_long = self.es.prepare_long_stream()
                    out[who] = self.es.load_long_stream(self._es_long, loads)
        return out


async def measure(directory: Path, options: Options, progress: Progress | None = None) -> Report:
    """Run every workload in `options.rounds` rounds; in each round every contender runs its
    share, one right after the other, in an order that turns round by round. A contender's
    figure is its events over its time summed over the rounds, so every contender meets the
    same disturbances on a shared machine."""
    sizes = w.Sizes(options.events)
    rounds = options.rounds

    def share(total: int) -> int:
        return max(1, round(total / rounds))

    runs: list[tuple[str, str, int]] = [
        (w.APPEND_NEW_STREAM, "append_new_stream", share(sizes.single)),
        (w.APPEND_EXISTING_STREAM, "append_existing_stream", share(sizes.single)),
        (w.APPEND_BATCH_100, "append_batch_100", share(sizes.batches)),
        (w.READ_STREAM_1000, "read_stream_1000", share(sizes.loads)),
    ]
    names = [OURS, RAW, ES]
    totals: dict[str, dict[str, tuple[int, float]]] = {name: {} for name in w.WORKLOADS}
    peers_missing = False
    for workload, method, size in runs:
        # Fresh files for every workload: each contender's database holds the same rows.
        contenders = Contenders(directory, options, prefix=f"{workload}-")
        peers_missing = options.peers and contenders.es is None
        try:
            # An untimed round first: every contender's file opened and statements prepared
            # before the clock starts (the peers open theirs when they are made).
            await getattr(contenders, method)(names, max(1, size // 10))
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
    settings = {"synchronous": options.synchronous, "journal_mode": "WAL",
                "events": str(options.events), "rounds": str(rounds)}
    if peers_missing:
        settings["pyeventsourcing"] = "not installed (pip install -e '.[bench]')"
    return Report("store-sqlite", results, settings)


def run(options: Options, progress: Progress | None = None) -> Report:
    """Measure, from synchronous code, in `options.directory` or a temporary one (removed)."""
    directory = Path(options.directory or tempfile.mkdtemp(prefix="mussikon-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(measure(directory, options, progress))
    finally:
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
