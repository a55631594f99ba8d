"""What every reader of the feed does with a stored event no code can read.

Every event store raises `UndecodableEventError` for such a row (unknown type, malformed
JSON, an upcaster that fails), naming its position, stream, version and the reason; read
through a feed (`ports.feed`), it also names the feed's checkpoint just after the row. A
reader (a projection, a subscription of the in-process transport, the outbox relay)
neither stops there nor passes it silently: it logs an error, records the row in the
`undecodable-events` collection under its own checkpoint's name, and reads on after it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mussikon.ports.documents import Changes, DocumentStore, Fence
from mussikon.ports.event_store import UndecodableEventError
from mussikon.ports.feed import Checkpoint, Feed

log = logging.getLogger("mussikon.undecodable")

UNDECODABLE_EVENTS = "undecodable-events"
"""The collection of the rows skipped, keyed by "<reader>:<position>" (on a store without a
global order, "<reader>:<stream id>:<version>"), each document naming the reader, the row's
position, stream id and version, the reason, and when it was skipped (`skipped_at`,
ISO 8601)."""


def record_skipped(changes: Changes, reader: str, error: UndecodableEventError) -> None:
    """Log the row `error` names and add its record, as skipped by `reader`, to `changes`."""
    log.error("%s skips the event at position %d (stream %r, version %d): %s", reader,
              error.position, error.stream_id, error.version, error.summary)
    key = (f"{reader}:{error.position}" if error.position
           else f"{reader}:{error.stream_id}:{error.version}")
    changes.put(UNDECODABLE_EVENTS, key, {
        "reader": reader, "position": error.position, "stream_id": error.stream_id,
        "version": error.version, "reason": error.reason,
        "skipped_at": datetime.now(UTC).isoformat()})


async def skip_undecodable(documents: DocumentStore, reader: str, error: UndecodableEventError,
                           *, feed: Feed | None = None, expected: Checkpoint | None = None,
                           fence: Fence | None = None) -> bool:
    """Log the row `error` names and record it as skipped by `reader`; with `feed`, save the
    checkpoint named `reader` just after the row (`error.checkpoint`) in the same commit (a
    reader whose checkpoint trails work still in flight passes none and moves it itself),
    from exactly `expected` if given and under the lease `fence` if given (see `Feed.save`).
    The reader goes on reading from `error.checkpoint`; False (nothing recorded) if the
    checkpoint was not moved: it is past the row, or (with `expected`) not where the reader
    left it, or (with `fence`) another owner took the reader's lease."""
    changes = Changes()
    record_skipped(changes, reader, error)
    if feed is None:
        return await documents.commit(changes)
    # A checkpoint already past the row means another process skipped it first and recorded
    # it: the save then writes nothing, which is right.
    return await feed.save(reader, error.checkpoint, changes, expected=expected, fence=fence)
