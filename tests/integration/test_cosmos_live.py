"""The readers of every stream on Cosmos DB, whose change feed is incremental: a worker
(RabbitMQ relay, projections, handlers) on Cosmos DB alone, and the lease hand-over of a
projection's feed ranges between two runners. Each runs on the local test server (marker
`cosmos`: its change feed is incremental as the service's, tests/cosmos_server/server.js)
and on a real account or emulator (marker `cosmos_live`) when MUSSIKON_TEST_COSMOS_URL names
it (its .NET connection string; skipped otherwise, also under MUSSIKON_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

import pytest
from azure.cosmos.aio import CosmosClient

from mussikon.adapters.store.cosmos.account import CosmosAccount, open_account
from mussikon.adapters.store.cosmos.documents import CosmosDocumentStore
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.adapters.store.cosmos.feed import FEED_CHECKPOINTS, CosmosFeed
from mussikon.application.projections import Projection, View
from mussikon.application.projections.directory import PROFILES
from mussikon.application.projections.runner import ProjectionRunner
from mussikon.bootstrap import open_app
from mussikon.config import CosmosConnectionString, Settings
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from mussikon.wire import EventCodec
from tests.conftest import COSMOS_KEY
from tests.integration.rabbitmq_kit import delete_topology
from tests.polling import eventually

COSMOS_URL = os.environ.get("MUSSIKON_TEST_COSMOS_URL", "")


@dataclass(frozen=True)
class Target:
    url: str
    """The .NET connection string."""
    verify_tls: bool


@pytest.fixture(params=[pytest.param("local", marks=pytest.mark.cosmos),
                        pytest.param("live", marks=pytest.mark.cosmos_live)])
def target(request: pytest.FixtureRequest) -> Target:
    """The local test server, or the real account or emulator MUSSIKON_TEST_COSMOS_URL names."""
    if request.param == "local":
        endpoint = request.getfixturevalue("cosmos_endpoint")
        return Target(f"AccountEndpoint={endpoint};AccountKey={COSMOS_KEY};", False)
    if not COSMOS_URL:
        pytest.skip("MUSSIKON_TEST_COSMOS_URL names no Cosmos DB account or emulator")
    return Target(COSMOS_URL, Settings().cosmos_verify_tls)


@pytest.fixture
async def account(target: Target, unique_name: str) -> AsyncIterator[CosmosAccount]:
    """A database of its own on the account, deleted afterwards."""
    connection = CosmosConnectionString.parse(target.url)
    opened = await open_account(connection.endpoint, connection.key, database=unique_name,
                                events_container="Events", documents_container="Documents",
                                verify_tls=target.verify_tls)
    try:
        yield opened
    finally:
        await opened.client.delete_database(unique_name)
        await opened.close()


class CountNames(Projection):
    name = "names"
    collections: ClassVar[tuple[str, ...]] = ("names",)
    event_types = frozenset({MusicianRegisteredEvent.__name__})

    async def apply(self, event: DomainEvent, view: View) -> None:
        assert isinstance(event, MusicianRegisteredEvent)
        doc = await view.get("names", event.musician_id) or {"n": 0}
        view.put("names", event.musician_id, {"n": doc["n"] + 1})


async def register(store: CosmosEventStore, first: int, count: int) -> None:
    for n in range(first, first + count):
        event = MusicianRegisteredEvent(musician_id=f"m{n}", email="a@b.io", name="A",
                                        genres=("Jazz",), location="Lima")
        await store.append(event.stream_id, [event], 0)


async def test_a_worker_relays_and_projects_the_change_feed(
        target: Target, rabbitmq_url: str, unique_name: str) -> None:
    app = await open_app(Settings(
        store_url=target.url, cosmos_database=unique_name, cosmos_verify_tls=target.verify_tls,
        broker_url=rabbitmq_url,
        rabbitmq_prefix=f"{unique_name}.", rabbitmq_events_exchange="", smtp_url="",
        poll_interval=0.05, lease_seconds=5.0))
    assert isinstance(app.store, CosmosEventStore)
    try:
        await app.start()
        ids = [await app.marketplace.register_musician(
            email=f"m{n}@example.com", name=f"M{n}", genres=["jazz"], location="Cali")
            for n in range(5)]
        await app.settle(timeout=120)
        for musician in ids:
            profile = await app.documents.get(PROFILES, musician)
            assert profile is not None
        welcomed = {s.notification.recipient for s in await app.notifier.sent(100)
                    if s.notification.kind == "welcome"}
        assert welcomed == {f"m{n}@example.com" for n in range(5)}
        saved = {key for key, _ in await app.documents.scan(FEED_CHECKPOINTS)}
        parts = await CosmosFeed(app.store, app.documents).parts()
        assert {part.name("relay") for part in parts} <= saved
    finally:
        await app.close()
        await delete_topology(app.transport, rabbitmq_url)
        connection = CosmosConnectionString.parse(target.url)
        async with CosmosClient(connection.endpoint, credential=connection.key,
                                connection_verify=target.verify_tls) as client:
            await client.delete_database(unique_name)


async def test_a_projections_ranges_pass_to_another_runner_when_the_first_stops(
        account: CosmosAccount) -> None:
    store, documents = CosmosEventStore(account, EventCodec()), CosmosDocumentStore(account)
    first = ProjectionRunner(store, documents, [CountNames()], lease_seconds=5.0,
                             feed=CosmosFeed(store, documents))
    second = ProjectionRunner(store, documents, [CountNames()], lease_seconds=5.0,
                              feed=CosmosFeed(store, documents))
    await register(store, 0, 10)
    await first.catch_up("names")
    await register(store, 10, 10)
    await second.catch_up("names")  # every range is leased to the first: nothing applied
    assert all([await documents.get("names", f"m{n}") is None for n in range(10, 20)])
    await first.stop()  # releases its leases

    async def all_applied_once() -> bool:
        await second.catch_up("names")
        docs = [await documents.get("names", f"m{n}") for n in range(20)]
        return docs == [{"n": 1}] * 20

    await eventually(all_applied_once, 60, what="each registration applied once")
    assert await second.caught_up("names")
    await second.stop()
