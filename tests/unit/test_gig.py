"""Gig: date in the future, positive exact budget, required texts, open → closed only."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from mussikon.domain.errors import (
    AmountNotPositive,
    FeeExceedsBudget,
    GigDateNotInFuture,
    GigNotOpen,
    IllegalTransition,
    MissingField,
)
from mussikon.domain.events import EventClosedEvent, EventCreatedEvent
from mussikon.domain.gig import Gig, GigStatus
from tests.unit.given import (
    BUDGET,
    GIG_DATE,
    GIG_ID,
    NOW,
    ORGANIZER_ID,
    fields,
    gig_closed,
    gig_created,
    given,
    state,
)

VALID: dict[str, Any] = {"organizer_id": ORGANIZER_ID, "title": "Noche de Jazz",
                         "event_date": GIG_DATE, "location": "Santo Domingo", "genre": "Jazz",
                         "budget": BUDGET, "now": NOW}


def test_creating_a_gig_records_the_created_event_and_opens_it() -> None:
    # given no gig yet
    gig = Gig(GIG_ID)
    # when the organizer publishes it
    gig.create(**VALID)
    # then the seed's EventCreatedEvent holds its values and the gig is open
    [event] = gig.pending
    assert isinstance(event, EventCreatedEvent)
    assert fields(event) == {"gig_id": GIG_ID, "organizer_id": ORGANIZER_ID,
                             "title": "Noche de Jazz", "event_date": GIG_DATE,
                             "location": "Santo Domingo", "genre": "Jazz", "budget": BUDGET}
    assert gig.status is GigStatus.OPEN


def test_the_budget_keeps_its_exact_decimal_scale() -> None:
    gig = Gig(GIG_ID)
    gig.create(**{**VALID, "budget": Decimal("1500.00")})
    [event] = gig.pending
    assert isinstance(event, EventCreatedEvent)
    assert str(event.budget) == "1500.00"


@pytest.mark.parametrize("when", [NOW, NOW - timedelta(microseconds=1), NOW - timedelta(days=30)])
def test_a_gig_date_not_in_the_future_is_refused(when: datetime) -> None:
    gig = Gig(GIG_ID)
    with pytest.raises(GigDateNotInFuture, match=r"event date .* is not in the future"):
        gig.create(**{**VALID, "event_date": when})
    assert gig.pending == []
    assert gig.status is GigStatus.NEW


def test_a_gig_date_without_a_time_zone_is_refused() -> None:
    gig = Gig(GIG_ID)
    with pytest.raises(GigDateNotInFuture, match=r"event date .* has no time zone"):
        gig.create(**{**VALID, "event_date": GIG_DATE.replace(tzinfo=None)})
    assert gig.pending == []


def test_a_gig_date_in_another_zone_is_compared_as_the_same_instant() -> None:
    # given "now" at 21:00 UTC, 22:00 in UTC+02:00 is 20:00 UTC: in the past
    plus_two = timezone(timedelta(hours=2))
    gig = Gig(GIG_ID)
    with pytest.raises(GigDateNotInFuture):
        gig.create(**{**VALID, "event_date": datetime(2026, 11, 27, 22, 0, tzinfo=plus_two)})
    # and 23:30 in UTC+02:00 is 21:30 UTC: in the future
    gig.create(**{**VALID, "event_date": datetime(2026, 11, 27, 23, 30, tzinfo=plus_two)})
    assert len(gig.pending) == 1


@pytest.mark.parametrize("budget", [Decimal(0), Decimal("-0.01"), -5, 0, Decimal("NaN"),
                                    Decimal("Infinity")])
def test_a_budget_that_is_not_positive_is_refused(budget: Any) -> None:
    gig = Gig(GIG_ID)
    with pytest.raises(AmountNotPositive, match="budget must be positive"):
        gig.create(**{**VALID, "budget": budget})
    assert gig.pending == []


@pytest.mark.parametrize("budget", [1500.0, 0.1, True])
def test_a_float_or_bool_budget_is_refused_because_it_is_not_exact(budget: Any) -> None:
    gig = Gig(GIG_ID)
    with pytest.raises(AmountNotPositive, match="budget must be a decimal amount"):
        gig.create(**{**VALID, "budget": budget})
    assert gig.pending == []


def test_a_budget_that_is_not_a_number_is_refused() -> None:
    gig = Gig(GIG_ID)
    with pytest.raises(AmountNotPositive, match="budget 'mucho' is not a number"):
        gig.create(**{**VALID, "budget": "mucho"})
    assert gig.pending == []


@pytest.mark.parametrize("field", ["organizer_id", "title", "location", "genre"])
def test_a_blank_required_text_is_refused_naming_the_field(field: str) -> None:
    gig = Gig(GIG_ID)
    with pytest.raises(MissingField, match=f"{field.replace('_', ' ')} is required"):
        gig.create(**{**VALID, field: "  "})
    assert gig.pending == []


@pytest.mark.parametrize("history", [(gig_created(),), (gig_created(), gig_closed())],
                         ids=["open", "closed"])
def test_creating_an_existing_gig_is_an_illegal_transition(history: tuple[Any, ...]) -> None:
    gig = given(Gig, GIG_ID, *history)
    with pytest.raises(IllegalTransition, match=f"gig {GIG_ID} already exists"):
        gig.create(**VALID)
    assert gig.pending == []


def test_closing_an_open_gig_records_the_closed_event() -> None:
    gig = given(Gig, GIG_ID, gig_created())
    gig.close("booked")
    [event] = gig.pending
    assert isinstance(event, EventClosedEvent)
    assert fields(event) == {"gig_id": GIG_ID, "reason": "booked"}
    assert gig.status is GigStatus.CLOSED


@pytest.mark.parametrize(("history", "status"), [((), "new"), ((gig_created(), gig_closed()),
                                                                "closed")], ids=["new", "closed"])
def test_only_an_open_gig_closes(history: tuple[Any, ...], status: str) -> None:
    gig = given(Gig, GIG_ID, *history)
    with pytest.raises(IllegalTransition, match=f"gig {GIG_ID} is {status}; only an open gig"):
        gig.close("booked")
    assert gig.pending == []


def test_closing_needs_a_reason() -> None:
    gig = given(Gig, GIG_ID, gig_created())
    with pytest.raises(MissingField, match="reason is required"):
        gig.close(" ")
    assert gig.pending == []
    assert gig.status is GigStatus.OPEN


def test_an_open_gig_accepts_a_fee_up_to_its_budget() -> None:
    gig = given(Gig, GIG_ID, gig_created(budget=Decimal("1500.00")))
    gig.check_accepts(Decimal("1500"))  # equal to the budget: accepted
    with pytest.raises(FeeExceedsBudget, match=r"fee 1500.01 exceeds the budget 1500.00"):
        gig.check_accepts(Decimal("1500.01"))


def test_a_closed_gig_takes_no_application() -> None:
    gig = given(Gig, GIG_ID, gig_created(), gig_closed())
    with pytest.raises(GigNotOpen, match=f"gig {GIG_ID} is closed, not open"):
        gig.check_accepts(Decimal(1))


def test_rebuilding_from_the_events_gives_the_same_state_and_version() -> None:
    gig = Gig(GIG_ID)
    gig.create(**VALID)
    gig.close("booked")
    saved = gig.mark_saved()
    rebuilt = Gig.rebuild(GIG_ID, saved)
    assert rebuilt.version == gig.version == 2
    assert state(rebuilt) == state(gig)
    assert rebuilt.status is GigStatus.CLOSED

