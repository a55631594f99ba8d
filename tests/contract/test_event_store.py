"""The event store contract: every adapter passes these tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from mussikon import tracing
from mussikon.domain.events import (
    DomainEvent,
    EventCreatedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
)
from mussikon.domain.instant import Instant, ticks_of
from mussikon.ports.event_store import (
    ANY_VERSION,
    NO_STREAM,
    ConcurrencyError,
    RecordedEvent,
    StoreError,
    UndecodableEventError,
)
from mussikon.wire import EventCodec
from tests.contract.store_adapters import STORE_ADAPTERS, StoresUnderTest, open_stores
from tests.tracing_kit import recording_spans


@pytest.fixture(params=STORE_ADAPTERS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoresUnderTest]:
    async with open_stores(request.param, tmp_path, request) as opened:
        yield opened


def requires(stores: StoresUnderTest, capability: str) -> None:
    """Skip a test of what this store does not have (Cosmos DB: docs/cosmos.md says why)."""
    if not getattr(stores, capability):
        pytest.skip(f"this store has no {capability.replace('_', ' ')}")


def registered(n: int = 0, **extra: Any) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=f"m-{n}", email=f"m{n}@example.com",
                                   name=f"Musician {n}", genres=("jazz", "salsa"),
                                   location="Bogotá", **extra)


def created(n: int = 0, **extra: Any) -> EventCreatedEvent:
    return EventCreatedEvent(gig_id=f"g-{n}", organizer_id="o-1", title=f"Gig {n}",
                             event_date=datetime(2030, 5, 1, 21, 30, tzinfo=UTC),
                             location="Medellín", genre="jazz", budget=Decimal("1500.50"),
                             **extra)


def ids(records: list[RecordedEvent]) -> list[Any]:
    return [r.event.id for r in records]


async def read_everything(stores: StoresUnderTest, limit: int = 1000) -> list[RecordedEvent]:
    await stores.settle()
    if stores.everything is not None:
        return await stores.everything()
    out: list[RecordedEvent] = []
    position = 1
    while batch := await stores.events.read_all(position, limit):
        out.extend(batch)
        position = batch[-1].position + 1
    return out


# --- append and versions ------------------------------------------------------------------


async def test_appends_get_consecutive_versions(stores: StoresUnderTest) -> None:
    store = stores.events
    assert await store.append("s", [registered(1), registered(2)], NO_STREAM) == 2
    assert await store.append("s", [registered(3)], 2) == 3
    records = await store.read_stream("s")
    assert [r.version for r in records] == [1, 2, 3]
    assert [r.stream_id for r in records] == ["s", "s", "s"]
    assert await store.stream_version("s") == 3


async def test_an_unknown_stream_is_empty_at_version_zero(stores: StoresUnderTest) -> None:
    assert await stores.events.read_stream("nobody") == []
    assert await stores.events.stream_version("nobody") == 0


async def test_read_stream_starts_at_from_version(stores: StoresUnderTest) -> None:
    events = [registered(n) for n in range(5)]
    await stores.events.append("s", events, NO_STREAM)
    records = await stores.events.read_stream("s", from_version=3)
    assert [r.version for r in records] == [3, 4, 5]
    assert ids(records) == [e.id for e in events[2:]]
    assert await stores.events.read_stream("s", from_version=6) == []


@pytest.mark.parametrize(("expected", "actual"), [(1, 2), (5, 2), (NO_STREAM, 2)],
                         ids=["below", "above", "no-stream"])
async def test_a_wrong_expected_version_names_both_and_writes_nothing(
        stores: StoresUnderTest, expected: int, actual: int) -> None:
    await stores.events.append("s", [registered(1), registered(2)], NO_STREAM)
    late = registered(3)
    with pytest.raises(ConcurrencyError) as raised:
        await stores.events.append("s", [late], expected)
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == (
        "s", expected, actual)
    assert f"expected version {expected}" in str(raised.value)
    assert f"at version {actual}" in str(raised.value)
    assert await stores.events.stream_version("s") == actual
    assert late.id not in ids(await read_everything(stores))


async def test_any_version_appends_at_the_end(stores: StoresUnderTest) -> None:
    assert await stores.events.append("s", [registered(1)], ANY_VERSION) == 1
    assert await stores.events.append("s", [registered(2), registered(3)], ANY_VERSION) == 3
    assert [r.version for r in await stores.events.read_stream("s")] == [1, 2, 3]


async def test_a_conflicting_multi_event_append_writes_nothing(stores: StoresUnderTest) -> None:
    await stores.events.append("s", [registered(1)], NO_STREAM)
    batch = [registered(n) for n in range(2, 6)]
    with pytest.raises(ConcurrencyError):
        await stores.events.append("s", batch, NO_STREAM)
    assert await stores.events.stream_version("s") == 1
    everything = ids(await read_everything(stores))
    assert not {e.id for e in batch} & set(everything)


async def test_a_batch_that_fails_halfway_writes_nothing(stores: StoresUnderTest) -> None:
    requires(stores, "ids_unique_across_streams")
    elsewhere = registered(1)
    await stores.events.append("other", [elsewhere], NO_STREAM)
    fresh = registered(2)
    with pytest.raises(StoreError):  # the second event's id is already stored in another stream
        await stores.events.append("s", [fresh, elsewhere], NO_STREAM)
    assert await stores.events.stream_version("s") == 0
    assert fresh.id not in ids(await read_everything(stores))


async def test_appending_the_same_events_again_is_a_no_op(stores: StoresUnderTest) -> None:
    batch = [registered(1), registered(2)]
    assert await stores.events.append("s", batch, NO_STREAM) == 2
    assert await stores.events.append("s", batch, NO_STREAM) == 2
    assert await stores.events.append("s", batch, ANY_VERSION) == 2
    third = registered(3)
    await stores.events.append("s", [third], 2)
    # a retry that arrives after someone else wrote still reports the stream's version
    assert await stores.events.append("s", batch, NO_STREAM) == 3
    assert ids(await stores.events.read_stream("s")) == [batch[0].id, batch[1].id, third.id]
    assert len(await read_everything(stores)) == 3


async def test_the_same_events_in_another_order_are_not_a_retry(stores: StoresUnderTest) -> None:
    first, second = registered(1), registered(2)
    await stores.events.append("s", [first, second], NO_STREAM)
    with pytest.raises(ConcurrencyError):
        await stores.events.append("s", [second, first], NO_STREAM)


async def test_racing_appends_to_one_stream_have_one_winner(stores: StoresUnderTest) -> None:
    await stores.events.append("s", [registered(0)], NO_STREAM)
    results = await asyncio.gather(
        *(stores.events.append("s", [registered(n)], 1) for n in range(1, 9)),
        return_exceptions=True)
    assert results.count(2) == 1
    losers = [r for r in results if r != 2]
    assert all(isinstance(r, ConcurrencyError) and r.actual == 2 for r in losers)
    assert await stores.events.stream_version("s") == 2


# --- the global order ---------------------------------------------------------------------


async def test_read_all_returns_every_event_once_in_increasing_positions(
        stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    assert await stores.events.read_all() == []
    assert await stores.events.head_position() == 0
    appended: list[DomainEvent] = []
    for n in range(4):
        batch = [registered(10 * n + k) for k in range(n + 1)]
        await stores.events.append(f"s{n % 2}", batch, ANY_VERSION)
        appended.extend(batch)
    everything = await read_everything(stores)
    assert ids(everything) == [e.id for e in appended]
    positions = [r.position for r in everything]
    assert positions == sorted(set(positions)) and positions[0] >= 1
    assert await stores.events.head_position() == positions[-1]


async def test_read_all_pages_by_position_and_limit(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    for n in range(7):
        await stores.events.append(f"s{n}", [registered(n)], NO_STREAM)
    everything = await read_everything(stores)
    assert [r.position for r in await read_everything(stores, limit=2)] == [
        r.position for r in everything]
    third = everything[2].position
    page = await stores.events.read_all(third, limit=3)
    assert [r.position for r in page] == [r.position for r in everything[2:5]]
    assert await stores.events.read_all(everything[-1].position + 1) == []


async def test_read_last_gives_the_newest_events_oldest_first(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    assert await stores.events.read_last(5) == []
    for n in range(4):  # appends of 1, 2, 3 and 4 events: positions need not be consecutive
        await stores.events.append(f"s{n}", [registered(10 * n + k) for k in range(n + 1)],
                                   NO_STREAM)
    everything = await read_everything(stores)
    assert len(everything) == 10
    assert await stores.events.read_last(3) == everything[-3:]
    assert await stores.events.read_last(100) == everything
    assert await stores.events.read_last(1) == everything[-1:]
    fifth = everything[4].position
    assert await stores.events.read_last(2, before=fifth) == everything[2:4]
    assert await stores.events.read_last(100, before=fifth) == everything[:4]
    assert await stores.events.read_last(5, before=everything[0].position) == []
    assert await stores.events.read_last(2, before=everything[-1].position + 1) \
        == everything[-2:]


async def test_read_last_pages_backwards_through_everything(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    for n in range(7):
        await stores.events.append("s", [registered(n)], ANY_VERSION)
    everything = await read_everything(stores)
    pages: list[list[RecordedEvent]] = []
    before: int | None = None
    while page := await stores.events.read_last(3, before=before):
        pages.append(page)
        before = page[0].position
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [r for p in reversed(pages) for r in p] == everything


async def test_read_last_ends_at_an_undecodable_row_and_names_it(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    first, last = registered(1), registered(2)
    await stores.events.append("good", [first], NO_STREAM)
    await stores.insert_raw("bad", 1, "NoSuchEvent", '{"EventType": "NoSuchEvent"}')
    await stores.events.append("good", [last], 1)
    await stores.settle()

    newest = await stores.events.read_last(10)
    assert ids(newest) == [last.id]  # the list ends after the bad row
    with pytest.raises(UndecodableEventError) as bad:
        await stores.events.read_last(10, before=newest[0].position)
    assert bad.value.stream_id == "bad" and "NoSuchEvent" in str(bad.value)
    assert ids(await stores.events.read_last(10, before=bad.value.position)) == [first.id]


async def test_count_after_counts_events_not_positions(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    assert await stores.events.count_after(0) == 0
    for n in range(3):
        await stores.events.append(f"s{n}", [registered(10 * n + k) for k in range(n + 1)],
                                   NO_STREAM)
    everything = await read_everything(stores)
    assert await stores.events.count_after(0) == 6
    for k, record in enumerate(everything):
        assert await stores.events.count_after(record.position) == 5 - k
    assert await stores.events.count_after(everything[-1].position + 1000) == 0
    assert await stores.events.count_after(0, limit=4) == 4
    assert await stores.events.count_after(everything[3].position, limit=4) == 2


async def test_read_by_type_starts_at_a_position(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    events = [registered(n) for n in range(5)]
    for event in events:
        await stores.events.append("s", [event], ANY_VERSION)
    await stores.events.append("g", [created(1)], NO_STREAM)
    everything = await read_everything(stores)
    by_type = stores.events.read_by_type
    third = everything[2].position
    assert ids(await by_type("MusicianRegisteredEvent", from_position=third)) == [
        e.id for e in events[2:]]
    assert ids(await by_type("MusicianRegisteredEvent", from_position=third + 1,
                             limit=2)) == [e.id for e in events[3:5]]
    assert await by_type("MusicianRegisteredEvent",
                         from_position=everything[-1].position) == []


async def test_read_by_type_filters_by_type_and_time(stores: StoresUnderTest) -> None:
    requires(stores, "global_order")  # Cosmos DB: by the time they occurred (tests/cosmos)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    old = registered(1, occurred_at=day - timedelta(days=2))
    exactly = registered(2, occurred_at=day)
    later = registered(3, occurred_at=day + timedelta(hours=1))
    gig = created(1, occurred_at=day + timedelta(hours=2))
    await stores.events.append("a", [later, old], NO_STREAM)
    await stores.events.append("b", [gig, exactly], NO_STREAM)
    await stores.settle()
    by_type = stores.events.read_by_type
    assert ids(await by_type("MusicianRegisteredEvent")) == [later.id, old.id, exactly.id]
    assert ids(await by_type("MusicianRegisteredEvent", since=day)) == [later.id, exactly.id]
    assert ids(await by_type("MusicianRegisteredEvent", since=day, limit=1)) == [later.id]
    assert ids(await by_type("EventCreatedEvent", since=day)) == [gig.id]
    assert await by_type("PaymentProcessedEvent") == []


# --- what survives the round trip ---------------------------------------------------------


async def test_concrete_types_and_exact_values_survive(stores: StoresUnderTest) -> None:
    seventh_digit = Instant(2026, 1, 2, 3, 4, 5, 123456, UTC, tick=7)
    gig = created(1, occurred_at=seventh_digit)
    payment = PaymentProcessedEvent(payment_id="p-1", contract_id="c-1",
                                    amount=Decimal("0.10"), status="Completed",
                                    transaction_id="tx-9")
    musician = registered(1)
    await stores.events.append("s", [gig, payment, musician], NO_STREAM)
    from_stream = [r.event for r in await stores.events.read_stream("s")]
    from_all = [r.event for r in await read_everything(stores)]
    for events in (from_stream, from_all):
        assert events == [gig, payment, musician]
        assert [type(e) for e in events] == [EventCreatedEvent, PaymentProcessedEvent,
                                             MusicianRegisteredEvent]
        read_gig, read_payment = events[0], events[1]
        assert isinstance(read_gig, EventCreatedEvent)
        assert isinstance(read_payment, PaymentProcessedEvent)
        assert str(read_gig.budget) == "1500.50" and str(read_payment.amount) == "0.10"
        assert read_gig.occurred_at == seventh_digit and ticks_of(read_gig.occurred_at) == 7
        assert read_gig.event_date == datetime(2030, 5, 1, 21, 30, tzinfo=UTC)


async def test_seventh_digits_survive_every_way_of_appending(stores: StoresUnderTest) -> None:
    """A time with a seventh fraction digit is kept whichever way it was appended (one event,
    several, at any version, several streams) and whichever way it is read, beside events of
    the same types without one, which stores may read by a faster path."""
    requires(stores, "atomic_across_streams")
    def tick(n: int) -> Instant:
        return Instant(2026, 1, 2, 3, 4, 5, 120000 + n, UTC, tick=n % 9 + 1)

    plain_time = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)
    written: list[tuple[str, list[DomainEvent], int]] = [
        ("one", [created(1, occurred_at=tick(1))], NO_STREAM),
        ("one", [created(2, occurred_at=plain_time)], 1),
        ("several", [registered(3, occurred_at=tick(3)), registered(4)], NO_STREAM),
        ("any", [dataclasses.replace(created(5), event_date=tick(5))], ANY_VERSION),
        ("any", [registered(6), registered(7, occurred_at=tick(7))], ANY_VERSION),
    ]
    store = stores.events
    for stream_id, events, expected in written:
        await store.append(stream_id, events, expected)
    batch_events: list[DomainEvent] = [registered(8, occurred_at=tick(8)), registered(9)]
    await store.append_streams([("batch-a", batch_events[:1], NO_STREAM),
                                ("batch-b", batch_events[1:], NO_STREAM)])
    expected_events = [e for _, events, _ in written for e in events] + batch_events

    def times(events: Sequence[DomainEvent]) -> list[tuple[Any, ...]]:
        return [(e.occurred_at, ticks_of(e.occurred_at),
                 ticks_of(e.event_date) if isinstance(e, EventCreatedEvent) else None)
                for e in events]

    from_all = [r.event for r in await read_everything(stores)]
    assert from_all == expected_events and times(from_all) == times(expected_events)
    from_streams = [r.event for s in ("one", "several", "any", "batch-a", "batch-b")
                    for r in await store.read_stream(s)]
    assert from_streams == expected_events and times(from_streams) == times(expected_events)
    by_type = [r.event for r in await store.read_by_type("EventCreatedEvent")]
    created_events = [e for e in expected_events if isinstance(e, EventCreatedEvent)]
    assert by_type == created_events and times(by_type) == times(created_events)


async def test_correlation_and_causation_ids_survive(stores: StoresUnderTest) -> None:
    correlation, causation = uuid4(), uuid4()
    event = registered(1, correlation_id=correlation, causation_id=causation)
    plain = registered(2)
    await stores.events.append("s", [event, plain], NO_STREAM)
    for records in (await stores.events.read_stream("s"), await read_everything(stores),
                    await stores.events.read_by_type("MusicianRegisteredEvent")):
        assert (records[0].event.correlation_id, records[0].event.causation_id) == (
            correlation, causation)
        assert (records[1].event.correlation_id, records[1].event.causation_id) == (None, None)


async def test_recorded_events_carry_an_aware_recording_time(stores: StoresUnderTest) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    await stores.events.append("s", [registered(1)], NO_STREAM)
    (record,) = await stores.events.read_stream("s")
    assert record.recorded_at.tzinfo is not None
    assert before <= record.recorded_at <= datetime.now(UTC) + timedelta(seconds=5)


async def test_an_undecodable_row_names_its_position_and_reading_goes_on(
        stores: StoresUnderTest) -> None:
    requires(stores, "global_order")
    first, last = registered(1), registered(2)
    await stores.events.append("good", [first], NO_STREAM)
    await stores.insert_raw("bad", 1, "NoSuchEvent", '{"EventType": "NoSuchEvent"}')
    await stores.insert_raw("bad", 2, "MusicianRegisteredEvent", "{not json")
    await stores.events.append("good", [last], 1)
    await stores.settle()

    batch = await stores.events.read_all(1)
    assert ids(batch) == [first.id]  # the batch ends before the bad row
    with pytest.raises(UndecodableEventError) as unknown:
        await stores.events.read_all(batch[-1].position + 1)
    assert unknown.value.stream_id == "bad" and unknown.value.version == 1
    assert f"position {unknown.value.position}" in str(unknown.value)
    assert "NoSuchEvent" in str(unknown.value)
    with pytest.raises(UndecodableEventError) as corrupt:
        await stores.events.read_all(unknown.value.position + 1)
    assert corrupt.value.position > unknown.value.position and corrupt.value.version == 2
    assert ids(await stores.events.read_all(corrupt.value.position + 1)) == [last.id]
    assert ids(await stores.events.read_stream("good")) == [first.id, last.id]


def without(event: DomainEvent, field: str, **changes: Any) -> str:
    """The event's stored JSON without `field`, with `changes` to its other fields."""
    body = {k: v for k, v in json.loads(EventCodec().encode(event)).items() if k != field}
    return json.dumps(body | changes)


