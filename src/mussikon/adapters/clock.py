"""Clocks: the machine's time, a clock that stands still until a test moves it, and the
machine's time moved forward by hand (the demo's "48 hours later" in a moment)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mussikon.domain.instant import utc_now
from mussikon.ports.clock import AdjustableClock, Clock


class SystemClock(Clock):
    """The machine's time."""

    def now(self) -> datetime:
        return utc_now()


def _forward(delta: timedelta) -> timedelta:
    if delta < timedelta(0):
        raise ValueError(f"a clock only moves forward, not by {delta}")
    return delta


class FakeClock(AdjustableClock):
    """Stands still at `start` until `advance` moves it: tests wait for nothing."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("a clock's time must carry its zone")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += _forward(delta)


class OffsetClock(AdjustableClock):
    """The machine's time plus an offset that `advance` grows."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += _forward(delta)
