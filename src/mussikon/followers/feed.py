"""The feed of a store with a global order (memory, SQLite, PostgreSQL): a checkpoint is a
global position written in decimal (`START`, "", is position 0), kept as the integer
checkpoint of the document store, so readers' checkpoints are the same rows as ever."""

from __future__ import annotations

from mussikon.ports.documents import Changes, DocumentStore, Fence
from mussikon.ports.event_store import EventStore, RecordedEvent, UndecodableEventError
from mussikon.ports.feed import START, Checkpoint, Feed, FeedPage


def position_of(checkpoint: Checkpoint) -> int:
    """The global position a checkpoint of this feed stands at."""
    return int(checkpoint) if checkpoint else 0


def checkpoint_at(position: int) -> Checkpoint:
    """The checkpoint of this feed that stands at a global position."""
    return str(position) if position else START


class GlobalOrderFeed(Feed):
    """`EventStore.read_all` by position, with checkpoints in the document store."""

    def __init__(self, store: EventStore, documents: DocumentStore) -> None:
        self.store, self.documents = store, documents

    async def read(self, after: Checkpoint, limit: int) -> FeedPage:
        try:
            records = await self.store.read_all(position_of(after) + 1, limit)
        except UndecodableEventError as error:
            error.checkpoint = checkpoint_at(error.position)
            raise
        return FeedPage(records, str(records[-1].position) if records else after)

    def checkpoint_after(self, record: RecordedEvent) -> Checkpoint:
        return str(record.position)

    def position(self, checkpoint: Checkpoint) -> int:
        return position_of(checkpoint)

    async def saved(self, reader: str) -> Checkpoint:
        return checkpoint_at(await self.documents.checkpoint(reader))

    async def save(self, reader: str, checkpoint: Checkpoint, changes: Changes | None = None,
                   *, expected: Checkpoint | None = None, fence: Fence | None = None) -> bool:
        return await self.documents.commit(
            Changes() if changes is None else changes,
            checkpoint=(reader, position_of(checkpoint)),
            expected=None if expected is None else position_of(expected), fence=fence)

    async def reset(self, reader: str, collections: list[str]) -> None:
        await self.documents.reset_checkpoint(reader, collections)

    async def caught_up(self, checkpoint: Checkpoint) -> bool:
        return position_of(checkpoint) >= await self.store.head_position()

    async def now(self) -> Checkpoint:
        return checkpoint_at(await self.store.head_position())

    async def head(self) -> Checkpoint:
        return checkpoint_at(await self.store.committed_position())

    async def readable(self, head: Checkpoint) -> bool:
        return await self.store.head_position() >= position_of(head)
