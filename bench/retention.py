"""`mussikon bench retention`: the inbox and a worker's memory stay bounded as messages go by.

One worker process: the in-process transport over a SQLite store, one subscription through
the inbox (`application/inbox.py`, a handler that counts), and the inbox retention
(`application/retention.py`) pruning in the background as `mussikon worker` does. The store
is filled with `messages` events beforehand, by another process (so the worker's memory
holds nothing of the filling). Figures are taken by the worker when its handler has run
`baseline` times and when it has run `messages` times:

- `inbox-size` (ratio): rows of the inbox table at the end over at the baseline;
- `inbox-bytes` (ratio): bytes of the pages of the inbox table and its index (SQLite's
  `dbstat`) at the end over at the baseline;
- `worker-rss-growth` (ratio): the worker's resident size at the end over at the baseline.

Close to 1 means flat. Time is simulated for the inbox: entries are stamped, and aged by
the retention, by a clock that moves `tick` (1 ms) per message handled, so the retention
window (`retention`, 60 s) holds `retention / tick` messages (60,000) however fast the
machine is, and a run of a million messages spans 1,000 s of it, far past the window. The
retention prunes every `prune_interval` real seconds. Without pruning the inbox would hold
every message: `messages / baseline` (5 ×) by construction.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.report import Report, Result

BENCHMARK = "retention"
INBOX_SIZE = "inbox-size"
INBOX_BYTES = "inbox-bytes"
RSS_GROWTH = "worker-rss-growth"
WORKLOADS = (INBOX_SIZE, RSS_GROWTH)
"""What `--workloads` takes: `inbox-size` reports the rows and the bytes."""
EVENT_TYPE = "MusicianRegisteredEvent"
TIMEOUT = 3600.0
"""Seconds the worker may take before the benchmark gives up on it."""

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Options:
    """How many messages, how long the retention, how the worker runs."""

    messages: int = 1_000_000
    baseline: int = 200_000
    retention: float = 60.0
    """Seconds of simulated time an inbox entry is kept."""
    tick: float = 0.001
    """Simulated seconds per message handled."""
    prune_interval: float = 0.5
    """Real seconds between two rounds of pruning."""
    concurrency: int = 64
    synchronous: str = "NORMAL"
    workloads: tuple[str, ...] = WORKLOADS
    directory: str | None = None


Figure = dict[str, int]
"""Inbox rows, inbox bytes and the worker's resident bytes (`rows`, `bytes`, `rss`)."""


def run(options: Options, progress: Progress | None = None) -> Report:
    """Fill a store, run the worker through it, and report the chosen figures."""
    return report_of(options, *measure(options, progress))


def measure(options: Options, progress: Progress | None = None) -> tuple[Figure, Figure]:
    """The figures at the baseline and at the end of a run."""
    say = progress or (lambda _line: None)
    directory = Path(tempfile.mkdtemp(prefix="mussikon-retention-", dir=options.directory))
    try:
        path = str(directory / "store.db")
        say(f"storing {options.messages:,} events")
        _in_process(_fill, path, options)
        say(f"{options.messages:,} messages through one worker with the inbox and its retention")
        figures = _in_process(_work, path, options)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return figures[str(options.baseline)], figures[str(options.messages)]


def report_of(options: Options, first: Figure, last: Figure) -> Report:
    """The report of a run: ratios of the end's figures over the baseline's, and both."""
    report = Report(BENCHMARK, settings={
        "store": f"sqlite synchronous={options.synchronous}", "transport": "in-process",
        "messages": f"{options.messages:,} (baseline {options.baseline:,})",
        "retention": f"{options.retention:g} s simulated, {options.tick * 1000:g} ms a message",
        "prune interval": f"{options.prune_interval:g} s",
        "concurrency": str(options.concurrency)})
    for mark, figure in (("baseline", first), ("end", last)):
        report.settings[f"at {mark}"] = (f"{figure['rows']:,} rows, {figure['bytes']:,} bytes, "
                                         f"RSS {figure['rss'] / 2**20:.1f} MiB")
    if INBOX_SIZE in options.workloads:
        report.results.append(Result(INBOX_SIZE, "ratio", last["rows"] / first["rows"]))
        report.results.append(Result(INBOX_BYTES, "ratio", last["bytes"] / first["bytes"]))
    if RSS_GROWTH in options.workloads:
        report.results.append(Result(RSS_GROWTH, "ratio", last["rss"] / first["rss"]))
    return report


