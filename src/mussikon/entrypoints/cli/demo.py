"""`mussikon demo`: the specification's exercise, end to end, checked, on a store of its own.

The demo never writes into the store `MUSSIKON_STORE_URL` names. It runs on
`MUSSIKON_DEMO_STORE_URL`, or by default beside the configured store: the SQLite file
`<name>-demo.db` next to its file, the same PostgreSQL database under the schema
`<MUSSIKON_POSTGRES_SCHEMA>_demo`, the same Cosmos DB account under the database
`<MUSSIKON_COSMOS_DATABASE>-demo`, or memory when the store is memory. The demo marks its
store with a document, and refuses to write into, or wipe (`--fresh`), a store that holds
events it did not write. On RabbitMQ its exchanges and queues carry a prefix of their own
(`demo.`), on Service Bus its topic is `<MUSSIKON_SERVICEBUS_TOPIC>-demo`, and it sends no
email unless `--send-email` says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.bootstrap import App, open_feed, sqlite_path
from mussikon.config import (
    CosmosConnectionString,
    Settings,
    is_cosmos_connection_string,
    is_servicebus_connection_string,
    mask_url,
    split_brokers,
)
from mussikon.entrypoints.cli.common import CommandFailed, console, opened, run
from mussikon.entrypoints.cli.output import YesOption, confirm
from mussikon.entrypoints.demo import DemoFailed, run_demo, where_it_writes
from mussikon.ports.documents import Changes
from mussikon.ports.feed import START

DEMO_MARKER = ("demo", "store")
"""The document (collection, key) that marks a store as the demo's own."""

_POSTGRES = ("postgres", "postgresql")


def demo(fresh: Annotated[bool, typer.Option(
            "--fresh", help="Start from an empty demo store. Only the demo's own store is "
                            "wiped; asks first (or --yes).")] = False,
         yes: YesOption = False,
         send_email: Annotated[bool, typer.Option(
             "--send-email", help="Send the notifications through MUSSIKON_SMTP_URL (by "
                                  "default they are only recorded).")] = False,
         quiet: Annotated[bool, typer.Option(help="Only the final verdict.")] = False) -> None:
    """Run the specification's exercise end to end, on a store of its own, and check every
    outcome."""
    async def go() -> None:
        settings = demo_settings(Settings(), send_email=send_email)
        if fresh:
            await _wipe(settings, yes)
        # A clock the demo moves forward, to show payment retries and deadlines in seconds.
        async with opened(settings, OffsetClock()) as application:
            await _claim(application)
            try:
                await run_demo(application, Console(quiet=True) if quiet else console,
                               _program())
            except DemoFailed as exc:
                raise CommandFailed(f"demo failed: {exc}") from None
        if quiet:
            console.print(f"demo: all expected outcomes happened in {where_it_writes(settings)}",
                          highlight=False, markup=False)

    run(go)


def _program() -> str:
    """How to call `mussikon` again from here: its name when that finds this program on the
    PATH, else the path it was called by (`make demo` calls `.venv/bin/mussikon`)."""
    called = sys.argv[0]
    if os.path.basename(called) != "mussikon":
        return "mussikon"  # `python -m mussikon`
    found = shutil.which("mussikon")
    try:
        if found is not None and os.path.samefile(found, called):
            return "mussikon"
    except OSError:
        pass
    return called


def demo_settings(settings: Settings, *, send_email: bool = False) -> Settings:
    """The settings the demo runs on: its own store, its own RabbitMQ names (its events
    exchange included), its own Service Bus topic, and no SMTP server unless `send_email`."""
    if settings.demo_store_url:
        url = settings.demo_store_url
        if (urlsplit(url).scheme not in ("memory", "sqlite", *_POSTGRES)
                and not is_cosmos_connection_string(url)):
            raise CommandFailed(f"MUSSIKON_DEMO_STORE_URL {mask_url(url)!r}: use "
                                "sqlite:///PATH, postgresql://…, a Cosmos DB connection string "
                                "or memory://")
        if url.startswith("sqlite:") and sqlite_path(url) == sqlite_path(settings.store_url):
            raise CommandFailed("MUSSIKON_DEMO_STORE_URL names the store of MUSSIKON_STORE_URL: "
                                "the demo needs a store of its own")
    else:
        url = _beside(settings.store_url)
    changes: dict[str, Any] = {"store_url": url,
                               "postgres_schema": f"{settings.postgres_schema}_demo",
                               "cosmos_database": f"{settings.cosmos_database}-demo"}
    brokers = split_brokers(settings.broker_url)
    if any(urlsplit(broker).scheme in ("amqp", "amqps") for broker in brokers):
        changes["rabbitmq_prefix"] = f"{settings.rabbitmq_prefix}demo."
        changes["rabbitmq_events_exchange"] = ""  # never the one shared with other services
    if any(is_servicebus_connection_string(broker) for broker in brokers):
        changes["servicebus_topic"] = f"{settings.servicebus_topic}-demo"
    if not send_email:
        changes["smtp_url"] = ""
    return settings.model_copy(update=changes)


