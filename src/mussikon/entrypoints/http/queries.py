"""What the HTTP API answers from the read models (eventually consistent: a command's effect
shows once the projections have applied it) and from the event store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from mussikon.application.projections.correlations import BY_CORRELATION, correlation_prefix
from mussikon.application.projections.directory import (
    APPLICATIONS,
    CONTRACTS,
    GIGS,
    MATCHING_INDEX,
    PROFILES,
    filtered_page,
    matching_prefix,
)
from mussikon.domain.application import Application
from mussikon.domain.contract import Contract
from mussikon.domain.gig import Gig
from mussikon.entrypoints.http import models
from mussikon.entrypoints.http.accounts import Principal, Role
from mussikon.entrypoints.http.security import owns, require
from mussikon.entrypoints.http.state import ApiState, api_state
from mussikon.ports.documents import Document
from mussikon.ports.event_store import RecordedEvent

router = APIRouter(tags=["queries"])

State = Annotated[ApiState, Depends(api_state)]
MUSICIAN, ORGANIZER, OPERATOR, SERVICE = Role.MUSICIAN, Role.ORGANIZER, Role.OPERATOR, Role.SERVICE
Anyone = Annotated[Principal, Depends(require(MUSICIAN, ORGANIZER, OPERATOR, SERVICE))]
Staff = Annotated[Principal, Depends(require(OPERATOR, SERVICE))]
Limit = Annotated[int, Query(ge=1, le=200, description="Items on a page")]
Cursor = Annotated[str, Query(max_length=300, description="`next_cursor` of the page before")]


def _folded(text: object) -> str:
    return str(text).strip().casefold()


async def _one(state: ApiState, collection: str, key: str, what: str) -> Document:
    doc = await state.app.documents.get(collection, key)
    if doc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} {key} (yet: the read "
                                                       "models may not have caught up)")
    return doc


@router.get("/musicians", response_model=models.Page[models.Musician])
async def musicians(state: State, principal: Anyone,
                    genre: Annotated[str | None, Query(max_length=100)] = None,
                    location: Annotated[str | None, Query(max_length=100)] = None,
                    limit: Limit = 50, cursor: Cursor = "") -> models.Page[models.Musician]:
    """Musicians, by id; by genre and location (any case) read from the matching index."""
    documents = state.app.documents
    if genre is not None and location is not None:
        prefix = matching_prefix(genre, location)
        entries, more = await filtered_page(documents, MATCHING_INDEX, None, limit=limit,
                                            after=prefix + cursor if cursor else "",
                                            prefix=prefix)
        ids = [key[len(prefix):] for key, _ in entries]
        found = [await documents.get(PROFILES, one) for one in ids]
        items = [doc for doc in found if doc is not None]
        last = ids[-1] if ids else ""
    else:
        def keep(doc: Document) -> bool:
            return ((genre is None or _folded(genre) in map(_folded, doc["genres"]))
                    and (location is None or _folded(location) == _folded(doc["location"])))

        page, more = await filtered_page(documents, PROFILES, keep, limit=limit, after=cursor)
        items = [doc for _, doc in page]
        last = page[-1][0] if page else ""
    return models.Page(items=[models.Musician.model_validate(d) for d in items],
                       next_cursor=last if more else None)


@router.get("/musicians/{musician_id}", response_model=models.Musician)
async def musician(musician_id: str, state: State, principal: Anyone) -> models.Musician:
    """One musician's profile."""
    return models.Musician.model_validate(await _one(state, PROFILES, musician_id, "musician"))


@router.get("/gigs", response_model=models.Page[models.Gig])
async def gigs(state: State, principal: Anyone,
               genre: Annotated[str | None, Query(max_length=100)] = None,
               location: Annotated[str | None, Query(max_length=100)] = None,
               organizer_id: Annotated[str | None, Query(max_length=100)] = None,
               include_closed: bool = False, limit: Limit = 50,
               cursor: Cursor = "") -> models.Page[models.Gig]:
    """Gigs open to applications (all with `include_closed`), by id, a page at a time."""
    def keep(doc: Document) -> bool:
        return ((include_closed or doc["status"] == "Open")
                and (genre is None or _folded(genre) == _folded(doc["genre"]))
                and (location is None or _folded(location) == _folded(doc["location"]))
                and (organizer_id is None or doc["organizer_id"] == organizer_id))

    page, more = await filtered_page(state.app.documents, GIGS, keep, limit=limit, after=cursor)
    return models.Page(items=[models.Gig.model_validate(d) for _, d in page],
                       next_cursor=page[-1][0] if more and page else None)


@router.get("/gigs/{gig_id}", response_model=models.Gig)
async def gig(gig_id: str, state: State, principal: Anyone) -> models.Gig:
    """One gig, with its stream's version (for `If-Match`)."""
    doc = await _one(state, GIGS, gig_id, "gig")
    version = await state.app.store.stream_version(Gig.stream_id_for(gig_id))
    return models.Gig.model_validate({**doc, "version": version})


