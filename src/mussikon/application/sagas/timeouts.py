"""Durable timeouts: scheduled messages kept as documents, fired by a loop when the Clock says.

A timeout document is written in the same transaction as the saga state that asked for it.
It is deleted in the same transaction as the state that ended its step unfired, or, once
it fired, after its handler finished everything it led to. So a restart finds exactly
the timeouts still pending or still being handled. Firing is at least once: a timeout
whose handling failed or was cut off by a crash stays and fires again, and the saga
engine recognises one it has already handled and resumes the work that followed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop, wait_until
from mussikon.ports.clock import Clock
from mussikon.ports.documents import Document, DocumentStore

log = logging.getLogger("mussikon.sagas.timeouts")

TIMEOUTS = "saga-timeouts-by-due"
"""The pending timeouts, keyed `<due time>/<id>` (`ScheduledTimeout.key`): in due order, so
the timeouts due by a time are one range of keys, read without the others."""
LEASE = "saga-timeouts"
"""The lease of the scheduler that fires."""

BATCH = 100
"""Timeouts fired (and read) by one round of the loop, at most; a full batch makes the next
round start at once."""


def due_key(due_at: datetime, timeout_id: str) -> str:
    """The key of a timeout in TIMEOUTS. Times are written by `isoformat`, as in the
    document, in UTC (`ScheduledTimeout` puts them there): so written, their order as text is
    their order in time (a time without microseconds, `…:05+00:00`, sorts before `…:05.1…`,
    as '+' comes before '.')."""
    return f"{due_at.isoformat()}/{timeout_id}"


def _due_by(now: datetime) -> str:
    """The first key after those of every timeout due at `now` or before ('0' follows '/')."""
    return f"{now.astimezone(UTC).isoformat()}0"


@dataclass(frozen=True, slots=True)
class ScheduledTimeout:
    """Timeout `name` of step `step` of saga instance (`kind`, `instance`), due at `due_at`."""

    id: str
    kind: str
    instance: str
    name: str
    step: str
    due_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "due_at", self.due_at.astimezone(UTC))

    @property
    def key(self) -> str:
        """Its key in the timeouts collection."""
        return due_key(self.due_at, self.id)

    def to_document(self) -> Document:
        """As kept in the timeouts collection."""
        return {"id": self.id, "kind": self.kind, "instance": self.instance, "name": self.name,
                "step": self.step, "due_at": self.due_at.isoformat()}

    @classmethod
    def from_document(cls, doc: Document) -> ScheduledTimeout:
        """Back from the timeouts collection."""
        return cls(doc["id"], doc["kind"], doc["instance"], doc["name"], doc["step"],
                   datetime.fromisoformat(doc["due_at"]))


Fire = Callable[[ScheduledTimeout], Awaitable[None]]

_MAX_BACKOFF = timedelta(minutes=5)

LEASE_SECONDS = 30.0
"""How long a scheduler that stopped renewing its lease keeps the others waiting."""


class TimeoutScheduler:
    """Fires due timeouts through `fire`, in due order; retries a failing one with backoff.

    The loop polls (every `poll_interval` at first, backing off to `poll_max_interval`
    while nothing is due) and is woken by `wake`. `fire_due` fires what is due now, for
    tests that move a fake clock and for the loop itself.
    """

    def __init__(self, documents: DocumentStore, clock: Clock, fire: Fire, *,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0) -> None:
        self.documents, self.clock, self.fire = documents, clock, fire
        self.poll_interval, self.poll_max_interval = poll_interval, poll_max_interval
        self._failures: dict[str, tuple[int, datetime]] = {}
        self._firing = asyncio.Lock()
        self._poll = self._new_poll_loop()
        self._task: asyncio.Task[None] | None = None
        self.owner = f"timeouts-{uuid.uuid4()}"
        self._lease = Lease(documents, LEASE, seconds=LEASE_SECONDS, owner=self.owner)

    def _new_poll_loop(self) -> PollLoop:
        return PollLoop("the timeout scheduler", interval=self.poll_interval,
                        max_interval=self.poll_max_interval)

    async def pending(self, limit: int = 1000) -> list[ScheduledTimeout]:
        """The first `limit` timeouts not fired yet, soonest first."""
        return [ScheduledTimeout.from_document(doc)
                for _, doc in await self.documents.scan_page(TIMEOUTS, limit=limit)]

    def _ready_at(self, timeout: ScheduledTimeout) -> datetime:
        """When it may fire: when due, or when the backoff after its last failure ends."""
        return max(timeout.due_at, self._failures.get(timeout.id, (0, timeout.due_at))[1])

    async def ready(self, limit: int | None = None) -> list[ScheduledTimeout]:
        """Up to `limit` (`BATCH`) timeouts due now and not waiting out a backoff after a
        failure, soonest first. Reads the timeouts due now only, a page at a time, passing
        over those waiting out a backoff (as many as failed here, at most)."""
        limit = BATCH if limit is None else limit
        now = self.clock.now()
        due_by = _due_by(now)
        ready: list[ScheduledTimeout] = []
        seen: set[str] = set()
        after = ""
        while len(ready) < limit:
            rows = await self.documents.scan_page(TIMEOUTS, after=after, limit=limit,
                                                  before=due_by)
            for _, doc in rows:
                timeout = ScheduledTimeout.from_document(doc)
                seen.add(timeout.id)
                if self._ready_at(timeout) <= now:
                    ready.append(timeout)
            if len(rows) < limit:
                # Every timeout due was read: a failure of one not among them is over.
                for gone in self._failures.keys() - seen:
                    del self._failures[gone]
                break
            after = rows[-1][0]
        return ready[:limit]

    async def _next_ready_at(self) -> datetime | None:
        """When the soonest timeout not ready now will be (None: there is none): the first
        one due after now, or the end of a backoff."""
        later = await self.documents.scan_page(TIMEOUTS, after=_due_by(self.clock.now()),
                                               limit=1)
        times = [ScheduledTimeout.from_document(doc).due_at for _, doc in later]
        times += [until for _, until in self._failures.values()]
        return min(times, default=None)

    async def fire_due(self) -> int:
        """Fire every ready timeout once, `BATCH` at a time (read as they are fired, so what
        is held is one batch); return how many were handled without error.

        Among processes sharing the store, the one holding the scheduler lease fires; the
        others stand by and take over when a holder stops renewing it. The lease is kept
        (renewed when due) before each timeout: a holder that lost it while firing a long
        list stops there. The scheduler writes nothing itself: a timeout is handled by the
        saga engine, whose optimistic commits decide each step once even if a holder that
        lost the lease without knowing fires it at the same time as the new one.
        """
        async with self._firing:
            if not await self._lease.hold():
                return 0
            fired = 0
            while True:
                # A timeout that failed waits out its backoff: the next batch passes it over.
                batch = await self.ready()
                for timeout in batch:
                    if not await self._lease.hold():
                        return fired
                    fired += await self._fire_one(timeout)
                if len(batch) < BATCH:
                    return fired

    async def _fire_one(self, timeout: ScheduledTimeout) -> int:
        """Fire one timeout: 1 if it was handled, 0 if it failed (it is retried later)."""
        try:
            await self.fire(timeout)
        except Exception as exc:
            attempts = self._failures.get(timeout.id, (0, self.clock.now()))[0] + 1
            backoff = min(timedelta(seconds=self.poll_interval * 2 ** attempts), _MAX_BACKOFF)
            self._failures[timeout.id] = (attempts, self.clock.now() + backoff)
            log.warning("timeout %s of %s-%s failed (attempt %d), retrying in %s: %s",
                        timeout.name, timeout.kind, timeout.instance, attempts, backoff, exc)
            return 0
        self._failures.pop(timeout.id, None)
        return 1

    async def start(self) -> None:
        """Fire due timeouts in the background until `stop`."""
        if self._poll.stopping:
            self._poll = self._new_poll_loop()
        self._task = asyncio.create_task(self._poll.run(self._fire_step), name="saga-timeouts")

    def wake(self) -> None:
        """Look for due timeouts now (the clock moved, or a timeout was scheduled)."""
        self._poll.wake()

    async def _fire_step(self) -> bool:
        if await self.fire_due():
            return True
        soonest = await self._next_ready_at()
        if soonest is not None:
            # Wait no longer than until the next one is ready (by this clock's reckoning).
            self._poll.look_again_within((soonest - self.clock.now()).total_seconds())
        return False

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no timeout is ready to fire (those due later do not count)."""
        async def idle() -> bool:
            return not self._firing.locked() and not await self.ready()

        await wait_until(idle, timeout, wake=self.wake,
                         catch_up=self.fire_due if self._task is None else None)

    async def stop(self) -> None:
        """Stop the loop, letting a timeout being fired finish."""
        self._poll.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._lease.release()
