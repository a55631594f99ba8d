"""What the transports' relays share: the lease, the checkpoint and its fenced saves
(`LeasedRelay`), and knowing whether every part of the feed was relayed."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from mussikon.followers.feed import GlobalOrderFeed
from mussikon.followers.leases import Lease
from mussikon.followers.polling import PollLoop
from mussikon.followers.undecodable import skip_undecodable
from mussikon.ports.documents import DocumentStore, Fence
from mussikon.ports.event_store import EventStore, StoreError, UndecodableEventError
from mussikon.ports.feed import Checkpoint, Feed

log = logging.getLogger("mussikon.relay")


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


class LeasedRelay(abc.ABC):
    """What both outbox relays (RabbitMQ, Service Bus) do around their publishing.

    One relay among all the processes sharing a store is active: the holder of a lease in
    the document store (`followers.leases`), renewed while it works; the others stand by
    and look at the lease a few times per term. The active one publishes what follows its
    checkpoint (`publish_pending`, the broker's own part) and moves the checkpoint past what
    the broker has taken. The checkpoint is saved at most every `checkpoint_interval`, not
    per batch (under a trickle of events every batch is one event, and a write per event
    would double the store's commits); a crash publishes again what was taken since, and
    consumers recognise the repeats. The save is forward-only where the feed can tell, and
    fenced by the lease's generation: a relay whose lease was taken over moves it no more.
    """

    def __init__(self, store: EventStore, documents: DocumentStore, *, name: str,
                 lease_seconds: float, poll_interval: float, poll_max_interval: float,
                 checkpoint_interval: float, owner: str | None, feed: Feed | None,
                 expected_errors: tuple[type[BaseException], ...]) -> None:
        self.store, self.documents, self.name = store, documents, name
        self.feed = feed if feed is not None else GlobalOrderFeed(store, documents)
        self.checkpoint_interval = checkpoint_interval
        self.published = 0
        """Messages this relay had taken by the broker (repeats included)."""
        self._lease = Lease(documents, name, seconds=lease_seconds, owner=owner)
        self._poll = PollLoop(f"relay {name}", interval=poll_interval,
                              max_interval=poll_max_interval, expected_errors=expected_errors)
        self._task: asyncio.Task[None] | None = None
        self._relayed: Checkpoint | None = None
        """Up to where the broker took everything (confirmed it, on RabbitMQ), since this
        relay took the lease."""
        self._saved: Checkpoint | None = None
        self._saved_at = -checkpoint_interval

    @abc.abstractmethod
    async def publish_pending(self) -> int:
        """Publish every event after the checkpoint while this relay holds the lease, moving
        `_relayed`; how many events it went through (0: nothing new)."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Close the link to the broker (at the stop)."""

    @abc.abstractmethod
    async def _publish(self) -> int:
        """`publish_pending` in a step of the poll loop, with what the broker's relay does
        about its own failures (a link to drop, a reason to show)."""

    @property
    def is_active(self) -> bool:
        """True while this relay holds the lease (the others are standing by)."""
        return self._lease.held

    async def checkpoint(self) -> Checkpoint:
        """The feed's checkpoint before which the broker took every event: as this relay
        knows it while it holds the lease, else as saved in the store (by any)."""
        if self._relayed is not None:
            return self._relayed
        return await self.feed.saved(self.name)

    async def position(self) -> int:
        """`checkpoint()` as a global position (0 on a store without a global order)."""
        return self.feed.position(await self.checkpoint())

    def start(self) -> None:
        """Run in the background until `stop()`."""
        if self._task is None:
            self._task = asyncio.create_task(self._poll.run(self._step),
                                             name=f"relay:{self.name}")

    def wake(self) -> None:
        """Look for new events now rather than at the next poll."""
        self._poll.wake()

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in progress (or give it up after `timeout`), save the
        checkpoint, release the lease, close the link."""
        self._poll.stop()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(self._save_checkpoint(), timeout)
        await self._lease.release()
        await self._close()

    async def _step(self) -> bool:
        """Publish what is pending if this relay holds the lease; True if it published."""
        if not await self._hold():
            self._poll.look_again_within(self._lease.seconds / 3)
            return False
        if await self._publish():
            return True
        due = self._checkpoint_due()
        if due is not None and due <= 0:
            with contextlib.suppress(StoreError):
                await self._save_checkpoint()
        elif due is not None:
            self._poll.look_again_within(due)
        return False

    async def _hold(self, *, recheck: bool = False) -> bool:
        """Keep the lease. If it was lost (even if taken back since, at a new generation),
        forget what was relayed and not saved: that was the next holder's to publish again,
        and the checkpoint is the holders' since to move."""
        before = self._lease.fence
        held = await self._lease.hold(recheck=recheck)
        if not held or self._lease.fence != before:
            self._relayed = self._saved = None
        return held

    async def _may_publish(self, term: Fence) -> bool:
        """True if a batch may be sent now: not stopping, and the lease still held at the
        generation `term` with a third of its term surely left (a holder that renewed lately
        has two thirds)."""
        return (not self._poll.stopping and await self._hold() and self._lease.fence == term
                and self._lease.remaining() > self._lease.seconds / 3)

    def _checkpoint_due(self) -> float | None:
        """Seconds until the relayed checkpoint should be saved (None: nothing to save)."""
        if self._relayed is None or self._relayed == self._saved:
            return None
        return self._saved_at + self.checkpoint_interval - time.monotonic()

    async def _relayed_up_to(self, checkpoint: Checkpoint) -> None:
        """The broker took everything before `checkpoint`: move there, and save it if due."""
        self._relayed = checkpoint
        due = self._checkpoint_due()
        if due is not None and due <= 0:
            await self._save_checkpoint()

    async def _save_checkpoint(self) -> None:
        checkpoint, fence = self._relayed, self._lease.fence
        if checkpoint is None or checkpoint == self._saved or fence is None:
            return
        if await self.feed.save(self.name, checkpoint, fence=fence):
            self._saved, self._saved_at = checkpoint, time.monotonic()
        elif await self._hold(recheck=True) and self._lease.fence == fence:
            # Held all along, and the checkpoint is past this one already: nothing to save.
            self._saved = checkpoint
        else:
            log.warning("relay %s lost its lease before saving position %d", self.name,
                        self.feed.position(checkpoint))

    async def _skip_undecodable(self, error: UndecodableEventError, term: Fence) -> bool:
        """Pass a row nobody can publish (no body), with nothing in flight: one bad row must
        not stop every event after it. Forward-only, as `_save_checkpoint`: moving past it
        loses nothing. False if the lease was lost (the row is left to the new holder)."""
        if not await skip_undecodable(self.documents, self.name, error, feed=self.feed,
                                      fence=term) and (
                not await self._hold(recheck=True) or self._lease.fence != term):
            return False  # refused by the fence, not because the checkpoint is past the row
        self._relayed = self._saved = error.checkpoint
        return True
