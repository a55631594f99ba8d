"""The `mussikon` command line. Every subcommand reads the same Settings and fails with a
one-line error (no traceback) on bad input or an unreachable service."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from mussikon.bootstrap import App, ConfigurationError, open_app
from mussikon.clock import Clock, OffsetClock
from mussikon.config import Settings, mask_url
from mussikon.domain.errors import DomainError
from mussikon.sagas.cli import sagas_app
from mussikon.store import StoreError

T = TypeVar("T")

app = typer.Typer(help="MussikOn: the event-driven backend of a marketplace for musicians.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
events_app = typer.Typer(help="Inspect the event store.", no_args_is_help=True)
notifications_app = typer.Typer(help="Notifications sent.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models and their checkpoints.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue, for operators.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(notifications_app, name="notifications")
app.add_typer(projections_app, name="projections")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.add_typer(sagas_app, name="sagas")

console = Console()


class CommandFailed(Exception):
    """A one-line error for the user."""


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; turn known failures into one line on stderr and exit code 1."""
    try:
        return asyncio.run(_call(coro_fn))
    except (CommandFailed, DomainError, StoreError, ConfigurationError, ValueError,
            KeyError, OSError, TimeoutError, ImportError) as exc:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, KeyError):
            message = str(exc.args[0]) if exc.args else message
        if isinstance(exc, TimeoutError):
            message = "timed out waiting for the handlers to finish"
        Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False)
        raise typer.Exit(1) from None


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


