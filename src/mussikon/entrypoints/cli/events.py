"""`mussikon events …`: the event store, stream by stream, by type, or in global order.

Each command prints a table (whole ids), or with `--json` one JSON array of events, oldest
first: position, stream, version, type, origin, ids, times, and the event's own JSON as
`data` (decimals as exact strings). The origin is empty for an event this service wrote;
for one another service published, where it was received (`rabbitmq`). Pages go on with
`--after` the last position (for a stream, the last version) shown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from mussikon.config import Settings
from mussikon.entrypoints.cli.common import CommandFailed, opened, parse_time, run
from mussikon.entrypoints.cli.output import (
    JsonOption,
    console_for_output,
    limit_option,
    plain,
    print_json,
    print_table,
)
from mussikon.followers.undecodable import UNDECODABLE_EVENTS
from mussikon.followers.unpublishable import UNPUBLISHABLE_EVENTS
from mussikon.ports.event_store import EventStore, RecordedEvent, UndecodableEventError
from mussikon.ports.feed import Feed
from mussikon.wire import EventCodec

events_app = typer.Typer(help="Inspect the event store.", no_args_is_help=True)

Warn = Callable[[UndecodableEventError], None]

FOLLOW_BATCH = 1000
"""Events read at a time while following the global order."""


def after_option(what: str) -> Any:
    """`--after N`: the page after N (a cursor: the last N of the page before)."""
    return typer.Option("--after", min=0, help=f"Only events after this {what} (the last "
                                               f"{what} of the page before).")


def print_events(console: Console, records: Sequence[RecordedEvent], title: str) -> None:
    """Events as a table whose stream and event ids are never cut."""
    print_table(console, title, ("position", "stream", "version", "type", "origin",
                                 "occurred at", "id"),
                ((r.position, r.stream_id, r.version, r.event.event_type, r.origin,
                  r.event.occurred_at.isoformat(), r.event.id) for r in records),
                ids=("position", "stream", "id"))


def event_document(record: RecordedEvent, codec: EventCodec) -> dict[str, Any]:
    """One event for `--json`: where it is stored, and its own JSON as `data`."""
    event = record.event
    return {
        "position": record.position, "stream_id": record.stream_id, "version": record.version,
        "event_type": event.event_type, "origin": record.origin, "event_id": event.id,
        "occurred_at": event.occurred_at, "recorded_at": record.recorded_at,
        "correlation_id": event.correlation_id, "causation_id": event.causation_id,
        "data": json.loads(codec.encode(event), parse_float=Decimal),
    }


def warn_on_stderr(exc: UndecodableEventError) -> None:
    """Say on stderr that an event was passed over, and why (stdout keeps the output)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        Text("skipped: ", style="yellow") + plain(str(exc)))


def more_hint(console: Console, records: Sequence[RecordedEvent], limit: int, cursor: int) -> None:
    """After a full page, how to ask for the next one."""
    if len(records) == limit:
        console.print(plain(f"more may follow: --after {cursor}"))


async def newest(store: EventStore, limit: int, warn: Warn) -> tuple[list[RecordedEvent], int]:
    """The newest `limit` readable events, oldest first, passing over (and naming) any that
    cannot be decoded; and the newest position among them and those passed over (0: none)."""
    out: list[RecordedEvent] = []
    before: int | None = None
    reached = 0
    while len(out) < limit:
        try:
            page = await store.read_last(limit - len(out), before)
        except UndecodableEventError as exc:
            warn(exc)
            before = exc.position
            reached = max(reached, exc.position)
            continue
        if not page:
            break
        out[:0] = page
        before = page[0].position
        reached = max(reached, page[-1].position)
    return out, reached


async def following(store: EventStore, after: int, limit: int, warn: Warn
                    ) -> tuple[list[RecordedEvent], int]:
    """Up to `limit` events after position `after`, passing over (and naming) any that cannot
    be decoded; and the position reached (the newest of them and those passed over)."""
    out: list[RecordedEvent] = []
    reached = after
    while len(out) < limit:
        try:
            page = await store.read_all(reached + 1, limit - len(out))
        except UndecodableEventError as exc:
            warn(exc)
            reached = exc.position
            continue
        if not page:
            break
        out += page
        reached = page[-1].position
    return out, reached


async def follow_feed(feed: Feed, show: Callable[[list[RecordedEvent], str], None],
                      settings: Settings) -> None:
    """Show the events the feed gives from now on, part by part (on Cosmos DB, each feed
    range's change feed: each stream's events in version order, no order across streams)."""
    parts = await feed.parts()
    checkpoints = [await part.now() for part in parts]
    Console(stderr=True, highlight=False, soft_wrap=True).print(plain(
        f"following the change feed of {len(parts)} feed range(s) from now (Ctrl-C ends)"))
    delay = settings.poll_interval
    while True:
        moved = False
        for i, part in enumerate(parts):
            page = await part.read(checkpoints[i], FOLLOW_BATCH)
            for unreadable in page.undecodable:
                warn_on_stderr(unreadable)
            if page.events:
                show(list(page.events), "new events")
            moved = moved or page.checkpoint != checkpoints[i]
            checkpoints[i] = page.checkpoint
        if moved:
            delay = settings.poll_interval
            continue
        await asyncio.sleep(delay)
        delay = min(delay * 2, settings.poll_max_interval)


