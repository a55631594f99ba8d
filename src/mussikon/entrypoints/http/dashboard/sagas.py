"""Sagas: the instances by status and kind, one instance's steps, history, pending timeouts
and compensations, and resuming one that is stuck."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response

from mussikon.application.sagas.runtime import SagaNotStuck
from mussikon.application.sagas.state import SagaStatus
from mussikon.entrypoints.http.dashboard import audit
from mussikon.entrypoints.http.dashboard.access import DashboardRoute, Operator
from mussikon.entrypoints.http.dashboard.pages import render
from mussikon.entrypoints.http.state import ApiState, api_state

router = APIRouter(route_class=DashboardRoute)

State = Annotated[ApiState, Depends(api_state)]
PAGE = 50


@router.get("/dashboard/sagas")
async def sagas_page(request: Request, who: Operator, state: State,
                     status: Annotated[str, Query(max_length=20)] = "",
                     kind: Annotated[str, Query(max_length=60)] = "",
                     after: Annotated[str, Query(max_length=200)] = "") -> Response:
    """The instances, the most recently started first, a page at a time."""
    runtime = state.app.sagas
    wanted = next((s for s in SagaStatus if s.value.lower() == status.lower()), None)
    kinds = sorted(runtime.engines) if runtime else []
    instances = await runtime.journal.page(wanted, kind or None, limit=PAGE + 1,
                                           after=after or None) if runtime else []
    page, more = instances[:PAGE], len(instances) > PAGE
    return render(request, "sagas.html", operator=who.name, sagas=page,
                  next_after=page[-1].saga_id if more else "", status=wanted.value if wanted
                  else "", kind=kind, kinds=kinds, statuses=[s.value for s in SagaStatus])


@router.get("/dashboard/sagas/{saga_id}")
async def saga_page(request: Request, saga_id: str, who: Operator, state: State) -> Response:
    """One instance."""
    runtime = state.app.sagas
    found = await runtime.journal.find(saga_id) if runtime else None
    if runtime is None or found is None:
        return render(request, "message.html", 404, operator=who.name, title="No such saga",
                      message=f"no saga {saga_id}")
    history = await runtime.journal.history(saga_id)
    return render(request, "saga.html", operator=who.name, saga=found, marks=found.step_marks(),
                  history=history, timeouts=sorted(found.timeouts.values(),
                                                   key=lambda t: t.due_at))


@router.post("/dashboard/sagas/{saga_id}/resume")
async def resume(request: Request, saga_id: str, who: Operator, state: State,
                 confirmed: Annotated[str, Form()] = "") -> Response:
    """Resume a stuck instance, once confirmed; the outcome goes to the audit log."""
    runtime = state.app.sagas
    found = await runtime.journal.find(saga_id) if runtime else None
    if runtime is None or found is None:
        return render(request, "message.html", 404, operator=who.name, title="No such saga",
                      message=f"no saga {saga_id}")
    if confirmed != "yes":
        return render(request, "confirm.html", operator=who.name, title="Resume a saga",
                      question=f"Resume saga {saga_id} ({found.status.value} at "
                               f"{found.current_step or '-'})? Its current step runs again "
                               "and the events it missed are given to it.",
                      action=request.url.path, fields={}, back=f"/dashboard/sagas/{saga_id}")
    try:
        resumed = await runtime.resume(saga_id)
        outcome = (f"{resumed.before.status.value} → {resumed.after.status.value}, "
                   f"{len(resumed.redelivered)} event(s) given again")
        ok = True
    except SagaNotStuck as exc:
        outcome, ok = f"not resumed: {exc}", False
    except Exception as exc:
        outcome, ok = f"failed again: {type(exc).__name__}: {exc}", False
    await audit.record(state.app.documents, who.name, "resume saga", saga_id, outcome)
    return render(request, "message.html", 200 if ok else 409, operator=who.name,
                  title="Saga resumed" if ok else "Saga not resumed", message=outcome,
                  back=f"/dashboard/sagas/{saga_id}")
