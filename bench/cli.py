"""`mussikon bench …`: benchmarks that put our figures beside the peers', measured in one run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from bench.api import Options as ApiOptions
from bench.bus import Options as BusOptions
from bench.bus_servicebus import Options as ServiceBusOptions
from bench.report import Report
from mussikon.config import INBOX_RETENTION_MINIMUM, mask_url

bench_app = typer.Typer(
    help="Benchmarks: ours beside the libraries a user would otherwise pick, and the raw "
         "ceiling, measured in the same run. --json prints one object of the same shape for "
         "every benchmark.",
    no_args_is_help=True,
)


class StoreBackend(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"
    COSMOS = "cosmos"


class Synchronous(StrEnum):
    FULL = "FULL"
    NORMAL = "NORMAL"


class BenchUnavailable(Exception):
    """The benchmark cannot run here (not implemented, a peer or a service missing)."""


StoreRunner = Callable[[int, int, str, str, Callable[[str], None] | None], Report]
"""(events, rounds, synchronous, url, progress) -> Report."""


def _sqlite(events: int, rounds: int, synchronous: str, url: str,
            progress: Callable[[str], None] | None) -> Report:
    from bench import store_sqlite

    return store_sqlite.run(store_sqlite.Options(events=events, synchronous=synchronous,
                                                 rounds=rounds), progress)


def _postgres(events: int, rounds: int, synchronous: str, url: str,
              progress: Callable[[str], None] | None) -> Report:
    import asyncpg

    from bench import store_postgres

    try:
        return store_postgres.run(store_postgres.Options(events=events, rounds=rounds, url=url),
                                  progress)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchUnavailable(f"PostgreSQL at {mask_url(url)}: {type(exc).__name__}: {exc}"
                               ) from None


def _cosmos(events: int, rounds: int, synchronous: str, url: str,
            progress: Callable[[str], None] | None) -> Report:
    from azure.core.exceptions import AzureError

    from bench import store_cosmos
    from mussikon.config import CosmosConnectionString

    try:
        if url:
            CosmosConnectionString.parse(url)
        return store_cosmos.run(store_cosmos.Options(events=events, rounds=rounds, url=url),
                                progress)
    except ValueError as exc:
        raise BenchUnavailable(f"--cosmos-url: {exc}") from None
    except store_cosmos.BenchUnavailable as exc:
        raise BenchUnavailable(str(exc)) from None
    except (OSError, AzureError) as exc:
        where = "the local Cosmos DB server" if not url else mask_url(url)
        raise BenchUnavailable(f"Cosmos DB at {where}: {type(exc).__name__}") from None


STORE_BACKENDS: dict[StoreBackend, StoreRunner] = {
    StoreBackend.SQLITE: _sqlite,
    StoreBackend.POSTGRES: _postgres,
    StoreBackend.COSMOS: _cosmos,
}
"""One runner per backend; a new backend adds its runner here."""


@bench_app.callback()
def _bench() -> None:
    """Benchmarks (keeps `store` a named subcommand)."""


@bench_app.command("store")
def store(
    backend: Annotated[StoreBackend, typer.Option(help="Which event store adapter.")] =
        StoreBackend.SQLITE,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    synchronous: Annotated[Synchronous, typer.Option(
        help="SQLite durability, the same for ours and the peers.")] = Synchronous.FULL,
    events: Annotated[int, typer.Option(
        min=10, help="Workload size: events per single-event workload (bench/README.md).")] = 1000,
    rounds: Annotated[int, typer.Option(
        min=1, help="Rounds each workload is cut into; contenders take turns in each.")] = 10,
    url: Annotated[str, typer.Option(
        envvar="MUSSIKON_BENCH_POSTGRES_URL",
        help="PostgreSQL database for --backend postgres (schemas made and dropped in it).")] =
        "postgresql://postgres@127.0.0.1:5432/test",
    cosmos_url: Annotated[str, typer.Option(
        envvar="MUSSIKON_BENCH_COSMOS_URL", show_default=False,
        help="Cosmos DB connection string for --backend cosmos (two databases made and "
             "deleted in it) [default: the local test server, tests/cosmos_server, started "
             "for the run].")] = "",
) -> None:
    """Event store throughput beside the raw driver and pyeventsourcing, in events/s.

    SQLite: single-event appends to new streams, get-and-append to existing streams,
    appends of 100 events, loading a 1,000-event stream. PostgreSQL: appends by one writer
    and by 16, appends of 100 events, loading a 10,000-event stream, reading the global
    order, and a subscriber's lag behind 16 writers (ms). Cosmos DB: beside the
    specification's way (a create per event, a query per load), requests per append of 1, 10
    and 100 events and per load of a 100- and a 10,000-event aggregate, and events/s.
    """
    err = Console(stderr=True)
    progress = None if as_json else (lambda line: err.print(line, style="dim"))
    try:
        report = STORE_BACKENDS[backend](events, rounds, synchronous.value,
                                         cosmos_url if backend == StoreBackend.COSMOS else url,
                                         progress)
    except BenchUnavailable as exc:
        err.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.dumps() + "\n")
    else:
        report.render()


_API = ApiOptions()
"""`bench api`'s defaults."""


