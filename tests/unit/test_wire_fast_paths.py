"""The codec's fast paths give exactly what the general ones give.

The compiled writer and reader of each event class, and the shortcuts for UTC times, are
checked against straightforward reference versions over every event type and many inputs,
including the ones that must fall back to the general path.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from mussikon.domain.events import (
    ALL_EVENT_TYPES,
    DomainEvent,
    EventClosedEvent,
    EventCreatedEvent,
    OrganizerRegisteredEvent,
)
from mussikon.domain.instant import Instant, format_dotnet, parse_dotnet, ticks_of
from mussikon.wire import (
    _FALLBACK,
    METADATA_FIELDS,
    EventCodec,
    WireFormatError,
    _from_datetime,
    _to_datetime,
    _to_uuid,
    may_have_ticks,
)


def reference_to_body(codec: EventCodec, event: DomainEvent) -> dict[str, Any]:
    """to_body as a plain loop over the fields."""
    body: dict[str, Any] = {}
    for f in codec._shapes[event.event_type].fields:
        if f.wire == "Version":
            body["EventType"] = event.event_type
        body[f.wire] = f.write(getattr(event, f.attr))
    return body


def reference_from_body(codec: EventCodec, body: dict[str, Any],
                        correlation_id: UUID | None = None) -> DomainEvent:
    """from_body as a plain loop over the fields (upcasting first)."""
    name = body["EventType"]
    shape = codec._shapes[name]
    body = codec._upcast(name, body)
    values: dict[str, Any] = {}
    for f in shape.fields:
        raw = body.get(f.wire)
        if raw is None:
            if f.required:
                raise WireFormatError(f"{name}: required field {f.wire!r} is missing or null")
            continue
        try:
            values[f.attr] = f.read(raw)
        except Exception as exc:
            raise WireFormatError(f"{name}: field {f.wire!r} must be {exc}") from None
    return shape.cls(**values, correlation_id=correlation_id, causation_id=None)


def sample(cls: type[DomainEvent], seed: int) -> DomainEvent:
    rng = random.Random(seed)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in METADATA_FIELDS or f.name in ("id", "occurred_at", "schema_version"):
            continue
        kind = hints[f.name]
        if kind is str:
            values[f.name] = rng.choice(["", "x", "Ana Peña", "línea\n\"dos\"", "🎷"])
        elif kind is Decimal:
            values[f.name] = Decimal(rng.choice(["0.10", "1500", "1200.50", "-3.0", "1E+2"]))
        elif kind is datetime:
            values[f.name] = random_time(rng)
        elif kind == tuple[str, ...]:
            values[f.name] = tuple(rng.choice(["jazz", "salsa", "merengue"])
                                   for _ in range(rng.randint(0, 3)))
        elif kind is int:
            values[f.name] = rng.randint(-5, 5)
        else:
            raise AssertionError(f"no sample for {kind}")
    return cls(id=UUID(int=rng.getrandbits(128)), occurred_at=random_time(rng),
               schema_version=rng.randint(1, 3), **values)


def random_time(rng: random.Random) -> datetime:
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
        days=rng.randint(-400_000, 3000), microseconds=rng.choice(
            [0, 1, 10, 100_000, 123_456, 999_999, rng.randint(0, 10**6 - 1)]))
    kind = rng.randint(0, 3)
    if kind == 1:
        return Instant.of(moment, tick=rng.randint(0, 9))
    if kind == 2:
        return moment.astimezone(timezone(timedelta(hours=rng.randint(-12, 12))))
    return moment


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_the_compiled_writer_and_reader_match_the_general_ones(cls: type[DomainEvent]) -> None:
    codec = EventCodec()
    for seed in range(40):
        event = sample(cls, seed)
        body = codec.to_body(event)
        assert list(body.items()) == list(reference_to_body(codec, event).items())

        parsed = codec.parse(codec.encode(event))
        correlation = UUID(int=seed)
        read = codec.from_body(parsed, correlation_id=correlation)
        general = reference_from_body(codec, parsed, correlation)
        assert read == general
        assert ticks_of(read.occurred_at) == ticks_of(general.occurred_at)
        assert read.correlation_id == correlation
        if (cls.__name__, event.schema_version) not in codec._upcasters:
            assert codec._shapes[cls.__name__].read(parsed, None, None) == event


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_encoding_gives_the_json_of_the_general_writer(cls: type[DomainEvent]) -> None:
    """`encode` hands msgspec UUIDs, tuples and plain UTC times as they are: the same bytes
    as encoding `to_body`'s strings and lists."""
    codec = EventCodec()
    for seed in range(300):
        event = sample(cls, seed)
        assert codec.encode(event) == codec._encoder.encode(reference_to_body(codec, event))


