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
from datetime import datetime, timedelta

from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop, wait_until
from mussikon.ports.clock import Clock
from mussikon.ports.documents import Document, DocumentStore

log = logging.getLogger("mussikon.sagas.timeouts")

TIMEOUTS = "saga-timeouts"


@dataclass(frozen=True, slots=True)
class ScheduledTimeout:
    """Timeout `name` of step `step` of saga instance (`kind`, `instance`), due at `due_at`."""

    id: str
    kind: str
    instance: str
    name: str
    step: str
    due_at: datetime

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
        self._lease = Lease(documents, TIMEOUTS, seconds=LEASE_SECONDS, owner=self.owner)

    def _new_poll_loop(self) -> PollLoop:
        return PollLoop("the timeout scheduler", interval=self.poll_interval,
                        max_interval=self.poll_max_interval)

    async def pending(self) -> list[ScheduledTimeout]:
        """Every timeout not fired yet, soonest first."""
        timeouts = [ScheduledTimeout.from_document(doc)
                    for _, doc in await self.documents.scan(TIMEOUTS)]
        return sorted(timeouts, key=lambda t: (t.due_at, t.id))

    def _ready_at(self, timeout: ScheduledTimeout) -> datetime:
        """When it may fire: when due, or when the backoff after its last failure ends."""
        return max(timeout.due_at, self._failures.get(timeout.id, (0, timeout.due_at))[1])

    async def ready(self) -> list[ScheduledTimeout]:
        """The timeouts due now and not waiting out a backoff after a failure."""
        now = self.clock.now()
        return [t for t in await self.pending() if self._ready_at(t) <= now]

    async def fire_due(self) -> int:
        """Fire every ready timeout once; return how many were handled without error.

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
            for timeout in await self.ready():
                if not await self._lease.hold():
                    break
                try:
                    await self.fire(timeout)
                except Exception as exc:
                    attempts = self._failures.get(timeout.id, (0, self.clock.now()))[0] + 1
                    backoff = min(timedelta(seconds=self.poll_interval * 2 ** attempts),
                                  _MAX_BACKOFF)
                    self._failures[timeout.id] = (attempts, self.clock.now() + backoff)
                    log.warning("timeout %s of %s-%s failed (attempt %d), retrying in %s: %s",
                                timeout.name, timeout.kind, timeout.instance, attempts,
                                backoff, exc)
                    continue
                self._failures.pop(timeout.id, None)
                fired += 1
            return fired

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
        upcoming = await self.pending()
        if upcoming:
            # Wait no longer than until the next one is ready (by this clock's reckoning).
            until = min(self._ready_at(t) for t in upcoming) - self.clock.now()
            self._poll.look_again_within(until.total_seconds())
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
