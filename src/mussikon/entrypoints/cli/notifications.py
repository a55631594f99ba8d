"""`mussikon notifications …`: what was sent to whom."""

from __future__ import annotations

from typing import Annotated

import typer

from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import (
    JsonOption,
    console_for_output,
    limit_option,
    plain,
    print_json,
    print_table,
)

notifications_app = typer.Typer(help="Notifications sent.", no_args_is_help=True)


@notifications_app.command("list")
def notifications_list(
        limit: Annotated[int, limit_option(100, "notifications")] = 100,
        after: Annotated[int | None, typer.Option(
            "--after", min=0, help="Only those after this number (the last # of the page "
                                   "before), oldest first.")] = None,
        as_json: JsonOption = False) -> None:
    """The notifications sent, in the order they went out, numbered (#) from the first: to
    whom, which kind, about what. The newest `--limit` unless `--after` is given; a page is
    read by its numbers, never the whole list."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            notifier = application.notifier
            page = await notifier.sent(limit, after)
            newest = await notifier.sent(1)
        total = newest[-1].number if newest else 0
        if as_json:
            print_json([{
                "number": s.number, "sent_at": s.sent_at, "channel": s.channel,
                "key": s.notification.key, "kind": s.notification.kind,
                "recipient": s.notification.recipient,
                "recipient_name": s.notification.recipient_name,
                "subject": s.notification.subject, "about": s.notification.about,
                "body": s.notification.body, "created_at": s.notification.created_at,
            } for s in page])
            return
        console = console_for_output()
        print_table(
            console, f"{len(page)} of {total} notification(s)",
            ("#", "sent at", "kind", "to", "subject", "about"),
            ((s.number, s.sent_at.strftime("%Y-%m-%d %H:%M:%S"), s.notification.kind,
              f"{s.notification.recipient_name} <{s.notification.recipient}>",
              s.notification.subject, s.notification.about) for s in page),
            ids=("#", "about"))
        if page and page[-1].number < total:
            console.print(plain(f"more: --after {page[-1].number}"))

    run(go)
