"""`mussikon bench bus`: the RabbitMQ transport end to end, beside raw aiormq, raw aio-pika and
FastStream, measured in the same run on the same broker and queue type.

Workloads (issue 4's "Benchmark"):

- `transport-path` (messages/s): the relay reads events already in the store and publishes
  them; a worker process handles them (no-op handler, no inbox) and acknowledges. Peer
  `raw-aiormq`: a publisher process and a consumer process doing nothing else (the ceiling).
- `full-path` (messages/s): an API process appends each event to the SQLite store (one
  transaction each) with the relay beside it; a worker process runs the handler through the
  inbox (a read and a write in the same SQLite file) and acknowledges. Peers: FastStream's
  and raw aio-pika's plain publish/consume loops (one process, no store, no inbox).
- `latency-p50`, `latency-p99` (ms): the full path again at a steady rate, from the event's
  time (taken right before its append commits) to its handler. Peer `raw-aio-pika`: publish to
  consume at the same rate. The first tenth of the messages, for everyone, is a warm-up and
  not counted (fresh connections, caches, the relay taking its lease).
- `worker-rss-growth` and `inbox-size` (ratios, one run): a publisher process sends
  `rss_messages` distinct events (raw aiormq, the wire format) at a steady `rss_rate`
  (1,000/s, which the worker keeps up with on a busy 2-core machine); one worker process runs the
  transport with one handler through the inbox and, beside it, the inbox retention
  (`InboxRetention`, as `mussikon worker` runs it) at `inbox_retention` seconds (PT10S, the
  smallest `MUSSIKON_INBOX_RETENTION`) in real time: it prunes every half retention, a
  thousand entries a statement, under its lease. When the handler has run `rss_baseline`
  times and `rss_messages` times, the worker takes its resident size (after a
  `gc.collect()`) and the inbox's size. `worker-rss-growth` is the resident size at the end
  over at the baseline; `inbox-size` is the inbox's size at the end over at the baseline.
  Both flat: close to 1.
  On SQLite the inbox is measured as a file: the worker's document store (the inbox, the
  leases) has a file of its own, apart from its events, since the consumer records every
  event it does not find in its store (here all of them, as events from another service)
  and the events, kept for good, grow their file by design. The figure is that file's main
  file bytes after a `wal_checkpoint(TRUNCATE)` (every page in the WAL written back, the WAL
  emptied: the main file is then the database's whole size; the WAL's bytes before the
  checkpoint are reported beside, and the events file's). SQLite puts the pages the pruning
  frees on its free list and reuses them without VACUUM, so the file stays at the
  high-water mark of what the inbox held. On PostgreSQL the figure is the inbox table's
  `pg_total_relation_size` (table, indexes, TOAST; space the pruning frees is reused once
  autovacuum has visited the table). The inbox's rows are reported beside.
  The retention is real time, so the inbox holds one retention's worth of messages (and up
  to half another's, between two rounds of pruning) at the worker's rate of the moment:
  hence the steady rate. Unpaced (`rss_rate` 0), a faster stretch late in a run makes a
  larger inbox than a slower one early, growth that is the machine's and not the inbox's.
  The worker's rate from the baseline to the end is reported beside.
- `foreign-path` (messages/s): a publisher process plays the .NET service (raw aiormq, each
  registration as `RabbitMQService.PublishEventAsync` sends it: its own JSON, a new GUID as
  message id, no position); the worker process is the whole `mussikon worker` (`open_app`
  on the store, SQLite by default): its consumer looks each event up by id and records
  it, the read models apply it, and the registration's handler runs through the inbox,
  waiting for them. Peer `raw-aio-pika`: the same publisher, and a consumer process doing nothing
  else (acknowledges each message).

Every contender runs in fresh processes (spawned, not forked), on its own queues, deleted
afterwards. With `rounds` > 1 the contenders take turns round after round and a figure is
the messages over the time summed over the rounds, so all meet the same disturbances.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import queue as queue_module
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.report import Report, Result
from mussikon import tracing
from mussikon.application.inbox import idempotent
from mussikon.application.retention import InboxRetention
from mussikon.config import INBOX_RETENTION_MINIMUM, Settings, mask_url
from mussikon.domain.events import ALL_EVENT_TYPES, MusicianRegisteredEvent
from mussikon.ports.transport import Envelope, Subscription

BENCHMARK = "bus-rabbitmq"
TRANSPORT_PATH = "transport-path"
FULL_PATH = "full-path"
LATENCY_P50 = "latency-p50"
LATENCY_P99 = "latency-p99"
RSS_GROWTH = "worker-rss-growth"
INBOX_SIZE = "inbox-size"
FOREIGN_PATH = "foreign-path"
RAW_AIORMQ = "raw-aiormq"
RAW_AIO_PIKA = "raw-aio-pika"
FASTSTREAM = "faststream"
THROUGHPUT = "messages/s"

TARGETS: dict[str, dict[str, float]] = {
    TRANSPORT_PATH: {RAW_AIORMQ: 0.8},
    FULL_PATH: {FASTSTREAM: 2.0},
    FOREIGN_PATH: {RAW_AIO_PIKA: 0.5},
}
"""The least ours/peer ratio wanted (issue 4's, and the foreign path's)."""
CEILINGS: dict[str, float] = {RSS_GROWTH: 1.2, INBOX_SIZE: 1.2}
"""The most a growth ratio may be (end over baseline: lower is better)."""

EVENT_TYPE = "MusicianRegisteredEvent"
REGISTRATION_HANDLER = "musicians.on-registered"
"""The application's subscription to registrations, which the foreign path counts."""
ROUTING_KEY = "musician.registered"
PEER_IN_FLIGHT = 500
"""Unconfirmed publishes and unacknowledged deliveries the raw peers allow, as in the anchors."""
TIMEOUT = 900.0
"""Seconds a contender may take before the benchmark gives up on it (beyond the time its
paced sending takes)."""

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Options:
    """What to run, how big, on which broker."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    messages: int = 20_000
    latency_messages: int = 2_000
    latency_rate: float = 500.0
    rss_messages: int = 1_000_000
    rss_baseline: int = 200_000
    rss_rate: float = 1_000.0
    """Messages/s the growth run's publisher sends (0: as fast as it can): a steady rate the
    worker keeps up with, so that one retention holds as many messages late in the run as
    early."""
    inbox_retention: float = INBOX_RETENTION_MINIMUM.total_seconds()
    """Seconds the worker's inbox keeps an entry (`MUSSIKON_INBOX_RETENTION`'s smallest)."""
    queue_type: str = "quorum"
    store: str = "sqlite"
    """Where the outbox and the inbox live: `sqlite` (a file) or a `postgresql://` URL."""
    synchronous: str = "FULL"
    appenders: int = 64
    """Concurrent appends in the API process (requests served at once)."""
    prefetch: int = 200
    """As the peers' (FastStream and aio-pika: 200)."""
    concurrency: int = 64
    """Handlers at once in the worker: more share each inbox commit (group commit)."""
    rounds: int = 1
    peers: bool = True
    workloads: tuple[str, ...] = (TRANSPORT_PATH, FULL_PATH, LATENCY_P50, RSS_GROWTH)
    """`latency-p50` runs both latency workloads; `worker-rss-growth` (or `inbox-size`) both
    growth workloads."""
    directory: str | None = None


