"""The figures the dashboard charts, sampled in the serving process: two rings of samples
(every few seconds over the last minutes, every minute over the last hours) of the counters
and gauges in `mussikon.metrics`, which this sampling also keeps current (the lags, from the
store's head and the readers' checkpoints)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mussikon import metrics
from mussikon.application.sagas.state import SagaStatus
from mussikon.bootstrap import App

log = logging.getLogger("mussikon.dashboard")

LAG_LIMIT = 100_000
"""Events counted at most behind a reader (more is shown as that many)."""

DEAD_LETTERS_COUNTED = 10_000
"""Dead letters counted at most for the gauge."""

DEAD_LETTERS_EVERY = 10.0
"""Seconds between two counts of the dead letters (a read of them all, up to the limit)."""

SAGAS_COUNTED = 10_000
"""Saga instances counted at most of one kind at one status, for the gauge."""

SAGAS_EVERY = 10.0
"""Seconds between two counts of the saga instances (a read of the listing, up to the
limit per kind and status)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """The figures at one moment: counters (totals since the process started) and lags."""

    at: float
    handled: float
    failed: float
    dead_lettered: float
    head: int
    lags: dict[str, int]
    """The largest lag of each kind of reader (projection, relay, subscription)."""


@dataclass
class Ring:
    """The last samples taken every `every` seconds."""

    every: float
    size: int
    samples: deque[Sample] = field(init=False)

    def __post_init__(self) -> None:
        self.samples = deque(maxlen=self.size)

    def due(self, now: float) -> bool:
        return not self.samples or now - self.samples[-1].at >= self.every - 0.01

    def series(self) -> dict[str, Any]:
        """The ring as the charts draw it: per interval, messages per second handled,
        failed and dead-lettered, and the lags at its end."""
        points = []
        pairs = zip(list(self.samples), list(self.samples)[1:], strict=False)
        for before, after in pairs:
            seconds = max(after.at - before.at, 1e-6)
            points.append({
                "t": after.at,
                "handled": round((after.handled - before.handled) / seconds, 2),
                "failed": round((after.failed - before.failed) / seconds, 2),
                "dead_lettered": round((after.dead_lettered - before.dead_lettered) / seconds,
                                       2),
                **{f"{kind}_lag": lag for kind, lag in after.lags.items()}})
        return {"every": self.every, "span": self.every * self.size, "points": points}


class Sampler:
    """Samples the figures every `every` seconds into the rings, in the background."""

    def __init__(self, every: float = 2.0) -> None:
        self.minutes = Ring(every, int(15 * 60 / every))
        self.hours = Ring(60.0, 24 * 60)
        self.every = every
        self.readers: dict[str, int] = {}
        """The lag of each reader at the last sample, by checkpoint name."""
        self._task: asyncio.Task[None] | None = None

    def start(self, app: App) -> None:
        self._task = asyncio.create_task(self._run(app), name="dashboard sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, app: App) -> None:
        counted, dead_lettered, sagas_counted = 0.0, -1.0, 0.0
        while True:
            try:
                sample = await self.sample(app)
                if time.time() - sagas_counted >= SAGAS_EVERY:
                    sagas_counted = time.time()
                    await self.count_sagas(app)
                # Counted again when this process dead-lettered more, else now and then (a
                # worker elsewhere, an operator's command).
                if time.time() - counted >= DEAD_LETTERS_EVERY \
                        or sample.dead_lettered != dead_lettered:
                    counted, dead_lettered = time.time(), sample.dead_lettered
                    await self.count_dead_letters(app)
            except Exception as exc:  # a store not answering: the next sample tries again
                log.warning("dashboard: could not sample the figures: %s", exc)
            await asyncio.sleep(self.every)

    async def sample(self, app: App) -> Sample:
        """Read the lags from the store, set the gauges, keep a sample where it is due."""
        lags: dict[str, int] = {"projection": 0, "relay": 0, "subscription": 0}
        head = 0
        if app.feed is None or app.feed.global_order:
            head = await app.store.head_position()
            metrics.HEAD.set(head)
            readers = {}
            for name, position in sorted((await app.documents.checkpoints()).items()):
                kind = metrics.reader_kind(name)
                if kind == "other":
                    continue
                lag = await app.store.count_after(position, LAG_LIMIT) if position < head else 0
                readers[name] = lag
                metrics.LAG.labels(name, kind).set(lag)
                if kind == "relay":
                    metrics.OUTBOX_AGE.labels(name).set(
                        await self.outbox_age(app, position) if lag else 0.0)
                lags[kind] = max(lags[kind], lag)
            self.readers = readers
        sample = Sample(time.time(), metrics.total(metrics.HANDLED),
                        metrics.total(metrics.FAILED), metrics.total(metrics.DEAD_LETTERED),
                        head, lags)
        for ring in (self.minutes, self.hours):
            if ring.due(sample.at):
                ring.samples.append(sample)
        return sample

    @staticmethod
    async def outbox_age(app: App, position: int) -> float:
        """Seconds since the first event after a relay's checkpoint `position` was recorded."""
        first = await app.store.read_all(position + 1, limit=1)
        if not first:
            return 0.0
        return max(0.0, (datetime.now(UTC) - first[0].recorded_at).total_seconds())

    def totals(self) -> dict[str, float]:
        """The figures now: the store's head, what this process handled, failed and
        dead-lettered since it started, and the dead letters kept."""
        gauge = metrics.REGISTRY.get_sample_value
        return {"head": gauge("mussikon_store_head_position") or 0,
                "handled": metrics.total(metrics.HANDLED),
                "failed": metrics.total(metrics.FAILED),
                "dead_lettered": metrics.total(metrics.DEAD_LETTERED),
                "dead_letters": gauge("mussikon_dead_letters") or 0}

    async def count_sagas(self, app: App) -> None:
        """Count the saga instances of each kind at each status into the gauge."""
        if app.sagas is None:
            return
        for kind in sorted(app.sagas.engines):
            for status in SagaStatus:
                count = await app.sagas.journal.count(status, kind, SAGAS_COUNTED)
                metrics.SAGAS.labels(kind, status.value).set(count)

    async def count_dead_letters(self, app: App) -> int:
        """Count the dead letters kept (up to DEAD_LETTERS_COUNTED) into the gauge."""
        count = len(await app.transport.dead_letters(DEAD_LETTERS_COUNTED))
        metrics.DEAD_LETTERS.set(count)
        return count
