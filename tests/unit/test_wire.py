"""The wire format against the golden documents the .NET services write (tests/golden/).

Both directions: each document reads as the right concrete event with exact values, and what
we write parses back (decimals as decimals) to the same values with the same property names.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest

from mussikon.domain.events import (
    ALL_EVENT_TYPES,
    SPECIFICATION_EVENT_TYPES,
    ContractSignedEvent,
    DomainEvent,
    EventCreatedEvent,
    MusicianApplicationSubmittedEvent,
    MusicianRegisteredEvent,
    PaymentProcessedEvent,
)
from mussikon.domain.instant import Instant, format_dotnet, ticks_of
from mussikon.wire import (
    METADATA_FIELDS,
    Body,
    EventCodec,
    UnknownEventType,
    WireFormatError,
    pascal_case,
)

GOLDEN = Path(__file__).parent.parent / "golden"
_WRITER = msgspec.json.Encoder(decimal_format="number")  # test documents keep 1500.00 a number

MUSICIAN_ID = "3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11"
GIG_ID = "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CONTRACT_ID = "8e9f0a1b-2c3d-4e4f-a5b6-c7d8e9f0a1b2"
GIG_DATE = datetime(2027, 1, 15, 23, 0, tzinfo=UTC)

EXPECTED: dict[str, DomainEvent] = {
    "MusicianRegisteredEvent": MusicianRegisteredEvent(
        id=UUID("0b6f1d2e-8c3a-4f5b-a1d9-7e2c4b6a8f01"),
        occurred_at=Instant(2026, 11, 27, 21, 53, 28, 123456, UTC, tick=7), schema_version=1,
        musician_id=MUSICIAN_ID, email="ana.perez@example.org", name="Ana Pérez",
        genres=("Jazz", "Salsa"), location="Santo Domingo"),
    "EventCreatedEvent": EventCreatedEvent(
        id=UUID("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),
        occurred_at=datetime(2026, 11, 27, 21, 54, 2, 500000, tzinfo=UTC), schema_version=1,
        gig_id=GIG_ID, organizer_id="5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
        title="Noche de Jazz en la Zona Colonial", event_date=GIG_DATE,
        location="Santo Domingo", genre="Jazz", budget=Decimal("1500.00")),
    "MusicianApplicationSubmittedEvent": MusicianApplicationSubmittedEvent(
        id=UUID("2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"),
        occurred_at=Instant(2026, 11, 27, 22, 1, 10, 0, UTC, tick=1), schema_version=1,
        application_id="7d8e9f0a-1b2c-4d3e-9f4a-5b6c7d8e9f0a", musician_id=MUSICIAN_ID,
        gig_id=GIG_ID, message="Trío de jazz con repertorio de standards y bolero.",
        proposed_fee=Decimal("1200.50")),
    "ContractSignedEvent": ContractSignedEvent(
        id=UUID("3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7"),
        occurred_at=datetime(2026, 11, 28, 9, 15, tzinfo=UTC), schema_version=1,
        contract_id=CONTRACT_ID, musician_id=MUSICIAN_ID, gig_id=GIG_ID,
        amount=Decimal("1200.50"), event_date=GIG_DATE),
    "PaymentProcessedEvent": PaymentProcessedEvent(
        id=UUID("5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"),
        occurred_at=datetime(2026, 11, 28, 9, 15, 3, 250000, tzinfo=UTC), schema_version=1,
        payment_id="4f5a6b7c-8d9e-4f0a-b1c2-d3e4f5a6b7c8", contract_id=CONTRACT_ID,
        amount=Decimal("1200.50"), status="Completed", transaction_id="txn_01JDQ8Z5K3M9"),
}
NAMES = sorted(EXPECTED)


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


def golden_bytes(name: str) -> bytes:
    return (GOLDEN / f"{name}.json").read_bytes()


def exact(data: bytes | str) -> Body:
    """JSON as values to compare: numbers with a fraction become Decimals, never floats."""
    value = json.loads(data, parse_float=Decimal)
    assert isinstance(value, dict)
    return value


def scales(doc: Body) -> dict[str, str]:
    """The decimals of a document as written, scale included (1200.50 is not 1200.5 here)."""
    return {key: str(value) for key, value in doc.items() if isinstance(value, Decimal)}


def with_changes(name: str, **changes: Any) -> bytes:
    """A golden document with some properties replaced (or removed, for `...`)."""
    doc = exact(golden_bytes(name))
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return _WRITER.encode(doc)


def test_the_five_golden_documents_are_here_and_the_five_specification_events() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == NAMES
    assert sorted(t.__name__ for t in SPECIFICATION_EVENT_TYPES) == NAMES


# --- reading what .NET wrote ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_golden_document_reads_as_its_concrete_event_with_exact_values(
        codec: EventCodec, name: str) -> None:
    # given the document a .NET service wrote, when we read it
    event = codec.decode(golden_bytes(name))
    # then it is the concrete event, every value equal (the time to the tick)
    assert type(event) is type(EXPECTED[name])
    assert event == EXPECTED[name]
    assert event.event_type == name
    assert ticks_of(event.occurred_at) == ticks_of(EXPECTED[name].occurred_at)


def test_a_decimal_keeps_its_scale_when_read(codec: EventCodec) -> None:
    gig = codec.decode(golden_bytes("EventCreatedEvent"))
    application = codec.decode(golden_bytes("MusicianApplicationSubmittedEvent"))
    assert isinstance(gig, EventCreatedEvent)
    assert isinstance(application, MusicianApplicationSubmittedEvent)
    assert (str(gig.budget), str(application.proposed_fee)) == ("1500.00", "1200.50")
    assert isinstance(gig.budget, Decimal) and isinstance(application.proposed_fee, Decimal)


def test_a_seven_digit_time_keeps_its_tick_when_read(codec: EventCodec) -> None:
    event = codec.decode(golden_bytes("MusicianApplicationSubmittedEvent"))
    assert isinstance(event.occurred_at, Instant)
    assert (event.occurred_at.microsecond, event.occurred_at.tick) == (0, 1)
    assert format_dotnet(event.occurred_at) == "2026-11-27T22:01:10.0000001Z"


def test_guids_and_the_genres_list_are_read(codec: EventCodec) -> None:
    event = codec.decode(golden_bytes("MusicianRegisteredEvent"))
    assert isinstance(event, MusicianRegisteredEvent)
    assert event.id == UUID("0b6f1d2e-8c3a-4f5b-a1d9-7e2c4b6a8f01")
    assert event.musician_id == MUSICIAN_ID
    assert event.genres == ("Jazz", "Salsa")


@pytest.mark.parametrize("escape", ["\\u00E9", "\\u00e9"])
def test_escaped_and_raw_non_ascii_text_read_the_same(codec: EventCodec, escape: str) -> None:
    raw = golden_bytes("MusicianRegisteredEvent").decode()
    assert "Ana Pérez" in raw
    escaped = raw.replace("é", escape)
    assert "é" not in escaped
    from_raw, from_escaped = codec.decode(raw.encode()), codec.decode(escaped)
    assert isinstance(from_escaped, MusicianRegisteredEvent)
    assert from_escaped.name == "Ana Pérez"
    assert from_escaped == from_raw


# --- writing what .NET reads ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_what_we_write_has_the_golden_values_and_property_names(codec: EventCodec,
                                                               name: str) -> None:
    # given the event built here, when we write it
    written = exact(codec.encode(EXPECTED[name]))
    golden = exact(golden_bytes(name))
    # then it parses to the same values, with the same PascalCase names in .NET's order
    assert written == golden
    assert list(written) == list(golden)
    assert scales(written) == scales(golden)
    assert all(key[:1].isupper() and "_" not in key for key in written)


@pytest.mark.parametrize("name", NAMES)
def test_reading_then_writing_a_golden_document_gives_it_back(codec: EventCodec,
                                                              name: str) -> None:
    rewritten = exact(codec.encode(codec.decode(golden_bytes(name))))
    golden = exact(golden_bytes(name))
    assert rewritten == golden
    assert scales(rewritten) == scales(golden)


def test_decimals_and_times_are_written_as_dotnet_writes_them(codec: EventCodec) -> None:
    text = codec.encode(EXPECTED["MusicianApplicationSubmittedEvent"]).decode()
    assert '"ProposedFee":1200.50' in text  # a JSON number with its scale, not a string
    assert '"OccurredAt":"2026-11-27T22:01:10.0000001Z"' in text
    assert '"Id":"2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"' in text


# --- every event type ----------------------------------------------------------------------


def sample(cls: type[DomainEvent]) -> DomainEvent:
    """One event of `cls` with a value in every field, a seven-digit time included."""
    hints = typing.get_type_hints(cls)
    base = {f.name for f in dataclasses.fields(DomainEvent)}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in base:
            continue
        kind = hints[f.name]
        if kind is str:
            values[f.name] = f"{f.name} of {cls.__name__} — ñ"
        elif kind is Decimal:
            values[f.name] = Decimal("1234.50")
        elif kind is datetime:
            values[f.name] = Instant(2027, 1, 15, 23, 0, 0, 1, UTC, tick=9)
        elif kind == tuple[str, ...]:
            values[f.name] = ("Jazz", "Son")
        else:
            raise AssertionError(f"no sample for {cls.__name__}.{f.name}: {kind}")
    version = next(int(f.default) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.name == "schema_version")
    return cls(id=UUID(int=len(values)), schema_version=version,
               occurred_at=Instant(2026, 11, 27, 21, 53, 28, 123456, UTC, tick=7), **values)


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_event_type_round_trips_as_its_concrete_type(codec: EventCodec,
                                                           cls: type[DomainEvent]) -> None:
    event = sample(cls)
    back = codec.decode(codec.encode(event))
    assert type(back) is cls
    assert back == event
    assert ticks_of(back.occurred_at) == 7


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_event_is_written_whole_with_its_event_type(codec: EventCodec,
                                                          cls: type[DomainEvent]) -> None:
    # gap 9: the concrete event's own fields are written, not only the base class's
    body = exact(codec.encode(sample(cls)))
    declared = {f.metadata.get("wire", pascal_case(f.name)) for f in dataclasses.fields(cls)
           if f.name not in METADATA_FIELDS}
    assert set(body) == declared | {"EventType"}
    assert declared > {"Id", "OccurredAt", "Version"}
    assert body["EventType"] == cls.__name__ != ""


def test_every_event_type_is_registered(codec: EventCodec) -> None:
    assert sorted(codec.event_types) == sorted(t.__name__ for t in ALL_EVENT_TYPES)


def test_metadata_travels_beside_the_body_not_in_it(codec: EventCodec) -> None:
    correlation, causation = UUID(int=1), UUID(int=2)
    event = dataclasses.replace(EXPECTED["ContractSignedEvent"], correlation_id=correlation,
                                causation_id=causation)
    data = codec.encode(event)
    assert set(exact(data)) == set(exact(golden_bytes("ContractSignedEvent")))
    back = codec.decode(data, correlation_id=correlation, causation_id=causation)
    assert (back.correlation_id, back.causation_id) == (correlation, causation)


def test_the_event_type_from_a_header_reads_a_body_without_one(codec: EventCodec) -> None:
    data = with_changes("PaymentProcessedEvent", EventType=...)
    event = codec.decode(data, "PaymentProcessedEvent")
    assert event == EXPECTED["PaymentProcessedEvent"]


def test_a_document_without_a_version_is_version_one(codec: EventCodec) -> None:
    event = codec.decode(with_changes("ContractSignedEvent", Version=...))
    assert event.schema_version == 1


# --- malformed documents -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "field"), [
    ("EventCreatedEvent", "Budget"), ("MusicianRegisteredEvent", "Genres"),
    ("PaymentProcessedEvent", "Status"), ("ContractSignedEvent", "Id"),
    ("MusicianApplicationSubmittedEvent", "OccurredAt")])
def test_a_missing_field_is_named(codec: EventCodec, name: str, field: str) -> None:
    with pytest.raises(WireFormatError, match=f"^{name}: required field '{field}' is missing$"):
        codec.decode(with_changes(name, **{field: ...}))


def test_a_null_field_is_named(codec: EventCodec) -> None:
    with pytest.raises(WireFormatError,
                       match=r"^EventCreatedEvent: required field 'Budget' is null$"):
        codec.decode(with_changes("EventCreatedEvent", Budget=None))


@pytest.mark.parametrize(("name", "field", "value", "message"), [
    ("EventCreatedEvent", "Budget", "1500.00",
     "field 'Budget' must be a JSON number, got '1500.00'"),
    ("EventCreatedEvent", "Budget", True, "field 'Budget' must be a JSON number, got True"),
    ("ContractSignedEvent", "Version", False, "field 'Version' must be an integer, got False"),
    ("ContractSignedEvent", "Version", "1.0", "field 'Version' must be an integer, got '1.0'"),
    ("EventCreatedEvent", "Title", 42, "field 'Title' must be a string, got 42"),
    ("MusicianRegisteredEvent", "Genres", "Jazz",
     "field 'Genres' must be a list of strings, got 'Jazz'"),
    ("MusicianRegisteredEvent", "Genres", ["Jazz", 7],
     "field 'Genres' must be a list of strings, got \\['Jazz', 7\\]"),
    ("ContractSignedEvent", "Id", "not-a-guid",
     "field 'Id' must be a GUID string such as .*, got 'not-a-guid'"),
    ("ContractSignedEvent", "Id", 12, "field 'Id' must be a GUID string such as .*, got 12"),
    ("ContractSignedEvent", "EventDate", "15/01/2027",
     "field 'EventDate' must be an ISO 8601 time string such as .*, got '15/01/2027'"),
    ("ContractSignedEvent", "OccurredAt", "2026-11-28T09:15:00.12345678Z",
     "field 'OccurredAt' must be an ISO 8601 time string"),
])
def test_a_field_of_the_wrong_type_is_named_with_what_it_must_be(
        codec: EventCodec, name: str, field: str, value: Any, message: str) -> None:
    with pytest.raises(WireFormatError, match=f"^{name}: {message}") as raised:
        codec.decode(with_changes(name, **{field: value}))
    assert not isinstance(raised.value, UnknownEventType)
    assert "badly formed" not in str(raised.value)
    assert "must be not" not in str(raised.value)


def test_an_unknown_event_type_is_named(codec: EventCodec) -> None:
    with pytest.raises(UnknownEventType, match="event type 'GigExplodedEvent' is not registered"):
        codec.decode(with_changes("EventCreatedEvent", EventType="GigExplodedEvent"))


@pytest.mark.parametrize("event_type", [..., "", None, 7])
def test_a_document_naming_no_event_type_is_refused(codec: EventCodec, event_type: Any) -> None:
    with pytest.raises(UnknownEventType, match="the document names no EventType"):
        codec.decode(with_changes("EventCreatedEvent", EventType=event_type))


@pytest.mark.parametrize("data", [b"", b"not json", b'{"Id": ', b"\xff\xfe{}",
                                  b'{"EventType": "EventCreatedEvent",}'])
def test_a_body_that_is_not_json_is_refused(codec: EventCodec, data: bytes) -> None:
    with pytest.raises(WireFormatError, match="body is not valid JSON") as raised:
        codec.decode(data)
    assert not isinstance(raised.value, UnknownEventType)


@pytest.mark.parametrize(("data", "kind"), [(b"[]", "an array"), (b'"EventCreatedEvent"',
                                            "a string"), (b"12.5", "a number"),
                                            (b"null", "null"), (b"true", "a boolean")])
def test_a_body_that_is_not_an_object_is_refused(codec: EventCodec, data: bytes,
                                                 kind: str) -> None:
    with pytest.raises(WireFormatError, match=f"^body must be a JSON object, got {kind}$"):
        codec.decode(data)


# --- schema versions -----------------------------------------------------------------------


def budget_from_price(body: Body) -> Body:
    """Version 1 of a gig document called the budget `Price`."""
    body["Budget"] = body.pop("Price")
    return body


def test_an_upcaster_turns_a_version_1_body_into_version_2_on_read() -> None:
    # given version 1 documents named the budget "Price"
    codec = EventCodec()
    codec.register_upcaster("EventCreatedEvent", 1, budget_from_price)
    old = with_changes("EventCreatedEvent", Budget=..., Price=Decimal("1500.00"), Version=1)
    # when one is read, then it arrives as version 2 with the budget in place, scale kept
    event = codec.decode(old)
    assert isinstance(event, EventCreatedEvent)
    assert event.schema_version == 2
    assert str(event.budget) == "1500.00"
    assert dataclasses.replace(event, schema_version=1) == EXPECTED["EventCreatedEvent"]


def test_a_current_version_body_is_not_upcast() -> None:
    calls: list[Body] = []

    def spy(body: Body) -> Body:
        calls.append(body)
        return body

    codec = EventCodec(upcasters={("EventCreatedEvent", 1): spy})
    event = codec.decode(with_changes("EventCreatedEvent", Version=2))
    assert calls == []
    assert event.schema_version == 2


def test_upcasters_chain_from_version_1_to_the_current_one() -> None:
    def title_from_name(body: Body) -> Body:
        body["Title"] = body.pop("Name")
        return body

    codec = EventCodec(upcasters={("EventCreatedEvent", 1): title_from_name,
                                  ("EventCreatedEvent", 2): budget_from_price})
    old = with_changes("EventCreatedEvent", Title=..., Name="Noche de Jazz", Budget=...,
                       Price=Decimal("900.10"), Version=1)
    event = codec.decode(old)
    assert isinstance(event, EventCreatedEvent)
    assert (event.schema_version, event.title, str(event.budget)) == (3, "Noche de Jazz", "900.10")


def test_an_upcaster_for_one_type_leaves_the_others_alone() -> None:
    codec = EventCodec(upcasters={("EventCreatedEvent", 1): budget_from_price})
    event = codec.decode(golden_bytes("ContractSignedEvent"))
    assert event == EXPECTED["ContractSignedEvent"]
