"""The operator dashboard's routes over httpx: who may see them (401 with the login form, 403
for any role but operator, 403 for an action from another site), text from outside shown as
text, every destructive action asked to be confirmed first and written to the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mussikon import metrics
from mussikon.entrypoints.http.accounts import Role
from mussikon.entrypoints.http.api import create_api
from mussikon.entrypoints.http.dashboard import Dashboard, audit
from mussikon.entrypoints.http.dashboard.access import COOKIE
from tests.http.conftest import Api, Caller, musician_body, settings_for
from tests.polling import eventually

PAGES = ["/dashboard", "/dashboard/samples", "/dashboard/flow?correlation=x",
         "/dashboard/sagas", "/dashboard/sagas/booking-x", "/dashboard/dead-letters",
         "/dashboard/dead-letters/group?exception=E&subscription=s",
         "/dashboard/dead-letters/letter?id=x", "/dashboard/projections", "/dashboard/audit",
         "/dashboard/events?after=999999999"]
ACTIONS = ["/dashboard/sagas/booking-x/resume", "/dashboard/dead-letters/letter/retry",
           "/dashboard/dead-letters/letter/delete", "/dashboard/dead-letters/group/retry",
           "/dashboard/dead-letters/group/delete", "/dashboard/projections/directory/rebuild"]
FORM = {"id": "x", "exception": "E", "subscription": "s"}
NASTY = "<script>alert('x')</script>"


@dataclass
class Board:
    api: Api
    operator: Caller
    musician: Caller
    others: list[Caller]


@pytest.fixture
async def board(tmp_path: Path) -> AsyncIterator[Board]:
    """The API with the dashboard, on the in-memory store; an operator, a musician, and
    callers of the other roles."""
    api = create_api(settings_for("memory", tmp_path), routers=Dashboard(0.05).routers())
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            served = Api(client, api)
            musician = await served.user("ana", Role.MUSICIAN, password="ana's password")
            yield Board(served, await served.user("op", Role.OPERATOR, password="op password"),
                        musician, [musician, await served.user("casa", Role.ORGANIZER),
                                   await served.user("billing", Role.SERVICE)])


async def test_nobody_gets_the_login_form_and_other_roles_are_refused(board: Board) -> None:
    client = board.api.client
    for path in PAGES:
        nobody = await client.get(path)
        assert nobody.status_code == 401, path
        assert 'action="/dashboard/login"' in nobody.text
        assert (await client.get(path, headers={"Authorization": "Bearer mk_forged"})
                ).status_code == 401
        for caller in board.others:
            refused = await client.get(path, headers=caller.headers)
            assert refused.status_code == 403, (path, caller.principal.role)
            assert "may not see the dashboard" in refused.text
    for path in ACTIONS:
        assert (await client.post(path, data=FORM)).status_code == 401, path
        for caller in board.others:
            assert (await client.post(path, data=FORM, headers=caller.headers)
                    ).status_code == 403, path
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=board.musician.headers)).status_code == 403


async def test_an_operator_sees_every_page(board: Board) -> None:
    for path in [p for p in PAGES if "events" not in p]:
        answer = await board.api.client.get(path, headers=board.operator.headers)
        assert answer.status_code in (200, 404), path
        if answer.headers["content-type"].startswith("text/html"):
            assert "script-src 'self'" in answer.headers["content-security-policy"]
    exposed = await board.api.client.get("/metrics", headers=board.operator.headers)
    assert exposed.status_code == 200
    assert "mussikon_messages_handled_total" in exposed.text


async def test_api_requests_are_timed_by_route_template_and_status_class(board: Board) -> None:
    def requests(route: str, status: str) -> float:
        families = text_string_to_metric_families(metrics.exposition().decode())
        return sum(s.value for family in families for s in family.samples
                   if s.name == "mussikon_http_request_duration_seconds_count"
                   and s.labels == {"method": "GET", "route": route, "status": status})

    gig, unknown = requests("/gigs/{gig_id}", "4xx"), requests("unmatched", "4xx")
    client, headers = board.api.client, board.operator.headers
    for n in range(3):
        assert (await client.get(f"/gigs/gig-{n}", headers=headers)).status_code == 404
    assert (await client.get("/no/such/path", headers=headers)).status_code == 404
    assert requests("/gigs/{gig_id}", "4xx") == gig + 3
    assert requests("unmatched", "4xx") == unknown + 1
    served = (await client.get("/metrics", headers=headers)).text
    assert "/gigs/gig-1" not in served and "/no/such/path" not in served


async def test_logging_in_sets_a_strict_http_only_cookie_for_operators_only(board: Board
                                                                             ) -> None:
    client = board.api.client
    wrong = await client.post("/dashboard/login", data={"username": "op", "password": "no"})
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
    musician = await client.post("/dashboard/login",
                                 data={"username": "ana", "password": "ana's password"})
    assert musician.status_code == 403 and COOKIE not in musician.headers.get("set-cookie", "")
    foreign = await client.post("/dashboard/login", headers={"Origin": "http://evil.example"},
                                data={"username": "op", "password": "op password"})
    assert foreign.status_code == 403
    logged = await client.post("/dashboard/login",
                               data={"username": "op", "password": "op password"})
    assert logged.status_code == 303 and logged.headers["location"] == "/dashboard"
    cookie = logged.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert (await client.get("/dashboard")).status_code == 200  # the client keeps the cookie
    # An action from another site's page is refused, cookie or not.
    crossing = await client.post("/dashboard/dead-letters/group/delete", data=FORM,
                                 headers={"Origin": "http://evil.example"})
    assert crossing.status_code == 403
    out = await client.post("/dashboard/logout")
    assert out.status_code == 303
    assert (await client.get("/dashboard")).status_code == 401


async def _dead_letters(board: Board, name: str, *subscriptions: str) -> list[str]:
    """The musician registered (so the letters' body is a real event) and a dead letter of
    that event for each subscription, whose exception and reason come from outside; their
    ids."""
    app = board.api.state.app
    registered = await board.api.post(board.musician, "/musicians", musician_body(name=name))
    assert registered.status_code == 201, registered.text
    [record] = await app.store.read_stream(registered.json()["stream_id"])
    await app.settle()
    for subscription in subscriptions:
        await app.transport.dead_letter(  # type: ignore[attr-defined]
            subscription, str(record.event.id), record.event.event_type, record.position, 3,
            "<b>Boom</b>", NASTY, app.codec.encode(record.event).decode())
    return [f"{subscription}:{record.event.id}" for subscription in subscriptions]


async def test_text_from_outside_is_shown_as_text(board: Board) -> None:
    [letter] = await _dead_letters(board, NASTY, "musicians.on-registered")
    op = board.operator.headers
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    [record] = await board.api.state.app.store.read_all(1, 1)
    correlation = str(record.event.correlation_id or record.event.id)
    for path in (f"/dashboard/flow?correlation={correlation}", "/dashboard/dead-letters",
                 f"/dashboard/dead-letters/letter?id={letter}", "/dashboard/flow?correlation="
                 + NASTY):
        page = await board.api.client.get(path, headers=op)
        assert page.status_code == 200, path
        assert NASTY not in page.text and "<b>Boom" not in page.text, path
    flow = await board.api.client.get(f"/dashboard/flow?correlation={correlation}", headers=op)
    assert escaped in flow.text and "MusicianRegisteredEvent" in flow.text
    assert "&lt;b&gt;Boom&lt;/b&gt;" in (await board.api.client.get(
        "/dashboard/dead-letters", headers=op)).text


async def test_destructive_actions_ask_first_and_are_audited(board: Board) -> None:
    client, op = board.api.client, board.operator.headers
    transport = board.api.state.app.transport
    documents = board.api.state.app.documents
    first, second = await _dead_letters(board, "Ana", "musicians.on-registered", "elsewhere")
    letter = await transport.find_dead_letter(first)
    assert letter is not None
    group = {"exception": letter.exception, "subscription": letter.subscription}

    asked = await client.post("/dashboard/dead-letters/group/retry", data=group, headers=op)
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.text
    asked = await client.post("/dashboard/dead-letters/letter/delete", data={"id": second},
                              headers=op)
    assert asked.status_code == 200 and "for good" in asked.text
    assert await transport.find_dead_letter(first) is not None
    assert await transport.find_dead_letter(second) is not None
    assert await audit.recent(documents) == []

    retried = await client.post("/dashboard/dead-letters/group/retry",
                                data={**group, "confirmed": "yes"}, headers=op)
    assert retried.status_code == 200 and "1 of 1 retried" in retried.text
    assert await transport.find_dead_letter(first) is None
    deleted = await client.post("/dashboard/dead-letters/letter/delete",
                                data={"id": second, "confirmed": "yes"}, headers=op)
    assert deleted.status_code == 200
    assert await transport.find_dead_letter(second) is None

    asked = await client.post("/dashboard/projections/directory/rebuild", headers=op)
    assert "Drop the read model directory" in asked.text
    started = await client.post("/dashboard/projections/directory/rebuild",
                                data={"confirmed": "yes"}, headers=op)
    assert started.status_code == 303

    async def rebuilt() -> bool:
        return any(e.action == "rebuild projection" for e in await audit.recent(documents))

    await eventually(rebuilt, 20)
    entries = await audit.recent(documents)
    assert [(e.who, e.action) for e in entries] == [
        ("op", "rebuild projection"), ("op", "delete dead letter"),
        ("op", "retry dead-letter group")]
    assert entries[0].outcome.startswith("rebuilt up to position")
    assert entries[2].target == f"{letter.exception} in musicians.on-registered"
    shown = await client.get("/dashboard/audit", headers=op)
    assert "retry dead-letter group" in shown.text and second in shown.text
    progress = await client.get("/dashboard/projections", headers=op)
    assert "done at position" in progress.text
