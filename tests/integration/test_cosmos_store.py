"""The Cosmos DB stores against the local server: the .NET services' items read back, the
specification's query case gap, racing writers with random item ids, what each operation
costs in requests, and what the store refuses (tests/contract runs the port's suites)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from azure.cosmos import PartitionKey, exceptions

from mussikon.adapters.store.cosmos.account import CosmosAccount, open_account
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.domain.events import MusicianRegisteredEvent
from mussikon.ports.event_store import NO_STREAM, ConcurrencyError, NoGlobalOrder, StoreError
from mussikon.wire import EventCodec
from tests.conftest import COSMOS_KEY

pytestmark = pytest.mark.cosmos

GOLDEN = Path(__file__).parent.parent / "golden"


@pytest.fixture
def store(cosmos_account: CosmosAccount) -> CosmosEventStore:
    return CosmosEventStore(cosmos_account, EventCodec())


def dotnet_item(stream_id: str, version: int, data: str, event_type: str,
                timestamp: str) -> dict[str, Any]:
    """An item as the specification's EventStore writes it: a random id, its own names."""
    return {"id": str(uuid4()), "aggregateId": stream_id, "eventType": event_type,
            "eventData": data, "version": version, "timestamp": timestamp,
            "partitionKey": stream_id}


def registered(n: int) -> MusicianRegisteredEvent:
    return MusicianRegisteredEvent(musician_id=f"m-{n}", email=f"m{n}@example.com",
                                   name=f"Musician {n}", genres=("jazz",), location="Lima")


async def test_items_the_dotnet_services_wrote_read_back_as_events(
        cosmos_account: CosmosAccount, store: CosmosEventStore) -> None:
    golden = sorted(GOLDEN.glob("*Event.json"))
    assert len(golden) == 5
    for version, path in enumerate(golden, start=1):
        data = path.read_text()
        body = json.loads(data)
        await cosmos_account.events.create_item(dotnet_item(
            "aggregate-1", version, data, body["EventType"], body["OccurredAt"]))
    records = await store.read_stream("aggregate-1")
    assert [r.event.event_type for r in records] == [p.stem for p in golden]
    assert [str(r.event.id) for r in records] == [json.loads(p.read_text())["Id"]
                                                  for p in golden]
    assert await store.stream_version("aggregate-1") == 5
    # ours continue the stream after theirs, and theirs are found by type and time
    assert await store.append("aggregate-1", [registered(1)], 5) == 6
    created = await store.read_by_type("EventCreatedEvent",
                                       since=datetime(2026, 11, 27, 21, 54, 2, tzinfo=UTC))
    assert [str(r.event.id) for r in created] == [
        json.loads((GOLDEN / "EventCreatedEvent.json").read_text())["Id"]]
    assert await store.read_by_type("EventCreatedEvent",
                                    since=datetime(2026, 11, 27, 21, 54, 3, tzinfo=UTC)) == []


async def test_our_items_carry_the_specifications_fields(
        cosmos_account: CosmosAccount, store: CosmosEventStore) -> None:
    event = registered(1)
    await store.append("musician-m-1", [event], NO_STREAM)
    item = await cosmos_account.events.read_item(str(event.id), partition_key="musician-m-1")
    assert {k: item[k] for k in ("aggregateId", "eventType", "version", "partitionKey")} == {
        "aggregateId": "musician-m-1", "eventType": "MusicianRegisteredEvent", "version": 1,
        "partitionKey": "musician-m-1"}
    assert json.loads(item["eventData"])["Email"] == "m1@example.com"
    assert item["timestamp"].endswith("Z")


async def test_the_specifications_query_names_find_nothing_ours_find_the_items(
        cosmos_account: CosmosAccount, store: CosmosEventStore) -> None:
    await store.append("s", [registered(1), registered(2)], NO_STREAM)
    spec = cosmos_account.events.query_items(
        "SELECT * FROM c WHERE c.AggregateId = @id ORDER BY c.Version",
        parameters=[{"name": "@id", "value": "s"}])
    assert [item async for item in spec] == []  # property names are case-sensitive
    ours = cosmos_account.events.query_items(
        "SELECT * FROM c WHERE c.aggregateId = @id ORDER BY c.version",
        parameters=[{"name": "@id", "value": "s"}])
    assert [item["version"] async for item in ours] == [1, 2]
    assert [r.version for r in await store.read_stream("s")] == [1, 2]


async def test_twenty_racing_writers_one_winner_per_version_whatever_their_ids(
        cosmos_account: CosmosAccount, store: CosmosEventStore) -> None:
    await store.append("s", [registered(0)], NO_STREAM)
    codec = EventCodec()

    async def dotnet_writer(n: int) -> str:
        event = registered(n)
        try:
            await cosmos_account.events.create_item(dotnet_item(
                "s", 2, codec.encode(event).decode(), event.event_type, "2026-01-01T00:00:00Z"))
        except exceptions.CosmosResourceExistsError:
            return "lost"
        return "won"

    async def our_writer(n: int) -> str:
        try:
            await store.append("s", [registered(n)], 1)
        except ConcurrencyError:
            return "lost"
        return "won"

    results = await asyncio.gather(*(dotnet_writer(n) if n % 2 else our_writer(n)
                                     for n in range(1, 21)))
    assert results.count("won") == 1 and results.count("lost") == 19
    assert [r.version for r in await store.read_stream("s")] == [1, 2]
    # and a second round at the next version, the same
    second = await asyncio.gather(*(store.append("s", [registered(n)], 2)
                                    for n in range(20)), return_exceptions=True)
    assert second.count(3) == 1
    assert all(isinstance(r, ConcurrencyError) for r in second if r != 3)