@dataclass(slots=True)
class _Tally:
    """Messages and seconds summed over the rounds, per contender."""

    messages: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, contender: str, messages: int, seconds: float) -> None:
        self.messages[contender] = self.messages.get(contender, 0) + messages
        self.seconds[contender] = self.seconds.get(contender, 0.0) + seconds

    def rate(self, contender: str) -> float:
        seconds = self.seconds.get(contender, 0.0)
        return self.messages[contender] / seconds if seconds else 0.0


def run(options: Options, progress: Progress | None = None) -> Report:
    """Run the chosen workloads and return the report (targets included for the table)."""
    say = progress or (lambda _line: None)
    report = Report(BENCHMARK, settings={
        "broker": mask_url(options.url), "queue": options.queue_type,
        "store": _store_label(options), "appenders": str(options.appenders),
        "messages": str(options.messages),
        "prefetch": str(options.prefetch), "concurrency": str(options.concurrency),
        "rounds": str(options.rounds)})
    directory = Path(tempfile.mkdtemp(prefix="mussikon-bus-", dir=options.directory))
    try:
        if TRANSPORT_PATH in options.workloads:
            report.results.append(_transport_path(options, directory, say))
        if FULL_PATH in options.workloads:
            report.results.append(_full_path(options, directory, say))
        if LATENCY_P50 in options.workloads or LATENCY_P99 in options.workloads:
            report.results.extend(_latency(options, directory, say))
        if RSS_GROWTH in options.workloads or INBOX_SIZE in options.workloads:
            results, figures = _rss_growth(options, directory, say)
            report.results.extend(results)
            report.settings.update(figures)
        if FOREIGN_PATH in options.workloads:
            report.results.append(_foreign_path(options, directory, say))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return report


# --- workloads ------------------------------------------------------------------------------


def _transport_path(options: Options, directory: Path, say: Progress) -> Result:
    tally = _Tally()
    n = options.messages
    for round_ in range(options.rounds):
        store = _store_spec(options, directory, f"transport{round_}")
        asyncio.run(_fill_store(store, n))
        say(f"{TRANSPORT_PATH} round {round_ + 1}: ours")
        tally.add("ours", n, _ours(options, _Job(store=store, messages=n, mode="relay"))[0])
        if options.peers:
            say(f"{TRANSPORT_PATH} round {round_ + 1}: {RAW_AIORMQ}")
            tally.add(RAW_AIORMQ, n, _raw_pair(options, n, _aiormq_consumer, _aiormq_publisher))
        asyncio.run(_drop_store(store))
    peers = {RAW_AIORMQ: tally.rate(RAW_AIORMQ)} if options.peers else {}
    return Result(TRANSPORT_PATH, THROUGHPUT, tally.rate("ours"), peers,
                  TARGETS[TRANSPORT_PATH] if options.peers else {})


def _full_path(options: Options, directory: Path, say: Progress) -> Result:
    tally = _Tally()
    n = options.messages
    for round_ in range(options.rounds):
        say(f"{FULL_PATH} round {round_ + 1}: ours")
        store = _store_spec(options, directory, f"full{round_}")
        job = _Job(store=store, messages=n, mode="append", inbox=True)
        tally.add("ours", n, _ours(options, job)[0])
        asyncio.run(_drop_store(store))
        if options.peers:
            say(f"{FULL_PATH} round {round_ + 1}: {FASTSTREAM}")
            tally.add(FASTSTREAM, n, _single_process(_faststream_loop, options, n)[0])
            say(f"{FULL_PATH} round {round_ + 1}: {RAW_AIO_PIKA}")
            tally.add(RAW_AIO_PIKA, n, _single_process(_aio_pika_loop, options, n)[0])
    peers = {FASTSTREAM: tally.rate(FASTSTREAM), RAW_AIO_PIKA: tally.rate(RAW_AIO_PIKA)} \
        if options.peers else {}
    return Result(FULL_PATH, THROUGHPUT, tally.rate("ours"), peers,
                  TARGETS[FULL_PATH] if options.peers else {})


