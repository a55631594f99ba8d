"""An HTTP API over a started application (memory or SQLite), called in process through
httpx's ASGI transport, and callers with each role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mussikon.config import Settings
from mussikon.entrypoints.http.accounts import Principal, Role
from mussikon.entrypoints.http.api import create_api
from mussikon.entrypoints.http.state import ApiState
from tests.polling import eventually


@dataclass
class Caller:
    """A user of the API and the headers that authenticate them."""

    principal: Principal
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def id(self) -> str:
        return self.principal.subject_id


@dataclass
class Api:
    """The API under test: its client and state, and a way to add callers."""

    client: httpx.AsyncClient
    api: FastAPI

    @property
    def state(self) -> ApiState:
        state: ApiState = self.api.state.mussikon
        return state

    async def user(self, name: str, role: Role, password: str | None = None) -> Caller:
        principal, key = await self.state.accounts.add(name, role, password=password)
        return Caller(principal, key)

    async def post(self, caller: Caller | None, path: str, body: Any = None,
                   **headers: str) -> httpx.Response:
        sent = {**(caller.headers if caller else {}), **headers}
        return await self.client.post(path, json=body if body is not None else {},
                                      headers=sent)

    async def get(self, caller: Caller | None, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params,
                                     headers=caller.headers if caller else {})

    async def settle(self) -> None:
        await self.state.app.settle()

    async def until(self, caller: Caller, path: str, field: str, value: object) -> dict[str, Any]:
        """Poll GET `path` until its `field` is `value` (the read models catch up)."""
        seen: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal seen
            response = await self.get(caller, path)
            seen = response.json() if response.status_code == 200 else {}
            return seen.get(field) == value

        await eventually(reached, 20, what=f"{path} {field} = {value!r}")
        return seen

    async def listed(self, caller: Caller, path: str, field: str, values: list[Any],
                     **params: Any) -> None:
        """Poll GET `path` until the `field` of its items are `values` (the read models catch
        up)."""
        seen: list[Any] = []

        async def reached() -> bool:
            nonlocal seen
            response = await self.get(caller, path, **params)
            items = response.json().get("items", []) if response.status_code == 200 else []
            seen = [item[field] for item in items]
            return seen == values

        await eventually(reached, 20, what=f"{path} items' {field} = {values!r} (seen {seen})")


def settings_for(kind: str, tmp_path: Path, **more: Any) -> Settings:
    store = "memory://" if kind == "memory" else f"sqlite:///{tmp_path}/api.db"
    return Settings(store_url=store, broker_url="memory://", poll_interval=0.01,
                    poll_max_interval=0.05, **more)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Api]:
    """The API on `settings`, started (its lifespan run) and stopped afterwards."""
    api = create_api(settings)
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, api)


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The API on the in-memory store, then on SQLite."""
    async with serving(settings_for(request.param, tmp_path)) as served:
        yield served


def in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def gig_body(**more: Any) -> dict[str, Any]:
    return {"title": "Noche de Jazz", "event_date": in_days(30), "location": "Santo Domingo",
            "genre": "Jazz", "budget": "1500.00", **more}


def musician_body(**more: Any) -> dict[str, Any]:
    return {"email": "ana@musicos.example", "name": "Ana Pérez", "genres": ["Jazz"],
            "location": "Santo Domingo", **more}


def organizer_body(**more: Any) -> dict[str, Any]:
    return {"email": "booking@casa.example", "name": "Casa de Teatro",
            "payment_source": "tok_visa", **more}
