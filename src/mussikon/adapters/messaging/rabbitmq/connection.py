"""One AMQP connection kept open: reconnected with backoff after a broker or network loss.

aiormq has no automatic recovery, so this does it: a supervisor waits for the connection
to close, connects again, and calls every `on_connected` callback (declare the topology,
resume consuming) before users see the new connection. Channels belong to a connection;
users open theirs from `connection()` and open new ones after a loss.

A broker that accepts the connection and then stops answering (or a network that drops
everything) must not hang anyone: the operations that wait for the broker go through
`answer`, which gives up after `timeout` seconds and drops the connection, so that it is
opened again; and the connection's heartbeat (unless the URL sets one) is chosen so that a
connection on which nothing at all arrives is found dead and reopened within about that
time, also when nothing is waiting for an answer (a consumer with no message coming).

The URL may be a comma-separated list naming the nodes of one cluster: the first connection
goes to the first node that answers, and after a loss the connection is opened again on the
next node of the list (round and round), so a node that died is left for one that lives. On a
cluster the queues are quorum queues (`Topology`), replicated on the nodes, so every node
serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
from aiormq.abc import AbstractConnection
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from mussikon.config import mask_url, split_urls

log = logging.getLogger("mussikon.rabbitmq")

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError,
)
"""What a lost connection or a closed channel raises: the operation can be tried again later."""

OnConnected = Callable[[AbstractConnection], Awaitable[None]]

T = TypeVar("T")


def _not_a_failed_connect(record: logging.LogRecord) -> bool:
    """aiormq logs a failed connect at ERROR before raising it, and a lost connection with a
    traceback; BrokerConnection reports both itself (an error for the first connection, a
    warning while reconnecting, a warning naming the node and the reason of a loss), so
    aiormq's lines would only repeat them."""
    message = record.getMessage()
    return not (message.startswith("error when creating transport")
                or message.startswith("Cancelling cause reader exited abnormally"))


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached (the message names the URL without its password)."""


class BrokerTimeout(TimeoutError):
    """The broker did not answer an operation in time; the connection is being reopened."""


def with_heartbeat(url: str, timeout: float) -> str:
    """The URL asking for a heartbeat with which aiormq finds a silent connection dead within
    about `timeout` seconds (it allows three missed heartbeat intervals and one more second
    each), unless the URL sets one itself."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "heartbeat" for name, _ in query):
        return url
    seconds = max(1, int(timeout // 3) - 1)
    return urlunsplit(parts._replace(query=urlencode([*query, ("heartbeat", str(seconds))])))


class BrokerConnection:
    """A connection to RabbitMQ that comes back after it is lost."""

    def __init__(self, url: str, *, reconnect_delays: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0),
                 name: str = "mussikon", connect_timeout: float = 10.0,
                 timeout: float = 30.0) -> None:
        self.url = url
        self.urls = split_urls(url) or [url]
        """The nodes tried, in order (one, unless `url` is a comma-separated list)."""
        self._node = 0
        self.reconnect_delays = tuple(reconnect_delays)
        self.name = name
        self.connect_timeout = connect_timeout
        """Seconds the broker may take to accept a connection (one that accepts the socket and
        never answers fails it then)."""
        self.timeout = timeout
        """Seconds the broker may take to answer an operation on the connection (see
        `answer`); also how soon a connection on which nothing arrives is found dead."""
        self._listeners: list[OnConnected] = []
        self._current: AbstractConnection | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self.reconnections = 0
        """How many times the connection came back after a loss (for tests and status)."""
        self._lost = ""
        """Why the connection is down, while it is (the loss, then the last failed try)."""
        logging.getLogger("aiormq.connection").addFilter(_not_a_failed_connect)

    def on_connected(self, callback: OnConnected) -> None:
        """Run `callback` on every new connection, in registration order, before it is handed
        out. An exception from it drops that connection and tries again."""
        self._listeners.append(callback)

    @property
    def node_url(self) -> str:
        """The URL of the node connected to (or last tried)."""
        return self.urls[self._node]

    async def open(self) -> None:
        """Connect to the first node that answers (BrokerUnavailable if none does), then keep
        the connection up."""
        reasons = []
        for node, url in enumerate(self.urls):
            try:
                self._current = await self._connect(url)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError) and not str(exc):
                    reason = f"no answer within {self.connect_timeout:g} s"
                reasons.append((url, reason))
                continue
            self._node = node
            break
        else:
            if len(reasons) == 1:
                raise BrokerUnavailable(
                    f"RabbitMQ is not reachable at {mask_url(self.url)}: {reasons[0][1]}")
            raise BrokerUnavailable("RabbitMQ is not reachable at any node: " + "; ".join(
                f"{mask_url(url)}: {reason}" for url, reason in reasons))
        if len(self.urls) > 1:
            log.info("connected to RabbitMQ at %s", mask_url(self.node_url))
        self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise(), name="rabbitmq-connection")

    def not_ready(self) -> str | None:
        """None while the connection is up; otherwise why not, in one line naming the node
        (its password masked)."""
        if self._closing:
            return f"RabbitMQ at {mask_url(self.url)}: the connection is closed"
        current = self._current
        if self._supervisor is None:
            return f"RabbitMQ at {mask_url(self.url)}: not connected"
        if not self._ready.is_set() or current is None or current.is_closed:
            return (f"RabbitMQ at {mask_url(self.node_url)}: connection lost "
                    f"({self._lost or 'closed'}); reconnecting")
        return None

    @property
    def is_closed(self) -> bool:
        """True once `close()` was called."""
        return self._closing

    async def connection(self) -> AbstractConnection:
        """The open connection, waiting while it is being re-established."""
        while True:
            await self._ready.wait()
            current = self._current
            if self._closing:
                raise BrokerUnavailable("the broker connection is closed")
            if current is not None and not current.is_closed:
                return current
            # Closed but the supervisor has not noticed yet: give it a turn.
            await asyncio.sleep(0.01)

    async def answer(self, operation: Awaitable[T], doing: str,
                     connection: AbstractConnection | None = None) -> T:
        """What `operation` (`doing` something on `connection`, or on the current one) comes
        to; if the broker has not answered within `timeout` seconds, BrokerTimeout, and the
        connection is dropped to be opened again (its other operations fail with it)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except TimeoutError:
            reason = f"no answer within {self.timeout:g} s ({doing})"
            self.drop(reason, connection)
            raise BrokerTimeout(f"RabbitMQ gave {reason}") from None

    def drop(self, reason: str, connection: AbstractConnection | None = None) -> None:
        """Close the current connection so that it is re-established (after a channel-level
        failure that leaves the connection in an unknown state). Given `connection`, only if
        that is still the current one."""
        current = self._current
        if connection is not None and connection is not current:
            return
        if current is not None and not current.is_closed:
            log.warning("dropping the RabbitMQ connection to recover: %s", reason)
            asyncio.create_task(current.close())  # noqa: RUF006 - the supervisor awaits closure

    async def close(self) -> None:
        """Close the connection for good."""
        self._closing = True
        self._ready.set()  # wake waiters so they see the transport is closing
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._current is not None and not self._current.is_closed:
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.wait_for(self._current.close(), self.timeout)

    async def _connect(self, url: str) -> AbstractConnection:
        async with asyncio.timeout(self.connect_timeout):
            connection = await aiormq.connect(with_heartbeat(url, self.timeout),
                                              client_properties={"connection_name": self.name})
        try:
            for listener in self._listeners:
                await listener(connection)
        except BaseException:
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.wait_for(connection.close(), self.timeout)
            raise
        return connection

    async def _supervise(self) -> None:
        while True:
            current = self._current
            assert current is not None
            # asyncio.wait rather than await: the future holds the reason for the closing (an
            # exception, or a cancellation), which is only logged here.
            await asyncio.wait({current.closing})
            if self.is_closed:
                return
            self._ready.clear()
            closing = current.closing
            reason = (closing.exception() if not closing.cancelled() else None) or "closed"
            self._lost = mask_url(str(reason))
            log.warning("RabbitMQ connection to %s lost (%s); reconnecting to %s",
                        mask_url(self.node_url), reason, mask_url(self.urls[self._next(0)]))
            self._current = await self._reconnect()
            self.reconnections += 1
            self._ready.set()
            log.info("RabbitMQ connection re-established to %s", mask_url(self.node_url))

    def _next(self, attempt: int) -> int:
        """The node of the `attempt`-th try after a loss: the next ones in the list, in turn."""
        return (self._node + 1 + attempt) % len(self.urls)

    async def _reconnect(self) -> AbstractConnection:
        attempt = 0
        while True:
            # Every node of the list is tried once per delay: the wait grows by rounds.
            rounds = attempt // len(self.urls)
            delay = self.reconnect_delays[min(rounds, len(self.reconnect_delays) - 1)]
            await asyncio.sleep(delay)
            node = self._next(attempt)
            attempt += 1
            url = mask_url(self.urls[node])
            try:
                connection = await self._connect(self.urls[node])
            except BROKER_ERRORS as exc:
                why = mask_url(str(exc)) or type(exc).__name__
                self._lost = f"reconnecting to {url} failed: {why}"
                log.warning("reconnecting to RabbitMQ at %s failed (attempt %d): %s", url,
                            attempt, exc)
            except Exception:
                # A setup callback failed for another reason (a bug, a broker refusing the
                # topology): keep trying, loudly, rather than leave the process deaf.
                log.exception("setting up the RabbitMQ connection at %s failed (attempt %d)",
                              url, attempt)
            else:
                self._node = node
                self._lost = ""
                return connection
