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
from mussikon.followers.undecodable import record_skipped, skip_undecodable
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


@dataclass(frozen=True, slots=True)
class PartStatus:
    """Where a projection is in one part of a feed without a global order (a Cosmos DB feed
    range), named by its checkpoint there: caught up (nothing readable after its checkpoint)
    or behind. How far behind, the change feed cannot tell."""

    name: str
    checkpoint: str
    caught_up: bool


class ProjectionBusy(Exception):
    """Another runner (a worker, in another process) holds the projection's lease."""


class ProjectionRunner:
    """Keeps each projection up to date: read a batch, apply it, commit it with the checkpoint.

    `lease_seconds`: how long a runner that stopped renewing its lease on a projection keeps
    the others out. `feed`: what it reads (by default the store's global order); each part
    of it (`Feed.parts`: one on a store with a global order) is applied on its own, with a
    checkpoint and a lease per (projection, part), so that runners in several processes
    share the parts.
    """

    def __init__(self, store: EventStore, documents: DocumentStore,
                 projections: Sequence[Projection], *, batch_size: int = 500,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0,
                 lease_seconds: float = LEASE_SECONDS, feed: Feed | None = None) -> None:
        self.store, self.documents = store, documents
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.checkpoints: dict[str, Checkpoint] = {}
        """Where each reader (a projection in a part of the feed) stands, as this runner last
        saw it, by the reader's name (`Feed.name`)."""
        self.positions: dict[str, int] = {}
        """Where each projection stands as a global position (0 on a store without one)."""
        self._behind: dict[str, Checkpoint] = {}
        """A checkpoint each reader was found behind the feed at: it still is there."""
        self.owner = f"projections-{uuid.uuid4()}"
        self._leases: dict[str, Lease] = {}
        self._parts: Sequence[Feed] | None = None
        self._loops = {name: PollLoop(f"projection {name}", interval=poll_interval,
                                      max_interval=poll_max_interval)
                       for name in self.projections}
        self._tasks: list[asyncio.Task[None]] = []

    async def parts(self) -> Sequence[Feed]:
        """The parts of the feed (asked of it once)."""
        if self._parts is None:
            self._parts = await self.feed.parts()
        return self._parts

    def _lease(self, reader: str) -> Lease:
        lease = self._leases.get(reader)
        if lease is None:
            lease = self._leases[reader] = Lease(self.documents, reader,
                                                 seconds=self.lease_seconds, owner=self.owner)
        return lease

    async def catch_up(self, name: str,
                       progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every stored event the projection has not seen, in each part of the feed;
        return its new position (`Feed.position`: 0 on a store without a global order).
        `progress(events applied, position reached)` is called after each batch.

        One runner at a time applies a projection in a part, among every process sharing the
        store (a lease): two that applied the same events from the same checkpoint would
        count them twice. A runner without the lease only learns how far the holder got. A
        holder that stalls longer than the lease (a pause, a slow batch) loses it to another
        runner or to a rebuild while it still applies a batch: so each batch commits only if
        the checkpoint still stands where the batch began (a compare-and-set) and the lease
        is still this runner's, at the generation it held when the batch began (the fence: a
        rebuild that reset the checkpoint may have brought it back to exactly where the
        stale batch began, over documents the batch never saw). A refused batch writes
        nothing; the runner goes on only once it holds the lease again, from where the
        checkpoint stands then.
        """
        applied = [0]
        position = 0
        for part in await self.parts():
            position = await self._catch_up_part(name, part, applied, progress)
        return position

    async def _catch_up_part(self, name: str, part: Feed, applied: list[int],
                             progress: Callable[[int, int], None] | None) -> int:
        projection = self.projections[name]
        reader = part.name(checkpoint_name(name))
        lease = self._lease(reader)
        leased = await lease.hold()
        # Read after taking the lease: a holder that let go meanwhile may have moved it on.
        checkpoint = await part.saved(reader)
        batch: Sequence[RecordedEvent]
        while leased and (fence := lease.fence) is not None:
            try:
                page = await part.read(checkpoint, self.batch_size)
            except UndecodableEventError as error:
                batch, last = (), error.checkpoint
                moved = await skip_undecodable(self.documents, reader, error, feed=part,
                                               expected=checkpoint, fence=fence)
            else:
                batch = page.events
                if not batch and not page.undecodable:
                    break
                view = View(self.documents)
                for record in batch:
                    if record.event.event_type in projection.event_types:
                        await projection.apply(record.event, view)
                for unreadable in page.undecodable:
                    record_skipped(view.changes, reader, unreadable)
                last = page.checkpoint
                moved = await part.save(reader, last, view.changes, expected=checkpoint,
                                        fence=fence)
            if moved:
                checkpoint, applied[0] = last, applied[0] + len(batch)
                # False once held too long without renewing: another runner took it over
                leased = await lease.hold()
            else:
                # Another runner took the lease over or moved the checkpoint since the batch
                # began (a rebuild reset it): nothing of the batch was written.
                leased = await lease.hold(recheck=True)
                checkpoint = await part.saved(reader)
            position = self._reached(name, part, reader, checkpoint)
            if moved and batch and progress is not None:
                progress(applied[0], position)
        return self._reached(name, part, reader, checkpoint)

    def _reached(self, name: str, part: Feed, reader: str, checkpoint: Checkpoint) -> int:
        """Note where projection `name` stands in a part; its position."""
        self.checkpoints[reader] = checkpoint
        position = self.positions[name] = part.position(checkpoint)
        return position

    async def start(self) -> None:
        """Follow live writes in the background."""
        for name, loop in self._loops.items():
            self._tasks.append(asyncio.create_task(loop.run(self._follow_step(name)),
                                                   name=f"projection:{name}"))

    def _follow_step(self, name: str) -> Callable[[], Awaitable[bool]]:
        async def step() -> bool:
            readers = [part.name(checkpoint_name(name)) for part in await self.parts()]
            before = [self.checkpoints.get(reader) for reader in readers]
            await self.catch_up(name)
            return [self.checkpoints.get(reader) for reader in readers] != before
        return step

    def wake(self) -> None:
        """New events were appended."""
        for loop in self._loops.values():
            loop.wake()

    async def wait_for(self, name: str, position: int, timeout: float = 10.0) -> None:
        """Wait until projection `name` has applied everything up to `position`; on a feed
        without a global order (positions are 0 there), until it has applied every event
        readable when asked (`caught_up`), so an event appended before the call among them."""
        async def reached() -> bool:
            if not self.feed.global_order:
                return await self.caught_up(name)
            return self.positions.get(name, 0) >= position

        async def catch_up() -> None:
            await self.catch_up(name)

        await wait_until(reached, timeout, wake=self._loops[name].wake, every=0.005,
                         catch_up=None if self._tasks else catch_up)

    async def caught_up(self, name: str) -> bool:
        """True if projection `name` has applied every event readable now, in every part
        (`Feed.caught_up`, asked of a part only when the checkpoint there moved since it was
        last found behind)."""
        for part in await self.parts():
            reader = part.name(checkpoint_name(name))
            checkpoint = self.checkpoints.get(reader, START)
            if self._behind.get(reader) == checkpoint:
                return False
            if not await part.caught_up(checkpoint):
                self._behind[reader] = checkpoint
                return False
        return True

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

    async def part_status(self) -> list[PartStatus]:
        """Whether each projection is caught up in each part of the feed, from the checkpoints
        saved there (a read of the feed per part): the status on a feed without a global
        order."""
        out = []
        for n in self.projections:
            for part in await self.parts():
                reader = part.name(checkpoint_name(n))
                out.append(PartStatus(n, reader, await part.caught_up(await part.saved(reader))))
        return out

    async def rebuild(self, name: str,
                      progress: Callable[[int, int], None] | None = None) -> int:
        """Drop the projection's documents and apply the whole global order again, holding
        its lease from before the reset to the end; return the position reached.

        Raises ProjectionBusy, changing nothing, if another runner holds the lease (a
        worker would go on committing over the reset), or if one took it over midway.
        """
        projection = self.projections[name]
        parts = await self.parts()
        leases = [(part, self._lease(part.name(checkpoint_name(name)))) for part in parts]
        try:
            for _, lease in leases:
                if not await lease.hold():
                    raise ProjectionBusy(
                        f"projection {name!r} is being applied by another process (a running"
                        " worker holds its lease): stop the workers, then rebuild it")
            collections = list(projection.collections)
            for part, lease in leases:
                await part.reset(lease.name, collections)
                self._reached(name, part, lease.name, START)
                collections = []  # dropped with the first part's checkpoint
            position = await self.catch_up(name, progress)
            for _, lease in leases:
                if not await lease.hold():
                    raise ProjectionBusy(f"projection {name!r} was rebuilt up to position"
                                         f" {position}, then another process took its lease"
                                         " over and goes on from there")
            return position
        finally:
            for _, lease in leases:
                await lease.release()

    async def stop(self) -> None:
        """Stop following (a batch being applied finishes first)."""
        for loop in self._loops.values():
            loop.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for lease in self._leases.values():
            await lease.release()
