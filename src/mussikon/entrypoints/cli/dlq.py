"""`mussikon dlq …`: dead letters, for operators."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mussikon.entrypoints.cli.common import CommandFailed, console, opened, run

dlq_app = typer.Typer(help="The dead-letter queue, for operators.", no_args_is_help=True)


@dlq_app.command("list")
def dlq_list() -> None:
    """The dead-lettered messages, with why."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            await application.open_for_operations()
            letters = await application.transport.dead_letters()
            table = Table(title=f"{len(letters)} dead letter(s)")
            for column in ("id", "subscription", "event type", "attempts", "exception", "reason"):
                table.add_column(column)
            for d in letters:
                table.add_row(d.id, d.subscription, d.event_type, str(d.attempts), d.exception,
                              d.reason)
            console.print(table)

    run(go)


@dlq_app.command("show")
def dlq_show(letter_id: str) -> None:
    """One dead letter, with its body."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            await application.open_for_operations()
            for d in await application.transport.dead_letters():
                if d.id == letter_id:
                    console.print(d)
                    if d.body:
                        console.print_json(d.body)
                    return
            raise CommandFailed(f"no dead letter {letter_id!r}")

    run(go)


@dlq_app.command("replay")
def dlq_replay(letter_id: Annotated[str, typer.Argument()] = "",
               all_: Annotated[bool, typer.Option("--all", help="Replay every one.")] = False,
               ) -> None:
    """Deliver dead letters again; those handled leave the queue (on RabbitMQ: send them back
    to their queues, for the workers)."""
    if not letter_id and not all_:
        raise typer.BadParameter("give a dead letter id or --all")

    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            ids = [d.id for d in await application.transport.dead_letters()] if all_ \
                else [letter_id]
            for one in ids:
                ok = await application.transport.replay(one)
                if not application.transport.replays_in_place:
                    console.print(f"{one}: sent back to its queue, for a worker to handle "
                                  "(it returns here if it fails again)")
                else:
                    console.print(f"{one}: {'handled' if ok else 'failed again'}")

    run(go)


@dlq_app.command("purge")
def dlq_purge() -> None:
    """Drop every dead letter."""
    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            console.print(f"purged {await application.transport.purge_dead_letters()}")

    run(go)
