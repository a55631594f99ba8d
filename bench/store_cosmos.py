"""`mussikon bench store --backend cosmos`: our Cosmos DB event store beside the
specification's way, with the same SDK (`azure-cosmos`, asyncio) in the same run.

Contenders, each with a client of its own and a database of its own (made for the run,
deleted after it):

- ours: `CosmosEventStore` (one transactional batch per append) and, to load an aggregate,
  the `Repository` with snapshots in the `CosmosDocumentStore` (every 50 events, as the
  service runs by default);
- `spec`: the specification's `EventStore` (seed, clase 5): one `create_item` per event
  (`CreateItemAsync`) into a container without a unique key, and one query per load
  (`SELECT * FROM c WHERE c.aggregateId = @id ORDER BY c.version`, across partitions, as
  `GetEventsAsync` sends it without a partition key; the property names as written, since
  the specification's `c.AggregateId` finds nothing). The specification writes every event
  of an append at `expectedVersion + 1`; here they are numbered, at the same cost.

What each contender's requests cost is counted at the HTTP transport (`CountingTransport`):
every request the SDK sends, its metadata and query-plan requests included. The local test
server charges 1 RU for any request, so requests, not request units, are the figure; its
throughput is not the service's (a Node.js process on this machine).

Workloads: appends of 1 event (new streams), of 10 and of 100 events (to an existing stream
at its version); loads of an aggregate (a contract) of 100 and of 10,000 events. Each runs in
rounds, the contenders taking turns in an order that turns round by round.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient

from bench import store_workloads as w
from bench.report import Report, Result
from mussikon.adapters.store.cosmos.account import CosmosAccount, open_account
from mussikon.adapters.store.cosmos.documents import CosmosDocumentStore
from mussikon.adapters.store.cosmos.events import CosmosEventStore
from mussikon.application.repository import Repository
from mussikon.application.snapshots import Snapshots
from mussikon.config import CosmosConnectionString
from mussikon.domain.contract import Contract
from mussikon.domain.events import DomainEvent
from mussikon.ports.event_store import NO_STREAM

OURS = "ours"
SPEC = "spec"

LOCAL_KEY = ("C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67"
             "XIw/Jw==")
"""Any base64 key opens the local server: the Cosmos DB emulator's well-known one."""
LOCAL_SERVER = Path(__file__).resolve().parent.parent / "tests" / "cosmos_server"

SNAPSHOT_EVERY = 50
"""As the service runs by default (`MUSSIKON_SNAPSHOT_EVERY`)."""
SHORT, LONG = 100, 10_000
"""The two aggregates' lengths whose loads are compared."""
LOAD_CEILING = 1.5
"""The most a load of the long aggregate may cost over one of the short (requests, time)."""

Progress = Callable[[str], None]


class BenchUnavailable(Exception):
    """The Cosmos DB server cannot be reached or started."""


@dataclass(frozen=True, slots=True)
class Options:
    """What to run: sizes, rounds, which account (a connection string; the local test server
    when empty), and the two aggregates' lengths."""

    events: int = 1000
    rounds: int = 10
    url: str = ""
    short: int = SHORT
    long: int = LONG


class CountingTransport(AioHttpTransport):  # type: ignore[misc]  # (lazily exported: Any)
    """The SDK's aiohttp transport, counting the requests it sends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests = 0

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return await super().send(request, **kwargs)


@dataclass
class Figure:
    """What a contender did in one workload, summed over the rounds."""

    operations: int = 0
    events: int = 0
    requests: int = 0
    seconds: float = 0.0

    def add(self, operations: int, events: int, requests: int, seconds: float) -> None:
        self.operations += operations
        self.events += events
        self.requests += requests
        self.seconds += seconds


class Spec:
    """The specification's EventStore, on the same SDK: a create per event, a query per load."""

    def __init__(self, client: CosmosClient, container: ContainerProxy, ours: CosmosEventStore
                 ) -> None:
        self.client, self.container = client, container
        self.ours = ours  # for the item shape and decoding only: the same as the spec's

    async def save(self, stream_id: str, events: list[DomainEvent], expected: int) -> None:
        for version, event in enumerate(events, start=expected + 1):
            await self.container.create_item(self.ours.item(stream_id, version, event))

    async def prepare(self, stream_id: str, events: list[DomainEvent], expected: int) -> None:
        """The same items, written in a batch (preparation is not timed)."""
        items = [self.ours.item(stream_id, v, e) for v, e in enumerate(events, start=expected + 1)]
        await self.container.execute_item_batch([("create", (i,)) for i in items],
                                                 partition_key=stream_id)

    async def load(self, contract_id: str) -> Contract:
        query = "SELECT * FROM c WHERE c.aggregateId = @id ORDER BY c.version"
        pages = self.container.query_items(
            query, parameters=[{"name": "@id", "value": Contract.stream_id_for(contract_id)}])
        return Contract.rebuild(contract_id, [self.ours.decode(i).event async for i in pages])