@router.get("/gigs/{gig_id}/applications", response_model=models.Page[models.Application])
async def gig_applications(gig_id: str, state: State,
                           principal: Annotated[Principal, Depends(require(
                               ORGANIZER, OPERATOR, SERVICE))],
                           limit: Limit = 50,
                           cursor: Cursor = "") -> models.Page[models.Application]:
    """The applications to a gig: its organizer, an operator or a service."""
    owns(principal, (await _one(state, GIGS, gig_id, "gig"))["organizer_id"])
    page, more = await filtered_page(state.app.documents, APPLICATIONS,
                                     lambda doc: doc["gig_id"] == gig_id, limit=limit,
                                     after=cursor)
    return models.Page(items=[models.Application.model_validate(d) for _, d in page],
                       next_cursor=page[-1][0] if more and page else None)


@router.get("/applications/{application_id}", response_model=models.Application)
async def application(application_id: str, state: State,
                      principal: Anyone) -> models.Application:
    """One application: its musician, the gig's organizer, an operator or a service."""
    doc = await _one(state, APPLICATIONS, application_id, "application")
    gig_doc = await state.app.documents.get(GIGS, doc["gig_id"]) or {}
    owns(principal, doc["musician_id"], gig_doc.get("organizer_id", ""))
    version = await state.app.store.stream_version(Application.stream_id_for(application_id))
    return models.Application.model_validate({**doc, "version": version})


@router.get("/contracts", response_model=models.Page[models.Contract])
async def contracts(state: State, principal: Anyone,
                    status_: Annotated[str | None, Query(alias="status", max_length=30)] = None,
                    limit: Limit = 50, cursor: Cursor = "") -> models.Page[models.Contract]:
    """Contracts, by id, with where they stand: a musician or organizer sees their own."""
    def keep(doc: Document) -> bool:
        mine = principal.role not in (MUSICIAN, ORGANIZER) or principal.subject_id in (
            doc["musician_id"], doc["organizer_id"])
        return mine and (status_ is None or _folded(status_) == _folded(doc["status"]))

    page, more = await filtered_page(state.app.documents, CONTRACTS, keep, limit=limit,
                                     after=cursor)
    return models.Page(items=[models.Contract.model_validate(d) for _, d in page],
                       next_cursor=page[-1][0] if more and page else None)


@router.get("/contracts/{contract_id}", response_model=models.Contract)
async def contract(contract_id: str, state: State, principal: Anyone) -> models.Contract:
    """One contract and its state: its parties, an operator or a service."""
    doc = await _one(state, CONTRACTS, contract_id, "contract")
    owns(principal, doc["musician_id"], doc["organizer_id"])
    version = await state.app.store.stream_version(Contract.stream_id_for(contract_id))
    return models.Contract.model_validate({**doc, "version": version})


@router.get("/analytics", response_model=models.Analytics)
async def analytics(state: State, principal: Staff) -> models.Analytics:
    """Counts by kind, genre and location; money contracted and paid: operators, services."""
    summary = await state.app.analytics.summary()
    return models.Analytics(by_kind=dict(summary.by_kind), by_genre=dict(summary.by_genre),
                            by_location=dict(summary.by_location), revenue=summary.revenue,
                            contracted=summary.contracted)


def _events(records: Sequence[RecordedEvent], state: ApiState) -> list[models.Event]:
    return [models.Event(
        position=r.position, stream_id=r.stream_id, version=r.version,
        event_type=r.event.event_type, event_id=str(r.event.id), occurred_at=r.event.occurred_at,
        recorded_at=r.recorded_at,
        correlation_id=str(r.event.correlation_id) if r.event.correlation_id else None,
        causation_id=str(r.event.causation_id) if r.event.causation_id else None,
        origin=r.origin,
        data=json.loads(state.app.codec.encode(r.event), parse_float=Decimal))
        for r in records]


@router.get("/streams/{stream_id}/events", response_model=list[models.Event])
async def stream_events(stream_id: str, state: State, principal: Staff,
                        from_version: Annotated[int, Query(ge=1)] = 1,
                        limit: Limit = 100) -> list[models.Event]:
    """A stream's events from a version on (`gig-<id>`, `contract-<id>` …): operators,
    services."""
    records = await state.app.store.read_stream(stream_id, from_version)
    return _events(records[:limit], state)


@router.get("/correlations/{correlation_id}/events", response_model=list[models.Event])
async def correlation_events(correlation_id: str, state: State, principal: Staff,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 500
                             ) -> list[models.Event]:
    """The causal chain of one correlation (a command from outside and every event that
    followed from it, each naming its cause in `causation_id`), in the global order:
    operators, services."""
    entries = await state.app.documents.scan_page(
        BY_CORRELATION, prefix=correlation_prefix(correlation_id), limit=limit)
    found = [await state.app.store.find_event(uuid.UUID(doc["event_id"])) for _, doc in entries]
    records = sorted((r for r in found if r is not None), key=lambda r: r.position)
    if not records:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no events of correlation {correlation_id} (yet: the read "
                            "models may not have caught up)")
    return _events(records, state)
