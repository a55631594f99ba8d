"""`mussikon notifications …`: what was sent to whom."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mussikon.entrypoints.cli.common import console, opened, run

notifications_app = typer.Typer(help="Notifications sent.", no_args_is_help=True)


@notifications_app.command("list")
def notifications_list(limit: Annotated[int, typer.Option(min=1)] = 100) -> None:
    """The notifications sent: to whom, which kind, about what."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            sent = await application.notifier.sent(limit)
            table = Table(title=f"{len(sent)} notification(s)")
            for column in ("sent at", "kind", "to", "subject", "about"):
                table.add_column(column)
            for s in sent:
                n = s.notification
                table.add_row(s.sent_at.strftime("%Y-%m-%d %H:%M:%S"), n.kind,
                              f"{n.recipient_name} <{n.recipient}>", n.subject, n.about)
            console.print(table)

    run(go)
