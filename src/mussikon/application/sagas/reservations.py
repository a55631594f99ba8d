"""Musicians' days: which contract holds each musician's day, reserved and released race-free.

One versioned document per musician-day, written with optimistic concurrency: of two
bookings that race for the same day, exactly one reserves it and the other reads who
holds it. The availability read model shows the same days after the fact; this is the
place that decides.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mussikon.application.projections.availability import booking_key
from mussikon.application.sagas.versioned import VersionedDocuments
from mussikon.ports.clock import Clock
from mussikon.ports.documents import DocumentStore

DAYS = "musician-days"

_ATTEMPTS = 20


class ReservationConflict(Exception):
    """The day kept changing under this reservation; try again later."""


class MusicianDays:
    """Reserve and release musicians' days for contracts."""

    def __init__(self, documents: DocumentStore, clock: Clock) -> None:
        self.days = VersionedDocuments(documents, DAYS)
        self.clock = clock

    async def holder(self, musician_id: str, when: datetime) -> str | None:
        """The contract holding the musician's day of `when` (UTC), or None if it is free."""
        doc, _ = await self.days.read(booking_key(musician_id, when))
        return (doc["holder"] or None) if doc is not None else None

    async def reserve(self, musician_id: str, when: datetime, holder: str) -> str:
        """Reserve the day for `holder` unless someone holds it; return who holds it now
        (`holder` itself if it got the day, or already had it)."""
        key = booking_key(musician_id, when)
        for _ in range(_ATTEMPTS):
            doc, version = await self.days.read(key)
            if doc is not None and doc["holder"]:
                return str(doc["holder"])
            if await self.days.write(key, {
                "musician_id": musician_id, "day": when.astimezone(UTC).date().isoformat(),
                "holder": holder, "since": self.clock.now().isoformat(),
            }, version):
                return holder
        raise ReservationConflict(f"the day {key} kept changing; could not reserve it")

    async def release(self, musician_id: str, when: datetime, holder: str) -> bool:
        """Free the day if `holder` holds it; False if it does not (nothing to release)."""
        key = booking_key(musician_id, when)
        for _ in range(_ATTEMPTS):
            doc, version = await self.days.read(key)
            if doc is None or doc["holder"] != holder:
                return False
            if await self.days.write(key, {**doc, "holder": "",
                                           "since": self.clock.now().isoformat()}, version):
                return True
        raise ReservationConflict(f"the day {key} kept changing; could not release it")