async def test_requests_per_operation(cosmos_account: CosmosAccount,
                                      store: CosmosEventStore) -> None:
    meter = cosmos_account.meter
    meter.reset()
    await store.append("s", [registered(n) for n in range(50)], NO_STREAM)
    assert meter.requests == {"append": 1}  # a new stream: one transactional batch
    meter.reset()
    await store.append("s", [registered(n) for n in range(100)], 50)
    # the store wrote version 50 itself: the batch alone, whatever its size
    assert meter.requests == {"append": 1}
    meter.reset()
    other = CosmosEventStore(cosmos_account)  # another process: it knows nothing of "s"
    await other.append("s", [registered(n) for n in range(150, 160)], 150)
    # the stream's version, then the batch
    assert meter.requests == {"stream_version": 1, "append": 1}
    meter.reset()
    assert len(await store.read_stream("s", 100)) == 61
    assert meter.requests == {"read_stream": 1}
    assert meter.charges["read_stream"] >= meter.requests["read_stream"]
    meter.reset()
    await store.append("s", [registered(160)], 160)  # the read told it the stream's version
    assert meter.requests == {"append": 1}
    with pytest.raises(ConcurrencyError):  # and a stale writer still loses
        await other.append("s", [registered(161)], 160)
    assert [r.version for r in await store.read_stream("s", 160)] == [160, 161]


async def test_what_the_store_refuses(store: CosmosEventStore) -> None:
    with pytest.raises(StoreError, match="at most 100 events"):
        await store.append("s", [registered(n) for n in range(101)], NO_STREAM)
    assert await store.stream_version("s") == 0
    with pytest.raises(StoreError, match="one stream per transaction"):
        await store.append_streams([("a", [registered(1)], NO_STREAM),
                                    ("b", [registered(2)], NO_STREAM)])
    for read in (store.read_all(), store.read_last(10), store.count_after(0),
                 store.head_position(), store.committed_position()):
        with pytest.raises(NoGlobalOrder, match="no order across streams"):
            await read


async def test_read_by_type_goes_by_the_time_events_occurred(store: CosmosEventStore) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    later = MusicianRegisteredEvent(musician_id="m-1", email="a@x", name="A", genres=(),
                                    location="L", occurred_at=day + timedelta(hours=1))
    exactly = MusicianRegisteredEvent(musician_id="m-2", email="b@x", name="B", genres=(),
                                      location="L", occurred_at=day)
    old = MusicianRegisteredEvent(musician_id="m-3", email="c@x", name="C", genres=(),
                                  location="L", occurred_at=day - timedelta(days=2))
    await store.append("a", [later, old], NO_STREAM)
    await store.append("b", [exactly], NO_STREAM)
    by_type = store.read_by_type
    assert [r.event.id for r in await by_type("MusicianRegisteredEvent")] == [
        old.id, exactly.id, later.id]
    assert [r.event.id for r in await by_type("MusicianRegisteredEvent", since=day)] == [
        exactly.id, later.id]
    assert [r.event.id for r in await by_type("MusicianRegisteredEvent", since=day,
                                              limit=1)] == [exactly.id]


async def test_a_container_without_the_unique_key_is_used_and_named_once(
        cosmos_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    database = f"t{uuid4().hex[:12]}"
    first = await open_account(cosmos_endpoint, COSMOS_KEY, database=database,
                               events_container="Plain", documents_container="Documents",
                               verify_tls=False)
    try:
        await first.database.delete_container("Plain")
        await first.database.create_container("Plain",
                                              partition_key=PartitionKey("/partitionKey"))
        with caplog.at_level(logging.WARNING, "mussikon.store.cosmos"):
            second = await open_account(cosmos_endpoint, COSMOS_KEY, database=database,
                                        events_container="Plain",
                                        documents_container="Documents", verify_tls=False)
        await second.close()
        assert not second.version_is_unique
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "no unique key on /version" in warnings[0]
        assert "optimistic concurrency does not hold" in warnings[0]
    finally:
        await first.client.delete_database(database)
        await first.close()


async def test_bootstrap_opens_the_stores_from_a_connection_string(
        cosmos_endpoint: str) -> None:
    from mussikon.bootstrap import open_stores
    from mussikon.config import Settings

    database = f"t{uuid4().hex[:12]}"
    settings = Settings(store_url=f"AccountEndpoint={cosmos_endpoint};AccountKey={COSMOS_KEY};",
                        cosmos_database=database, cosmos_verify_tls=False)
    events, documents = await open_stores(settings, EventCodec())
    assert isinstance(events, CosmosEventStore)
    try:
        assert await events.append("s", [registered(1)], NO_STREAM) == 1
        assert await documents.try_lease("relay", "a", 5) is not None
    finally:
        await events.account.client.delete_database(database)
        await events.close()
