"""`mussikon projections …`: the read models, their position and lag, and rebuilding one."""

from __future__ import annotations

import typer
from rich.table import Table

from mussikon.entrypoints.cli.common import CommandFailed, console, opened, run

projections_app = typer.Typer(help="Read models and their checkpoints.", no_args_is_help=True)


@projections_app.command("status")
def projections_status() -> None:
    """Position and lag of each read model."""
    async def go() -> None:
        async with opened(read_only=True) as application:
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
