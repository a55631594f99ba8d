"""Dead letters kept in the document store, indexed: every read an operator makes is a
bounded read of one index, whatever the number of letters. Both transports keep theirs here.

A letter is a document of `dead-letters.by-failure` under a key that sorts in the order the
letters were given up on: the time of the failure in a fixed-width UTC form, then the id
(`2026-01-01T00:00:01.000000Z 3f2a…`); a page is one range read after the key of the last
letter of the page before. A small entry of `dead-letters.by-id` (id → key) finds one letter
in two gets, and the letters whose ids start with a few characters in one range read.

Keeping a letter is idempotent by its id: a letter kept again (the same one, or given up on
again after a replay) replaces the one kept before, at its new place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from mussikon.ports.documents import Changes, Document, DocumentStore
from mussikon.ports.transport import DeadLetter

LETTERS = "dead-letters.by-failure"
IDS = "dead-letters.by-id"
LEGACY = "dead-letters"
"""Where the in-process transport kept its dead letters before, keyed by id only."""

PAGE = 500
"""Letters read or removed at once by what goes through all of them (replay all, purge)."""


def sort_key(failed_at: datetime, letter_id: str) -> str:
    """Where a letter sorts: its failure time (UTC, microseconds, fixed width), then its id."""
    when = failed_at.astimezone(UTC) if failed_at.tzinfo else failed_at.replace(tzinfo=UTC)
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {letter_id}"


def letter_document(letter: DeadLetter, **extra: Any) -> Document:
    """A letter as it is kept, with what a transport needs besides (to replay it)."""
    return {"id": letter.id, "subscription": letter.subscription,
            "message_id": letter.message_id, "event_type": letter.event_type,
            "position": letter.position, "attempts": letter.attempts,
            "exception": letter.exception, "reason": letter.reason, "body": letter.body,
            "failed_at": letter.failed_at.isoformat(), **extra}


def letter_of(doc: Document) -> DeadLetter:
    return DeadLetter(id=doc["id"], subscription=doc["subscription"],
                      message_id=doc["message_id"], event_type=doc["event_type"],
                      position=doc["position"], attempts=doc["attempts"],
                      exception=doc["exception"], reason=doc["reason"], body=doc["body"],
                      failed_at=datetime.fromisoformat(doc["failed_at"]))


class DeadLetterIndex:
    """The dead letters of one document store."""

    def __init__(self, documents: DocumentStore) -> None:
        self.documents = documents

    async def keep(self, docs: Sequence[Document]) -> None:
        """Keep these letters (`letter_document`s) in one commit, each replacing the letter
        kept before under its id. One get per letter, to find the one it replaces."""
        changes = Changes()
        placed: dict[str, str] = {}
        for doc in docs:
            letter_id = doc["id"]
            old = placed.get(letter_id)
            if old is None:
                entry = await self.documents.get(IDS, letter_id)
                old = entry["key"] if entry is not None else None
            key = sort_key(datetime.fromisoformat(doc["failed_at"]), letter_id)
            if old is not None and old != key:
                changes.delete(LETTERS, old)
            changes.put(LETTERS, key, doc)
            changes.put(IDS, letter_id, {"key": key})
            placed[letter_id] = key
        if changes:
            await self.documents.commit(changes)

    async def get(self, letter_id: str) -> tuple[str, Document] | None:
        """The letter with this id and its key (two gets), or None."""
        entry = await self.documents.get(IDS, letter_id)
        if entry is None:
            return None
        doc = await self.documents.get(LETTERS, entry["key"])
        return None if doc is None else (entry["key"], doc)

    async def ids(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids starting with `prefix`, in id order: one range read."""
        return [key for key, _ in await self.documents.scan_page(IDS, prefix=prefix,
                                                                 limit=limit)]

    async def page(self, limit: int | None, after: str | None) -> list[Document]:
        """Up to `limit` letters (all if None) in the order they were given up on, after the
        letter `after` (KeyError if there is none) or from the first: a get and one range
        read of `limit` documents."""
        start = ""
        if after is not None:
            entry = await self.documents.get(IDS, after)
            if entry is None:
                raise KeyError(f"no dead letter {after!r}")
            start = entry["key"]
        if limit is not None:
            return [doc for _, doc in await self.documents.scan_page(LETTERS, after=start,
                                                                     limit=limit)]
        letters: list[Document] = []
        async for page in self.pages(start):
            letters += (doc for _, doc in page)
        return letters

    async def pages(self, after: str = "") -> AsyncIterator[list[tuple[str, Document]]]:
        """Every letter after the key `after`, a page of `PAGE` at a time, each page read
        when the one before was used (a letter moved meanwhile may be met again)."""
        while page := await self.documents.scan_page(LETTERS, after=after, limit=PAGE):
            yield page
            after = page[-1][0]

    async def remove(self, key: str, letter_id: str) -> None:
        """Drop the letter kept at `key`, and its id's entry if that still names this key
        (a letter kept again meanwhile under the same id stays)."""
        changes = Changes()
        changes.delete(LETTERS, key)
        entry = await self.documents.get(IDS, letter_id)
        if entry is not None and entry["key"] == key:
            changes.delete(IDS, letter_id)
        await self.documents.commit(changes)

    async def purge(self) -> int:
        """Drop every letter, a page per commit; return how many."""
        count = 0
        while page := await self.documents.scan_page(LETTERS, limit=PAGE):
            changes = Changes()
            for key, doc in page:
                changes.delete(LETTERS, key)
                changes.delete(IDS, doc["id"])
            await self.documents.commit(changes)
            count += len(page)
        return count

    async def adopt_legacy(self) -> int:
        """Move the letters kept the old way (`LEGACY`, by id only) into the index, a page
        per commit; return how many. One empty range read when there are none."""
        moved = 0
        while page := await self.documents.scan_page(LEGACY, limit=PAGE):
            await self.keep([{**doc, "id": key} for key, doc in page])
            changes = Changes()
            for key, _ in page:
                changes.delete(LEGACY, key)
            await self.documents.commit(changes)
            moved += len(page)
        return moved
