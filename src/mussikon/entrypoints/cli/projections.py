"""`mussikon projections …`: the read models, their position and lag, and rebuilding one."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import Progress

from mussikon.application.projections.runner import ProjectionBusy, ProjectionRunner
from mussikon.entrypoints.cli.common import CommandFailed, opened, run
from mussikon.entrypoints.cli.output import (
    JsonOption,
    YesOption,
    confirm,
    console_for_output,
    plain,
    print_json,
    print_table,
)

projections_app = typer.Typer(help="Read models and their checkpoints.", no_args_is_help=True)


@projections_app.command("status")
def projections_status(as_json: JsonOption = False) -> None:
    """Position of each read model, the store's head, and the lag: how many events the read
    model has not applied yet."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            if not application.projections.feed.global_order:
                await parts_status(application.projections, as_json)
                return
            statuses = await application.projections.status()
            if as_json:
                print_json([{"name": s.name, "position": s.position, "head": s.head,
                             "lag": s.lag, "lag_capped": s.lag_capped} for s in statuses])
                return
            print_table(
                console_for_output(), "projections", ("name", "position", "head", "lag (events)"),
                ((s.name, s.position, s.head, f"{s.lag}+" if s.lag_capped else s.lag)
                 for s in statuses), ids=("position", "head"))

    run(go)


async def parts_status(runner: ProjectionRunner, as_json: bool) -> None:
    """The status on a feed without a global order (Cosmos DB): each projection caught up or
    behind in each feed range (a checkpoint per range); the change feed cannot count the
    events behind."""
    statuses = await runner.part_status()
    if as_json:
        print_json([{"name": s.name, "checkpoint": s.checkpoint, "caught_up": s.caught_up}
                    for s in statuses])
        return
    print_table(console_for_output(), "projections (per feed range; no global order to count"
                " a lag in)", ("name", "checkpoint", "state"),
                ((s.name, s.checkpoint, "caught up" if s.caught_up else "behind")
                 for s in statuses), ids=("checkpoint",))


@projections_app.command("rebuild")
def projections_rebuild(name: str, yes: YesOption = False) -> None:
    """Drop one read model and apply every event again, from position 0. Refused while a
    worker applies it (stop the workers first)."""
    async def go() -> None:
        async with opened() as application:
            runner = application.projections
            if name not in runner.projections:
                raise CommandFailed(f"no projection {name!r}; known: "
                                    f"{', '.join(runner.projections)}")
            confirm(f"Drop the read model {name!r} and apply every event again?", yes)
            # The events to apply, for the progress bar, where the store can count them.
            total = (await application.store.count_after(0)
                     if runner.feed.global_order else None)
            read = 0

            def advanced(events_read: int, _: int) -> None:
                nonlocal read
                read = events_read
                progress.update(task, completed=events_read)

            with Progress(console=Console(stderr=True), transient=True,
                          disable=not sys.stderr.isatty()) as progress:
                task = progress.add_task(f"rebuilding {name}",
                                         total=None if total is None else max(total, 1))
                try:
                    position = await runner.rebuild(name, advanced)
                except ProjectionBusy as exc:
                    raise CommandFailed(str(exc)) from None
            if not runner.feed.global_order:
                message = f"{name} rebuilt from the start of every feed range ({read} events read)"
            elif read:
                message = (f"{name} rebuilt from position 0 up to position {position} "
                           f"({read} events read)")
            else:
                message = f"{name} rebuilt: there are no events to apply (position 0)"
            console_for_output().print(plain(message))

    run(go)
