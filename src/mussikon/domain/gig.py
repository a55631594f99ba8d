"""Gig: the specification's "Event", a music event with date, location, genre and budget."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.errors import FeeExceedsBudget, GigNotOpen, IllegalTransition
from mussikon.domain.events import DomainEvent, EventClosedEvent, EventCreatedEvent
from mussikon.domain.rules import require_future, require_positive_amount, require_text


class GigStatus(StrEnum):
    NEW = "New"
    OPEN = "Open"
    CLOSED = "Closed"


class Gig(Aggregate):
    """A gig takes applications while open; a fee must fit its budget."""

    stream_prefix = "gig"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = GigStatus.NEW
        self.organizer_id = ""
        self.title = ""
        self.event_date: datetime | None = None
        self.location = ""
        self.genre = ""
        self.budget = Decimal(0)

    def create(self, *, organizer_id: str, title: str, event_date: datetime, location: str,
               genre: str, budget: Decimal, now: datetime) -> None:
        """Publish the gig. Rules: date in the future, positive budget, required texts."""
        if self.exists:
            raise IllegalTransition(f"gig {self.id} already exists")
        self._record(
            EventCreatedEvent(
                gig_id=require_text("event id", self.id),
                organizer_id=require_text("organizer id", organizer_id),
                title=require_text("title", title),
                event_date=require_future("event date", event_date, now),
                location=require_text("location", location),
                genre=require_text("genre", genre),
                budget=require_positive_amount("budget", budget),
            )
        )

    def check_accepts(self, fee: Decimal) -> None:
        """An application may be made: the gig is open and the fee fits the budget."""
        if self.status is not GigStatus.OPEN:
            raise GigNotOpen(f"gig {self.id} is {self.status.lower()}, not open for applications")
        if fee > self.budget:
            raise FeeExceedsBudget(f"fee {fee} exceeds the budget {self.budget} of gig {self.id}")

    def close(self, reason: str) -> None:
        """Stop taking applications. Only an open gig closes."""
        if self.status is not GigStatus.OPEN:
            raise IllegalTransition(
                f"gig {self.id} is {self.status.lower()}; only an open gig closes"
            )
        self._record(EventClosedEvent(gig_id=self.id, reason=require_text("reason", reason)))

    def apply(self, event: DomainEvent) -> None:
        match event:
            case EventCreatedEvent():
                self.status = GigStatus.OPEN
                self.organizer_id, self.title = event.organizer_id, event.title
                self.event_date, self.location = event.event_date, event.location
                self.genre, self.budget = event.genre, event.budget
            case EventClosedEvent():
                self.status = GigStatus.CLOSED
            case _:
                raise TypeError(f"Gig cannot apply {event.event_type}")
