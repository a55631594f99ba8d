"""Application: a musician's request to play a gig, with a message and a proposed fee."""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum

from mussikon.domain.aggregate import Aggregate
from mussikon.domain.errors import AlreadyApplied, GigMismatch, IllegalTransition, NotFound
from mussikon.domain.events import (
    ApplicationAcceptedEvent,
    ApplicationRejectedEvent,
    DomainEvent,
    MusicianApplicationSubmittedEvent,
)
from mussikon.domain.gig import Gig
from mussikon.domain.musician import Musician
from mussikon.domain.rules import require_positive_amount, require_text

_APPLICATION_IDS = uuid.UUID("6f1c3a52-0d4b-4c71-9a43-5b2e8d7c1f09")


def application_id_for(gig_id: str, musician_id: str) -> str:
    """The one application id a musician can have for a gig.

    Deriving it from the pair makes "one application per musician per gig" a
    property of the store: a second application targets an existing stream and
    is refused by optimistic concurrency, even when two race.
    """
    return str(uuid.uuid5(_APPLICATION_IDS, f"{gig_id}/{musician_id}"))


class ApplicationStatus(StrEnum):
    NEW = "New"
    SUBMITTED = "Submitted"
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"


class Application(Aggregate):
    """Submitted, then accepted or rejected; an accepted one may be rejected as compensation."""

    stream_prefix = "application"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = ApplicationStatus.NEW
        self.musician_id = ""
        self.gig_id = ""
        self.proposed_fee = Decimal(0)
        self.agreed_fee: Decimal | None = None
        self.reason = ""

    def submit(self, *, musician: Musician, gig: Gig, message: str, proposed_fee: Decimal) -> None:
        """Apply to a gig. Rules: musician and gig exist, gig open, fee positive and within budget,
        one application per musician per gig."""
        if self.exists:
            raise AlreadyApplied(f"musician {musician.id} has already applied to gig {gig.id}")
        if not musician.exists:
            raise NotFound(f"musician {musician.id} is not registered")
        if not gig.exists:
            raise NotFound(f"gig {gig.id} does not exist")
        fee = require_positive_amount("proposed fee", proposed_fee)
        gig.check_accepts(fee)
        self._record(
            MusicianApplicationSubmittedEvent(
                application_id=self.id,
                musician_id=musician.id,
                gig_id=gig.id,
                message=message.strip() if isinstance(message, str) else "",
                proposed_fee=fee,
            )
        )

    def accept(self, *, gig: Gig, agreed_fee: Decimal | None = None) -> None:
        """The gig's organizer accepts, at the proposed fee unless another is agreed (in budget)."""
        if self.status is not ApplicationStatus.SUBMITTED:
            raise IllegalTransition(
                f"application {self.id} is {self.status.lower()}; only a submitted one is accepted"
            )
        self.check_gig(gig)
        fee = self.proposed_fee if agreed_fee is None else require_positive_amount("agreed fee",
                                                                                   agreed_fee)
        gig.check_accepts(fee)
        self._record(
            ApplicationAcceptedEvent(
                application_id=self.id,
                musician_id=self.musician_id,
                gig_id=self.gig_id,
                organizer_id=gig.organizer_id,
                agreed_fee=fee,
            )
        )

    def check_gig(self, gig: Gig) -> None:
        """`gig` is the one this application was made to (its organizer, budget and date apply)."""
        if gig.id != self.gig_id:
            raise GigMismatch(f"application {self.id} is for gig {self.gig_id}, not {gig.id}")

    def reject(self, reason: str) -> None:
        """Turn the application down (from submitted, or from accepted as a compensation)."""
        if self.status not in (ApplicationStatus.SUBMITTED, ApplicationStatus.ACCEPTED):
            raise IllegalTransition(
                f"application {self.id} is {self.status.lower()}; cannot reject"
            )
        self._record(
            ApplicationRejectedEvent(
                application_id=self.id,
                musician_id=self.musician_id,
                gig_id=self.gig_id,
                reason=require_text("reason", reason),
            )
        )

    def apply(self, event: DomainEvent) -> None:
        match event:
            case MusicianApplicationSubmittedEvent():
                self.status = ApplicationStatus.SUBMITTED
                self.musician_id, self.gig_id = event.musician_id, event.gig_id
                self.proposed_fee = event.proposed_fee
            case ApplicationAcceptedEvent():
                self.status = ApplicationStatus.ACCEPTED
                self.agreed_fee = event.agreed_fee
            case ApplicationRejectedEvent():
                self.status = ApplicationStatus.REJECTED
                self.reason = event.reason
            case _:
                raise TypeError(f"Application cannot apply {event.event_type}")
