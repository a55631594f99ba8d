"""`mussikon dlq …`: dead letters, for operators."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Annotated

import msgspec
import typer

from mussikon.bootstrap import App
from mussikon.config import load_settings
from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import (
    CommandFailed,
    JsonOption,
    YesOption,
    confirm,
    console_for_output,
    plain,
    print_json,
    table,
)
from mussikon.ports.transport import DeadLetter, Replayed

dlq_app = typer.Typer(help="The dead-letter queue, for operators.", no_args_is_help=True)

LetterId = Annotated[str, typer.Argument(
    help="A dead letter's id, or the start of it that names only one.")]
LimitOption = Annotated[int, typer.Option("--limit", help="At most this many dead letters.")]
AfterOption = Annotated[str | None, typer.Option(
    "--after", help="The page after this dead letter's id (the last one of the page before).")]


def _letter(d: DeadLetter) -> dict[str, object]:
    return {"id": d.id, "subscription": d.subscription, "message_id": d.message_id,
            "event_type": d.event_type, "position": d.position, "attempts": d.attempts,
            "exception": d.exception, "reason": d.reason, "failed_at": d.failed_at,
            "body": d.body}


async def _resolved(application: App, given: str) -> DeadLetter:
    """The dead letter `given` names, whole or by the start of its id: a get of the id, else
    a range read of the ids that start with it (a few, to name them when they are several)."""
    transport = application.transport
    letter = await transport.find_dead_letter(given) if given else None
    if letter is not None:
        return letter
    ids = await transport.dead_letter_ids(given, _NAMED + 1) if given else []
    if len(ids) == 1 and (letter := await transport.find_dead_letter(ids[0])) is not None:
        return letter
    if not ids:
        raise CommandFailed(f"no dead letter {given!r}")
    how_many = str(len(ids)) if len(ids) <= _NAMED else f"more than {_NAMED}"
    shown = ", ".join(ids[:_NAMED]) + (", …" if len(ids) > _NAMED else "")
    raise CommandFailed(f"{given!r} names {how_many} dead letters ({shown}): give more of "
                        "the id")


_NAMED = 5
"""Ids named at most when the start of an id given names several letters."""


def _looking() -> AbstractAsyncContextManager[App]:
    """The application for a command that only looks at dead letters: the store opened
    read-only, unless the transport is RabbitMQ, whose commands first move the letters that
    arrived in the dead-letter queue into the store."""
    settings = load_settings()
    return opened(settings, read_only=not settings.broker_url.startswith("amqp"))


def _body(body: str) -> str:
    """The body indented for reading, every character of it kept (numbers as written); as it
    is if it is not JSON."""
    try:
        return msgspec.json.format(body, indent=2)
    except msgspec.DecodeError:
        return body


@dlq_app.command("list")
def dlq_list(limit: LimitOption = 50, after: AfterOption = None,
             json_: JsonOption = False) -> None:
    """The dead-lettered messages, with why: oldest failure first, `--limit` at a time; the
    next page is `--after` the last id shown. A page is one read of the store's index of dead
    letters (on RabbitMQ, after the letters that arrived in the dead-letter queue are moved
    into the store)."""
    async def go() -> None:
        if limit < 1:
            raise CommandFailed(f"--limit {limit}: give 1 or more")
        async with _looking() as application:
            await application.open_for_operations()
            letters = await application.transport.dead_letters(limit + 1, after)
        page, more = letters[:limit], len(letters) > limit
        next_after = page[-1].id if more else None
        if json_:
            print_json({"dead_letters": [_letter(d) for d in page], "next_after": next_after})
            return
        out = console_for_output()
        out.print(table(f"{len(page)} dead letter(s)",
                        ("id", "subscription", "event type", "attempts", "failed at",
                         "exception", "reason"),
                        ((d.id, d.subscription, d.event_type, d.attempts,
                          d.failed_at.isoformat(timespec="seconds"), d.exception, d.reason)
                         for d in page), ids=["id"]))
        if next_after:
            out.print(plain(f"more: mussikon dlq list --limit {limit} --after {next_after}"))

    run(go)


@dlq_app.command("show")
def dlq_show(letter_id: LetterId, json_: JsonOption = False) -> None:
    """One dead letter, with its body."""
    async def go() -> None:
        async with _looking() as application:
            await application.open_for_operations()
            letter = await _resolved(application, letter_id)
        if json_:
            print_json(_letter(letter))
            return
        out = console_for_output()
        out.print(plain(f"dead letter {letter.id}"))
        fields = {k: v for k, v in _letter(letter).items() if k not in ("id", "body")}
        out.print(table("fields", ("field", "value"),
                        ((name, "" if value is None else value) for name, value in fields.items())))
        if letter.body:
            out.print(plain(_body(letter.body)))

    run(go)


@dlq_app.command("replay")
def dlq_replay(letter_id: Annotated[str, typer.Argument(
                   help="A dead letter's id, or the start of it that names only one.")] = "",
               all_: Annotated[bool, typer.Option("--all", help="Replay every one.")] = False,
               ) -> None:
    """Deliver dead letters again, and say how each went; exit 1 if any failed.

    On the in-process transport the handlers run here: a letter handled leaves the queue,
    one that fails again stays with its attempts added up. On RabbitMQ each letter is sent
    back to the queue it failed in, for a worker to handle (failing again, it returns here
    under the same id); it fails here only if the broker cannot take it back."""
    async def go() -> None:
        if bool(letter_id) == all_:
            raise CommandFailed("give a dead letter id or --all (not both)")
        async with opened() as application:
            await application.open_for_operations()
            transport = application.transport
            if all_:
                results = await transport.replay_all_dead_letters()
            else:
                letter = await _resolved(application, letter_id)
                results = [Replayed(letter.id, await transport.replay(letter.id))]
                if not results[0].ok:
                    again = await transport.find_dead_letter(letter.id)
                    if again is not None:
                        results = [Replayed(letter.id, False,
                                            f"{again.exception}: {again.reason}")]
            in_place = transport.replays_in_place
            out = console_for_output()
            for result in results:
                out.print(plain(_outcome(result, in_place)))
        failed = [r for r in results if not r.ok]
        how = "failed again" if in_place else "could not be sent back"
        if len(results) > 1 and failed:
            raise CommandFailed(f"{len(failed)} of {len(results)} dead letters {how}")
        if failed:
            raise CommandFailed(f"{failed[0].dead_letter_id} {how}")

    run(go)


def _outcome(result: Replayed, in_place: bool) -> str:
    if not result.ok:
        return f"{result.dead_letter_id}: failed again: {result.reason}" if in_place \
            else f"{result.dead_letter_id}: not sent back: {result.reason}"
    if in_place:
        return f"{result.dead_letter_id}: handled"
    return (f"{result.dead_letter_id}: sent back to its queue, for a worker to handle "
            "(it returns here if it fails again)")


@dlq_app.command("delete")
def dlq_delete(letter_id: LetterId, yes: YesOption = False) -> None:
    """Drop one dead letter for good (it is not delivered); the others stay."""
    async def go() -> None:
        async with opened() as application:
            await application.open_for_operations()
            letter = await _resolved(application, letter_id)
        # Asked with nothing open: a connection would miss its heartbeats while a person reads.
        confirm(f"Drop dead letter {letter.id} ({letter.event_type} for "
                f"{letter.subscription}) for good?", yes)
        async with opened() as application:
            await application.open_for_operations()
            await application.transport.delete_dead_letter(letter.id)
        console_for_output().print(plain(f"deleted {letter.id}"))

    run(go)


@dlq_app.command("purge")
def dlq_purge(yes: YesOption = False) -> None:
    """Drop every dead letter for good (none is delivered). Sagas that were waiting for one
    of them stay where they are: `mussikon sagas resume` moves them on."""
    async def go() -> None:
        confirm("Drop every dead letter for good?", yes)
        async with opened() as application:
            await application.open_for_operations()
            purged = await application.transport.purge_dead_letters()
        console_for_output().print(plain(f"purged {purged}"))

    run(go)
