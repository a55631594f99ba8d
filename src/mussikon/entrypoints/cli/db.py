"""`mussikon db …`: the store's schema."""

from __future__ import annotations

from datetime import timedelta

import typer

from mussikon.application.retention import InboxRetention
from mussikon.config import mask_url
from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import console_for_output, plain

db_app = typer.Typer(help="The database schema.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the store's schema (also done on first use)."""
    async def go() -> None:
        async with opened() as application:
            console_for_output().print(plain(
                f"schema of {mask_url(application.settings.store_url)} is up to date"))

    run(go)


@db_app.command("prune")
def db_prune() -> None:
    """Remove the inbox entries older than MUSSIKON_INBOX_RETENTION (a running worker does it
    every so often too), and say how many were removed."""
    async def go() -> None:
        async with opened() as application:
            settings = application.settings
            retention = InboxRetention(application.documents, settings.inbox_retention)
            removed = await retention.prune()
            console_for_output().print(plain(
                f"removed {removed:,} inbox {'entry' if removed == 1 else 'entries'} older than "
                f"{iso_duration(settings.inbox_retention)} (MUSSIKON_INBOX_RETENTION) from "
                f"{mask_url(settings.store_url)}"))

    run(go)


def iso_duration(value: timedelta) -> str:
    """A duration as ISO 8601 writes it: `P7D`, `PT1H30M`, `PT10.5S`."""
    seconds = value.total_seconds()
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    time = "".join(f"{n:g}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
                   if n)
    date = f"{days:g}D" if days else ""
    return f"P{date}{'T' + time if time else ''}" if date or time else "PT0S"
