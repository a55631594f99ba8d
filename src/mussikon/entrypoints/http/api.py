"""The ASGI application: the marketplace's routes over one running `App`."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, FastAPI

from mussikon.bootstrap import App, open_app
from mussikon.config import Settings, load_settings
from mussikon.entrypoints.http import asyncapi, auth, commands, docs, errors, health, queries
from mussikon.entrypoints.http.accounts import Accounts, token_secret
from mussikon.entrypoints.http.limits import BodySizeLimit
from mussikon.entrypoints.http.request_metrics import RequestMetrics
from mussikon.entrypoints.http.state import ApiState
from mussikon.entrypoints.http.traces import ServerSpans

_NO_NATIVE_SPANS: dict[str, Any] = (
    {"telemetry": {"tracing": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})
"""FastAPI (from 0.165) makes request spans of its own once a global tracer provider is set;
the API's are `ServerSpans`' (one per request, the same with or without a global provider),
so FastAPI's are switched off where it has them."""


def create_api(settings: Settings | None = None, *, application: App | None = None,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The HTTP API on the application the settings describe (the environment's if not
    given). Its lifespan opens the application and starts its handlers, read models and
    sagas, and closes it at shutdown; or serves `application`, opened and started by the
    caller, who closes it. `routers` are served beside the API's own."""
    active = application.settings if application is not None else settings or load_settings()

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if application is not None:
            await _serve_on(api, application, active)
            yield
            return
        opened = await open_app(active)
        try:
            await opened.start()
            await _serve_on(api, opened, active)
            yield
        finally:
            await opened.close()

    api = FastAPI(title="MussikOn", version=version("mussikon"), lifespan=lifespan,
                  docs_url=None, redoc_url=None, **_NO_NATIVE_SPANS,
                  description="The marketplace of musicians and gigs: commands, read models "
                              "and events. Authenticate with `Authorization: Bearer KEY` (an "
                              "API key from `mussikon users add`) or a token from `POST /token`.")
    api.add_middleware(BodySizeLimit, max_bytes=active.api_max_body)
    api.add_middleware(RequestMetrics)
    api.add_middleware(ServerSpans)  # outermost: the span covers the whole request
    errors.install(api)
    docs.install(api)
    for router in (health.router, auth.router, commands.router, queries.router,
                   asyncapi.router, *routers):
        api.include_router(router)
    return api


async def _serve_on(api: FastAPI, application: App, settings: Settings) -> None:
    secret = await token_secret(application.documents, settings.api_secret.get_secret_value())
    api.state.mussikon = ApiState(application, Accounts(application.documents, secret,
                                                        settings.api_token_ttl))
