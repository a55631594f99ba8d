"""The tests' polling helpers: they return as soon as the condition holds, and a timeout names
what was awaited."""

from __future__ import annotations

import time

import pytest

from tests.polling import eventually, wait_until


async def test_eventually_returns_once_the_condition_holds() -> None:
    looks: list[int] = []

    async def third_look() -> bool:
        looks.append(1)
        return len(looks) == 3

    await eventually(third_look, 5, interval=0.001)
    assert len(looks) == 3
    await eventually(lambda: True, 0.1)


async def test_eventually_names_what_never_came_true() -> None:
    async def queue_is_empty() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"after 0\.05 s waiting for queue_is_empty"):
        await eventually(queue_is_empty, 0.05)
    with pytest.raises(AssertionError, match="waiting for the letter"):
        await eventually(lambda: False, 0.05, what="the letter")
    with pytest.raises(AssertionError, match="waiting for a lambda in test_eventually_names"):
        await eventually(lambda: False, 0.05)


def test_wait_until_blocks_until_true_or_names_what_never_came() -> None:
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start > 0.03, 5, interval=0.001)
    assert time.monotonic() - start > 0.03

    def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="waiting for never"):
        wait_until(never, 0.05)
