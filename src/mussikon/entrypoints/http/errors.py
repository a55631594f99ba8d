"""How failures become answers: one JSON body naming the field or the rule, never a secret."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mussikon.domain import errors
from mussikon.ports.event_store import ConcurrencyError, StoreUnavailable

log = logging.getLogger(__name__)

_STATE_CONFLICTS = (errors.AlreadyApplied, errors.GigNotOpen, errors.IllegalTransition,
                    errors.ApplicationNotAccepted, errors.ContractNotSigned)
"""Refused because of where things stand now: 409. Every other rule refuses the input: 422."""


def status_of(exc: errors.DomainError) -> int:
    """The HTTP status of a refused command."""
    if isinstance(exc, errors.NotFound):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, errors.NotAParty):
        return status.HTTP_403_FORBIDDEN
    if isinstance(exc, _STATE_CONFLICTS):
        return status.HTTP_409_CONFLICT
    return status.HTTP_422_UNPROCESSABLE_CONTENT


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    return JSONResponse({"detail": str(exc), "rule": exc.rule}, status_code=status_of(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConcurrencyError)
    return JSONResponse({"detail": str(exc), "rule": "expected-version",
                         "expected": exc.expected, "actual": exc.actual},
                        status_code=status.HTTP_409_CONFLICT)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "the store is unavailable; try again"},
                        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": "1"})


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    # The value given is not echoed back: it may be a password.
    assert isinstance(exc, RequestValidationError)
    problems = [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]}
                for e in exc.errors()]
    detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return JSONResponse({"detail": detail, "errors": problems},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def install(api: FastAPI) -> None:
    """Register the handlers on the application."""
    api.add_exception_handler(errors.DomainError, _domain)
    api.add_exception_handler(ConcurrencyError, _conflict)
    api.add_exception_handler(StoreUnavailable, _unavailable)
    api.add_exception_handler(RequestValidationError, _invalid)