class Contenders:
    """Both contenders on one account, each with its client, transport and database."""

    def __init__(self, endpoint: str, key: str, verify_tls: bool) -> None:
        self.endpoint, self.key, self.verify_tls = endpoint, key, verify_tls
        tag = uuid.uuid4().hex[:8]
        self.databases = {OURS: f"bench-{tag}-ours", SPEC: f"bench-{tag}-spec"}
        self.transports = {OURS: CountingTransport(), SPEC: CountingTransport()}
        self.account: CosmosAccount | None = None
        self.spec: Spec | None = None
        self.streams: dict[tuple[str, str], tuple[str, int]] = {}

    async def open(self) -> Contenders:
        self.account = await open_account(
            self.endpoint, self.key, database=self.databases[OURS], events_container="Events",
            documents_container="Documents", verify_tls=self.verify_tls,
            transport=self.transports[OURS])
        self.store = CosmosEventStore(self.account)
        self.repository = Repository(self.store, snapshots=Snapshots(
            CosmosDocumentStore(self.account), SNAPSHOT_EVERY))
        client = CosmosClient(self.endpoint, credential=self.key,
                              connection_verify=self.verify_tls, transport=self.transports[SPEC])
        database = await client.create_database_if_not_exists(self.databases[SPEC])
        container = await database.create_container_if_not_exists(
            "Events", partition_key=PartitionKey("/partitionKey"))
        self.spec = Spec(client, container, self.store)
        return self

    async def close(self) -> None:
        if self.account is not None:
            await self.account.client.delete_database(self.databases[OURS])
            await self.account.close()
        if self.spec is not None:
            await self.spec.client.delete_database(self.databases[SPEC])
            await self.spec.client.close()

    async def _timed(self, who: str, run: Callable[[], Any]) -> tuple[int, float]:
        """The requests `who` sent and the seconds it took to run `run`."""
        before = self.transports[who].requests
        start = time.perf_counter()
        await run()
        return self.transports[who].requests - before, time.perf_counter() - start

    async def append(self, who: str, size: int, appends: int) -> tuple[int, float]:
        """`appends` appends of `size` events: to new streams when `size` is 1, else to one
        stream (prepared with `size` events) at its version. Events made beforehand."""
        assert self.spec is not None
        if size == 1:
            made = [(s, list(e), NO_STREAM) for s, e in w.registrations(appends)]
        else:
            if (who, str(size)) not in self.streams:
                contract_id = w.new_id()
                first = w.contract_history(contract_id, size)
                stream = Contract.stream_id_for(contract_id)
                if who == OURS:
                    await self.store.append(stream, first, NO_STREAM)
                else:
                    await self.spec.prepare(stream, first, NO_STREAM)
                self.streams[who, str(size)] = (contract_id, size)
            contract_id, version = self.streams[who, str(size)]
            stream = Contract.stream_id_for(contract_id)
            made = [(stream, w.contract_history(contract_id, size, version + 1 + n * size),
                     version + n * size) for n in range(appends)]
            self.streams[who, str(size)] = (contract_id, version + appends * size)
        spec = self.spec

        async def run() -> None:
            for stream_id, events, expected in made:
                if who == OURS:
                    await self.store.append(stream_id, events, expected)
                else:
                    await spec.save(stream_id, events, expected)
        return await self._timed(who, run)

    async def prepare_aggregate(self, who: str, length: int) -> str:
        """A contract of `length` events, written 100 at a time, with (ours) the snapshot the
        repository would have taken at its last multiple of `SNAPSHOT_EVERY`; its id."""
        assert self.spec is not None
        contract_id = w.new_id()
        stream = Contract.stream_id_for(contract_id)
        for start in range(1, length + 1, w.BATCH):
            events = w.contract_history(contract_id, min(w.BATCH, length - start + 1), start)
            if who == OURS:
                await self.store.append(stream, events, start - 1)
            else:
                await self.spec.prepare(stream, events, start - 1)
        if who == OURS and self.repository.snapshots is not None:
            at = length - length % SNAPSHOT_EVERY
            contract = Contract.rebuild(contract_id, w.contract_history(contract_id, at))
            await self.repository.snapshots.save(contract)
        return contract_id

    async def load(self, who: str, contract_id: str, length: int, loads: int
                   ) -> tuple[int, float]:
        """Load the contract `loads` times."""
        assert self.spec is not None
        spec = self.spec

        async def run() -> None:
            for _ in range(loads):
                contract = (await self.repository.load(Contract, contract_id) if who == OURS
                            else await spec.load(contract_id))
                if contract.version != length:
                    raise AssertionError(f"{who} loaded {contract.version} events, not {length}")
        return await self._timed(who, run)


APPEND_SIZES = (1, 10, 100)


