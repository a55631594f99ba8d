"""Record the change-feed scenario (`scenario.py`) against the local test server:
`python -m tests.cosmos_recorded.record` (after `make cosmos-server`) writes
`change_feed.json` beside this file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from bench.store_cosmos import local_server

from mussikon.adapters.store.cosmos.account import UNIQUE_VERSION
from mussikon.domain.events import DomainEvent, MusicianRegisteredEvent
from mussikon.wire import EventCodec
from tests.cosmos_recorded import scenario
from tests.cosmos_recorded.transport import RecordingTransport

HERE = Path(__file__).parent


def events(stream: str, count: int) -> list[DomainEvent]:
    return [MusicianRegisteredEvent(musician_id=stream, email="ana@example.com",
                                    name=f"Ana {n}", genres=("Jazz",), location="Lima")
            for n in range(count)]


async def record(endpoint: str) -> list[object]:
    async with CosmosClient(endpoint, credential=scenario.KEY,
                            connection_verify=False) as writer:
        database = await writer.create_database_if_not_exists(scenario.DATABASE)
        container = await database.create_container_if_not_exists(
            scenario.CONTAINER, partition_key=PartitionKey("/partitionKey"),
            unique_key_policy=UNIQUE_VERSION)
        transport = RecordingTransport()
        account = scenario.reader_account(endpoint, transport)
        codec = EventCodec()

        async def write(step: str) -> None:
            stream, count = {"stream A": ("musician-a", 3), "stream B": ("musician-b", 2)}[step]
            items = [{"id": str(e.id), "partitionKey": stream, "aggregateId": stream,
                      "eventType": e.event_type, "eventData": codec.encode(e).decode(),
                      "version": v, "timestamp": "2026-12-06T00:00:00Z"}
                     for v, e in enumerate(events(stream, count), start=1)]
            await container.execute_item_batch([("create", (i,)) for i in items],
                                               partition_key=stream)

        try:
            seen, _, _ = await scenario.run(account, write)
        finally:
            await account.close()
        transport.save(HERE / "change_feed.json")
        return seen


if __name__ == "__main__":
    with local_server() as endpoint:
        print(asyncio.run(record(endpoint)))
