"""What a relay does with a stored event its broker cannot take (larger than the largest
message the broker accepts): it neither retries it forever, holding back every event after
it, nor passes it silently. It logs an error naming the event, records it in the
`unpublishable-events` collection under its own checkpoint's name, and goes on with the
events after it. `mussikon events skipped` lists these records beside the undecodable
rows (`followers/undecodable.py`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mussikon.ports.documents import Changes, DocumentStore, Fence
from mussikon.ports.event_store import RecordedEvent

log = logging.getLogger("mussikon.unpublishable")

UNPUBLISHABLE_EVENTS = "unpublishable-events"
"""The collection of the events passed by, keyed by "<relay>:<position>" (on a store
without a global order "<relay>:<stream id>:<version>"), each document
naming the relay, the event's position, id, type, stream id and version, the reason (a short
word: `too-large`), the details, and when it was passed by (`skipped_at`, ISO 8601)."""

TOO_LARGE = "too-large"


async def skip_unpublishable(documents: DocumentStore, relay: str, record: RecordedEvent,
                             reason: str, detail: str, *, fence: Fence | None = None) -> bool:
    """Log the event and record it as passed by `relay` for `reason`, under the lease `fence`
    if given; False (nothing recorded) if another owner took the relay's lease. Recording
    the same event again (a relay that restarted before saving its position) replaces the
    record."""
    event = record.event
    log.error("%s passes by %s %s at position %d, which it cannot publish (%s): %s", relay,
              event.event_type, event.id, record.position, reason, detail)
    changes = Changes()
    key = (f"{relay}:{record.position}" if record.position
           else f"{relay}:{record.stream_id}:{record.version}")  # a store without positions
    changes.put(UNPUBLISHABLE_EVENTS, key, {
        "reader": relay, "position": record.position, "event_id": str(event.id),
        "event_type": event.event_type, "stream_id": record.stream_id,
        "version": record.version, "reason": reason, "detail": detail,
        "skipped_at": datetime.now(UTC).isoformat()})
    return await documents.commit(changes, fence=fence)
