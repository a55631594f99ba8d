"""What the routes of the HTTP API share: the running application and the accounts."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from mussikon.bootstrap import App
from mussikon.entrypoints.http.accounts import Accounts


@dataclass(frozen=True, slots=True)
class ApiState:
    """The application the API serves (started: its handlers run) and who may call it."""

    app: App
    accounts: Accounts


async def api_state(request: Request) -> ApiState:
    """The state of the API serving this request (a FastAPI dependency; a coroutine, since
    FastAPI runs a plain function dependency in a thread of its pool)."""
    state: ApiState = request.app.state.mussikon
    return state
