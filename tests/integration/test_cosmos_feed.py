"""The Cosmos DB feed through the official SDK against the local server: feed ranges, a read
of a range from its beginning (sorted by stream and version, with the SDK's continuation
token), the checkpoint kept in the document store, a projection applied from it, and the
count of requests. The local server's change feed is not incremental (a read with a token
finds nothing): what follows a token is covered by tests/unit/test_cosmos_feed.py and, on a
real account, by tests/live/test_cosmos_live.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar
from uuid import uuid4

import pytest

from mussikon.adapters.store.cosmos.account import CosmosAccount, open_account
from mussikon.adapters.store.cosmos.documents import CosmosDocumentStore
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.adapters.store.cosmos.feed import FEED_CHECKPOINTS, CosmosFeed
from mussikon.application.projections import Projection, View
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from mussikon.ports.feed import START
from mussikon.wire import EventCodec
from tests.conftest import COSMOS_KEY

pytestmark = pytest.mark.cosmos


@pytest.fixture
async def account(cosmos_endpoint: str) -> AsyncIterator[CosmosAccount]:
    database = f"t{uuid4().hex[:12]}"
    opened = await open_account(cosmos_endpoint, COSMOS_KEY, database=database,
                                events_container="Events", documents_container="Documents",
                                verify_tls=False)
    try:
        yield opened
    finally:
        await opened.client.delete_database(database)
        await opened.close()


class CountNames(Projection):
    name = "names"
    collections: ClassVar[tuple[str, ...]] = ("names",)
    event_types = frozenset({MusicianRegisteredEvent.__name__})

    async def apply(self, event: DomainEvent, view: View) -> None:
        assert isinstance(event, MusicianRegisteredEvent)
        doc = await view.get("names", event.musician_id) or {"names": []}
        view.put("names", event.musician_id, {"names": [*doc["names"], event.name]})


async def write(store: CosmosEventStore, streams: int) -> None:
    """`streams` streams of three events, each written in one batch."""
    for n in range(streams):
        events = [MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name=name,
                                          genres=("Jazz",), location="Lima") for name in "ABC"]
        await store.append(events[0].stream_id, events, 0)


async def test_a_range_read_from_its_beginning_is_sorted_and_gives_a_token(
        account: CosmosAccount) -> None:
    store = CosmosEventStore(account, EventCodec())
    feed = CosmosFeed(store, CosmosDocumentStore(account))
    await write(store, 4)
    parts = await feed.parts()
    assert parts
    assert [p.name("r") for p in await feed.parts()] == [p.name("r") for p in parts]  # pinned
    account.meter.reset()
    pages = [await part.read(START, 100) for part in parts]
    assert account.meter.requests["change_feed"] == len(parts)  # one request per range
    events = [r for page in pages for r in page.events]
    assert sorted((r.stream_id, r.version) for r in events) == [
        (f"musician-m{n}", v) for n in range(4) for v in (1, 2, 3)]
    for page in pages:
        keys = [(r.stream_id, r.version) for r in page.events]
        assert keys == sorted(keys)
        assert page.checkpoint != START and not page.undecodable
    assert await feed.head() == "12"
    assert await feed.readable(await feed.head())
    assert not await parts[0].caught_up(START)


async def test_a_projection_applies_the_change_feed_with_its_checkpoint_per_range(
        account: CosmosAccount) -> None:
    store, documents = CosmosEventStore(account, EventCodec()), CosmosDocumentStore(account)
    await write(store, 3)
    runner = ProjectionRunner(store, documents, [CountNames()],
                              feed=CosmosFeed(store, documents))
    await runner.catch_up("names")
    for n in range(3):
        assert await documents.get("names", f"m{n}") == {"names": ["A", "B", "C"]}
    saved = await documents.scan(FEED_CHECKPOINTS)
    assert [key for key, _ in saved] == [part.name("projection:names")
                                         for part in await runner.parts()]
    assert all(doc["token"] for _, doc in saved)
    assert await runner.caught_up("names")
    await runner.stop()
