"""The specification's MusicianEventHandler: a musician registered, a musician applied."""

from __future__ import annotations

import contextlib

from mussikon.application import templates
from mussikon.application.handlers.dependencies import Dependencies, react, read_models_at
from mussikon.application.projections.availability import BOOKINGS, booking_key
from mussikon.application.projections.directory import CONTRACTS, ORGANIZERS, PROFILES
from mussikon.application.repository import Cause
from mussikon.domain.contract import contract_id_for
from mussikon.domain.errors import IllegalTransition
from mussikon.domain.events import MusicianApplicationSubmittedEvent, MusicianRegisteredEvent
from mussikon.domain.gig import Gig
from mussikon.ports.transport import Envelope

__all__ = ["MusicianApplicationSubmittedEvent", "MusicianRegisteredEvent",
           "on_application_submitted", "on_musician_registered"]


async def on_musician_registered(envelope: Envelope, deps: Dependencies) -> None:
    """Welcome email, analytics registration, initial profile."""

    event = envelope.event
    assert isinstance(event, MusicianRegisteredEvent)
    sent = await deps.notifier.send(templates.welcome(event.name, event.email, event.id,
                                                      musician_id=event.musician_id))
    react(envelope, "musicians", f"welcome email {'sent' if sent else 'already sent'} to "
                                 f"{event.email}")
    await read_models_at(envelope, deps, "analytics")
    react(envelope, "musicians", "registration counted in analytics")
    await read_models_at(envelope, deps, "directory")
    profile = await deps.documents.get(PROFILES, event.musician_id)
    if profile is None:
        raise RuntimeError(f"profile of musician {event.musician_id} is missing")
    react(envelope, "musicians", f"initial profile ready: {profile['name']}, "
                                 f"{'/'.join(profile['genres'])} in {profile['location']}")


async def on_application_submitted(envelope: Envelope, deps: Dependencies) -> None:
    """Notify the organizer, track it, check the musician is free that day."""

    event = envelope.event
    assert isinstance(event, MusicianApplicationSubmittedEvent)
    gig = await deps.repository.load(Gig, event.gig_id)
    await read_models_at(envelope, deps, "directory", "availability")
    organizer = await deps.documents.get(ORGANIZERS, gig.organizer_id)
    musician = await deps.documents.get(PROFILES, event.musician_id)
    if organizer is None or musician is None:
        raise RuntimeError(f"organizer {gig.organizer_id} or musician {event.musician_id} "
                           "is not in the directory")
    await deps.notifier.send(templates.application_received(
        organizer["name"], organizer["email"], event.id, application_id=event.application_id,
        gig_title=gig.title, musician_name=musician["name"], proposed_fee=event.proposed_fee,
        message=event.message))
    react(envelope, "musicians", f"organizer {organizer['email']} notified")
    await read_models_at(envelope, deps, "analytics")
    react(envelope, "musicians", "application counted in analytics")
    assert gig.event_date is not None
    booked = await deps.documents.get(BOOKINGS, booking_key(event.musician_id, gig.event_date))
    if booked is None or await _is_own_contract(deps, booked["contract_id"],
                                                event.application_id):
        react(envelope, "musicians", f"musician free on {gig.event_date.date()}"
              if booked is None else "the day is booked by this application's own contract")
        return
    reason = (f"{musician['name']} already has contract {booked['contract_id']} on "
              f"{gig.event_date.date()}")
    with contextlib.suppress(IllegalTransition):  # already decided: nothing to undo here
        await deps.marketplace.reject_application(event.application_id, reason,
                                                  Cause.of(event))
    await deps.notifier.send(templates.application_rejected(
        musician["name"], musician["email"], event.id, application_id=event.application_id,
        gig_title=gig.title, reason=reason))
    react(envelope, "musicians", f"musician busy: application rejected ({reason})")


async def _is_own_contract(deps: Dependencies, contract_id: str, application_id: str) -> bool:
    """True if the contract is this application's own: the one we draft for it, or one that
    another service drafted for it."""
    if contract_id == contract_id_for(application_id):
        return True
    contract = await deps.documents.get(CONTRACTS, contract_id)
    return contract is not None and contract.get("application_id") == application_id