def upcaster_reading_a_field_old_bodies_lack(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "Genres": body["Instruments"]}


async def test_every_store_raises_the_same_error_for_any_row_it_cannot_decode(
        stores: StoresUnderTest) -> None:
    """An unknown type, JSON that is not an event, a field missing, an upcaster that raises
    KeyError: every store raises UndecodableEventError naming the position, stream, version
    and reason, from every read; read_all ends its batch before the row and reads on after."""
    requires(stores, "global_order")
    stores.codec.register_upcaster("MusicianRegisteredEvent", 0,
                                   upcaster_reading_a_field_old_bodies_lack)
    first, last = registered(1), registered(2)
    bad_rows = [  # (event type, data, what the reason says)
        ("NoSuchEvent", '{"EventType": "NoSuchEvent"}', "'NoSuchEvent' is not registered"),
        ("MusicianRegisteredEvent", "{not json", "not valid JSON"),
        ("EventCreatedEvent", without(created(3), "Title"), "'Title' is missing"),
        ("MusicianRegisteredEvent", without(registered(4), "Version", Version=0),
         "KeyError: 'Instruments'"),
    ]
    await stores.events.append("good", [first], NO_STREAM)
    for version, (event_type, data, _) in enumerate(bad_rows, start=1):
        await stores.insert_raw("bad", version, event_type, data)
    await stores.events.append("good", [last], 1)
    await stores.settle()

    batch = await stores.events.read_all(1)
    assert ids(batch) == [first.id]
    position = batch[-1].position + 1
    for version, (_, _, reason) in enumerate(bad_rows, start=1):
        with pytest.raises(UndecodableEventError) as raised:
            await stores.events.read_all(position)
        error = raised.value
        assert (error.stream_id, error.version) == ("bad", version)
        assert error.position >= position
        assert reason in error.reason
        assert f"position {error.position}" in str(error)
        position = error.position + 1
    assert ids(await stores.events.read_all(position)) == [last.id]

    with pytest.raises(UndecodableEventError, match="KeyError: 'Instruments'") as raised:
        await stores.events.read_stream("bad", 4)
    assert raised.value.version == 4
    with pytest.raises(UndecodableEventError, match="not valid JSON"):
        await stores.events.read_by_type("MusicianRegisteredEvent")
    assert ids(await stores.events.read_stream("good")) == [first.id, last.id]


