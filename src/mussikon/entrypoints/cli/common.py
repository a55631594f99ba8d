"""What every `mussikon` command shares: the console, running an async command with one-line
errors, and opening the application for one command."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from mussikon import logs
from mussikon.bootstrap import App, ConfigurationError, open_app
from mussikon.config import Settings, SettingsError, describe_invalid_settings, load_settings
from mussikon.domain.errors import DomainError
from mussikon.entrypoints.cli.output import CommandFailed, plain
from mussikon.ports.clock import Clock
from mussikon.ports.event_store import StoreError

__all__ = ["CommandFailed", "console", "opened", "run"]

T = TypeVar("T")

console = Console()


@dataclass
class Options:
    """The root command's options, for every command."""

    debug: bool = False
    """Show an error's traceback rather than one line."""


options = Options()

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CommandFailed, DomainError, StoreError, ConfigurationError, SettingsError, ValueError,
    KeyError, OSError, TimeoutError, ImportError)
"""Failures a user can meet and act on: shown as their message alone. Anything else is a bug,
shown with its type and the way to see its traceback."""


def error_line(exc: BaseException) -> str:
    """What to tell the user about an error, in one line."""
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        message = describe_invalid_settings(exc)
    elif isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    elif isinstance(exc, TimeoutError) and not str(exc):
        message = "timed out waiting for the handlers to finish"
    elif isinstance(exc, OSError) and exc.strerror and exc.filename:
        message = f"{exc.strerror}: {exc.filename}"
    elif isinstance(exc, EXPECTED_ERRORS):
        message = str(exc) or type(exc).__name__
    else:
        message = (f"{type(exc).__name__}: {exc} (`mussikon --debug …` shows the "
                   "traceback)")
    return " ".join(message.splitlines())


def print_error(line: str) -> None:
    """`error: line` on stderr, never wrapped, never read as markup."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        Text("error: ", style="red") + plain(line))


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; turn a failure into one line on stderr and exit code 1 (with
    `--debug`, let it go up with its traceback)."""
    try:
        return asyncio.run(_call(coro_fn))
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # the command line's own: `main` deals with them
    except Exception as exc:
        if options.debug:
            raise
        print_error(error_line(exc))
        raise typer.Exit(1) from None


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


def apply_log_settings(settings: Settings) -> None:
    """Log at MUSSIKON_LOG_LEVEL in MUSSIKON_LOG_FORMAT (as read with the other settings,
    `.env` included)."""
    logging.getLogger().setLevel(settings.log_level)
    logs.use_format(settings.log_format)


@asynccontextmanager
async def opened(settings: Settings | None = None, clock: Clock | None = None, *,
                 read_only: bool = False) -> AsyncIterator[App]:
    """The application for one command, closed afterwards. `read_only`, for commands that only
    look: the store must exist already, and is neither created, migrated nor written."""
    settings = settings or load_settings()
    apply_log_settings(settings)
    application = await open_app(settings, clock, read_only=read_only)
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