def test_encoding_a_time_matches_format_dotnet() -> None:
    codec = EventCodec()
    event = sample(ALL_EVENT_TYPES[0], 0)
    rng = random.Random(11)
    moments = [random_time(rng) for _ in range(5000)] + [
        datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 11, 27, 21, 53, 28, 120_000, tzinfo=UTC), Instant.of(datetime.now(UTC), 7)]
    for moment in moments:
        body = codec.parse(codec.encode(dataclasses.replace(event, occurred_at=moment)))
        assert body["OccurredAt"] == format_dotnet(moment)


@pytest.mark.parametrize("change", [
    {"Id": None}, {"Id": "{12345678-1234-5678-1234-567812345678}"}, {"Id": 7},
    {"OccurredAt": "2026-11-27T21:53:28.1234567Z"}, {"OccurredAt": "2026-11-27T21:53:28+01:00"},
    {"OccurredAt": "2026-11-27T21:53:28"}, {"OccurredAt": "nonsense"}, {"Version": True},
    {"Version": None}, {"MusicianId": 5}, {"Genres": ["jazz", 1]},
])
def test_documents_off_the_fast_path_read_as_the_general_path_reads_them(
        change: dict[str, Any]) -> None:
    codec = EventCodec()
    event = sample(ALL_EVENT_TYPES[0], 1)
    body = {**codec.to_body(event), **change}

    try:
        expected: Any = reference_from_body(codec, dict(body))
    except WireFormatError:
        assert codec._shapes[event.event_type].read(body, None, None) is _FALLBACK
        with pytest.raises(WireFormatError, match=r"MusicianRegisteredEvent: .*field"):
            codec.decode(codec._encoder.encode(body))
    else:
        read = codec.decode(codec._encoder.encode(body))
        assert read == expected
        assert ticks_of(read.occurred_at) == ticks_of(expected.occurred_at)


def same_event(read: DomainEvent, expected: DomainEvent) -> None:
    """Equal, and equal in what equality overlooks: the class, times' ticks and zones, the
    metadata."""
    assert type(read) is type(expected)
    assert read == expected
    assert (read.correlation_id, read.causation_id) == \
        (expected.correlation_id, expected.causation_id)
    for f in dataclasses.fields(expected):
        value, wanted = getattr(read, f.name), getattr(expected, f.name)
        assert type(value) is type(wanted), f.name
        if isinstance(wanted, datetime):
            assert (ticks_of(value), value.tzinfo) == (ticks_of(wanted), wanted.tzinfo), f.name
        if isinstance(wanted, Decimal):
            assert str(value) == str(wanted), f.name


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_decoding_by_a_known_type_matches_the_general_reader(cls: type[DomainEvent]) -> None:
    """`decode` with the event type known (as the stores call it) reads the JSON straight
    into the event: the same event as parsing it and reading the body field by field."""
    codec = EventCodec()
    for seed in range(60):
        event = sample(cls, seed)
        data = codec.encode(event)
        correlation, causation = UUID(int=seed), (UUID(int=seed + 1) if seed % 2 else None)
        expected = reference_from_body(codec, codec.parse(data), correlation)
        expected = dataclasses.replace(expected, causation_id=causation)
        for text in (data, data.decode()):
            same_event(codec.decode(text, cls.__name__, correlation_id=correlation,
                                    causation_id=causation), expected)
        if (cls.__name__, event.schema_version) not in codec._upcasters:
            fast = codec._shapes[cls.__name__].read_json(data, correlation, causation)
            if fast is not None:
                same_event(fast, expected)


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_stored_json_without_ticks_reads_as_the_general_reader_reads_it(
        cls: type[DomainEvent]) -> None:
    """`may_have_ticks` finds every time with a seventh digit that the codec writes, and for
    JSON in which it finds none the stored readers (msgspec parses the times, the id comes
    from the store) give exactly the general reader's event."""
    codec = EventCodec()
    read_stored = codec.stored_readers.get(cls.__name__)
    hints = typing.get_type_hints(cls)
    for seed in range(300):
        event = sample(cls, seed)
        data = codec.encode(event)
        has_ticks = any(ticks_of(getattr(event, f.name)) for f in dataclasses.fields(cls)
                        if hints[f.name] is datetime)
        assert may_have_ticks(data.decode()) is has_ticks
        if has_ticks or read_stored is None:
            continue
        correlation = UUID(int=seed)
        expected = reference_from_body(codec, codec.parse(data), correlation)
        read = read_stored(data, event.id, correlation, None)
        assert read is not None
        same_event(read, expected)


