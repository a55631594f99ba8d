"""The change-feed scenario that `record.py` records against the local server and
`tests/unit/test_cosmos_recorded.py` replays: one reader of one feed range, through
`CosmosFeed` and the SDK's pull model.

1. three events of stream A are written (one batch); the range is read from its beginning,
   two items a page: a page of 2, then a page of 1 (`If-None-Match` the token before);
2. the next read is answered 304 Not Modified: no events, the checkpoint stays, caught up;
3. two events of stream B are written; the reader is behind, and reads them in one page;
   then 304 again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from azure.cosmos.aio import CosmosClient

from mussikon.adapters.store.cosmos.account import CosmosAccount, RequestMeter
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.adapters.store.cosmos.feed import CosmosFeed
from mussikon.adapters.store.memory import InMemoryDocumentStore
from mussikon.ports.feed import START, Checkpoint, Feed

DATABASE, CONTAINER = "MussikOn", "Events"
KEY = ("C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw"
       "/Jw==")

Write = Callable[[str], Awaitable[None]]
"""Writes the events of the step named (not part of what is recorded)."""


def reader_account(endpoint: str, transport: Any) -> CosmosAccount:
    """An account whose client sends its requests through `transport` (no request is made
    to open it)."""
    client = CosmosClient(endpoint, credential=KEY, connection_verify=False,
                          transport=transport)
    events = client.get_database_client(DATABASE).get_container_client(CONTAINER)
    return CosmosAccount(client, client.get_database_client(DATABASE), events, events,
                         RequestMeter(), version_is_unique=True)


async def run(account: CosmosAccount, write: Write) -> tuple[list[Any], Feed, Checkpoint]:
    """What the reader observed at each step (pages as [(stream, version)…] with whether the
    checkpoint moved, and the answers of `caught_up`), the part it read and its checkpoint
    at the end."""
    feed = CosmosFeed(CosmosEventStore(account), InMemoryDocumentStore())
    seen: list[Any] = []
    await write("stream A")
    parts = await feed.parts()
    seen.append(len(parts))
    part = parts[0]
    checkpoint = START
    for limit in (2, 2, 2):
        page = await part.read(checkpoint, limit)
        seen.append(([(r.stream_id, r.version) for r in page.events],
                     page.checkpoint != checkpoint))
        checkpoint = page.checkpoint
    seen.append(await part.caught_up(checkpoint))
    await write("stream B")
    seen.append(await part.caught_up(checkpoint))
    for limit in (10, 10):
        page = await part.read(checkpoint, limit)
        seen.append(([(r.stream_id, r.version) for r in page.events],
                     page.checkpoint != checkpoint))
        checkpoint = page.checkpoint
    seen.append(account.meter.requests["change_feed"])
    return seen, part, checkpoint
