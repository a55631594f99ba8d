"""The feed port: every stream's events, for the readers that follow them all (the
projections, the in-process transport's subscriptions, the outbox relays), with an opaque
checkpoint kept in the document store.

A reader asks where it stands (`saved`), reads a page after that checkpoint (`read`),
does its work, and saves the page's checkpoint with its document changes in one commit
(`save`). It never looks inside a checkpoint: on a store with a global order (memory,
SQLite, PostgreSQL) a checkpoint is a position; on Cosmos DB it is the change feed's
continuation. What every feed guarantees is the order of each stream's events (by
version) and that a reader resuming from a saved checkpoint misses no event after it;
an order across streams is the global order's alone.

Adapters: `followers.feed.GlobalOrderFeed` over any event store with a global order; each
passes the contract suite tests/contract/test_feed.py.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from mussikon.ports.documents import Changes, Fence
from mussikon.ports.event_store import RecordedEvent, UndecodableEventError

Checkpoint = str
"""Where a reader of the feed stands, as the feed wrote it: opaque to the reader, compared
by equality only."""

START: Checkpoint = ""
"""The checkpoint before every event (a reader that never saved one stands there)."""

NOW_PAGE = 1000
"""Events read at a time by `Feed.now` while reading a feed through."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    """Events read from the feed, and the checkpoint after them (the one read from, if
    there were none): the next read starts there."""

    events: Sequence[RecordedEvent]
    checkpoint: Checkpoint
    undecodable: Sequence[UndecodableEventError] = ()
    """Stored events of the page no code can read, on a feed with no checkpoint inside a page
    (Cosmos DB): the reader records them as skipped (`followers.undecodable`) and moves on
    with the page."""


class Feed(abc.ABC):
    """Every stream's events after a checkpoint, and the readers' checkpoints."""

    global_order: bool = True
    """True where a checkpoint stands at a global position (`position`), so that progress can
    be told in events and an event waited for by its position; False on Cosmos DB, where a
    reader can only tell whether it is caught up (`caught_up`)."""

    async def parts(self) -> Sequence[Feed]:
        """The parts of this feed that readers read each on its own, under names of their own
        (`name`), so that several processes share the work, a lease per part: this feed
        alone on a store with a global order; on Cosmos DB one per feed range. Every event is
        in exactly one part, and each stream in one."""
        return [self]

    def name(self, reader: str) -> str:
        """The name of the checkpoint (and lease) of `reader` in this part."""
        return reader

    @abc.abstractmethod
    async def read(self, after: Checkpoint, limit: int) -> FeedPage:
        """Up to `limit` events after checkpoint `after`: each stream's in version order, none
        left out between `after` and the page's checkpoint, whatever commits meanwhile.

        A stored event no code can read ends the page before it; if it is first, this raises
        `UndecodableEventError` whose `checkpoint` is the one just after it (where a reader
        that skips it reads on). A feed with no checkpoint inside a page lists such events in
        the page's `undecodable` instead."""

    @abc.abstractmethod
    def checkpoint_after(self, record: RecordedEvent) -> Checkpoint | None:
        """The checkpoint just after `record`, from which a reader that went through it and
        every event read before it in its page may resume; None where the feed has none
        inside a page (then only the page's checkpoint is one). `record` must come from a
        page of this feed."""

    @abc.abstractmethod
    def position(self, checkpoint: Checkpoint) -> int:
        """The global position a checkpoint stands at, for what reports progress or waits
        for an event by its position (`RecordedEvent.position`); 0 where the store has no
        global order (Cosmos DB), so such a wait does not wait."""

    @abc.abstractmethod
    async def saved(self, reader: str) -> Checkpoint:
        """The checkpoint saved under the name `reader` (`START` if none)."""

    @abc.abstractmethod
    async def save(self, reader: str, checkpoint: Checkpoint, changes: Changes | None = None,
                   *, expected: Checkpoint | None = None, fence: Fence | None = None) -> bool:
        """Save the checkpoint `reader` with `changes`, atomically (`DocumentStore.commit`);
        True if applied, False (nothing applied) otherwise.

        With `expected`, a compare-and-set: applied only if the saved checkpoint is exactly
        `expected`. Without it, a checkpoint the feed can tell is at or after `checkpoint`
        stays (False): where the feed cannot compare its checkpoints, the reader's lease
        (`fence`) is what keeps a stale writer from moving it back. With `fence`, applied
        only while the lease is the fence's owner's at its generation."""

    @abc.abstractmethod
    async def reset(self, reader: str, collections: list[str]) -> None:
        """Set the checkpoint `reader` back to `START` and drop `collections`, atomically."""

    @abc.abstractmethod
    async def caught_up(self, checkpoint: Checkpoint) -> bool:
        """True if a read after `checkpoint` would find no event now: a reader standing there
        has every event readable so far. (On Cosmos DB: the change feed answers nothing new
        for any of its ranges.)"""

    async def now(self) -> Checkpoint:
        """A checkpoint after every event readable now, from which a reader reads only what
        comes later. By default the end of reading the feed through, a page at a time (on
        Cosmos DB a request per page of a range: ask it of each part)."""
        checkpoint = START
        while (page := await self.read(checkpoint, NOW_PAGE)).checkpoint != checkpoint:
            checkpoint = page.checkpoint
        return checkpoint

    @abc.abstractmethod
    async def head(self) -> Checkpoint:
        """A checkpoint at or after every event committed so far: two equal heads mean that
        nothing was committed in between."""

    @abc.abstractmethod
    async def readable(self, head: Checkpoint) -> bool:
        """True once every event before `head` (a `head()`) can be read. A store whose commits
        become readable out of order (PostgreSQL, while an older transaction still runs)
        answers False meanwhile; elsewhere True."""
