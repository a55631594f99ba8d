"""Musician and Organizer: the people of the marketplace."""

from __future__ import annotations

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.errors import IllegalTransition
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent, OrganizerRegisteredEvent
from mussikon.domain.rules import require_genres, require_text, require_valid_email


class Musician(Aggregate):
    """A performer with genres and a location."""

    stream_prefix = "musician"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.email = ""
        self.name = ""
        self.genres: tuple[str, ...] = ()
        self.location = ""

    def register(self, *, email: str, name: str, genres: list[str] | tuple[str, ...],
                 location: str) -> None:
        """Register this musician. Rules: valid email, at least one genre, name and location."""
        if self.exists:
            raise IllegalTransition(f"musician {self.id} is already registered")
        event = MusicianRegisteredEvent(
            musician_id=require_text("musician id", self.id),
            email=require_valid_email(email),
            name=require_text("name", name),
            genres=require_genres(genres),
            location=require_text("location", location),
        )
        self._record(event)

    def apply(self, event: DomainEvent) -> None:
        match event:
            case MusicianRegisteredEvent():
                self.email, self.name = event.email, event.name
                self.genres, self.location = event.genres, event.location
            case _:
                raise TypeError(f"Musician cannot apply {event.event_type}")


class Organizer(Aggregate):
    """Who publishes gigs and signs contracts."""

    stream_prefix = "organizer"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.email = ""
        self.name = ""
        self.payment_source = ""

    def register(self, *, email: str, name: str, payment_source: str = "") -> None:
        """Register this organizer. Rules: valid email and a name."""
        if self.exists:
            raise IllegalTransition(f"organizer {self.id} is already registered")
        self._record(
            OrganizerRegisteredEvent(
                organizer_id=require_text("organizer id", self.id),
                email=require_valid_email(email),
                name=require_text("name", name),
                payment_source=payment_source.strip(),
            )
        )

    def apply(self, event: DomainEvent) -> None:
        match event:
            case OrganizerRegisteredEvent():
                self.email, self.name = event.email, event.name
                self.payment_source = event.payment_source
            case _:
                raise TypeError(f"Organizer cannot apply {event.event_type}")
