"""Handlers at bounded concurrency, each stream's events in order, retries that free their slot.

Both transports hand what they receive to `StreamOrderedWorkers`: `concurrency` worker
tasks take jobs from one ready queue, so at most that many jobs run at once. A job whose
stream already has one in progress (running, or waiting for its next attempt) waits
behind it, in the order submitted: the events of one stream are handled one after
another, streams in parallel. Each stream is a partition of its own, as in Eventuous's
partitioned consumer, but without a fixed number of hash partitions: a slow or failing
stream never holds back another that happens to hash alike.

A job is run by the `attempt` function given, which returns None once the job is
finished (handled, or given up on) or else the seconds to wait before its next attempt.
While it waits, its worker takes other jobs: the waiting job holds back only its own
stream, whose later events wait for it (they must, for the order), never other streams.

`stop(grace)` gives the attempts running `grace` seconds to finish, then cancels them: a
handler that never returns cannot hold a stopping process. Their jobs are returned with
the others not finished, for the transport to leave to be delivered again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("mussikon.bus")

CANCEL_WAIT = 1.0
"""Seconds `stop` waits for the attempts it cancelled to end; one that ignores its
cancellation is then left behind, running, and its job returned as not finished."""

Job = TypeVar("Job")


class StreamOrderedWorkers(Generic[Job]):
    """Runs jobs `concurrency` at once, one stream's jobs in the order submitted.

    `stream_of(job)` names the job's stream (None: ordered with nothing). `attempt(job)`
    runs it once and returns None when it is finished, else the delay before the next
    attempt; it should not raise (an exception is logged and finishes the job).
    """

    def __init__(self, name: str, concurrency: int,
                 attempt: Callable[[Job], Awaitable[float | None]],
                 stream_of: Callable[[Job], Hashable | None]) -> None:
        self.name = name
        self.concurrency = concurrency
        self._attempt = attempt
        self._stream_of = stream_of
        self.pending = 0
        """Jobs submitted and not finished: queued, running, or waiting for a retry."""
        self._ready: asyncio.Queue[Job | None] = asyncio.Queue()
        # A stream with a job in progress, and the jobs submitted behind it (None: none yet,
        # so that the common case, one job of a stream at a time, allocates no deque).
        self._behind: dict[Hashable, deque[Job] | None] = {}
        self._retrying: dict[int, tuple[Job, asyncio.TimerHandle]] = {}
        self._retry_count = 0
        self._workers: list[asyncio.Task[None]] = []
        self._running: list[Job | None] = []
        """The job each worker is attempting (None: none)."""
        self._stopping = False
        self._not_started: list[Job] = []
        self._room: asyncio.Future[None] | None = None
        self._room_below = 0

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The worker tasks (running the jobs' attempts)."""
        return list(self._workers)

    @property
    def waiting_for_retry(self) -> int:
        """Jobs waiting for their next attempt."""
        return len(self._retrying)

    def start(self) -> None:
        """Start the worker tasks (once)."""
        if not self._workers:
            self._running = [None] * self.concurrency
            self._workers = [asyncio.create_task(self._work(n), name=f"{self.name}-{n}")
                             for n in range(self.concurrency)]

    def submit(self, job: Job) -> None:
        """Run `job` when a worker is free and its stream's earlier jobs are finished."""
        self.pending += 1
        stream = self._stream_of(job)
        if stream is None:
            self._ready.put_nowait(job)
            return
        if stream not in self._behind:
            self._behind[stream] = None
            self._ready.put_nowait(job)
            return
        behind = self._behind[stream]
        if behind is None:
            self._behind[stream] = deque((job,))
        else:
            behind.append(job)

    async def room(self, below: int) -> None:
        """Wait until fewer than `below` jobs are pending, or the workers are stopping."""
        while self.pending >= below and not self._stopping:
            self._room_below = below
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await self._room

    async def stop(self, grace: float | None = None) -> list[Job]:
        """Let the attempts running finish, within `grace` seconds if given (those still
        running then are cancelled), and start no other; return the jobs not finished
        (queued, behind their stream, waiting for a retry, or cancelled)."""
        self._stopping = True
        room, self._room = self._room, None
        if room is not None:
            room.set_result(None)
        left = []
        for job, timer in self._retrying.values():
            timer.cancel()
            left.append(job)
        self._retrying.clear()
        for _ in self._workers:
            self._ready.put_nowait(None)
        if self._workers:
            _, running = await asyncio.wait(self._workers, timeout=grace)
            if running:
                log.warning("%s: %d handler(s) still running after %g s are cancelled; their"
                            " messages will be delivered again", self.name, len(running), grace)
                for task in running:
                    task.cancel()
                _, running = await asyncio.wait(running, timeout=CANCEL_WAIT)
                if running:
                    log.error("%s: %d handler(s) ignored their cancellation and are left "
                              "running", self.name, len(running))
        left += [job for job in self._running if job is not None]
        self._running = []
        self._workers = []
        left += self._not_started
        self._not_started = []
        while not self._ready.empty():
            queued = self._ready.get_nowait()
            if queued is not None:
                left.append(queued)
        for behind in self._behind.values():
            left.extend(behind or ())
        self._behind.clear()
        self.pending = 0
        return left

    async def _work(self, number: int) -> None:
        ready, running = self._ready, self._running
        while (job := await ready.get()) is not None:
            if self._stopping:
                self._not_started.append(job)
                continue
            running[number] = job  # until the attempt ends (not if it is cancelled)
            try:
                delay = await self._attempt(job)
            except Exception:
                log.exception("%s: unexpected failure of a job", self.name)
                delay = None
            running[number] = None
            if delay is None:
                self._finished(job)
            else:
                self._retry_later(job, delay)

    def _retry_later(self, job: Job, delay: float) -> None:
        self._retry_count += 1
        key = self._retry_count
        timer = asyncio.get_running_loop().call_later(delay, self._due, key)
        self._retrying[key] = (job, timer)

    def _due(self, key: int) -> None:
        job, _ = self._retrying.pop(key)
        self._ready.put_nowait(job)

    def _finished(self, job: Job) -> None:
        self.pending -= 1
        stream = self._stream_of(job)
        if stream is not None:
            behind = self._behind.get(stream)  # none if stopped meanwhile
            if behind:
                self._ready.put_nowait(behind.popleft())
            else:
                self._behind.pop(stream, None)
        room = self._room
        if room is not None and self.pending < self._room_below:
            self._room = None
            room.set_result(None)
