"""The live page: the events as they are stored (Server-Sent Events, resumed after the last
one seen), and charts of messages per second, failures, dead letters and lags."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mussikon.domain.events import DomainEvent
from mussikon.entrypoints.http.dashboard.access import DashboardRoute, Operator
from mussikon.entrypoints.http.dashboard.pages import SECURITY_HEADERS, render, when
from mussikon.entrypoints.http.dashboard.state import Board, board
from mussikon.entrypoints.http.state import ApiState, api_state
from mussikon.ports.event_store import EventStore, RecordedEvent, UndecodableEventError

router = APIRouter(route_class=DashboardRoute)

NEWEST = 25
"""Events a new feed starts with."""

PAGE = 200
"""Events read at a time while following the store."""

KEEP_ALIVE = 15.0
"""Seconds between comments that keep an idle stream open through proxies."""

State = Annotated[ApiState, Depends(api_state)]
Dashboard = Annotated[Board, Depends(board)]


@router.get("/dashboard")
async def live_page(request: Request, who: Operator, state: State,
                    dashboard: Dashboard) -> Response:
    """Live: the feed and the charts."""
    global_order = state.app.feed is None or state.app.feed.global_order
    return render(request, "live.html", operator=who.name, global_order=global_order,
                  readers=dashboard.sampler.readers)


@router.get("/dashboard/samples")
async def samples(who: Operator, dashboard: Dashboard,
                  span: Annotated[str, Query(pattern="^(minutes|hours)$")] = "minutes"
                  ) -> JSONResponse:
    """The sampled figures of the last minutes or hours, for the charts."""
    ring = dashboard.sampler.minutes if span == "minutes" else dashboard.sampler.hours
    return JSONResponse({**ring.series(), "readers": dashboard.sampler.readers,
                         "totals": dashboard.sampler.totals()},
                        headers={"Cache-Control": "no-store"})


def summary(event: DomainEvent) -> str:
    """A few words of what the event says (a name, a title, an amount, a reason)."""
    parts = []
    for attribute in ("name", "title", "amount", "reason"):
        value = getattr(event, attribute, None)
        if value not in (None, ""):
            parts.append(str(value))
    return " · ".join(parts)[:200]


def feed_item(record: RecordedEvent) -> dict[str, Any]:
    """One event as the live feed shows it."""
    event = record.event
    return {"position": record.position, "stream": record.stream_id, "version": record.version,
            "type": event.event_type, "at": when(event.occurred_at, ms=True),
            "correlation": str(event.correlation_id or event.id), "summary": summary(event),
            "origin": record.origin}


async def _read(store: EventStore, after: int | None) -> tuple[list[RecordedEvent], int]:
    """The events after position `after` (None: the newest few), passing over those no code
    can read; and the position reached."""
    if after is None:
        before: int | None = None
        while True:
            try:
                records = await store.read_last(NEWEST, before)
                return records, records[-1].position if records else 0
            except UndecodableEventError as exc:
                before = exc.position
    reached = after
    while True:
        try:
            records = await store.read_all(reached + 1, PAGE)
            return records, records[-1].position if records else reached
        except UndecodableEventError as exc:
            reached = exc.position


async def event_stream(state: ApiState, dashboard: Board, after: int | None,
                       request: Request) -> AsyncIterator[str]:
    """Server-Sent Events: each stored event (`id:` its position, which a client sends back
    as Last-Event-ID when it reconnects), from after `after` on, until the client leaves or
    the server stops."""
    settings = state.app.settings
    yield "retry: 2000\n\n"
    position = after
    delay = settings.poll_interval
    idle = 0.0
    while not dashboard.closing.is_set():
        records, reached = await _read(state.app.store, position)
        if records:
            for record in records:
                yield (f"id: {record.position}\nevent: stored\n"
                       f"data: {json.dumps(feed_item(record))}\n\n")
            delay, idle = settings.poll_interval, 0.0
        elif idle >= KEEP_ALIVE:
            yield ": still here\n\n"
            idle = 0.0
        first = position is None
        position = reached
        if records and not first:
            continue
        if await request.is_disconnected():
            return
        try:
            await asyncio.wait_for(dashboard.closing.wait(), delay)
        except TimeoutError:
            idle += delay
            delay = min(delay * 2, 0.5)


@router.get("/dashboard/events")
async def events(request: Request, who: Operator, state: State, dashboard: Dashboard,
                 last_event_id: Annotated[str | None, Header()] = None,
                 after: Annotated[int | None, Query(ge=0)] = None) -> Response:
    """The live feed as Server-Sent Events, after `Last-Event-ID` (or `after`), else from the
    newest few."""
    if last_event_id is not None:
        if not last_event_id.isdigit():
            return JSONResponse({"detail": "Last-Event-ID: a position (digits)"}, 422)
        after = int(last_event_id)
    if not (state.app.feed is None or state.app.feed.global_order):
        return JSONResponse({"detail": "this store keeps no global order: no live feed"}, 409)
    return StreamingResponse(event_stream(state, dashboard, after, request),
                             media_type="text/event-stream",
                             headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"})
