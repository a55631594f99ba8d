"""Confirmed publishing of many messages in one write.

aiormq's `basic_publish` sends each message on its own (a lock, a timeout scope, a queued
frame and a system call per message) and waits for its confirm in the caller's task, so
publishing a batch means a task per message. Here a whole batch becomes one frame buffer,
written at once, with one confirmation future per message registered exactly as
`basic_publish` registers it: the channel's reader resolves it on the broker's ack,
fails it on a nack or, for a mandatory message, on its return, and rejects it if the
channel closes (figures: docs/performance-notes.md).

It relies on the channel's bookkeeping attributes (`delivery_tag`, `confirmations`,
`message_id_delivery_tag`, `write_queue`, `max_content_size`, `lock`), present in aiormq
7; where they are missing, messages are published one by one with `basic_publish`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

_BOOKKEEPING = ("delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue",
                "max_content_size", "lock", "number")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish."""

    body: bytes
    exchange: str
    routing_key: str
    properties: Basic.Properties
    mandatory: bool = True


async def publish_batch(channel: AbstractChannel,
                        messages: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
    """Send `messages` on a channel in publisher-confirm mode; return one future per message,
    resolved when the broker confirms it (failed if it is nacked, returned or the channel
    closes). The messages are on their way when this returns."""
    if not all(hasattr(channel, name) for name in _BOOKKEEPING):
        return [asyncio.ensure_future(channel.basic_publish(
            m.body, exchange=m.exchange, routing_key=m.routing_key, properties=m.properties,
            mandatory=m.mandatory)) for m in messages]
    bookkeeping: Any = channel
    futures: list[asyncio.Future[Any]] = []
    frames: list[Any] = []
    async with bookkeeping.lock:
        for message in messages:
            bookkeeping.delivery_tag += 1
            tag = bookkeeping.delivery_tag
            confirmation: asyncio.Future[Any] = channel.create_future()
            bookkeeping.confirmations[tag] = confirmation
            message_id = message.properties.message_id
            if message_id:
                # A returned message is matched to its confirmation by its id.
                bookkeeping.message_id_delivery_tag[message_id] = tag
                confirmation.add_done_callback(_forget(bookkeeping, message_id, tag))
            frames.append(Basic.Publish(exchange=message.exchange,
                                        routing_key=message.routing_key,
                                        mandatory=message.mandatory))
            frames.append(ContentHeader(properties=message.properties,
                                        body_size=len(message.body)))
            frames.extend(_body_frames(message.body, bookkeeping.max_content_size))
            futures.append(confirmation)
        await bookkeeping.write_queue.put(ChannelFrame.marshall(bookkeeping.number, frames))
    return futures


def _body_frames(body: bytes, size: int) -> list[ContentBody]:
    return [ContentBody(body[i:i + size]) for i in range(0, len(body), size)]


def _forget(channel: Any, message_id: str, tag: int) -> Any:
    def forget(_: asyncio.Future[Any]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]
    return forget
