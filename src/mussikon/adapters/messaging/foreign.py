"""Events another service published, as both broker consumers record them: once, keyed by
the event's id, and only once what the event presupposes is in the store
(`mussikon.domain.prerequisites`)."""

from __future__ import annotations

import dataclasses
import logging

from mussikon.domain.events import DomainEvent
from mussikon.domain.prerequisites import Prerequisite, PrerequisitesMissing, prerequisites
from mussikon.ports.event_store import EventStore
from mussikon.ports.transport import Envelope

log = logging.getLogger("mussikon.foreign")

ROUNDS_PER_DELAY = 3
"""Rounds an event waits at each delay before the next, longer one: what it waits for is
usually a moment behind."""


async def as_stored(store: EventStore, envelope: Envelope, origin: str
                    ) -> Envelope | list[Prerequisite]:
    """The envelope of the event as the store holds it, with its position; an event the
    store does not hold (another service published it) is recorded first, with `origin`,
    once what it presupposes is known. If it is not: what is missing, and nothing is
    recorded."""
    stored = await store.find_event(envelope.event.id)
    if stored is None:
        missing = await missing_prerequisites(store, envelope.event)
        if missing:
            return missing
        stored = await store.record_foreign(envelope.event, origin)
        log.debug("recorded %s %s from another service at position %d",
                  stored.event.event_type, stored.event.id, stored.position)
    return dataclasses.replace(envelope, event=stored.event, position=stored.position)


def waited_enough(event: DomainEvent, missing: list[Prerequisite], waited: float,
                  limit: float) -> PrerequisitesMissing | None:
    """The error to dead-letter an event with once it waited `limit` seconds for what it
    presupposes, else None."""
    if waited < limit:
        return None
    return PrerequisitesMissing(
        f"{event.event_type} {event.id} waited {waited:.0f} s for what it presupposes; "
        f"not known: {', '.join(m.what for m in missing)}")


def wait_delay_index(waits: int, delays: int) -> int:
    """Which of `delays` delays an event waits for in its next round, after `waits` rounds."""
    return min(waits // ROUNDS_PER_DELAY, delays - 1)


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