@bench_app.command("api")
def api(
    backend: Annotated[StoreBackend, typer.Option(
        help="The database of both servers: our event store, the peer's table.")] =
        StoreBackend.SQLITE,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    requests: Annotated[int, typer.Option(
        min=10, help="Timed requests per contender and round.")] = _API.requests,
    warmup: Annotated[int, typer.Option(
        min=0, help="Untimed requests before them, per contender and round.")] = _API.warmup,
    clients: Annotated[int, typer.Option(
        min=1, help="Concurrent clients (keep-alive connections) of the load generator.")] =
        _API.clients,
    rounds: Annotated[int, typer.Option(
        min=1, help="Rounds; the contenders take turns, on fresh servers, in each.")] =
        _API.rounds,
    synchronous: Annotated[Synchronous, typer.Option(
        help="SQLite durability, the same for ours and the peer.")] = Synchronous.FULL,
    url: Annotated[str, typer.Option(
        envvar="MUSSIKON_BENCH_POSTGRES_URL",
        help="PostgreSQL database for --backend postgres (schemas made and dropped in it).")] =
        _API.url,
    peers: Annotated[bool, typer.Option(help="Measure the peer too.")] = True,
) -> None:
    """POST /musicians over HTTP with many clients (a load generator in another process):
    requests/s, p50 and p99 latency of `mussikon serve` beside the same endpoint written with
    FastAPI and SQLAlchemy's async engine writing one row, on the same database."""
    from bench import api as api_bench

    err = Console(stderr=True)
    progress = None if as_json else (lambda line: err.print(line, style="dim"))
    try:
        report = api_bench.run(ApiOptions(
            backend=backend.value, url=url, requests=requests, warmup=warmup, clients=clients,
            rounds=rounds, synchronous=synchronous.value, peers=peers), progress)
    except (OSError, api_bench.BenchFailed) as exc:
        err.print(f"error: {mask_url(str(exc))}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.dumps() + "\n")
    else:
        report.render()


_BUS = BusOptions()
"""`bench bus`'s defaults: those of the benchmark's own options."""
_SERVICEBUS = ServiceBusOptions()
"""`bench bus --broker servicebus`'s defaults."""


class Broker(StrEnum):
    RABBITMQ = "rabbitmq"
    SERVICEBUS = "servicebus"


class QueueType(StrEnum):
    QUORUM = "quorum"
    CLASSIC = "classic"


_BUS_QUEUE_TYPE = QueueType(_BUS.queue_type)
_BUS_SYNCHRONOUS = Synchronous(_BUS.synchronous)


@bench_app.command("bus")
def bus(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    broker: Annotated[Broker, typer.Option(
        help="RabbitMQ, or Service Bus through the official SDK against the local peer "
             "(tests/servicebus_peer; transport-path only).")] = Broker.RABBITMQ,
    url: Annotated[str, typer.Option(
        envvar="MUSSIKON_BROKER_URL", help="RabbitMQ (queues made and deleted in it).")] =
        _BUS.url,
    messages: Annotated[int | None, typer.Option(
        min=100, show_default=False,
        help=f"Messages per throughput workload and round [default: {_BUS.messages:,}; "
             f"Service Bus: {_SERVICEBUS.messages:,}]")] = None,
    latency_messages: Annotated[int, typer.Option(
        min=100, help="Messages sent at a steady rate for the latency workloads.")] =
        _BUS.latency_messages,
    latency_rate: Annotated[float, typer.Option(
        min=1, help="Messages/s of the latency workloads.")] = _BUS.latency_rate,
    rss_messages: Annotated[int, typer.Option(
        min=100, help="Messages through one worker for worker-rss-growth and inbox-size.")] =
        _BUS.rss_messages,
    rss_baseline: Annotated[int, typer.Option(
        min=10, help="Messages after which the worker's baseline sizes are taken.")] =
        _BUS.rss_baseline,
    rss_rate: Annotated[float, typer.Option(
        min=0, help="Messages/s sent for worker-rss-growth and inbox-size (0: unpaced).")] =
        _BUS.rss_rate,
    inbox_retention: Annotated[float, typer.Option(
        min=INBOX_RETENTION_MINIMUM.total_seconds(),
        help="Seconds the worker's inbox keeps an entry (worker-rss-growth, inbox-size), as "
             "MUSSIKON_INBOX_RETENTION.")] = _BUS.inbox_retention,
    queue_type: Annotated[QueueType, typer.Option(
        help="The queue type, the same for ours and the peers.")] = _BUS_QUEUE_TYPE,
    store: Annotated[str, typer.Option(
        help="Where the outbox and inbox live: sqlite (a scratch file) or a postgresql:// URL "
             "(a scratch schema).")] = _BUS.store,
    synchronous: Annotated[Synchronous, typer.Option(
        help="SQLite durability for --store sqlite.")] = _BUS_SYNCHRONOUS,
    appenders: Annotated[int, typer.Option(
        min=1, help="Requests the API process serves at once (full path, latency).")] =
        _BUS.appenders,
    prefetch: Annotated[int, typer.Option(
        min=1, help="The worker's prefetch (the peers': 200).")] = _BUS.prefetch,
    concurrency: Annotated[int, typer.Option(
        min=1, help="Handlers the worker runs at once.")] = _BUS.concurrency,
    rounds: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help=f"Rounds; contenders take turns in each [default: {_BUS.rounds}; Service Bus: "
             f"{_SERVICEBUS.rounds}]")] = None,
    peers: Annotated[bool, typer.Option(help="Measure the peers too.")] = True,
    workloads: Annotated[str | None, typer.Option(
        show_default=False,
        help="Comma-separated: transport-path, full-path, latency-p50, worker-rss-growth "
             "(with inbox-size), foreign-path [default: "
             f"{','.join(_BUS.workloads)}; Service Bus: transport-path, the only one]")] = None,
) -> None:
    """RabbitMQ end to end (store, relay, broker, worker, inbox) beside raw aiormq, raw
    aio-pika and FastStream, in messages/s, latency (ms), and the growth of the worker's
    memory and of its inbox with the retention pruning; and events the .NET service
    publishes, through the whole worker (foreign-path). With --broker servicebus: the
    Service Bus transport path beside the raw SDK loop, on the local peer."""
    from aiormq.exceptions import AMQPError

    from bench import bus as bus_bench

    err = Console(stderr=True)
    if broker is Broker.SERVICEBUS:
        _bus_servicebus(err, as_json, workloads, ServiceBusOptions(
            messages=messages or _SERVICEBUS.messages, rounds=rounds or _SERVICEBUS.rounds,
            store=store, synchronous=synchronous.value, prefetch=prefetch,
            concurrency=concurrency, peers=peers))
        return
    chosen = tuple(w.strip() for w in (workloads or ",".join(_BUS.workloads)).split(",")
                   if w.strip())
    known = {bus_bench.TRANSPORT_PATH, bus_bench.FULL_PATH, bus_bench.LATENCY_P50,
             bus_bench.LATENCY_P99, bus_bench.RSS_GROWTH, bus_bench.INBOX_SIZE,
             bus_bench.FOREIGN_PATH}
    unknown = sorted(set(chosen) - known)
    if unknown or not chosen:
        err.print(f"error: unknown workload(s) {', '.join(unknown) or '(none given)'}; "
                  f"choose from {', '.join(sorted(known))}", style="red", markup=False)
        raise typer.Exit(2)
    _check_store(err, store)
    options = bus_bench.Options(
        url=url, messages=messages or _BUS.messages, latency_messages=latency_messages,
        latency_rate=latency_rate, rss_messages=rss_messages,
        rss_baseline=min(rss_baseline, rss_messages), rss_rate=rss_rate,
        inbox_retention=inbox_retention,
        queue_type=queue_type.value, store=store,
        synchronous=synchronous.value, appenders=appenders, prefetch=prefetch,
        concurrency=concurrency, rounds=rounds or _BUS.rounds, peers=peers, workloads=chosen)
    progress = None if as_json else (lambda line: err.print(line, style="dim"))
    try:
        report = bus_bench.run(options, progress)
    except (OSError, RuntimeError, AMQPError) as exc:
        err.print(f"error: RabbitMQ at {mask_url(url)}: {type(exc).__name__}: "
                  f"{mask_url(str(exc))}", style="red", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.dumps() + "\n")
    else:
        report.render()