def _latency(options: Options, directory: Path, say: Progress) -> list[Result]:
    n, rate = options.latency_messages, options.latency_rate
    say(f"latency at {rate:g} messages/s: ours")
    store = _store_spec(options, directory, "latency")
    job = _Job(store=store, messages=n, mode="append", inbox=True, latencies=True, rate=rate)
    warm_up = n // 10  # the first tenth warms connections, caches and the relay up: not counted
    ours = _ours(options, job)[1]["latencies"][warm_up:]
    asyncio.run(_drop_store(store))
    peers: dict[str, list[float]] = {}
    if options.peers:
        say(f"latency at {rate:g} messages/s: {RAW_AIO_PIKA}")
        peers[RAW_AIO_PIKA] = _single_process(_aio_pika_loop, options, n, rate)[1][warm_up:]
    return [
        Result(name, "ms", _percentile(ours, q) * 1000,
               {peer: _percentile(values, q) * 1000 for peer, values in peers.items()})
        for name, q in ((LATENCY_P50, 0.50), (LATENCY_P99, 0.99))
    ]


def _rss_growth(options: Options, directory: Path,
                say: Progress) -> tuple[list[Result], dict[str, str]]:
    """The two growth results, and the figures they come from (for the report's settings)."""
    total, baseline = options.rss_messages, min(options.rss_baseline, options.rss_messages)
    say(f"{RSS_GROWTH}: {total:,} messages through one worker with the inbox and its "
        f"retention ({options.inbox_retention:g} s)")
    store = _store_spec(options, directory, "rss", own_inbox=True)
    job = _Job(store=store, messages=total, mode="wire", inbox=True, rss_at=(baseline, total),
               retention=options.inbox_retention, rate=options.rss_rate)
    marks = _ours(options, job)[1]["marks"]
    asyncio.run(_drop_store(store))
    first, last = marks[str(baseline)], marks[str(total)]
    what = "main file bytes" if store.kind == "sqlite" else "pg_total_relation_size"
    seconds = (last["micros"] - first["micros"]) / 1e6
    figures = {"rss messages": f"{total:,} (baseline {baseline:,})",
               "rss rate": f"{options.rss_rate:g}/s" if options.rss_rate else "unpaced",
               "worker's rate from baseline to end":
                   f"{(total - baseline) / seconds if seconds else 0:,.0f}/s",
               "inbox retention": f"{options.inbox_retention:g} s"}
    for mark, figure in (("baseline", first), ("end", last)):
        sqlite = (f", WAL {figure['wal']:,} bytes; events file {figure['events']:,} bytes"
                  if store.kind == "sqlite" else "")
        figures[f"at {mark}"] = (f"RSS {figure['rss'] / 2**20:.1f} MiB, inbox {what} "
                                 f"{figure['bytes']:,}, {figure['rows']:,} rows, "
                                 f"{figure['pruned']:,} pruned{sqlite}")
    return [Result(RSS_GROWTH, "ratio", last["rss"] / first["rss"],
                   ceiling=CEILINGS[RSS_GROWTH]),
            Result(INBOX_SIZE, "ratio", last["bytes"] / first["bytes"],
                   ceiling=CEILINGS[INBOX_SIZE])], figures


def _foreign_path(options: Options, directory: Path, say: Progress) -> Result:
    tally = _Tally()
    n = options.messages
    for round_ in range(options.rounds):
        say(f"{FOREIGN_PATH} round {round_ + 1}: ours")
        store = _store_spec(options, directory, f"foreign{round_}")
        job = _Job(store=store, messages=n, mode="dotnet", worker="app")
        tally.add("ours", n, _ours(options, job)[0])
        asyncio.run(_drop_store(store))
        if options.peers:
            say(f"{FOREIGN_PATH} round {round_ + 1}: {RAW_AIO_PIKA}")
            tally.add(RAW_AIO_PIKA, n, _raw_pair(options, n, _aio_pika_consumer,
                                                 _dotnet_publisher))
    peers = {RAW_AIO_PIKA: tally.rate(RAW_AIO_PIKA)} if options.peers else {}
    return Result(FOREIGN_PATH, THROUGHPUT, tally.rate("ours"), peers,
                  TARGETS[FOREIGN_PATH] if options.peers else {})


# --- ours -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StoreSpec:
    """Where a run's store lives, in a form a spawned process can open."""

    kind: str
    location: str
    """The SQLite file, or the PostgreSQL URL."""
    schema: str = ""
    synchronous: str = "FULL"
    inbox: str = ""
    """SQLite: a file of its own for the document store (the inbox, the leases), apart from
    the events; "": the same file."""


@dataclass(frozen=True, slots=True)
class _Job:
    """What the two processes of one run of ours do."""

    store: _StoreSpec
    messages: int
    mode: str
    """`relay`: publish events already stored; `append`: append them (and relay them);
    `wire`: publish them straight to the exchange in the wire format (raw aiormq);
    `dotnet`: publish them as the .NET service does (raw aiormq)."""
    worker: str = "transport"
    """`transport`: the transport with one handler that counts (through the inbox if
    `inbox`); `app`: the whole worker, as `open_app` wires it, counting its registration
    handler."""
    inbox: bool = False
    latencies: bool = False
    rate: float = 0.0
    rss_at: tuple[int, ...] = ()
    """Handler runs after which the worker takes its figures (`_Mark`)."""
    retention: float = 0.0
    """Seconds the worker's inbox retention keeps an entry (0: no retention runs)."""
    options: Options = Options()
    """The run's broker, queue type, prefetch, concurrency and appenders (set by `_ours`)."""
    prefix: str = ""


