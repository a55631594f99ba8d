"""The specification's MusicianApplicationSaga, with state: validate the application, check the
musician is free that day, notify the organizer, mark it processed. If a step fails, the
application is rejected with the reason and the musician is told (the specification's
`SendErrorNotificationAsync`).

The organizer's notification and the musician's rejection notice carry the keys the
MusicianEventHandler uses for the same event, so each person is told once even though
both react to the application.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from mussikon.application import templates
from mussikon.application.sagas.services import SagaServices
from mussikon.application.sagas.steps import (
    Done,
    Failed,
    Outcome,
    SagaDefinition,
    Step,
    StepContext,
)
from mussikon.domain.application import Application, ApplicationStatus
from mussikon.domain.contract import contract_id_for
from mussikon.domain.errors import DomainError, IllegalTransition
from mussikon.domain.events import DomainEvent, MusicianApplicationSubmittedEvent
from mussikon.domain.gig import Gig
from mussikon.domain.musician import Musician, Organizer


async def _first_submission(services: SagaServices, application: Application) -> str:
    """The id of the event that submitted the application first ("" if none did)."""
    records = await services.repository.store.read_stream(application.stream_id, 1)
    return str(records[0].event.id) if records else ""


class Submitted(Step):
    """The application came in. Undone by rejecting it and telling the musician why."""

    name = "submitted"
    compensable = True

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        return Done(note=f"application {ctx.text('application_id')}")

    async def compensate(self, ctx: StepContext) -> str:
        application_id = ctx.text("application_id")
        application = await self.s.repository.load(Application, application_id)
        if application.status is ApplicationStatus.ACCEPTED:
            # The organizer took it meanwhile; the booking saga owns it now.
            return "accepted meanwhile by the organizer: left as it is"
        ours = await _first_submission(self.s, application) == ctx.text("submitted_event_id")
        if application.status is ApplicationStatus.SUBMITTED and ours:
            with contextlib.suppress(IllegalTransition):  # decided a moment ago: keep that
                await self.s.marketplace.reject_application(application_id, ctx.reason,
                                                            ctx.cause)
            application = await self.s.repository.load(Application, application_id)
        # A repeated submission leaves the musician's first one as it is.
        did = f"application {application.status.lower()}" if ours else \
            "the first application stands"
        musician = await self.s.repository.load(Musician, ctx.text("musician_id"))
        if not musician.exists:
            return f"{did}; no registered musician to tell"
        gig = await self.s.repository.load(Gig, ctx.text("gig_id"))
        sent = await self.s.notifier.send(templates.application_rejected(
            musician.name, musician.email, ctx.text("submitted_event_id"),
            application_id=application_id, gig_title=gig.title or ctx.text("gig_id"),
            reason=application.reason if ours and application.reason else ctx.reason))
        return f"{did}; {musician.email} {'told' if sent else 'already told'}"


class Validate(Step):
    """The gig exists and is open, the musician exists, this is the musician's one application
    to the gig, the fee is within the budget."""

    name = "validate"

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        repo = self.s.repository
        musician = await repo.load(Musician, ctx.text("musician_id"))
        if not musician.exists:
            return Failed(f"musician {musician.id} is not registered")
        gig = await repo.load(Gig, ctx.text("gig_id"))
        if not gig.exists or gig.event_date is None:
            return Failed(f"gig {gig.id} does not exist")
        application = await repo.load(Application, ctx.text("application_id"))
        if await _first_submission(self.s, application) != ctx.text("submitted_event_id"):
            return Failed(f"{musician.name} has already applied to {gig.title}")
        facts: dict[str, Any] = {"gig_title": gig.title, "gig_date": gig.event_date.isoformat(),
                                 "organizer_id": gig.organizer_id,
                                 "musician_name": musician.name}
        if application.status is ApplicationStatus.REJECTED:
            return Failed(f"the application was already rejected: {application.reason}")
        if application.status is ApplicationStatus.ACCEPTED:
            return Done(facts, note="already accepted by the organizer")
        try:
            gig.check_accepts(Decimal(ctx.text("proposed_fee")))
        except DomainError as exc:
            return Failed(str(exc))
        return Done(facts, note="gig open, musician registered, fee within budget")


class CheckAvailability(Step):
    """No other contract holds the musician's day of the gig."""

    name = "check-availability"

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        day = datetime.fromisoformat(ctx.text("gig_date"))
        holder = await self.s.days.holder(ctx.text("musician_id"), day)
        own = contract_id_for(ctx.text("application_id"))
        if holder is not None and holder != own:
            # Worded as the MusicianEventHandler words it: whichever rejects first, one reason.
            return Failed(f"{ctx.text('musician_name')} already has contract {holder} on "
                          f"{day.date()}")
        return Done(note=f"free on {day.date()}")


class NotifyOrganizer(Step):
    """Tell the gig's organizer about the application (once, whoever sends it)."""

    name = "notify-organizer"

    def __init__(self, services: SagaServices) -> None:
        self.s = services

    async def run(self, ctx: StepContext) -> Outcome:
        organizer = await self.s.repository.load(Organizer, ctx.text("organizer_id"))
        if not organizer.exists:
            return Failed(f"organizer {organizer.id} of the gig is not registered")
        sent = await self.s.notifier.send(templates.application_received(
            organizer.name, organizer.email, ctx.text("submitted_event_id"),
            application_id=ctx.text("application_id"), gig_title=ctx.text("gig_title"),
            musician_name=ctx.text("musician_name"),
            proposed_fee=Decimal(ctx.text("proposed_fee")), message=ctx.text("message")))
        return Done(note=f"{organizer.email} {'notified' if sent else 'already notified'}")


class MarkProcessed(Step):
    """Record when the application was processed: the instance's completion is the mark."""

    name = "mark-processed"

    async def run(self, ctx: StepContext) -> Outcome:
        return Done({"processed_at": ctx.now.isoformat()}, note="application processed")


class MusicianApplicationSaga(SagaDefinition):
    """One instance per application, started by MusicianApplicationSubmittedEvent."""

    kind = "musician-application"
    event_types = frozenset({MusicianApplicationSubmittedEvent.__name__})

    def __init__(self, services: SagaServices) -> None:
        self._steps: list[Step] = [Submitted(services), Validate(services),
                                   CheckAvailability(services), NotifyOrganizer(services),
                                   MarkProcessed()]

    @property
    def steps(self) -> Sequence[Step]:
        return self._steps

    def correlate(self, event: DomainEvent) -> str | None:
        return event.application_id if isinstance(event, MusicianApplicationSubmittedEvent) \
            else None

    def starts(self, event: DomainEvent) -> bool:
        return isinstance(event, MusicianApplicationSubmittedEvent)

    def streams(self, instance: str, data: Mapping[str, Any]) -> list[str]:
        return [f"{MusicianApplicationSubmittedEvent.aggregate_type}-{instance}"]

    def initial_data(self, event: DomainEvent) -> dict[str, Any]:
        assert isinstance(event, MusicianApplicationSubmittedEvent)
        return {"application_id": event.application_id, "musician_id": event.musician_id,
                "gig_id": event.gig_id, "proposed_fee": str(event.proposed_fee),
                "message": event.message, "submitted_event_id": str(event.id)}
