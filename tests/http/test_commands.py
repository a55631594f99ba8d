"""Commands over HTTP: optimistic concurrency with If-Match, Idempotency-Key, bad input and
refused commands, the size limit, health and the offline docs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mussikon.entrypoints.http.accounts import Role
from mussikon.entrypoints.http.idempotency import IDEMPOTENCY
from mussikon.ports.event_store import StoreUnavailable
from tests.http.conftest import (
    Api,
    gig_body,
    in_days,
    musician_body,
    organizer_body,
    serving,
    settings_for,
)


async def test_if_match_on_a_moved_stream_is_409_with_expected_and_actual(api: Api) -> None:
    casa = await api.user("casa", Role.ORGANIZER)
    await api.post(casa, "/organizers", organizer_body())
    gig_id = (await api.post(casa, "/gigs", gig_body())).json()["id"]
    stale = await api.post(casa, f"/gigs/{gig_id}/close", {"reason": "rain"},
                           **{"If-Match": '"7"'})
    assert stale.status_code == 409
    assert stale.json() | {"detail": ""} == {"detail": "", "rule": "expected-version",
                                             "expected": 7, "actual": 1}
    assert await api.state.app.store.stream_version(f"gig-{gig_id}") == 1  # nothing written
    closed = await api.post(casa, f"/gigs/{gig_id}/close", {"reason": "rain"},
                            **{"If-Match": '"1"'})
    assert closed.json()["version"] == 2
    bad = await api.post(casa, f"/gigs/{gig_id}/close", {}, **{"If-Match": "soon"})
    assert bad.status_code == 422 and "If-Match" in bad.json()["detail"]


async def test_two_signatures_racing_on_one_version_one_wins(api: Api) -> None:
    ana = await api.user("ana", Role.MUSICIAN)
    casa = await api.user("casa", Role.ORGANIZER)
    await api.post(ana, "/musicians", musician_body())
    await api.post(casa, "/organizers", organizer_body())
    gig_id = (await api.post(casa, "/gigs", gig_body())).json()["id"]
    application = (await api.post(ana, f"/gigs/{gig_id}/applications",
                                  {"proposed_fee": "800"})).json()["id"]
    contract = (await api.post(casa, f"/applications/{application}/accept",
                               {})).json()["contract_id"]
    drafted = await api.until(ana, f"/contracts/{contract}", "status", "Drafted")
    version = str(drafted["version"])
    answers = await asyncio.gather(
        api.post(ana, f"/contracts/{contract}/signatures", {}, **{"If-Match": version}),
        api.post(casa, f"/contracts/{contract}/signatures", {}, **{"If-Match": version}))
    assert sorted(a.status_code for a in answers) == [200, 409]
    lost = next(a for a in answers if a.status_code == 409).json()
    assert (lost["expected"], lost["actual"]) == (int(version), int(version) + 1)


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_answer(api: Api) -> None:
    svc = await api.user("svc", Role.SERVICE)
    key = {"Idempotency-Key": "register-ana-1"}
    first = await api.post(svc, "/musicians", musician_body(), **key)
    again = await api.post(svc, "/musicians", musician_body(), **key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = await api.post(svc, "/musicians", musician_body(name="Ana P."), **key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    await api.settle()
    listed = (await api.get(svc, "/musicians")).json()["items"]
    assert [m["musician_id"] for m in listed] == [first.json()["id"]]
    # Another caller's key of the same name is theirs alone.
    op = await api.user("op", Role.OPERATOR)
    theirs = await api.post(op, "/musicians", musician_body(), **key)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert await api.state.app.documents.get(IDEMPOTENCY, "svc\nregister-ana-1") is not None


async def test_copies_of_one_keyed_request_racing_write_once(api: Api) -> None:
    svc = await api.user("svc", Role.SERVICE)
    casa = await api.post(svc, "/organizers", organizer_body())
    body = gig_body(organizer_id=casa.json()["id"])
    answers = await asyncio.gather(*(api.post(svc, "/gigs", body, **{"Idempotency-Key": "g"})
                                     for _ in range(4)))
    created = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(created) == 1 and all(a.status_code in (201, 409) for a in answers)
    await api.settle()
    gigs = (await api.get(svc, "/gigs")).json()["items"]
    assert [g["gig_id"] for g in gigs] == list(created)


async def test_bad_input_is_422_naming_the_field_without_echoing_it(api: Api) -> None:
    ana = await api.user("ana", Role.MUSICIAN)
    missing = await api.post(ana, "/musicians", {"name": "Ana", "genres": ["Jazz"],
                                                 "location": "SD"})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "body.email"
    typo = await api.post(ana, "/musicians", musician_body(genre="Jazz"))
    assert typo.status_code == 422 and "body.genre" in typo.json()["detail"]
    secret = "hunter2-hunter2"
    wrong = await api.post(ana, "/musicians", musician_body(genres=secret))
    assert wrong.status_code == 422 and secret not in wrong.text
    casa = await api.user("casa", Role.ORGANIZER)
    naive = await api.post(casa, "/gigs", gig_body(event_date="2030-01-01T20:00:00"))
    assert naive.status_code == 422 and "body.event_date" in naive.json()["detail"]
    money = await api.post(casa, "/gigs", gig_body(budget="-5"))
    assert money.status_code == 422 and "body.budget" in money.json()["detail"]
    page = await api.get(casa, "/gigs", limit=0)
    assert page.status_code == 422 and "query.limit" in page.json()["detail"]


async def test_refused_commands_name_the_rule_and_write_nothing(api: Api) -> None:
    ana = await api.user("ana", Role.MUSICIAN)
    casa = await api.user("casa", Role.ORGANIZER)
    invalid = await api.post(ana, "/musicians", musician_body(email="not-an-address"))
    assert (invalid.status_code, invalid.json()["rule"]) == (422, "valid-email")
    assert await api.state.app.store.stream_version(f"musician-{ana.id}") == 0
    await api.post(ana, "/musicians", musician_body())
    twice = await api.post(ana, "/musicians", musician_body())
    assert twice.status_code == 409  # the musician's stream exists already
    assert (twice.json()["expected"], twice.json()["actual"]) == (0, 1)
    no_organizer = await api.post(casa, "/gigs", gig_body())
    assert (no_organizer.status_code, no_organizer.json()["rule"]) == (404, "exists")
    await api.post(casa, "/organizers", organizer_body())
    past = await api.post(casa, "/gigs", gig_body(event_date=in_days(-1)))
    assert (past.status_code, past.json()["rule"]) == (422, "gig-date-in-future")
    gig_id = (await api.post(casa, "/gigs", gig_body(budget="500"))).json()["id"]
    over = await api.post(ana, f"/gigs/{gig_id}/applications", {"proposed_fee": "501"})
    assert (over.status_code, over.json()["rule"]) == (422, "fee-within-budget")
    await api.post(casa, f"/gigs/{gig_id}/close", {"reason": "full"})
    closed = await api.post(ana, f"/gigs/{gig_id}/applications", {"proposed_fee": "400"})
    assert (closed.status_code, closed.json()["rule"]) == (409, "applications-only-to-open-gig")
    assert await api.state.app.store.stream_version(
        f"application-{gig_id}") == 0  # nothing half-written
    unsigned = await api.post(casa, "/contracts/nope/payment")
    assert (unsigned.status_code, unsigned.json()["rule"]) == (404, "exists")


async def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with serving(settings_for("memory", tmp_path, api_max_body=2048)) as api:
        ana = await api.user("ana", Role.MUSICIAN)
        big = await api.post(ana, "/musicians", musician_body(name="x" * 4000))
        assert big.status_code == 413 and "MUSSIKON_API_MAX_BODY" in big.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 1000

        streamed = await api.client.post("/musicians", content=chunks(),
                                         headers={**ana.headers,
                                                  "Content-Type": "application/json"})
        assert streamed.status_code == 413
        small = await api.post(ana, "/musicians", musician_body())
        assert small.status_code == 201


async def test_health_and_readiness(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok", "checks": []}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {"store": True,
                                                                   "brokers": True}
    async def unreachable(stream_id: str) -> int:
        raise StoreUnavailable("connection refused to postgresql://u:s3cret@db/x")

    monkeypatch.setattr(api.state.app.store, "stream_version", unreachable)
    down = await api.client.get("/readyz")
    assert down.status_code == 503
    assert {c["name"]: c["ok"] for c in down.json()["checks"]}["store"] is False
    assert "s3cret" not in down.text


async def test_openapi_and_docs_are_served_without_a_cdn(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    assert "/gigs/{gig_id}/applications" in document["paths"]
    for page in ("/docs", "/redoc"):
        html = (await api.client.get(page)).text
        assert "cdn" not in html.lower() and "/docs-assets/" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        answer = await api.client.get(f"/docs-assets/{asset}")
        assert answer.status_code == 200 and len(answer.content) > 10_000


async def test_a_password_gives_a_token_that_authenticates(api: Api) -> None:
    casa = await api.user("casa", Role.ORGANIZER, password="correct horse")
    wrong = await api.client.post("/token", data={"username": "casa", "password": "nope"})
    assert wrong.status_code == 401 and "nope" not in wrong.text
    token = await api.client.post("/token", data={"username": "casa",
                                                  "password": "correct horse"})
    assert token.status_code == 200
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    registered = await api.client.post("/organizers", json=organizer_body(), headers=bearer)
    assert registered.status_code == 201 and registered.json()["id"] == casa.id
