"""The event store on Cosmos DB, in the specification's container (`Events`, partitioned on
`/partitionKey`) and item shape, so that the .NET services and this one read each other's
events.

An item: `id` (ours: the event's id), `aggregateId` and `partitionKey` (the stream),
`eventType`, `eventData` (the event's JSON as .NET writes it, as a string), `version` (in the
stream), `timestamp` (when it occurred, as .NET writes a time); beside them, ours only:
`occurredAt` and `recordedAt` (microseconds since the epoch), `correlationId`,
`causationId`, `origin` and, when tracing is on, `traceparent` (the trace context of the
append, see `mussikon.tracing`). An item written by the .NET services has only the
specification's fields; it is read all the same (its recording time is its `_ts`).

Concurrency: the events of one append are created in one transactional batch in their
stream's partition, at versions expected + 1, + 2 …; the container's unique key on
`/version` (per partition) lets one writer win each version, whatever item ids the writers
use, and a create of an id the partition holds fails too. A refused batch writes nothing.
There is no order across streams: the global-order methods raise `NoGlobalOrder`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from azure.cosmos import exceptions

from mussikon.adapters.store.cosmos.account import BATCH_LIMIT, CosmosAccount
from mussikon.adapters.store.decoding import undecodable
from mussikon.domain.events import DomainEvent
from mussikon.domain.instant import epoch_micros, format_dotnet, utc_now
from mussikon.ports.event_store import (
    ANY_VERSION,
    EventStore,
    NoGlobalOrder,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
    StreamAppend,
    check_batch,
    check_origin,
    refused_batch,
)
from mussikon.tracing import traceparent
from mussikon.wire import EventCodec

_TRIES = 5
"""Attempts of an append at the end of a stream (`ANY_VERSION`) that keeps losing races."""

_KNOWN_STREAMS = 10_000
"""Streams whose highest known version the store remembers (the most recently used)."""

_NO_ORDER = ("Cosmos DB keeps no order across streams: there is no global position to read "
             "from (streams are ordered by version; see docs/cosmos.md)")


@contextlib.asynccontextmanager
async def cosmos_errors(what: str) -> AsyncIterator[None]:
    """Turn the SDK's transient failures (timeouts, throttling, the service or the network
    down) into StoreUnavailable naming the operation."""
    try:
        yield
    except exceptions.CosmosBatchOperationError:
        raise
    except exceptions.CosmosHttpResponseError as error:
        if error.status_code in (408, 429, 449, 500, 502, 503) or error.status_code is None:
            raise StoreUnavailable(f"Cosmos DB {what}: {error.status_code} "
                                   f"{error.reason or ''}".strip()) from None
        raise
    except OSError as error:
        raise StoreUnavailable(f"Cosmos DB {what}: {type(error).__name__}") from None


def batch_status(error: exceptions.CosmosBatchOperationError) -> int:
    """The status of the operation that failed a batch (409: an id or unique key taken)."""
    responses = error.operation_responses or []
    index = error.error_index if error.error_index is not None else -1
    if 0 <= index < len(responses):
        return int(responses[index].get("statusCode", error.status_code or 0))
    return int(error.status_code or 0)


class CosmosEventStore(EventStore):
    """Streams in the events container of one Cosmos DB account."""

    def __init__(self, account: CosmosAccount, codec: EventCodec | None = None) -> None:
        self.account = account
        self.codec = codec or EventCodec()
        self._container = account.events
        self._meter = account.meter
        self._known: OrderedDict[str, int] = OrderedDict()
        """A version each stream is known to hold, learnt from this store's reads and writes
        (a lower bound of its version: versions are never removed)."""

    def _learn(self, stream_id: str, version: int) -> None:
        if version > self._known.get(stream_id, 0):
            self._known[stream_id] = version
        if stream_id in self._known:
            self._known.move_to_end(stream_id)
            if len(self._known) > _KNOWN_STREAMS:
                self._known.popitem(last=False)

    def _holds(self, stream_id: str, version: int) -> bool:
        """Whether the stream is known to hold `version` already, so that an append after it
        leaves no gap: with the unique key on /version, such an append is one request."""
        return self.account.version_is_unique and self._known.get(stream_id, 0) >= version

    # --- writing ------------------------------------------------------------------------

    def item(self, stream_id: str, version: int, event: DomainEvent,
             origin: str = "") -> dict[str, Any]:
        """The item that stores `event` at `version` of `stream_id`."""
        item: dict[str, Any] = {
            "id": str(event.id),
            "aggregateId": stream_id,
            "eventType": event.event_type,
            "eventData": self.codec.encode(event).decode(),
            "version": version,
            "timestamp": format_dotnet(event.occurred_at),
            "partitionKey": stream_id,
            "occurredAt": epoch_micros(event.occurred_at),
            "recordedAt": epoch_micros(utc_now()),
            "correlationId": str(event.correlation_id) if event.correlation_id else None,
            "causationId": str(event.causation_id) if event.causation_id else None,
            "origin": origin,
        }
        if (context := traceparent()) is not None:
            item["traceparent"] = context
        return item

    async def _create(self, operation: str, stream_id: str, first_version: int,
                      events: Sequence[DomainEvent], origin: str = "") -> list[dict[str, Any]]:
        """Create the events' items at consecutive versions in one transactional batch;
        the items written."""
        items = [self.item(stream_id, v, e, origin)
                 for v, e in enumerate(events, start=first_version)]
        async with cosmos_errors(operation):
            await self._container.execute_item_batch(
                [("create", (item,)) for item in items], partition_key=stream_id,
                raw_response_hook=self._meter.hook(operation))
        return items

    async def append(self, stream_id: str, events: Sequence[DomainEvent],
                     expected_version: int) -> int:
        if not events:
            return await self.stream_version(stream_id)
        if len(events) > BATCH_LIMIT:
            raise StoreError(f"stream {stream_id!r}: an append to Cosmos DB holds at most "
                             f"{BATCH_LIMIT} events (one transactional batch), this one has "
                             f"{len(events)}")
        for attempt in range(_TRIES):
            # Versions never go down: a stream at `expected` now is at it or beyond when the
            # batch lands, and beyond means its first version is taken (the unique key).
            base = expected_version
            if expected_version != 0 and not (attempt == 0 and expected_version != ANY_VERSION
                                              and self._holds(stream_id, expected_version)):
                base = await self.stream_version(stream_id)
                if expected_version not in (ANY_VERSION, base):
                    stored = await self._stored(stream_id, [str(e.id) for e in events])
                    refused_batch([(stream_id, events, expected_version)], {stream_id: base},
                                  stored, last_try=True)
            try:
                await self._create("append", stream_id, base + 1, events)
                self._learn(stream_id, base + len(events))
                return base + len(events)
            except exceptions.CosmosBatchOperationError as error:
                if batch_status(error) != 409:
                    raise StoreError(f"stream {stream_id!r}: Cosmos DB refused the append "
                                     f"({batch_status(error)})") from None
            actual = await self.stream_version(stream_id)
            stored = await self._stored(stream_id, [str(e.id) for e in events])
            result = refused_batch([(stream_id, events, expected_version)], {stream_id: actual},
                                   stored, last_try=attempt == _TRIES - 1)
            if result is not None:
                return result[0]
        raise AssertionError("unreachable: the last try returns or raises")

    async def append_streams(self, batch: Sequence[StreamAppend]) -> list[int]:
        check_batch(batch)
        writing = [entry for entry in batch if entry[1]]
        if len(writing) > 1:
            raise StoreError("Cosmos DB writes one stream per transaction (a transactional "
                             f"batch is one partition): this batch writes {len(writing)} "
                             "streams; append to each on its own")
        out = []
        for stream_id, events, expected in batch:
            out.append(await self.append(stream_id, events, expected) if events
                       else await self.stream_version(stream_id))
        return out

    async def record_foreign(self, event: DomainEvent, origin: str) -> RecordedEvent:
        check_origin(origin)
        for _ in range(_TRIES):
            found = await self.find_event(event.id)
            if found is not None:
                return found
            version = await self.stream_version(event.stream_id) + 1
            try:
                items = await self._create("record_foreign", event.stream_id, version, [event],
                                           origin)
            except exceptions.CosmosBatchOperationError as error:
                if batch_status(error) != 409:
                    raise StoreError(f"stream {event.stream_id!r}: Cosmos DB refused the "
                                     f"foreign event ({batch_status(error)})") from None
                continue  # its id or its version was taken meanwhile: look again
            return self.decode(items[0])
        raise StoreError(f"stream {event.stream_id!r}: the foreign event {event.id} could not "
                         f"be recorded in {_TRIES} tries (its stream kept moving)")

    # --- reading ------------------------------------------------------------------------

    async def _query(self, operation: str, query: str, parameters: dict[str, Any],
                     partition: str | None = None) -> list[dict[str, Any]]:
        """Every item the query finds, within one partition if `partition` is given, across
        all of them otherwise."""
        params = [{"name": name, "value": value} for name, value in parameters.items()]
        async with cosmos_errors(operation):
            if partition is None:
                pages = self._container.query_items(
                    query, parameters=params, raw_response_hook=self._meter.hook(operation))
            else:
                pages = self._container.query_items(
                    query, parameters=params, partition_key=partition,
                    raw_response_hook=self._meter.hook(operation))
            return [item async for item in pages]

    async def _stored(self, stream_id: str, ids: list[str]) -> dict[str, tuple[str, int]]:
        """Where the stream holds any of these event ids: id -> (stream id, version)."""
        rows = await self._query(
            "append", "SELECT c.id, c.version FROM c WHERE c.partitionKey = @stream "
                      "AND ARRAY_CONTAINS(@ids, c.id)", {"@stream": stream_id, "@ids": ids},
            stream_id)
        return {row["id"]: (stream_id, int(row["version"])) for row in rows}

    def decode(self, item: dict[str, Any]) -> RecordedEvent:
        """The event an item holds, ours or written by the .NET services; UndecodableEventError
        (at position 0: there are no positions) if it cannot be read."""
        stream_id = str(item.get("partitionKey", ""))
        version = item.get("version")
        try:
            event = self.codec.decode(
                item["eventData"], item.get("eventType") or None,
                correlation_id=_uuid(item.get("correlationId")),
                causation_id=_uuid(item.get("causationId")))
            recorded = item.get("recordedAt")
            recorded_at = (datetime.fromtimestamp(recorded / 1e6, UTC) if recorded is not None
                           else datetime.fromtimestamp(item.get("_ts", 0), UTC))
        except Exception as exc:
            raise undecodable(0, stream_id, version if isinstance(version, int) else 0,
                              exc) from None
        return RecordedEvent(0, stream_id, int(version or 0), event, recorded_at,
                             str(item.get("origin") or ""), item.get("traceparent") or None)

    async def find_event(self, event_id: UUID) -> RecordedEvent | None:
        items = await self._query("find_event", "SELECT * FROM c WHERE c.id = @id",
                                  {"@id": str(event_id)})
        items.sort(key=lambda i: (str(i.get("partitionKey")), int(i.get("version") or 0)))
        return self.decode(items[0]) if items else None

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        # From the version before too (when there is one): in the same request, it tells that
        # the stream holds it even when nothing follows, so an append after it is one request.
        first = max(from_version, 1)
        items = await self._query(
            "read_stream", "SELECT * FROM c WHERE c.partitionKey = @stream AND c.version >= "
                           "@from ORDER BY c.version",
            {"@stream": stream_id, "@from": max(first - 1, 1)}, stream_id)
        if items:
            self._learn(stream_id, int(items[-1].get("version") or 0))
        return [self.decode(item) for item in items if int(item.get("version") or 0) >= first]

    async def read_by_type(self, event_type: str, since: datetime | None = None,
                           limit: int = 10_000, from_position: int = 1) -> list[RecordedEvent]:
        """Events of one type, across every stream, that occurred at or after `since`, by the
        time they occurred (then stream and version). Items written by the .NET services are
        found by their `timestamp` (to the second, then exactly once read)."""
        if from_position > 1:
            raise NoGlobalOrder(_NO_ORDER)
        query = "SELECT * FROM c WHERE c.eventType = @type"
        parameters: dict[str, Any] = {"@type": event_type}
        if since is not None:
            query += (" AND (c.occurredAt >= @micros OR (NOT IS_DEFINED(c.occurredAt)"
                      " AND c.timestamp >= @second))")
            parameters["@micros"] = epoch_micros(since)
            parameters["@second"] = format_dotnet(since.replace(microsecond=0))[:-1]
        records = [self.decode(item) for item in await self._query("read_by_type", query,
                                                                    parameters)]
        if since is not None:
            records = [r for r in records if r.event.occurred_at >= since]
        records.sort(key=lambda r: (epoch_micros(r.event.occurred_at), r.stream_id, r.version))
        return records[:limit]

    async def stream_version(self, stream_id: str) -> int:
        rows: list[Any] = await self._query(
            "stream_version", "SELECT VALUE MAX(c.version) FROM c WHERE c.partitionKey = "
                              "@stream", {"@stream": stream_id}, stream_id)
        version = int(rows[0]) if rows and rows[0] is not None else 0
        self._learn(stream_id, version)
        return version

    # --- the global order, which Cosmos DB does not have --------------------------------

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        raise NoGlobalOrder(_NO_ORDER)

    async def read_last(self, limit: int, before: int | None = None) -> list[RecordedEvent]:
        raise NoGlobalOrder(_NO_ORDER)

    async def count_after(self, position: int, limit: int = 1_000_000) -> int:
        raise NoGlobalOrder(_NO_ORDER)

    async def head_position(self) -> int:
        raise NoGlobalOrder(_NO_ORDER)

    async def close(self) -> None:
        await self.account.close()


def _uuid(value: object) -> UUID | None:
    return UUID(str(value)) if value else None
