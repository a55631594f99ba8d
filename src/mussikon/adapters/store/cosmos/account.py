"""The Cosmos DB account: the client, the two containers, and the count and charge of every
request each store operation makes (`RequestMeter`)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.cosmos import PartitionKey, exceptions
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from mussikon.ports.event_store import StoreUnavailable

log = logging.getLogger("mussikon.store.cosmos")

PARTITION_KEY_PATH = "/partitionKey"
"""Both containers are partitioned on it: the specification's `partitionKey` (the aggregate)."""

VERSION_UNIQUE_KEY = "/version"
"""The unique key of the events container: one item per version in each stream (partition)."""

UNIQUE_VERSION: dict[str, Any] = {"uniqueKeys": [{"paths": [VERSION_UNIQUE_KEY]}]}

BATCH_LIMIT = 100
"""The most operations one transactional batch may hold (the service's limit)."""


@dataclass
class RequestMeter:
    """How many requests each store operation made, and the request units they were charged
    (`x-ms-request-charge`, logged at debug level for each request)."""

    requests: Counter[str] = field(default_factory=Counter)
    charges: dict[str, float] = field(default_factory=dict)

    def hook(self, operation: str) -> Callable[[Any], None]:
        """The SDK's `raw_response_hook` for the requests of one operation."""
        def record(response: Any) -> None:
            charge = float(response.http_response.headers.get("x-ms-request-charge", 0) or 0)
            self.requests[operation] += 1
            self.charges[operation] = self.charges.get(operation, 0.0) + charge
            log.debug("cosmos %s: request charge %s RU", operation, charge)
        return record

    def reset(self) -> None:
        self.requests.clear()
        self.charges.clear()


@dataclass
class CosmosAccount:
    """One client of one account, the database and the two containers the stores use."""

    client: CosmosClient
    database: DatabaseProxy
    events: ContainerProxy
    documents: ContainerProxy
    meter: RequestMeter
    version_is_unique: bool
    """Whether the events container has the unique key on /version our concurrency needs."""

    async def close(self) -> None:
        await self.client.close()


async def open_account(endpoint: str, key: str, *, database: str, events_container: str,
                       documents_container: str, verify_tls: bool = True,
                       meter: RequestMeter | None = None, transport: Any = None
                       ) -> CosmosAccount:
    """Connect, creating the database and the containers if they do not exist (ours with the
    unique key on /version); an events container that exists already is used as it is, and
    if it lacks that key a warning says so once, with what it means. `transport`: the
    SDK's HTTP transport (azure-core's `AsyncHttpTransport`), its own by default."""
    client = CosmosClient(endpoint, credential=key, connection_verify=verify_tls,
                          transport=transport)
    try:
        db = await client.create_database_if_not_exists(database)
        events = await db.create_container_if_not_exists(
            events_container, partition_key=PartitionKey(PARTITION_KEY_PATH),
            unique_key_policy=UNIQUE_VERSION)
        documents = await db.create_container_if_not_exists(
            documents_container, partition_key=PartitionKey(PARTITION_KEY_PATH))
        properties = await events.read()
    except exceptions.CosmosHttpResponseError as error:
        await client.close()
        raise StoreUnavailable(f"Cosmos DB at {endpoint}: {error.status_code} "
                               f"{error.reason or ''}".strip()) from None
    except Exception as error:
        await client.close()
        raise StoreUnavailable(f"Cosmos DB at {endpoint}: {type(error).__name__}") from None
    paths = properties.get("partitionKey", {}).get("paths", [])
    if paths != [PARTITION_KEY_PATH]:
        await client.close()
        raise StoreUnavailable(f"Cosmos DB container {events_container!r} is partitioned on "
                               f"{paths}, not {PARTITION_KEY_PATH}: it cannot hold the streams")
    unique = any(k.get("paths") == [VERSION_UNIQUE_KEY]
                 for k in properties.get("uniqueKeyPolicy", {}).get("uniqueKeys", []))
    if not unique:
        log.warning("Cosmos DB container %r has no unique key on /version: two writers can "
                    "both write the same version of a stream (optimistic concurrency does not "
                    "hold); a container created by MussikOn has it", events_container)
    return CosmosAccount(client, db, events, documents, meter or RequestMeter(), unique)