def _store_label(options: Options) -> str:
    if options.store == "sqlite":
        return f"sqlite synchronous={options.synchronous}"
    return f"postgres {mask_url(options.store)}"


def _store_spec(options: Options, directory: Path, name: str, *,
                own_inbox: bool = False) -> _StoreSpec:
    if options.store == "sqlite":
        return _StoreSpec("sqlite", str(directory / f"{name}.db"),
                          synchronous=options.synchronous,
                          inbox=str(directory / f"{name}-inbox.db") if own_inbox else "")
    return _StoreSpec("postgres", options.store, schema=f"bench_{name}_{uuid.uuid4().hex[:8]}")


async def _open_store(spec: _StoreSpec, pool_size: int = 10) -> tuple[Any, Any, Any]:
    """(event store, document store, closer) for a spec."""
    if spec.kind == "sqlite":
        from mussikon.adapters.store.sqlite import (
            SqliteDatabase,
            SqliteDocumentStore,
            SqliteEventStore,
        )

        db = await SqliteDatabase(spec.location, spec.synchronous).open()
        if not spec.inbox:
            return SqliteEventStore(db), SqliteDocumentStore(db), db.close
        inbox = await SqliteDatabase(spec.inbox, spec.synchronous).open()

        async def close() -> None:
            await inbox.close()
            await db.close()

        return SqliteEventStore(db), SqliteDocumentStore(inbox), close
    from mussikon.adapters.store.postgres import open_postgres

    store, documents = await open_postgres(spec.location, spec.schema, pool_size)
    return store, documents, store.close


async def _drop_store(spec: _StoreSpec) -> None:
    if spec.kind == "postgres":
        import asyncpg

        connection = await asyncpg.connect(spec.location)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{spec.schema}" CASCADE')
        finally:
            await connection.close()


async def _fill_store(spec: _StoreSpec, n: int) -> None:
    """Store `n` events before the clock starts (in batches: only their reading is timed)."""
    fast = _StoreSpec(spec.kind, spec.location, spec.schema, "NORMAL")
    store, _, close = await _open_store(fast)
    try:
        for first in range(0, n, 100):
            events = [_event(i) for i in range(first, min(first + 100, n))]
            await store.append_streams([(e.stream_id, [e], 0) for e in events])
    finally:
        await close()


def _ours(options: Options, job: _Job) -> tuple[float, dict[str, Any]]:
    """Run the worker process, then the source process (relay, API or wire publisher); return
    the seconds from the source's start to the worker's last message, and the worker's
    report."""
    job = replace(job, options=options, prefix=_prefix())
    asyncio.run(_declare(options, job.prefix))
    context = multiprocessing.get_context("spawn")
    ready: Queue[Any] = context.Queue()
    worker_out: Queue[Any] = context.Queue()
    source_out: Queue[Any] = context.Queue()
    worker = context.Process(target=_our_worker, args=(job, ready, worker_out))
    source = context.Process(target=_our_source, args=(job, source_out))
    try:
        worker.start()
        _get(ready, "the worker to start", worker)
        source.start()
        paced = job.messages / job.rate if job.rate else 0.0
        source_result = _get(source_out, f"the {job.mode} process", worker, source,
                             timeout=TIMEOUT + paced)
        started = source_result["start"]
        result = _get(worker_out, "the worker", worker, source)
        if os.environ.get("MUSSIKON_BENCH_CPU"):
            elapsed = result["end"] - started
            per = 1e6 / job.messages
            print(f"cpu: worker {result.get('cpu', 0) / elapsed:.0%} "
                  f"({result.get('cpu', 0) * per:.0f} µs/message), source "
                  f"{source_result.get('cpu', 0) / elapsed:.0%} "
                  f"({source_result.get('cpu', 0) * per:.0f} µs/message) of {elapsed:.1f} s; "
                  f"worker commits {result.get('commits', 0)}, "
                  f"source commits {source_result.get('commits', 0)}")
    finally:
        try:
            _reap(worker, source)
        finally:
            asyncio.run(_delete(options, job.prefix))
    return float(result["end"] - started), result


def _our_worker(job: _Job, ready: Queue[Any], out: Queue[Any]) -> None:
    """A worker process: consume until `job.messages` distinct messages were handled."""
    _log_warnings()
    _run((_run_app_worker if job.worker == "app" else _run_our_worker)(job, ready, out),
         "worker")


def _run(main: Coroutine[Any, Any, None], role: str) -> None:
    """`asyncio.run(main)`; under cProfile with MUSSIKON_BENCH_PROFILE=PATH set, its calls
    written to `PATH.<role>.<pid>` (for `python -m pstats`)."""
    profile = os.environ.get("MUSSIKON_BENCH_PROFILE")
    if not profile:
        asyncio.run(main)
        return
    import cProfile

    with cProfile.Profile() as profiler:
        asyncio.run(main)
    profiler.dump_stats(f"{profile}.{role}.{os.getpid()}")


