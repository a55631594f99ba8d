"""The in-memory event store: for tests and `memory://`. Rows are kept as wire JSON, like the
real stores, so every event makes the same round trip through the codec."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from mussikon.adapters.store.decoding import undecodable, until_undecodable
from mussikon.adapters.store.document_json import decode_document, encode_document
from mussikon.adapters.store.key_range import KeyRange
from mussikon.domain.events import DomainEvent
from mussikon.domain.instant import epoch_micros, utc_now
from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from mussikon.ports.event_store import (
    ANY_VERSION,
    ConcurrencyError,
    EventStore,
    RecordedEvent,
    StreamAppend,
    check_batch,
    check_origin,
    refused_batch,
)
from mussikon.tracing import traceparent
from mussikon.wire import EventCodec


@dataclass(slots=True)
class StoredRow:
    """One stored event as the real stores keep it."""

    position: int
    event_id: str
    stream_id: str
    version: int
    event_type: str
    data: bytes
    occurred_at: int
    correlation_id: str | None
    causation_id: str | None
    recorded_at: datetime
    origin: str = ""
    traceparent: str | None = None


def _uuid(value: str | None) -> UUID | None:
    return UUID(value) if value else None


def decode_row(codec: EventCodec, row: StoredRow) -> RecordedEvent:
    """Turn a stored row into a RecordedEvent, or raise UndecodableEventError naming it."""
    try:
        event = codec.decode(row.data, row.event_type,
                             correlation_id=_uuid(row.correlation_id),
                             causation_id=_uuid(row.causation_id))
    except Exception as exc:
        raise undecodable(row.position, row.stream_id, row.version, exc) from None
    return RecordedEvent(row.position, row.stream_id, row.version, event, row.recorded_at,
                         row.origin, row.traceparent)


class InMemoryEventStore(EventStore):
    """Everything in process memory; lost when the process ends."""

    def __init__(self, codec: EventCodec | None = None) -> None:
        self.codec = codec or EventCodec()
        self.rows: list[StoredRow] = []
        self._streams: dict[str, list[StoredRow]] = {}
        self._ids: dict[str, StoredRow] = {}
        self._lock = asyncio.Lock()

    async def append(self, stream_id: str, events: Sequence[DomainEvent],
                     expected_version: int) -> int:
        stream = self._streams.get(stream_id, [])
        if not events:
            return len(stream)
        ids = [str(e.id) for e in events]
        async with self._lock:
            stream = self._streams.setdefault(stream_id, [])
            actual = len(stream)
            if expected_version not in (ANY_VERSION, actual) or any(i in self._ids for i in ids):
                if self._stored_in_order(stream_id, ids):
                    return actual  # the same events again: an idempotent retry
                raise ConcurrencyError(stream_id, expected_version, actual)
            for version, event in enumerate(events, start=actual + 1):
                row = self._row(stream_id, version, event)
                self.rows.append(row)
                stream.append(row)
                self._ids[row.event_id] = row
            return actual + len(events)

    async def append_streams(self, batch: Sequence[StreamAppend]) -> list[int]:
        check_batch(batch)
        async with self._lock:
            versions = [len(self._streams.get(s, [])) for s, _, _ in batch]
            fits = all(not events or (expected in (ANY_VERSION, version)
                                      and not any(str(e.id) in self._ids for e in events))
                       for (_, events, expected), version in zip(batch, versions, strict=True))
            if not fits:
                stored = {str(e.id): (row.stream_id, row.version)
                          for _, events, _ in batch for e in events
                          if (row := self._ids.get(str(e.id))) is not None}
                actual = {s: v for (s, _, _), v in zip(batch, versions, strict=True)}
                result = refused_batch(batch, actual, stored, last_try=True)
                assert result is not None  # with last_try it returns or raises
                return result
            out = []
            for (stream_id, events, _), version in zip(batch, versions, strict=True):
                stream = self._streams.setdefault(stream_id, []) if events else []
                for v, event in enumerate(events, start=version + 1):
                    row = self._row(stream_id, v, event)
                    self.rows.append(row)
                    stream.append(row)
                    self._ids[row.event_id] = row
                out.append(version + len(events))
            return out

    async def record_foreign(self, event: DomainEvent, origin: str) -> RecordedEvent:
        check_origin(origin)
        async with self._lock:
            row = self._ids.get(str(event.id))
            if row is None:
                stream = self._streams.setdefault(event.stream_id, [])
                row = self._row(event.stream_id, len(stream) + 1, event, origin)
                self.rows.append(row)
                stream.append(row)
                self._ids[row.event_id] = row
            return self._decode(row)

    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        row = self._ids.get(str(event_id))
        return None if row is None else self._decode(row)

    def _stored_in_order(self, stream_id: str, ids: list[str]) -> bool:
        """True if every id is stored in this stream, at consecutive versions in this order."""
        rows = [self._ids.get(i) for i in ids]
        if any(r is None or r.stream_id != stream_id for r in rows):
            return False
        versions = [r.version for r in rows if r is not None]
        return versions == list(range(versions[0], versions[0] + len(versions)))

    def _row(self, stream_id: str, version: int, event: DomainEvent,
             origin: str = "") -> StoredRow:
        return StoredRow(
            position=len(self.rows) + 1, event_id=str(event.id), stream_id=stream_id,
            version=version, event_type=event.event_type, data=self.codec.encode(event),
            occurred_at=epoch_micros(event.occurred_at),
            correlation_id=str(event.correlation_id) if event.correlation_id else None,
            causation_id=str(event.causation_id) if event.causation_id else None,
            recorded_at=utc_now(), origin=origin, traceparent=traceparent(),
        )

    def _decode(self, row: StoredRow) -> RecordedEvent:
        return decode_row(self.codec, row)

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        rows = self._streams.get(stream_id, [])[max(from_version, 1) - 1:]
        return [self._decode(r) for r in rows]

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        start = max(from_position, 1) - 1
        rows = self.rows[start:start + limit]
        return until_undecodable(lambda out: out.extend(map(self._decode, rows)))

    async def read_last(self, limit: int, before: int | None = None) -> list[RecordedEvent]:
        end = len(self.rows) if before is None else min(max(before - 1, 0), len(self.rows))
        rows = self.rows[max(end - limit, 0):end]
        return until_undecodable(lambda out: out.extend(map(self._decode, reversed(rows))))[::-1]

    async def count_after(self, position: int, limit: int = 1_000_000) -> int:
        return min(max(len(self.rows) - max(position, 0), 0), limit)

    async def read_by_type(self, event_type: str, since: datetime | None = None,
                           limit: int = 10_000, from_position: int = 1) -> list[RecordedEvent]:
        floor = epoch_micros(since) if since else None
        rows = [r for r in self.rows[max(from_position, 1) - 1:]
                if r.event_type == event_type and (floor is None or r.occurred_at >= floor)]
        return [self._decode(r) for r in rows[:limit]]

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, []))

    async def head_position(self) -> int:
        return len(self.rows)

    async def close(self) -> None:
        return None


class InMemoryDocumentStore(DocumentStore):
    """Documents in dicts, stored as JSON so values make the same round trip as in a database."""

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._docs: dict[tuple[str, str], bytes] = {}
        self._keys: dict[str, list[str]] = {}
        """Each collection's keys, sorted: the index that scans read a range of."""
        self._checkpoints: dict[str, int] = {}
        self._inbox: dict[tuple[str, str], float] = {}
        """When (by `wall_clock`) each (consumer, message id) was written."""
        self._leases: dict[str, tuple[str, float, int]] = {}
        """Owner, expiry and generation by lease name."""
        self._generations = 0
        """The last generation given to a lease."""
        self._wall_clock = wall_clock
        """Seconds since the epoch, by which leases expire and inbox entries age."""

    async def get(self, collection: str, key: str) -> Document | None:
        data = self._docs.get((collection, key))
        return None if data is None else decode_document(data)

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        return self._read(collection, self._range(collection, KeyRange.of(prefix)))

    def _range(self, collection: str, keys: KeyRange) -> list[str]:
        """The keys of the collection in the range, in order."""
        index = self._keys.get(collection, [])
        start = (bisect.bisect_right if keys.lower_open else bisect.bisect_left)(
            index, keys.lower)
        end = len(index) if keys.upper is None else bisect.bisect_left(index, keys.upper)
        return index[start:end]

    def _read(self, collection: str, keys: list[str]) -> list[tuple[str, Document]]:
        return [(k, decode_document(self._docs[(collection, k)])) for k in keys]

    def _put(self, collection: str, key: str, data: bytes) -> None:
        if (collection, key) not in self._docs:
            bisect.insort(self._keys.setdefault(collection, []), key)
        self._docs[(collection, key)] = data

    def _delete(self, collection: str, key: str) -> None:
        if self._docs.pop((collection, key), None) is not None:
            index = self._keys[collection]
            del index[bisect.bisect_left(index, key)]

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        if expected is not None and checkpoint is None:
            raise ValueError("an expected checkpoint position needs a checkpoint to move")
        if fence is not None and self._leases.get(fence.lease, ("", 0.0, 0))[::2] != (
                fence.owner, fence.generation):
            return False
        if inbox is not None and inbox in self._inbox:
            return False
        if checkpoint is not None:
            current = self._checkpoints.get(checkpoint[0], 0)
            if checkpoint[1] <= current or (expected is not None and current != expected):
                return False
        encoded = {k: encode_document(v) for k, v in changes.puts.items()}
        for collection, key in changes.deletes:
            self._delete(collection, key)
        for (collection, key), data in encoded.items():
            self._put(collection, key, data)
        if checkpoint is not None:
            self._checkpoints[checkpoint[0]] = checkpoint[1]
        if inbox is not None:
            self._inbox[inbox] = self._wall_clock()
        return True

    async def checkpoint(self, name: str) -> int:
        return self._checkpoints.get(name, 0)

    async def checkpoints(self) -> dict[str, int]:
        return dict(self._checkpoints)

    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        for collection in collections:
            for key in self._keys.pop(collection, []):
                del self._docs[(collection, key)]
        self._checkpoints[name] = 0

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        now = self._wall_clock()
        holder = self._leases.get(name)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return None
        if holder is not None and holder[0] == owner:
            generation = holder[2]
        else:
            self._generations += 1
            generation = self._generations
        self._leases[name] = (owner, now + seconds, generation)
        return generation

    async def release_lease(self, name: str, owner: str) -> None:
        if self._leases.get(name, ("", 0.0, 0))[0] == owner:
            del self._leases[name]

    async def has_seen(self, consumer: str, message_id: str) -> bool:
        return (consumer, message_id) in self._inbox

    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        cutoff = self._wall_clock() - older_than.total_seconds()
        old = sorted((at, entry) for entry, at in self._inbox.items() if at < cutoff)[:limit]
        for _, entry in old:
            del self._inbox[entry]
        return len(old)

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        keys = self._range(collection, KeyRange.of(prefix, after=after, before=before))
        return self._read(collection, keys[:max(limit, 0)])
