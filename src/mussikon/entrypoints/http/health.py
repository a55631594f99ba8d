"""`/healthz`: the process answers. `/readyz`: the store answers and the handlers run."""

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
    """The store answers within 5 s, and the transport to the brokers was started (its
    handlers run); 503 naming what is not."""
    checks = [await _store(state)]
    brokers = ", ".join(describe_broker(b) for b in split_brokers(state.app.settings.broker_url))
    checks.append(models.Check(name="brokers", ok=state.app.running,
                               detail=brokers if state.app.running else f"{brokers}: not "
                                                                        "started"))
    ok = all(check.ok for check in checks)
    body = models.Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


async def _store(state: ApiState) -> models.Check:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await state.app.store.stream_version(PROBE_STREAM)
    except Exception as exc:  # any failure means not ready; the reason names no secret
        return models.Check(name="store", ok=False, detail=type(exc).__name__)
    return models.Check(name="store", ok=True)
