"""Acknowledgements in as few frames as possible.

Every frame sent is a system call, and at a few thousand messages per second one
acknowledgement per message costs as much as the rest of the consumer. Messages
finished during one turn of the event loop are acknowledged together at the end of it:
the longest run of finished deliveries from the oldest unsettled one by a single
`multiple` ack, the few finished out of order one by one. Nothing waits for a slow
message, so no acknowledgement is held back and no prefetch slot stays taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aiormq.abc import AbstractChannel

from mussikon.messaging.rabbitmq.connection import BROKER_ERRORS

log = logging.getLogger("mussikon.rabbitmq.consumer")


class Acknowledgements:
    """The deliveries of one channel not yet settled, and the acks to send for them."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._unsettled: deque[int] = deque()
        self._finished: set[int] = set()
        self._settled: set[int] = set()
        self._flush: asyncio.Task[None] | None = None

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
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._send_acks())

    async def reject(self, tag: int, *, requeue: bool) -> None:
        """Reject this delivery now."""
        self._settled.add(tag)
        with contextlib.suppress(*BROKER_ERRORS):
            await self.channel.basic_reject(tag, requeue=requeue)

    async def drain(self) -> None:
        """Send the acks still waiting (before the channel is closed)."""
        if self._flush is not None:
            await asyncio.shield(self._flush)

    async def _send_acks(self) -> None:
        await asyncio.sleep(0)  # let every handler finishing in this turn add its tag first
        self._flush = None
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
        if self.channel.is_closed:
            return  # the broker gives these messages to a consumer again by itself
        try:
            if upto is not None:
                await self.channel.basic_ack(upto, multiple=True, wait=False)
            for tag in singles:
                await self.channel.basic_ack(tag, wait=False)
        except BROKER_ERRORS as exc:
            log.debug("acknowledgements lost with the channel: %s", exc)
