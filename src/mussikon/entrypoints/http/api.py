"""The ASGI application: the marketplace's routes over one running `App`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import APIRouter, FastAPI

from mussikon.bootstrap import open_app
from mussikon.config import Settings, load_settings
from mussikon.entrypoints.http import auth, commands, docs, errors, health, queries
from mussikon.entrypoints.http.accounts import Accounts, token_secret
from mussikon.entrypoints.http.limits import BodySizeLimit
from mussikon.entrypoints.http.state import ApiState


def create_api(settings: Settings | None = None, *,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The HTTP API on the application the settings describe (the environment's if not
    given). Its lifespan opens the application and starts its handlers, read models and
    sagas, and stops them at shutdown; `routers` are served beside the API's own."""
    active = settings or load_settings()

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        application = await open_app(active)
        try:
            await application.start()
            secret = await token_secret(application.documents,
                                        active.api_secret.get_secret_value())
            api.state.mussikon = ApiState(
                application, Accounts(application.documents, secret, active.api_token_ttl))
            yield
        finally:
            await application.close()

    api = FastAPI(title="MussikOn", version=version("mussikon"), lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="The marketplace of musicians and gigs: commands, read models "
                              "and events. Authenticate with `Authorization: Bearer KEY` (an "
                              "API key from `mussikon users add`) or a token from `POST /token`.")
    api.add_middleware(BodySizeLimit, max_bytes=active.api_max_body)
    errors.install(api)
    docs.install(api)
    for router in (health.router, auth.router, commands.router, queries.router, *routers):
        api.include_router(router)
    return api
