"""`mussikon bench …`: benchmarks that put our figures beside the peers', measured in one run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from mussikon.benchmarks.report import Report
from mussikon.config import mask_url

bench_app = typer.Typer(
    help="Benchmarks: ours beside the libraries a user would otherwise pick, and the raw "
         "ceiling, measured in the same run. --json prints one object of the same shape for "
         "every benchmark.",
    no_args_is_help=True,
)


class StoreBackend(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


class Synchronous(StrEnum):
    FULL = "FULL"
    NORMAL = "NORMAL"


class BenchUnavailable(Exception):
    """The benchmark cannot run here (not implemented, a peer or a service missing)."""


StoreRunner = Callable[[int, int, str, str, Callable[[str], None] | None], Report]
"""(events, rounds, synchronous, url, progress) -> Report."""


def _sqlite(events: int, rounds: int, synchronous: str, url: str,
            progress: Callable[[str], None] | None) -> Report:
    from mussikon.benchmarks import store_sqlite

    return store_sqlite.run(store_sqlite.Options(events=events, synchronous=synchronous,
                                                 rounds=rounds), progress)


def _postgres(events: int, rounds: int, synchronous: str, url: str,
              progress: Callable[[str], None] | None) -> Report:
    import asyncpg

    from mussikon.benchmarks import store_postgres

    try:
        return store_postgres.run(store_postgres.Options(events=events, rounds=rounds, url=url),
                                  progress)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchUnavailable(f"PostgreSQL at {mask_url(url)}: {type(exc).__name__}: {exc}"
                               ) from None


STORE_BACKENDS: dict[StoreBackend, StoreRunner] = {
    StoreBackend.SQLITE: _sqlite,
    StoreBackend.POSTGRES: _postgres,
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
) -> None:
    """Event store throughput beside the raw driver and pyeventsourcing, in events/s.

    SQLite: single-event appends to new streams, get-and-append to existing streams,
    appends of 100 events, loading a 1,000-event stream. PostgreSQL: appends by one writer
    and by 16, appends of 100 events, loading a 10,000-event stream, reading the global
    order, and a subscriber's lag behind 16 writers (ms).
    """
    err = Console(stderr=True)
    progress = None if as_json else (lambda line: err.print(line, style="dim"))
    try:
        report = STORE_BACKENDS[backend](events, rounds, synchronous.value, url, progress)
    except BenchUnavailable as exc:
        err.print(f"error: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(report.dumps() + "\n")
    else:
        report.render()


if __name__ == "__main__":
    bench_app()
