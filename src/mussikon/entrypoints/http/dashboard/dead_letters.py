"""Dead letters: grouped by exception type and handler, with count and first and last
failure; one letter's body, headers and reason; retry one or a group, delete one or a group,
each confirmed first and written to the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response

from mussikon import metrics
from mussikon.bootstrap import App
from mussikon.entrypoints.http.dashboard import audit
from mussikon.entrypoints.http.dashboard.access import DashboardRoute, Operator
from mussikon.entrypoints.http.dashboard.pages import render
from mussikon.entrypoints.http.state import ApiState, api_state
from mussikon.ports.transport import DeadLetter

router = APIRouter(route_class=DashboardRoute)

State = Annotated[ApiState, Depends(api_state)]

READ = 10_000
"""Dead letters read at most to group them."""


@dataclass
class Group:
    """Dead letters that failed the same way in the same handler."""

    exception: str
    subscription: str
    letters: list[DeadLetter]

    @property
    def count(self) -> int:
        return len(self.letters)

    @property
    def first(self) -> datetime:
        return min(d.failed_at for d in self.letters)

    @property
    def last(self) -> datetime:
        return max(d.failed_at for d in self.letters)

    @property
    def event_types(self) -> list[str]:
        return sorted({d.event_type for d in self.letters})


async def groups(app: App) -> list[Group]:
    """The dead letters grouped by (exception type, subscription), most letters first."""
    by_key: dict[tuple[str, str], Group] = {}
    letters = await app.transport.dead_letters(READ)
    metrics.DEAD_LETTERS.set(len(letters))
    for letter in letters:
        key = (letter.exception, letter.subscription)
        by_key.setdefault(key, Group(*key, [])).letters.append(letter)
    return sorted(by_key.values(), key=lambda g: (-g.count, g.exception, g.subscription))


async def _group(app: App, exception: str, subscription: str) -> Group:
    for group in await groups(app):
        if (group.exception, group.subscription) == (exception, subscription):
            return group
    return Group(exception, subscription, [])


def _body(body: str) -> str:
    try:
        return msgspec.json.format(body, indent=2)
    except msgspec.DecodeError:
        return body


@router.get("/dashboard/dead-letters")
async def dead_letters_page(request: Request, who: Operator, state: State) -> Response:
    """The groups, and the latest actions taken on dead letters."""
    return render(request, "dead_letters.html", operator=who.name,
                  groups=await groups(state.app),
                  audit=await audit.recent(state.app.documents, 10))


@router.get("/dashboard/dead-letters/group")
async def group_page(request: Request, who: Operator, state: State,
                     exception: Annotated[str, Query(max_length=500)],
                     subscription: Annotated[str, Query(max_length=500)]) -> Response:
    """The letters of one group."""
    return render(request, "group.html", operator=who.name,
                  group=await _group(state.app, exception, subscription))


def _no_letter(request: Request, operator: str, id: str) -> Response:
    """The page for a letter that is not there (any more)."""
    return render(request, "message.html", 404, operator=operator,
                  title="No such dead letter", message=f"no dead letter {id}",
                  back="/dashboard/dead-letters")


@router.get("/dashboard/dead-letters/letter")
async def letter_page(request: Request, who: Operator, state: State,
                      id: Annotated[str, Query(max_length=500)]) -> Response:
    """One letter: its headers, reason and body."""
    letter = await state.app.transport.find_dead_letter(id)
    if letter is None:
        return _no_letter(request, who.name, id)
    headers = [("subscription", letter.subscription), ("message id", letter.message_id),
               ("event type", letter.event_type),
               ("position", "" if letter.position is None else letter.position),
               ("attempts", letter.attempts), ("exception", letter.exception),
               ("failed at", letter.failed_at.isoformat())]
    return render(request, "letter.html", operator=who.name, letter=letter, headers=headers,
                  body=_body(letter.body))


def _confirm(request: Request, who: str, question: str, fields: dict[str, str],
             back: str) -> Response:
    return render(request, "confirm.html", operator=who, title="Confirm", question=question,
                  action=request.url.path, fields=fields, back=back)


async def _done(request: Request, app: App, who: str, action: str, target: str,
                outcome: str, ok: bool = True) -> Response:
    await audit.record(app.documents, who, action, target, outcome)
    return render(request, "message.html", 200 if ok else 409, operator=who,
                  title="Done" if ok else "Not everything went through", message=outcome,
                  back="/dashboard/dead-letters")


@router.post("/dashboard/dead-letters/letter/retry")
async def retry_letter(request: Request, who: Operator, state: State,
                       id: Annotated[str, Form(max_length=500)],
                       confirmed: Annotated[str, Form()] = "") -> Response:
    """Deliver one letter again."""
    transport = state.app.transport
    letter = await transport.find_dead_letter(id)
    if letter is None:
        return _no_letter(request, who.name, id)
    if confirmed != "yes":
        return _confirm(request, who.name, f"Deliver dead letter {id} ({letter.event_type} "
                        f"for {letter.subscription}) again?", {"id": id},
                        f"/dashboard/dead-letters/letter?id={id}")
    ok = await transport.replay(id)
    outcome = ("handled" if transport.replays_in_place else "sent back to its queue") if ok \
        else "failed again"
    return await _done(request, state.app, who.name, "retry dead letter", id, outcome, ok)


@router.post("/dashboard/dead-letters/letter/delete")
async def delete_letter(request: Request, who: Operator, state: State,
                        id: Annotated[str, Form(max_length=500)],
                        confirmed: Annotated[str, Form()] = "") -> Response:
    """Drop one letter for good."""
    letter = await state.app.transport.find_dead_letter(id)
    if letter is None:
        return _no_letter(request, who.name, id)
    if confirmed != "yes":
        return _confirm(request, who.name, f"Drop dead letter {id} ({letter.event_type} for "
                        f"{letter.subscription}) for good? It is not delivered.", {"id": id},
                        f"/dashboard/dead-letters/letter?id={id}")
    await state.app.transport.delete_dead_letter(id)
    return await _done(request, state.app, who.name, "delete dead letter", id, "deleted")


@router.post("/dashboard/dead-letters/group/{action}")
async def group_action(request: Request, action: str, who: Operator, state: State,
                       exception: Annotated[str, Form(max_length=500)],
                       subscription: Annotated[str, Form(max_length=500)],
                       confirmed: Annotated[str, Form()] = "") -> Response:
    """Retry or delete every letter of a group."""
    if action not in ("retry", "delete"):
        return render(request, "message.html", 404, operator=who.name, title="No such action",
                      message=f"no action {action} on a group of dead letters")
    group = await _group(state.app, exception, subscription)
    target = f"{exception} in {subscription}"
    if confirmed != "yes":
        verb = "Deliver again" if action == "retry" else "Drop for good"
        return _confirm(request, who.name, f"{verb} the {group.count} dead letter(s) of "
                        f"{target}?", {"exception": exception, "subscription": subscription},
                        "/dashboard/dead-letters")
    transport = state.app.transport
    failed = 0
    for letter in group.letters:
        try:
            if action == "retry":
                failed += not await transport.replay(letter.id)
            else:
                await transport.delete_dead_letter(letter.id)
        except KeyError:  # gone meanwhile (another operator, a worker)
            continue
    done = group.count - failed
    verb = "retried" if action == "retry" else "deleted"
    outcome = f"{done} of {group.count} {verb}" + (f", {failed} failed again" if failed else "")
    return await _done(request, state.app, who.name, f"{action} dead-letter group", target,
                       outcome, not failed)
