"""Group commit for SQLite: concurrent write transactions share one commit (one fsync).

SQLite has one writer at a time, and at `synchronous=FULL` every commit waits for an fsync
of the write-ahead log: one commit per request caps a process at a few thousand writes a
second however many requests it serves at once. When several writes are waiting, this
runs them in one transaction, each inside its own savepoint (but a write of one
statement, which SQLite undoes by itself when it fails), so each succeeds or fails on its
own (a write that raises leaves nothing behind and only its caller sees the error), and
all the successful ones become durable together, by one commit. A caller's write is
durable when its call returns: nobody is told "done" before the commit.

A write by a task writing alone runs at once, so a single writer pays nothing for this.
When another task wrote a moment ago, writers are concurrent: a write then waits for the
end of the current round of the event loop, so that the others' writes join it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")

_perf_counter = time.perf_counter

Body = Callable[[sqlite3.Connection], Any]
"""A write: runs inside a transaction it must not begin, commit or roll back itself."""


@dataclass(slots=True)
class _Waiting(Generic[T]):
    body: Callable[[sqlite3.Connection], T]
    one_statement: bool
    result: asyncio.Future[T]


class Busy(Exception):
    """The file is locked by another connection: the group's transaction could not begin."""


def is_busy(exc: BaseException | None) -> bool:
    """The error is Busy or SQLITE_BUSY (or arose while handling one): another connection
    holds the lock."""
    while exc is not None:
        if isinstance(exc, Busy) or (
                isinstance(exc, sqlite3.OperationalError)
                and getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY):
            return True
        exc = exc.__context__
    return False


