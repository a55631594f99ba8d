"""Projections: each read model's position and lag in events, the other readers' lags, and
rebuilding one with its progress."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from mussikon.application.projections.runner import ProjectionBusy
from mussikon.bootstrap import App
from mussikon.entrypoints.http.dashboard import audit
from mussikon.entrypoints.http.dashboard.access import DashboardRoute, Operator
from mussikon.entrypoints.http.dashboard.pages import render
from mussikon.entrypoints.http.dashboard.state import Board, Rebuild, board
from mussikon.entrypoints.http.state import ApiState, api_state

router = APIRouter(route_class=DashboardRoute)

State = Annotated[ApiState, Depends(api_state)]
Dashboard = Annotated[Board, Depends(board)]


@router.get("/dashboard/projections")
async def projections_page(request: Request, who: Operator, state: State,
                           dashboard: Dashboard) -> Response:
    """Where each read model is; a rebuild under way refreshes the page every second."""
    runner = state.app.projections
    global_order = runner.feed.global_order
    statuses = await runner.status() if global_order else []
    parts = [] if global_order else await runner.part_status()
    running = any(not r.done for r in dashboard.rebuilds.values())
    return render(request, "projections.html", operator=who.name, statuses=statuses,
                  parts=parts, readers=dashboard.sampler.readers,
                  rebuilds=list(dashboard.rebuilds.values()), refresh=running)


async def _rebuild(app: App, rebuild: Rebuild) -> None:
    def advanced(read: int, position: int) -> None:
        rebuild.read, rebuild.position = read, position

    try:
        rebuild.position = await app.projections.rebuild(rebuild.name, advanced)
        outcome = f"rebuilt up to position {rebuild.position} ({rebuild.read} events read)"
    except ProjectionBusy as exc:
        rebuild.error = outcome = str(exc)
    except Exception as exc:
        rebuild.error = outcome = f"{type(exc).__name__}: {exc}"
    finally:
        rebuild.done = True
    await audit.record(app.documents, rebuild.who, "rebuild projection", rebuild.name, outcome)


@router.post("/dashboard/projections/{name}/rebuild")
async def rebuild(request: Request, name: str, who: Operator, state: State,
                  dashboard: Dashboard, confirmed: Annotated[str, Form()] = "") -> Response:
    """Drop a read model and apply every event again, in the background, once confirmed."""
    runner = state.app.projections
    if name not in runner.projections:
        return render(request, "message.html", 404, operator=who.name, title="No such projection",
                      message=f"no projection {name}", back="/dashboard/projections")
    under_way = dashboard.rebuilds.get(name)
    if under_way is not None and not under_way.done:
        return RedirectResponse("/dashboard/projections", 303)
    if confirmed != "yes":
        return render(request, "confirm.html", operator=who.name, title="Rebuild a projection",
                      question=f"Drop the read model {name} and apply every event again? "
                               "Its queries answer from a partial model until it catches up.",
                      action=request.url.path, fields={}, back="/dashboard/projections")
    total = await state.app.store.count_after(0) if runner.feed.global_order else None
    job = dashboard.rebuilds[name] = Rebuild(name, who.name, total)
    job.task = asyncio.create_task(_rebuild(state.app, job), name=f"rebuild {name}")
    return RedirectResponse("/dashboard/projections", 303)
