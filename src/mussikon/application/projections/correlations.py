"""Correlations: which events belong to one correlation (one command from outside and all that
followed from it: handlers, sagas, payments), so its causal chain is read as one range."""

from __future__ import annotations

from mussikon.application.projections import Projection, View
from mussikon.domain.events import ALL_EVENT_TYPES, DomainEvent

BY_CORRELATION = "events-by-correlation"


def correlation_prefix(correlation_id: str) -> str:
    """The index key prefix of a correlation's events."""
    return f"{correlation_id.strip().lower()}|"


class Correlations(Projection):
    """Indexes every event under its correlation id (an event without one under its own id),
    in the order the events occurred."""

    name = "correlations"
    collections = (BY_CORRELATION,)
    event_types = frozenset(cls.__name__ for cls in ALL_EVENT_TYPES)

    async def apply(self, event: DomainEvent, view: View) -> None:
        correlation = str(event.correlation_id or event.id)
        key = f"{correlation_prefix(correlation)}{event.occurred_at.isoformat()}|{event.id}"
        view.put(BY_CORRELATION, key, {"event_id": str(event.id)})
