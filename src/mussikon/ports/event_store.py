"""The event store port: streams of versioned events, and one global order over all of them.

Adapters: `memory` (tests), `sqlite` (the embedded default), `postgres` (production).
Each passes the same contract suite (tests/contract/test_event_store.py).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID

import msgspec

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

    Names its global position; reading from `position + 1` goes on. Raised by a feed
    (`ports.feed.Feed.read`), it also names the feed's `checkpoint` just after the row.
    """

    def __init__(self, position: int, stream_id: str, version: int, reason: str,
                 checkpoint: str = "", *, summary: str = "") -> None:
        super().__init__(
            f"event at position {position} (stream {stream_id!r}, version {version}) "
            f"cannot be read: {reason}"
        )
        self.position, self.stream_id, self.version, self.reason = (position, stream_id, version,
                                                                    reason)
        self.checkpoint = checkpoint
        self.summary = summary or reason
        """The reason without any value read from the row (what logs show)."""


class StoreUnavailable(StoreError):
    """The database could not be reached, dropped the connection or gave up on the operation
    (a timeout); the operation may be retried.

    An append that raised this was written completely or not at all: retrying with the
    same events is safe (appends are idempotent by event id).
    """


class NoGlobalOrder(StoreError):
    """The store keeps no order across its streams (Cosmos DB): `read_all`, `read_last`,
    `count_after` and the global positions do not exist there. Its streams are ordered by
    version; readers of every stream follow the store's change feed instead."""


StreamAppend = tuple[str, Sequence[DomainEvent], int]
"""One stream's part of `EventStore.append_streams`: (stream id, events, expected version)."""


def check_batch(batch: Sequence[StreamAppend]) -> None:
    """Refuse a batch that names a stream twice (its versions would be ambiguous)."""
    seen: set[str] = set()
    for stream_id, _, _ in batch:
        if stream_id in seen:
            raise ValueError(f"stream {stream_id!r} appears more than once in one batch")
        seen.add(stream_id)


def refused_batch(batch: Sequence[StreamAppend], actual: Mapping[str, int],
                  stored: Mapping[str, tuple[str, int]], *, last_try: bool = False
                  ) -> list[int] | None:
    """What a refused `append_streams` means, from the streams' versions (`actual`) and where
    the batch's event ids are stored (`stored`: id as text -> (stream id, version)).

    Every stream's events already stored in it, at consecutive versions in order: an
    idempotent retry, so the streams' versions. Otherwise ConcurrencyError for the first
    stream at fault: not at its expected version, or holding (or letting another stream hold)
    some of its events. None if no stream is at fault: whoever was in the way is gone, and
    the batch may be tried again; with `last_try`, ConcurrencyError for the first stream
    instead (what stands in the way is not the streams' state: say, one event twice in the
    batch).
    """
    def is_retry(stream_id: str, events: Sequence[DomainEvent]) -> bool:
        places = [stored.get(str(e.id)) for e in events]
        if any(p is None or p[0] != stream_id for p in places):
            return False
        versions = [p[1] for p in places if p is not None]
        return versions == list(range(versions[0], versions[0] + len(versions)))

    if all(is_retry(s, events) for s, events, _ in batch if events):
        return [actual.get(s, 0) for s, _, _ in batch]
    for stream_id, events, expected in batch:
        at = actual.get(stream_id, 0)
        if events and (expected not in (ANY_VERSION, at)
                       or any(str(e.id) in stored for e in events)):
            raise ConcurrencyError(stream_id, expected, at)
    if last_try:
        stream_id, _, expected = next(entry for entry in batch if entry[1])
        raise ConcurrencyError(stream_id, expected, actual.get(stream_id, 0))
    return None


def check_origin(origin: str) -> None:
    """Refuse the origin "" for a foreign event ("" marks the events this service wrote)."""
    if not origin:
        raise ValueError("a foreign event needs an origin (where it was received), not ''")


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: its stream, its version in the stream and its global position.

    Immutable, compared and hashed by its fields, like a frozen dataclass; a msgspec struct
    because the adapters' read loops make one per event read, and its constructor (in C)
    is far cheaper than a frozen dataclass's, whose `__init__` sets each field through
    `object.__setattr__`. Not tracked by the cyclic collector (one object less for it to
    go through per event read): it cannot be in a cycle, as what it holds (numbers,
    strings, a time, an event of immutable values) never refers back to it."""

    position: int
    stream_id: str
    version: int
    event: DomainEvent
    recorded_at: datetime
    origin: str = ""
    """"" for an event this service wrote; for an event another service published, where it
    was received (`rabbitmq`): see `EventStore.record_foreign`."""
    traceparent: str | None = None
    """The trace context the event was appended (or recorded) in, as a W3C `traceparent`
    (`mussikon.tracing.traceparent()` at the append), so that the relay publishes it in the
    same trace; None if tracing was off."""


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
    async def append_streams(self, batch: Sequence[StreamAppend]) -> list[int]:
        """Append to several streams at once, all or nothing: each `(stream_id, events,
        expected_version)` as `append` would, in one transaction. Returns each stream's new
        version, in the batch's order.

        Raises ConcurrencyError naming the first stream that is not at its expected version
        (or holds some of the events already); then nothing is written. A stream may appear
        once per batch (ValueError otherwise). Appending the same batch again, every stream's
        events already stored in it in the same order, is a no-op that returns the streams'
        versions (an idempotent retry).
        """

    @abc.abstractmethod
    async def record_foreign(self, event: DomainEvent, origin: str) -> RecordedEvent:
        """Record an event another service published, exactly once, keyed by its id.

        It is appended at the end of its stream (`event.stream_id`, with no expected version:
        the service that published it decided it), keeping its id, time, type, body and
        correlation and causation ids, marked with `origin` (where it was received, not "").
        If an event with that id is stored already (one of ours, or this one recorded
        before) nothing is written. Returns the event as stored, either way.
        """

    @abc.abstractmethod
    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        """The stored event with this id, wherever it is (None if there is none)."""

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
    async def read_last(self, limit: int, before: int | None = None) -> list[RecordedEvent]:
        """The newest `limit` events of the global order a reader may see (those below
        position `before`, if given), oldest first: the events `read_all` would return last.

        A row that cannot be decoded ends the list after it (the newer events are returned);
        if it is the newest of them, this raises UndecodableEventError naming its position,
        and reading goes on below it with `before` set to that position.
        """

    @abc.abstractmethod
    async def count_after(self, position: int, limit: int = 1_000_000) -> int:
        """How many events a reader may see after `position` (what `read_all(position + 1)`
        would go through), counting no further than `limit`: `limit` means that many or
        more. Positions are not consecutive on every store; this is a count of events."""

    @abc.abstractmethod
    async def read_by_type(self, event_type: str, since: datetime | None = None,
                           limit: int = 10_000, from_position: int = 1) -> list[RecordedEvent]:
        """Events of one type that occurred at or after `since`, in global order, from global
        position `from_position` on."""

    @abc.abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 if it does not exist)."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The global position of the newest event a reader may see (0 if none)."""

    async def committed_position(self) -> int:
        """The global position of the newest committed event (0 if none). Where commits
        become readable in order, readers may not see it yet (on PostgreSQL, while an older
        transaction is still running); elsewhere it is the head position."""
        return await self.head_position()

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""
