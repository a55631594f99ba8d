"""Runs projections as catch-up subscriptions of the store's global order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mussikon.application.projections import Projection, View
from mussikon.ports.documents import DocumentStore
from mussikon.ports.event_store import EventStore, UndecodableEventError
from mussikon.ports.leases import Lease
from mussikon.ports.polling import PollLoop, wait_until
from mussikon.ports.undecodable import skip_undecodable

LEASE_SECONDS = 10.0
"""How long a runner that stopped renewing its lease on a projection keeps the others out."""


def checkpoint_name(projection: str) -> str:
    """The checkpoint a projection keeps in the document store."""
    return f"projection:{projection}"


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection is: its checkpoint, the store's head, and the lag between them."""

    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


class ProjectionRunner:
    """Keeps each projection up to date: read a batch, apply it, commit it with the checkpoint."""

    def __init__(self, store: EventStore, documents: DocumentStore,
                 projections: Sequence[Projection], *, batch_size: int = 500,
                 poll_interval: float = 0.05, poll_max_interval: float = 1.0) -> None:
        self.store, self.documents = store, documents
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.positions: dict[str, int] = {}
        self.owner = f"projections-{uuid.uuid4()}"
        self._leases = {name: Lease(documents, checkpoint_name(name), seconds=LEASE_SECONDS,
                                    owner=self.owner) for name in self.projections}
        self._loops = {name: PollLoop(f"projection {name}", interval=poll_interval,
                                      max_interval=poll_max_interval)
                       for name in self.projections}
        self._tasks: list[asyncio.Task[None]] = []

    async def catch_up(self, name: str,
                       progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every stored event the projection has not seen; return its new position.

        One runner at a time applies a projection, among every process sharing the store
        (a lease): two that applied the same events from the same checkpoint would count
        them twice. A runner without the lease only learns how far the holder got.
        """
        projection, lease = self.projections[name], self._leases[name]
        position = await self.documents.checkpoint(checkpoint_name(name))
        if not await lease.hold():
            self.positions[name] = position
            return position
        while True:
            try:
                batch = await self.store.read_all(position + 1, self.batch_size)
            except UndecodableEventError as error:
                await skip_undecodable(self.documents, checkpoint_name(name), error)
                position = error.position
                continue
            if not batch:
                break
            view = View(self.documents)
            for record in batch:
                if record.event.event_type in projection.event_types:
                    await projection.apply(record.event, view)
            last = batch[-1].position
            if not await self.documents.commit(view.changes,
                                               checkpoint=(checkpoint_name(name), last)):
                # Another runner applied this batch first; carry on from where it got to.
                last = await self.documents.checkpoint(checkpoint_name(name))
            position = last
            self.positions[name] = position
            if progress is not None:
                progress(position, batch[-1].position)
            if not await lease.hold():
                break  # held too long without renewing: another runner has taken over
        self.positions[name] = position
        return position

    async def start(self) -> None:
        """Follow live writes in the background."""
        for name, loop in self._loops.items():
            self._tasks.append(asyncio.create_task(loop.run(self._follow_step(name)),
                                                   name=f"projection:{name}"))

    def _follow_step(self, name: str) -> Callable[[], Awaitable[bool]]:
        async def step() -> bool:
            before = self.positions.get(name, -1)
            return await self.catch_up(name) != before
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

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every projection has caught up with the store's head."""
        head = await self.store.head_position()
        for name in self.projections:
            await self.wait_for(name, head, timeout)

    async def status(self) -> list[ProjectionStatus]:
        """Position and lag of each projection."""
        head = await self.store.head_position()
        checkpoints = await self.documents.checkpoints()
        return [ProjectionStatus(n, checkpoints.get(checkpoint_name(n), 0), head)
                for n in self.projections]

    async def rebuild(self, name: str,
                      progress: Callable[[int, int], None] | None = None) -> int:
        """Drop the projection's documents and apply the whole global order again."""
        projection = self.projections[name]
        await self.documents.reset_checkpoint(checkpoint_name(name), list(projection.collections))
        self.positions[name] = 0
        return await self.catch_up(name, progress)

    async def stop(self) -> None:
        """Stop following (a batch being applied finishes first)."""
        for loop in self._loops.values():
            loop.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for lease in self._leases.values():
            await lease.release()