async def measure(endpoint: str, key: str, verify_tls: bool, options: Options,
                  progress: Progress | None = None) -> Report:
    rounds = options.rounds
    names = [OURS, SPEC]
    appends: dict[int, dict[str, Figure]] = {size: {n: Figure() for n in names}
                                             for size in APPEND_SIZES}
    loads: dict[int, dict[str, Figure]] = {length: {n: Figure() for n in names}
                                           for length in (options.short, options.long)}
    contenders = await Contenders(endpoint, key, verify_tls).open()
    try:
        for size in APPEND_SIZES:
            # `events` events per workload in all (a quarter for single appends, slower)
            count = max(2, (options.events // 4 if size == 1 else options.events // size)
                        // rounds)
            await contenders.append(OURS, size, 1)  # untimed: connections and caches warm
            await contenders.append(SPEC, size, 1)
            for round_no in range(rounds):
                for who in names[round_no % 2:] + names[:round_no % 2]:
                    requests, seconds = await contenders.append(who, size, count)
                    appends[size][who].add(count, count * size, requests, seconds)
            if progress is not None:
                progress(f"append-{size}: " + ", ".join(
                    f"{who} {f.events / f.seconds:,.0f} events/s, "
                    f"{f.requests / f.operations:.2f} requests/append"
                    for who, f in appends[size].items()))
        count = max(1, options.events // 200 // rounds)
        # Both aggregates written before either is loaded: the local server scans the whole
        # container for any query, so both loads then query a container of the same size;
        # and in each round both lengths are loaded, one right after the other.
        lengths = [options.short, options.long]
        ids = {(who, length): await contenders.prepare_aggregate(who, length)
               for length in lengths for who in names}
        for (who, length), contract_id in ids.items():
            await contenders.load(who, contract_id, length, 1)  # untimed
        for round_no in range(rounds):
            for who in names[round_no % 2:] + names[:round_no % 2]:
                for length in lengths[round_no % 2:] + lengths[:round_no % 2]:
                    requests, seconds = await contenders.load(who, ids[who, length], length,
                                                              count)
                    loads[length][who].add(count, count * length, requests, seconds)
        if progress is not None:
            for length in lengths:
                progress(f"load-{length}: " + ", ".join(
                    f"{who} {1000 * f.seconds / f.operations:,.1f} ms/load, "
                    f"{f.requests / f.operations:.2f} requests/load"
                    for who, f in loads[length].items()))
    finally:
        await contenders.close()
    return report(appends, loads, options)


def report(appends: dict[int, dict[str, Figure]], loads: dict[int, dict[str, Figure]],
           options: Options) -> Report:
    results: list[Result] = []
    for size, figures in appends.items():
        ours, spec = figures[OURS], figures[SPEC]
        results.append(Result(f"append-{size}", w.UNIT, ours.events / ours.seconds,
                              {SPEC: spec.events / spec.seconds}))
        results.append(Result(f"append-{size}", "requests/append",
                              ours.requests / ours.operations,
                              {SPEC: spec.requests / spec.operations}))
    for length, figures in loads.items():
        ours, spec = figures[OURS], figures[SPEC]
        results.append(Result(f"load-{length}", "ms/load", 1000 * ours.seconds / ours.operations,
                              {SPEC: 1000 * spec.seconds / spec.operations}))
        results.append(Result(f"load-{length}", "requests/load", ours.requests / ours.operations,
                              {SPEC: spec.requests / spec.operations}))
    short, long = loads[options.short], loads[options.long]

    def growth(who: str, what: Callable[[Figure], float]) -> float:
        return what(long[who]) / what(short[who])

    def per_load_time(f: Figure) -> float:
        return f.seconds / f.operations

    def per_load_requests(f: Figure) -> float:
        return f.requests / f.operations

    pair = f"load-{options.long}÷{options.short}"
    for label, what in (("requests", per_load_requests), ("time", per_load_time)):
        results.append(Result(f"{pair}-{label}", "×", growth(OURS, what),
                              {SPEC: growth(SPEC, what)}, ceiling=LOAD_CEILING))
    settings = {"events": str(options.events), "rounds": str(options.rounds),
                "snapshot_every": str(SNAPSHOT_EVERY),
                "server": "local test server (tests/cosmos_server)" if not options.url
                else CosmosConnectionString.parse(options.url).endpoint}
    return Report("store-cosmos", results, settings)


@contextmanager
def local_server() -> Iterator[str]:
    """The local test server (tests/cosmos_server, `make cosmos-server`) on a free port."""
    node = shutil.which("node")
    if node is None or not (LOCAL_SERVER / "node_modules" / "@vercel").is_dir():
        raise BenchUnavailable("the local Cosmos DB server is not installed (make cosmos-server;"
                               " needs npm), and no --cosmos-url was given")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([node, str(LOCAL_SERVER / "server.js"), str(port)],
                               cwd=LOCAL_SERVER, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchUnavailable("the local Cosmos DB server did not start")
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


def run(options: Options, progress: Progress | None = None) -> Report:
    """Measure, from synchronous code, on the account of `options.url` or on the local test
    server, started for the run."""
    if options.url:
        connection = CosmosConnectionString.parse(options.url)
        verify = os.environ.get("MUSSIKON_COSMOS_VERIFY_TLS", "true").lower() != "false"
        return asyncio.run(measure(connection.endpoint, connection.key, verify, options,
                                   progress))
    with local_server() as endpoint:
        return asyncio.run(measure(endpoint, LOCAL_KEY, False, options, progress))
