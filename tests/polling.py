"""Waiting in tests: poll a condition until it holds, never sleep a fixed time and hope.

`await eventually(check)` for async tests, `wait_until(check)` for sync ones. Either fails
with an AssertionError that names what was awaited (the check's name, or `what`), so a
timeout says which condition never came true.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], bool | Awaitable[bool]]
"""A condition: a function returning a truth value, or a coroutine function returning one."""

INTERVAL = 0.02
"""Seconds between two looks at the condition."""


def _name(check: Callable[[], object], what: str | None) -> str:
    if what:
        return what
    name = getattr(check, "__name__", "")
    if name == "<lambda>":
        return f"a lambda in {check.__qualname__.removesuffix('.<lambda>')}"
    return name or repr(check)


async def eventually(check: Check, timeout: float = 10.0, *, what: str | None = None,
                     interval: float = INTERVAL) -> None:
    """Wait until `check()` is true, looking every `interval` seconds; AssertionError naming
    what was awaited if it is still false after `timeout` seconds (a check that hangs counts
    as false)."""
    async def poll() -> None:
        while True:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(interval)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout} s waiting for {_name(check, what)}") from None


def wait_until(check: Callable[[], bool], timeout: float = 10.0, *, what: str | None = None,
               interval: float = INTERVAL) -> None:
    """The same for synchronous code: block until `check()` is true, or AssertionError naming
    what was awaited after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {_name(check, what)}")
        time.sleep(interval)
