"""The `Clock` port: what time it is, asked of one object so that tests and the demo control time.

The saga engine stamps its history and schedules its timeouts by a Clock, and the timeout
scheduler fires what the Clock says is due. `SystemClock` is the real time; `FakeClock`
stands still until a test moves it; `OffsetClock` is the real time moved forward by hand,
which lets the demo show "48 hours later" in a moment.
"""

from __future__ import annotations

import abc
from datetime import UTC, datetime, timedelta

from mussikon.domain.instant import utc_now


class Clock(abc.ABC):
    """Tells the current time."""

    @abc.abstractmethod
    def now(self) -> datetime:
        """The current time, aware, in UTC."""


class SystemClock(Clock):
    """The machine's time."""

    def now(self) -> datetime:
        return utc_now()


class AdjustableClock(Clock):
    """A clock that can be moved forward (never back: timeouts already due stay due)."""

    @abc.abstractmethod
    def advance(self, delta: timedelta) -> None:
        """Move the time forward by `delta`."""


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
