""".NET times: seven fraction digits, UTC, written back exactly as read."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mussikon.domain.instant import (
    Instant,
    epoch_micros,
    format_dotnet,
    parse_dotnet,
    ticks_of,
    utc_now,
)

PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize("text", [
    "2026-11-27T21:53:28Z",
    "2026-11-27T21:53:28.1Z",
    "2026-11-27T21:53:28.12Z",
    "2026-11-27T21:53:28.123Z",
    "2026-11-27T21:53:28.1234Z",
    "2026-11-27T21:53:28.12345Z",
    "2026-11-27T21:53:28.123456Z",
    "2026-11-27T21:53:28.1234567Z",
    "2026-11-27T22:01:10.0000001Z",
], ids=lambda text: f"{len(text.partition('.')[2].rstrip('Z'))}-digits")
def test_every_fraction_length_is_written_back_exactly_as_read(text: str) -> None:
    # given a time as .NET writes it, when it is read and written again, then nothing changed
    assert format_dotnet(parse_dotnet(text)) == text


def test_the_seventh_digit_is_kept_as_the_tick() -> None:
    value = parse_dotnet("2026-11-27T21:53:28.1234567Z")
    assert isinstance(value, Instant)
    assert (value.microsecond, value.tick, ticks_of(value)) == (123456, 7, 7)
    assert value == Instant(2026, 11, 27, 21, 53, 28, 123456, UTC, tick=7)


def test_a_time_without_a_seventh_digit_is_a_plain_datetime() -> None:
    value = parse_dotnet("2026-11-27T21:54:02.5Z")
    assert type(value) is datetime
    assert value == datetime(2026, 11, 27, 21, 54, 2, 500000, tzinfo=UTC)
    assert ticks_of(value) == 0


@pytest.mark.parametrize(("text", "written"), [
    ("2026-11-27T21:53:28.1000000Z", "2026-11-27T21:53:28.1Z"),
    ("2026-11-27T21:53:28.0000000Z", "2026-11-27T21:53:28Z"),
    ("2026-11-27T21:53:28.1234560Z", "2026-11-27T21:53:28.123456Z"),
])
def test_trailing_zeros_are_trimmed_as_dotnet_does(text: str, written: str) -> None:
    assert format_dotnet(parse_dotnet(text)) == written


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-11-27T23:53:28+02:00", "2026-11-27T21:53:28Z"),
    ("2026-11-27T17:53:28.5-04:00", "2026-11-27T21:53:28.5Z"),
    ("2026-11-27T23:53:28.1234567+02:00", "2026-11-27T21:53:28.1234567Z"),
    ("2026-11-28T00:23:28.0000009+02:30", "2026-11-27T21:53:28.0000009Z"),
    ("2026-11-27T21:53:28+00:00", "2026-11-27T21:53:28Z"),
])
def test_an_offset_is_converted_to_utc(text: str, utc: str) -> None:
    value = parse_dotnet(text)
    assert value.utcoffset() == timedelta(0)
    assert format_dotnet(value) == utc


def test_a_time_without_a_zone_is_read_as_utc_as_documented() -> None:
    # .NET writes a DateTime of Kind Unspecified without a zone
    value = parse_dotnet("2026-11-27T21:53:28.1234567")
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert format_dotnet(value) == "2026-11-27T21:53:28.1234567Z"


def test_writing_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match=r"naive datetime .* must carry its zone"):
        format_dotnet(datetime(2026, 11, 27, 21, 53, 28))


def test_wrapping_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        Instant.of(datetime(2026, 11, 27, 21, 53, 28), tick=1)


def test_writing_an_aware_time_in_another_zone_writes_its_utc_instant() -> None:
    assert format_dotnet(datetime(2026, 11, 27, 23, 53, 28, tzinfo=PLUS_TWO)) \
        == "2026-11-27T21:53:28Z"
    assert format_dotnet(Instant.of(datetime(2026, 11, 27, 23, 53, 28, 1, tzinfo=PLUS_TWO),
                                    tick=5)) == "2026-11-27T21:53:28.0000015Z"


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-27T21:53:28.12345678Z",
                                  "2026-13-27T21:53:28Z", "2026-11-27T25:00:00Z"])
def test_a_text_that_is_not_a_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_dotnet(text)


def test_a_value_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 time: 1234"):
        parse_dotnet(1234)  # type: ignore[arg-type]


@pytest.mark.parametrize("tick", [-1, 10])
def test_a_tick_outside_one_digit_is_refused(tick: int) -> None:
    with pytest.raises(ValueError, match=f"tick must be 0..9, got {tick}"):
        Instant(2026, 1, 1, tzinfo=UTC, tick=tick)


# --- equality, hash, order -------------------------------------------------------------------


def test_instants_that_differ_only_by_the_tick_are_different() -> None:
    a = Instant(2026, 11, 27, 21, 53, 28, 123456, UTC, tick=7)
    b = Instant(2026, 11, 27, 21, 53, 28, 123456, UTC, tick=8)
    assert a != b
    assert not a == b  # noqa: SIM201 - both operators are under test
    assert len({a, b}) == 2


def test_instants_with_the_same_tick_are_equal_and_hash_alike() -> None:
    a = Instant(2026, 11, 27, 21, 53, 28, 123456, UTC, tick=7)
    b = Instant.of(datetime(2026, 11, 27, 23, 53, 28, 123456, tzinfo=PLUS_TWO), tick=7)
    assert a == b
    assert not a != b  # noqa: SIM202 - both operators are under test
    assert hash(a) == hash(b)
    assert {a: "x"}[b] == "x"


def test_an_instant_with_tick_zero_is_the_plain_datetime() -> None:
    plain = datetime(2026, 11, 27, 21, 53, 28, 123456, tzinfo=UTC)
    wrapped = Instant.of(plain)
    assert wrapped == plain and plain == wrapped
    assert hash(wrapped) == hash(plain)
    assert len({wrapped, plain}) == 1


def test_an_instant_with_a_tick_is_not_the_plain_datetime() -> None:
    plain = datetime(2026, 11, 27, 21, 53, 28, 123456, tzinfo=UTC)
    ticked = Instant.of(plain, tick=1)
    assert ticked != plain and plain != ticked
    assert not ticked == plain  # noqa: SIM201 - both operators are under test


def test_the_tick_orders_instants_within_a_microsecond() -> None:
    plain = datetime(2026, 11, 27, 21, 53, 28, 123456, tzinfo=UTC)
    one, two = Instant.of(plain, tick=1), Instant.of(plain, tick=2)
    later = plain + timedelta(microseconds=1)
    assert sorted([later, two, plain, one]) == [plain, one, two, later]
    assert plain < one < two < later
    same = Instant.of(plain, tick=1)
    assert two > one >= same and one <= same and not one < same
    assert not two <= one and not one >= two


# --- pickling and copies --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_keeps_the_tick(protocol: int) -> None:
    value = Instant(2026, 11, 27, 22, 1, 10, 0, UTC, tick=1)
    restored = pickle.loads(pickle.dumps(value, protocol=protocol))
    assert isinstance(restored, Instant)
    assert restored.tick == 1
    assert restored == value
    assert format_dotnet(restored) == "2026-11-27T22:01:10.0000001Z"


def test_pickling_keeps_the_zone_and_the_instant() -> None:
    value = Instant(2026, 11, 27, 23, 53, 28, 5, PLUS_TWO, tick=3)
    restored = pickle.loads(pickle.dumps(value))
    assert restored.utcoffset() == timedelta(hours=2)
    assert format_dotnet(restored) == "2026-11-27T21:53:28.0000053Z"


def test_copies_keep_the_tick() -> None:
    value = Instant(2026, 11, 27, 22, 1, 10, 0, UTC, tick=9)
    assert copy.copy(value).tick == 9
    assert copy.deepcopy(value).tick == 9


# --- helpers ---------------------------------------------------------------------------------


def test_utc_now_is_aware_and_in_utc() -> None:
    before = datetime.now(UTC)
    now = utc_now()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after


def test_epoch_micros_counts_microseconds_since_1970() -> None:
    assert epoch_micros(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert epoch_micros(datetime(1970, 1, 2, 0, 0, 0, 7, tzinfo=UTC)) == 86_400_000_007
    assert epoch_micros(datetime(1970, 1, 1, 2, tzinfo=PLUS_TWO)) == 0
