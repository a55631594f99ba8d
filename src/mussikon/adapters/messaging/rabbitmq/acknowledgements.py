"""Acknowledgements in as few frames as possible.

Every frame sent is a system call, and under load one acknowledgement per message would
be much of the consumer's work (docs/performance-notes.md). Messages
finished during one turn of the event loop are acknowledged together at the end of it,
by one sender that keeps the frames in order:
the longest run of finished deliveries from the oldest unsettled one by a single
`multiple` ack, the few finished out of order one by one. Nothing waits for a slow
message, so no acknowledgement is held back and no prefetch slot stays taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiormq.abc import AbstractChannel

from mussikon.adapters.messaging.rabbitmq.connection import BROKER_ERRORS

log = logging.getLogger("mussikon.rabbitmq.consumer")


class Acknowledgements:
    """The deliveries of one channel not yet settled, and the acks to send for them."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._unsettled: deque[int] = deque()
        self._finished: set[int] = set()
        self._settled: set[int] = set()
        self._rejected: list[tuple[int, bool]] = []
        self._sender: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        """False once the channel closed: its deliveries will come again on another one."""
        return not self.channel.is_closed

    def received(self, tag: int) -> None:
        """A delivery arrived (tags grow on a channel, so this keeps them in order)."""
        self._unsettled.append(tag)

    def ack(self, tag: int) -> None:
        """Acknowledge this delivery at the end of the current turn of the event loop."""
        self._finished.add(tag)
        self._schedule()

    def reject(self, tag: int, *, requeue: bool) -> None:
        """Reject this delivery (sent before any ack that could cover it)."""
        self._rejected.append((tag, requeue))
        self._schedule()

    async def drain(self) -> None:
        """Send the acks and rejects still waiting (before the channel is closed)."""
        if self._sender is not None:
            await asyncio.shield(self._sender)

    def _schedule(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        # One sender at a time, frames in the order decided: the connection's write queue is
        # bounded, so two senders could overtake each other, and an ack overtaken by a
        # `multiple` ack covering it names a tag the broker no longer knows (which closes the
        # channel).
        try:
            while True:
                await asyncio.sleep(0)  # let everything finishing in this turn join in
                rejected, upto, singles = self._take()
                if not rejected and upto is None and not singles:
                    return
                if self.channel.is_closed:
                    continue  # the broker gives these messages to a consumer again by itself
                try:
                    for tag, requeue in rejected:
                        await self.channel.basic_reject(tag, requeue=requeue, wait=False)
                    if upto is not None:
                        await self.channel.basic_ack(upto, multiple=True, wait=False)
                    for tag in singles:
                        await self.channel.basic_ack(tag, wait=False)
                except BROKER_ERRORS as exc:
                    log.debug("acknowledgements lost with the channel: %s", exc)
        finally:
            self._sender = None

    def _take(self) -> tuple[list[tuple[int, bool]], int | None, list[int]]:
        """What to send now: the rejects, the longest finished run from the oldest unsettled
        delivery (one `multiple` ack), and the deliveries finished out of order."""
        rejected, self._rejected = self._rejected, []
        self._settled.update(tag for tag, _ in rejected)
        upto = None
        while self._unsettled and (self._unsettled[0] in self._finished
                                   or self._unsettled[0] in self._settled):
            tag = self._unsettled.popleft()
            if tag in self._finished:
                self._finished.discard(tag)
                upto = tag
            else:
                self._settled.discard(tag)
        singles = sorted(self._finished)
        self._settled.update(singles)
        self._finished.clear()
        return rejected, upto, singles