# --- several streams at once --------------------------------------------------------------


async def test_append_streams_writes_every_stream_and_returns_their_versions(
        stores: StoresUnderTest) -> None:
    requires(stores, "atomic_across_streams")
    store = stores.events
    await store.append("old", [registered(0)], NO_STREAM)
    await store.append("any", [registered(1), registered(2)], NO_STREAM)
    new = [registered(3), registered(4)]
    old, anywhere = [registered(5)], [registered(6), registered(7)]

    versions = await store.append_streams([("new", new, NO_STREAM), ("old", old, 1),
                                           ("any", anywhere, ANY_VERSION), ("idle", [], 0)])

    assert versions == [2, 2, 4, 0]
    assert ids(await store.read_stream("new")) == [e.id for e in new]
    assert [r.version for r in await store.read_stream("old")] == [1, 2]
    assert [r.version for r in await store.read_stream("any")] == [1, 2, 3, 4]
    assert ids(await store.read_stream("any", 3)) == [e.id for e in anywhere]
    assert await store.stream_version("idle") == 0
    everything = await read_everything(stores)
    assert ids(everything)[3:] == [e.id for e in (*new, *old, *anywhere)]  # in batch order


async def test_many_new_streams_in_one_call(stores: StoresUnderTest) -> None:
    requires(stores, "atomic_across_streams")
    batch = [(f"m-{n}", [registered(n)], NO_STREAM) for n in range(100)]

    assert await stores.events.append_streams(batch) == [1] * 100

    everything = await read_everything(stores)
    assert [r.stream_id for r in everything] == [f"m-{n}" for n in range(100)]
    assert [r.version for r in everything] == [1] * 100