def _check_store(err: Console, store: str) -> None:
    if store != "sqlite" and not store.startswith(("postgresql://", "postgres://")):
        err.print(f"error: --store must be sqlite or a postgresql:// URL, not {mask_url(store)}",
                  style="red", markup=False)
        raise typer.Exit(2)


def _bus_servicebus(err: Console, as_json: bool, workloads: str | None,
                    options: ServiceBusOptions) -> None:
    """`bench bus --broker servicebus`: the transport path on the local Service Bus peer."""
    from bench import bus_servicebus

    chosen = tuple(w.strip() for w in (workloads or ",".join(options.workloads)).split(",")
                   if w.strip())
    unknown = sorted(set(chosen) - set(bus_servicebus.WORKLOADS))
    if unknown or not chosen:
        err.print(f"error: workload(s) {', '.join(unknown) or '(none given)'} not measured on "
                  f"Service Bus; choose from {', '.join(bus_servicebus.WORKLOADS)}",
                  style="red", markup=False)
        raise typer.Exit(2)
    _check_store(err, options.store)
    progress = None if as_json else (lambda line: err.print(line, style="dim"))
    try:
        report = bus_servicebus.run(options, progress)
    except (OSError, RuntimeError) as exc:
        err.print(f"error: Service Bus benchmark: {type(exc).__name__}: {mask_url(str(exc))}",
                  style="red", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.dumps() + "\n")
    else:
        report.render()


if __name__ == "__main__":
    bench_app()