class GroupCommit:
    """Runs write bodies in shared transactions: a lone write on a non-waiting connection
    on the event loop's thread; a group, or a write that found the file locked, on the
    executor's thread, whose `waiting` call retries it until the lock is free.

    `inline` is the event loop's connection or None; `waiting` runs a function with the
    executor's connection, on the executor's thread, retrying it while it raises Busy.
    """

    YIELD_EVERY = 0.001
    """Seconds of writes run back to back on the event loop before a write lets it go round."""
    COMPANY_WINDOW = 0.002
    """Seconds: a write by another task this recently means writers are concurrent."""

    MAX_GROUP = 500
    """Writes in one transaction at most (a bounded transaction, a bounded wait)."""

    def __init__(self, inline: Callable[[], sqlite3.Connection | None],
                 waiting: Callable[[Callable[[sqlite3.Connection], Any]], Any],
                 executor: Executor) -> None:
        self._inline = inline
        self._waiting_call = waiting
        self._executor = executor
        self._queue: list[_Waiting[Any]] = []
        self._writers = 0
        """Calls to `write` that have not returned (a write waiting for its result counts)."""
        self._yielded = 0.0
        self._last_task = 0
        self._last_write = -1.0
        self._scheduled = False
        self._in_thread = False
        """A group is running on the executor's thread: the next waits for it."""
        self.commits = 0
        """Transactions committed (a group counts once): writes ÷ commits is the batching."""

    async def write(self, body: Callable[[sqlite3.Connection], T], *,
                    one_statement: bool = False) -> T:
        """Run `body` in a write transaction; return its result once it is committed.

        `one_statement`: `body` writes with one statement (which SQLite makes atomic on its
        own), so a write alone needs no BEGIN and COMMIT around it, and one in a group no
        savepoint.
        """
        self._writers += 1
        try:
            if _perf_counter() - self._yielded >= self.YIELD_EVERY:
                # Let the other tasks run now and then (a single writer runs its writes back
                # to back on the event loop's thread); meanwhile this counts as a writer.
                await asyncio.sleep(0)
                self._yielded = _perf_counter()
            conn = self._inline()
            if conn is not None and not self._queue and not self._in_thread and self._alone():
                try:  # one statement: autocommit (SQLite makes it atomic)
                    outcome: tuple[bool, Any] = ((True, body(conn)) if one_statement
                                                 else run_group(conn, [(body, False)])[0])
                except Busy:
                    pass  # locked by another process: wait for it like the others
                except sqlite3.OperationalError as exc:
                    if not one_statement or not is_busy(exc):
                        raise
                else:
                    self._committed()
                    if outcome[0]:
                        return cast(T, outcome[1])
                    raise cast(BaseException, outcome[1])
            waiting: _Waiting[T] = _Waiting(body, one_statement,
                                            asyncio.get_running_loop().create_future())
            self._queue.append(waiting)
            self._schedule()
            return await waiting.result
        finally:
            self._writers -= 1

    async def wait_idle(self) -> None:
        """Return once every write under way (handed in, or about to be) has been committed
        or has failed."""
        while self._writers or self._queue or self._in_thread:  # noqa: ASYNC110 (at close)
            await asyncio.sleep(0.001)

    def _alone(self) -> bool:
        """True if no other task is writing: none is waiting for its write, and none other
        than this one finished a write within `COMPANY_WINDOW` seconds. A single writer's
        writes run at once; concurrent writers' wait for each other."""
        task = id(asyncio.current_task())
        alone = self._writers == 1 and (
            task == self._last_task
            or _perf_counter() - self._last_write >= self.COMPANY_WINDOW)
        self._last_task = task
        return alone

    def _committed(self) -> None:
        self.commits += 1
        self._last_write = _perf_counter()

    def _schedule(self) -> None:
        if not self._scheduled and not self._in_thread:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Run the waiting writes (those whose callers still wait) as one group: a lone
        write on the event loop's thread, a group of several on the executor's, so the
        event loop goes on serving the other tasks while the commit waits for the disk."""
        self._scheduled = False
        group = [w for w in self._queue[:self.MAX_GROUP] if not w.result.done()]
        del self._queue[:self.MAX_GROUP]
        if not group:
            return
        conn = self._inline()
        if conn is None or len(group) > 1:
            self._to_thread(group)
            return
        try:
            self._settle(group, run_group(conn, [(group[0].body, group[0].one_statement)]))
        except Busy:
            self._to_thread(group)  # locked by another process: wait for it there
            return
        except BaseException as exc:  # the commit failed: the write did not happen
            self._fail(group, exc)
        if self._queue:
            self._schedule()

    def _to_thread(self, group: list[_Waiting[Any]]) -> None:
        self._in_thread = True
        loop = asyncio.get_running_loop()
        bodies = [(w.body, w.one_statement) for w in group]
        try:
            future = loop.run_in_executor(
                self._executor, self._waiting_call, lambda conn: run_group(conn, bodies))
        except RuntimeError as exc:  # the executor was shut down: the store is closed
            self._in_thread = False
            self._fail(group, exc)
            return

        def done(future: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            self._in_thread = False
            if future.cancelled():
                self._fail(group, asyncio.CancelledError())
            elif (exc := future.exception()) is not None:
                self._fail(group, exc)
            else:
                self._settle(group, future.result())
            if self._queue:
                self._schedule()

        future.add_done_callback(done)

    def _settle(self, group: list[_Waiting[Any]], outcomes: list[tuple[bool, Any]]) -> None:
        self._committed()
        for waiting, (ok, value) in zip(group, outcomes, strict=True):
            if waiting.result.done():
                continue
            if ok:
                waiting.result.set_result(value)
            else:
                waiting.result.set_exception(value)

    @staticmethod
    def _fail(group: list[_Waiting[Any]], exc: BaseException) -> None:
        for waiting in group:
            if not waiting.result.done():
                waiting.result.set_exception(exc)


def run_group(conn: sqlite3.Connection, bodies: list[tuple[Body, bool]]
              ) -> list[tuple[bool, Any]]:
    """Run `bodies` in one transaction; (ok, result or exception) each. Each (body,
    one_statement) runs in a savepoint, but for a body of one statement, which SQLite undoes
    by itself when it fails.

    Raises Busy if the transaction could not begin because another connection holds the
    lock (nothing ran); any other error of the transaction itself (the commit, or a failure
    that ended the transaction) propagates after a rollback: then none of the bodies
    happened.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise Busy() from exc
        raise
    outcomes: list[tuple[bool, Any]] = []
    append = outcomes.append
    try:
        if len(bodies) == 1:
            try:
                append((True, bodies[0][0](conn)))
            except Exception as exc:
                conn.execute("ROLLBACK")
                return [(False, exc)]
        else:
            for body, one_statement in bodies:
                if one_statement:
                    try:
                        append((True, body(conn)))
                    except Exception as exc:
                        if not conn.in_transaction:
                            raise  # an error that ended the transaction: none happened
                        append((False, exc))
                    continue
                conn.execute("SAVEPOINT group_member")
                try:
                    value = body(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO group_member")
                    conn.execute("RELEASE group_member")
                    append((False, exc))
                    continue
                conn.execute("RELEASE group_member")
                append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes
