"""The flow of one correlation (one command from outside and everything that followed from
it): its events, the handlers each reached, and the saga steps, in time order, as a timeline
read at a glance."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from mussikon.application.projections.correlations import BY_CORRELATION, correlation_prefix
from mussikon.application.sagas.state import SagaState
from mussikon.bootstrap import App
from mussikon.entrypoints.http.dashboard.access import DashboardRoute, Operator
from mussikon.entrypoints.http.dashboard.live import summary
from mussikon.entrypoints.http.dashboard.pages import render
from mussikon.entrypoints.http.state import ApiState, api_state

router = APIRouter(route_class=DashboardRoute)

LIMIT = 500
"""Events of one correlation shown at most."""

DEPTH = 6
"""Causal depths indented at most (deeper ones line up with this one)."""


@dataclass
class Handling:
    """What one subscription did with an event."""

    subscription: str
    state: str
    """handled, dead-lettered or pending."""
    letter: str = ""
    """The dead letter's id, when dead-lettered."""


@dataclass
class Step:
    """One row of the timeline: an event, or a saga's record."""

    at: datetime
    lane: str
    title: str
    detail: str = ""
    number: int = 0
    """The event's number in the flow (0 for a saga's record)."""
    cause: int = 0
    """The number of the event that caused it (0: from outside, or not in this flow)."""
    by_saga: str = ""
    """For an event a saga's step wrote: the saga record just before it."""
    caused: bool = False
    """True if something caused it (an event not in this flow: a saga's step)."""
    depth: int = 0
    stream: str = ""
    saga_id: str = ""
    handlings: list[Handling] = field(default_factory=list)
    offset_ms: float = 0.0


def lane_of(stream: str) -> str:
    """The aggregate a stream belongs to (`contract-…` → contract)."""
    name, _, rest = stream.partition("-")
    return name if rest else stream


async def flow_of(app: App, correlation_id: str) -> list[Step]:
    """The timeline of a correlation: its events in the global order and the records of the
    sagas of its streams, by time."""
    entries = await app.documents.scan_page(BY_CORRELATION, limit=LIMIT,
                                            prefix=correlation_prefix(correlation_id))
    found = [await app.store.find_event(uuid.UUID(doc["event_id"])) for _, doc in entries]
    records = sorted((r for r in found if r is not None), key=lambda r: r.position)
    numbers = {str(r.event.id): n for n, r in enumerate(records, 1)}
    steps: list[Step] = []
    depths: dict[int, int] = {}
    saga_subscriptions = {f"sagas.{kind}" for kind in (app.sagas.engines if app.sagas else {})}
    for n, record in enumerate(records, 1):
        event = record.event
        cause = numbers.get(str(event.causation_id), 0) if event.causation_id else 0
        depths[n] = depths[cause] + 1 if cause else 0
        handlings = []
        for subscription in app.subscriptions:
            if event.event_type not in subscription.event_types \
                    or subscription.name in saga_subscriptions:
                continue
            message_id, letter = str(event.id), ""
            if await app.documents.has_seen(subscription.name, message_id):
                how = "handled"
            elif dead := await app.transport.find_dead_letter(
                    f"{subscription.name}:{message_id}"):
                how, letter = "dead-lettered", dead.id
            else:
                how = "pending"
            handlings.append(Handling(subscription.name, how, letter))
        steps.append(Step(event.occurred_at, lane_of(record.stream_id), event.event_type,
                          summary(event), n, cause, caused=event.causation_id is not None,
                          depth=min(depths[n], DEPTH), stream=record.stream_id,
                          handlings=handlings))
    for saga in await _sagas_of(app, {r.stream_id for r in records}):
        for entry in await app.sagas.journal.history(saga.saga_id) if app.sagas else []:
            cause = numbers.get(entry.message_id, 0)
            if not cause:  # a record of the saga caused by another correlation
                continue
            steps.append(Step(entry.at, "saga", f"{saga.kind}: {entry.kind}",
                              " · ".join(filter(None, (entry.step, entry.detail))),
                              cause=cause, depth=min(depths[cause] + 1, DEPTH),
                              saga_id=saga.saga_id))
    steps.sort(key=lambda s: (s.at, s.number == 0, s.number))
    _by_saga_steps(steps)
    if steps:
        start = steps[0].at
        for step in steps:
            step.offset_ms = (step.at - start).total_seconds() * 1000
    return steps


def _by_saga_steps(steps: list[Step]) -> None:
    """An event caused by something outside the flow's events, written after a saga's
    record, was written by that saga's step: it is shown under that record."""
    last_saga: Step | None = None
    for step in steps:
        if not step.number:
            last_saga = step
        elif step.caused and not step.cause and last_saga is not None:
            step.by_saga = f"the {last_saga.title.split(':')[0]} saga"
            step.depth = min(last_saga.depth + 1, DEPTH)


async def _sagas_of(app: App, streams: set[str]) -> list[SagaState]:
    """The saga instances whose instance is the aggregate of one of `streams`."""
    if app.sagas is None:
        return []
    found = []
    for stream in sorted(streams):
        _, _, instance = stream.partition("-")
        for kind in app.sagas.engines:
            state = await app.sagas.journal.find(f"{kind}-{instance}") if instance else None
            if state is not None:
                found.append(state)
    return found


@router.get("/dashboard/flow")
async def flow_page(request: Request, who: Operator,
                    state: Annotated[ApiState, Depends(api_state)],
                    correlation: Annotated[str, Query(max_length=100)] = "") -> Response:
    """The flow of one correlation id (asked for in a form)."""
    correlation = correlation.strip()
    steps = await flow_of(state.app, correlation) if correlation else []
    lanes = sorted({s.lane for s in steps})
    return render(request, "flow.html", operator=who.name, correlation=correlation,
                  steps=steps, lanes=lanes,
                  events=sum(1 for s in steps if s.number),
                  total_ms=steps[-1].offset_ms if steps else 0)
