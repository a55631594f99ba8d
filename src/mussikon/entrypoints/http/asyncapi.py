"""`/asyncapi.json` and `/asyncapi.yaml`: the AsyncAPI 3.0 document of the bus, the same
`mussikon asyncapi` prints, made once from the settings the API runs on.

Public, as `/openapi.json` is: it describes the contract every team on the bus shares (event
schemas, exchanges, queues, topic and subscriptions), holds no data and no secret (brokers
by host and port alone), and the teams reading it are not users of this API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mussikon.entrypoints.asyncapi import Document, asyncapi_document, render
from mussikon.entrypoints.http.state import ApiState, api_state

router = APIRouter()
"""Documentation beside the API, as `/openapi.json` and `/docs` are: not in the OpenAPI
document."""


async def _document(request: Request, state: ApiState) -> Document:
    """The document, made at the first request (the settings do not change while the API
    runs)."""
    made: Document | None = getattr(request.app.state, "asyncapi", None)
    if made is None:
        made = request.app.state.asyncapi = await asyncapi_document(state.app.settings)
    return made


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_json(request: Request,
                        state: Annotated[ApiState, Depends(api_state)]) -> Response:
    """The AsyncAPI 3.0 document of the bus, as JSON."""
    return Response(render(await _document(request, state), "json"), media_type="application/json")


@router.get("/asyncapi.yaml", include_in_schema=False)
async def asyncapi_yaml(request: Request,
                        state: Annotated[ApiState, Depends(api_state)]) -> Response:
    """The AsyncAPI 3.0 document of the bus, as YAML."""
    return Response(render(await _document(request, state), "yaml"), media_type="application/yaml")