def _beside(store_url: str) -> str:
    """The demo's store next to the configured one (PostgreSQL: the same database, where the
    demo takes a schema of its own)."""
    scheme = urlsplit(store_url).scheme
    if scheme == "memory" or scheme in _POSTGRES or is_cosmos_connection_string(store_url):
        return store_url
    if scheme == "sqlite":
        directory, name = os.path.split(sqlite_path(store_url))
        stem, suffix = os.path.splitext(name)
        return "sqlite:///" + os.path.join(directory, f"{stem}-demo{suffix or '.db'}")
    raise CommandFailed(f"MUSSIKON_STORE_URL {mask_url(store_url)!r}: the demo runs beside a "
                        "sqlite:///, postgresql://, Cosmos DB or memory:// store; name the "
                        "demo's store with MUSSIKON_DEMO_STORE_URL")


async def _is_the_demos(application: App) -> bool:
    """True if the demo wrote this store, or nobody did."""
    if await application.documents.get(*DEMO_MARKER) is not None:
        return True
    return await open_feed(application.store, application.documents).caught_up(START)


def _foreign(settings: Settings) -> str:
    return (f"{where_it_writes(settings)} holds events the demo did not write: the demo only "
            "uses a store of its own (MUSSIKON_DEMO_STORE_URL)")


async def _claim(application: App) -> None:
    """Mark the store as the demo's, or refuse one that holds events the demo did not write."""
    if await application.documents.get(*DEMO_MARKER) is not None:
        return
    if not await _is_the_demos(application):
        raise CommandFailed(_foreign(application.settings))
    marker = Changes()
    marker.put(*DEMO_MARKER, {"written_by": "mussikon demo",
                              "since": datetime.now(UTC).isoformat()})
    await application.documents.commit(marker)


async def _wipe(settings: Settings, yes: bool) -> None:
    """Delete the demo's store after asking, if it is the demo's own."""
    scheme = urlsplit(settings.store_url).scheme
    if scheme == "memory":
        return
    async with opened(settings) as application:
        if not await _is_the_demos(application):
            raise CommandFailed(f"--fresh refused: {_foreign(settings)}")
    confirm(f"Delete {where_it_writes(settings)} and everything in it?", yes)
    if scheme == "sqlite":
        _delete_sqlite_files(sqlite_path(settings.store_url))
    elif is_cosmos_connection_string(settings.store_url):
        await _delete_cosmos_database(settings)
    else:
        await _drop_schema(settings)


def _delete_sqlite_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


async def _delete_cosmos_database(settings: Settings) -> None:
    from azure.cosmos import exceptions
    from azure.cosmos.aio import CosmosClient

    connection = CosmosConnectionString.parse(settings.store_url)
    async with CosmosClient(connection.endpoint, credential=connection.key,
                            connection_verify=settings.cosmos_verify_tls) as client:
        try:
            await client.delete_database(settings.cosmos_database)
        except exceptions.CosmosResourceNotFoundError:
            pass
        except exceptions.CosmosHttpResponseError as exc:
            raise CommandFailed(f"--fresh: cannot delete Cosmos DB database "
                                f"{settings.cosmos_database!r}: {exc.status_code}") from None


async def _drop_schema(settings: Settings) -> None:
    import asyncpg

    schema = settings.postgres_schema.replace('"', '""')
    connection = await asyncpg.connect(settings.store_url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except asyncpg.PostgresError as exc:
        raise CommandFailed(f"--fresh: cannot drop schema {settings.postgres_schema!r}: "
                            f"{exc}") from None
    finally:
        await connection.close()
