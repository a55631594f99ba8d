"""Coalesced acknowledgements against a channel that behaves like the broker: a `multiple` ack
covers everything outstanding up to its tag, and a tag no longer outstanding is an error
(which closes a real channel). Writes may be held up, as a full write queue holds them."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from mussikon.adapters.messaging.rabbitmq.acknowledgements import Acknowledgements


class BrokerLikeChannel:
    """Outstanding delivery tags, settled as RabbitMQ settles them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.outstanding: list[int] = []
        self.is_closed = False
        self.errors: list[tuple[str, int]] = []
        self.frames = 0

    async def _maybe_held_up(self) -> None:
        if self.rng.random() < 0.3:
            await asyncio.sleep(0)

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        await self._maybe_held_up()
        self.frames += 1
        if tag not in self.outstanding:
            self.errors.append(("ack", tag))
        elif multiple:
            del self.outstanding[:self.outstanding.index(tag) + 1]
        else:
            self.outstanding.remove(tag)

    async def basic_reject(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        await self._maybe_held_up()
        self.frames += 1
        if tag not in self.outstanding:
            self.errors.append(("reject", tag))
        else:
            self.outstanding.remove(tag)


async def settle_all(seed: int, deliveries: int = 2000,
                     in_order: bool = False) -> BrokerLikeChannel:
    rng = random.Random(seed)
    channel = BrokerLikeChannel(rng)
    channel_any: Any = channel
    acks = Acknowledgements(channel_any)

    async def handle(tag: int) -> None:
        await asyncio.sleep(0 if in_order else rng.random() * 0.002)
        if not in_order and rng.random() < 0.05:
            acks.reject(tag, requeue=True)
        else:
            acks.ack(tag)

    handlers = []
    for tag in range(1, deliveries + 1):
        channel.outstanding.append(tag)
        acks.received(tag)
        handlers.append(asyncio.create_task(handle(tag)))
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    await asyncio.gather(*handlers)
    await acks.drain()
    return channel


@pytest.mark.parametrize("seed", range(8))
async def test_every_delivery_is_settled_once_whatever_the_order(seed: int) -> None:
    channel = await settle_all(seed)
    assert channel.errors == []
    assert channel.outstanding == []
    assert channel.frames < 2000


async def test_deliveries_finished_in_order_take_a_few_frames() -> None:
    channel = await settle_all(0, in_order=True)
    assert channel.errors == []
    assert channel.outstanding == []
    assert channel.frames < 2000 / 3


async def test_nothing_is_sent_on_a_closed_channel() -> None:
    channel = BrokerLikeChannel(random.Random(0))
    channel_any: Any = channel
    acks = Acknowledgements(channel_any)
    channel.outstanding = [1, 2]
    acks.received(1)
    acks.received(2)
    channel.is_closed = True
    acks.ack(1)
    acks.reject(2, requeue=True)
    await acks.drain()
    assert channel.frames == 0
    assert not acks.is_open
