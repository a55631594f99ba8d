"""The marketplace's commands over HTTP. Each answers with what it wrote: the id, the stream and
its version. `If-Match: VERSION` changes an aggregate only if its stream is still at that
version (409 naming expected and actual otherwise); `Idempotency-Key` makes a retry safe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status

from mussikon.application.repository import Cause
from mussikon.application.sagas.booking import initial_payment_id
from mussikon.domain.application import Application
from mussikon.domain.contract import Contract
from mussikon.domain.errors import NotFound
from mussikon.domain.gig import Gig
from mussikon.domain.musician import Musician, Organizer
from mussikon.domain.payment import Payment
from mussikon.entrypoints.http import models
from mussikon.entrypoints.http.accounts import Principal, Role
from mussikon.entrypoints.http.idempotency import Keyed, once, request_digest
from mussikon.entrypoints.http.security import acts_for, forbidden, owns, require
from mussikon.entrypoints.http.state import ApiState, api_state
from mussikon.ports.event_store import EventStore

router = APIRouter(tags=["commands"])

State = Annotated[ApiState, Depends(api_state)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="Makes a retry of this POST return the first answer "
                                         "without a second effect")]
IfMatch = Annotated[str | None, Header(
    alias="If-Match", description="The stream version this change is based on (409 if the "
                                  "stream moved on)")]

MUSICIAN, ORGANIZER, OPERATOR, SERVICE = Role.MUSICIAN, Role.ORGANIZER, Role.OPERATOR, Role.SERVICE


def expected_version(if_match: str | None) -> int | None:
    """The version an `If-Match` header names (`3`, `"3"` or `W/"3"`)."""
    if if_match is None:
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "header If-Match: must be a stream version (a whole number)")
    return int(text)


async def written(store: EventStore, stream_id: str, aggregate_id: str,
                  cause: Cause) -> models.Written:
    """The stream's version after this command's events (found by its correlation id, so a
    write by someone else just after does not count)."""
    records = await store.read_stream(stream_id)
    ours = [r.version for r in records if r.event.correlation_id == cause.correlation_id]
    version = max(ours) if ours else (records[-1].version if records else 0)
    return models.Written(id=aggregate_id, stream_id=stream_id, version=version)


@router.post("/musicians", status_code=status.HTTP_201_CREATED, response_model=models.Written)
async def register_musician(
        body: models.RegisterMusician, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(MUSICIAN, OPERATOR, SERVICE))],
        idempotency_key: IdempotencyKey = None) -> models.Written:
    """Register a musician: a musician registers themselves (under their user's id), an
    operator or a service anyone."""
    async def command(keyed: Keyed) -> models.Written:
        if principal.role is MUSICIAN:
            musician_id = acts_for(principal, body.musician_id)
        else:
            musician_id = body.musician_id or keyed.new_id("musician")
        cause = Cause.new()
        await state.app.marketplace.register_musician(
            email=body.email, name=body.name, genres=body.genres, location=body.location,
            musician_id=musician_id, cause=cause)
        return await written(state.app.store, Musician.stream_id_for(musician_id), musician_id,
                             cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


@router.post("/organizers", status_code=status.HTTP_201_CREATED, response_model=models.Written)
async def register_organizer(
        body: models.RegisterOrganizer, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(ORGANIZER, OPERATOR, SERVICE))],
        idempotency_key: IdempotencyKey = None) -> models.Written:
    """Register an organizer: an organizer registers themselves, an operator or a service
    anyone."""
    async def command(keyed: Keyed) -> models.Written:
        if principal.role is ORGANIZER:
            organizer_id = acts_for(principal, body.organizer_id)
        else:
            organizer_id = body.organizer_id or keyed.new_id("organizer")
        cause = Cause.new()
        await state.app.marketplace.register_organizer(
            email=body.email, name=body.name, payment_source=body.payment_source,
            organizer_id=organizer_id, cause=cause)
        return await written(state.app.store, Organizer.stream_id_for(organizer_id),
                             organizer_id, cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


@router.post("/gigs", status_code=status.HTTP_201_CREATED, response_model=models.Written)
async def publish_gig(
        body: models.PublishGig, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(ORGANIZER, SERVICE))],
        idempotency_key: IdempotencyKey = None) -> models.Written:
    """Publish a gig: an organizer their own, a service for the organizer it names."""
    async def command(keyed: Keyed) -> models.Written:
        organizer_id = acts_for(principal, body.organizer_id)
        gig_id = keyed.new_id("gig")
        cause = Cause.new()
        await state.app.marketplace.create_gig(
            organizer_id=organizer_id, title=body.title, event_date=body.event_date,
            location=body.location, genre=body.genre, budget=body.budget, gig_id=gig_id,
            cause=cause)
        return await written(state.app.store, Gig.stream_id_for(gig_id), gig_id, cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


@router.post("/gigs/{gig_id}/close", response_model=models.Written)
async def close_gig(
        gig_id: str, body: models.CloseGig, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(ORGANIZER, OPERATOR, SERVICE))],
        if_match: IfMatch = None, idempotency_key: IdempotencyKey = None) -> models.Written:
    """Stop a gig taking applications: its organizer, an operator or a service."""
    expected = expected_version(if_match)

    async def command(keyed: Keyed) -> models.Written:
        gig = await state.app.repository.load(Gig, gig_id)
        if not gig.exists:
            raise NotFound(f"gig {gig_id} does not exist")
        owns(principal, gig.organizer_id)
        cause = Cause.new()
        await state.app.marketplace.close_gig(gig_id, body.reason, cause,
                                              expected_version=expected)
        return await written(state.app.store, gig.stream_id, gig_id, cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


@router.post("/gigs/{gig_id}/applications", status_code=status.HTTP_201_CREATED,
             response_model=models.Written)
async def apply(
        gig_id: str, body: models.Apply, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(MUSICIAN, SERVICE))],
        idempotency_key: IdempotencyKey = None) -> models.Written:
    """Apply to a gig: a musician for themselves, a service for the musician it names."""
    async def command(keyed: Keyed) -> models.Written:
        musician_id = acts_for(principal, body.musician_id)
        cause = Cause.new()
        application_id = await state.app.marketplace.submit_application(
            musician_id=musician_id, gig_id=gig_id, message=body.message,
            proposed_fee=body.proposed_fee, cause=cause)
        return await written(state.app.store, Application.stream_id_for(application_id),
                             application_id, cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


async def _application_and_gig(state: ApiState, application_id: str) -> tuple[Application, Gig]:
    application = await state.app.repository.load(Application, application_id)
    if not application.exists:
        raise NotFound(f"application {application_id} does not exist")
    return application, await state.app.repository.load(Gig, application.gig_id)


@router.post("/applications/{application_id}/accept", response_model=models.Accepted)
async def accept_application(
        application_id: str, body: models.Accept, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(ORGANIZER, SERVICE))],
        if_match: IfMatch = None, idempotency_key: IdempotencyKey = None) -> models.Accepted:
    """Accept an application: the gig's organizer, or a service. Answers with the id of the
    contract the booking saga drafts for it."""
    expected = expected_version(if_match)

    async def command(keyed: Keyed) -> models.Accepted:
        _, gig = await _application_and_gig(state, application_id)
        owns(principal, gig.organizer_id)
        cause = Cause.new()
        contract_id = await state.app.marketplace.accept_application(
            application_id, organizer_id=gig.organizer_id, agreed_fee=body.agreed_fee,
            cause=cause, expected_version=expected)
        done = await written(state.app.store, Application.stream_id_for(application_id),
                             application_id, cause)
        return models.Accepted(**done.model_dump(), contract_id=contract_id)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Accepted, command)


@router.post("/applications/{application_id}/reject", response_model=models.Written)
async def reject_application(
        application_id: str, body: models.Reject, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(ORGANIZER, OPERATOR, SERVICE))],
        if_match: IfMatch = None, idempotency_key: IdempotencyKey = None) -> models.Written:
    """Turn an application down, with the reason: the gig's organizer, an operator or a
    service."""
    expected = expected_version(if_match)

    async def command(keyed: Keyed) -> models.Written:
        _, gig = await _application_and_gig(state, application_id)
        owns(principal, gig.organizer_id)
        cause = Cause.new()
        await state.app.marketplace.reject_application(application_id, body.reason, cause,
                                                       expected_version=expected)
        return await written(state.app.store, Application.stream_id_for(application_id),
                             application_id, cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


@router.post("/contracts/{contract_id}/signatures", response_model=models.Written)
async def sign_contract(
        contract_id: str, body: models.Sign, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(MUSICIAN, ORGANIZER, SERVICE))],
        if_match: IfMatch = None, idempotency_key: IdempotencyKey = None) -> models.Written:
    """Sign a contract: each party for themselves (a service for the party it names). The
    second signature puts it in force, and the booking saga charges the organizer."""
    expected = expected_version(if_match)

    async def command(keyed: Keyed) -> models.Written:
        party_id = acts_for(principal, body.party_id)
        contract = await state.app.repository.load(Contract, contract_id)
        if contract.exists:
            owns(principal, contract.musician_id, contract.organizer_id)
        cause = Cause.new()
        await state.app.marketplace.sign_contract(contract_id, party_id, cause,
                                                  expected_version=expected)
        return await written(state.app.store, Contract.stream_id_for(contract_id),
                             contract_id, cause)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, body), models.Written, command)


@router.post("/contracts/{contract_id}/payment", response_model=models.PaymentOpened)
async def pay_contract(
        contract_id: str, request: Request, state: State,
        principal: Annotated[Principal, Depends(require(ORGANIZER, OPERATOR, SERVICE))],
        idempotency_key: IdempotencyKey = None) -> models.PaymentOpened:
    """Pay a contract signed by both parties: opens its initial payment (the same one however
    often asked), which the booking saga charges to the organizer's card. The answer says
    where the payment stands; `GET /contracts/{id}` shows the contract paid."""
    async def command(keyed: Keyed) -> models.PaymentOpened:
        contract = await state.app.repository.load(Contract, contract_id)
        if not contract.exists:
            raise NotFound(f"contract {contract_id} does not exist")
        if principal.role is MUSICIAN:
            raise forbidden("a musician does not pay")
        owns(principal, contract.organizer_id)
        payment_id = initial_payment_id(contract_id)
        payment = await state.app.marketplace.request_payment(contract_id, payment_id)
        version = await state.app.store.stream_version(Payment.stream_id_for(payment_id))
        return models.PaymentOpened(id=payment_id, stream_id=payment.stream_id, version=version,
                                    contract_id=contract_id, status=str(payment.status),
                                    amount=payment.amount)

    return await once(state.app.documents, principal, idempotency_key,
                      request_digest(request, None), models.PaymentOpened, command)

