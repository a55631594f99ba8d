"""The `mussikon` command: one Typer application made of the command groups."""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import version
from typing import Annotated

import typer

from mussikon.entrypoints.cli.db import db_app
from mussikon.entrypoints.cli.demo import demo
from mussikon.entrypoints.cli.dlq import dlq_app
from mussikon.entrypoints.cli.events import events_app
from mussikon.entrypoints.cli.notifications import notifications_app
from mussikon.entrypoints.cli.projections import projections_app
from mussikon.entrypoints.cli.sagas import sagas_app
from mussikon.entrypoints.cli.worker import worker

app = typer.Typer(help="MussikOn: the event-driven backend of a marketplace for musicians.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command()(demo)
app.command()(worker)
app.add_typer(events_app, name="events")
app.add_typer(notifications_app, name="notifications")
app.add_typer(projections_app, name="projections")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.add_typer(sagas_app, name="sagas")


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"mussikon {version('mussikon')}")
        raise typer.Exit()


@app.callback()
def _options(show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False) -> None:
    pass


def _mount_benchmarks() -> None:
    try:
        from bench.cli import bench_app
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

