"""Load aggregates from their streams and save what they recorded, with optimistic concurrency."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from mussikon import metrics, tracing
from mussikon.application.snapshots import Snapshots
from mussikon.domain.aggregate import Aggregate
from mussikon.domain.events import DomainEvent
from mussikon.ports.event_store import ConcurrencyError, EventStore

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cause:
    """Why events are written: the correlation they belong to and the event that caused them.

    Events written because of another event get ids derived from it, so handling that
    event twice writes the same ids and the store turns the second append into a no-op.
    """

    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None

    @classmethod
    def new(cls) -> Cause:
        """A fresh correlation, for a command from outside (a user, the CLI)."""
        return cls(uuid.uuid4())

    @classmethod
    def of(cls, event: DomainEvent) -> Cause:
        """Caused by `event`, in its correlation."""
        return cls(event.correlation_id or event.id, event.id)


class Repository:
    """Aggregates in, aggregates out. `on_saved` is told after each successful append."""

    def __init__(self, store: EventStore,
                 on_saved: Callable[[list[DomainEvent]], None] | None = None,
                 snapshots: Snapshots | None = None) -> None:
        self.store = store
        self.on_saved = on_saved
        self.snapshots = snapshots

    async def load(self, cls: type[A], aggregate_id: str) -> A:
        """The aggregate rebuilt from its newest snapshot and the events after it (a new,
        empty one if the stream is empty)."""
        aggregate = await self.snapshots.load(cls, aggregate_id) if self.snapshots else None
        if aggregate is None:
            aggregate = cls(aggregate_id)
        records = await self.store.read_stream(aggregate.stream_id, aggregate.version + 1)
        for record in records:
            aggregate.apply(record.event)
            aggregate.version += 1
        return aggregate

    async def save(self, aggregate: Aggregate, cause: Cause) -> list[DomainEvent]:
        """Append the aggregate's pending events at its version; ConcurrencyError if it moved."""
        if not aggregate.pending:
            return []
        events = [
            replace(
                event,
                id=(uuid.uuid5(cause.causation_id, f"{aggregate.stream_id}/{aggregate.version + n}")
                    if cause.causation_id else event.id),
                correlation_id=cause.correlation_id,
                causation_id=cause.causation_id,
            )
            for n, event in enumerate(aggregate.pending, start=1)
        ]
        before = aggregate.version
        with tracing.span(f"append {aggregate.stream_id.partition('-')[0]}", tracing.CLIENT, {
                "db.operation.name": "append", "mussikon.stream_id": aggregate.stream_id,
                "mussikon.event_types": [e.event_type for e in events],
                tracing.CORRELATION: str(cause.correlation_id)} if tracing.enabled() else None), \
                metrics.APPEND_DURATION.time():
            await self.store.append(aggregate.stream_id, events, before)
        aggregate.pending = events
        saved = aggregate.mark_saved()
        if self.snapshots is not None and self.snapshots.due(before, aggregate.version):
            await self.snapshots.save(aggregate)
        if self.on_saved is not None:
            self.on_saved(saved)
        return saved

    async def update(self, cls: type[A], aggregate_id: str, change: Callable[[A], T],
                     cause: Cause, attempts: int = 5) -> tuple[A, T]:
        """Load, apply `change`, save; on a concurrency conflict reload and try again."""
        for attempt in range(1, attempts + 1):
            aggregate = await self.load(cls, aggregate_id)
            result = change(aggregate)
            try:
                await self.save(aggregate, cause)
                return aggregate, result
            except ConcurrencyError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

