"""The operator dashboard, served by `mussikon serve` beside the HTTP API under /dashboard:
the live feed of events and charts of the figures, the flow of one correlation, sagas, dead
letters, projections and the audit log of what operators did. Operators only; every page is
rendered on the server, the assets come from the package (no CDN).

`Dashboard().routers()` are the routes to give `create_api(routers=…)`; their lifespan
samples the figures (`samples.py`) while the API is served. `close_streams` ends the live
streams, for a server that stops (it waits for open responses to end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response

from mussikon import metrics
from mussikon.entrypoints.http.accounts import Principal, Role
from mussikon.entrypoints.http.dashboard import (
    access,
    audit,
    dead_letters,
    flow,
    live,
    projections,
    sagas,
)
from mussikon.entrypoints.http.dashboard.access import DashboardRoute, Operator
from mussikon.entrypoints.http.dashboard.pages import render
from mussikon.entrypoints.http.dashboard.samples import Sampler
from mussikon.entrypoints.http.dashboard.state import Board
from mussikon.entrypoints.http.security import require
from mussikon.entrypoints.http.state import ApiState, api_state

STATIC = {"dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}

_pages = APIRouter(include_in_schema=False, route_class=DashboardRoute)


@_pages.get("/dashboard/static/{name}")
async def static(name: str) -> Response:
    """The dashboard's own CSS and JavaScript, from the package."""
    if name not in STATIC:
        raise HTTPException(404, f"no asset {name}")
    body = files("mussikon.entrypoints.http.dashboard").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name],
                    headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


@_pages.get("/dashboard/audit")
async def audit_page(request: Request, who: Operator,
                     state: Annotated[ApiState, Depends(api_state)]) -> Response:
    """What operators did, newest first."""
    return render(request, "audit.html", operator=who.name,
                  entries=await audit.recent(state.app.documents, 200))


_metrics = APIRouter(tags=["operations"])


@_metrics.get("/metrics", response_class=Response)
async def prometheus(who: Annotated[Principal, Depends(require(Role.OPERATOR, Role.SERVICE))]
                     ) -> Response:
    """The figures in Prometheus' text format (the same the dashboard charts): operators
    and services."""
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")


class Dashboard:
    """The dashboard's routes and what they keep while served."""

    def __init__(self, sample_every: float = 2.0) -> None:
        self.board = Board(Sampler(sample_every))

    def close_streams(self) -> None:
        """End the live streams (the server is stopping)."""
        self.board.closing.set()

    def routers(self) -> list[APIRouter]:
        """The routes, with the lifespan that samples the figures while they are served."""
        top = APIRouter(lifespan=self._lifespan)
        for router in (access.router, live.router, flow.router, sagas.router,
                       dead_letters.router, projections.router, _pages):
            top.include_router(router, include_in_schema=False)
        top.include_router(_metrics)
        return [top]

    @asynccontextmanager
    async def _lifespan(self, api: FastAPI) -> AsyncIterator[None]:
        api.state.dashboard = self.board
        state: ApiState = api.state.mussikon
        self.board.sampler.start(state.app)
        try:
            yield
        finally:
            self.close_streams()
            await self.board.sampler.stop()
            tasks = [r.task for r in self.board.rebuilds.values() if r.task and not r.done]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
