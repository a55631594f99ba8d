"""The whole booking over HTTP: register, publish, apply, accept, sign both, pay; the handlers,
read models and saga run in the server's process and the client polls for their effects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mussikon.entrypoints.http.accounts import Role
from tests.http.conftest import (
    Api,
    gig_body,
    musician_body,
    organizer_body,
    serving,
    settings_for,
)
from tests.polling import eventually


async def book_and_pay(api: Api) -> None:
    ana = await api.user("ana", Role.MUSICIAN)
    casa = await api.user("casa", Role.ORGANIZER)

    response = await api.post(ana, "/musicians", musician_body())
    assert response.status_code == 201, response.text
    assert response.json() == {"id": ana.id, "stream_id": f"musician-{ana.id}", "version": 1}
    assert (await api.post(casa, "/organizers", organizer_body())).status_code == 201

    gig = await api.post(casa, "/gigs", gig_body())
    assert gig.status_code == 201, gig.text
    gig_id = gig.json()["id"]
    applied = await api.post(ana, f"/gigs/{gig_id}/applications",
                             {"message": "Trío de jazz", "proposed_fee": "1200.00"})
    assert applied.status_code == 201, applied.text
    application_id = applied.json()["id"]

    await api.until(casa, f"/gigs/{gig_id}", "status", "Open")
    await api.listed(casa, "/musicians", "musician_id", [ana.id], genre="jazz",
                     location="santo domingo")
    await api.listed(casa, f"/gigs/{gig_id}/applications", "application_id", [application_id])

    accepted = await api.post(casa, f"/applications/{application_id}/accept", {},
                              **{"If-Match": "1"})
    assert accepted.status_code == 200, accepted.text
    contract_id = accepted.json()["contract_id"]
    assert accepted.json()["version"] == 2

    drafted = await api.until(ana, f"/contracts/{contract_id}", "status", "Drafted")
    assert drafted["amount"] == "1200.00"
    signed = await api.post(ana, f"/contracts/{contract_id}/signatures", {},
                            **{"If-Match": str(drafted["version"])})
    assert signed.status_code == 200, signed.text
    assert (await api.post(casa, f"/contracts/{contract_id}/signatures", {})).status_code == 200

    paying = await api.post(casa, f"/contracts/{contract_id}/payment")
    assert paying.status_code == 200, paying.text
    assert paying.json()["amount"] == "1200.00"
    paid = await api.until(casa, f"/contracts/{contract_id}", "status", "Paid")
    assert paid["transaction_id"]

    operator = await api.user("op", Role.OPERATOR)
    await api.until(operator, "/analytics", "revenue", "1200.00")
    events = (await api.get(operator, f"/streams/contract-{contract_id}/events")).json()
    assert [e["event_type"] for e in events][-1] == "ContractPaidEvent"
    assert events[0]["data"]["Amount"] == "1200.00"

    # The acceptance's causal chain: the saga's drafting of the contract (and its
    # payment, marked on the contract) follow from it, each naming its cause.
    acceptance = (await api.get(operator, f"/streams/application-{application_id}/events",
                                from_version=2)).json()[0]
    assert acceptance["event_type"] == "ApplicationAcceptedEvent"
    chain: list[dict[str, Any]] = []

    async def drafted_in_chain() -> bool:
        nonlocal chain
        answer = await api.get(operator, f"/correlations/{acceptance['correlation_id']}/events")
        chain = answer.json() if answer.status_code == 200 else []
        return "ContractDraftedEvent" in [e["event_type"] for e in chain]

    await eventually(drafted_in_chain)
    assert chain[0]["event_id"] == acceptance["event_id"]
    assert {e["correlation_id"] for e in chain} == {acceptance["correlation_id"]}
    assert all(e["causation_id"] for e in chain[1:])  # each follows from something


async def test_a_booking_from_registration_to_payment(api: Api) -> None:
    await book_and_pay(api)


@pytest.mark.postgres
async def test_a_booking_on_postgresql(postgres_url: str, unique_name: str,
                                       tmp_path: Path) -> None:
    settings = settings_for("memory", tmp_path).model_copy(
        update={"store_url": postgres_url, "postgres_schema": unique_name})
    async with serving(settings) as api:
        await book_and_pay(api)