WRITTEN_TIMES = ["2026-11-27T21:53:28Z", "2026-11-27T21:53:28.1Z",
                 "2026-11-27T21:53:28.123456Z", "0001-01-01T00:00:00Z",
                 "9999-12-31T23:59:59.999999Z"]
"""Times in the forms the codec writes (no seventh digit): the stored readers take them."""


@pytest.mark.parametrize("text", [
    *WRITTEN_TIMES, "2026-11-27T21:53:28.000000Z", "2026-11-27T21:53:28.5+00:00",
    "2026-11-27T21:53:28-04:00", "2026-11-27T21:53:28",
    "2026-11-27", "20261127T215328Z", "2026-11-27 21:53:28.1Z", "2026-11-27t21:53:28z",
    "2026-02-30T00:00:00Z", "2026-11-27T24:00:00Z", "nonsense",
])
def test_a_stored_time_without_ticks_is_read_as_the_general_reader_reads_it(text: str) -> None:
    codec = EventCodec()
    event = sample(EventCreatedEvent, 5)
    body = {**codec.to_body(event), "OccurredAt": text, "EventDate": text}
    data = codec._encoder.encode(body)
    assert not may_have_ticks(data.decode())
    read = codec.stored_readers["EventCreatedEvent"](data, event.id, None, None)
    try:
        expected: Any = reference_from_body(codec, body)
    except WireFormatError:
        # msgspec takes RFC 3339's lowercase t and z, which the codec never writes
        assert read is None or text == "2026-11-27t21:53:28z"
        return
    assert read is not None or text not in WRITTEN_TIMES
    if read is not None:
        same_event(read, expected)


@pytest.mark.parametrize("change", [
    {"Id": None}, {"Id": "{12345678-1234-5678-1234-567812345678}"}, {"Id": 7},
    {"Id": "12345678123456781234567812345678"}, {"Id": "12345678-1234-5678-1234-56781234567G"},
    {"OccurredAt": "2026-11-27T21:53:28.1234567Z"}, {"OccurredAt": "2026-11-27T21:53:28+01:00"},
    {"OccurredAt": "2026-11-27T21:53:28"}, {"OccurredAt": "nonsense"},
    {"OccurredAt": "2026-11-27t21:53:28z"}, {"OccurredAt": "2026-11-27 21:53:28Z"},
    {"OccurredAt": "20261127T215328.1234567Z"}, {"OccurredAt": "2026-11-27T21:53:28.5+00:00Z"},
    {"OccurredAt": 5}, {"Version": True}, {"Version": None}, {"Version": 1.0}, {"Version": 7},
    {"Title": 5}, {"Title": None}, {"Title": ""}, {"Budget": "1500.00"}, {"Budget": True},
    {"Budget": None}, {"Budget": 1500}, {"Budget": -0}, {"Budget": Decimal("-0.0")},
    {"Budget": Decimal("1E+5")}, {"Budget": [1]}, {"EventDate": "2027-01-15T20:00:00.1234567Z"},
    {"EventType": "EventClosedEvent"}, {"EventType": None}, {"Extra": {"x": [1, 2]}},
])
def test_documents_off_the_json_fast_path_read_as_the_general_path_reads_them(
        change: dict[str, Any]) -> None:
    codec = EventCodec()
    event = sample(EventCreatedEvent, 3)
    body = {**codec.to_body(event), **change}
    data = codec._encoder.encode(body)
    try:
        expected: Any = reference_from_body(codec, {**body, "EventType": event.event_type})
    except WireFormatError:
        with pytest.raises(WireFormatError, match=r"EventCreatedEvent: .*field"):
            codec.decode(data, event.event_type)
    else:
        same_event(codec.decode(data, event.event_type), expected)


def test_decoding_by_a_known_type_still_upcasts_old_versions() -> None:
    codec = EventCodec()
    body = codec.to_body(sample(OrganizerRegisteredEvent, 1))
    del body["PaymentSource"]
    body["Version"] = 1
    organizer = codec.decode(codec._encoder.encode(body), "OrganizerRegisteredEvent")
    assert isinstance(organizer, OrganizerRegisteredEvent)
    assert (organizer.schema_version, organizer.payment_source) == (2, "")

    codec.register_upcaster("EventClosedEvent", 1, lambda b: {**b, "Reason": b["Reason"] + "!"})
    event = sample(EventClosedEvent, 2)
    event = dataclasses.replace(event, schema_version=1)
    closed = codec.decode(codec.encode(event), "EventClosedEvent")
    assert isinstance(closed, EventClosedEvent) and isinstance(event, EventClosedEvent)
    assert (closed.schema_version, closed.reason) == (2, event.reason + "!")


