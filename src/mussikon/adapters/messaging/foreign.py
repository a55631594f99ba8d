"""Events another service published, as both broker consumers record them: once, keyed by
the event's id, and only once what the event presupposes is in the store
(`mussikon.domain.prerequisites`)."""

from __future__ import annotations

from mussikon.domain.events import DomainEvent
from mussikon.domain.prerequisites import Prerequisite, prerequisites
from mussikon.ports.event_store import EventStore


async def missing_prerequisites(store: EventStore, event: DomainEvent) -> list[Prerequisite]:
    """What `event` presupposes and the store does not hold."""
    missing = []
    for needed in prerequisites(event):
        if needed.opens_stream:
            known = await store.stream_version(needed.stream_id) > 0
        else:
            known = any(r.event.event_type == needed.event_type
                        for r in await store.read_stream(needed.stream_id))
        if not known:
            missing.append(needed)
    return missing
