"""`mussikon sagas …`: where each saga instance is, for operators."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mussikon.application.sagas.journal import SagaJournal
from mussikon.application.sagas.state import HistoryEntry, SagaState, SagaStatus
from mussikon.bootstrap import App
from mussikon.entrypoints.cli.common import CommandFailed, console, opened, run

sagas_app = typer.Typer(help="Sagas: every booking and application in flight, and how it went.",
                        no_args_is_help=True)


def _status(text: str | None) -> SagaStatus | None:
    if text is None:
        return None
    for status in SagaStatus:
        if status.value.lower() == text.strip().lower():
            return status
    raise CommandFailed(f"no saga status {text!r}; known: "
                        f"{', '.join(s.value for s in SagaStatus)}")


def _journal(app: App) -> SagaJournal:
    if app.sagas is None:
        raise RuntimeError("this application runs no sagas")
    return app.sagas.journal


def _when(state: SagaState) -> str:
    return state.updated_at.strftime("%Y-%m-%d %H:%M:%S") if state.updated_at else ""


def _progress(state: SagaState) -> str:
    where = state.current_step or "-"
    if state.status is SagaStatus.COMPENSATING or state.finished:
        where = "-"
    return f"{len(state.completed)}/{len(state.steps)} done, at {where}"


def list_table(states: list[SagaState]) -> Table:
    """The instances, one row each."""
    table = Table(title=f"{len(states)} saga(s)")
    for column in ("id", "status", "progress", "updated", "reason"):
        table.add_column(column)
    for s in states:
        table.add_row(s.saga_id, s.status.value, _progress(s), _when(s), s.reason)
    return table


def show_instance(console: Console, state: SagaState, history: list[HistoryEntry]) -> None:
    """One instance: its state, its steps, what it remembers, its timeouts, its history."""
    console.print(f"[bold]{state.saga_id}[/]  {state.status.value}", highlight=False)
    if state.reason:
        console.print(f"reason: {state.reason} (step {state.failed_step})", highlight=False)
    steps = Table(title="steps")
    steps.add_column("step")
    steps.add_column("state")
    for n, name in enumerate(state.steps):
        if name in state.compensated:
            mark = "completed, compensated"
        elif name in state.completed:
            mark = "completed"
        elif name == state.failed_step:
            mark = "failed"
        elif n == state.step and not state.finished and state.status is not \
                SagaStatus.COMPENSATING:
            mark = state.status.value.lower()
        else:
            mark = "-"
        steps.add_row(name, mark)
    console.print(steps)
    data = Table(title="data")
    data.add_column("name")
    data.add_column("value")
    for key, value in sorted(state.data.items()):
        data.add_row(key, str(value))
    console.print(data)
    if state.timeouts:
        timeouts = Table(title="pending timeouts")
        for column in ("name", "step", "due at", "id"):
            timeouts.add_column(column)
        for t in sorted(state.timeouts.values(), key=lambda t: t.due_at):
            timeouts.add_row(t.name, t.step, t.due_at.isoformat(), t.id)
        console.print(timeouts)
    table = Table(title="history")
    for column in ("version", "at", "record", "step", "detail"):
        table.add_column(column)
    for h in history:
        table.add_row(str(h.version), h.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], h.kind,
                      h.step, h.detail)
    console.print(table)


@sagas_app.command("list")
def sagas_list(
        status: Annotated[str | None, typer.Option(
            help="Only this status: Running, Waiting, Compensating, Completed, "
                 "Compensated.")] = None,
        kind: Annotated[str | None, typer.Option(
            help="Only this saga: booking or musician-application.")] = None) -> None:
    """The saga instances, most recently changed first."""

    async def go() -> None:
        wanted = _status(status)
        async with opened(read_only=True) as application:
            console.print(list_table(await _journal(application).instances(wanted, kind)))

    run(go)


@sagas_app.command("show")
def sagas_show(saga_id: Annotated[str, typer.Argument(
        help="A saga id (booking-<contract id>), or the id of its contract or application.")]
               ) -> None:
    """One saga instance: state, steps done, data, pending timeouts, history with times."""

    async def go() -> None:
        async with opened(read_only=True) as application:
            journal = _journal(application)
            found = await journal.find(saga_id)
            if found is None:
                candidates = [s for s in await journal.instances() if s.instance == saga_id]
                found = candidates[0] if len(candidates) == 1 else None
            if found is None:
                raise CommandFailed(f"no saga {saga_id!r}; `mussikon sagas list` shows them")
            show_instance(console, found, await journal.history(found.saga_id))

    run(go)
