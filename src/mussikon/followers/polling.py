"""Polling with back-off and wake-ups: the loop of every reader that follows the store.

The projections, the in-process transport's subscriptions, the outbox relay and the saga
timeout scheduler each run a `PollLoop`: one step after another while there is work,
waits that double while there is none (no busy loop), cut short by `wake()` when someone
knows there is new work. `wait_until` is how their callers wait for them to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from mussikon.ports.event_store import StoreUnavailable

log = logging.getLogger("mussikon.polling")

Step = Callable[[], Awaitable[bool]]
"""One round of a loop's work: True if it got something done (the next one starts at once)."""


class PollLoop:
    """Runs a step over and over until `stop()`.

    After a step that got something done the next starts at once; after one that found
    nothing the loop waits `interval`, then twice that, and so on up to `max_interval`, and
    starts again with `interval` after the next step that got something done. `wake()` ends
    a wait at once, or makes the next one return at once if it comes during a step. A step
    that raises is logged (one line for `expected_errors` and for a store that is unavailable,
    which every step here may meet while a database restarts; with the traceback for any
    other) and counts as one that found nothing.
    """

    def __init__(self, name: str, *, interval: float, max_interval: float,
                 expected_errors: tuple[type[BaseException], ...] = ()) -> None:
        self.name = name
        self.interval = interval
        self.max_interval = max(max_interval, interval)
        self.expected_errors: tuple[type[BaseException], ...] = (StoreUnavailable,
                                                                 *expected_errors)
        self.stopping = False
        self._woken = asyncio.Event()
        self._at_most: float | None = None

    def wake(self) -> None:
        """There is new work: end the current wait (or the next one) now."""
        self._woken.set()

    def stop(self) -> None:
        """End `run` once the step in progress, if any, has finished."""
        self.stopping = True
        self._woken.set()

    def look_again_within(self, seconds: float) -> None:
        """For a step that found nothing but knows when something falls due: the wait that
        follows it lasts no longer than `seconds` (nor less than `interval`)."""
        self._at_most = seconds if self._at_most is None else min(self._at_most, seconds)

    async def run(self, step: Step) -> None:
        """Run `step` until `stop()`."""
        delay = self.interval
        while not self.stopping:
            self._at_most = None
            try:
                progressed = await step()
            except self.expected_errors as exc:
                log.warning("%s: %s; trying again", self.name, exc or type(exc).__name__)
                progressed = False
            except Exception:
                log.exception("%s failed; trying again", self.name)
                progressed = False
            if progressed:
                delay = self.interval
                continue
            wait = delay if self._at_most is None else max(min(delay, self._at_most),
                                                           self.interval)
            await self.pause(wait)
            delay = min(delay * 2, self.max_interval)

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if woken."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for: see `wait_until`
                await self._woken.wait()
        self._woken.clear()


async def wait_until(reached: Callable[[], Awaitable[bool]], timeout: float, *,
                     wake: Callable[[], None],
                     catch_up: Callable[[], Awaitable[object]] | None = None,
                     every: float = 0.01) -> None:
    """Return once `reached()` is true: between two checks, `wake()` the loops doing the work
    and give them `every` seconds, or, where no loop runs, do the work with `catch_up()`.
    TimeoutError after `timeout` seconds.

    `asyncio.timeout` rather than `asyncio.wait_for`: on Python 3.11, `wait_for` returns
    normally when its caller is cancelled just as the awaited work finishes, and a handler or
    loop cancelled that way would carry on as if nothing had happened.
    """
    async def until() -> None:
        while not await reached():
            if catch_up is not None:
                await catch_up()
                continue
            wake()
            await asyncio.sleep(every)

    async with asyncio.timeout(timeout):
        await until()
