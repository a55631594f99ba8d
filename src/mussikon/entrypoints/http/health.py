"""`/healthz`: the process answers. `/readyz`: the store answers, the handlers run and the
transport reaches its brokers."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from mussikon.config import describe_broker, split_brokers
from mussikon.entrypoints.http import models
from mussikon.entrypoints.http.state import ApiState, api_state

router = APIRouter(tags=["health"])

PROBE_TIMEOUT = 5.0
PROBE_STREAM = "readyz-probe"


@router.get("/healthz", response_model=models.Health)
async def healthz() -> models.Health:
    """The process is up."""
    return models.Health(status="ok")


@router.get("/readyz", response_model=models.Health,
            responses={503: {"model": models.Health}})
async def readyz(state: Annotated[ApiState, Depends(api_state)]) -> JSONResponse:
    """The store answers within 5 s, the handlers run and the transport reaches every broker;
    503 naming what is not (a broker by its URL or endpoint, secrets masked)."""
    checks = [await _store(state), await _brokers(state)]
    ok = all(check.ok for check in checks)
    body = models.Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


async def _brokers(state: ApiState) -> models.Check:
    brokers = ", ".join(describe_broker(b) for b in split_brokers(state.app.settings.broker_url))
    if not state.app.running:
        return models.Check(name="brokers", ok=False, detail=f"{brokers}: not started")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reason = await state.app.transport.ready()
    except Exception as exc:  # any failure means not ready; the reason names no secret
        reason = f"{brokers}: {type(exc).__name__}"
    if reason is not None:
        return models.Check(name="brokers", ok=False, detail=reason)
    return models.Check(name="brokers", ok=True, detail=brokers)


async def _store(state: ApiState) -> models.Check:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await state.app.store.stream_version(PROBE_STREAM)
    except Exception as exc:  # any failure means not ready; the reason names no secret
        return models.Check(name="store", ok=False, detail=type(exc).__name__)
    return models.Check(name="store", ok=True)
