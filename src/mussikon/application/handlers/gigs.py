"""The specification's EventEventHandler: a gig was published."""

from __future__ import annotations

from mussikon.application import templates
from mussikon.application.handlers.dependencies import Dependencies, react, read_models_at
from mussikon.application.projections.directory import MATCHING_INDEX, PROFILES, matching_prefix
from mussikon.domain.events import EventCreatedEvent
from mussikon.ports.documents import Document, DocumentStore
from mussikon.ports.transport import Envelope

__all__ = ["EventCreatedEvent", "find_matching_musicians", "on_gig_created"]


async def find_matching_musicians(documents: DocumentStore, genre: str,
                                  location: str) -> list[Document]:
    """Profiles of musicians who play the gig's genre in its location."""
    index = await documents.scan(MATCHING_INDEX, matching_prefix(genre, location))
    profiles = [await documents.get(PROFILES, doc["musician_id"]) for _, doc in index]
    return [p for p in profiles if p is not None]


async def on_gig_created(envelope: Envelope, deps: Dependencies) -> None:
    """Find matching musicians and tell each of them; track the gig."""

    event = envelope.event
    assert isinstance(event, EventCreatedEvent)
    await read_models_at(envelope, deps, "directory")
    matches = await find_matching_musicians(deps.documents, event.genre, event.location)
    react(envelope, "gigs", f"{len(matches)} matching musician(s) for {event.genre} in "
                            f"{event.location}")
    for musician in matches:
        await deps.notifier.send(templates.new_gig(
            musician["name"], musician["email"], event.id, gig_id=event.gig_id,
            title=event.title, genre=event.genre, location=event.location,
            gig_date=event.event_date, budget=event.budget))
        react(envelope, "gigs", f"notified {musician['email']}")
    await read_models_at(envelope, deps, "analytics")
    react(envelope, "gigs", "gig counted in analytics")
