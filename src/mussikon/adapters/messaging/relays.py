"""What the transports' relays share: knowing whether every part of the feed was relayed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mussikon.ports.feed import Checkpoint, Feed


class Relay(Protocol):
    """A relay of one part of the feed."""

    feed: Feed

    async def checkpoint(self) -> Checkpoint: ...


async def relays_caught_up(relays: Sequence[Relay], feed: Feed, name: str) -> bool:
    """True if every event readable now was relayed: by `relays` (those of this process, one
    per part of `feed`), or, with none here, as the relays named `name` saved it."""
    if relays:
        marks = [(relay.feed, await relay.checkpoint()) for relay in relays]
    else:
        marks = [(part, await part.saved(part.name(name))) for part in await feed.parts()]
    for part, checkpoint in marks:
        if not await part.caught_up(checkpoint):
            return False
    return True
