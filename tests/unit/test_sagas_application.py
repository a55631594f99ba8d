"""The MusicianApplicationSaga: validate → check availability → notify the organizer → mark
processed; each failure rejects the application with the reason and tells the musician."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from mussikon.application import templates
from mussikon.application.repository import Cause
from mussikon.application.sagas.state import SagaState, SagaStatus
from mussikon.domain.application import Application, ApplicationStatus, application_id_for
from mussikon.domain.events import EventCreatedEvent, MusicianApplicationSubmittedEvent
from mussikon.domain.gig import Gig
from mussikon.ports.event_store import NO_STREAM
from mussikon.ports.transport import Envelope
from tests.unit.sagas_kit import MUSICIAN, ORGANIZER, SagaWorld

STEPS = ["submitted", "validate", "check-availability", "notify-organizer", "mark-processed"]


async def saga_of(world: SagaWorld, application_id: str) -> SagaState:
    return await world.saga(f"musician-application-{application_id}")


async def application_of(world: SagaWorld, application_id: str) -> Application:
    return await world.repository.load(Application, application_id)


async def submitted_directly(world: SagaWorld, *, musician: str, gig: str, fee: str,
                             expected_version: int = NO_STREAM
                             ) -> MusicianApplicationSubmittedEvent:
    """A submission written straight to the store, as another service could write it."""
    event = MusicianApplicationSubmittedEvent(
        application_id=application_id_for(gig, musician), musician_id=musician, gig_id=gig,
        message="Hello", proposed_fee=Decimal(fee))
    await world.store.append(f"application-{event.application_id}", [event], expected_version)
    return event


async def test_a_good_application_runs_the_four_steps_and_is_marked_processed() -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer)
    application_id = await world.apply(musician, gig)
    await world.deliver()
    saga = await saga_of(world, application_id)
    assert saga.status is SagaStatus.COMPLETED
    assert saga.completed == STEPS
    assert saga.data["processed_at"] == world.clock.now().isoformat()
    assert world.notifier.kinds_to(ORGANIZER) == ["application-received"]
    assert world.notifier.kinds_to(MUSICIAN) == []
    assert (await application_of(world, application_id)).status is ApplicationStatus.SUBMITTED


async def test_the_organizer_is_told_once_when_the_handler_told_them_first() -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig_id = await world.gig(organizer)
    application_id = await world.apply(musician, gig_id)
    [submitted] = await world.store.read_by_type("MusicianApplicationSubmittedEvent")
    gig = await world.repository.load(Gig, gig_id)
    # What the MusicianEventHandler sends for the same event.
    await world.notifier.send(templates.application_received(
        "Casa", ORGANIZER, submitted.event.id, application_id=application_id,
        gig_title=gig.title, musician_name="Ana", proposed_fee=Decimal("1200.50"),
        message="Trio"))
    await world.deliver()
    assert world.notifier.kinds_to(ORGANIZER) == ["application-received"]
    history = await world.runtime.journal.history(f"musician-application-{application_id}")
    assert f"{ORGANIZER} already notified" in [h.detail for h in history]


async def test_an_application_to_a_gig_closed_meanwhile_is_rejected_and_the_musician_told(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer)
    application_id = await world.apply(musician, gig)
    await world.marketplace.close_gig(gig, "fully booked")
    await world.deliver()
    saga = await saga_of(world, application_id)
    assert (saga.status, saga.failed_step) == (SagaStatus.COMPENSATED, "validate")
    assert saga.reason == f"gig {gig} is closed, not open for applications"
    assert saga.compensated == ["submitted"]
    application = await application_of(world, application_id)
    assert (application.status, application.reason) == (ApplicationStatus.REJECTED, saga.reason)
    [notice] = [n for n in world.notifier.outbox if n.recipient == MUSICIAN]
    assert notice.kind == "application-rejected"
    assert saga.reason in notice.body
    assert world.notifier.kinds_to(ORGANIZER) == []


async def test_a_fee_over_the_budget_is_refused_even_when_another_service_let_it_through(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer, budget="500.00")
    event = await submitted_directly(world, musician=musician, gig=gig, fee="900.00")
    await world.deliver()
    saga = await saga_of(world, event.application_id)
    assert saga.failed_step == "validate"
    assert saga.reason == f"fee 900.00 exceeds the budget 500.00 of gig {gig}"
    assert (await application_of(world, event.application_id)).status is \
        ApplicationStatus.REJECTED
    assert world.notifier.kinds_to(MUSICIAN) == ["application-rejected"]


async def test_an_application_of_an_unregistered_musician_is_rejected_with_no_one_to_tell(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    gig = await world.gig(organizer)
    event = await submitted_directly(world, musician="ghost", gig=gig, fee="100")
    await world.deliver()
    saga = await saga_of(world, event.application_id)
    assert saga.reason == "musician ghost is not registered"
    history = await world.runtime.journal.history(saga.saga_id)
    assert history[-2].detail == "application rejected; no registered musician to tell"
    assert world.notifier.outbox == []


async def test_a_repeated_submission_is_refused_and_the_first_application_stands() -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer)
    await submitted_directly(world, musician=musician, gig=gig, fee="100")
    again = await submitted_directly(world, musician=musician, gig=gig, fee="120",
                                     expected_version=1)
    await world.application.handle_event(Envelope(str(again.id), again))  # delivered first
    saga = await saga_of(world, again.application_id)
    assert (saga.failed_step, saga.reason) == ("validate", "Ana has already applied to Jazz night")
    assert (await application_of(world, again.application_id)).status is \
        ApplicationStatus.SUBMITTED
    history = await world.runtime.journal.history(saga.saga_id)
    assert history[-2].detail == f"the first application stands; {MUSICIAN} told"


async def test_an_application_for_a_day_the_musician_is_booked_is_rejected() -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig_id = await world.gig(organizer)
    gig = await world.repository.load(Gig, gig_id)
    assert gig.event_date is not None
    await world.days.reserve(musician, gig.event_date + timedelta(hours=1), "contract-x")
    application_id = await world.apply(musician, gig_id)
    await world.deliver()
    saga = await saga_of(world, application_id)
    assert saga.failed_step == "check-availability"
    assert saga.reason == f"Ana already has contract contract-x on {gig.event_date.date()}"
    assert (await application_of(world, application_id)).reason == saga.reason
    assert world.notifier.kinds_to(MUSICIAN) == ["application-rejected"]
    assert world.notifier.kinds_to(ORGANIZER) == []


async def test_an_application_the_handler_rejected_first_is_rejected_once_and_told_once(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer)
    application_id = await world.apply(musician, gig)
    [submitted] = await world.store.read_by_type("MusicianApplicationSubmittedEvent")
    # The MusicianEventHandler found the musician busy and rejected it, telling them.
    reason = "Ana already has contract c-1 on that day"
    await world.marketplace.reject_application(application_id, reason,
                                               Cause.of(submitted.event))
    await world.notifier.send(templates.application_rejected(
        "Ana", MUSICIAN, submitted.event.id, application_id=application_id,
        gig_title="Jazz night", reason=reason))
    await world.deliver()
    saga = await saga_of(world, application_id)
    assert saga.reason == f"the application was already rejected: {reason}"
    rejections = await world.store.read_by_type("ApplicationRejectedEvent")
    assert len(rejections) == 1
    assert world.notifier.kinds_to(MUSICIAN) == ["application-rejected"]


async def test_a_gig_whose_organizer_is_unknown_fails_at_notifying_and_is_compensated(
        ) -> None:
    world = SagaWorld()
    musician = await world.musician()
    created = EventCreatedEvent(gig_id="g-1", organizer_id="nobody", title="Lost gig",
                                event_date=world.clock.now() + timedelta(days=5),
                                location="SD", genre="Jazz", budget=Decimal(500))
    await world.store.append("gig-g-1", [created], NO_STREAM)
    application_id = await world.apply(musician, "g-1", fee="300")
    await world.deliver()
    saga = await saga_of(world, application_id)
    assert (saga.failed_step, saga.reason) == ("notify-organizer",
                                               "organizer nobody of the gig is not registered")
    assert saga.completed == ["submitted", "validate", "check-availability"]
    assert (await application_of(world, application_id)).status is ApplicationStatus.REJECTED
    assert world.notifier.kinds_to(MUSICIAN) == ["application-rejected"]


async def test_an_application_accepted_before_the_saga_ran_is_processed_and_left_accepted(
        ) -> None:
    world = SagaWorld()
    organizer = await world.organizer()
    musician = await world.musician()
    gig = await world.gig(organizer)
    application_id = await world.apply(musician, gig)
    await world.marketplace.accept_application(application_id, organizer_id=organizer)
    await world.deliver()
    saga = await saga_of(world, application_id)
    assert saga.status is SagaStatus.COMPLETED
    assert (await application_of(world, application_id)).status is ApplicationStatus.ACCEPTED