@pytest.mark.parametrize("wrong", ["below", "above", "exists"])
async def test_one_stream_at_the_wrong_version_writes_nothing_anywhere(
        stores: StoresUnderTest, wrong: str) -> None:
    requires(stores, "atomic_across_streams")
    store = stores.events
    await store.append("s", [registered(1), registered(2)], NO_STREAM)
    expected = {"below": 1, "above": 3, "exists": NO_STREAM}[wrong]
    fine, late = registered(3), registered(4)

    with pytest.raises(ConcurrencyError) as raised:
        await store.append_streams([("fine", [fine], NO_STREAM), ("s", [late], expected)])

    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == (
        "s", expected, 2)
    assert await store.stream_version("fine") == 0 and await store.stream_version("s") == 2
    assert not {fine.id, late.id} & set(ids(await read_everything(stores)))


async def test_an_event_stored_in_another_stream_fails_the_whole_batch(
        stores: StoresUnderTest) -> None:
    elsewhere = registered(1)
    await stores.events.append("other", [elsewhere], NO_STREAM)
    fresh = registered(2)

    with pytest.raises(StoreError):
        await stores.events.append_streams([("a", [fresh], NO_STREAM),
                                            ("b", [elsewhere], NO_STREAM)])

    assert await stores.events.stream_version("a") == 0
    assert await stores.events.stream_version("b") == 0
    assert fresh.id not in ids(await read_everything(stores))


