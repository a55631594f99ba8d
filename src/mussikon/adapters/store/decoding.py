"""The one error policy of every store for a stored row that cannot be turned into an event.

Whatever goes wrong (an unknown event type, JSON that is not an event, an upcaster that
raises, whatever it raises, a column no Python value can hold) the store raises
`UndecodableEventError` naming the row's position, stream and version and the reason.
`read_all` ends its batch before such a row, and raises only when the row comes first, so
a reader gets every good event before it and then learns where the bad one is
(`batch_before`, `until_undecodable`).
"""

from __future__ import annotations

from collections.abc import Callable

from mussikon.ports.event_store import RecordedEvent, UndecodableEventError
from mussikon.wire import WireFormatError


def undecodable(position: int, stream_id: str, version: int,
                error: Exception) -> UndecodableEventError:
    """The error for the row at `position` (stream `stream_id`, `version`) that raised `error`
    while it was decoded: the codec's own message (it names the type and the field), or
    the exception's type and message for anything else."""
    if isinstance(error, WireFormatError):
        return UndecodableEventError(position, stream_id, version, str(error),
                                     summary=error.summary)
    return UndecodableEventError(position, stream_id, version, f"{type(error).__name__}: {error}",
                                 summary=type(error).__name__)


def batch_before(error: UndecodableEventError, decoded: list[RecordedEvent]
                 ) -> list[RecordedEvent]:
    """What `read_all` returns when it met the row `error` names after the events `decoded`:
    those events, or, if there are none, `error` raised."""
    if not decoded:
        raise error
    return decoded


def until_undecodable(fill: Callable[[list[RecordedEvent]], object]) -> list[RecordedEvent]:
    """The events `fill` appends to a list, up to a row it cannot decode: those, or that row's
    error raised when it comes first (as `read_all` reads, and `read_last` from the newest
    down)."""
    decoded: list[RecordedEvent] = []
    try:
        fill(decoded)
    except UndecodableEventError as error:
        return batch_before(error, decoded)
    return decoded
