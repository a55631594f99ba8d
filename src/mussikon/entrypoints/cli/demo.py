"""`mussikon demo`: the specification's exercise, end to end, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mussikon.adapters.clock import OffsetClock
from mussikon.config import Settings, mask_url
from mussikon.entrypoints.cli.common import CommandFailed, console, opened, run


def demo(fresh: Annotated[bool, typer.Option("--fresh", help="Start from an empty database "
                                                            "(SQLite file only).")] = False,
         quiet: Annotated[bool, typer.Option(help="Only the final verdict.")] = False) -> None:
    """Run the specification's exercise end to end and check every outcome."""
    from mussikon.entrypoints.demo import DemoFailed, run_demo

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