async def test_appending_the_same_streams_again_is_a_no_op(stores: StoresUnderTest) -> None:
    requires(stores, "atomic_across_streams")
    batch = [("a", [registered(1), registered(2)], NO_STREAM), ("b", [registered(3)], NO_STREAM)]
    assert await stores.events.append_streams(batch) == [2, 1]
    assert await stores.events.append_streams(batch) == [2, 1]
    await stores.events.append("b", [registered(4)], 1)
    # a retry that arrives after someone else wrote still reports the streams' versions
    assert await stores.events.append_streams(batch) == [2, 2]
    assert len(await read_everything(stores)) == 4


async def test_a_batch_half_of_which_is_stored_already_is_a_conflict(
        stores: StoresUnderTest) -> None:
    requires(stores, "atomic_across_streams")
    first = registered(1)
    await stores.events.append("a", [first], NO_STREAM)
    fresh = registered(2)

    with pytest.raises(ConcurrencyError) as raised:
        await stores.events.append_streams([("a", [first], NO_STREAM),
                                            ("b", [fresh], NO_STREAM)])

    assert raised.value.stream_id == "a"
    assert await stores.events.stream_version("b") == 0


async def test_a_stream_named_twice_in_one_batch_is_refused(stores: StoresUnderTest) -> None:
    with pytest.raises(ValueError, match="'s'"):
        await stores.events.append_streams([("s", [registered(1)], NO_STREAM),
                                            ("t", [registered(2)], NO_STREAM),
                                            ("s", [registered(3)], 1)])
    assert await stores.events.stream_version("t") == 0


