"""The poll loop every reader of the store runs: at once again after work, doubling waits up to
a bound while idle (never a busy loop), woken at once by `wake()`; and `wait_until`."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mussikon.followers.polling import PollLoop, Step, wait_until
from tests.polling import eventually


class RecordedWaits(PollLoop):
    """A loop whose waits return at once and are recorded (a fake sleep)."""

    def __init__(self, **options: float) -> None:
        super().__init__("test loop", interval=options.pop("interval", 0.1),
                         max_interval=options.pop("max_interval", 1.0))
        self.waits: list[float] = []

    async def pause(self, seconds: float) -> None:
        self.waits.append(seconds)


def steps(loop: PollLoop, outcomes: list[bool | Exception],
          at_most: dict[int, float] | None = None) -> tuple[list[int], Step]:
    """A step that returns (or raises) the given outcomes in turn, then stops the loop."""
    calls: list[int] = []

    async def step() -> bool:
        calls.append(len(calls))
        outcome = outcomes[len(calls) - 1]
        if len(calls) == len(outcomes):
            loop.stop()
        if at_most and len(calls) - 1 in at_most:
            loop.look_again_within(at_most[len(calls) - 1])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return calls, step


async def test_idle_waits_double_up_to_the_maximum_one_wait_per_idle_step() -> None:
    loop = RecordedWaits(interval=0.1, max_interval=1.0)
    calls, step = steps(loop, [False] * 8)
    await loop.run(step)
    assert len(calls) == 8
    assert loop.waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])


async def test_work_done_means_the_next_step_at_once_and_the_waits_start_over() -> None:
    loop = RecordedWaits(interval=0.1, max_interval=1.0)
    calls, step = steps(loop, [False, False, False, True, True, False, False])
    await loop.run(step)
    assert len(calls) == 7
    assert loop.waits == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2])


async def test_a_step_that_knows_when_work_falls_due_shortens_the_wait_never_below_interval(
        ) -> None:
    loop = RecordedWaits(interval=0.1, max_interval=1.0)
    _, step = steps(loop, [False] * 5, at_most={2: 0.3, 3: 0.0, 4: 5.0})
    await loop.run(step)
    assert loop.waits == pytest.approx([0.1, 0.2, 0.3, 0.1, 1.0])


async def test_a_step_that_raises_is_logged_and_counts_as_idle(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = RecordedWaits(interval=0.1, max_interval=1.0)
    loop.expected_errors = (ConnectionError,)
    calls, step = steps(loop, [RuntimeError("bug"), ConnectionError("gone"), True, False])
    with caplog.at_level(logging.WARNING, "mussikon.polling"):
        await loop.run(step)
    assert len(calls) == 4
    assert loop.waits == pytest.approx([0.1, 0.2, 0.1])
    [bug, gone] = caplog.records
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    assert gone.levelno == logging.WARNING and gone.exc_info is None
    assert "gone" in gone.getMessage()


async def test_wake_ends_a_long_wait_at_once() -> None:
    loop = PollLoop("test loop", interval=3600, max_interval=3600)
    stepped = [asyncio.Event(), asyncio.Event()]
    waiting = asyncio.Event()
    calls = 0

    async def step() -> bool:
        nonlocal calls
        stepped[calls].set()
        calls += 1
        if calls == 2:
            loop.stop()
        return False

    original_pause = loop.pause

    async def pause(seconds: float) -> None:
        waiting.set()
        await original_pause(seconds)

    loop.pause = pause  # type: ignore[method-assign]
    running = asyncio.create_task(loop.run(step))
    await asyncio.wait_for(waiting.wait(), 5)  # in its hour-long wait
    loop.wake()
    await asyncio.wait_for(stepped[1].wait(), 5)
    await asyncio.wait_for(running, 5)
    assert calls == 2


async def test_a_wake_during_a_step_is_not_lost() -> None:
    loop = PollLoop("test loop", interval=3600, max_interval=3600)
    calls = 0

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            loop.wake()  # new work arrives while the step is still looking
        else:
            loop.stop()
        return False

    await asyncio.wait_for(loop.run(step), 5)
    assert calls == 2


async def test_wait_until_wakes_the_workers_between_checks_and_times_out() -> None:
    checks, wakes = 0, 0

    async def reached() -> bool:
        nonlocal checks
        checks += 1
        return checks == 3

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    await wait_until(reached, 5, wake=wake, every=0)
    assert (checks, wakes) == (3, 2)

    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError):
        await wait_until(never, 0.05, wake=wake)


async def test_wait_until_does_the_work_itself_where_no_loop_runs() -> None:
    done = 0

    async def reached() -> bool:
        return done == 2

    async def catch_up() -> None:
        nonlocal done
        done += 1

    def wake() -> None:
        raise AssertionError("no loop to wake")

    await wait_until(reached, 5, wake=wake, catch_up=catch_up)
    assert done == 2


async def test_a_loop_cancelled_as_it_is_woken_ends_cancelled() -> None:
    """A loop cancelled (a worker stopped) at the moment it is woken stops, rather than run
    on as if the cancellation had not come (Python 3.11's `asyncio.wait_for` loses it)."""
    loop = PollLoop("test loop", interval=60, max_interval=60)
    stepped = 0

    async def step() -> bool:
        nonlocal stepped
        stepped += 1
        return False

    task = asyncio.create_task(loop.run(step))
    await eventually(lambda: stepped == 1)
    await asyncio.sleep(0)  # into its wait
    loop.wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
    assert stepped == 1


async def test_wait_until_cancelled_as_the_condition_is_reached_ends_cancelled() -> None:
    """The same for `wait_until`: a handler waiting for its read models, cancelled at the
    moment they catch up, stops there."""
    reached, working = False, asyncio.Event()
    work_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def is_reached() -> bool:
        return reached

    async def catch_up() -> None:
        working.set()
        await work_done

    task = asyncio.create_task(wait_until(is_reached, 60, wake=lambda: None,
                                          catch_up=catch_up))
    await working.wait()
    reached = True
    work_done.set_result(None)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
