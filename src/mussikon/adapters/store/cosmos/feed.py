"""The feed of the Cosmos DB event store: the events container's change feed, pull model.

Cosmos DB keeps no order across partitions (streams); its change feed gives each feed range's
changes in the order they were made within each logical partition. A checkpoint is the
SDK's continuation token of one read (`query_items_change_feed`, latest-version mode), kept
as a document (`feed-checkpoints`, keyed by the reader's name) committed with the reader's
changes. `START` reads the range from its beginning.

`parts()` splits the feed by feed range (`read_feed_ranges`), so that several processes
share the ranges, a lease per (reader, range). The ranges are read once and pinned in the
document store (`feed-ranges`): when the service later splits a range, its continuation
token goes on covering both halves (the SDK follows the split inside the token), so a
reader's checkpoints stay valid and nothing is read twice or missed.

Items written in one transactional batch share their modification time and may come in
any order: each page is sorted by (stream, version) before it is handed on. So each
stream's events come in version order; across streams there is no order. A page has a
checkpoint only at its end (`checkpoint_after` is None), and what no code can read is listed
in the page's `undecodable`. There is no global position: `position` is 0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from mussikon.adapters.store.cosmos.events import CosmosEventStore, cosmos_errors
from mussikon.ports.documents import Changes, DocumentStore, Fence
from mussikon.ports.event_store import RecordedEvent, UndecodableEventError
from mussikon.ports.feed import START, Checkpoint, Feed, FeedPage

FEED_CHECKPOINTS = "feed-checkpoints"
"""Readers' checkpoints (continuation tokens), keyed by name: {"token": …}."""

FEED_RANGES = "feed-ranges"
"""The feed ranges pinned at first use, keyed by the events container's id:
{"ranges": [each range as JSON]}."""


def range_name(feed_range: dict[str, Any]) -> str:
    """A short name of a feed range (the SDK's dict is opaque): part of the readers' names."""
    text = json.dumps(feed_range, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class CosmosFeed(Feed):
    """The change feed of the whole events container, or (`feed_range`) of one range."""

    global_order = False

    def __init__(self, store: CosmosEventStore, documents: DocumentStore, *,
                 feed_range: dict[str, Any] | None = None) -> None:
        self.store, self.documents = store, documents
        self.feed_range = feed_range
        self.part = "" if feed_range is None else range_name(feed_range)
        self._container = store.account.events
        self._meter = store.account.meter

    def __repr__(self) -> str:
        return f"CosmosFeed({self.part or 'every range'})"

    async def parts(self) -> Sequence[Feed]:
        if self.feed_range is not None:
            return [self]
        return [CosmosFeed(self.store, self.documents, feed_range=r)
                for r in await self.pinned_ranges()]

    async def pinned_ranges(self) -> list[dict[str, Any]]:
        """The feed ranges as first read (and pinned then)."""
        key = str(self._container.id)
        pinned = await self.documents.get(FEED_RANGES, key)
        if pinned is None:
            async with cosmos_errors("read_feed_ranges"):
                ranges = [r async for r in self._container.read_feed_ranges()]
            changes = Changes()
            changes.put(FEED_RANGES, key, {"ranges": [json.dumps(r, sort_keys=True)
                                                      for r in ranges]})
            await self.documents.commit(changes)
            pinned = await self.documents.get(FEED_RANGES, key)
            assert pinned is not None
        return [json.loads(r) for r in pinned["ranges"]]

    def name(self, reader: str) -> str:
        return f"{reader}@{self.part}" if self.part else reader

    async def _items(self, after: Checkpoint, limit: int) -> tuple[list[dict[str, Any]],
                                                                   Checkpoint]:
        """One page of the change feed after `after`: its items and the token after them
        (`after` itself when there is nothing new)."""
        hook = self._meter.hook("change_feed")
        async with cosmos_errors("reading the change feed"):
            if after:
                pages = self._container.query_items_change_feed(
                    continuation=after, max_item_count=limit, raw_response_hook=hook).by_page()
            elif self.feed_range is not None:
                pages = self._container.query_items_change_feed(
                    feed_range=self.feed_range, start_time="Beginning", max_item_count=limit,
                    raw_response_hook=hook).by_page()
            else:
                pages = self._container.query_items_change_feed(
                    start_time="Beginning", max_item_count=limit,
                    raw_response_hook=hook).by_page()
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return [], after
            items = [item async for item in page]
        token = getattr(pages, "continuation_token", None)  # the SDK's AsyncPageIterator
        return items, str(token) if items and token else after

    async def read(self, after: Checkpoint, limit: int) -> FeedPage:
        items, checkpoint = await self._items(after, limit)
        items.sort(key=lambda i: (str(i.get("partitionKey", "")), int(i.get("version") or 0)))
        events: list[RecordedEvent] = []
        undecodable: list[UndecodableEventError] = []
        for item in items:
            try:
                events.append(self.store.decode(item))
            except UndecodableEventError as error:
                error.checkpoint = checkpoint
                undecodable.append(error)
        return FeedPage(events, checkpoint, undecodable)

    def checkpoint_after(self, record: RecordedEvent) -> Checkpoint | None:
        return None

    def position(self, checkpoint: Checkpoint) -> int:
        return 0

    async def saved(self, reader: str) -> Checkpoint:
        doc = await self.documents.get(FEED_CHECKPOINTS, reader)
        return START if doc is None else str(doc["token"])

    async def save(self, reader: str, checkpoint: Checkpoint, changes: Changes | None = None,
                   *, expected: Checkpoint | None = None, fence: Fence | None = None) -> bool:
        # Tokens cannot be compared: no "forward only". `expected` is checked by a read, and
        # holds against other writers only under their lease (`fence`): every reader that
        # compares (the projections, the relays) holds one per range.
        if expected is not None and await self.saved(reader) != expected:
            return False
        out = Changes() if changes is None else Changes(dict(changes.puts), set(changes.deletes))
        out.put(FEED_CHECKPOINTS, reader, {"token": checkpoint})
        return await self.documents.commit(out, fence=fence)

    async def reset(self, reader: str, collections: list[str]) -> None:
        # The checkpoint first, as the document store's reset of more than one batch does.
        changes = Changes()
        changes.delete(FEED_CHECKPOINTS, reader)
        await self.documents.commit(changes)
        await self.documents.reset_checkpoint(reader, collections)

    async def caught_up(self, checkpoint: Checkpoint) -> bool:
        items, _ = await self._items(checkpoint, 1)
        return not items

    async def head(self) -> Checkpoint:
        """The number of events stored: the container only grows, so two equal counts mean
        nothing was written in between."""
        async with cosmos_errors("counting events"):
            counts: list[Any] = [n async for n in self._container.query_items(
                "SELECT VALUE COUNT(1) FROM c", raw_response_hook=self._meter.hook("head"))]
        return str(sum(int(n) for n in counts))

    async def readable(self, head: Checkpoint) -> bool:
        """Always: a write Cosmos DB acknowledged is in the change feed."""
        return True