@events_app.command("stream")
def events_stream(stream_id: str,
                  limit: Annotated[int, limit_option(100, "events")] = 100,
                  after: Annotated[int, after_option("version")] = 0,
                  as_json: JsonOption = False) -> None:
    """The events of one stream (e.g. musician-<id>, gig-<id>, contract-<id>), with their
    JSON."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            records = (await application.store.read_stream(stream_id, after + 1))[:limit]
            if not records and await application.store.stream_version(stream_id) == 0:
                raise CommandFailed(f"no stream {stream_id!r}")
            if as_json:
                print_json([event_document(r, application.codec) for r in records])
                return
            console = console_for_output()
            print_events(console, records, f"stream {stream_id}")
            for r in records:
                console.print_json(application.codec.encode(r.event).decode())
            more_hint(console, records, limit, records[-1].version if records else after)

    run(go)


@events_app.command("by-type")
def events_by_type(event_type: str,
                   since: Annotated[str, typer.Option(
                       help="ISO date or time (UTC)")] = "1970-01-01",
                   limit: Annotated[int, limit_option(100, "events")] = 100,
                   after: Annotated[int, after_option("position")] = 0,
                   as_json: JsonOption = False) -> None:
    """Events of one type since a date (the specification's GetEventsByTypeAsync), oldest
    first."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            if event_type not in application.codec.event_types:
                raise CommandFailed(f"unknown event type {event_type!r}; known: "
                                    f"{', '.join(application.codec.event_types)}")
            records = await application.store.read_by_type(event_type, parse_time(since), limit,
                                                           from_position=after + 1)
            if as_json:
                print_json([event_document(r, application.codec) for r in records])
                return
            console = console_for_output()
            print_events(console, records, f"{event_type} since {since}")
            more_hint(console, records, limit, records[-1].position if records else after)

    run(go)


@events_app.command("tail")
def events_tail(limit: Annotated[int, limit_option(20, "events")] = 20,
                after: Annotated[int | None, after_option("position")] = None,
                follow: Annotated[bool, typer.Option(
                    help="Keep printing new events until Ctrl-C (with --json: one JSON "
                         "document per line, per event).")] = False,
                as_json: JsonOption = False) -> None:
    """The newest events of the global order (or, with --after, those after a position). On
    Cosmos DB, which keeps no global order, only --follow: new events from now on."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            store, codec = application.store, application.codec
            feed = application.feed
            if feed is not None and not feed.global_order and (not follow or after is not None):
                raise CommandFailed(
                    "Cosmos DB does not keep a global order (no newest events, no positions): "
                    "events tail --follow prints new events from now on; events stream and "
                    "events by-type read what is stored")
            console = console_for_output()

            def show(records: list[RecordedEvent], title: str) -> None:
                if as_json and follow:
                    for r in records:
                        print_json(event_document(r, codec))
                elif as_json:
                    print_json([event_document(r, codec) for r in records])
                elif records or not follow:
                    print_events(console, records, title)

            if feed is not None and not feed.global_order:
                await follow_feed(feed, show, application.settings)
                return
            if after is None:
                records, position = await newest(store, limit, warn_on_stderr)
                show(records, f"newest {len(records)} event(s) of the global order")
            else:
                records, position = await following(store, after, limit, warn_on_stderr)
                show(records, f"{len(records)} event(s) after position {after}")
                if not follow and not as_json:
                    more_hint(console, records, limit, position)
            if not follow:
                return
            # Every event readable later comes after those read so far: the stores never
            # let a reader see an event behind one it has seen.
            settings = application.settings
            delay = settings.poll_interval
            while True:
                batch, reached = await following(store, position, FOLLOW_BATCH, warn_on_stderr)
                if reached != position:
                    show(batch, "new events")
                    position = reached
                    delay = settings.poll_interval
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.poll_max_interval)

    try:
        run(go)
    except KeyboardInterrupt:  # Ctrl-C is how --follow ends
        raise typer.Exit(0) from None


@events_app.command("skipped")
def events_skipped(as_json: JsonOption = False) -> None:
    """Events a reader of the global order passed by: rows no code can read (undecodable),
    and events a relay could not publish (unpublishable: too large for the broker), each
    under the reader's name, by position."""
    async def go() -> None:
        async with opened(read_only=True) as application:
            documents = application.documents
            rows = [{"kind": "undecodable", "event_id": None, "event_type": None,
                     "detail": None, **doc}
                    for _, doc in await documents.scan(UNDECODABLE_EVENTS)]
            rows += [{"kind": "unpublishable", **doc}
                     for _, doc in await documents.scan(UNPUBLISHABLE_EVENTS)]
            rows.sort(key=lambda row: (row["reader"], row["position"]))
            if as_json:
                print_json(rows)
                return
            print_table(console_for_output(), "events skipped",
                        ("reader", "position", "kind", "type", "id", "reason", "skipped at"),
                        ((r["reader"], r["position"], r["kind"], r["event_type"] or "",
                          r["event_id"] or "", " ".join(filter(None, (r["reason"],
                                                                      r["detail"]))),
                          r["skipped_at"]) for r in rows),
                        ids=("position", "id"))

    run(go)
