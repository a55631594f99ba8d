"""Runs projections as catch-up readers of the store's feed (`ports.feed`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mussikon.application.projections import Projection, View
from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop, wait_until
from mussikon.followers.undecodable import skip_undecodable
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore, RecordedEvent, UndecodableEventError
from mussikon.ports.feed import START, Checkpoint, Feed

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
    """Keeps each projection up to date: read a batch, apply it, commit it with the checkpoint.

    `lease_seconds`: how long a runner that stopped renewing its lease on a projection keeps
    the others out. `feed`: what it reads (by default the store's global order).
    """

    def __init__(self, store: EventStore, documents: DocumentStore,
                 projections: Sequence[Projection], *, batch_size: int = 500,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 lease_seconds: float = LEASE_SECONDS, feed: Feed | None = None) -> None:
        self.store, self.documents = store, documents
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.checkpoints: dict[str, Checkpoint] = {}
        """Where each projection stands, as this runner last saw it."""
        self.positions: dict[str, int] = {}
        """The same, as global positions (0 on a store without a global order)."""
        self._behind: dict[str, Checkpoint] = {}
        """A checkpoint each projection was found behind the feed at: it still is there."""
        self.owner = f"projections-{uuid.uuid4()}"
        self._leases = {name: Lease(documents, checkpoint_name(name), seconds=lease_seconds,
                                    owner=self.owner) for name in self.projections}
        self._loops = {name: PollLoop(f"projection {name}", interval=poll_interval,
                                      max_interval=poll_max_interval)
                       for name in self.projections}
        self._tasks: list[asyncio.Task[None]] = []

    async def catch_up(self, name: str,
                       progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every stored event the projection has not seen; return its new position
        (`Feed.position`: 0 on a store without a global order).
        `progress(events applied, position reached)` is called after each batch.

        One runner at a time applies a projection, among every process sharing the store
        (a lease): two that applied the same events from the same checkpoint would count
        them twice. A runner without the lease only learns how far the holder got. A holder
        that stalls longer than the lease (a pause, a slow batch) loses it to another runner
        or to a rebuild while it still applies a batch: so each batch commits only if the
        checkpoint still stands where the batch began (a compare-and-set) and the lease is
        still this runner's, at the generation it held when the batch began (the fence: a
        rebuild that reset the checkpoint may have brought it back to exactly where the
        stale batch began, over documents the batch never saw). A refused batch writes
        nothing; the runner goes on only once it holds the lease again, from where the
        checkpoint stands then.
        """
        projection, lease = self.projections[name], self._leases[name]
        reader = checkpoint_name(name)
        leased = await lease.hold()
        # Read after taking the lease: a holder that let go meanwhile may have moved it on.
        checkpoint = await self.feed.saved(reader)
        applied = 0
        batch: Sequence[RecordedEvent]
        while leased and (fence := lease.fence) is not None:
            try:
                page = await self.feed.read(checkpoint, self.batch_size)
            except UndecodableEventError as error:
                batch, last = (), error.checkpoint
                moved = await skip_undecodable(self.documents, reader, error, feed=self.feed,
                                               expected=checkpoint, fence=fence)
            else:
                batch = page.events
                if not batch:
                    break
                view = View(self.documents)
                for record in batch:
                    if record.event.event_type in projection.event_types:
                        await projection.apply(record.event, view)
                last = page.checkpoint
                moved = await self.feed.save(reader, last, view.changes, expected=checkpoint,
                                             fence=fence)
            if moved:
                checkpoint, applied = last, applied + len(batch)
                # False once held too long without renewing: another runner took it over
                leased = await lease.hold()
            else:
                # Another runner took the lease over or moved the checkpoint since the batch
                # began (a rebuild reset it): nothing of the batch was written.
                leased = await lease.hold(recheck=True)
                checkpoint = await self.feed.saved(reader)
            position = self._reached(name, checkpoint)
            if moved and batch and progress is not None:
                progress(applied, position)
        return self._reached(name, checkpoint)

    def _reached(self, name: str, checkpoint: Checkpoint) -> int:
        """Note where projection `name` stands; its position."""
        self.checkpoints[name] = checkpoint
        position = self.positions[name] = self.feed.position(checkpoint)
        return position

    async def start(self) -> None:
        """Follow live writes in the background."""
        for name, loop in self._loops.items():
            self._tasks.append(asyncio.create_task(loop.run(self._follow_step(name)),
                                                   name=f"projection:{name}"))

    def _follow_step(self, name: str) -> Callable[[], Awaitable[bool]]:
        async def step() -> bool:
            before = self.checkpoints.get(name)
            await self.catch_up(name)
            return self.checkpoints[name] != before
        return step

    def wake(self) -> None:
        """New events were appended."""
        for loop in self._loops.values():
            loop.wake()

    async def wait_for(self, name: str, position: int, timeout: float = 10.0) -> None:
        """Wait until projection `name` has applied everything up to `position`."""
        async def reached() -> bool:
            return self.positions.get(name, 0) >= position

        async def catch_up() -> None:
            await self.catch_up(name)

        await wait_until(reached, timeout, wake=self._loops[name].wake, every=0.005,
                         catch_up=None if self._tasks else catch_up)

    async def caught_up(self, name: str) -> bool:
        """True if projection `name` has applied every event readable now (`Feed.caught_up`,
        asked only when its checkpoint moved since it was last found behind)."""
        checkpoint = self.checkpoints.get(name, START)
        if self._behind.get(name) == checkpoint:
            return False
        if await self.feed.caught_up(checkpoint):
            return True
        self._behind[name] = checkpoint
        return False

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every projection has caught up with the store's feed."""
        for name in self.projections:
            async def reached(name: str = name) -> bool:
                return await self.caught_up(name)

            async def catch_up(name: str = name) -> None:
                await self.catch_up(name)

            await wait_until(reached, timeout, wake=self._loops[name].wake, every=0.005,
                             catch_up=None if self._tasks else catch_up)

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
        projection, lease = self.projections[name], self._leases[name]
        if not await lease.hold():
            raise ProjectionBusy(f"projection {name!r} is being applied by another process (a"
                                 " running worker holds its lease): stop the workers, then"
                                 " rebuild it")
        try:
            await self.feed.reset(checkpoint_name(name), list(projection.collections))
            self._reached(name, START)
            position = await self.catch_up(name, progress)
            if not await lease.hold():
                raise ProjectionBusy(f"projection {name!r} was rebuilt up to position"
                                     f" {position}, then another process took its lease over"
                                     " and goes on from there")
            return position
        finally:
            await lease.release()

    async def stop(self) -> None:
        """Stop following (a batch being applied finishes first)."""
        for loop in self._loops.values():
            loop.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for lease in self._leases.values():
            await lease.release()