async def test_racing_batches_over_one_stream_have_one_winner(stores: StoresUnderTest) -> None:
    requires(stores, "atomic_across_streams")
    await stores.events.append("shared", [registered(0)], NO_STREAM)
    results = await asyncio.gather(
        *(stores.events.append_streams([(f"own-{n}", [registered(10 + n)], NO_STREAM),
                                        ("shared", [registered(n)], 1)])
          for n in range(1, 9)),
        return_exceptions=True)

    winners = [r for r in results if r == [1, 2]]
    assert len(winners) == 1
    losers = [r for r in results if r != [1, 2]]
    assert all(isinstance(r, ConcurrencyError) and r.stream_id == "shared" and r.actual == 2
               for r in losers)
    assert await stores.events.stream_version("shared") == 2
    own = [await stores.events.stream_version(f"own-{n}") for n in range(1, 9)]
    assert sorted(own) == [0] * 7 + [1]


# --- events from other services -----------------------------------------------------------


async def test_a_foreign_event_is_recorded_at_the_end_of_its_stream_with_its_origin(
        stores: StoresUnderTest) -> None:
    foreign = registered(1, correlation_id=uuid4(), causation_id=uuid4())
    recorded = await stores.events.record_foreign(foreign, "rabbitmq")
    assert (recorded.stream_id, recorded.version, recorded.origin) == \
        (foreign.stream_id, 1, "rabbitmq")
    assert recorded.event == foreign
    assert (recorded.event.occurred_at, recorded.event.correlation_id,
            recorded.event.causation_id) == (foreign.occurred_at, foreign.correlation_id,
                                             foreign.causation_id)
    if stores.global_order:
        assert recorded.position == await stores.events.head_position()
    assert await stores.events.find_event(foreign.id) == recorded  # as it reads back
    # ours, appended to that stream afterwards, continue its versions
    assert await stores.events.append(foreign.stream_id, [registered(2)], 1) == 2
    assert [(r.version, r.origin) for r in await stores.events.read_stream(foreign.stream_id)] \
        == [(1, "rabbitmq"), (2, "")]


