"""What every `mussikon` command shares: the console, running an async command with one-line
errors, and opening the application for one command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mussikon.bootstrap import App, ConfigurationError, open_app
from mussikon.config import Settings, mask_url
from mussikon.domain.errors import DomainError
from mussikon.entrypoints.cli.output import CommandFailed, plain
from mussikon.ports.clock import Clock
from mussikon.ports.event_store import StoreError

__all__ = ["CommandFailed", "console", "opened", "run"]

T = TypeVar("T")

console = Console()


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
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            Text("error: ", style="red") + plain(message))
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


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandFailed(f"--since {text!r} is not a date (use 2026-11-27 or "
                            "2026-11-27T10:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def events_table(records: list[Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("position", "stream", "version", "type", "occurred at", "id"):
        table.add_column(column)
    for r in records:
        table.add_row(str(r.position), r.stream_id, str(r.version), r.event.event_type,
                      r.event.occurred_at.isoformat(), str(r.event.id))
    return table
