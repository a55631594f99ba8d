"""UTC time with .NET's resolution.

.NET's `DateTime` counts 100-nanosecond ticks and System.Text.Json writes up to
seven fractional digits (`…:10.0000001Z`); Python's `datetime` stops at
microseconds. `Instant` is a `datetime` that keeps the seventh digit, so a time
read from the wire is written back exactly as it came.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, SupportsIndex


class Instant(datetime):
    """An aware UTC datetime plus `tick`, the 100 ns digit below its microsecond (0-9)."""

    __slots__ = ("tick",)
    tick: int

    def __new__(cls, *args: Any, tick: int = 0, **kwargs: Any) -> Instant:
        self = super().__new__(cls, *args, **kwargs)
        if not 0 <= tick <= 9:
            raise ValueError(f"tick must be 0..9, got {tick}")
        self.tick = tick
        return self

    @classmethod
    def of(cls, value: datetime, tick: int = 0) -> Instant:
        """Wrap an aware datetime (converted to UTC)."""
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: a time must carry its zone")
        v = value.astimezone(UTC)
        return cls(
            v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, UTC, tick=tick
        )

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # datetime's own __reduce_ex__ would rebuild a tick-less Instant: pickle and copy keep it.
        plain = datetime(self.year, self.month, self.day, self.hour, self.minute, self.second,
                         self.microsecond, self.tzinfo, fold=self.fold)
        return (_rebuild, (plain, self.tick))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, datetime):
            return datetime.__eq__(self, other) is True and self.tick == ticks_of(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __lt__(self, other: date) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return datetime.__lt__(self, other) or (
            datetime.__eq__(self, other) is True and self.tick < ticks_of(other))

    def __le__(self, other: date) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return self.__lt__(other) or self.__eq__(other)

    def __gt__(self, other: date) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return not self.__le__(other)

    def __ge__(self, other: date) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return not self.__lt__(other)

    def __hash__(self) -> int:
        # Equal to a plain datetime when the tick is 0, so it must hash like one.
        plain = datetime.__hash__(self)
        return plain if self.tick == 0 else hash((plain, self.tick))

    def __repr__(self) -> str:
        return f"Instant({format_dotnet(self)!r})"


def _rebuild(value: datetime, tick: int) -> Instant:
    return Instant(value.year, value.month, value.day, value.hour, value.minute, value.second,
                   value.microsecond, value.tzinfo, fold=value.fold, tick=tick)


def ticks_of(value: datetime) -> int:
    """The 100 ns digit of a datetime (0 for a plain datetime)."""
    return value.tick if isinstance(value, Instant) else 0


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def format_dotnet(value: datetime) -> str:
    """Format as System.Text.Json writes a UTC DateTime: seven digits at most, zeros trimmed."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: a time must carry its zone")
    v = value.astimezone(UTC) if value.utcoffset() else value
    base = f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    fraction = f"{v.microsecond:06d}{ticks_of(value)}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


def parse_dotnet(text: str) -> datetime:
    """Parse an ISO 8601 time as .NET writes it (`Z` or an offset; up to seven fraction digits).

    Returns a plain aware datetime when there is no seventh digit, else an `Instant`.
    """
    if not isinstance(text, str):
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    dot = text.find(".")
    end = dot + 1
    if dot != -1:
        while end < len(text) and text[end].isdigit():
            end += 1
    try:
        if dot == -1 or end - dot - 1 <= 6:  # the common case: datetime parses it as is
            value = datetime.fromisoformat(text)
            tick = 0
        else:
            digits = text[dot + 1 : end]
            if len(digits) > 7:
                raise ValueError
            tick = int(digits[6])
            value = datetime.fromisoformat(f"{text[:dot]}.{digits[:6]}{text[end:]}")
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        # .NET writes Kind=Unspecified without a zone: read it as UTC.
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    return Instant.of(value, tick) if tick else value


def epoch_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch: the sortable form the stores index."""
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