TIMES = [
    "2026-11-27T21:53:28Z", "2026-11-27T21:53:28.1Z", "2026-11-27T21:53:28.123456Z",
    "2026-11-27T21:53:28.1234567Z", "2026-11-27T21:53:28.12345678Z", "2026-11-27T21:53:28.000000Z",
    "2026-11-27T21:53:28.Z", "2026-11-27T21:53:28.12a4Z", "2026-11-27T21:53Z",
    "2026-11-27T21:53:28.5+00:00", "2026-11-27T21:53:28-04:00", "2026-11-27T21:53:28",
    "2026-11-27", "20261127T215328Z", "20261127T215328.1234567Z", "2026-W48-5T21:53:28.1Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z", "2026-11-27 21:53:28.1Z",
    "2026-11-27T21:53:28,123Z", "Z", "", ".Z", "2026-02-30T00:00:00Z", "2026-11-27T24:00:00Z",
]


@pytest.mark.parametrize("text", TIMES)
def test_reading_a_time_matches_parse_dotnet(text: str) -> None:
    try:
        expected = parse_dotnet(text)
    except ValueError:
        with pytest.raises(Exception, match="ISO 8601"):
            _to_datetime(text)
        return
    value = _to_datetime(text)
    assert (type(value), value, ticks_of(value), value.tzinfo) == \
        (type(expected), expected, ticks_of(expected), expected.tzinfo)


def test_writing_a_time_matches_format_dotnet() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        moment = random_time(rng)
        assert _from_datetime(moment) == format_dotnet(moment)
    with pytest.raises(ValueError, match="naive"):
        _from_datetime(datetime(2026, 1, 1))


GUIDS = [
    "3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11", "3F2C8A51-7D4E-4B9A-9F1E-2A6B8C0D4E11",
    "3f2c8a517d4e4b9a9f1e2a6b8c0d4e11", "{3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11}",
    "urn:uuid:3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11", "3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e1",
    "3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e1g", "3f2c8a51_7d4e_4b9a_9f1e_2a6b8c0d4e11", "", "x",
    "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
]


@pytest.mark.parametrize("text", GUIDS)
def test_reading_a_guid_matches_uuid(text: str) -> None:
    try:
        expected = UUID(text)
    except ValueError:
        with pytest.raises(Exception, match="GUID"):
            _to_uuid(text)
        return
    value = _to_uuid(text)
    assert (type(value), value, str(value), value.is_safe) == \
        (type(expected), expected, str(expected), expected.is_safe)


_READ_WITHOUT_UPCASTING = [
    cls for cls in ALL_EVENT_TYPES
    if (cls.__name__, sample(cls, 7).schema_version) not in EventCodec()._upcasters]


@pytest.mark.parametrize("cls", _READ_WITHOUT_UPCASTING, ids=lambda cls: cls.__name__)
def test_events_read_from_json_are_of_their_own_frozen_class(cls: type[DomainEvent]) -> None:
    """The JSON reader fills the event as an instance of a builder subclass, then makes it
    its own class: what comes out is exactly `cls`, frozen, hashable, equal to the event
    written, and copies and pickles as one. (A type whose sample is an old version is read
    through its upcaster instead: tests/contract/test_upcasting.py.)"""
    codec = EventCodec()
    event = sample(cls, 7)
    read = codec._shapes[cls.__name__].read_json(codec.encode(event), None, None)
    assert read is not None
    assert type(read) is cls and read == event and hash(read) == hash(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.schema_version = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del read.schema_version
    for twin in (copy.copy(read), copy.deepcopy(read), pickle.loads(pickle.dumps(read))):
        assert type(twin) is cls and twin == read
    assert dataclasses.replace(read, schema_version=3).schema_version == 3


def test_dotnet_times_with_seven_fraction_digits_stay_on_the_json_fast_path() -> None:
    """.NET writes `DateTime.UtcNow` with seven fraction digits: the compiled reader reads
    such a document itself (with the tick kept), as the general reader would."""
    codec = EventCodec()
    event = sample(ALL_EVENT_TYPES[0], 1)
    body = {**codec.to_body(event), "OccurredAt": "2026-11-27T21:53:28.1234567Z"}
    data = codec._encoder.encode(body)
    fast = codec._shapes[event.event_type].read_json(data, None, None)
    assert fast is not None
    expected = reference_from_body(codec, dict(body))
    same_event(fast, expected)
    assert ticks_of(fast.occurred_at) == ticks_of(expected.occurred_at)
    assert format_dotnet(fast.occurred_at) == "2026-11-27T21:53:28.1234567Z"
