"""The Cosmos DB feed through the official SDK against the local server: feed ranges, a read
of a range from its beginning (sorted by stream and version, with the SDK's continuation
token) and on from that token, the checkpoint kept in the document store, a projection
applied from it, and the count of requests."""

from __future__ import annotations

from typing import ClassVar

import pytest
from azure.cosmos.aio import CosmosClient

from mussikon.adapters.store.cosmos.account import CosmosAccount
from mussikon.adapters.store.cosmos.documents import CosmosDocumentStore
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.adapters.store.cosmos.feed import FEED_CHECKPOINTS, CosmosFeed
from mussikon.application.projections import Projection, View
from mussikon.application.projections.directory import PROFILES
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.bootstrap import open_app
from mussikon.config import Settings
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from mussikon.ports.feed import START
from mussikon.wire import EventCodec
from tests.conftest import COSMOS_KEY
from tests.integration.rabbitmq_kit import delete_topology

pytestmark = pytest.mark.cosmos


class CountNames(Projection):
    name = "names"
    collections: ClassVar[tuple[str, ...]] = ("names",)
    event_types = frozenset({MusicianRegisteredEvent.__name__})

    async def apply(self, event: DomainEvent, view: View) -> None:
        assert isinstance(event, MusicianRegisteredEvent)
        doc = await view.get("names", event.musician_id) or {"names": []}
        view.put("names", event.musician_id, {"names": [*doc["names"], event.name]})


async def write(store: CosmosEventStore, streams: int, first: int = 0) -> None:
    """`streams` streams of three events (musicians `first`…), each written in one batch."""
    for n in range(first, first + streams):
        events = [MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name=name,
                                          genres=("Jazz",), location="Lima") for name in "ABC"]
        await store.append(events[0].stream_id, events, 0)


async def test_a_range_read_from_its_beginning_is_sorted_and_read_on_from_its_token(
        cosmos_account: CosmosAccount) -> None:
    store = CosmosEventStore(cosmos_account, EventCodec())
    feed = CosmosFeed(store, CosmosDocumentStore(cosmos_account))
    await write(store, 4)
    parts = await feed.parts()
    assert parts
    assert [p.name("r") for p in await feed.parts()] == [p.name("r") for p in parts]  # pinned
    cosmos_account.meter.reset()
    pages = [await part.read(START, 100) for part in parts]
    assert cosmos_account.meter.requests["change_feed"] == len(parts)  # one request per range
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
    # from the token on: only what is written later, then nothing (304 Not Modified)
    tokens = [page.checkpoint for page in pages]
    assert all([await part.caught_up(t) for part, t in zip(parts, tokens, strict=True)])
    await write(store, 1, first=4)
    later = [await part.read(t, 100) for part, t in zip(parts, tokens, strict=True)]
    assert sorted((r.stream_id, r.version) for p in later for r in p.events) == [
        ("musician-m4", v) for v in (1, 2, 3)]
    assert all([await part.caught_up(p.checkpoint) for part, p in zip(parts, later, strict=True)])


async def test_a_projection_applies_the_change_feed_with_its_checkpoint_per_range(
        cosmos_account: CosmosAccount) -> None:
    store = CosmosEventStore(cosmos_account, EventCodec())
    documents = CosmosDocumentStore(cosmos_account)
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


@pytest.mark.rabbitmq
async def test_a_worker_on_cosmos_relays_and_projects_what_was_written_before_it_started(
        cosmos_endpoint: str, rabbitmq_url: str, unique_name: str) -> None:
    """A worker on Cosmos DB alone, everything written before the readers' first read."""
    app = await open_app(Settings(
        store_url=f"AccountEndpoint={cosmos_endpoint};AccountKey={COSMOS_KEY};",
        cosmos_database=unique_name, cosmos_verify_tls=False, broker_url=rabbitmq_url,
        rabbitmq_prefix=f"{unique_name}.", rabbitmq_events_exchange="", smtp_url="",
        poll_interval=0.05, lease_seconds=5.0))
    assert isinstance(app.store, CosmosEventStore)
    try:
        ids = [await app.marketplace.register_musician(
            email=f"m{n}@example.com", name=f"M{n}", genres=["jazz"], location="Cali")
            for n in range(4)]
        await app.start()
        await app.settle(timeout=60)
        assert all([await app.documents.get(PROFILES, musician) for musician in ids])
        welcomed = {s.notification.recipient for s in await app.notifier.sent(100)
                    if s.notification.kind == "welcome"}
        assert welcomed == {f"m{n}@example.com" for n in range(4)}  # relayed and handled
        saved = {key for key, _ in await app.documents.scan(FEED_CHECKPOINTS)}
        parts = await CosmosFeed(app.store, app.documents).parts()
        assert {part.name("relay") for part in parts} <= saved
    finally:
        await app.close()
        await delete_topology(app.transport, rabbitmq_url)
        async with CosmosClient(cosmos_endpoint, credential=COSMOS_KEY,
                                connection_verify=False) as client:
            await client.delete_database(unique_name)