async def _run_our_worker(job: _Job, ready: Queue[Any], out: Queue[Any]) -> None:
    from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
    from mussikon.wire import EventCodec

    store, documents, close = await _open_store(job.store, pool_size=job.options.concurrency + 2)
    handled = 0
    done = asyncio.Event()
    delays: list[float] = []
    marks: dict[str, _Mark] = {}
    retention = (InboxRetention(documents, timedelta(seconds=job.retention))
                 if job.retention else None)

    async def handle(envelope: Envelope) -> None:
        nonlocal handled
        handled += 1
        count = handled
        if job.latencies:
            delays.append(time.time() - envelope.event.occurred_at.timestamp())
        if count in job.rss_at:
            marks[str(count)] = await _mark(job.store, documents, retention)
        if count == job.messages:
            done.set()

    subscription = Subscription("bench", frozenset({EVENT_TYPE}), handle)
    if job.inbox:
        subscription = idempotent(subscription, documents)
    options = job.options
    transport = RabbitMqTransport(options.url, store, documents, EventCodec(), prefix=job.prefix,
                                  queue_type=options.queue_type,  # type: ignore[arg-type]
                                  relay=False, prefetch=options.prefetch,
                                  concurrency=options.concurrency)
    if retention is not None:
        await retention.start()
    await transport.start([subscription])
    ready.put("ready")
    cpu = time.process_time()
    await done.wait()
    out.put({"end": time.perf_counter(), "latencies": delays, "marks": marks,
             "cpu": time.process_time() - cpu,
             "commits": getattr(getattr(documents, "db", None), "commits", 0)})
    await transport.stop()
    if retention is not None:
        await retention.stop()
    await close()


_Mark = dict[str, int]
"""What the worker takes at a mark: `rss` (its resident bytes), `bytes` (the inbox's size:
the SQLite inbox file's main file after a full checkpoint, or the PostgreSQL inbox table's
`pg_total_relation_size`), `wal` (the SQLite inbox file's WAL bytes before the
checkpoint), `rows` (the inbox's), `pruned` (entries the retention removed so far),
`events` (the SQLite events file's bytes, main and WAL) and `micros` (when: monotonic)."""


async def _mark(spec: _StoreSpec, documents: Any, retention: InboxRetention | None) -> _Mark:
    gc.collect()
    figure = {"rss": _resident_bytes(), "micros": time.monotonic_ns() // 1000,
              "pruned": retention.removed if retention is not None else 0}
    if spec.kind == "sqlite":
        return {**figure, **await _sqlite_size(spec, documents.db)}
    return {**figure, **await _postgres_inbox_size(spec)}


async def _sqlite_size(spec: _StoreSpec, db: Any) -> _Mark:
    """The inbox file's WAL bytes, then its main file's once a checkpoint has written every
    page back and emptied the WAL (tried again while a transaction in progress holds it
    up); and the events file's bytes, main and WAL."""

    def measure(conn: Any) -> _Mark | None:
        wal = _file_bytes(spec.inbox + "-wal")
        if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
            return None  # busy: a transaction in progress holds pages the WAL must keep
        rows = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        return {"bytes": _file_bytes(spec.inbox), "wal": wal, "rows": int(rows),
                "events": _file_bytes(spec.location) + _file_bytes(spec.location + "-wal")}

    for _ in range(1000):
        figure: _Mark | None = await db.run(measure)
        if figure is not None:
            return figure
        await asyncio.sleep(0.01)
    raise RuntimeError("benchmark: the SQLite checkpoint stayed busy for 10 s")


def _file_bytes(path: str) -> int:
    with contextlib.suppress(FileNotFoundError):
        return os.stat(path).st_size
    return 0


async def _postgres_inbox_size(spec: _StoreSpec) -> _Mark:
    import asyncpg

    connection = await asyncpg.connect(spec.location)
    try:
        table = f'"{spec.schema}".inbox'
        size = await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        rows = await connection.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await connection.close()
    return {"bytes": int(size), "wal": 0, "rows": int(rows), "events": 0}


async def _run_app_worker(job: _Job, ready: Queue[Any], out: Queue[Any]) -> None:
    """The whole worker (`mussikon worker`): the consumer records each foreign event, the
    read models apply it, the registration handler (inbox, welcome email, waiting for the
    read models) runs; done when that handler has succeeded `job.messages` times."""
    from mussikon.bootstrap import open_app

    app = await open_app(_app_settings(job))
    handled = 0
    done = asyncio.Event()

    def counted(subscription: Subscription) -> Subscription:
        async def handle(envelope: Envelope) -> None:
            nonlocal handled
            await subscription.handler(envelope)
            handled += 1
            if handled == job.messages:
                done.set()

        return replace(subscription, handler=handle)

    app.subscriptions = [counted(s) if s.name == REGISTRATION_HANDLER else s
                         for s in app.subscriptions]
    await app.start()
    ready.put("ready")
    cpu = time.process_time()
    await done.wait()
    out.put({"end": time.perf_counter(), "cpu": time.process_time() - cpu,
             "commits": getattr(getattr(app.documents, "db", None), "commits", 0)})
    await app.close()


def _app_settings(job: _Job) -> Settings:
    """The worker's settings: the run's store, broker, queues, prefetch and concurrency (over
    the environment's; no `.env` file read)."""
    options, spec = job.options, job.store
    sqlite = spec.kind == "sqlite"
    return Settings(
        _env_file=None,
        store_url=f"sqlite:///{Path(spec.location).absolute()}" if sqlite else spec.location,
        sqlite_synchronous=spec.synchronous, postgres_schema=spec.schema or "mussikon",
        postgres_pool_size=min(200, options.concurrency + 2), broker_url=options.url,
        rabbitmq_prefix=job.prefix, rabbitmq_queue_type=options.queue_type,
        rabbitmq_prefetch=options.prefetch, bus_concurrency=options.concurrency, smtp_url="",
        # Each queue gets the whole prefetch, as each peer's one queue does (the benchmark
        # sends one event type): the worker's overall bound is not what is measured here.
        rabbitmq_max_in_flight=options.prefetch * len(ALL_EVENT_TYPES))