def _in_process(target: Callable[[str, Options, Queue[Any]], None], path: str,
                options: Options) -> Any:
    """Run `target(path, options, out)` in a fresh (spawned) process; what it put in `out`."""
    context = multiprocessing.get_context("spawn")
    out: Queue[Any] = context.Queue()
    process = context.Process(target=target, args=(path, options, out))
    process.start()
    try:
        result = out.get(timeout=TIMEOUT)
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if isinstance(result, BaseException):
        raise result
    return result


def _fill(path: str, options: Options, out: Queue[Any]) -> None:
    try:
        asyncio.run(_store_events(path, options.messages))
        out.put("filled")
    except Exception as exc:
        out.put(RuntimeError(f"filling the store: {type(exc).__name__}: {exc}"))


async def _store_events(path: str, n: int) -> None:
    from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteEventStore
    from mussikon.domain.events import MusicianRegisteredEvent

    db = await SqliteDatabase(path, "OFF").open()
    store = SqliteEventStore(db)
    try:
        for first in range(0, n, 500):
            events = [MusicianRegisteredEvent(
                musician_id=str(uuid.uuid4()), email=f"ana{i}@example.com", name="Ana",
                genres=("Jazz",), location="Santo Domingo")
                for i in range(first, min(first + 500, n))]
            await store.append_streams([(e.stream_id, [e], 0) for e in events])
    finally:
        await db.close()


def _work(path: str, options: Options, out: Queue[Any]) -> None:
    try:
        out.put(asyncio.run(_worker(path, options)))
    except Exception as exc:
        out.put(RuntimeError(f"the worker: {type(exc).__name__}: {exc}"))


async def _worker(path: str, options: Options) -> dict[str, Figure]:
    from mussikon.adapters.messaging.memory import InProcessTransport
    from mussikon.adapters.store.sqlite import SqliteDatabase, SqliteDocumentStore, SqliteEventStore
    from mussikon.application.inbox import idempotent
    from mussikon.application.retention import InboxRetention
    from mussikon.ports.transport import Envelope, Subscription
    from mussikon.wire import EventCodec

    handled = 0
    start_micros = time.time_ns() // 1000
    tick_micros = round(options.tick * 1_000_000)

    def simulated_micros() -> int:
        return start_micros + handled * tick_micros

    db = await SqliteDatabase(path, options.synchronous).open()
    store, documents = SqliteEventStore(db), SqliteDocumentStore(db, now_micros=simulated_micros)
    transport = InProcessTransport(store, documents, EventCodec(),
                                   concurrency=options.concurrency)
    retention = InboxRetention(documents, timedelta(seconds=options.retention),
                               interval=options.prune_interval)
    marks = {options.baseline, options.messages}
    figures: dict[str, Figure] = {}
    done = asyncio.Event()

    def inbox_size(conn: Any) -> Figure:
        rows = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        size = conn.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat"
                            " WHERE name IN ('inbox', 'inbox_by_time')").fetchone()[0]
        return {"rows": int(rows), "bytes": int(size)}

    async def handle(envelope: Envelope) -> None:
        nonlocal handled
        handled += 1
        if handled in marks:
            count = handled
            gc.collect()
            figures[str(count)] = {**await db.run(inbox_size), "rss": _resident_bytes()}
            if count == options.messages:
                done.set()

    subscription = idempotent(Subscription("bench", frozenset({EVENT_TYPE}), handle), documents)
    await retention.start()
    await transport.start([subscription])
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        await transport.stop()
        await retention.stop()
        await db.close()
    return figures


def _resident_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
