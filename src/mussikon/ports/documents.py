"""The document store port: read models, checkpoints and inboxes, kept in the event store's
database so that a projection's update, its checkpoint and its inbox entry commit together."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

Document = dict[str, Any]


@dataclass(slots=True)
class Changes:
    """Writes to apply together: documents to put and to delete."""

    puts: dict[tuple[str, str], Document] = field(default_factory=dict)
    deletes: set[tuple[str, str]] = field(default_factory=set)

    def put(self, collection: str, key: str, doc: Document) -> None:
        """Create or replace one document."""
        self.deletes.discard((collection, key))
        self.puts[(collection, key)] = doc

    def delete(self, collection: str, key: str) -> None:
        """Remove one document (no error if absent)."""
        self.puts.pop((collection, key), None)
        self.deletes.add((collection, key))

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)


@dataclass(frozen=True, slots=True)
class Fence:
    """What a lease holder shows to write: the lease, its owner, and the generation at which
    that owner took it (`DocumentStore.try_lease`)."""

    lease: str
    owner: str
    generation: int


class DocumentStore(abc.ABC):
    """JSON documents by (collection, key), with checkpoints and inboxes in one transaction."""

    @abc.abstractmethod
    async def get(self, collection: str, key: str) -> Document | None:
        """One document, or None."""

    @abc.abstractmethod
    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        """Every document of a collection whose key starts with `prefix`, ordered by key: read
        as one range of the index on (collection, key), but without a limit, so only for
        what is bounded by design (one saga's history, one genre and place); `scan_page`
        reads a page."""

    @abc.abstractmethod
    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        """Apply `changes` atomically, with a checkpoint move and an inbox entry.

        Returns False and applies nothing when the inbox entry (consumer, message id)
        exists already, or when the checkpoint (name, position) would not move forward:
        a message or an event is applied at most once.

        With `expected` the checkpoint move is a compare-and-set: the commit is applied
        only if the checkpoint stands exactly at `expected` (0 if never set), the position
        the batch was applied from, and `position` is after it; otherwise False, nothing
        applied. A reader whose changes build on the documents as they stood at its
        checkpoint (a projection) passes it: a checkpoint another runner moved on (having
        applied some of the same events) or a rebuild set back means the batch was applied
        to the wrong state, and must not land. ValueError if given without a checkpoint.

        With `fence` the commit is applied only if the lease is still the fence's owner's at
        the fence's generation, checked in the same transaction: no other owner took it
        since (whether or not its term ran out meanwhile); otherwise False, nothing applied.
        A holder that stalled past its term (a pause, a long wait) and lost the lease to
        another writes nothing over the new holder's work, however late it resumes.
        """

    @abc.abstractmethod
    async def checkpoint(self, name: str) -> int:
        """The position a checkpoint has reached (0 if never set)."""

    @abc.abstractmethod
    async def checkpoints(self) -> dict[str, int]:
        """Every checkpoint by name."""

    @abc.abstractmethod
    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        """Set a checkpoint back to 0 and drop its collections, atomically (for rebuilds)."""

    @abc.abstractmethod
    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        """Take or renew the lease `name` for `owner` for `seconds`; return its generation, or
        None if another owner holds an unexpired lease. One active relay among several
        processes uses this.

        The generation is positive, and new each time an owner takes the lease that it did
        not hold (a greater number than any given before, by this store): the holder's
        renewals keep it, even after the term ran out if nobody took the lease meanwhile.
        With its name and owner it is the fencing token of `commit(fence=...)`."""

    @abc.abstractmethod
    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if `owner` holds it."""

    @abc.abstractmethod
    async def has_seen(self, consumer: str, message_id: str) -> bool:
        """True if the consumer's inbox holds this message id."""

    @abc.abstractmethod
    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        """Remove up to `limit` inbox entries (of every consumer) written more than
        `older_than` ago, oldest first, by the store's own clock (the one that stamps an entry
        when it is written); return how many were removed. Fewer than `limit` means none that
        old is left. A message id removed is new again to its consumer: an entry may go only
        once its message can no longer be delivered again (`application/retention.py`)."""

    @abc.abstractmethod
    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        """At most `limit` documents of a collection whose key starts with `prefix`, comes
        after `after` (`""`: from the first) and before `before` (None: up to the last),
        ordered by key (by code point): a page of `scan`, the next page after the last key
        of this one. One range of the index on (collection, key): the documents outside
        the range are never read."""
