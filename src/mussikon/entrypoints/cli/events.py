"""`mussikon events …`: the event store, stream by stream, by type, or in global order."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from mussikon.entrypoints.cli.common import (
    CommandFailed,
    console,
    events_table,
    opened,
    parse_time,
    run,
)

events_app = typer.Typer(help="Inspect the event store.", no_args_is_help=True)


@events_app.command("stream")
def events_stream(stream_id: str) -> None:
    """The events of one stream (e.g. musician-<id>, gig-<id>, contract-<id>)."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            records = await application.store.read_stream(stream_id)
            if not records:
                raise CommandFailed(f"no stream {stream_id!r}")
            console.print(events_table(records, f"stream {stream_id}"))
            for r in records:
                console.print_json(application.codec.encode(r.event).decode())

    run(go)


@events_app.command("by-type")
def events_by_type(event_type: str,
                   since: Annotated[str, typer.Option(help="ISO date or time (UTC)")] = "1970-01-01"
                   ) -> None:
    """Events of one type since a date (the specification's GetEventsByTypeAsync)."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            if event_type not in application.codec.event_types:
                raise CommandFailed(f"unknown event type {event_type!r}; known: "
                                    f"{', '.join(application.codec.event_types)}")
            records = await application.store.read_by_type(event_type, parse_time(since))
            console.print(events_table(records, f"{event_type} since {since}"))

    run(go)


@events_app.command("tail")
def events_tail(limit: Annotated[int, typer.Option(min=1)] = 20,
                follow: Annotated[bool, typer.Option(help="Keep printing new events.")] = False,
                ) -> None:
    """The newest events of the global order."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            head = await application.store.head_position()
            position = max(head - limit + 1, 1)
            while True:
                records = await application.store.read_all(position, 1000)
                if records:
                    console.print(events_table(records, "global order"))
                    position = records[-1].position + 1
                if not follow:
                    return
                await asyncio.sleep(0.5)

    run(go)
