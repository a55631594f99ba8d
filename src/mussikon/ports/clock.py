"""The `Clock` port: what time it is, asked of one object so that tests and the demo control time.

The saga engine stamps its history and schedules its timeouts by a Clock, and the timeout
scheduler fires what the Clock says is due. `SystemClock` is the real time; `FakeClock`
stands still until a test moves it; `OffsetClock` is the real time moved forward by hand,
which lets the demo show "48 hours later" in a moment.
"""

from __future__ import annotations

import abc
from datetime import datetime, timedelta


class Clock(abc.ABC):
    """Tells the current time."""

    @abc.abstractmethod
    def now(self) -> datetime:
        """The current time, aware, in UTC."""


class AdjustableClock(Clock):
    """A clock that can be moved forward (never back: timeouts already due stay due)."""

    @abc.abstractmethod
    def advance(self, delta: timedelta) -> None:
        """Move the time forward by `delta`."""


