"""The event store port: streams of versioned events, and one global order over all of them.

Adapters: `memory` (tests), `sqlite` (the embedded default), `postgres` (production).
Each passes the same contract suite (tests/contract/test_event_store.py).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mussikon.domain.events import DomainEvent

NO_STREAM = 0
"""`expected_version` for a stream that must not exist yet."""

ANY_VERSION = -1
"""`expected_version` that skips the concurrency check (append at the end, whatever it is)."""


class StoreError(Exception):
    """Base of the event store's errors."""


class ConcurrencyError(StoreError):
    """The stream is not at the expected version: someone else wrote first. Reload and retry."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but it is at version {actual}"
        )
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class UndecodableEventError(StoreError):
    """A stored row could not be turned into an event (unknown type, corrupt data).

    Names its global position; reading from `position + 1` goes on.
    """

    def __init__(self, position: int, stream_id: str, version: int, reason: str) -> None:
        super().__init__(
            f"event at position {position} (stream {stream_id!r}, version {version}) "
            f"cannot be read: {reason}"
        )
        self.position, self.stream_id, self.version, self.reason = (position, stream_id, version,
                                                                    reason)


class StoreUnavailable(StoreError):
    """The database could not be reached or dropped the connection; the operation may be retried.

    An append that raised this was written completely or not at all: retrying with the
    same events is safe (appends are idempotent by event id).
    """


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: its stream, its version in the stream and its global position."""

    position: int
    stream_id: str
    version: int
    event: DomainEvent
    recorded_at: datetime


class EventStore(abc.ABC):
    """Append-only streams with optimistic concurrency, and a gap-free global order."""

    @abc.abstractmethod
    async def append(self, stream_id: str, events: Sequence[DomainEvent],
                     expected_version: int) -> int:
        """Append events atomically at versions expected_version+1, +2 …; return the new version.

        Raises ConcurrencyError (naming expected and actual versions) if the stream is
        elsewhere. Appending events whose ids are already stored in this stream, in the
        same order, is a no-op that returns the stream's version (an idempotent retry).
        """

    @abc.abstractmethod
    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """The stream's events from `from_version` on, oldest first (empty if no such stream)."""

    @abc.abstractmethod
    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events of the global order from `from_position` on.

        No reader ever skips an event: positions returned are the committed ones, in
        order, and no later commit gets a position below one already returned. A row
        that cannot be decoded ends the batch before it; if it is first, this raises
        UndecodableEventError naming its position.
        """

    @abc.abstractmethod
    async def read_by_type(self, event_type: str, since: datetime | None = None,
                           limit: int = 10_000) -> list[RecordedEvent]:
        """Events of one type that occurred at or after `since`, in global order."""

    @abc.abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 if it does not exist)."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The global position of the newest event a reader may see (0 if none)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""
