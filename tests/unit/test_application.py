"""Application: one per musician per gig, only to an open gig, fee positive and within budget."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mussikon.domain.application import Application, ApplicationStatus, application_id_for
from mussikon.domain.errors import (
    AlreadyApplied,
    AmountNotPositive,
    FeeExceedsBudget,
    GigMismatch,
    GigNotOpen,
    IllegalTransition,
    MissingField,
    NotFound,
)
from mussikon.domain.events import (
    ApplicationAcceptedEvent,
    ApplicationRejectedEvent,
    DomainEvent,
    MusicianApplicationSubmittedEvent,
)
from mussikon.domain.gig import Gig
from mussikon.domain.musician import Musician
from tests.unit.given import (
    APPLICATION_ID,
    FEE,
    GIG_ID,
    MUSICIAN_ID,
    ORGANIZER_ID,
    application_accepted,
    application_rejected,
    application_submitted,
    fields,
    gig_closed,
    gig_created,
    given,
    musician_registered,
    state,
)

OTHER_GIG_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def musician() -> Musician:
    return given(Musician, MUSICIAN_ID, musician_registered())


def open_gig(budget: Decimal = Decimal("1500.00")) -> Gig:
    return given(Gig, GIG_ID, gig_created(budget=budget))


def submit(application: Application, **changes: Any) -> None:
    args: dict[str, Any] = {"musician": musician(), "gig": open_gig(),
                            "message": "Trío de jazz", "proposed_fee": FEE}
    application.submit(**{**args, **changes})


# --- the id ---------------------------------------------------------------------------------


def test_the_application_id_is_the_same_for_the_same_musician_and_gig() -> None:
    # pinned: stored streams are named by it, so it must never change between releases
    assert application_id_for(GIG_ID, MUSICIAN_ID) == "e0ec9471-cffa-5f91-a2ac-c7fe726336d2"


def test_the_application_id_differs_for_another_musician_or_gig() -> None:
    ids = {application_id_for(GIG_ID, MUSICIAN_ID), application_id_for(OTHER_GIG_ID, MUSICIAN_ID),
           application_id_for(GIG_ID, ORGANIZER_ID), application_id_for(MUSICIAN_ID, GIG_ID)}
    assert len(ids) == 4


# --- submit ---------------------------------------------------------------------------------


def test_submitting_to_an_open_gig_records_the_seed_event() -> None:
    # given a registered musician, an open gig and no application yet
    application = Application(APPLICATION_ID)
    # when she applies
    submit(application, message="  Trío de jazz  ", proposed_fee=Decimal("1200.50"))
    # then exactly the seed's event is recorded, the fee exact
    [event] = application.pending
    assert isinstance(event, MusicianApplicationSubmittedEvent)
    assert fields(event) == {"application_id": APPLICATION_ID, "musician_id": MUSICIAN_ID,
                             "gig_id": GIG_ID, "message": "Trío de jazz",
                             "proposed_fee": Decimal("1200.50")}
    assert str(event.proposed_fee) == "1200.50"
    assert application.status is ApplicationStatus.SUBMITTED


def test_a_fee_equal_to_the_budget_is_within_it() -> None:
    application = Application(APPLICATION_ID)
    submit(application, gig=open_gig(Decimal("1500.00")), proposed_fee=Decimal("1500"))
    assert len(application.pending) == 1


def test_a_fee_above_the_budget_is_refused() -> None:
    application = Application(APPLICATION_ID)
    with pytest.raises(FeeExceedsBudget, match=f"fee 1500.01 exceeds the budget 1500.00 of gig "
                                               f"{GIG_ID}"):
        submit(application, gig=open_gig(Decimal("1500.00")), proposed_fee=Decimal("1500.01"))
    assert application.pending == []


@pytest.mark.parametrize("fee", [Decimal(0), Decimal("-1"), 0])
def test_a_fee_that_is_not_positive_is_refused(fee: Any) -> None:
    application = Application(APPLICATION_ID)
    with pytest.raises(AmountNotPositive, match="proposed fee must be positive"):
        submit(application, proposed_fee=fee)
    assert application.pending == []


def test_a_float_fee_is_refused() -> None:
    application = Application(APPLICATION_ID)
    with pytest.raises(AmountNotPositive, match="proposed fee must be a decimal amount"):
        submit(application, proposed_fee=1200.5)
    assert application.pending == []


def test_applying_to_a_closed_gig_is_refused() -> None:
    application = Application(APPLICATION_ID)
    closed = given(Gig, GIG_ID, gig_created(), gig_closed())
    with pytest.raises(GigNotOpen, match=f"gig {GIG_ID} is closed, not open for applications"):
        submit(application, gig=closed)
    assert application.pending == []


def test_applying_to_a_gig_that_does_not_exist_is_refused() -> None:
    application = Application(APPLICATION_ID)
    with pytest.raises(NotFound, match=f"gig {GIG_ID} does not exist"):
        submit(application, gig=Gig(GIG_ID))
    assert application.pending == []


def test_an_unregistered_musician_cannot_apply() -> None:
    application = Application(APPLICATION_ID)
    with pytest.raises(NotFound, match=f"musician {MUSICIAN_ID} is not registered"):
        submit(application, musician=Musician(MUSICIAN_ID))
    assert application.pending == []


@pytest.mark.parametrize("history", [
    (application_submitted(),),
    (application_submitted(), application_accepted()),
    (application_submitted(), application_rejected()),
], ids=["submitted", "accepted", "rejected"])
def test_a_second_application_by_the_same_musician_to_the_same_gig_is_refused(
        history: tuple[DomainEvent, ...]) -> None:
    # given the stream of her application to this gig already exists
    application = given(Application, application_id_for(GIG_ID, MUSICIAN_ID), *history)
    # when she applies again, then it is refused and nothing is written
    with pytest.raises(AlreadyApplied,
                       match=f"musician {MUSICIAN_ID} has already applied to gig {GIG_ID}"):
        submit(application)
    assert application.pending == []


def test_applying_twice_before_saving_is_refused_too() -> None:
    application = Application(APPLICATION_ID)
    submit(application)
    with pytest.raises(AlreadyApplied):
        submit(application)
    assert len(application.pending) == 1


# --- accept and reject ----------------------------------------------------------------------


def test_accepting_at_the_proposed_fee_records_the_accepted_event() -> None:
    application = given(Application, APPLICATION_ID, application_submitted(Decimal("1200.50")))
    application.accept(gig=open_gig())
    [event] = application.pending
    assert isinstance(event, ApplicationAcceptedEvent)
    assert fields(event) == {"application_id": APPLICATION_ID, "musician_id": MUSICIAN_ID,
                             "gig_id": GIG_ID, "organizer_id": ORGANIZER_ID,
                             "agreed_fee": Decimal("1200.50")}
    assert application.status is ApplicationStatus.ACCEPTED


def test_accepting_at_another_agreed_fee_within_budget_records_it() -> None:
    application = given(Application, APPLICATION_ID, application_submitted())
    application.accept(gig=open_gig(), agreed_fee=Decimal("1400.00"))
    [event] = application.pending
    assert isinstance(event, ApplicationAcceptedEvent)
    assert str(event.agreed_fee) == "1400.00"
    assert application.agreed_fee == Decimal("1400.00")


def test_an_agreed_fee_above_the_budget_is_refused() -> None:
    application = given(Application, APPLICATION_ID, application_submitted())
    with pytest.raises(FeeExceedsBudget, match=r"fee 1600 exceeds the budget 1500\.00"):
        application.accept(gig=open_gig(), agreed_fee=Decimal("1600"))
    assert application.pending == []


@pytest.mark.parametrize("fee", [Decimal(0), 1400.0])
def test_an_agreed_fee_must_be_a_positive_decimal(fee: Any) -> None:
    application = given(Application, APPLICATION_ID, application_submitted())
    with pytest.raises(AmountNotPositive, match="agreed fee must be"):
        application.accept(gig=open_gig(), agreed_fee=fee)
    assert application.pending == []


def test_accepting_for_a_closed_gig_is_refused() -> None:
    application = given(Application, APPLICATION_ID, application_submitted())
    with pytest.raises(GigNotOpen):
        application.accept(gig=given(Gig, GIG_ID, gig_created(), gig_closed()))
    assert application.pending == []


def test_accepting_with_another_gig_than_the_applications_is_refused() -> None:
    # given an application to GIG_ID, when it is accepted against another open gig
    application = given(Application, APPLICATION_ID, application_submitted())
    other = given(Gig, OTHER_GIG_ID, gig_created(OTHER_GIG_ID))
    # then it is refused: the organizer and budget would be the other gig's
    with pytest.raises(GigMismatch, match=f"application {APPLICATION_ID} is for gig {GIG_ID}, "
                                          f"not {OTHER_GIG_ID}"):
        application.accept(gig=other)
    assert application.pending == []


def test_rejecting_a_submitted_application_records_the_reason() -> None:
    application = given(Application, APPLICATION_ID, application_submitted())
    application.reject("another act was chosen")
    [event] = application.pending
    assert isinstance(event, ApplicationRejectedEvent)
    assert fields(event) == {"application_id": APPLICATION_ID, "musician_id": MUSICIAN_ID,
                             "gig_id": GIG_ID, "reason": "another act was chosen"}
    assert application.status is ApplicationStatus.REJECTED


def test_an_accepted_application_may_still_be_rejected_as_compensation() -> None:
    application = given(Application, APPLICATION_ID, application_submitted(),
                        application_accepted())
    application.reject("the musician's date is taken")
    assert [type(e) for e in application.pending] == [ApplicationRejectedEvent]


def test_rejecting_needs_a_reason() -> None:
    application = given(Application, APPLICATION_ID, application_submitted())
    with pytest.raises(MissingField, match="reason is required"):
        application.reject("")
    assert application.pending == []


NEW: tuple[DomainEvent, ...] = ()
ACCEPTED = (application_submitted(), application_accepted())
REJECTED = (application_submitted(), application_rejected())


@pytest.mark.parametrize(("history", "status"), [(NEW, "new"), (ACCEPTED, "accepted"),
                                                 (REJECTED, "rejected")],
                         ids=["new", "accepted", "rejected"])
def test_only_a_submitted_application_is_accepted(history: tuple[DomainEvent, ...],
                                                   status: str) -> None:
    application = given(Application, APPLICATION_ID, *history)
    with pytest.raises(IllegalTransition,
                       match=f"application {APPLICATION_ID} is {status}; only a submitted"):
        application.accept(gig=open_gig())
    assert application.pending == []


@pytest.mark.parametrize(("history", "status"), [(NEW, "new"), (REJECTED, "rejected")],
                         ids=["new", "rejected"])
def test_a_new_or_rejected_application_cannot_be_rejected(history: tuple[DomainEvent, ...],
                                                           status: str) -> None:
    application = given(Application, APPLICATION_ID, *history)
    with pytest.raises(IllegalTransition,
                       match=f"application {APPLICATION_ID} is {status}; cannot reject"):
        application.reject("no")
    assert application.pending == []


def test_rebuilding_from_the_events_gives_the_same_state_and_version() -> None:
    application = Application(APPLICATION_ID)
    submit(application)
    application.accept(gig=open_gig(), agreed_fee=Decimal("1300.00"))
    saved = application.mark_saved()
    rebuilt = Application.rebuild(APPLICATION_ID, saved)
    assert rebuilt.version == application.version == 2
    assert state(rebuilt) == state(application)
    assert rebuilt.agreed_fee == Decimal("1300.00")