def _our_source(job: _Job, out: Queue[Any]) -> None:
    """The process that feeds the worker, by `job.mode`."""
    _log_warnings()
    if job.mode == "wire":
        asyncio.run(_run_wire_publisher(job, out))
    elif job.mode == "dotnet":
        _dotnet_publisher(job.options.url, _topology(job.options, job.prefix).events_exchange,
                          job.messages, out)
    else:
        _run(_run_our_source(job, out), "source")


async def _run_our_source(job: _Job, out: Queue[Any]) -> None:
    from mussikon.adapters.messaging.rabbitmq import RabbitMqTransport
    from mussikon.wire import EventCodec

    store, documents, close = await _open_store(job.store, pool_size=job.options.appenders + 2)
    transport = RabbitMqTransport(job.options.url, store, documents, EventCodec(),
                                  prefix=job.prefix,
                                  queue_type=job.options.queue_type)  # type: ignore[arg-type]
    started, cpu = time.perf_counter(), time.process_time()
    await transport.start([])
    if job.mode == "append":
        await _append_all(store, transport, job, started)
    relay, head = transport.relay, await store.head_position()
    while relay is not None and await relay.position() < head:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    out.put({"start": started, "cpu": time.process_time() - cpu,
             "commits": getattr(getattr(documents, "db", None), "commits", 0)})
    await transport.stop()
    await close()


async def _append_all(store: Any, transport: Any, job: _Job, started: float) -> None:
    """Append `job.messages` events, one per append as commands do, from `job.options.appenders`
    concurrent requests, at `job.rate` per second in all if given."""
    interval = 1.0 / job.rate if job.rate else 0.0
    turns = iter(range(job.messages))

    async def requests() -> None:
        for i in turns:
            event = _event(i)
            with tracing.span("append", tracing.SERVER):  # a request's trace, if tracing is on
                await store.append(event.stream_id, [event], 0)
            transport.wake()
            if interval:
                # Paced from the start, not from the last append: a slow append is caught up.
                await asyncio.sleep(max(0.0, started + (i + 1) * interval - time.perf_counter()))

    await asyncio.gather(*(requests() for _ in range(job.options.appenders)))


def _event(n: int) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=str(uuid.uuid4()), email=f"ana{n}@example.com",
                                   name="Ana", genres=("Jazz", "Bolero"), location="Santo Domingo")


async def _run_wire_publisher(job: _Job, out: Queue[Any]) -> None:
    """Publish distinct events in the wire format, as our relay would (raw aiormq): as fast
    as it can, or `job.rate` per second."""
    import aiormq

    from mussikon.adapters.messaging.rabbitmq.properties import event_properties
    from mussikon.wire import EventCodec

    codec = EventCodec()
    connection = await aiormq.connect(job.options.url)
    channel = await connection.channel(publisher_confirms=True)
    slots = asyncio.Semaphore(PEER_IN_FLIGHT)

    async def publish(i: int) -> None:
        async with slots:
            event = _event(i)
            await channel.basic_publish(codec.encode(event),
                                        exchange=job.prefix + "mussikon.events",
                                        routing_key=ROUTING_KEY,
                                        properties=event_properties(event, i + 1))

    started = time.perf_counter()
    step = 100 if job.rate else 10_000  # a bounded number of tasks at a time
    for first in range(0, job.messages, step):
        last = min(first + step, job.messages)
        await asyncio.gather(*(publish(i) for i in range(first, last)))
        if job.rate:  # paced from the start: a slow stretch is caught up
            await asyncio.sleep(max(0.0, started + last / job.rate - time.perf_counter()))
    out.put({"start": started})
    await connection.close()


# --- peers ----------------------------------------------------------------------------------


def _raw_pair(options: Options, n: int, consumer_target: Callable[..., None],
              publisher_target: Callable[..., None]) -> float:
    """A consumer process and a publisher process (the anchor's two-process loop), on a queue
    of the same type; the seconds from the first publish to the last message consumed.
    `consumer_target(url, queue, n, ready, out)`, `publisher_target(url, exchange, n, out)`."""
    prefix = _prefix()
    exchange, queue = prefix + "raw.events", prefix + "raw.queue"
    asyncio.run(_declare_raw(options, exchange, queue))
    context = multiprocessing.get_context("spawn")
    ready: Queue[Any] = context.Queue()
    consumer_out: Queue[Any] = context.Queue()
    publisher_out: Queue[Any] = context.Queue()
    consumer = context.Process(target=consumer_target, args=(options.url, queue, n, ready,
                                                             consumer_out))
    publisher = context.Process(target=publisher_target, args=(
        options.url, exchange, n, publisher_out))
    try:
        consumer.start()
        _get(ready, "the raw consumer to start", consumer)
        publisher.start()
        started = _get(publisher_out, "the raw publisher", consumer, publisher)["start"]
        ended = _get(consumer_out, "the raw consumer", consumer, publisher)["end"]
    finally:
        try:
            _reap(consumer, publisher)
        finally:
            asyncio.run(_delete_raw(options, exchange, queue))
    return float(ended - started)


