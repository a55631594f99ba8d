"""Every route of the API refuses a caller without a valid key or token (401), a role it does
not serve (403), and a musician or organizer reaching for someone else's resource (403)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mussikon.entrypoints.http.accounts import Role
from tests.http.conftest import (
    Api,
    Caller,
    gig_body,
    musician_body,
    organizer_body,
    serving,
    settings_for,
)

MUSICIAN, ORGANIZER, OPERATOR, SERVICE = Role.MUSICIAN, Role.ORGANIZER, Role.OPERATOR, Role.SERVICE

PUBLIC = {"/healthz", "/readyz", "/token"}


@dataclass
class World:
    """A booking under way: casa's gig, ana's application to it, their drafted contract; and
    callers of every role, with bob and other as a musician and organizer not party to it."""

    api: Api
    callers: dict[str, Caller]
    ids: dict[str, str]

    def path(self, template: str) -> str:
        return template.format(**self.ids)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with serving(settings_for("memory", tmp_path)) as api:
        callers = {name: await api.user(name, role) for name, role in (
            ("ana", MUSICIAN), ("bob", MUSICIAN), ("casa", ORGANIZER), ("other", ORGANIZER),
            ("op", OPERATOR), ("svc", SERVICE))}
        ana, casa = callers["ana"], callers["casa"]
        await api.post(ana, "/musicians", musician_body())
        await api.post(callers["bob"], "/musicians", musician_body(email="bob@m.example"))
        await api.post(casa, "/organizers", organizer_body())
        await api.post(callers["other"], "/organizers", organizer_body())
        gig = (await api.post(casa, "/gigs", gig_body())).json()["id"]
        application = (await api.post(ana, f"/gigs/{gig}/applications",
                                      {"proposed_fee": "900"})).json()["id"]
        contract = (await api.post(casa, f"/applications/{application}/accept",
                                   {})).json()["contract_id"]
        await api.settle()
        yield World(api, callers, {"gig": gig, "application": application,
                                   "contract": contract, "ana": ana.id, "casa": casa.id,
                                   "stream": f"gig-{gig}", "correlation": str(uuid.uuid4())})


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    refused: tuple[str, ...]
    """Callers refused with 403: by their role, or because it is not theirs."""
    body: dict[str, Any] | None = None


ROUTES = [
    Route("POST", "/musicians", ("casa", "bob:ana"), musician_body()),
    Route("POST", "/organizers", ("ana", "other:casa"), organizer_body()),
    Route("POST", "/gigs", ("ana", "op", "other:casa"), gig_body()),
    Route("POST", "/gigs/{gig}/close", ("ana", "other"), {"reason": "x"}),
    Route("POST", "/gigs/{gig}/applications", ("casa", "op", "bob:ana"),
          {"proposed_fee": "100"}),
    Route("POST", "/applications/{application}/accept", ("ana", "op", "other"), {}),
    Route("POST", "/applications/{application}/reject", ("ana", "other"), {"reason": "x"}),
    Route("POST", "/contracts/{contract}/signatures", ("op", "bob", "other"), {}),
    Route("POST", "/contracts/{contract}/payment", ("ana", "other"), {}),
    Route("GET", "/musicians", ()),
    Route("GET", "/musicians/{ana}", ()),
    Route("GET", "/gigs", ()),
    Route("GET", "/gigs/{gig}", ()),
    Route("GET", "/gigs/{gig}/applications", ("ana", "other")),
    Route("GET", "/applications/{application}", ("bob", "other")),
    Route("GET", "/contracts", ()),
    Route("GET", "/contracts/{contract}", ("bob", "other")),
    Route("GET", "/analytics", ("ana", "casa")),
    Route("GET", "/streams/{stream}/events", ("ana", "casa")),
    Route("GET", "/correlations/{correlation}/events", ("ana", "casa")),
]


def _template(path: str) -> str:
    """A route's path with its parameters named as the table names them."""
    for name, alias in (("gig_id", "gig"), ("application_id", "application"),
                        ("contract_id", "contract"), ("musician_id", "ana"),
                        ("stream_id", "stream"), ("correlation_id", "correlation")):
        path = path.replace("{" + name + "}", "{" + alias + "}")
    return path


async def test_the_table_covers_every_route_of_the_openapi_document(tmp_path: Path) -> None:
    async with serving(settings_for("memory", tmp_path)) as api:
        paths = api.api.openapi()["paths"]
        served = {(method.upper(), _template(path)) for path, operations in paths.items()
                  if path not in PUBLIC for method in operations}
    assert served == {(r.method, r.path) for r in ROUTES}


async def _call(world: World, route: Route, caller: Caller | None,
                headers: dict[str, str] | None = None) -> int:
    sent = {**(caller.headers if caller else {}), **(headers or {})}
    path = world.path(route.path)
    if route.method == "GET":
        return (await world.api.client.get(path, headers=sent)).status_code
    return (await world.api.client.post(path, json=route.body or {}, headers=sent)).status_code


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_no_or_a_bad_credential_is_401(world: World, route: Route) -> None:
    assert await _call(world, route, None) == 401
    for bad in ("mk_not-a-key", "not.a.token", "x"):
        assert await _call(world, route, None, {"Authorization": f"Bearer {bad}"}) == 401
    assert await _call(world, route, None, {"Authorization": "Basic YTpi"}) == 401


@pytest.mark.parametrize("route", [r for r in ROUTES if r.refused],
                         ids=lambda r: f"{r.method} {r.path}")
async def test_the_wrong_role_or_someone_elses_resource_is_403(world: World,
                                                              route: Route) -> None:
    for refused in route.refused:
        name, _, as_whom = refused.partition(":")
        body = dict(route.body or {})
        if as_whom:  # naming another party in the body
            field = {"/musicians": "musician_id", "/organizers": "organizer_id",
                     "/gigs": "organizer_id"}.get(route.path, "musician_id")
            body[field] = world.ids[as_whom]
        answer = await _call(world, Route(route.method, route.path, (), body),
                             world.callers[name])
        assert answer == 403, f"{name} on {route.method} {route.path}: {answer}"


async def test_an_expired_or_forged_token_is_401(world: World) -> None:
    accounts = world.api.state.accounts
    casa = world.callers["casa"].principal
    forged = type(accounts)(accounts.documents, "another secret" * 4, 3600).issue_token(casa)
    expired = type(accounts)(accounts.documents, accounts.secret, -10).issue_token(casa)
    for token in (forged, expired):
        answer = await world.api.client.get("/gigs", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
