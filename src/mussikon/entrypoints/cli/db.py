"""`mussikon db …`: the store's schema."""

from __future__ import annotations

import typer

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
