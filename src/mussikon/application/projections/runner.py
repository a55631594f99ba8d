"""Runs projections as catch-up subscriptions of the store's global order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mussikon.application.projections import Projection, View
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore, UndecodableEventError

log = logging.getLogger("mussikon.projections")


LEASE_SECONDS = 10.0
"""How long a runner that stopped renewing its lease on a projection keeps the others out."""

LAG_COUNT_LIMIT = 1_000_000
"""How many events behind a status counts at most (the count costs time in proportion)."""


def checkpoint_name(projection: str) -> str:
    """The checkpoint a projection keeps in the document store."""
    return f"projection:{projection}"


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection is: its checkpoint, the store's head, and its lag: how many events
    of the global order it has not applied yet (`lag_capped`: that many or more)."""

    name: str
    position: int
    head: int
    lag: int
    lag_capped: bool = False


class ProjectionBusy(Exception):
    """Another runner (a worker, in another process) holds the projection's lease."""


class ProjectionRunner:
    """Keeps each projection up to date: read a batch, apply it, commit it with the checkpoint."""

    def __init__(self, store: EventStore, documents: DocumentStore,
                 projections: Sequence[Projection], *, batch_size: int = 500,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0) -> None:
        self.store, self.documents = store, documents
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.poll_interval, self.poll_max_interval = poll_interval, poll_max_interval
        self.positions: dict[str, int] = {}
        self._woken = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.owner = f"projections-{uuid.uuid4()}"

    async def catch_up(self, name: str,
                       progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every stored event the projection has not seen; return its new position.
        `progress(events read, position reached)` is called after each batch.

        One runner at a time applies a projection, among every process sharing the store
        (a lease): two that applied the same events from the same checkpoint would count
        them twice. A runner without the lease only learns how far the holder got.
        """
        projection = self.projections[name]
        leased = await self.documents.try_lease(checkpoint_name(name), self.owner,
                                                LEASE_SECONDS)
        # Read after taking the lease: a holder that let go meanwhile may have moved it on.
        position = await self.documents.checkpoint(checkpoint_name(name))
        if not leased:
            self.positions[name] = position
            return position
        read = 0
        while True:
            try:
                batch = await self.store.read_all(position + 1, self.batch_size)
            except UndecodableEventError as exc:
                # A row no code can read is skipped, loudly: the projection must not stall.
                log.error("projection %s skips position %d: %s", name, exc.position, exc.reason)
                await self.documents.commit(View(self.documents).changes,
                                            checkpoint=(checkpoint_name(name), exc.position))
                position = exc.position
                continue
            if not batch:
                break
            view = View(self.documents)
            for record in batch:
                if record.event.event_type in projection.event_types:
                    await projection.apply(record.event, view)
            last = batch[-1].position
            read += len(batch)
            if not await self.documents.commit(view.changes,
                                               checkpoint=(checkpoint_name(name), last)):
                # Another runner applied this batch first; carry on from where it got to.
                last = await self.documents.checkpoint(checkpoint_name(name))
            position = last
            self.positions[name] = position
            if progress is not None:
                progress(read, position)
            if not await self.documents.try_lease(checkpoint_name(name), self.owner,
                                                  LEASE_SECONDS):
                break  # held too long without renewing: another runner has taken over
        self.positions[name] = position
        return position

    async def start(self) -> None:
        """Follow live writes in the background."""
        for name in self.projections:
            self._tasks.append(asyncio.create_task(self._follow(name), name=f"projection:{name}"))

    async def _follow(self, name: str) -> None:
        delay = self.poll_interval
        while not self._stopping:
            before = self.positions.get(name, -1)
            try:
                after = await self.catch_up(name)
            except Exception:
                log.exception("projection %s failed; retrying", name)
                after = before
            if after != before:
                delay = self.poll_interval
                continue
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), delay)
            delay = min(delay * 2, self.poll_max_interval)

    def wake(self) -> None:
        """New events were appended."""
        self._woken.set()

    async def wait_for(self, name: str, position: int, timeout: float = 10.0) -> None:
        """Wait until projection `name` has applied everything up to `position`."""
        async def reached() -> None:
            while self.positions.get(name, 0) < position:
                if not self._tasks:
                    await self.catch_up(name)
                    continue
                self.wake()
                await asyncio.sleep(0.005)

        await asyncio.wait_for(reached(), timeout)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every projection has caught up with the store's head."""
        head = await self.store.head_position()
        for name in self.projections:
            await self.wait_for(name, head, timeout)

    async def status(self) -> list[ProjectionStatus]:
        """Position and lag (in events, counted up to LAG_COUNT_LIMIT) of each projection."""
        head = await self.store.head_position()
        checkpoints = await self.documents.checkpoints()
        out = []
        for n in self.projections:
            position = checkpoints.get(checkpoint_name(n), 0)
            lag = await self.store.count_after(position, LAG_COUNT_LIMIT)
            out.append(ProjectionStatus(n, position, head, lag, lag >= LAG_COUNT_LIMIT))
        return out

    async def rebuild(self, name: str,
                      progress: Callable[[int, int], None] | None = None) -> int:
        """Drop the projection's documents and apply the whole global order again, holding
        its lease from before the reset to the end; return the position reached.

        Raises ProjectionBusy, changing nothing, if another runner holds the lease (a
        worker would go on committing over the reset), or if one took it over midway.
        """
        projection = self.projections[name]
        lease = checkpoint_name(name)
        if not await self.documents.try_lease(lease, self.owner, LEASE_SECONDS):
            raise ProjectionBusy(f"projection {name!r} is being applied by another process (a"
                                 " running worker holds its lease): stop the workers, then"
                                 " rebuild it")
        try:
            await self.documents.reset_checkpoint(lease, list(projection.collections))
            self.positions[name] = 0
            position = await self.catch_up(name, progress)
            if not await self.documents.try_lease(lease, self.owner, LEASE_SECONDS):
                raise ProjectionBusy(f"projection {name!r} was rebuilt up to position"
                                     f" {position}, then another process took its lease over"
                                     " and goes on from there")
            return position
        finally:
            await self.documents.release_lease(lease, self.owner)

    async def stop(self) -> None:
        """Stop following (a batch being applied finishes first)."""
        self._stopping = True
        self.wake()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for name in self.projections:
            with contextlib.suppress(Exception):  # a store already closed holds no lease
                await self.documents.release_lease(checkpoint_name(name), self.owner)