def _aiormq_consumer(url: str, queue: str, n: int, ready: Queue[Any], out: Queue[Any]) -> None:
    """Raw aiormq consumer: acknowledges every 50 messages at once, as the anchor does."""

    async def main() -> None:
        import aiormq

        connection = await aiormq.connect(url)
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=PEER_IN_FLIGHT)
        done = asyncio.Event()
        got = 0

        async def on_message(message: Any) -> None:
            nonlocal got
            got += 1
            if got % 50 == 0 or got == n:
                await channel.basic_ack(message.delivery_tag, multiple=True)
            if got == n:
                done.set()

        await channel.basic_consume(queue, on_message)
        ready.put("ready")
        await done.wait()
        out.put({"end": time.perf_counter()})
        await connection.close()

    asyncio.run(main())


def _aiormq_publisher(url: str, exchange: str, n: int, out: Queue[Any]) -> None:
    """Raw aiormq publisher: persistent messages, confirms, many in flight."""

    async def main() -> None:
        import aiormq
        from pamqp.commands import Basic

        body = _body()
        connection = await aiormq.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        slots = asyncio.Semaphore(PEER_IN_FLIGHT)
        properties = Basic.Properties(delivery_mode=2, content_type="application/json")

        async def publish() -> None:
            async with slots:
                await channel.basic_publish(body, exchange=exchange, routing_key=ROUTING_KEY,
                                            properties=properties)

        started = time.perf_counter()
        for first in range(0, n, 10_000):
            await asyncio.gather(*(publish() for _ in range(first, min(first + 10_000, n))))
        out.put({"start": started})
        await connection.close()

    asyncio.run(main())


def _aio_pika_consumer(url: str, queue: str, n: int, ready: Queue[Any],
                       out: Queue[Any]) -> None:
    """Raw aio-pika consumer, as in its one-process loop: prefetch 200, acknowledge each."""

    async def main() -> None:
        import aio_pika

        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=200)
        consumed = await channel.get_queue(queue, ensure=False)
        done = asyncio.Event()
        got = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            await message.ack()
            got += 1
            if got == n:
                done.set()

        await consumed.consume(on_message)
        ready.put("ready")
        await done.wait()
        out.put({"end": time.perf_counter()})
        await connection.close()

    asyncio.run(main())


def _dotnet_publisher(url: str, exchange: str, n: int, out: Queue[Any]) -> None:
    """The .NET service's publisher, in raw aiormq: `n` distinct registrations made before
    the clock starts (`_dotnet_message`), published with confirms, many in flight."""

    async def main() -> None:
        import aiormq

        messages = [_dotnet_message(i) for i in range(n)]
        connection = await aiormq.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        slots = asyncio.Semaphore(PEER_IN_FLIGHT)

        async def publish(body: bytes, properties: Any) -> None:
            async with slots:
                await channel.basic_publish(body, exchange=exchange, routing_key=ROUTING_KEY,
                                            properties=properties)

        started = time.perf_counter()
        for first in range(0, n, 10_000):
            await asyncio.gather(*(publish(*m) for m in messages[first:first + 10_000]))
        out.put({"start": started})
        await connection.close()

    asyncio.run(main())


def _dotnet_message(i: int) -> tuple[bytes, Any]:
    """Registration `i` as the .NET service sends it (`RabbitMQService.PublishEventAsync`):
    the body as System.Text.Json writes the seed's `MusicianRegisteredEvent` (PascalCase,
    compact, a new GUID as `Id`, the time to the 100 ns tick), persistent, a new GUID as
    message id, the time in Unix seconds, headers `EventType` and `Version` "1.0"."""
    from pamqp.commands import Basic

    now = datetime.now(UTC)
    body = json.dumps({
        "MusicianId": str(uuid.uuid4()), "Email": f"ana{i}@example.com", "Name": "Ana",
        "Genres": ["Jazz", "Bolero"], "Location": "Santo Domingo", "Id": str(uuid.uuid4()),
        "OccurredAt": f"{now:%Y-%m-%dT%H:%M:%S.%f}{i % 9 + 1}Z", "EventType": EVENT_TYPE,
        "Version": 1}, separators=(",", ":")).encode()
    return body, Basic.Properties(delivery_mode=2, message_id=str(uuid.uuid4()),
                                  timestamp=now.replace(microsecond=0),
                                  headers={"EventType": EVENT_TYPE, "Version": "1.0"})


def _single_process(target: Callable[..., None], options: Options, n: int,
                    rate: float = 0.0) -> tuple[float, list[float]]:
    """Run a one-process peer; return its seconds and its latencies."""
    context = multiprocessing.get_context("spawn")
    out: Queue[Any] = context.Queue()
    process = context.Process(target=target, args=(options.url, n, options.queue_type,
                                                   _prefix(), rate, out))
    try:
        process.start()
        result = _get(out, target.__name__.strip("_").replace("_", " "), process)
    finally:
        _reap(process)
    return float(result["seconds"]), list(result["latencies"])


