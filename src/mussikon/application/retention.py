"""Inbox retention: a handled message id is forgotten once its message can no longer come again.

An inbox entry keeps a message id so that a second delivery of the message changes nothing.
Every second delivery comes within a bounded time of the first: an in-process retry
(`MUSSIKON_BUS_RETRY_DELAYS`), the broker's delayed retries (`MUSSIKON_RABBITMQ_RETRY_DELAYS`),
an event from another service waiting for what it presupposes (`MUSSIKON_PREREQUISITE_WAIT`),
a message handed back by a stopping worker, the relay publishing a batch again after a crash.
An entry older than the retention (`MUSSIKON_INBOX_RETENTION`, which must outlast all of
those) guards against nothing more and is removed, so the inbox holds about one retention's
worth of messages however long the service runs.

The same table holds the claims that make other writes happen once: notification keys and
payment idempotency keys (whose records, kept for good, still answer a repeat: the claim
only settles a race between two at the same moment) and saga versions (a claim matters
while a writer may still hold the version before it: a handler's few seconds).

One process at a time prunes, holding a lease; the others stand by. Removing old entries is
idempotent, so a holder that lost its lease without knowing only repeats what the new
holder does.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import StoreError

LEASE = "inbox-retention"
BATCH = 1000
"""Entries removed per statement: short transactions that never hold the writers up long."""
LONGEST_INTERVAL = 60.0
"""Seconds between two rounds of pruning, at most."""


def prune_interval(retention: timedelta) -> float:
    """Seconds between two rounds: half the retention, at most a minute, so the inbox never
    holds entries much older than the retention."""
    return min(LONGEST_INTERVAL, retention.total_seconds() / 2)


class InboxRetention:
    """Removes inbox entries older than `retention`: on demand (`prune`), or every
    `interval` seconds in the background between `start` and `stop`, under a lease."""

    def __init__(self, documents: DocumentStore, retention: timedelta, *,
                 interval: float | None = None, batch: int = BATCH,
                 lease_seconds: float = 10.0) -> None:
        self.documents = documents
        self.retention = retention
        self.batch = batch
        self.interval = prune_interval(retention) if interval is None else interval
        self.removed = 0
        """Entries removed by this object so far."""
        # Kept from one round to the next: a holder that stops is replaced after two rounds.
        self._lease = Lease(documents, LEASE, seconds=max(lease_seconds, 2 * self.interval))
        self._loop = self._new_loop()
        self._task: asyncio.Task[None] | None = None

    def _new_loop(self) -> PollLoop:
        return PollLoop("inbox retention", interval=self.interval, max_interval=self.interval,
                        expected_errors=(StoreError,))

    async def prune(self) -> int:
        """Remove every entry older than the retention, a batch at a time; return how many."""
        removed = 0
        while True:
            batch = await self.documents.prune_inbox(self.retention, self.batch)
            removed += batch
            self.removed += batch
            if batch < self.batch:
                return removed

    async def _step(self) -> bool:
        """One batch, if this process holds the lease; True if there may be more now."""
        if not await self._lease.hold():
            return False
        batch = await self.documents.prune_inbox(self.retention, self.batch)
        self.removed += batch
        return batch == self.batch

    async def start(self) -> None:
        """Prune in the background until `stop`: at once, then every `interval` seconds."""
        if self._loop.stopping:
            self._loop = self._new_loop()
        self._task = asyncio.create_task(self._loop.run(self._step), name="inbox-retention")

    async def stop(self) -> None:
        """Stop (a batch being removed finishes first) and give the lease up."""
        self._loop.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._lease.release()
