"""`mussikon sagas …`: where each saga instance is, for operators, and moving on one that is
stuck."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.runtime import Resumption, SagaNotStuck, SagaRuntime
from mussikon.application.sagas.state import HistoryEntry, SagaState, SagaStatus
from mussikon.bootstrap import App
from mussikon.entrypoints.cli.common import opened, run
from mussikon.entrypoints.cli.output import (
    CommandFailed,
    JsonOption,
    console_for_output,
    plain,
    print_json,
    resolve_id,
    table,
)

sagas_app = typer.Typer(help="Sagas: every booking and application in flight, and how it went.",
                        no_args_is_help=True)

SagaId = Annotated[str, typer.Argument(
    help="A saga id (booking-<contract id>), the id of its contract or application, or the "
         "start of either that names only one saga.")]


def _status(text: str | None) -> SagaStatus | None:
    if text is None:
        return None
    for status in SagaStatus:
        if status.value.lower() == text.strip().lower():
            return status
    raise CommandFailed(f"no saga status {text!r}; known: "
                        f"{', '.join(s.value for s in SagaStatus)}")


def _runtime(app: App) -> SagaRuntime:
    if app.sagas is None:
        raise CommandFailed("this application runs no sagas")
    return app.sagas


def _journal(app: App) -> SagaJournal:
    return _runtime(app).journal


_CANDIDATES = 6
"""Sagas read to resolve the start of an id: enough to name a few when it is not unique."""


async def _resolved(runtime: SagaRuntime, given: str) -> SagaState:
    """The instance `given` names: its saga id or its instance's id (a contract's or an
    application's), whole or by a start that names only one. Reads the few instances whose
    ids start so, never the others."""
    journal = runtime.journal
    by_id = {s.saga_id: s for s in await journal.starting_with(given, _CANDIDATES)}
    if by_id or not given:
        return by_id[resolve_id(given, by_id, "saga")]
    by_instance: dict[str, list[SagaState]] = {}
    for kind in runtime.engines:
        for state in await journal.starting_with(f"{kind}-{given}", _CANDIDATES):
            by_instance.setdefault(state.instance, []).append(state)
    instance = resolve_id(given, by_instance, "saga")
    [state, *others] = by_instance[instance]
    if others:
        raise CommandFailed(f"{given!r} is the instance of several sagas "
                            f"({', '.join(s.saga_id for s in by_instance[instance])}): "
                            "give the saga id")
    return state


def _when(state: SagaState) -> str:
    return state.updated_at.strftime("%Y-%m-%d %H:%M:%S") if state.updated_at else ""


def _progress(state: SagaState) -> str:
    where = state.current_step or "-"
    if state.status is SagaStatus.COMPENSATING or state.finished:
        where = "-"
    return f"{len(state.completed)}/{len(state.steps)} done, at {where}"


def _summary(state: SagaState) -> dict[str, Any]:
    return {"id": state.saga_id, "kind": state.kind, "instance": state.instance,
            "status": state.status.value, "version": state.version,
            "current_step": "" if state.finished else state.current_step,
            "completed": state.completed, "compensated": state.compensated,
            "failed_step": state.failed_step, "reason": state.reason,
            "started_at": state.started_at, "updated_at": state.updated_at}


def _detail(state: SagaState, history: list[HistoryEntry]) -> dict[str, Any]:
    return {**_summary(state), "steps": state.steps, "data": state.data,
            "timeouts": [t.to_document() for t in state.timeouts.values()],
            "history": [h.to_document() for h in history]}


def list_table(states: list[SagaState]) -> Table:
    """The instances, one row each."""
    return table(f"{len(states)} saga(s)", ("id", "status", "progress", "started", "updated",
                                            "reason"),
                 ((s.saga_id, s.status.value, _progress(s),
                   s.started_at.strftime("%Y-%m-%d %H:%M:%S") if s.started_at else "",
                   _when(s), s.reason) for s in states), ids=["id"])


def show_instance(console: Console, state: SagaState, history: list[HistoryEntry]) -> None:
    """One instance: its state, its steps, what it remembers, its timeouts, its history."""
    console.print(plain(f"{state.saga_id}  {state.status.value}"))
    if state.reason:
        console.print(plain(f"reason: {state.reason} (step {state.failed_step})"))
    shown = {"compensated": "completed, compensated", "to do": "-"}
    marks = [(name, shown.get(mark, mark)) for name, mark in state.step_marks()]
    console.print(table("steps", ("step", "state"), marks))
    console.print(table("data", ("name", "value"), sorted(state.data.items())))
    if state.timeouts:
        console.print(table("pending timeouts", ("name", "step", "due at", "id"),
                            ((t.name, t.step, t.due_at.isoformat(), t.id)
                             for t in sorted(state.timeouts.values(), key=lambda t: t.due_at)),
                            ids=["id"]))
    console.print(table("history", ("version", "at", "record", "step", "detail"),
                        ((h.version, h.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], h.kind, h.step,
                          h.detail) for h in history)))


@sagas_app.command("list")
def sagas_list(
        status: Annotated[str | None, typer.Option(
            help="Only this status: Running, Waiting, Compensating, Completed, "
                 "Compensated.")] = None,
        kind: Annotated[str | None, typer.Option(
            help="Only this saga: booking or musician-application.")] = None,
        limit: Annotated[int, typer.Option("--limit", help="At most this many sagas.")] = 50,
        after: Annotated[str | None, typer.Option(
            "--after", help="The page after this saga id (the last one of the page before).")
        ] = None,
        json_: JsonOption = False) -> None:
    """The saga instances, the most recently started first, `--limit` at a time; the next
    page is `--after` the last id shown."""

    async def go() -> None:
        wanted = _status(status)
        if limit < 1:
            raise CommandFailed(f"--limit {limit}: give 1 or more")
        async with opened(read_only=True) as application:
            states = await _journal(application).page(wanted, kind, limit=limit + 1,
                                                      after=after)
        page, more = states[:limit], len(states) > limit
        next_after = page[-1].saga_id if more else None
        if json_:
            print_json({"sagas": [_summary(s) for s in page], "next_after": next_after})
            return
        out = console_for_output()
        out.print(list_table(page))
        if next_after:
            filters = "".join(f" --{name} {value}" for name, value in
                              (("status", status), ("kind", kind)) if value)
            out.print(plain(f"more: mussikon sagas list{filters} --limit {limit} "
                            f"--after {next_after}"))

    run(go)


@sagas_app.command("show")
def sagas_show(saga_id: SagaId, json_: JsonOption = False) -> None:
    """One saga instance: state, steps done, data, pending timeouts, history with times."""

    async def go() -> None:
        async with opened(read_only=True) as application:
            journal = _journal(application)
            found = await _resolved(_runtime(application), saga_id)
            history = await journal.history(found.saga_id)
        if json_:
            print_json(_detail(found, history))
            return
        show_instance(console_for_output(), found, history)

    run(go)


@sagas_app.command("resume")
def sagas_resume(saga_id: SagaId, json_: JsonOption = False) -> None:
    """Move on a stuck saga, from its durable state, as the message it lost would have.

    A saga is stuck when the message that would have moved it was dead-lettered and then
    dropped (`mussikon dlq purge` or `dlq delete`): it stays Running, Compensating or
    Waiting, and nothing will come for it. Resume does here what a redelivery does, through
    the saga engine: first the work that needs no message (the current step runs again, or
    the next compensation), then every event of the saga's streams in the store that it
    listens to and has not handled (the one it was waiting for), oldest first. A step's
    work is idempotent and each decision is committed once with the message that caused it,
    so an effect already made is not made again (one email, one charge), no step is decided
    twice, and resuming again, or the lost message turning up after all, changes nothing.

    A finished saga, or one waiting for an event not stored yet or for its timeout, is left
    as it is (exit 1). Events the steps write reach the handlers when a worker runs."""

    async def go() -> None:
        async with opened() as application:
            runtime = _runtime(application)
            state = await _resolved(runtime, saga_id)
            try:
                resumed = await runtime.resume(state.saga_id)
            except SagaNotStuck as exc:
                raise CommandFailed(str(exc)) from None
            except (CommandFailed, KeyError):
                raise
            except Exception as exc:
                now = await runtime.journal.find(state.saga_id) or state
                raise CommandFailed(
                    f"saga {state.saga_id} failed again at step {now.current_step or '-'} "
                    f"({type(exc).__name__}: {exc}); it stays {now.status.value}") from None
        if json_:
            print_json(_resumed(resumed))
            return
        _print_resumed(console_for_output(), resumed)

    run(go)


def _resumed(resumed: Resumption) -> dict[str, Any]:
    return {"id": resumed.after.saga_id, "before": _summary(resumed.before),
            "after": _summary(resumed.after),
            "redelivered": [{"event_type": r.event.event_type, "event_id": str(r.event.id),
                             "position": r.position} for r in resumed.redelivered],
            "records": [h.to_document() for h in resumed.records]}


def _print_resumed(out: Console, resumed: Resumption) -> None:
    before, after = resumed.before, resumed.after
    out.print(plain(f"{after.saga_id}: {before.status.value} at "
                    f"{before.current_step or '-'} -> {after.status.value}"
                    f"{'' if after.finished else ' at ' + (after.current_step or '-')}"))
    for record in resumed.redelivered:
        out.print(plain(f"given again: {record.event.event_type} {record.event.id} "
                        f"(position {record.position}), which it had not handled"))
    out.print(table("recorded", ("version", "record", "step", "detail"),
                    ((h.version, h.kind, h.step, h.detail) for h in resumed.records)))