async def test_a_foreign_event_is_recorded_once_however_often(stores: StoresUnderTest) -> None:
    foreign = registered(1)
    first = await stores.events.record_foreign(foreign, "rabbitmq")
    again = [await stores.events.record_foreign(foreign, "rabbitmq") for _ in range(3)]
    assert again == [first] * 3
    assert await stores.events.record_foreign(foreign, "elsewhere") == first
    assert ids(await read_everything(stores)) == [foreign.id]
    assert await stores.events.stream_version(foreign.stream_id) == 1


async def test_racing_records_of_one_foreign_event_write_it_once(
        stores: StoresUnderTest) -> None:
    foreign = [registered(n) for n in range(4)]
    same_stream = [dataclasses.replace(registered(0), id=uuid4()) for _ in range(3)]
    results = await asyncio.gather(*(stores.events.record_foreign(e, "rabbitmq")
                                     for e in foreign * 4 + same_stream))
    for event in foreign:
        assert len({r for r in results if r.event.id == event.id}) == 1
    everything = await read_everything(stores)
    assert sorted(ids(everything)) == sorted(e.id for e in foreign + same_stream)
    assert [r.version for r in await stores.events.read_stream(foreign[0].stream_id)] == \
        [1, 2, 3, 4]


async def test_recording_one_of_our_own_events_as_foreign_changes_nothing(
        stores: StoresUnderTest) -> None:
    ours = registered(1)
    await stores.events.append("elsewhere", [ours], NO_STREAM)
    recorded = await stores.events.record_foreign(ours, "rabbitmq")
    assert (recorded.stream_id, recorded.version, recorded.origin) == ("elsewhere", 1, "")
    assert ids(await read_everything(stores)) == [ours.id]
    assert await stores.events.stream_version(ours.stream_id) == 0