@asynccontextmanager
async def opened(settings: Settings | None = None,
                 clock: Clock | None = None) -> AsyncIterator[App]:
    """The application for one command, closed afterwards."""
    settings = settings or Settings()
    try:
        application = await open_app(settings, clock)
    except OSError as exc:
        raise CommandFailed(f"cannot reach the store {mask_url(settings.store_url)}: "
                            f"{exc.strerror or exc}") from None
    try:
        yield application
    finally:
        await application.close()


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandFailed(f"--since {text!r} is not a date (use 2026-11-27 or "
                            "2026-11-27T10:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _events_table(records: list[Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("position", "stream", "version", "type", "occurred at", "id"):
        table.add_column(column)
    for r in records:
        table.add_row(str(r.position), r.stream_id, str(r.version), r.event.event_type,
                      r.event.occurred_at.isoformat(), str(r.event.id))
    return table


@app.command()
def demo(fresh: Annotated[bool, typer.Option("--fresh", help="Start from an empty database "
                                                            "(SQLite file only).")] = False,
         quiet: Annotated[bool, typer.Option(help="Only the final verdict.")] = False) -> None:
    """Run the specification's exercise end to end and check every outcome."""
    from mussikon.demo import DemoFailed, run_demo

    settings = Settings()
    if fresh:
        _remove_sqlite_file(settings.store_url)

    async def go() -> None:
        # A clock the demo moves forward, to show payment retries and deadlines in seconds.
        async with opened(settings, OffsetClock()) as application:
            try:
                await run_demo(application, Console(quiet=True) if quiet else console)
            except DemoFailed as exc:
                raise CommandFailed(f"demo failed: {exc}") from None
        if quiet:
            console.print("demo: all expected outcomes happened")

    run(go)


def _remove_sqlite_file(url: str) -> None:
    if not url.startswith("sqlite:"):
        raise CommandFailed(f"--fresh only resets a SQLite store, not {mask_url(url)}")
    path = url.removeprefix("sqlite://").removeprefix("/") or "mussikon.db"
    if url.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


@events_app.command("stream")
def events_stream(stream_id: str) -> None:
    """The events of one stream (e.g. musician-<id>, gig-<id>, contract-<id>)."""
    async def go() -> None:
        async with opened() as application:
            records = await application.store.read_stream(stream_id)
            if not records:
                raise CommandFailed(f"no stream {stream_id!r}")
            console.print(_events_table(records, f"stream {stream_id}"))
            for r in records:
                console.print_json(application.codec.encode(r.event).decode())

    run(go)


@events_app.command("by-type")
def events_by_type(event_type: str,
                   since: Annotated[str, typer.Option(help="ISO date or time (UTC)")] = "1970-01-01"
                   ) -> None:
    """Events of one type since a date (the specification's GetEventsByTypeAsync)."""
    async def go() -> None:
        async with opened() as application:
            if event_type not in application.codec.event_types:
                raise CommandFailed(f"unknown event type {event_type!r}; known: "
                                    f"{', '.join(application.codec.event_types)}")
            records = await application.store.read_by_type(event_type, _parse_time(since))
            console.print(_events_table(records, f"{event_type} since {since}"))

    run(go)


@events_app.command("tail")
def events_tail(limit: Annotated[int, typer.Option(min=1)] = 20,
                follow: Annotated[bool, typer.Option(help="Keep printing new events.")] = False,
                ) -> None:
    """The newest events of the global order."""
    async def go() -> None:
        async with opened() as application:
            head = await application.store.head_position()
            position = max(head - limit + 1, 1)
            while True:
                records = await application.store.read_all(position, 1000)
                if records:
                    console.print(_events_table(records, "global order"))
                    position = records[-1].position + 1
                if not follow:
                    return
                await asyncio.sleep(0.5)

    run(go)


@notifications_app.command("list")
def notifications_list(limit: Annotated[int, typer.Option(min=1)] = 100) -> None:
    """The notifications sent: to whom, which kind, about what."""
    async def go() -> None:
        async with opened() as application:
            sent = await application.notifier.sent(limit)
            table = Table(title=f"{len(sent)} notification(s)")
            for column in ("sent at", "kind", "to", "subject", "about"):
                table.add_column(column)
            for s in sent:
                n = s.notification
                table.add_row(s.sent_at.strftime("%Y-%m-%d %H:%M:%S"), n.kind,
                              f"{n.recipient_name} <{n.recipient}>", n.subject, n.about)
            console.print(table)

    run(go)


@projections_app.command("status")
def projections_status() -> None:
    """Position and lag of each read model."""
    async def go() -> None:
        async with opened() as application:
            table = Table(title="projections")
            for column in ("name", "position", "head", "lag"):
                table.add_column(column)
            for s in await application.projections.status():
                table.add_row(s.name, str(s.position), str(s.head), str(s.lag))
            console.print(table)

    run(go)


@projections_app.command("rebuild")
def projections_rebuild(name: str) -> None:
    """Rebuild one read model from position 0."""
    from rich.progress import Progress

    async def go() -> None:
        async with opened() as application:
            if name not in application.projections.projections:
                raise CommandFailed(f"no projection {name!r}; known: "
                                    f"{', '.join(application.projections.projections)}")
            head = await application.store.head_position()
            with Progress(console=console) as progress:
                task = progress.add_task(f"rebuilding {name}", total=max(head, 1))
                position = await application.projections.rebuild(
                    name, lambda done, _: progress.update(task, completed=done))
            console.print(f"{name} rebuilt up to position {position}")

    run(go)


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the store's schema (also done on first use)."""
    async def go() -> None:
        async with opened() as application:
            console.print(f"schema of {mask_url(application.settings.store_url)} is up to date")

    run(go)


@dlq_app.command("list")
def dlq_list() -> None:
    """The dead-lettered messages, with why."""
    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            letters = await application.transport.dead_letters()
            table = Table(title=f"{len(letters)} dead letter(s)")
            for column in ("id", "subscription", "event type", "attempts", "exception", "reason"):
                table.add_column(column)
            for d in letters:
                table.add_row(d.id, d.subscription, d.event_type, str(d.attempts), d.exception,
                              d.reason)
            console.print(table)

    run(go)


@dlq_app.command("show")
def dlq_show(letter_id: str) -> None:
    """One dead letter, with its body."""
    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            for d in await application.transport.dead_letters():
                if d.id == letter_id:
                    console.print(d)
                    if d.body:
                        console.print_json(d.body)
                    return
            raise CommandFailed(f"no dead letter {letter_id!r}")

    run(go)


@dlq_app.command("replay")
def dlq_replay(letter_id: Annotated[str, typer.Argument()] = "",
               all_: Annotated[bool, typer.Option("--all", help="Replay every one.")] = False,
               ) -> None:
    """Deliver dead letters again; those handled leave the queue (on RabbitMQ: send them back
    to their queues, for the workers)."""
    if not letter_id and not all_:
        raise typer.BadParameter("give a dead letter id or --all")

    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            ids = [d.id for d in await application.transport.dead_letters()] if all_ \
                else [letter_id]
            for one in ids:
                ok = await application.transport.replay(one)
                if not application.transport.replays_in_place:
                    console.print(f"{one}: sent back to its queue, for a worker to handle "
                                  "(it returns here if it fails again)")
                else:
                    console.print(f"{one}: {'handled' if ok else 'failed again'}")

    run(go)


@dlq_app.command("purge")
def dlq_purge() -> None:
    """Drop every dead letter."""
    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            console.print(f"purged {await application.transport.purge_dead_letters()}")

    run(go)


@app.command()
def worker() -> None:
    """Run the handlers and read models until SIGTERM or Ctrl-C (finishing what is in flight)."""
    import signal

    async def go() -> None:
        async with opened() as application:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await application.start()
            console.print(f"worker running on {mask_url(application.settings.store_url)} and "
                          f"{mask_url(application.settings.broker_url)}", highlight=False)
            await stop.wait()
            console.print("stopping: finishing messages in flight")

    run(go)


def _mount_benchmarks() -> None:
    try:
        from mussikon.benchmarks.cli import bench_app
    except ImportError:
        return
    app.add_typer(bench_app, name="bench")


_mount_benchmarks()


def main() -> None:
    """Console entry point."""
    logging.basicConfig(level=os.environ.get("MUSSIKON_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
