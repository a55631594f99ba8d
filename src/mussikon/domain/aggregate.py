"""The base of event-sourced aggregates: state is rebuilt by applying past events in order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Self

from mussikon.domain.events import DomainEvent


class Aggregate:
    """An aggregate: `version` is how many stored events built it; `pending` holds new ones.

    A command method checks every rule first and only then records events, so a
    rejected command leaves no pending event behind: nothing is written.
    """

    stream_prefix: ClassVar[str]

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self.pending: list[DomainEvent] = []

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        """The stream an aggregate with this id lives in."""
        return f"{cls.stream_prefix}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        """This aggregate's stream."""
        return self.stream_id_for(self.id)

    @property
    def exists(self) -> bool:
        """True once the aggregate has any event, stored or pending."""
        return self.version > 0 or bool(self.pending)

    @classmethod
    def rebuild(cls, aggregate_id: str, events: Iterable[DomainEvent]) -> Self:
        """Rebuild from stored events, oldest first."""
        aggregate = cls(aggregate_id)
        for event in events:
            aggregate.apply(event)
            aggregate.version += 1
        return aggregate

    def apply(self, event: DomainEvent) -> None:
        """Change state by one event. Each aggregate handles its own event types."""
        raise NotImplementedError

    def _record(self, event: DomainEvent) -> None:
        self.apply(event)
        self.pending.append(event)

    def mark_saved(self) -> list[DomainEvent]:
        """The pending events were stored: count them into `version` and return them."""
        saved, self.pending = self.pending, []
        self.version += len(saved)
        return saved