def _aio_pika_loop(url: str, n: int, queue_type: str, prefix: str, rate: float,
                   out: Queue[Any]) -> None:
    """Raw aio-pika in one process, as the anchor: publish with confirms, consume, ack each;
    at `rate` per second if given, recording publish-to-consume latencies."""

    async def main() -> None:
        import aio_pika

        connection = await aio_pika.connect_robust(url)
        publishing = await connection.channel(publisher_confirms=True)
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=200)
        exchange = await publishing.declare_exchange(prefix + "pika.events",
                                                     aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await consuming.declare_queue(prefix + "pika.queue", durable=True,
                                              arguments={"x-queue-type": queue_type})
        await queue.bind(prefix + "pika.events", ROUTING_KEY)
        body = _body()
        done = asyncio.Event()
        got = 0
        latencies: list[float] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            sent = (message.headers or {}).get("t")
            if rate and isinstance(sent, str):
                latencies.append(time.time() - float(sent))
            await message.ack()
            got += 1
            if got == n:
                done.set()

        await queue.consume(on_message)
        slots = asyncio.Semaphore(200)

        async def publish(i: int) -> None:
            async with slots:
                await exchange.publish(aio_pika.Message(
                    body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(i),
                    content_type="application/json", headers={"t": repr(time.time())}),
                    routing_key=ROUTING_KEY)

        started = time.perf_counter()
        if rate:
            pending = []
            for i in range(n):
                pending.append(asyncio.create_task(publish(i)))
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
            await asyncio.gather(*pending)
        else:
            await asyncio.gather(*(publish(i) for i in range(n)))
        await done.wait()
        seconds = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await connection.close()
        out.put({"seconds": seconds, "latencies": latencies})

    asyncio.run(main())


def _faststream_loop(url: str, n: int, queue_type: str, prefix: str, rate: float,
                     out: Queue[Any]) -> None:
    """FastStream in one process, as the anchor: publish persistent messages, consume them."""
    import logging

    from faststream.rabbit import (
        Channel,
        ExchangeType,
        QueueType,
        RabbitBroker,
        RabbitExchange,
        RabbitQueue,
    )

    broker = RabbitBroker(url, log_level=logging.DEBUG, logger=None)
    exchange = RabbitExchange(prefix + "fs.events", type=ExchangeType.TOPIC, durable=True)
    queue = (RabbitQueue(prefix + "fs.queue", QueueType.QUORUM, routing_key=ROUTING_KEY)
             if queue_type == "quorum" else
             RabbitQueue(prefix + "fs.queue", durable=True, routing_key=ROUTING_KEY))
    got = 0
    done = asyncio.Event()

    @broker.subscriber(queue, exchange, channel=Channel(prefetch_count=200))
    async def handle(message: dict[str, Any]) -> None:
        nonlocal got
        got += 1
        if got == n:
            done.set()

    async def main() -> None:
        await broker.start()
        payload = json.loads(_body())
        slots = asyncio.Semaphore(200)

        async def publish() -> None:
            async with slots:
                await broker.publish(payload, exchange=exchange, routing_key=ROUTING_KEY,
                                     persist=True)

        started = time.perf_counter()
        await asyncio.gather(*(publish() for _ in range(n)))
        await done.wait()
        seconds = time.perf_counter() - started
        await broker.stop()
        await _delete_raw_url(url, prefix + "fs.events", prefix + "fs.queue")
        out.put({"seconds": seconds, "latencies": []})

    asyncio.run(main())


# --- plumbing -------------------------------------------------------------------------------


def _body() -> bytes:
    """The same JSON our relay sends for one registration, for the peers to carry."""
    from mussikon.wire import EventCodec

    return EventCodec().encode(_event(0))


def _prefix() -> str:
    return f"bench{uuid.uuid4().hex[:8]}."


def _topology(options: Options, prefix: str) -> Any:
    from mussikon.adapters.messaging.rabbitmq import Topology
    from mussikon.wire import EventCodec

    return Topology(EventCodec().event_types, prefix=prefix,
                    queue_type=options.queue_type)  # type: ignore[arg-type]


async def _declare(options: Options, prefix: str) -> None:
    import aiormq

    connection = await aiormq.connect(options.url)
    await _topology(options, prefix).declare(await connection.channel())
    await connection.close()


async def _delete(options: Options, prefix: str) -> None:
    import aiormq

    connection = await aiormq.connect(options.url)
    await _topology(options, prefix).delete(await connection.channel())
    await connection.close()


async def _declare_raw(options: Options, exchange: str, queue: str) -> None:
    import aiormq

    connection = await aiormq.connect(options.url)
    channel = await connection.channel()
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    await channel.queue_declare(queue, durable=True,
                                arguments={"x-queue-type": options.queue_type})
    await channel.queue_bind(queue, exchange, routing_key=ROUTING_KEY)
    await connection.close()


async def _delete_raw(options: Options, exchange: str, queue: str) -> None:
    await _delete_raw_url(options.url, exchange, queue)


async def _delete_raw_url(url: str, exchange: str, queue: str) -> None:
    import aiormq

    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.queue_delete(queue)
    await channel.exchange_delete(exchange)
    await connection.close()


def _get(queue: Queue[Any], what: str, *processes: BaseProcess,
         timeout: float = TIMEOUT) -> Any:
    """The next result on `queue`; RuntimeError if one of `processes` died or after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(queue_module.Empty):
            return queue.get(timeout=0.5)
        dead = [p for p in processes if p.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"benchmark: a process failed (exit code {dead[0].exitcode}) "
                               f"while waiting for {what}")
    raise RuntimeError(f"benchmark gave up waiting for {what}")


def _reap(*processes: BaseProcess) -> None:
    for process in processes:
        if process.pid is None:
            continue  # never started (the benchmark failed before it)
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()


def _log_warnings() -> None:
    """Let a child process's warnings reach stderr (a failing contender says why), and trace
    as `mussikon` would if the `OTEL_*` variables ask for it (the cost of tracing)."""
    import logging

    from mussikon.entrypoints.telemetry import configure_tracing

    logging.basicConfig(level=logging.WARNING,
                        format="%(processName)s %(name)s %(levelname)s %(message)s")
    configure_tracing(os.environ)


def _resident_bytes() -> int:
    """The process's resident set size now (Linux), or its peak where /proc is missing."""
    with contextlib.suppress(OSError), open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
