"""The workers both transports run handlers in: bounded concurrency, each stream's jobs in the
order submitted, and a job waiting for its next attempt holding back only its own stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mussikon.adapters.messaging.stream_order import StreamOrderedWorkers
from tests.polling import eventually


@dataclass(eq=False)
class Job:
    stream: str | None
    number: int
    attempts: list[int] = field(default_factory=list)


class Recorder:
    """Runs jobs: records what ran and, for each job that fails, asks for a retry."""

    def __init__(self, failing: dict[int, float] | None = None) -> None:
        self.failing = failing or {}
        """Job number -> delay of its one retry (its first attempt fails)."""
        self.finished: list[Job] = []
        self.finished_before_retry: dict[int, int] = {}
        self.running = 0
        self.peak = 0

    async def __call__(self, job: Job) -> float | None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        job.attempts.append(len(self.finished))
        await asyncio.sleep(0)  # others may start meanwhile
        self.running -= 1
        if job.number in self.failing and len(job.attempts) == 1:
            return self.failing[job.number]
        if len(job.attempts) > 1:
            self.finished_before_retry[job.number] = job.attempts[-1]
        self.finished.append(job)
        return None


def workers(recorder: Recorder, concurrency: int) -> StreamOrderedWorkers[Job]:
    pool = StreamOrderedWorkers("test", concurrency, recorder, lambda job: job.stream)
    pool.start()
    return pool


async def test_one_streams_jobs_run_in_order_streams_in_parallel_within_the_bound() -> None:
    recorder = Recorder()
    pool = workers(recorder, concurrency=8)
    for version in range(20):
        for stream in range(50):
            pool.submit(Job(f"s{stream}", version))
    await eventually(lambda: pool.pending == 0)
    await pool.stop()
    assert len(recorder.finished) == 1000
    for stream in range(50):
        assert [j.number for j in recorder.finished if j.stream == f"s{stream}"] == list(
            range(20))
    assert 1 < recorder.peak <= 8


async def test_a_job_waiting_for_its_retry_frees_its_worker_for_every_other_stream() -> None:
    recorder = Recorder(failing={0: 0.2})
    pool = workers(recorder, concurrency=1)
    pool.submit(Job("failing", 0))
    for n in range(1, 201):
        pool.submit(Job(f"other-{n}", n))
    await eventually(lambda: pool.pending == 0)
    await pool.stop()
    # One worker, yet the 200 others all finished before the failing job's second attempt.
    assert recorder.finished_before_retry == {0: 200}


async def test_a_job_waiting_for_its_retry_holds_back_the_later_jobs_of_its_stream() -> None:
    recorder = Recorder(failing={0: 0.05})
    pool = workers(recorder, concurrency=4)
    pool.submit(Job("s", 0))
    pool.submit(Job("s", 1))
    pool.submit(Job("other", 2))
    await eventually(lambda: pool.pending == 0)
    await pool.stop()
    assert [j.number for j in recorder.finished] == [2, 0, 1]


async def test_jobs_without_a_stream_are_ordered_with_nothing() -> None:
    recorder = Recorder(failing={0: 0.05})
    pool = workers(recorder, concurrency=2)
    pool.submit(Job(None, 0))
    pool.submit(Job(None, 1))
    await eventually(lambda: pool.pending == 0)
    await pool.stop()
    assert [j.number for j in recorder.finished] == [1, 0]


async def test_stopping_returns_the_jobs_not_finished_and_cancels_their_retries() -> None:
    recorder = Recorder(failing={0: 3600})
    pool = workers(recorder, concurrency=1)
    jobs = [Job("s", 0), Job("s", 1), Job("t", 2)]
    for job in jobs:
        pool.submit(job)
    await eventually(lambda: pool.waiting_for_retry == 1 and len(recorder.finished) == 1)
    left = await pool.stop()
    assert sorted(j.number for j in left) == [0, 1]
    assert [j.number for j in recorder.finished] == [2]


async def test_room_waits_until_fewer_jobs_are_pending() -> None:
    release = asyncio.Event()

    async def held(job: Job) -> float | None:
        await release.wait()
        return None  # finished

    pool = StreamOrderedWorkers("test", 2, held, lambda job: job.stream)
    pool.start()
    for n in range(3):
        pool.submit(Job(f"s{n}", n))
    room = asyncio.create_task(pool.room(3))
    for _ in range(20):  # the workers run their jobs as far as they can
        await asyncio.sleep(0)
    assert not room.done()
    release.set()
    await asyncio.wait_for(room, 5)
    await eventually(lambda: pool.pending == 0)
    await pool.stop()


async def test_a_stop_with_a_grace_cancels_the_attempts_still_running_and_returns_their_jobs(
        ) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hangs(job: Job) -> float | None:
        if job.number == 0:
            started.set()
            try:
                await asyncio.Event().wait()  # never returns
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return None

    pool = StreamOrderedWorkers("test", 1, hangs, lambda job: job.stream)
    pool.start()
    for n in range(3):
        pool.submit(Job("s" if n < 2 else "t", n))
    await asyncio.wait_for(started.wait(), 5)
    room = asyncio.create_task(pool.room(1))  # the reader waiting for room is let go
    loop = asyncio.get_running_loop()
    began = loop.time()
    left = await pool.stop(grace=0.2)
    took = loop.time() - began
    assert 0.2 <= took < 1.5
    assert cancelled.is_set()
    assert sorted(j.number for j in left) == [0, 1, 2]  # cut off, behind it, not started
    await asyncio.wait_for(room, 1)
