"""A small pool of asyncpg connections for the PostgreSQL store.

Why not asyncpg's own pool: each acquire and release there costs client CPU (a proxy
object, holder bookkeeping, timeouts) and, by default, a reset query, a whole round trip,
next to an append that is one round trip of its own; where client and database share the
cores, the client's CPU is the database's too (figures: docs/performance-notes.md). Here
taking a connection is a list pop and giving it back a list append.

A connection found closed (the server restarted, or terminated our backend) is dropped
and replaced by a new one on the next acquire: reconnection costs no extra code path.

A server that stops answering (a network that drops everything, a server stuck on its
disk) would leave a query waiting forever: with `answer_within`, one watchdog task closes
every connection taken for longer than that, which fails the query waiting on it. It costs
an operation a time stamp, where asyncpg's `command_timeout` arms a timer for every query
(figures: docs/performance-notes.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeAlias

import asyncpg

from mussikon.ports.event_store import StoreError

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"  # generic only in the stubs

log = logging.getLogger("mussikon.store")


class PoolClosed(StoreError):
    """The pool was closed; no connection can be taken any more."""


class ConnectionPool:
    """Up to `size` connections, opened on demand, handed out newest first (warm caches)."""

    def __init__(self, connect: Callable[[], Awaitable[Connection]], size: int,
                 where: str = "the database", *, answer_within: float | None = None) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self._connect = connect
        self.size = size
        self.where = where
        """Where the connections go, without credentials: for error messages."""
        self.answer_within = answer_within
        """Seconds a connection may stay taken before it is closed as one the server stopped
        answering on (None: no limit)."""
        self._taken_at: dict[Connection, float] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._idle: list[Connection] = []
        self._open = 0  # connections open or being opened, idle or in use
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    def acquire(self) -> Borrowed:
        """`async with pool.acquire() as conn`: a connection for the duration of the block."""
        return Borrowed(self)

    async def take(self) -> Connection:
        """A connection, opened if none is idle; waits while `size` are in use."""
        while True:
            if self._closed:
                raise PoolClosed("the connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return self._lent(conn)
                self._open -= 1  # closed while idle: the server went away
            if self._open < self.size:
                self._open += 1
                try:
                    return self._lent(await self._connect())
                except BaseException:
                    self._open -= 1
                    self._hand_over(None)
                    raise
            handed = await self._wait()
            if handed is not None:
                return self._lent(handed)

    def _lent(self, conn: Connection) -> Connection:
        if self.answer_within is not None:
            self._taken_at[conn] = time.monotonic()
            if self._watchdog is None:
                self._watchdog = asyncio.create_task(self._watch(self.answer_within),
                                                     name=f"pool-watchdog:{self.where}")
        return conn

    def unwatched(self, conn: Connection) -> None:
        """Let this connection, taken, stay taken as long as it needs (a migration)."""
        self._taken_at.pop(conn, None)

    async def _watch(self, limit: float) -> None:
        """Close every connection taken for longer than `limit` seconds, looking four times
        in that time."""
        while not self._closed:
            await asyncio.sleep(limit / 4)
            now = time.monotonic()
            for conn, since in list(self._taken_at.items()):
                if now - since > limit:
                    del self._taken_at[conn]
                    log.warning("no answer from PostgreSQL at %s within %g s: closing the "
                                "connection", self.where, limit)
                    conn.terminate()

    async def _wait(self) -> Connection | None:
        """Wait for a connection given back (returned) or a free slot (None)."""
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()  # handed over just as we were cancelled: pass it on
                if handed is not None:
                    self.give_back(handed, reusable=True)
                else:
                    self._hand_over(None)
            else:
                self._waiters.remove(waiter)
            raise

    def give_back(self, conn: Connection, reusable: bool) -> None:
        """Return a connection taken; `reusable=False` (or a closed one) frees its slot."""
        self._taken_at.pop(conn, None)
        if reusable and not self._closed and not conn.is_closed() \
                and not conn.is_in_transaction():
            self._hand_over(conn)
            return
        if not conn.is_closed():
            conn.terminate()
        self._open -= 1
        self._hand_over(None)

    def _hand_over(self, conn: Connection | None) -> None:
        """Give `conn` (or a free slot, if None) to the oldest waiter, else keep it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    async def close(self) -> None:
        """Close idle connections now; those in use close when given back."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the connection pool is closed"))
        results = await asyncio.gather(*(c.close(timeout=2) for c in idle),
                                       return_exceptions=True)
        for conn, result in zip(idle, results, strict=True):
            if isinstance(result, BaseException):
                conn.terminate()


class Borrowed:
    """A connection taken for an `async with` block (a class, not a generator: it is on the
    path of every operation).

    Left by a cancellation (or another BaseException), a query may have been interrupted
    and the connection's state is unknown: it is terminated rather than reused. Ordinary
    exceptions leave it reusable.
    """

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        self._conn = await self._pool.take()
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool.give_back(conn, reusable=exc is None or isinstance(exc, Exception))