async def test_a_foreign_event_needs_an_origin(stores: StoresUnderTest) -> None:
    with pytest.raises(ValueError, match="origin"):
        await stores.events.record_foreign(registered(1), "")
    assert await read_everything(stores) == []


async def test_the_origin_survives_every_read(stores: StoresUnderTest) -> None:
    ours, foreign = created(1), registered(1)
    await stores.events.append(ours.stream_id, [ours], NO_STREAM)
    await stores.events.record_foreign(foreign, "rabbitmq")
    await stores.settle()
    expected = [(ours.id, ""), (foreign.id, "rabbitmq")]

    def origins(records: list[RecordedEvent]) -> list[tuple[Any, str]]:
        return [(r.event.id, r.origin) for r in records]

    if stores.global_order:
        assert origins(await stores.events.read_all()) == expected
        assert origins(await stores.events.read_last(10)) == expected
    assert origins(await stores.events.read_stream(foreign.stream_id)) == expected[1:]
    assert origins(await stores.events.read_by_type(foreign.event_type)) == expected[1:]
    assert origins(await stores.events.read_by_type(ours.event_type)) == expected[:1]
    found = [await stores.events.find_event(e.id) for e in (ours, foreign)]
    assert origins([f for f in found if f is not None]) == expected


async def test_the_trace_context_of_an_append_survives_every_read(
        stores: StoresUnderTest) -> None:
    with recording_spans(), tracing.span("command"):
        context = tracing.traceparent()
        one, two, three, at_end = registered(1), registered(2), registered(3), registered(4)
        two_more = registered(2)
        await stores.events.append(one.stream_id, [one], NO_STREAM)
        await stores.events.append(two.stream_id, [two, two_more], NO_STREAM)
        await stores.events.append(at_end.stream_id, [at_end], ANY_VERSION)
        await stores.events.append_streams([(three.stream_id, [three], NO_STREAM)])
        foreign = created(1)
        await stores.events.record_foreign(foreign, "rabbitmq")
    untraced = created(2)
    await stores.events.append(untraced.stream_id, [untraced], NO_STREAM)
    await stores.settle()
    assert context is not None and context.startswith("00-")
    traced = {e.id for e in (one, two, two_more, three, at_end, foreign)}

    def contexts(records: list[RecordedEvent]) -> set[tuple[bool, str | None]]:
        return {(r.event.id in traced, r.traceparent) for r in records}

    expected = {(True, context), (False, None)}
    if stores.global_order:
        assert contexts(await stores.events.read_all()) == expected
        assert contexts(await stores.events.read_last(10)) == expected
    assert contexts(await stores.events.read_stream(two.stream_id)) == {(True, context)}
    assert contexts(await stores.events.read_by_type(untraced.event_type)) == expected
    found = [await stores.events.find_event(e.id) for e in (foreign, untraced)]
    assert contexts([f for f in found if f is not None]) == expected


async def test_find_event_finds_an_event_by_its_id(stores: StoresUnderTest) -> None:
    first, second = registered(1), registered(2)
    await stores.events.append("s", [first, second], NO_STREAM)
    found = await stores.events.find_event(second.id)
    assert found is not None
    assert (found.stream_id, found.version, found.event) == ("s", 2, second)
    assert found == (await stores.events.read_stream("s", 2))[0]
    assert await stores.events.find_event(uuid4()) is None
