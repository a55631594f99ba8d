"""The document store on Cosmos DB, in a container of its own (`MUSSIKON_COSMOS_DOCUMENTS_
CONTAINER`), not the events container: that one's unique key on /version would let one item
per partition lack a version.

Every item is in one logical partition (`partitionKey` = "documents"), so that a commit (the
read models' changes, a checkpoint move, an inbox entry, a fence check) is one transactional
batch: all or nothing, at most 100 operations (a larger commit is refused), and the
partition's limits (20 GB, 10,000 RU/s) bound everything this store holds. An item's `type`
says what it is: `doc` (a document of a collection, its JSON as a string so that decimals
stay exact), `checkpoint`, `inbox`, `lease`, or `counter` (the last lease generation given).
Checkpoints, leases and the counter change by compare-and-set on their etag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from azure.cosmos import exceptions

from mussikon.adapters.store.cosmos.account import BATCH_LIMIT, CosmosAccount
from mussikon.adapters.store.cosmos.events import batch_status, cosmos_errors
from mussikon.adapters.store.document_json import decode_document, encode_document
from mussikon.adapters.store.key_range import KeyRange
from mussikon.ports.documents import Changes, Document, DocumentStore, Fence
from mussikon.ports.event_store import StoreError

PARTITION = "documents"
_TRIES = 20
"""Attempts of a commit or lease whose items another writer changed between read and write."""

_ESCAPED = {c: f"%{ord(c):02X}" for c in "%/\\?#|"}


def _part(text: str) -> str:
    """A name as part of an item id: the characters ids may not hold, and `|`, escaped."""
    return "".join(_ESCAPED.get(c, c) for c in text)


def item_id(kind: str, *names: str) -> str:
    return "|".join((kind, *map(_part, names)))


Op = tuple[Any, ...]


class CosmosDocumentStore(DocumentStore):
    """Documents, checkpoints, inboxes and leases in one partition of one container."""

    def __init__(self, account: CosmosAccount, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._container = account.documents
        self._meter = account.meter
        self._wall_clock = wall_clock
        """Seconds since the epoch, by which leases expire and inbox entries age."""

    # --- requests -----------------------------------------------------------------------

    async def _read(self, operation: str, id_: str) -> dict[str, Any] | None:
        async with cosmos_errors(operation):
            try:
                item: dict[str, Any] = await self._container.read_item(
                    id_, partition_key=PARTITION, raw_response_hook=self._meter.hook(operation))
            except exceptions.CosmosResourceNotFoundError:
                return None
        return item

    async def _query(self, operation: str, query: str,
                     parameters: dict[str, Any]) -> list[dict[str, Any]]:
        params = [{"name": "@partition", "value": PARTITION}] + [
            {"name": name, "value": value} for name, value in parameters.items()]
        async with cosmos_errors(operation):
            pages = self._container.query_items(
                query, parameters=params, partition_key=PARTITION,
                raw_response_hook=self._meter.hook(operation))
            return [item async for item in pages]

    async def _batch(self, operation: str, ops: list[Op]) -> bool:
        """Run the operations as one transactional batch: True if applied, False if one of
        them was refused (an id taken, an etag stale, an item gone): nothing applied then."""
        if not ops:
            return True
        if len(ops) > BATCH_LIMIT:
            raise StoreError(f"a commit to Cosmos DB holds at most {BATCH_LIMIT} operations "
                             f"(one transactional batch), this one needs {len(ops)}")
        async with cosmos_errors(operation):
            try:
                await self._container.execute_item_batch(
                    ops, partition_key=PARTITION, raw_response_hook=self._meter.hook(operation))
            except exceptions.CosmosBatchOperationError as error:
                if batch_status(error) in (404, 409, 412):
                    return False
                raise StoreError(f"Cosmos DB refused a {operation} ({batch_status(error)})"
                                 ) from None
        return True

    @staticmethod
    def _item(kind: str, id_: str, **fields: Any) -> dict[str, Any]:
        return {"id": id_, "partitionKey": PARTITION, "type": kind, **fields}

    @staticmethod
    def _replace_or_create(current: dict[str, Any] | None, item: dict[str, Any]) -> Op:
        """Write `item` only if `current` (as read) is still what is stored."""
        if current is None:
            return ("create", (item,))
        return ("replace", (item["id"], item), {"if_match_etag": current["_etag"]})

    # --- documents ----------------------------------------------------------------------

    async def get(self, collection: str, key: str) -> Document | None:
        item = await self._read("get", item_id("d", collection, key))
        return None if item is None else decode_document(item["data"])

    async def _range(self, operation: str, collection: str, keys: KeyRange,
                     limit: int | None = None) -> list[tuple[str, Document]]:
        query = (f"SELECT {'' if limit is None else f'TOP {int(limit)} '}c.key, c.data FROM c "
                 "WHERE c.partitionKey = @partition AND c.type = 'doc' AND c.collection = @c "
                 f"AND c.key {'>' if keys.lower_open else '>='} @lower")
        parameters: dict[str, Any] = {"@c": collection, "@lower": keys.lower}
        if keys.upper is not None:
            query += " AND c.key < @upper"
            parameters["@upper"] = keys.upper
        rows = await self._query(operation, query + " ORDER BY c.key", parameters)
        return sorted(((row["key"], decode_document(row["data"])) for row in rows),
                      key=lambda pair: pair[0])

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, Document]]:
        return await self._range("scan", collection, KeyRange.of(prefix))

    async def scan_page(self, collection: str, *, after: str = "", limit: int,
                        prefix: str = "", before: str | None = None
                        ) -> list[tuple[str, Document]]:
        if limit <= 0:
            return []
        return await self._range("scan_page", collection,
                                 KeyRange.of(prefix, after=after, before=before), limit)

    async def _existing(self, operation: str, ids: list[str]) -> list[str]:
        if not ids:
            return []
        rows = await self._query(operation, "SELECT c.id FROM c WHERE c.partitionKey = "
                                            "@partition AND ARRAY_CONTAINS(@ids, c.id)",
                                 {"@ids": ids})
        return [row["id"] for row in rows]

    async def commit(self, changes: Changes, *, checkpoint: tuple[str, int] | None = None,
                     inbox: tuple[str, str] | None = None, expected: int | None = None,
                     fence: Fence | None = None) -> bool:
        if expected is not None and checkpoint is None:
            raise ValueError("an expected checkpoint position needs a checkpoint to move")
        for _ in range(_TRIES):
            ops: list[Op] = []
            if fence is not None:
                lease = await self._read("commit", item_id("l", fence.lease))
                if lease is None or (lease["owner"], lease["generation"]) != (
                        fence.owner, fence.generation):
                    return False
                ops.append(("replace", (lease["id"], _plain(lease)),
                            {"if_match_etag": lease["_etag"]}))
            if inbox is not None:
                if await self.has_seen(*inbox):
                    return False
                ops.append(("create", (self._item("inbox", item_id("i", *inbox),
                                                  at=self._wall_clock()),)))
            if checkpoint is not None:
                name, position = checkpoint
                current = await self._read("commit", item_id("c", name))
                at = int(current["position"]) if current else 0
                if position <= at or (expected is not None and at != expected):
                    return False
                ops.append(self._replace_or_create(current, self._item(
                    "checkpoint", item_id("c", name), name=name, position=str(position))))
            deletes = [item_id("d", c, k) for c, k in changes.deletes]
            ops.extend(("delete", (i,)) for i in await self._existing("commit", deletes))
            ops.extend(("upsert", (self._item("doc", item_id("d", c, k), collection=c, key=k,
                                              data=encode_document(doc).decode()),))
                       for (c, k), doc in changes.puts.items())
            if await self._batch("commit", ops):
                return True
        raise StoreError(f"a commit to Cosmos DB kept meeting other writers ({_TRIES} tries)")

    # --- checkpoints --------------------------------------------------------------------

    async def checkpoint(self, name: str) -> int:
        item = await self._read("checkpoint", item_id("c", name))
        return int(item["position"]) if item else 0

    async def checkpoints(self) -> dict[str, int]:
        rows = await self._query("checkpoints", "SELECT c.name, c.position FROM c WHERE "
                                 "c.partitionKey = @partition AND c.type = 'checkpoint'", {})
        return {row["name"]: int(row["position"]) for row in rows}

    async def reset_checkpoint(self, name: str, collections: list[str]) -> None:
        """The checkpoint goes to 0 in the first batch, with the first documents; a collection
        of more than 99 documents is dropped in several batches after it."""
        rows = await self._query(
            "reset_checkpoint", "SELECT c.id FROM c WHERE c.partitionKey = @partition AND "
            "c.type = 'doc' AND ARRAY_CONTAINS(@collections, c.collection)",
            {"@collections": collections})
        ops: list[Op] = [("upsert", (self._item("checkpoint", item_id("c", name), name=name,
                                                position="0"),))]
        ops.extend(("delete", (row["id"],)) for row in rows)
        for start in range(0, len(ops), BATCH_LIMIT):
            await self._batch("reset_checkpoint", ops[start:start + BATCH_LIMIT])

    # --- leases -------------------------------------------------------------------------

    async def try_lease(self, name: str, owner: str, seconds: float) -> int | None:
        for _ in range(_TRIES):
            lease = await self._read("try_lease", item_id("l", name))
            now = self._wall_clock()
            if lease is not None and lease["owner"] != owner and lease["expires"] > now:
                return None
            ops: list[Op] = []
            if lease is not None and lease["owner"] == owner:
                generation = int(lease["generation"])
            else:
                counter = await self._read("try_lease", item_id("g", "leases"))
                generation = (int(counter["value"]) if counter else 0) + 1
                ops.append(self._replace_or_create(counter, self._item(
                    "counter", item_id("g", "leases"), value=generation)))
            ops.append(self._replace_or_create(lease, self._item(
                "lease", item_id("l", name), name=name, owner=owner, expires=now + seconds,
                generation=generation)))
            if await self._batch("try_lease", ops):
                return generation
        raise StoreError(f"lease {name!r}: kept meeting other writers ({_TRIES} tries)")

    async def release_lease(self, name: str, owner: str) -> None:
        lease = await self._read("release_lease", item_id("l", name))
        if lease is not None and lease["owner"] == owner:
            await self._batch("release_lease", [("delete", (lease["id"],),
                                                 {"if_match_etag": lease["_etag"]})])

    # --- inboxes ------------------------------------------------------------------------

    async def has_seen(self, consumer: str, message_id: str) -> bool:
        return await self._read("has_seen", item_id("i", consumer, message_id)) is not None

    async def prune_inbox(self, older_than: timedelta, limit: int) -> int:
        if limit <= 0:
            return 0
        cutoff = self._wall_clock() - older_than.total_seconds()
        rows = await self._query(
            "prune_inbox", f"SELECT TOP {int(limit)} c.id FROM c WHERE c.partitionKey = "
            "@partition AND c.type = 'inbox' AND c.at < @cutoff ORDER BY c.at",
            {"@cutoff": cutoff})
        removed = 0
        for start in range(0, len(rows), BATCH_LIMIT):
            chunk = rows[start:start + BATCH_LIMIT]
            if await self._batch("prune_inbox", [("delete", (row["id"],)) for row in chunk]):
                removed += len(chunk)
        return removed


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item as read, without the fields the service adds."""
    return {k: v for k, v in item.items() if not k.startswith("_")}
