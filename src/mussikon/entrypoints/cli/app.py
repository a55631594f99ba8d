"""The `mussikon` command: one Typer application made of the command groups."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from importlib.metadata import version
from typing import Annotated

import typer

from mussikon import logs, tracing
from mussikon.config import LOG_FORMATS, LOG_LEVELS
from mussikon.entrypoints.cli.analytics import analytics
from mussikon.entrypoints.cli.asyncapi import asyncapi
from mussikon.entrypoints.cli.broker import broker_app
from mussikon.entrypoints.cli.common import error_line, options, print_error
from mussikon.entrypoints.cli.db import db_app
from mussikon.entrypoints.cli.demo import demo
from mussikon.entrypoints.cli.directory import directory_app
from mussikon.entrypoints.cli.dlq import dlq_app
from mussikon.entrypoints.cli.events import events_app
from mussikon.entrypoints.cli.notifications import notifications_app
from mussikon.entrypoints.cli.projections import projections_app
from mussikon.entrypoints.cli.sagas import sagas_app
from mussikon.entrypoints.cli.serve import serve
from mussikon.entrypoints.cli.users import users_app
from mussikon.entrypoints.cli.worker import worker
from mussikon.entrypoints.telemetry import TracingUnavailable, configure_tracing

app = typer.Typer(help="MussikOn: the event-driven backend of a marketplace for musicians.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


app.command()(demo)
app.command()(worker)
app.command()(serve)
app.add_typer(users_app, name="users")
app.add_typer(events_app, name="events")
app.add_typer(notifications_app, name="notifications")
app.add_typer(projections_app, name="projections")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.add_typer(broker_app, name="broker")
app.add_typer(sagas_app, name="sagas")
app.add_typer(directory_app, name="directory")
app.command()(analytics)
app.command()(asyncapi)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"mussikon {version('mussikon')}")
        raise typer.Exit()


@app.callback()
def root(debug: Annotated[bool, typer.Option(
        "--debug", help="On an error, show its traceback rather than one line.")] = False,
         show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False) -> None:
    """MussikOn: the event-driven backend of a marketplace for musicians."""
    options.debug = debug


def _mount_benchmarks() -> None:
    try:
        from bench.cli import bench_app
    except ImportError:
        return
    app.add_typer(bench_app, name="bench")


_mount_benchmarks()


def main(args: list[str] | None = None) -> None:
    """Console entry point: exit code 0, or 1 with one line on stderr (`--debug`: the
    traceback); 130 when interrupted."""
    # The level and format are checked with the other settings, when a command reads them: `--help`
    # works whatever the environment says.
    level = os.environ.get("MUSSIKON_LOG_LEVEL", "WARNING").strip().upper()
    log_format = os.environ.get("MUSSIKON_LOG_FORMAT", "human").strip().lower()
    logs.configure(level if level in LOG_LEVELS else "WARNING",
                   log_format if log_format in LOG_FORMATS else "human")
    sys.exit(_run(args))


LONG_RUNNING = frozenset({"worker", "serve"})
"""Commands that run until stopped: no span of their own (each message, each request has
its own trace)."""


def _command_span(args: list[str]) -> contextlib.AbstractContextManager[None]:
    """The span of a one-off command (`mussikon demo`, `mussikon dlq replay`), the root of
    its trace, while tracing is on."""
    words = [a for a in args if not a.startswith("-")][:2]
    if not tracing.enabled() or not words or words[0] in LONG_RUNNING:
        return contextlib.nullcontext()
    return tracing.span(f"mussikon {' '.join(words)}")


def _run(args: list[str] | None) -> int:
    try:
        configure_tracing(os.environ)
        with _command_span(sys.argv[1:] if args is None else args):
            result = app(args, prog_name="mussikon", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except TracingUnavailable as exc:
        print_error(str(exc))
        return 1
    except typer.Abort:
        print_error("aborted")
        return 1
    except typer.TyperException as exc:  # click's errors: a usage error names the option
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mussikon events`: its help
            typer.echo(exc.format_message())
            return 0
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        print_error(f"{exc.format_message().rstrip('.')}{where}")
        return 1
    except Exception as exc:
        if options.debug:
            traceback.print_exc()
        else:
            print_error(error_line(exc))
        return 1
    return result if isinstance(result, int) else 0
